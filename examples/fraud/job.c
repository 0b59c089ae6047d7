/* SPDX-License-Identifier: Apache-2.0 */
/* fraud-job: card fraud detection on a stream of transactions. Three rules
 * (rules.h): small_then_large and impossible_travel (keyed process function
 * per account: value state with TTL, event-time timers) and velocity
 * (sliding event-time window per account, count and total). Alerts go to
 * Kafka as JSON with the rule and its evidence. */
#include <inttypes.h>
#include <sluice/json.h>
#include <stdio.h>
#include <string.h>

#include "../common/exjob.h"
#include "rules.h"

/* Transactions, once parsed, travel as fraud_txn structs keyed by account:
 * the JSON is read once, on the source's thread. */
static int parse(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  const sl_kafka_msg_t *m = sl_kafka_current(ctx);
  json_t *own = NULL, *j = m ? sl_kafka_msg_json(m) : NULL;
  if (!j)
    j = own = json_loadb(rec->value, rec->value_len, 0, NULL);
  const char *type = json_string_value(json_object_get(j, "type"));
  int rc = 0;
  fraud_txn t = {.ts = rec->ts};
  const char *id = json_string_value(json_object_get(j, "id"));
  const char *acct = json_string_value(json_object_get(j, "account"));
  const char *merchant = json_string_value(json_object_get(j, "merchant"));
  const char *country = json_string_value(json_object_get(j, "country"));
  json_t *amount = json_object_get(j, "amount");
  if (!type || strcmp(type, "txn") || !id || !acct || !merchant || !country ||
      !json_is_number(amount) || strlen(id) >= sizeof(t.id) ||
      strlen(acct) >= sizeof(t.account) ||
      strlen(merchant) >= sizeof(t.merchant) ||
      strlen(country) >= sizeof(t.country)) {
    /* error.policy decides: skip and count, or the dead-letter topic. */
    rc = SL_ERR_DECODE;
    goto out;
  }
  t.amount = json_number_value(amount);
  strcpy(t.id, id);
  strcpy(t.account, acct);
  strcpy(t.merchant, merchant);
  strcpy(t.country, country);
  sl_record_t r = {t.account, strlen(t.account), &t, sizeof(t), t.ts};
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

/* ---- small_then_large and impossible_travel: one process function ------ */

typedef struct acct_states {
  sl_state_t *last;  /* fraud_txn: the account's previous transaction */
  sl_state_t *small; /* fraud_txn: latest small one, for a minute */
  sl_state_t *large; /* fraud_txn: latest large one, for a minute */
} acct_states;

static int acct_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  acct_states *s = calloc(1, sizeof(*s));
  if (!s)
    return SL_ERR_NOMEM;
  sl_ctx_set_local(ctx, s);
  /* Event-time TTL, so a replay after a restore expires exactly the same:
   * an account unused for 30 days (of the data's time) is forgotten; the
   * pending small and large payments are cleared by timers a minute after
   * them, and the TTL is only the backstop. */
  sl_state_ttl_t month = {.ttl_ms = 30LL * 24 * 3600 * 1000,
                          .time = SL_TTL_EVENT_TIME};
  sl_state_ttl_t minutes = {.ttl_ms = 10 * 60 * 1000,
                            .time = SL_TTL_EVENT_TIME};
  sl_state_desc_t l = {.name = "last", .kind = SL_STATE_VALUE, .ttl = month};
  sl_state_desc_t sm = {
      .name = "small", .kind = SL_STATE_VALUE, .ttl = minutes};
  sl_state_desc_t lg = {
      .name = "large", .kind = SL_STATE_VALUE, .ttl = minutes};
  s->last = sl_state_register(ctx, &l);
  s->small = sl_state_register(ctx, &sm);
  s->large = sl_state_register(ctx, &lg);
  return s->last && s->small && s->large ? 0 : SL_ERR_STATE;
}

static void acct_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static bool get_txn(sl_ctx_t *ctx, sl_state_t *st, fraud_txn *out) {
  const void *v;
  size_t len;
  if (sl_value_get(ctx, st, &v, &len) != 1 || len != sizeof(*out))
    return false;
  memcpy(out, v, sizeof(*out));
  return true;
}

static int small_large_alert(sl_ctx_t *ctx, const sl_record_t *rec,
                             const fraud_txn *small, const fraud_txn *large) {
  char ev[256];
  snprintf(ev, sizeof(ev),
           "\"small\":{\"txn\":\"%s\",\"amount\":%.2f},\"large\":{\"txn\":"
           "\"%s\",\"amount\":%.2f,\"merchant\":\"%s\"},\"seconds\":%.1f",
           small->id, small->amount, large->id, large->amount, large->merchant,
           (double)(large->ts - small->ts) / 1000.0);
  return ex_alert_emit(ctx, "small_then_large", rec->key, rec->key_len,
                       small->ts, large->ts, ev);
}

/* A small payment waits a minute for a large one. Payments arrive up to
 * the watermark bound out of order, so a large one waits too, and an
 * event-time timer a minute after either clears it: by then the watermark
 * says nothing that could pair with it is still on its way. */
static int check_small_large(sl_ctx_t *ctx, acct_states *s,
                             const sl_record_t *rec, const fraud_txn *t) {
  bool small = fraud_is_small(t->amount), large = fraud_is_large(t->amount);
  if (!small && !large)
    return 0;
  fraud_txn other;
  int rc = 0;
  if (small && get_txn(ctx, s->large, &other) &&
      fraud_small_then_large(t, &other))
    rc = small_large_alert(ctx, rec, t, &other);
  if (large && get_txn(ctx, s->small, &other) &&
      fraud_small_then_large(&other, t))
    rc = small_large_alert(ctx, rec, &other, t);
  if (rc)
    return rc;
  if ((rc = sl_value_put(ctx, small ? s->small : s->large, t, sizeof(*t))))
    return rc;
  return sl_timer_set(ctx, SL_EVENT_TIME, t->ts + FRAUD_SMALL_LARGE_WITHIN_MS);
}

static int acct_txn(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  acct_states *s = sl_ctx_local(ctx);
  fraud_txn t;
  if (rec->value_len != sizeof(t))
    return SL_ERR_INVAL;
  memcpy(&t, rec->value, sizeof(t));
  int rc = check_small_large(ctx, s, rec, &t);
  if (rc)
    return rc;
  fraud_txn prev;
  double km, kmh;
  if (get_txn(ctx, s->last, &prev) &&
      fraud_travel_check(&prev, &t, &km, &kmh)) {
    const fraud_txn *a = prev.ts <= t.ts ? &prev : &t;
    const fraud_txn *b = a == &t ? &prev : &t;
    char ev[256];
    snprintf(ev, sizeof(ev),
             "\"txns\":[\"%s\",\"%s\"],\"countries\":[\"%s\",\"%s\"],"
             "\"km\":%.0f,\"kmh\":%.0f",
             a->id, b->id, a->country, b->country, km, kmh);
    if ((rc = ex_alert_emit(ctx, "impossible_travel", rec->key, rec->key_len,
                            a->ts, b->ts, ev)))
      return rc;
  }
  return sl_value_put(ctx, s->last, &t, sizeof(t));
}

/* Clears the small or large payment whose minute is over. */
static int acct_timer(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                      void *opaque) {
  (void)domain;
  (void)opaque;
  acct_states *s = sl_ctx_local(ctx);
  sl_state_t *both[2] = {s->small, s->large};
  for (int i = 0; i < 2; i++) {
    fraud_txn t;
    int rc;
    if (get_txn(ctx, both[i], &t) && t.ts + FRAUD_SMALL_LARGE_WITHIN_MS <= ts &&
        (rc = sl_state_clear(ctx, both[i])))
      return rc;
  }
  return 0;
}

int main(int argc, char **argv) {
  ex_job ej;
  if (ex_job_init(&ej, argc, argv, "fraud-job", "fraud",
                  "examples/fraud/fraud.conf", "fraud.txns", "fraud.alerts"))
    return 1;
  sl_stream_t *txns = ex_job_parse(&ej, parse);
  sl_stream_t *by_account = sl_key_by(txns, NULL, NULL);

  sl_window_spec_t ws =
      sl_window_sliding(FRAUD_VELOCITY_SIZE_MS, FRAUD_VELOCITY_SLIDE_MS);
  sl_window_fn_t wf = {.acc_size = sizeof(fraud_velocity_acc),
                       .init = vel_init,
                       .add = vel_add,
                       .merge = vel_merge,
                       .process = vel_fire};
  sl_process_ops_t ap = {.open = acct_open,
                         .on_element = acct_txn,
                         .on_timer = acct_timer,
                         .close = acct_close};
  sl_stream_t *alerts[2] = {
      sl_window(by_account, "velocity", &ws, &wf, NULL),
      sl_process(by_account, "account-rules", &ap, NULL),
  };
  ex_job_sink_alerts(&ej, alerts, 2);
  return ex_job_run(&ej);
}
