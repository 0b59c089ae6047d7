/* SPDX-License-Identifier: Apache-2.0 */
/* fraud-job: card fraud detection on a stream of transactions. Three rules
 * (rules.h): small_then_large and impossible_travel (keyed broadcast
 * process function per account: value state with TTL, event-time timers)
 * and velocity (sliding event-time window per account, count and total,
 * judged by a second broadcast process function). Their thresholds come
 * from rule records on a rules topic, kept in broadcast state as versions
 * by event time; each transaction and each window is judged in an
 * event-time timer at its own time by the thresholds in force then, so
 * alerts depend on event time only. Alerts of one account and rule are
 * grouped into incidents (a suppression interval); the first alert of each
 * goes to Kafka as JSON with the rule and its evidence. */
#include <inttypes.h>
#include <sluice/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/exjob.h"
#include "../common/exutil.h"
#include "rules.h"

/* How long a quiet rules partition holds the watermark back in a job that
 * runs until stopped (bounded runs read the topic to its end instead). */
#define RULES_IDLE_MS 1000

typedef struct fraud_opts {
  const char *rules_topic; /* NULL: no rules input, the defaults hold */
  int64_t suppress_ms;     /* 0: every alert is written */
} fraud_opts;

static int fraud_flag(const char *flag, const char *value, void *opaque) {
  fraud_opts *o = opaque;
  if (!value)
    return 0;
  if (!strcmp(flag, "--rules-topic")) {
    o->rules_topic = value;
    return 2;
  }
  if (!strcmp(flag, "--suppress-ms")) {
    o->suppress_ms = ex_arg_ll("fraud-job", flag, value);
    if (o->suppress_ms < 0) {
      fprintf(stderr, "fraud-job: --suppress-ms must be >= 0\n");
      exit(2);
    }
    return 2;
  }
  return 0;
}

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

/* Rule records become fraud_rule_version structs; a record that is not
 * {"rule":<known name>,"threshold":<number >= 0>,"ts":<ms>} is bad input
 * (error.policy). */
static int parse_rule(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  const sl_kafka_msg_t *m = sl_kafka_current(ctx);
  json_t *own = NULL, *j = m ? sl_kafka_msg_json(m) : NULL;
  if (!j)
    j = own = json_loadb(rec->value, rec->value_len, 0, NULL);
  const char *name = json_string_value(json_object_get(j, "rule"));
  json_t *th = json_object_get(j, "threshold");
  fraud_rule_version v = {.ts = rec->ts};
  fraud_params scratch;
  fraud_params_default(&scratch);
  int rc = SL_ERR_DECODE;
  if (name && strlen(name) < sizeof(v.name) && json_is_number(th) &&
      !fraud_params_set(&scratch, name, json_number_value(th))) {
    strcpy(v.name, name);
    v.threshold = json_number_value(th);
    sl_record_t r = {NULL, 0, &v, sizeof(v), v.ts};
    rc = sl_emit(ctx, &r);
  }
  json_decref(own);
  return rc;
}

/* ---- Rule versions in broadcast state ------------------------------------
 * Map key: the version's event time (big-endian, sign flipped, so keys
 * sort by time) then the rule name; value: the threshold (a double). Every
 * instance keeps its versions sorted in a local array too, rebuilt when
 * the broadcast state changed or was restored. */

typedef struct versions {
  sl_bstate_t *st;
  fraud_rule_version *v;
  size_t n;
  bool stale;
  int64_t suppress_ms;
} versions;

static void be64(int64_t v, unsigned char b[8]) {
  uint64_t u = (uint64_t)v ^ (1ULL << 63);
  for (int i = 7; i >= 0; i--, u >>= 8)
    b[i] = (unsigned char)u;
}

static int64_t from_be64(const unsigned char b[8]) {
  uint64_t u = 0;
  for (int i = 0; i < 8; i++)
    u = u << 8 | b[i];
  return (int64_t)(u ^ (1ULL << 63));
}

static int versions_open(sl_ctx_t *ctx, versions *vs, int64_t suppress_ms) {
  vs->st = sl_bstate_register(ctx, "rule-versions");
  vs->stale = true;
  vs->suppress_ms = suppress_ms;
  return vs->st ? 0 : SL_ERR_STATE;
}

static int versions_put(sl_ctx_t *ctx, versions *vs, const sl_record_t *rec) {
  fraud_rule_version v;
  if (rec->value_len != sizeof(v))
    return SL_ERR_INVAL;
  memcpy(&v, rec->value, sizeof(v));
  unsigned char k[8 + sizeof(v.name)];
  size_t nl = strlen(v.name);
  be64(v.ts, k);
  memcpy(k + 8, v.name, nl);
  vs->stale = true;
  return sl_bstate_put(ctx, vs->st, k, 8 + nl, &v.threshold,
                       sizeof(v.threshold));
}

/* The thresholds in force at event time ts. */
static int versions_at(sl_ctx_t *ctx, versions *vs, int64_t ts,
                       fraud_params *out) {
  if (vs->stale) {
    size_t n = sl_bstate_size(ctx, vs->st);
    fraud_rule_version *v = realloc(vs->v, (n ? n : 1) * sizeof(*v));
    if (!v)
      return SL_ERR_NOMEM;
    vs->v = v;
    vs->n = 0;
    sl_bstate_iter_t it;
    const void *mk, *val;
    size_t mkl, vl;
    sl_bstate_iter(ctx, vs->st, &it);
    while (vs->n < n && sl_bstate_next(&it, &mk, &mkl, &val, &vl) == 1) {
      fraud_rule_version *r = &v[vs->n];
      if (mkl <= 8 || mkl - 8 >= sizeof(r->name) || vl != sizeof(double))
        return SL_ERR_STATE;
      memset(r, 0, sizeof(*r));
      r->ts = from_be64(mk);
      memcpy(r->name, (const char *)mk + 8, mkl - 8);
      memcpy(&r->threshold, val, sizeof(double));
      vs->n++;
    }
    vs->stale = false;
  }
  fraud_params_at(vs->v, vs->n, ts, out);
  return 0;
}

/* ---- Incidents: one alert written per account, rule and burst ----------- */

/* Writes the alert unless it falls within the suppression interval of the
 * previous alert of its account and rule (the end, an int64, kept in st);
 * a timer clears st once the interval has passed. */
static int incident_emit(sl_ctx_t *ctx, const versions *vs, sl_state_t *st,
                         const char *rule, const void *entity,
                         size_t entity_len, int64_t start, int64_t end,
                         const char *evidence) {
  if (vs->suppress_ms > 0) {
    const void *v;
    size_t len;
    int64_t prev = 0;
    bool has = sl_value_get(ctx, st, &v, &len) == 1 && len == sizeof(prev);
    if (has)
      memcpy(&prev, v, sizeof(prev));
    int rc = sl_value_put(ctx, st, &end, sizeof(end));
    if (!rc)
      rc = sl_timer_set(ctx, SL_EVENT_TIME, end + vs->suppress_ms + 1);
    if (rc || !fraud_incident_opens(has, prev, end, vs->suppress_ms))
      return rc;
  }
  return ex_alert_emit(ctx, rule, entity, entity_len, start, end, evidence);
}

/* Clears an incident whose interval is over at event time ts. */
static int incident_expire(sl_ctx_t *ctx, const versions *vs, sl_state_t *st,
                           int64_t ts) {
  const void *v;
  size_t len;
  int64_t prev;
  if (vs->suppress_ms <= 0 || sl_value_get(ctx, st, &v, &len) != 1 ||
      len != sizeof(prev))
    return 0;
  memcpy(&prev, v, sizeof(prev));
  return prev + vs->suppress_ms < ts ? sl_state_clear(ctx, st) : 0;
}

/* Keyed records wait in map state (event time -> records) for the
 * event-time timer at their time: once the watermark, the minimum of the
 * records' and the rules' inputs, has passed it, every rule version up to
 * it has arrived. */
static int pend(sl_ctx_t *ctx, sl_state_t *pending, const sl_record_t *rec) {
  const void *v;
  size_t len;
  int rc = sl_map_get(ctx, pending, &rec->ts, sizeof(rec->ts), &v, &len);
  if (rc < 0)
    return rc;
  if (rc == 0)
    len = 0;
  /* Records of one key at one time: appended in arrival order. */
  char *buf = malloc(len + rec->value_len);
  if (!buf)
    return SL_ERR_NOMEM;
  if (len)
    memcpy(buf, v, len);
  memcpy(buf + len, rec->value, rec->value_len);
  rc = sl_map_put(ctx, pending, &rec->ts, sizeof(rec->ts), buf,
                  len + rec->value_len);
  free(buf);
  return rc ? rc : sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
}

/* Takes the records waiting for time ts (a copy the caller frees; NULL
 * with *len 0 when none) and removes them from the state. */
static int unpend(sl_ctx_t *ctx, sl_state_t *pending, int64_t ts, void **out,
                  size_t *len) {
  const void *v;
  *out = NULL;
  *len = 0;
  int rc = sl_map_get(ctx, pending, &ts, sizeof(ts), &v, len);
  if (rc <= 0) {
    *len = 0;
    return rc;
  }
  if (!(*out = malloc(*len ? *len : 1)))
    return SL_ERR_NOMEM;
  memcpy(*out, v, *len);
  rc = sl_map_remove(ctx, pending, &ts, sizeof(ts));
  return rc < 0 ? rc : 0;
}

/* ---- velocity: sliding window, incremental count, judged later ---------- */

/* What the window writes for every window of an account: the judge
 * applies the thresholds of the window's time. */
typedef struct vel_result {
  fraud_velocity_acc acc;
  int64_t start, end;
} vel_result;

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
  vel_result out;
  if (!sl_window_elems_next(elems, &r) || r.value_len != sizeof(out.acc))
    return 0;
  memcpy(&out.acc, r.value, sizeof(out.acc));
  out.start = win->start;
  out.end = win->end;
  sl_record_t o = {r.key, r.key_len, &out, sizeof(out), win->end - 1};
  return sl_emit(ctx, &o);
}

typedef struct vel_states {
  versions vs;
  sl_state_t *pending;  /* ts -> vel_result */
  sl_state_t *incident; /* int64: end of the rule's latest alert */
} vel_states;

static int vel_open(sl_ctx_t *ctx, void *opaque) {
  const fraud_opts *o = opaque;
  vel_states *s = calloc(1, sizeof(*s));
  if (!s)
    return SL_ERR_NOMEM;
  sl_ctx_set_local(ctx, s);
  sl_state_desc_t p = {.name = "pending", .kind = SL_STATE_MAP};
  sl_state_desc_t i = {.name = "incident", .kind = SL_STATE_VALUE};
  s->pending = sl_state_register(ctx, &p);
  s->incident = sl_state_register(ctx, &i);
  if (!s->pending || !s->incident)
    return SL_ERR_STATE;
  return versions_open(ctx, &s->vs, o->suppress_ms);
}

static void vel_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  vel_states *s = sl_ctx_local(ctx);
  if (s)
    free(s->vs.v);
  free(s);
}

static int vel_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  vel_states *s = sl_ctx_local(ctx);
  return rec->value_len == sizeof(vel_result) ? pend(ctx, s->pending, rec)
                                              : SL_ERR_INVAL;
}

static int vel_rule(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  vel_states *s = sl_ctx_local(ctx);
  return versions_put(ctx, &s->vs, rec);
}

static int vel_timer(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                     void *opaque) {
  (void)domain;
  (void)opaque;
  vel_states *s = sl_ctx_local(ctx);
  void *buf;
  size_t len;
  fraud_params p;
  int rc = unpend(ctx, s->pending, ts, &buf, &len);
  if (!rc && len)
    rc = versions_at(ctx, &s->vs, ts, &p);
  for (size_t off = 0; !rc && off + sizeof(vel_result) <= len;
       off += sizeof(vel_result)) {
    vel_result r;
    memcpy(&r, (char *)buf + off, sizeof(r));
    if (!fraud_velocity_hit_p(&p, &r.acc))
      continue;
    const void *key;
    size_t kl;
    sl_ctx_key(ctx, &key, &kl);
    char ev[256];
    snprintf(ev, sizeof(ev),
             "\"txns\":%" PRId64 ",\"total\":%.2f,\"first\":%" PRId64
             ",\"last\":%" PRId64 ",\"window_ms\":%d",
             r.acc.count, r.acc.total, r.acc.first, r.acc.last,
             FRAUD_VELOCITY_SIZE_MS);
    rc = incident_emit(ctx, &s->vs, s->incident, "velocity", key, kl, r.start,
                       r.end - 1, ev);
  }
  free(buf);
  return rc ? rc : incident_expire(ctx, &s->vs, s->incident, ts);
}

/* ---- small_then_large and impossible_travel: one process function ------ */

typedef struct acct_states {
  versions vs;
  sl_state_t *pending;  /* ts -> fraud_txn[]: waiting for their time */
  sl_state_t *last;     /* fraud_txn: the account's previous transaction */
  sl_state_t *small;    /* fraud_txn: latest small one, for a minute */
  sl_state_t *large;    /* fraud_txn: latest large one, for a minute */
  sl_state_t *inc_pair; /* int64: end of small_then_large's latest alert */
  sl_state_t *inc_trip; /* int64: end of impossible_travel's latest alert */
} acct_states;

static int acct_open(sl_ctx_t *ctx, void *opaque) {
  const fraud_opts *o = opaque;
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
  sl_state_desc_t p = {.name = "pending", .kind = SL_STATE_MAP};
  sl_state_desc_t l = {.name = "last", .kind = SL_STATE_VALUE, .ttl = month};
  sl_state_desc_t sm = {
      .name = "small", .kind = SL_STATE_VALUE, .ttl = minutes};
  sl_state_desc_t lg = {
      .name = "large", .kind = SL_STATE_VALUE, .ttl = minutes};
  sl_state_desc_t ip = {.name = "incident.small_then_large",
                        .kind = SL_STATE_VALUE};
  sl_state_desc_t it = {.name = "incident.impossible_travel",
                        .kind = SL_STATE_VALUE};
  s->pending = sl_state_register(ctx, &p);
  s->last = sl_state_register(ctx, &l);
  s->small = sl_state_register(ctx, &sm);
  s->large = sl_state_register(ctx, &lg);
  s->inc_pair = sl_state_register(ctx, &ip);
  s->inc_trip = sl_state_register(ctx, &it);
  if (!s->pending || !s->last || !s->small || !s->large || !s->inc_pair ||
      !s->inc_trip)
    return SL_ERR_STATE;
  return versions_open(ctx, &s->vs, o->suppress_ms);
}

static void acct_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  acct_states *s = sl_ctx_local(ctx);
  if (s)
    free(s->vs.v);
  free(s);
}

static bool get_txn(sl_ctx_t *ctx, sl_state_t *st, fraud_txn *out) {
  const void *v;
  size_t len;
  if (sl_value_get(ctx, st, &v, &len) != 1 || len != sizeof(*out))
    return false;
  memcpy(out, v, sizeof(*out));
  return true;
}

static int small_large_alert(sl_ctx_t *ctx, acct_states *s,
                             const fraud_txn *small, const fraud_txn *large) {
  char ev[256];
  snprintf(ev, sizeof(ev),
           "\"small\":{\"txn\":\"%s\",\"amount\":%.2f},\"large\":{\"txn\":"
           "\"%s\",\"amount\":%.2f,\"merchant\":\"%s\"},\"seconds\":%.1f",
           small->id, small->amount, large->id, large->amount, large->merchant,
           (double)(large->ts - small->ts) / 1000.0);
  return incident_emit(ctx, &s->vs, s->inc_pair, "small_then_large",
                       large->account, strlen(large->account), small->ts,
                       large->ts, ev);
}

/* A small payment waits a minute for a large one. Transactions are judged
 * in event-time order, so a large one meets the latest small one before
 * it; a small and a large one at the same time meet either way. An
 * event-time timer a minute after either clears it. */
static int check_small_large(sl_ctx_t *ctx, acct_states *s,
                             const fraud_params *p, const fraud_txn *t) {
  bool small = t->amount<p->small_below, large = t->amount> p->large_above;
  if (!small && !large)
    return 0;
  fraud_txn other;
  int rc = 0;
  if (small && get_txn(ctx, s->large, &other) &&
      fraud_small_then_large_p(p, t, &other))
    rc = small_large_alert(ctx, s, t, &other);
  if (large && get_txn(ctx, s->small, &other) &&
      fraud_small_then_large_p(p, &other, t))
    rc = small_large_alert(ctx, s, &other, t);
  if (rc)
    return rc;
  if ((rc = sl_value_put(ctx, small ? s->small : s->large, t, sizeof(*t))))
    return rc;
  return sl_timer_set(ctx, SL_EVENT_TIME, t->ts + FRAUD_SMALL_LARGE_WITHIN_MS);
}

static int check_travel(sl_ctx_t *ctx, acct_states *s, const fraud_params *p,
                        const fraud_txn *t) {
  fraud_txn prev;
  double km, kmh;
  int rc = 0;
  if (get_txn(ctx, s->last, &prev) &&
      fraud_travel_check_p(p, &prev, t, &km, &kmh)) {
    const fraud_txn *a = prev.ts <= t->ts ? &prev : t;
    const fraud_txn *b = a == t ? &prev : t;
    char ev[256];
    snprintf(ev, sizeof(ev),
             "\"txns\":[\"%s\",\"%s\"],\"countries\":[\"%s\",\"%s\"],"
             "\"km\":%.0f,\"kmh\":%.0f",
             a->id, b->id, a->country, b->country, km, kmh);
    rc = incident_emit(ctx, &s->vs, s->inc_trip, "impossible_travel",
                       t->account, strlen(t->account), a->ts, b->ts, ev);
  }
  return rc ? rc : sl_value_put(ctx, s->last, t, sizeof(*t));
}

static int acct_txn(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  acct_states *s = sl_ctx_local(ctx);
  return rec->value_len == sizeof(fraud_txn) ? pend(ctx, s->pending, rec)
                                             : SL_ERR_INVAL;
}

static int acct_rule(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  acct_states *s = sl_ctx_local(ctx);
  return versions_put(ctx, &s->vs, rec);
}

/* Judges the transactions of time ts by the thresholds then, clears the
 * small or large payment whose minute is over and incidents whose
 * interval is. */
static int acct_timer(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                      void *opaque) {
  (void)domain;
  (void)opaque;
  acct_states *s = sl_ctx_local(ctx);
  void *buf;
  size_t len;
  fraud_params p;
  int rc = unpend(ctx, s->pending, ts, &buf, &len);
  if (!rc && len)
    rc = versions_at(ctx, &s->vs, ts, &p);
  for (size_t off = 0; !rc && off + sizeof(fraud_txn) <= len;
       off += sizeof(fraud_txn)) {
    fraud_txn t;
    memcpy(&t, (char *)buf + off, sizeof(t));
    rc = check_small_large(ctx, s, &p, &t);
    if (!rc)
      rc = check_travel(ctx, s, &p, &t);
  }
  free(buf);
  sl_state_t *both[2] = {s->small, s->large};
  for (int i = 0; !rc && i < 2; i++) {
    fraud_txn t;
    if (get_txn(ctx, both[i], &t) && t.ts + FRAUD_SMALL_LARGE_WITHIN_MS <= ts)
      rc = sl_state_clear(ctx, both[i]);
  }
  if (!rc)
    rc = incident_expire(ctx, &s->vs, s->inc_pair, ts);
  return rc ? rc : incident_expire(ctx, &s->vs, s->inc_trip, ts);
}

/* No rules input: it ends at once (an ended input holds no watermark
 * back, and does not move it alone while the transactions are idle). */
static int no_rules(sl_source_ctx_t *ctx, void *opaque) {
  (void)ctx;
  (void)opaque;
  return SL_POLL_END;
}

int main(int argc, char **argv) {
  ex_job ej;
  fraud_opts o = {.suppress_ms = FRAUD_SUPPRESS_MS};
  if (ex_job_init_ext(&ej, argc, argv, "fraud-job", "fraud",
                      "examples/fraud/fraud.conf", "fraud.txns", "fraud.alerts",
                      "\n       [--rules-topic T] [--suppress-ms MS]",
                      fraud_flag, &o))
    return 1;
  sl_stream_t *txns = ex_job_parse(&ej, parse);
  sl_stream_t *by_account = sl_key_by(txns, NULL, NULL);

  /* The rules: a Kafka topic, or (no --rules-topic) an input that ends at
   * once, so the defaults hold throughout. */
  sl_stream_t *rules;
  if (o.rules_topic) {
    rules = ex_job_kafka_source(&ej, "rules", o.rules_topic, RULES_IDLE_MS);
  } else {
    sl_source_ops_t none = {.poll = no_rules};
    rules = sl_source(ej.job, "no-rules", &none, NULL);
  }
  sl_stream_t *versions = sl_flat_map(rules, "parse-rules", parse_rule, NULL);

  sl_window_spec_t ws =
      sl_window_sliding(FRAUD_VELOCITY_SIZE_MS, FRAUD_VELOCITY_SLIDE_MS);
  sl_window_fn_t wf = {.acc_size = sizeof(fraud_velocity_acc),
                       .init = vel_init,
                       .add = vel_add,
                       .merge = vel_merge,
                       .process = vel_fire};
  sl_stream_t *windows = sl_window(by_account, "velocity", &ws, &wf, NULL);
  sl_broadcast_process_ops_t vp = {.open = vel_open,
                                   .on_element = vel_element,
                                   .on_broadcast = vel_rule,
                                   .on_timer = vel_timer,
                                   .close = vel_close};
  sl_broadcast_process_ops_t ap = {.open = acct_open,
                                   .on_element = acct_txn,
                                   .on_broadcast = acct_rule,
                                   .on_timer = acct_timer,
                                   .close = acct_close};
  sl_stream_t *alerts[2] = {
      sl_broadcast_process(sl_key_by(windows, NULL, NULL),
                           sl_broadcast(versions), "velocity-rules", &vp, &o),
      sl_broadcast_process(by_account, sl_broadcast(versions), "account-rules",
                           &ap, &o),
  };
  ex_job_sink_alerts(&ej, alerts, 2);
  return ex_job_run(&ej);
}
