/* SPDX-License-Identifier: Apache-2.0 */
/* botdetect-job: bot detection on a stream of web requests, per client IP.
 * Three rules (rules.h): request_rate (sliding event-time window counting
 * pages), crawler_session (session windows: requests, assets, distinct
 * paths and 404s per session) and regular_timing (keyed process function
 * scoring the regularity of page gaps, in event-time order through
 * timers). Alerts go to Kafka as JSON with the rule and its evidence. */
#include <inttypes.h>
#include <stddef.h>
#include <sluice/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/exjob.h"
#include "rules.h"

/* Requests travel keyed by IP as bot_req structs: the JSON is read once,
 * on the source's thread. */
static int parse(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  const sl_kafka_msg_t *m = sl_kafka_current(ctx);
  json_t *own = NULL, *j = m ? sl_kafka_msg_json(m) : NULL;
  if (!j)
    j = own = json_loadb(rec->value, rec->value_len, 0, NULL);
  const char *type = json_string_value(json_object_get(j, "type"));
  int rc = 0;
  const char *ip = json_string_value(json_object_get(j, "ip"));
  const char *path = json_string_value(json_object_get(j, "path"));
  json_t *status = json_object_get(j, "status");
  bot_req r = {0};
  if (!type || strcmp(type, "req") || !ip || !path ||
      !json_is_integer(status) || strlen(path) >= sizeof(r.path)) {
    rc = SL_ERR_DECODE; /* error.policy: skip and count, or the DLQ */
  } else {
    r.status = (int32_t)json_integer_value(status);
    strcpy(r.path, path);
    sl_record_t out = {ip, strlen(ip), &r, sizeof(r), rec->ts};
    rc = sl_emit(ctx, &out);
  }
  json_decref(own);
  return rc;
}

/* Record bytes carry no alignment (they sit packed in exchange batches):
 * read the status with memcpy, and the path, a char array, in place. */
static bool req_of(const sl_record_t *rec, int32_t *status, const char **path) {
  if (rec->value_len != sizeof(bot_req))
    return false;
  const char *b = rec->value;
  memcpy(status, b + offsetof(bot_req, status), sizeof(*status));
  *path = b + offsetof(bot_req, path);
  return true;
}

/* ---- request_rate: sliding window, incremental page count --------------- */

static int rate_add(void *acc, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  int32_t status;
  const char *path;
  if (!req_of(rec, &status, &path))
    return SL_ERR_INVAL;
  if (!bot_is_asset(path))
    ++*(int64_t *)acc;
  return 0;
}

static void rate_merge(void *acc, const void *other, void *opaque) {
  (void)opaque;
  *(int64_t *)acc += *(const int64_t *)other;
}

static int rate_fire(sl_ctx_t *ctx, const sl_window_t *win,
                     sl_window_elems_t *elems, void *opaque) {
  (void)opaque;
  sl_record_t r;
  int64_t pages;
  if (!sl_window_elems_next(elems, &r) || r.value_len != sizeof(pages))
    return 0;
  memcpy(&pages, r.value, sizeof(pages));
  if (!bot_rate_hit(pages))
    return 0;
  char ev[128];
  snprintf(ev, sizeof(ev), "\"pages\":%" PRId64 ",\"window_ms\":%d", pages,
           BOT_RATE_SIZE_MS);
  return ex_alert_emit(ctx, "request_rate", r.key, r.key_len, win->start,
                       win->end - 1, ev);
}

/* ---- crawler_session: session windows, full-window function ------------- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int session_fire(sl_ctx_t *ctx, const sl_window_t *win,
                        sl_window_elems_t *elems, void *opaque) {
  (void)opaque;
  bot_session s = {0};
  size_t cap = 64;
  char **paths = malloc(cap * sizeof(*paths));
  int64_t first = INT64_MAX, last = INT64_MIN;
  sl_record_t r;
  const void *key = NULL;
  size_t klen = 0;
  int rc = 0;
  /* The paths point into the window's elements, valid until we return. */
  while (paths && sl_window_elems_next(elems, &r)) {
    int32_t status;
    const char *path;
    if (!req_of(&r, &status, &path))
      continue;
    key = r.key;
    klen = r.key_len;
    first = r.ts < first ? r.ts : first;
    last = r.ts > last ? r.ts : last;
    s.requests++;
    if (bot_is_asset(path)) {
      s.assets++;
      continue;
    }
    s.not_found += status == 404;
    if ((size_t)s.pages == cap) {
      char **p2 = realloc(paths, (cap *= 2) * sizeof(*paths));
      if (!p2) {
        rc = SL_ERR_NOMEM;
        break;
      }
      paths = p2;
    }
    paths[s.pages++] = (char *)path;
  }
  if (!paths)
    return SL_ERR_NOMEM;
  qsort(paths, (size_t)s.pages, sizeof(*paths), cmp_str);
  for (int64_t i = 0; i < s.pages; i++)
    s.distinct_paths += i == 0 || strcmp(paths[i - 1], paths[i]);
  if (!rc && bot_crawler_hit(&s)) {
    char ev[256];
    snprintf(ev, sizeof(ev),
             "\"requests\":%" PRId64 ",\"pages\":%" PRId64
             ",\"distinct_paths\":%" PRId64 ",\"assets\":%" PRId64
             ",\"not_found\":%" PRId64 ",\"session_end\":%" PRId64,
             s.requests, s.pages, s.distinct_paths, s.assets, s.not_found,
             win->end);
    /* The session's own first and last request bound the evidence (its
     * window end includes the gap). */
    rc = ex_alert_emit(ctx, "crawler_session", key, klen, first, last, ev);
  }
  free(paths);
  return rc;
}

/* ---- regular_timing: process function in event-time order --------------- */

typedef struct ip_states {
  sl_state_t *pending; /* list of int64 page times not yet scored */
  sl_state_t *run;     /* bot_regularity */
} ip_states;

static int ip_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  ip_states *s = calloc(1, sizeof(*s));
  if (!s)
    return SL_ERR_NOMEM;
  sl_ctx_set_local(ctx, s);
  /* An IP silent for an hour of event time starts afresh anyway (runs
   * break after 30 s): the TTL only bounds the state of the idle ones. */
  sl_state_desc_t p = {.name = "pending", .kind = SL_STATE_LIST};
  sl_state_desc_t r = {
      .name = "run",
      .kind = SL_STATE_VALUE,
      .ttl = {.ttl_ms = 3600 * 1000, .time = SL_TTL_EVENT_TIME}};
  s->pending = sl_state_register(ctx, &p);
  s->run = sl_state_register(ctx, &r);
  return s->pending && s->run ? 0 : SL_ERR_STATE;
}

static void ip_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

/* Requests arrive out of order (up to the watermark bound); gaps must be
 * measured in event-time order. Each page waits in list state for an
 * event-time timer at its own time: timers fire in time order once the
 * watermark says nothing earlier can still come. */
static int ip_req(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  int32_t status;
  const char *path;
  if (!req_of(rec, &status, &path))
    return SL_ERR_INVAL;
  if (bot_is_asset(path))
    return 0;
  ip_states *s = sl_ctx_local(ctx);
  int rc = sl_list_add(ctx, s->pending, &rec->ts, sizeof(rec->ts));
  return rc ? rc : sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
}

static int cmp_ts(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Reads the pending page times into a sorted array (*n of them). */
static int read_pending(sl_ctx_t *ctx, sl_state_t *st, int64_t **out,
                        size_t *n) {
  sl_list_iter_t it;
  const void *v;
  size_t len, cap = 16;
  int64_t *a = malloc(cap * sizeof(*a));
  int rc = a ? sl_list_get(ctx, st, &it) : SL_ERR_NOMEM;
  *n = 0;
  while (rc >= 0 && sl_list_next(&it, &v, &len) == 1) {
    if (len != sizeof(int64_t))
      continue;
    if (*n == cap) {
      int64_t *a2 = realloc(a, (cap *= 2) * sizeof(*a));
      if (!a2) {
        rc = SL_ERR_NOMEM;
        break;
      }
      a = a2;
    }
    memcpy(&a[(*n)++], v, sizeof(int64_t));
  }
  if (rc < 0) {
    free(a);
    return rc;
  }
  qsort(a, *n, sizeof(*a), cmp_ts);
  *out = a;
  return 0;
}

static int ip_timer(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                    void *opaque) {
  (void)domain;
  (void)opaque;
  ip_states *s = sl_ctx_local(ctx);
  int64_t *due;
  size_t n;
  int rc = read_pending(ctx, s->pending, &due, &n);
  if (rc)
    return rc;
  /* Pending pages are few (those within the watermark bound): score the
   * ones up to ts, keep the rest. */
  size_t ready = 0;
  while (ready < n && due[ready] <= ts)
    ready++;
  size_t keep = n - ready;
  const void **vals = keep ? malloc(keep * sizeof(*vals)) : NULL;
  size_t *lens = keep ? malloc(keep * sizeof(*lens)) : NULL;
  if (keep && (!vals || !lens)) {
    rc = SL_ERR_NOMEM;
    goto out;
  }
  for (size_t i = 0; i < keep; i++) {
    vals[i] = &due[ready + i];
    lens[i] = sizeof(int64_t);
  }
  if ((rc = sl_list_update(ctx, s->pending, vals, lens, keep)))
    goto out;
  bool created;
  bot_regularity *r = sl_value_ptr(ctx, s->run, sizeof(*r), &created);
  if (!r) {
    rc = SL_ERR_NOMEM;
    goto out;
  }
  for (size_t i = 0; i < ready && !rc; i++) {
    if (!bot_regularity_add(r, due[i]))
      continue;
    char ev[160];
    snprintf(ev, sizeof(ev),
             "\"pages\":%" PRId64 ",\"mean_gap_ms\":%.0f,\"gap_cv\":%.3f",
             r->pages, r->mean, bot_regularity_cv(r));
    const void *key;
    size_t klen;
    sl_ctx_key(ctx, &key, &klen);
    rc = ex_alert_emit(ctx, "regular_timing", key, klen, r->start, r->last, ev);
  }
out:
  free(vals);
  free(lens);
  free(due);
  return rc;
}

int main(int argc, char **argv) {
  ex_job ej;
  if (ex_job_init(&ej, argc, argv, "botdetect-job", "botdetect",
                  "examples/botdetect/botdetect.conf", "botdetect.requests",
                  "botdetect.alerts"))
    return 1;
  sl_stream_t *reqs = ex_job_parse(&ej, parse);
  sl_stream_t *by_ip = sl_key_by(reqs, NULL, NULL);

  sl_window_spec_t rs = sl_window_sliding(BOT_RATE_SIZE_MS, BOT_RATE_SLIDE_MS);
  sl_window_fn_t rf = {.acc_size = sizeof(int64_t),
                       .add = rate_add,
                       .merge = rate_merge,
                       .process = rate_fire};
  sl_window_spec_t ss = sl_window_session(BOT_SESSION_GAP_MS);
  sl_window_fn_t sf = {.process = session_fire};
  sl_process_ops_t ip = {.open = ip_open,
                         .on_element = ip_req,
                         .on_timer = ip_timer,
                         .close = ip_close};
  sl_stream_t *alerts[3] = {
      sl_window(by_ip, "request-rate", &rs, &rf, NULL),
      sl_window(by_ip, "sessions", &ss, &sf, NULL),
      sl_process(by_ip, "regularity", &ip, NULL),
  };
  ex_job_sink_alerts(&ej, alerts, 3);
  return ex_job_run(&ej);
}
