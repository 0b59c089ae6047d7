/* SPDX-License-Identifier: Apache-2.0 */
/* Mini-batch aggregation (mini.batch) changes no result: the same random
 * inputs (few keys, out-of-order and late records, allowed lateness, many
 * records between watermarks so that batches fold) run as real jobs with
 * it off and on, at P=1 and P=2 on every state backend, and the outputs,
 * late side output and error counts must be identical: in order at P=1,
 * as multisets at P=2 (two workers' outputs interleave freely). Some
 * cases stop the job halfway with a checkpoint and restore it. */
#include "check_main.h"
#include "window_util.h"

#define N_REC 6000
#define N_KEYS 5
#define BOUND 40

typedef struct mrec {
  char key[8];
  char val[16];
  int64_t ts;
} mrec;

typedef struct msrc {
  const mrec *r;
  size_t n, i;
  const uint16_t *chunk; /* records per poll, cycled */
  size_t n_chunk, c;
  sl_job_t *stop; /* stop the job (final checkpoint) after the records */
} msrc;

/* A chunk of records per poll: the watermark follows each poll, so the
 * records of a chunk reach the window in batches meeting one watermark. */
static int msrc_poll(sl_source_ctx_t *ctx, void *opaque) {
  msrc *s = opaque;
  if (s->stop && s->i >= s->n) {
    sl_job_stop(s->stop);
    return SL_POLL_EMPTY;
  }
  size_t k = s->chunk[s->c++ % s->n_chunk];
  for (; k && s->i < s->n; k--) {
    const mrec *r = &s->r[s->i++];
    sl_record_t rec = {r->key, strlen(r->key), r->val, strlen(r->val), r->ts};
    int rc = sl_source_emit(ctx, &rec);
    if (rc)
      return rc;
  }
  return s->i >= s->n && !s->stop ? SL_POLL_END : SL_POLL_MORE;
}

/* The source keeps no position: each run of a split job is given its
 * part of the records. */
static int no_snapshot(sl_source_ctx_t *ctx, uint64_t id, sl_buf_t *out,
                       void *opaque) {
  (void)ctx, (void)id, (void)out, (void)opaque;
  return 0;
}
static int no_restore(sl_source_ctx_t *ctx, const sl_blob_t *b, size_t n,
                      void *opaque) {
  (void)ctx, (void)b, (void)n, (void)opaque;
  return 0;
}

static uint64_t rng;
static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)((rng >> 11) % n);
}

static void gen(mrec *r, size_t n, uint16_t *chunk, size_t n_chunk,
                uint64_t seed) {
  rng = seed * 0x9e3779b97f4a7c15ULL + 1;
  int64_t base = -300;
  for (size_t i = 0; i < n; i++) {
    base += rnd(3);
    int64_t ts = base;
    uint32_t p = rnd(100);
    if (p < 40)
      ts -= rnd(BOUND);
    else if (p < 48)
      ts -= BOUND + rnd(150); /* late, or allowed-late */
    snprintf(r[i].key, sizeof(r[i].key), "k%u", rnd(N_KEYS));
    snprintf(r[i].val, sizeof(r[i].val), "%u", 1 + rnd(9));
    r[i].ts = ts;
  }
  for (size_t i = 0; i < n_chunk; i++)
    chunk[i] = (uint16_t)(rnd(8) ? 1 + rnd(300) : 1);
}

/* ---- Aggregates ---------------------------------------------------------- */

/* A record's value: a decimal digit string, not NUL-terminated. */
static int val(const sl_record_t *rec) {
  int v = 0;
  for (size_t i = 0; i < rec->value_len; i++)
    v = v * 10 + (((const char *)rec->value)[i] - '0');
  return v;
}

/* Tenths: floating-point sums whose value depends on the order of adds. */
static int tenth(const sl_record_t *rec, double *out, void *opaque) {
  (void)opaque;
  *out = val(rec) * 0.1 + 1e-9 * (double)rec->ts;
  return 0;
}

/* A user aggregate without merge whose result depends on every add's
 * order; it rejects value 7 when asked to (error.policy=skip). */
typedef struct fold_acc {
  uint64_t h;
  int64_t n;
} fold_acc;

static void fold_init(void *acc, void *opaque) {
  (void)opaque;
  *(fold_acc *)acc = (fold_acc){1469598103934665603ULL, 0};
}

static int fold_add(void *acc, const sl_record_t *rec, void *opaque) {
  fold_acc *a = acc;
  int v = val(rec);
  if (opaque && v == 7)
    return SL_ERR_USER;
  a->h = (a->h ^ (uint64_t)v ^ (uint64_t)rec->ts << 8) * 1099511628211ULL;
  a->n++;
  return 0;
}

/* ---- Jobs and outputs ------------------------------------------------------
 */

typedef struct outs {
  pthread_mutex_t lock;
  char **s;
  size_t n, cap;
} outs;

static int outs_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  outs *o = opaque;
  char b[160];
  int len = snprintf(b, sizeof(b), "%.*s|%" PRId64 "|", (int)rec->key_len,
                     (const char *)rec->key, rec->ts);
  const unsigned char *v = rec->value;
  for (size_t i = 0; i < rec->value_len && len < (int)sizeof(b) - 3; i++)
    len += snprintf(b + len, sizeof(b) - (size_t)len, "%02x", v[i]);
  pthread_mutex_lock(&o->lock);
  o->s = tu_grow(o->s, o->n, &o->cap, sizeof(char *));
  o->s[o->n++] = strdup(b);
  pthread_mutex_unlock(&o->lock);
  return 0;
}

static void outs_free(outs *o) {
  for (size_t i = 0; i < o->n; i++)
    free(o->s[i]);
  free(o->s);
  pthread_mutex_destroy(&o->lock);
}

typedef struct mcase {
  sl_window_spec_t spec;
  sl_window_fn_t fn;
  bool reject; /* the user aggregate rejects some records */
} mcase;

typedef struct result {
  outs main, late; /* late: side output prefixed "L|", in main's order */
  uint64_t late_dropped, errors, records_in;
} result;

/* One run over r[0, n): alone (ckpt NULL), or the first part of a split
 * job (stopping with a final checkpoint in ckpt), or its second part
 * (restoring from it). Outputs and counts are added to res. */
static void run_part(const mcase *c, const mrec *r, size_t n,
                     const uint16_t *chunk, size_t n_chunk, int par,
                     const char *backend, bool mb, const char *ckpt,
                     bool second, result *res) {
  const char *kv[] = {"state.backend",
                      backend,
                      "state.dir",
                      wu_state_dir(),
                      "mini.batch",
                      mb ? "true" : "false",
                      "error.policy",
                      "skip",
                      "restore.from",
                      second ? "latest" : "",
                      ckpt ? "checkpoint.dir" : NULL,
                      ckpt,
                      NULL};
  sl_job_t *job = tu_job_kv(par, kv);
  msrc s = {r, n, 0, chunk, n_chunk, 0, ckpt && !second ? job : NULL};
  sl_source_ops_t so = {.poll = msrc_poll};
  if (ckpt)
    so.snapshot = no_snapshot, so.restore = no_restore;
  sl_watermark_spec_t ws = {.kind = SL_WM_BOUNDED, .bound_ms = BOUND};
  sl_stream_t *src = sl_with_watermarks(sl_source(job, "src", &so, &s), &ws);
  sl_stream_t *k = sl_key_by(src, NULL, NULL);
  sl_stream_t *o =
      sl_window(k, "win", &c->spec, &c->fn, c->reject ? (void *)1 : NULL);
  ck_assert_int_eq(sl_sink(o, "sink", outs_sink, &res->main), SL_OK);
  if (c->spec.late_tag)
    ck_assert_int_eq(sl_sink(sl_side_output(o, c->spec.late_tag), "late-sink",
                             outs_sink, &res->late),
                     SL_OK);
  int rc = sl_job_run(job);
  ck_assert_msg(rc == SL_OK, "job: %s", sl_job_errmsg(job));
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(job, "win", &st), SL_OK);
  res->late_dropped += st.late_dropped;
  res->errors += st.errors;
  res->records_in += st.records_in;
  sl_job_destroy(job);
}

/* The whole input in one run, or (split) in two: the first stops after
 * half the records with a final checkpoint, the second restores it. */
static void run_job(const mcase *c, const mrec *r, size_t n,
                    const uint16_t *chunk, size_t n_chunk, int par,
                    const char *backend, bool mb, bool split, result *res) {
  memset(res, 0, sizeof(*res));
  pthread_mutex_init(&res->main.lock, NULL);
  pthread_mutex_init(&res->late.lock, NULL);
  if (!split) {
    run_part(c, r, n, chunk, n_chunk, par, backend, mb, NULL, false, res);
    return;
  }
  char dir[] = "/tmp/sluice-mbck-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  run_part(c, r, n / 2, chunk, n_chunk, par, backend, mb, dir, false, res);
  run_part(c, r + n / 2, n - n / 2, chunk, n_chunk, par, backend, mb, dir, true,
           res);
  char cmd[64];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static void same_seq(outs *got, outs *want, const char *what) {
  size_t i = 0;
  while (i < got->n && i < want->n && strcmp(got->s[i], want->s[i]) == 0)
    i++;
  ck_assert_msg(i == got->n && i == want->n,
                "%s: %zu outputs, expected %zu; first difference at %zu: "
                "got \"%s\", expected \"%s\"",
                what, got->n, want->n, i, i < got->n ? got->s[i] : "(end)",
                i < want->n ? want->s[i] : "(end)");
}

static void check_case(const mcase *c, uint64_t seed, const char *backend,
                       bool split) {
  mrec *r = calloc(N_REC, sizeof(*r));
  uint16_t chunk[97];
  gen(r, N_REC, chunk, 97, seed);
  for (int par = 1; par <= 2; par++) {
    result off, on;
    run_job(c, r, N_REC, chunk, 97, par, backend, false, split, &off);
    run_job(c, r, N_REC, chunk, 97, par, backend, true, split, &on);
    char what[128];
    snprintf(what, sizeof(what), "seed %" PRIu64 " P=%d %s%s", seed, par,
             backend, split ? " restored" : "");
    ck_assert_msg(off.main.n > 50, "%s: only %zu windows fired", what,
                  off.main.n);
    ck_assert_uint_eq(on.records_in, N_REC);
    ck_assert_uint_eq(on.late_dropped, off.late_dropped);
    ck_assert_uint_eq(on.errors, off.errors);
    if (c->reject)
      ck_assert_msg(off.errors > 0, "%s: no record was rejected", what);
    if (c->spec.late_tag)
      ck_assert_msg(off.late.n > 0, "%s: no late record", what);
    else
      ck_assert_msg(off.late_dropped > 0, "%s: no late record", what);
    if (par == 1) {
      same_seq(&on.main, &off.main, what);
      same_seq(&on.late, &off.late, what);
    } else {
      wu_same_lines(on.main.s, on.main.n, off.main.s, off.main.n, what);
      wu_same_lines(on.late.s, on.late.n, off.late.s, off.late.n, what);
    }
    outs_free(&off.main);
    outs_free(&off.late);
    outs_free(&on.main);
    outs_free(&on.late);
  }
  free(r);
}

static const uint64_t seeds[] = {11, 12, 13};

/* Floating-point sum, with and without allowed lateness and late output. */
START_TEST(minibatch_sum) {
  for (size_t s = 0; s < 3; s++) {
    mcase c = {.spec = sl_window_tumbling(100),
               .fn = {.builtin = SL_AGG_SUM, .num = tenth}};
    c.spec.offset = (int64_t)s * 37 - 40;
    c.spec.allowed_lateness = s == 0 ? 0 : 60;
    c.spec.late_tag = s == 2 ? NULL : "late";
    check_case(&c, seeds[s], wu_backends[_i], s == 1);
  }
}
END_TEST

/* A user aggregate without merge, order-sensitive, rejecting some records
 * (error.policy=skip); and the built-in average. */
START_TEST(minibatch_user) {
  for (size_t s = 0; s < 3; s++) {
    mcase c = {.spec = sl_window_tumbling(50),
               .fn = {.add = fold_add,
                      .init = fold_init,
                      .acc_size = sizeof(fold_acc)},
               .reject = s == 0};
    if (s == 2)
      c.fn = (sl_window_fn_t){.builtin = SL_AGG_AVG, .num = tenth};
    c.spec.allowed_lateness = s == 1 ? 0 : 80;
    c.spec.late_tag = "late";
    check_case(&c, seeds[s] + 100, wu_backends[_i], s != 1);
  }
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("window_minibatch");
  TCase *tc = tcase_create("same results");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, minibatch_sum, 0, WU_N_BACKENDS);
  tcase_add_loop_test(tc, minibatch_user, 0, WU_N_BACKENDS);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return wu_run(suite());
}
