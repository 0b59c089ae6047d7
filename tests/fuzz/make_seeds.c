/* SPDX-License-Identifier: Apache-2.0 */
/* Writes a real checkpoint to seed the fuzz corpora: a generator source,
 * a keyed process "count" with value, list, map and TTL state and a
 * pending timer, and a sliding window "win", at P=2. Usage: make_seeds
 * DIR (checkpoints go to DIR; tests/fuzz/seed.sh turns one into seeds). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

static int seeds_gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  static __thread char key[32], val[32];
  snprintf(key, sizeof(key), "k%d", (int)(i % 5));
  snprintf(val, sizeof(val), "v%llu", (unsigned long long)i);
  *out = (sl_record_t){.key = key,
                       .key_len = strlen(key),
                       .value = val,
                       .value_len = strlen(val),
                       .ts = (int64_t)i * 10};
  return 0;
}

typedef struct seeds_states {
  sl_state_t *count, *list, *map, *ttl;
} seeds_states;

static int seeds_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  seeds_states *s = calloc(1, sizeof(*s));
  if (!s)
    return SL_ERR_NOMEM;
  s->count = sl_state_register(
      ctx, &(sl_state_desc_t){.name = "n", .kind = SL_STATE_VALUE});
  s->list = sl_state_register(
      ctx, &(sl_state_desc_t){.name = "l", .kind = SL_STATE_LIST});
  s->map = sl_state_register(
      ctx, &(sl_state_desc_t){.name = "m", .kind = SL_STATE_MAP});
  s->ttl = sl_state_register(
      ctx, &(sl_state_desc_t){
               .name = "t",
               .kind = SL_STATE_VALUE,
               .ttl = {.ttl_ms = INT64_MAX, .time = SL_TTL_EVENT_TIME}});
  sl_ctx_set_local(ctx, s);
  return s->count && s->list && s->map && s->ttl ? 0 : SL_ERR_STATE;
}

static void seeds_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int seeds_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  seeds_states *s = sl_ctx_local(ctx);
  uint64_t n = 0;
  const void *v;
  size_t len;
  if (sl_value_get(ctx, s->count, &v, &len) == 1 && len == sizeof(n))
    memcpy(&n, v, sizeof(n));
  n++;
  int rc = sl_value_put(ctx, s->count, &n, sizeof(n));
  if (!rc && n <= 2)
    rc = sl_list_add(ctx, s->list, rec->value, rec->value_len);
  if (!rc)
    rc = sl_map_put(ctx, s->map, rec->value, rec->value_len, "1", 1);
  if (!rc)
    rc = sl_value_put(ctx, s->ttl, "t", 1);
  if (!rc && n == 1)
    rc = sl_timer_set(ctx, SL_EVENT_TIME, INT64_MAX / 2);
  return rc ? rc : sl_emit(ctx, rec);
}

static int seeds_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *op) {
  (void)ctx, (void)d, (void)ts, (void)op;
  return 0;
}

static int seeds_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  return 0;
}

/* Runs the job over records [0, count) with checkpoints in dir (NULL:
 * none), restoring from `from` (NULL: none). 0, or -1 with the job's
 * message in msg. The compatibility test runs it on the seed checkpoint
 * of a build from before the layout record. */
int seeds_run(const char *dir, const char *from, uint64_t count, char *msg,
              size_t msglen) {
  char err[512];
  sl_conf_t *conf = sl_conf_new();
  if (sl_conf_set(conf, "parallelism", "2", err, sizeof(err)) ||
      (dir && sl_conf_set(conf, "checkpoint.dir", dir, err, sizeof(err))) ||
      (from && sl_conf_set(conf, "restore.from", from, err, sizeof(err))) ||
      sl_conf_set(conf, "log.level", "error", err, sizeof(err))) {
    snprintf(msg, msglen, "%s", err);
    return -1;
  }
  sl_job_t *job = sl_job_new("seeds", conf, err, sizeof(err));
  if (!job) {
    snprintf(msg, msglen, "%s", err);
    return -1;
  }
  sl_generator_opts_t g = {.count = count, .gen = seeds_gen, .parallel = true};
  sl_stream_t *s = sl_source_generator(job, "gen", &g);
  sl_process_ops_t ops = {.open = seeds_open,
                          .on_element = seeds_element,
                          .on_timer = seeds_timer,
                          .close = seeds_close};
  s = sl_process(sl_key_by(s, NULL, NULL), "count", &ops, NULL);
  sl_window_spec_t w = {
      .assigner = SL_WINDOW_SLIDING, .size = 100, .slide = 50};
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
  s = sl_window(sl_key_by(s, NULL, NULL), "win", &w, &fn, NULL);
  int rc = sl_sink(s, "sink", seeds_sink, NULL);
  if (!rc)
    rc = sl_job_run(job);
  snprintf(msg, msglen, "%s", rc ? sl_job_errmsg(job) : "");
  sl_job_destroy(job);
  return rc ? -1 : 0;
}

#ifndef SEEDS_NO_MAIN
int main(int argc, char **argv) {
  char msg[1024];
  if (argc != 2) {
    fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  if (seeds_run(argv[1], NULL, 40, msg, sizeof(msg))) {
    fprintf(stderr, "make_seeds: %s\n", msg);
    return 1;
  }
  return 0;
}
#endif
