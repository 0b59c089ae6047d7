/* SPDX-License-Identifier: Apache-2.0 */
/* fraud-job: card fraud detection on a stream of transactions. Three rules
 * (rules.h): velocity (sliding event-time window per card), amount_spike
 * and impossible_travel (keyed process function with TTL state per card).
 * Alerts go to Kafka as JSON with the rule and its evidence. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "../common/exjob.h"
#include "rules.h"

/* Transactions, once parsed, travel as fraud_txn structs keyed by card:
 * the JSON is read once, on the source's thread. */
static int parse(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  ex_job *ej = opaque;
  const sl_kafka_msg_t *m = sl_kafka_current(ctx);
  json_t *own = NULL, *j = m ? sl_kafka_msg_json(m) : NULL;
  if (!j)
    j = own = json_loadb(rec->value, rec->value_len, 0, NULL);
  const char *type = json_string_value(json_object_get(j, "type"));
  int rc = 0;
  if (ex_job_is_end(ej, type, rec->ts))
    goto out;
  fraud_txn t = {.ts = rec->ts};
  const char *id = json_string_value(json_object_get(j, "id"));
  const char *card = json_string_value(json_object_get(j, "card"));
  json_t *amount = json_object_get(j, "amount");
  json_t *lat = json_object_get(j, "lat"), *lon = json_object_get(j, "lon");
  if (!type || strcmp(type, "txn") || !id || !card || !json_is_number(amount) ||
      !json_is_number(lat) || !json_is_number(lon) ||
      strlen(id) >= sizeof(t.id) || strlen(card) >= sizeof(t.card)) {
    /* error.policy decides: skip and count, or the dead-letter topic. */
    rc = SL_ERR_DECODE;
    goto out;
  }
  t.amount = json_number_value(amount);
  t.lat = json_number_value(lat);
  t.lon = json_number_value(lon);
  strcpy(t.id, id);
  strcpy(t.card, card);
  sl_record_t r = {t.card, strlen(t.card), &t, sizeof(t), t.ts};
  rc = sl_emit(ctx, &r);
out:
  json_decref(own);
  return rc;
}

/* ---- velocity: sliding window, incremental count ------------------------ */

static void vel_init(void *acc, void *opaque) {
  (void)opaque;
  fraud_velocity_init(acc);
}

static int vel_add(void *acc, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  if (rec->value_len != sizeof(fraud_txn))
    return SL_ERR_INVAL;
  fraud_txn t;
  memcpy(&t, rec->value, sizeof(t));
  fraud_velocity_add(acc, &t);
  return 0;
}

static void vel_merge(void *acc, const void *other, void *opaque) {
  (void)opaque;
  fraud_velocity_merge(acc, other);
}

static int vel_fire(sl_ctx_t *ctx, const sl_window_t *win,
                    sl_window_elems_t *elems, void *opaque) {
  (void)opaque;
  sl_record_t r;
  fraud_velocity_acc acc;
  if (!sl_window_elems_next(elems, &r) || r.value_len != sizeof(acc))
    return 0;
  memcpy(&acc, r.value, sizeof(acc));
  if (!fraud_velocity_hit(&acc))
    return 0;
  char ev[256];
  snprintf(ev, sizeof(ev),
           "\"txns\":%" PRId64 ",\"total\":%.2f,\"first\":%" PRId64
           ",\"last\":%" PRId64 ",\"window_ms\":%d",
           acc.count, acc.total, acc.first, acc.last, FRAUD_VELOCITY_SIZE_MS);
  return ex_alert_emit(ctx, "velocity", r.key, r.key_len, win->start,
                       win->end - 1, ev);
}

/* ---- amount_spike and impossible_travel: one process function ----------- */

typedef struct card_states {
  sl_state_t *profile; /* fraud_profile */
  sl_state_t *last;    /* fraud_txn: the card's previous transaction */
} card_states;

static int card_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  card_states *s = calloc(1, sizeof(*s));
  if (!s)
    return SL_ERR_NOMEM;
  sl_ctx_set_local(ctx, s);
  /* Event-time TTL: a card unused for 30 days (of the data's time) is
   * forgotten, and a replay after a restore expires exactly the same. */
  sl_state_ttl_t ttl = {.ttl_ms = 30LL * 24 * 3600 * 1000,
                        .time = SL_TTL_EVENT_TIME};
  sl_state_desc_t p = {.name = "profile", .kind = SL_STATE_VALUE, .ttl = ttl};
  sl_state_desc_t l = {.name = "last", .kind = SL_STATE_VALUE, .ttl = ttl};
  s->profile = sl_state_register(ctx, &p);
  s->last = sl_state_register(ctx, &l);
  return s->profile && s->last ? 0 : SL_ERR_STATE;
}

static void card_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int card_txn(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  card_states *s = sl_ctx_local(ctx);
  fraud_txn t;
  if (rec->value_len != sizeof(t))
    return SL_ERR_INVAL;
  memcpy(&t, rec->value, sizeof(t));
  char ev[256];
  int rc;

  bool created;
  fraud_profile *p = sl_value_ptr(ctx, s->profile, sizeof(*p), &created);
  if (!p)
    return SL_ERR_NOMEM;
  double ratio;
  if (fraud_spike_check(p, t.amount, &ratio)) {
    snprintf(ev, sizeof(ev),
             "\"txn\":\"%s\",\"amount\":%.2f,\"card_mean\":%.2f,"
             "\"ratio\":%.1f,\"history\":%" PRId64,
             t.id, t.amount, p->mean, ratio, p->n);
    if ((rc = ex_alert_emit(ctx, "amount_spike", rec->key, rec->key_len, t.ts,
                            t.ts, ev)))
      return rc;
  }

  const void *v;
  size_t len;
  if (sl_value_get(ctx, s->last, &v, &len) == 1 && len == sizeof(fraud_txn)) {
    fraud_txn prev;
    memcpy(&prev, v, sizeof(prev));
    double km, kmh;
    if (fraud_travel_check(&prev, &t, &km, &kmh)) {
      const fraud_txn *a = prev.ts <= t.ts ? &prev : &t;
      const fraud_txn *b = a == &t ? &prev : &t;
      snprintf(ev, sizeof(ev),
               "\"txns\":[\"%s\",\"%s\"],\"km\":%.0f,\"kmh\":%.0f", a->id,
               b->id, km, kmh);
      if ((rc = ex_alert_emit(ctx, "impossible_travel", rec->key, rec->key_len,
                              a->ts, b->ts, ev)))
        return rc;
    }
  }
  return sl_value_put(ctx, s->last, &t, sizeof(t));
}

int main(int argc, char **argv) {
  ex_job ej;
  if (ex_job_init(&ej, argc, argv, "fraud-job", "fraud",
                  "examples/fraud/fraud.conf", "fraud.txns", "fraud.alerts"))
    return 1;
  sl_stream_t *txns = sl_flat_map(ex_job_source(&ej), "parse", parse, &ej);
  sl_stream_t *by_card = sl_key_by(txns, NULL, NULL);

  sl_window_spec_t ws =
      sl_window_sliding(FRAUD_VELOCITY_SIZE_MS, FRAUD_VELOCITY_SLIDE_MS);
  sl_window_fn_t wf = {.acc_size = sizeof(fraud_velocity_acc),
                       .init = vel_init,
                       .add = vel_add,
                       .merge = vel_merge,
                       .process = vel_fire};
  sl_process_ops_t cp = {
      .open = card_open, .on_element = card_txn, .close = card_close};
  sl_stream_t *alerts[2] = {
      sl_window(by_card, "velocity", &ws, &wf, NULL),
      sl_process(by_card, "card-profile", &cp, NULL),
  };
  ex_job_sink_alerts(&ej, alerts, 2);
  return ex_job_run(&ej);
}
