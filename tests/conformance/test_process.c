/* SPDX-License-Identifier: Apache-2.0 */
/* Keyed process functions against Flink's documented semantics, driven
 * through the test harness (the production operator, state and timer
 * code): timers deduplicated and fired in order on watermarks and on
 * processing time, output timestamps, state TTL, co-process state sharing,
 * the error policy, and P=1 vs P=2 equivalence of a stateful job. */
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>

#include "check_main.h"
#include "testutil.h"

/* Every stateful test runs once per state backend (a loop test: _i). */
static const char *const backends[] = {"hashmap", "rocksdb"};
#define N_BACKENDS ((int)(sizeof(backends) / sizeof(backends[0])))
/* state.dir of the rocksdb runs: a directory of this test process. */
static char g_state_dir[64];

/* A configuration for backend bi (plus the error policy when set). */
static sl_conf_t *backend_conf(int bi, const char *policy) {
  char err[256];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(
      sl_conf_set(c, "state.backend", backends[bi], err, sizeof(err)), SL_OK);
  ck_assert_int_eq(sl_conf_set(c, "state.dir", g_state_dir, err, sizeof(err)),
                   SL_OK);
  if (policy)
    ck_assert_int_eq(sl_conf_set(c, "error.policy", policy, err, sizeof(err)),
                     SL_OK);
  return c;
}

/* ---- A process function driven by commands in the record value -------- *
 * "count"          increment a per-key counter, emit "<key>:<n>"
 * "et:<ts>"        set an event-time timer at ts
 * "pt:<ts>"        set a processing-time timer at ts
 * "del:<ts>"       delete the event-time timer at ts
 * "put:<v>"/"get"  value state with the descriptor's TTL
 * "side"           emit to side output "side"
 * "fail"           return an error
 * "reject:<why>"   return sl_ctx_reject(ctx, "<why>")
 * on_timer emits "<key>@<ts>:<domain>" (with timer_get, followed by
 * ":val=<v>" or ":val=<none>", the TTL value state read in on_timer).   */

typedef struct pf {
  sl_state_ttl_t ttl;
  int reregister; /* on_timer sets another timer for ts+reregister */
  bool timer_get; /* on_timer reads the value state */
} pf;

/* Per instance (one per worker): the state handles. */
typedef struct pf_local {
  sl_state_t *count, *val;
} pf_local;

static int pf_open(sl_ctx_t *ctx, void *opaque) {
  pf *p = opaque;
  pf_local *l = calloc(1, sizeof(*l));
  sl_ctx_set_local(ctx, l);
  sl_state_desc_t c = {.name = "count", .kind = SL_STATE_VALUE};
  sl_state_desc_t v = {.name = "val", .kind = SL_STATE_VALUE, .ttl = p->ttl};
  l->count = sl_state_register(ctx, &c);
  l->val = sl_state_register(ctx, &v);
  return l->count && l->val ? 0 : -1;
}

static void pf_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int emitf(sl_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int emitf(sl_ctx_t *ctx, const char *fmt, ...) {
  char *b = sl_ctx_alloc(ctx, 128);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b, 128, fmt, ap);
  va_end(ap);
  const void *key;
  size_t klen;
  ck_assert_int_eq(sl_ctx_key(ctx, &key, &klen), SL_OK);
  sl_record_t r = {key, klen, b, (size_t)n, -1};
  return sl_emit(ctx, &r);
}

static int pf_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  pf_local *p = sl_ctx_local(ctx);
  char cmd[64];
  size_t n = rec->value_len < 63 ? rec->value_len : 63;
  memcpy(cmd, rec->value, n);
  cmd[n] = '\0';
  const void *key;
  size_t klen;
  sl_ctx_key(ctx, &key, &klen);
  if (strcmp(cmd, "count") == 0) {
    bool created;
    int64_t *c = sl_value_ptr(ctx, p->count, sizeof(int64_t), &created);
    ck_assert_ptr_nonnull(c);
    ++*c;
    return emitf(ctx, "%.*s:%" PRId64, (int)klen, (const char *)key, *c);
  }
  if (strncmp(cmd, "et:", 3) == 0)
    return sl_timer_set(ctx, SL_EVENT_TIME, atoll(cmd + 3));
  if (strncmp(cmd, "pt:", 3) == 0)
    return sl_timer_set(ctx, SL_PROC_TIME, atoll(cmd + 3));
  if (strncmp(cmd, "del:", 4) == 0)
    return sl_timer_del(ctx, SL_EVENT_TIME, atoll(cmd + 4));
  if (strncmp(cmd, "put:", 4) == 0)
    return sl_value_put(ctx, p->val, cmd + 4, strlen(cmd + 4));
  if (strcmp(cmd, "get") == 0) {
    size_t len;
    const void *v = &len; /* not NULL: a read finding nothing sets it so */
    int rc = sl_value_get(ctx, p->val, &v, &len);
    if (rc < 0)
      return rc;
    return rc  ? emitf(ctx, "val=%.*s", (int)len, (const char *)v)
           : v ? emitf(ctx, "val=<none, *val not NULL>")
               : emitf(ctx, "val=<none>");
  }
  if (strcmp(cmd, "side") == 0)
    return sl_emit_to(ctx, "side", rec);
  if (strcmp(cmd, "fail") == 0)
    return -7;
  if (strncmp(cmd, "reject:", 7) == 0)
    return sl_ctx_reject(ctx, "%s (key %.*s)", cmd + 7, (int)klen,
                         (const char *)key);
  return 0;
}

static int pf_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  pf *p = opaque;
  const void *key;
  size_t klen;
  sl_ctx_key(ctx, &key, &klen);
  ck_assert_int_eq(sl_ctx_timestamp(ctx), ts);
  if (p->reregister && ts < 1000)
    sl_timer_set(ctx, d, ts + p->reregister);
  if (p->timer_get) {
    pf_local *l = sl_ctx_local(ctx);
    const void *v;
    size_t len;
    int rc = sl_value_get(ctx, l->val, &v, &len);
    if (rc < 0)
      return rc;
    return emitf(ctx, "%.*s@%" PRId64 ":%s:val=%.*s", (int)klen,
                 (const char *)key, ts, d == SL_EVENT_TIME ? "event" : "proc",
                 rc ? (int)len : 6, rc ? (const char *)v : "<none>");
  }
  return emitf(ctx, "%.*s@%" PRId64 ":%s", (int)klen, (const char *)key, ts,
               d == SL_EVENT_TIME ? "event" : "proc");
}

static const sl_process_ops_t pf_ops = {.open = pf_open,
                                        .on_element = pf_element,
                                        .on_timer = pf_timer,
                                        .close = pf_close};

static sl_harness_t *pf_harness(pf *p, int bi, const char *policy) {
  char err[512];
  sl_conf_t *c = backend_conf(bi, policy);
  const char *tags[] = {"side", NULL};
  sl_harness_t *h =
      sl_harness_new_process(c, &pf_ops, p, tags, err, sizeof(err));
  ck_assert_msg(h != NULL, "harness: %s", err);
  return h;
}

static const char *out(sl_harness_t *h, size_t i) {
  const sl_record_t *r = sl_harness_get(h, NULL, i);
  ck_assert_msg(r != NULL, "no output #%zu (have %zu)", i,
                sl_harness_count(h, NULL));
  return r->value;
}

START_TEST(event_timers_dedup_and_fire_in_order) {
  pf p = {0};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "a", "et:300", 1), SL_OK);
  sl_harness_push_kv(h, 0, "a", "et:100", 2);
  sl_harness_push_kv(h, 0, "a", "et:100", 3); /* duplicate: one timer */
  sl_harness_push_kv(h, 0, "b", "et:100", 4); /* other key: its own */
  sl_harness_push_kv(h, 0, "b", "et:200", 5);
  sl_harness_push_kv(h, 0, "b", "del:200", 6);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  ck_assert_int_eq(sl_harness_watermark(h, 0, 99), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  ck_assert_int_eq(sl_harness_watermark(h, 0, 250), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 2);
  ck_assert_str_eq(out(h, 0), "a@100:event");
  ck_assert_str_eq(out(h, 1), "b@100:event");
  /* Output of an event-time timer carries the timer's timestamp. */
  ck_assert_int_eq(sl_harness_get(h, NULL, 0)->ts, 100);
  ck_assert_int_eq(sl_harness_output_watermark(h), 250);
  sl_harness_end(h); /* the maximum watermark fires the rest */
  ck_assert_uint_eq(sl_harness_count(h, NULL), 3);
  ck_assert_str_eq(out(h, 2), "a@300:event");
  ck_assert_int_eq(sl_harness_output_watermark(h), SL_WATERMARK_MAX);
  sl_harness_destroy(h);
}
END_TEST

static sl_stream_t *build_pf(sl_stream_t *const *in, size_t n, void *opaque) {
  (void)n;
  return sl_process(in[0], "process", &pf_ops, opaque);
}

/* A snapshot carries keyed state and timers into a new harness (Flink's
 * snapshot / initializeState); what happens after the snapshot in the old
 * harness does not leak into it. */
START_TEST(harness_snapshot_and_restore) {
  pf p = {0};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  sl_harness_push_kv(h, 0, "a", "count", 1);
  sl_harness_push_kv(h, 0, "a", "count", 2);
  sl_harness_push_kv(h, 0, "b", "put:x", 3);
  sl_harness_push_kv(h, 0, "b", "et:500", 4);
  void *snap;
  size_t len;
  ck_assert_int_eq(sl_harness_snapshot(h, &snap, &len), SL_OK);
  sl_harness_push_kv(h, 0, "a", "count", 5); /* after the snapshot */
  sl_harness_destroy(h);
  char err[256];
  h = sl_harness_new_restored(backend_conf(_i, NULL), 1, true, build_pf, &p,
                              NULL, snap, len, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  sl_harness_push_kv(h, 0, "a", "count", 6);
  sl_harness_push_kv(h, 0, "b", "get", 7);
  ck_assert_str_eq(out(h, 0), "a:3");
  ck_assert_str_eq(out(h, 1), "val=x");
  ck_assert_int_eq(sl_harness_watermark(h, 0, 600), SL_OK);
  ck_assert_str_eq(out(h, 2), "b@500:event");
  sl_harness_destroy(h);
  /* A damaged snapshot is refused with a reason. */
  ((unsigned char *)snap)[len / 2] ^= 1;
  sl_conf_t *bc = backend_conf(_i, NULL);
  h = sl_harness_new_restored(bc, 1, true, build_pf, &p, NULL, snap, len, err,
                              sizeof(err));
  ck_assert_ptr_null(h);
  sl_conf_destroy(bc); /* still ours: the call failed */
  ck_assert_ptr_nonnull(strstr(err, "checksum"));
  free(snap);
}
END_TEST

/* Expired state is not written into a snapshot (cleanup on snapshot): a
 * snapshot after the only entry expired is as small as an empty one. */
START_TEST(snapshot_drops_expired_state) {
  pf p = {.ttl = {.ttl_ms = 100, .cleanup_per_access = -1}};
  /* The hashmap cleans up on snapshot; RocksDB's compaction filter does
   * it in the background instead. */
  sl_harness_t *h = pf_harness(&p, 0, NULL);
  void *empty, *snap;
  size_t empty_len, len;
  ck_assert_int_eq(sl_harness_snapshot(h, &empty, &empty_len), SL_OK);
  sl_harness_push_kv(h, 0, "a", "put:x", 1);
  ck_assert_int_eq(sl_harness_snapshot(h, &snap, &len), SL_OK);
  ck_assert_uint_gt(len, empty_len); /* live: written */
  free(snap);
  ck_assert_int_eq(sl_harness_set_time(h, 500), SL_OK);
  ck_assert_int_eq(sl_harness_snapshot(h, &snap, &len), SL_OK);
  ck_assert_uint_eq(len, empty_len);
  free(snap);
  free(empty);
  sl_harness_destroy(h);
}
END_TEST

START_TEST(timer_registered_in_on_timer_fires_in_same_watermark) {
  pf p = {.reregister = 50};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  sl_harness_push_kv(h, 0, "a", "et:10", 1);
  sl_harness_push_kv(h, 0, "a", "et:40", 1);
  sl_harness_watermark(h, 0, 100);
  /* 10 fires, registers 60; 40 fires, registers 90; 60 -> 110 (not due);
   * 90 -> 140: order 10, 40, 60, 90. */
  ck_assert_uint_eq(sl_harness_count(h, NULL), 4);
  ck_assert_str_eq(out(h, 0), "a@10:event");
  ck_assert_str_eq(out(h, 1), "a@40:event");
  ck_assert_str_eq(out(h, 2), "a@60:event");
  ck_assert_str_eq(out(h, 3), "a@90:event");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(timer_at_or_below_watermark_fires_with_next_watermark) {
  pf p = {0};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  sl_harness_watermark(h, 0, 500);
  sl_harness_push_kv(h, 0, "a", "et:400", 1);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  sl_harness_watermark(h, 0, 501);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 1);
  ck_assert_str_eq(out(h, 0), "a@400:event");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(processing_time_timers) {
  pf p = {0};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  sl_harness_push_kv(h, 0, "a", "pt:1000", 1);
  sl_harness_push_kv(h, 0, "b", "pt:500", 1);
  sl_harness_push_kv(h, 0, "b", "pt:500", 1);
  sl_harness_push_kv(h, 0, "a", "et:10", 1); /* event time is separate */
  ck_assert_int_eq(sl_harness_set_time(h, 499), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  sl_harness_set_time(h, 1000);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 2);
  ck_assert_str_eq(out(h, 0), "b@500:proc");
  ck_assert_str_eq(out(h, 1), "a@1000:proc");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(element_output_carries_input_timestamp) {
  pf p = {0};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  sl_harness_push_kv(h, 0, "k", "count", 1234);
  sl_harness_push_kv(h, 0, "k", "count", 99);
  ck_assert_str_eq(out(h, 0), "k:1");
  ck_assert_str_eq(out(h, 1), "k:2");
  ck_assert_int_eq(sl_harness_get(h, NULL, 0)->ts, 1234);
  ck_assert_int_eq(sl_harness_get(h, NULL, 1)->ts, 99);
  ck_assert_str_eq(sl_harness_get(h, NULL, 0)->key, "k");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(side_output_through_harness) {
  pf p = {0};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  sl_harness_push_kv(h, 0, "k", "side", 5);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  ck_assert_uint_eq(sl_harness_count(h, "side"), 1);
  ck_assert_str_eq(sl_harness_get(h, "side", 0)->value, "side");
  sl_harness_destroy(h);
}
END_TEST

/* Flink's TTL example: ttl=100, update on create and write, never return
 * expired: write@0, read@20 -> value, write@50, read@120 -> value,
 * read@300 -> empty. */
START_TEST(ttl_on_create_and_write_never_return_expired) {
  pf p = {.ttl = {.ttl_ms = 100,
                  .update = SL_TTL_ON_CREATE_AND_WRITE,
                  .visibility = SL_TTL_NEVER_RETURN_EXPIRED}};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  sl_harness_set_time(h, 0);
  sl_harness_push_kv(h, 0, "k", "put:v1", 1);
  sl_harness_set_time(h, 20);
  sl_harness_push_kv(h, 0, "k", "get", 1);
  sl_harness_set_time(h, 50);
  sl_harness_push_kv(h, 0, "k", "put:v2", 1);
  sl_harness_set_time(h, 120);
  sl_harness_push_kv(h, 0, "k", "get", 1);
  sl_harness_set_time(h, 300);
  sl_harness_push_kv(h, 0, "k", "get", 1);
  ck_assert_str_eq(out(h, 0), "val=v1");
  ck_assert_str_eq(out(h, 1), "val=v2");
  ck_assert_str_eq(out(h, 2), "val=<none>");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(ttl_on_read_and_write_return_expired_once) {
  pf p = {.ttl = {.ttl_ms = 100,
                  .update = SL_TTL_ON_READ_AND_WRITE,
                  .visibility = SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP,
                  .cleanup_per_access = -1}};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  sl_harness_push_kv(h, 0, "k", "put:v", 1);
  sl_harness_set_time(h, 90);
  sl_harness_push_kv(h, 0, "k", "get", 1); /* read refreshes: last = 90 */
  sl_harness_set_time(h, 180);
  sl_harness_push_kv(h, 0, "k", "get", 1); /* still alive: 90+100 > 180 */
  sl_harness_set_time(h, 400);
  sl_harness_push_kv(h, 0, "k", "get", 1); /* expired, returned once */
  sl_harness_push_kv(h, 0, "k", "get", 1); /* now gone */
  ck_assert_str_eq(out(h, 0), "val=v");
  ck_assert_str_eq(out(h, 1), "val=v");
  ck_assert_str_eq(out(h, 2), "val=v");
  ck_assert_str_eq(out(h, 3), "val=<none>");
  sl_harness_destroy(h);
}
END_TEST

/* Event-time TTL takes its clock from what is being processed: an
 * element's timestamp, an event-time timer's, and in a processing-time
 * timer, which has no event time, the watermark (as in Flink, where a
 * processing-time timer's context has no timestamp). ttl=100, written
 * at event time 1000: live while the clock is below 1100. */
START_TEST(ttl_event_time_clock_in_timers_and_elements) {
  pf p = {.ttl = {.ttl_ms = 100, .time = SL_TTL_EVENT_TIME}, .timer_get = true};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  sl_harness_push_kv(h, 0, "k", "put:v", 1000);
  sl_harness_push_kv(h, 0, "k", "pt:10", 1000);
  sl_harness_push_kv(h, 0, "k", "pt:20", 1000);
  sl_harness_push_kv(h, 0, "k", "et:1099", 1000);
  ck_assert_int_eq(sl_harness_watermark(h, 0, 1050), SL_OK);
  ck_assert_int_eq(sl_harness_set_time(h, 10), SL_OK);       /* at 1050: live */
  ck_assert_int_eq(sl_harness_watermark(h, 0, 1100), SL_OK); /* 1099: live */
  ck_assert_int_eq(sl_harness_set_time(h, 20), SL_OK); /* at 1100: expired */
  /* After the timers, an element's own timestamp is the clock again,
   * not the watermark (1100, at which j's value would be expired). */
  sl_harness_push_kv(h, 0, "j", "put:w", 1000);
  sl_harness_push_kv(h, 0, "j", "get", 1050);
  sl_harness_push_kv(h, 0, "j", "get", 1100);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 5);
  ck_assert_str_eq(out(h, 0), "k@10:proc:val=v");
  ck_assert_str_eq(out(h, 1), "k@1099:event:val=v");
  ck_assert_str_eq(out(h, 2), "k@20:proc:val=<none>");
  ck_assert_str_eq(out(h, 3), "val=w");
  ck_assert_str_eq(out(h, 4), "val=<none>");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(user_error_policies_in_process) {
  pf p = {0};
  sl_harness_t *h = pf_harness(&p, _i, "skip");
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "fail", 1), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "count", 1), SL_OK);
  sl_op_stats_t st;
  sl_job_op_stats(sl_harness_job(h), "process", &st);
  ck_assert_uint_eq(st.errors, 1);
  sl_harness_destroy(h);
  h = pf_harness(&p, _i, NULL);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "fail", 1), SL_ERR_USER);
  ck_assert_ptr_nonnull(strstr(sl_harness_errmsg(h), "returned -7"));
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "count", 1), SL_ERR_USER);
  sl_harness_destroy(h);
}
END_TEST

/* A user function gives the reason of its error (sl_ctx_reject): the job's
 * error message ends with it; under skip it is counted like any error and
 * does not outlive its record. */
START_TEST(rejected_record_says_why) {
  pf p = {0};
  sl_harness_t *h = pf_harness(&p, _i, "skip");
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "reject:too big", 1), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "count", 2), SL_OK);
  sl_op_stats_t st;
  sl_job_op_stats(sl_harness_job(h), "process", &st);
  ck_assert_uint_eq(st.errors, 1);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 1);
  sl_harness_destroy(h);
  h = pf_harness(&p, _i, NULL);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "count", 1), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "reject:too big", 2),
                   SL_ERR_USER);
  ck_assert_str_eq(sl_harness_errmsg(h),
                   "operator \"process\" (process) on worker 0: user "
                   "function returned -6 on record key=\"k\" ts=2 "
                   "value=\"reject:too big\": too big (key k)");
  sl_harness_destroy(h);
  /* Without a reason, the message is the generic one. */
  h = pf_harness(&p, _i, NULL);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "fail", 3), SL_ERR_USER);
  ck_assert_str_eq(sl_harness_errmsg(h),
                   "operator \"process\" (process) on worker 0: user "
                   "function returned -7 on record key=\"k\" ts=3 "
                   "value=\"fail\"");
  sl_harness_destroy(h);
}
END_TEST

/* One output's captured records are cleared, the others' kept. */
START_TEST(harness_clears_one_output) {
  pf p = {0};
  sl_harness_t *h = pf_harness(&p, _i, NULL);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "side", 1), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "count", 2), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, "side"), 1);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 1);
  ck_assert_int_eq(sl_harness_clear_output(h, "side"), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, "side"), 0);
  ck_assert_ptr_null(sl_harness_get(h, "side", 0));
  ck_assert_str_eq(out(h, 0), "k:1");
  ck_assert_int_eq(sl_harness_clear_output(h, "nope"), SL_ERR_NOTFOUND);
  ck_assert_int_eq(sl_harness_clear_output(NULL, NULL), SL_ERR_INVAL);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "side", 3), SL_OK);
  ck_assert_int_eq(sl_harness_clear_output(h, NULL), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  ck_assert_uint_eq(sl_harness_count(h, "side"), 1);
  ck_assert_str_eq(sl_harness_get(h, "side", 0)->value, "side");
  ck_assert_int_eq(sl_harness_get(h, "side", 0)->ts, 3);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "count", 4), SL_OK);
  ck_assert_str_eq(out(h, 0), "k:2");
  sl_harness_destroy(h);
}
END_TEST

/* ---- co_process: both inputs share state and timers per key ----------- */

typedef struct co {
  sl_state_t *seen; /* the harness runs one instance: a shared slot is fine */
} co;

static int co_open(sl_ctx_t *ctx, void *opaque) {
  co *c = opaque;
  sl_state_desc_t d = {.name = "seen", .kind = SL_STATE_LIST};
  c->seen = sl_state_register(ctx, &d);
  return c->seen ? 0 : -1;
}

static int co_emit_all(sl_ctx_t *ctx, co *c) {
  sl_list_iter_t it;
  int rc = sl_list_get(ctx, c->seen, &it);
  if (rc < 0)
    return rc;
  char *buf = sl_ctx_alloc(ctx, 256);
  size_t n = 0;
  const void *v;
  size_t len;
  while (sl_list_next(&it, &v, &len) == 1 && n + len + 1 < 256) {
    memcpy(buf + n, v, len);
    n += len;
    buf[n++] = ',';
  }
  sl_record_t r = {NULL, 0, buf, n, 0};
  return sl_emit(ctx, &r);
}

static int co_e1(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  co *c = opaque;
  int rc = sl_list_add(ctx, c->seen, rec->value, rec->value_len);
  return rc ? rc : co_emit_all(ctx, c);
}

static int co_e2(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  co *c = opaque;
  char b[64];
  int n = snprintf(b, sizeof(b), "2:%.*s", (int)rec->value_len,
                   (const char *)rec->value);
  int rc = sl_list_add(ctx, c->seen, b, (size_t)n);
  if (!rc)
    rc = sl_timer_set(ctx, SL_EVENT_TIME, rec->ts + 10);
  return rc ? rc : co_emit_all(ctx, c);
}

static int co_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d;
  (void)ts;
  return co_emit_all(ctx, opaque);
}

static sl_stream_t *build_co(sl_stream_t *const *in, size_t n, void *opaque) {
  (void)n;
  static const sl_co_process_ops_t ops = {.open = co_open,
                                          .on_element1 = co_e1,
                                          .on_element2 = co_e2,
                                          .on_timer = co_timer};
  return sl_co_process(in[0], in[1], "co", &ops, opaque);
}

START_TEST(co_process_shares_state_across_inputs) {
  co c = {0};
  char err[256];
  sl_harness_t *h = sl_harness_new(backend_conf(_i, NULL), 2, true, build_co,
                                   &c, NULL, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  sl_harness_push_kv(h, 0, "k", "a", 1);
  sl_harness_push_kv(h, 1, "k", "b", 2);
  sl_harness_push_kv(h, 1, "other", "x", 3);
  sl_harness_push_kv(h, 0, "k", "c", 4);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 4);
  ck_assert_str_eq(out(h, 0), "a,");
  ck_assert_str_eq(out(h, 1), "a,2:b,");
  ck_assert_str_eq(out(h, 2), "2:x,");
  ck_assert_str_eq(out(h, 3), "a,2:b,c,");
  /* The operator's watermark is the minimum of its two inputs. */
  sl_harness_watermark(h, 0, 100);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 4);
  ck_assert_int_eq(sl_harness_output_watermark(h), SL_TS_MIN);
  sl_harness_watermark(h, 1, 12);
  ck_assert_int_eq(sl_harness_output_watermark(h), 12);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 5); /* k's timer at 12 */
  ck_assert_str_eq(out(h, 4), "a,2:b,c,");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(harness_rejects_bad_builds) {
  char err[256];
  ck_assert_ptr_null(
      sl_harness_new(NULL, 3, true, build_co, NULL, NULL, err, sizeof(err)));
  ck_assert_ptr_nonnull(strstr(err, "1 or 2 inputs"));
  /* process on an unkeyed input: the graph error is reported */
  ck_assert_ptr_null(
      sl_harness_new(NULL, 2, false, build_co, NULL, NULL, err, sizeof(err)));
  ck_assert_ptr_nonnull(strstr(err, "not keyed"));
}
END_TEST

/* ---- Stateful job: P=1 vs P=2 ------------------------------------------ */

#define SKEYS 500
typedef struct srun {
  uint64_t chain[SKEYS];
  uint64_t last[SKEYS];
} srun;

static _Thread_local char s_key[16], s_val[8];
static int s_gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  unsigned k = (unsigned)((i * 2654435761u) % SKEYS);
  out->key_len = (size_t)snprintf(s_key, sizeof(s_key), "%u", k);
  out->key = s_key;
  memcpy(s_val, "count", 5);
  out->value = s_val;
  out->value_len = 5;
  out->ts = (int64_t)i;
  return 0;
}

static int s_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  srun *r = opaque;
  /* value is "<key>:<count>" */
  const char *v = rec->value;
  const char *colon = memchr(v, ':', rec->value_len);
  int k = (int)tu_num(v, (size_t)(colon - v));
  uint64_t n =
      (uint64_t)tu_num(colon + 1, rec->value_len - (size_t)(colon - v) - 1);
  r->chain[k] = r->chain[k] * 31 + n;
  r->last[k] = n;
  return 0;
}

static void run_stateful(int par, int bi, srun *r) {
  memset(r, 0, sizeof(*r));
  const char *kv[] = {"state.backend", backends[bi], "state.dir", g_state_dir,
                      NULL};
  sl_job_t *job = tu_job_kv(par, kv);
  pf p = {0};
  sl_generator_opts_t go = {.count = 200000, .gen = s_gen};
  sl_stream_t *s = sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
  s = sl_process(s, "count", &pf_ops, &p);
  sl_sink(s, "sink", s_sink, r);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
}

START_TEST(stateful_p1_equals_p2) {
  static srun a, b;
  run_stateful(1, _i, &a);
  run_stateful(2, _i, &b);
  uint64_t total = 0;
  for (int k = 0; k < SKEYS; k++) {
    ck_assert_uint_eq(a.last[k], b.last[k]);
    ck_assert_uint_eq(a.chain[k], b.chain[k]);
    total += a.last[k];
  }
  ck_assert_uint_eq(total, 200000);
}
END_TEST

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

int main(void) {
  snprintf(g_state_dir, sizeof(g_state_dir), "/tmp/sluice-test-process-XXXXXX");
  if (!mkdtemp(g_state_dir)) {
    perror("state.dir");
    return EXIT_FAILURE;
  }
  Suite *s = suite_create("process");
  TCase *tc = tcase_create("keyed");
  tcase_set_timeout(tc, 300);
  /* Timers and outputs touch state only through "count": every test runs
   * on each backend. */
  tcase_add_loop_test(tc, event_timers_dedup_and_fire_in_order, 0, N_BACKENDS);
  tcase_add_loop_test(tc, timer_registered_in_on_timer_fires_in_same_watermark,
                      0, N_BACKENDS);
  tcase_add_loop_test(tc, timer_at_or_below_watermark_fires_with_next_watermark,
                      0, N_BACKENDS);
  tcase_add_loop_test(tc, processing_time_timers, 0, N_BACKENDS);
  tcase_add_loop_test(tc, element_output_carries_input_timestamp, 0,
                      N_BACKENDS);
  tcase_add_loop_test(tc, side_output_through_harness, 0, N_BACKENDS);
  tcase_add_loop_test(tc, ttl_on_create_and_write_never_return_expired, 0,
                      N_BACKENDS);
  tcase_add_loop_test(tc, ttl_on_read_and_write_return_expired_once, 0,
                      N_BACKENDS);
  tcase_add_loop_test(tc, ttl_event_time_clock_in_timers_and_elements, 0,
                      N_BACKENDS);
  tcase_add_loop_test(tc, user_error_policies_in_process, 0, N_BACKENDS);
  tcase_add_loop_test(tc, rejected_record_says_why, 0, N_BACKENDS);
  tcase_add_loop_test(tc, harness_clears_one_output, 0, N_BACKENDS);
  tcase_add_loop_test(tc, co_process_shares_state_across_inputs, 0, N_BACKENDS);
  tcase_add_test(tc, harness_rejects_bad_builds);
  tcase_add_loop_test(tc, stateful_p1_equals_p2, 0, N_BACKENDS);
  tcase_add_loop_test(tc, harness_snapshot_and_restore, 0, N_BACKENDS);
  tcase_add_test(tc, snapshot_drops_expired_state);
  suite_add_tcase(s, tc);
  int rc = tu_run(s);
  nftw(g_state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return rc;
}
