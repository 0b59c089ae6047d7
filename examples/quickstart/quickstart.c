/* SPDX-License-Identifier: Apache-2.0 */
/* Quickstart: per-user click sessions from a JSON-lines file. A keyed
 * process function counts each user's clicks in value state (with a TTL)
 * and, with an event-time timer, emits a summary once the user has been
 * inactive for 30 s of event time. Usage:
 *   quickstart [clicks.jsonl] [parallelism] [out.jsonl]   (default: stdout) */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice.h>

#define GAP_MS 30000

typedef struct session {
  int64_t clicks, first, last, timer;
} session;

/* Each worker runs its own instance of the function: the state handle
 * belongs to the instance, so it lives in the instance's local slot. */
static int open_fn(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {
      .name = "session",
      .kind = SL_STATE_VALUE,
      /* Sessions that never close (a lost timer cannot happen, but a user
       * who vanishes mid-job) must not keep state forever. */
      .ttl = {.ttl_ms = 3600 * 1000, .update = SL_TTL_ON_CREATE_AND_WRITE},
  };
  sl_state_t *sessions = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, sessions);
  return sessions ? 0 : SL_ERR_STATE;
}

static int on_click(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  bool created;
  session *s = sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(*s), &created);
  if (!s)
    return SL_ERR_NOMEM;
  if (created)
    s->first = rec->ts;
  s->clicks++;
  if (rec->ts > s->last)
    s->last = rec->ts;
  /* One timer per user: move it to GAP_MS after the latest click. */
  if (s->timer && s->timer != s->last + GAP_MS)
    sl_timer_del(ctx, SL_EVENT_TIME, s->timer);
  s->timer = s->last + GAP_MS;
  return sl_timer_set(ctx, SL_EVENT_TIME, s->timer);
}

static int on_timer(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                    void *opaque) {
  (void)domain;
  (void)ts;
  (void)opaque;
  sl_state_t *sessions = sl_ctx_local(ctx);
  const void *v;
  size_t len;
  if (sl_value_get(ctx, sessions, &v, &len) != 1)
    return 0;
  session s;
  memcpy(&s, v, sizeof(s));
  const void *key;
  size_t klen;
  sl_ctx_key(ctx, &key, &klen);
  char *out = sl_ctx_alloc(ctx, 256);
  int n = snprintf(out, 256,
                   "{\"user\":\"%.*s\",\"clicks\":%" PRId64
                   ",\"first\":%" PRId64 ",\"last\":%" PRId64 "}",
                   (int)klen, (const char *)key, s.clicks, s.first, s.last);
  sl_record_t r = {key, klen, out, (size_t)n, 0};
  int rc = sl_emit(ctx, &r);
  return rc ? rc : sl_state_clear(ctx, sessions);
}

int main(int argc, char **argv) {
  const char *in = argc > 1 ? argv[1] : "examples/quickstart/clicks.jsonl";
  const char *par = argc > 2 ? argv[2] : "1";
  const char *out = argc > 3 ? argv[3] : NULL;
  char err[512];
  sl_conf_t *conf = sl_conf_new();
  /* Sources emit their watermark after each poll; polling one line at a
   * time lets the watermark (and so the session timers) advance through
   * this small file instead of jumping to the end after one big poll. */
  if (sl_conf_set(conf, "parallelism", par, err, sizeof(err)) ||
      sl_conf_set(conf, "error.policy", "skip", err, sizeof(err)) ||
      sl_conf_set(conf, "source.batch.size", "1", err, sizeof(err))) {
    fprintf(stderr, "quickstart: %s\n", err);
    return 2;
  }
  sl_job_t *job = sl_job_new("quickstart", conf, err, sizeof(err));
  if (!job) {
    fprintf(stderr, "quickstart: %s\n", err);
    return 2;
  }
  sl_jsonl_source_opts_t so = {.key_field = "user", .ts_field = "ts"};
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED, .bound_ms = 5000};
  sl_stream_t *clicks =
      sl_with_watermarks(sl_source_jsonl(job, "clicks", in, &so), &wm);
  sl_process_ops_t ops = {
      .open = open_fn, .on_element = on_click, .on_timer = on_timer};
  sl_stream_t *summaries =
      sl_process(sl_key_by(clicks, NULL, NULL), "sessions", &ops, NULL);
  if (out)
    sl_sink_jsonl(summaries, "out", out, SL_LINE_VALUE);
  else
    sl_sink_stdout(summaries, "out", SL_LINE_VALUE);
  int rc = sl_job_run(job);
  if (rc) {
    fprintf(stderr, "quickstart: %s: %s\n", sl_strerror(rc),
            sl_job_errmsg(job));
  } else {
    sl_op_stats_t st;
    sl_job_op_stats(job, "clicks", &st);
    fprintf(stderr,
            "quickstart: read %" PRIu64 " clicks, skipped %" PRIu64
            " malformed line(s)\n",
            st.records_out, st.errors);
  }
  sl_job_destroy(job);
  return rc ? 1 : 0;
}
