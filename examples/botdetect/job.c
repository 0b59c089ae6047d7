/* SPDX-License-Identifier: Apache-2.0 */
/* botdetect-job: bot detection on a stream of web requests, per client IP.
 * Two rules (rules.h): request_rate (sliding event-time window with an
 * incremental count) and regular_timing (session windows with a full-window
 * function over the request times). Alerts go to Kafka as JSON. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/exjob.h"
#include "rules.h"

/* Requests travel keyed by IP with the path as value: the rules need only
 * the event time, the evidence shows a path. */
static int parse(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  ex_job *ej = opaque;
  const sl_kafka_msg_t *m = sl_kafka_current(ctx);
  json_t *own = NULL, *j = m ? sl_kafka_msg_json(m) : NULL;
  if (!j)
    j = own = json_loadb(rec->value, rec->value_len, 0, NULL);
  const char *type = json_string_value(json_object_get(j, "type"));
  int rc = 0;
  if (!ex_job_is_end(ej, type, rec->ts)) {
    const char *ip = json_string_value(json_object_get(j, "ip"));
    const char *path = json_string_value(json_object_get(j, "path"));
    if (!type || strcmp(type, "req") || !ip || !path) {
      rc = SL_ERR_DECODE; /* error.policy: skip and count, or the DLQ */
    } else {
      sl_record_t r = {ip, strlen(ip), path, strlen(path), rec->ts};
      rc = sl_emit(ctx, &r);
    }
  }
  json_decref(own);
  return rc;
}

static int rate_fire(sl_ctx_t *ctx, const sl_window_t *win,
                     sl_window_elems_t *elems, void *opaque) {
  (void)opaque;
  sl_record_t r;
  int64_t count;
  if (!sl_window_elems_next(elems, &r) || r.value_len != sizeof(count))
    return 0;
  memcpy(&count, r.value, sizeof(count));
  if (!bot_rate_hit(count))
    return 0;
  char ev[128];
  snprintf(ev, sizeof(ev), "\"requests\":%" PRId64 ",\"window_ms\":%d", count,
           BOT_RATE_SIZE_MS);
  return ex_alert_emit(ctx, "request_rate", r.key, r.key_len, win->start,
                       win->end - 1, ev);
}

static int session_fire(sl_ctx_t *ctx, const sl_window_t *win,
                        sl_window_elems_t *elems, void *opaque) {
  (void)opaque;
  (void)win;
  size_t n = 0, cap = 64;
  int64_t *ts = malloc(cap * sizeof(*ts));
  sl_record_t r;
  const void *key = NULL;
  size_t klen = 0;
  char last_path[64] = "";
  while (ts && sl_window_elems_next(elems, &r)) {
    if (n == cap) {
      int64_t *t2 = realloc(ts, (cap *= 2) * sizeof(*ts));
      if (!t2)
        break;
      ts = t2;
    }
    ts[n++] = r.ts;
    key = r.key;
    klen = r.key_len;
    snprintf(last_path, sizeof(last_path), "%.*s", (int)r.value_len,
             (const char *)r.value);
  }
  if (!ts)
    return SL_ERR_NOMEM;
  double mean, cv;
  int rc = 0;
  if (bot_regular_check(ts, n, &mean, &cv)) {
    char ev[256];
    snprintf(ev, sizeof(ev),
             "\"requests\":%zu,\"mean_gap_ms\":%.0f,\"gap_cv\":%.3f,"
             "\"last_path\":\"%s\"",
             n, mean, cv, last_path);
    /* The session's own first and last request, not its window end (which
     * includes the gap), bound the evidence. */
    rc = ex_alert_emit(ctx, "regular_timing", key, klen, ts[0], ts[n - 1], ev);
  }
  free(ts);
  return rc;
}

int main(int argc, char **argv) {
  ex_job ej;
  if (ex_job_init(&ej, argc, argv, "botdetect-job", "botdetect",
                  "examples/botdetect/botdetect.conf", "botdetect.requests",
                  "botdetect.alerts"))
    return 1;
  sl_stream_t *reqs = sl_flat_map(ex_job_source(&ej), "parse", parse, &ej);
  sl_stream_t *by_ip = sl_key_by(reqs, NULL, NULL);

  sl_window_spec_t rs = sl_window_sliding(BOT_RATE_SIZE_MS, BOT_RATE_SLIDE_MS);
  sl_window_fn_t rf = {.builtin = SL_AGG_COUNT, .process = rate_fire};
  sl_window_spec_t ss = sl_window_session(BOT_SESSION_GAP_MS);
  sl_window_fn_t sf = {.process = session_fire};
  sl_stream_t *alerts[2] = {
      sl_window(by_ip, "request-rate", &rs, &rf, NULL),
      sl_window(by_ip, "sessions", &ss, &sf, NULL),
  };
  ex_job_sink_alerts(&ej, alerts, 2);
  return ex_job_run(&ej);
}
