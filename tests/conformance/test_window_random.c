/* SPDX-License-Identifier: Apache-2.0 */
/* Randomised tests of every window assigner and both joins against a
 * brute-force reference model written from Flink's definitions (not from
 * the operator's code): random keys, out-of-order timestamps, bounded-
 * out-of-orderness watermarks, allowed lateness and late data, run as real
 * jobs at P=1 and P=2 on every state backend. The source emits one record
 * per poll, so a watermark follows every record and the model knows the
 * watermark each record meets. */
#include "check_main.h"
#include "window_util.h"

#define N_REC 2500
#define N_KEYS 7
#define BOUND 40

typedef struct rrec {
  char key[12];
  char val[16];
  int keyi;
  int v;
  bool left; /* joins: which side */
  int64_t ts;
} rrec;

typedef struct rsrc {
  const rrec *r;
  size_t n, i;
} rsrc;

static int rsrc_poll(sl_source_ctx_t *ctx, void *opaque) {
  rsrc *s = opaque;
  if (s->i >= s->n)
    return SL_POLL_END;
  const rrec *r = &s->r[s->i++];
  sl_record_t rec = {r->key, strlen(r->key), r->val, strlen(r->val), r->ts};
  int rc = sl_source_emit(ctx, &rec);
  return rc ? rc : SL_POLL_MORE;
}

static uint64_t rng;
static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)((rng >> 11) % n);
}

/* Keys of 8 bytes ("key00003") instead of 2 ("k3"): the hashmap's direct
 * probes, and with them the paths of an element that finds its tumbling
 * window's accumulator or extends its key's one session, serve 8-byte
 * keys only. */
static bool wide_keys;

/* Mostly increasing timestamps, many out of order within the bound, some
 * far behind (late), a few negative. */
static void gen(rrec *r, size_t n, uint64_t seed, bool join) {
  rng = seed * 0x9e3779b97f4a7c15ULL + 1;
  int64_t base = -500;
  for (size_t i = 0; i < n; i++) {
    base += rnd(12);
    int64_t ts = base;
    uint32_t p = rnd(100);
    if (p < 40)
      ts -= rnd(BOUND);
    else if (p < 50)
      ts -= BOUND + rnd(150);
    r[i].keyi = (int)rnd(N_KEYS);
    r[i].v = 1 + (int)rnd(9);
    r[i].left = join && rnd(2);
    r[i].ts = ts;
    snprintf(r[i].key, sizeof(r[i].key), wide_keys ? "key%05d" : "k%d",
             r[i].keyi);
    snprintf(r[i].val, sizeof(r[i].val), "%s%d",
             join ? (r[i].left ? "L" : "R") : "", r[i].v);
  }
}

/* ---- Collected and expected outputs, as sorted strings ------------------ */

typedef struct outs {
  pthread_mutex_t lock;
  char **s;
  size_t n, cap;
  int binary; /* values are built-in doubles */
} outs;

static void outs_add(outs *o, const char *key, const char *val, int64_t ts) {
  char b[128];
  snprintf(b, sizeof(b), "%s|%s|%" PRId64, key, val, ts);
  pthread_mutex_lock(&o->lock);
  o->s = tu_grow(o->s, o->n, &o->cap, sizeof(char *));
  o->s[o->n++] = strdup(b);
  pthread_mutex_unlock(&o->lock);
}

static void outs_addd(outs *o, const char *key, double v, int64_t ts) {
  char b[32];
  snprintf(b, sizeof(b), "%g", v);
  outs_add(o, key, b, ts);
}

static int outs_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  outs *o = opaque;
  char k[16], v[64];
  snprintf(k, sizeof(k), "%.*s", (int)rec->key_len, (const char *)rec->key);
  if (o->binary) {
    double d;
    ck_assert_uint_eq(rec->value_len, 8);
    memcpy(&d, rec->value, 8);
    outs_addd(o, k, d, rec->ts);
    return 0;
  }
  snprintf(v, sizeof(v), "%.*s", (int)rec->value_len, (const char *)rec->value);
  outs_add(o, k, v, rec->ts);
  return 0;
}

static void outs_init(outs *o, int binary) {
  memset(o, 0, sizeof(*o));
  pthread_mutex_init(&o->lock, NULL);
  o->binary = binary;
}

static void outs_free(outs *o) {
  for (size_t i = 0; i < o->n; i++)
    free(o->s[i]);
  free(o->s);
  pthread_mutex_destroy(&o->lock);
}

static void outs_check(outs *got, outs *want, const char *what) {
  wu_same_lines(got->s, got->n, want->s, want->n, what);
}

/* ---- Reference model ------------------------------------------------------
 */

typedef struct mwin {
  int key;
  int64_t start, end;
  double sum;
  int n;
  bool live;
  /* joins: element indexes */
  int *el;
  size_t nel, capel;
} mwin;

typedef struct model {
  mwin *w;
  size_t n, cap;
  int64_t L;
  outs *main, *late;
  const rrec *r;
} model;

static mwin *mfind(model *m, int key, int64_t start, int64_t end) {
  for (size_t i = 0; i < m->n; i++)
    if (m->w[i].live && m->w[i].key == key && m->w[i].start == start &&
        (end == INT64_MIN || m->w[i].end == end))
      return &m->w[i];
  m->w = tu_grow(m->w, m->n, &m->cap, sizeof(*m->w));
  mwin *w = &m->w[m->n++];
  memset(w, 0, sizeof(*w));
  *w = (mwin){.key = key, .start = start, .end = end, .live = true};
  return w;
}

static void mel_add(mwin *w, int idx) {
  w->el = tu_grow(w->el, w->nel, &w->capel, sizeof(int));
  w->el[w->nel++] = idx;
}

/* Emits window w's result: the sum, or for joins the L x R pairs. */
static void memit(model *m, mwin *w, bool join) {
  char k[12];
  snprintf(k, sizeof(k), wide_keys ? "key%05d" : "k%d", w->key);
  int64_t ts = w->end == INT64_MAX ? INT64_MAX : w->end - 1;
  if (!join) {
    outs_addd(m->main, k, w->sum, ts);
    return;
  }
  for (size_t i = 0; i < w->nel; i++)
    for (size_t j = 0; j < w->nel; j++) {
      /* Left arrivals of left elements x right arrivals of right ones. */
      if (w->el[i] % 2 != 0 || w->el[j] % 2 != 1)
        continue;
      const rrec *l = &m->r[w->el[i] / 2], *r = &m->r[w->el[j] / 2];
      if (!l->left || r->left)
        continue;
      char v[40];
      snprintf(v, sizeof(v), "%s|%s", l->val, r->val);
      outs_add(m->main, k, v, ts);
    }
}

static void madvance(model *m, int64_t old, int64_t nw, bool join) {
  for (size_t i = 0; i < m->n; i++) {
    mwin *w = &m->w[i];
    if (!w->live)
      continue;
    int64_t mx = w->end - 1;
    if (old < mx && mx <= nw)
      memit(m, w, join);
    if (mx + m->L <= nw)
      w->live = false;
  }
}

static void mfree(model *m) {
  for (size_t i = 0; i < m->n; i++)
    free(m->w[i].el);
  free(m->w);
}

static int64_t fstart(int64_t ts, int64_t off, int64_t size) {
  int64_t r = (ts - off) % size;
  return ts - (r < 0 ? r + size : r);
}

/* Fixed-size windows (tumbling: slide == size) and sessions (gap > 0). */
static void model_run(model *m, const rrec *r, size_t n, int64_t size,
                      int64_t slide, int64_t off, int64_t gap, bool join) {
  int64_t wm = INT64_MIN, maxts = INT64_MIN;
  m->r = r;
  /* Joins read one stream on both inputs: each element arrives on the
   * left input, then on the right, and each arrival may re-fire. Element
   * references are i * 2 + input. */
  for (size_t ii = 0; ii < n * (join ? 2 : 1); ii++) {
    size_t i = join ? ii / 2 : ii;
    int ref = join ? (int)ii : (int)i;
    const rrec *e = &r[i];
    bool skipped = true;
    if (gap) {
      int64_t s = e->ts, en = e->ts + gap;
      double sum = join ? 0 : e->v;
      bool any = false;
      mwin old = {0}; /* joins: the merged sessions' elements */
      for (size_t j = 0; j < m->n; j++) {
        mwin *w = &m->w[j];
        /* Sessions never touch each other, so only those meeting the
         * new window [ts, ts + gap) merge (touching counts). */
        if (!w->live || w->key != e->keyi || w->start > e->ts + gap ||
            w->end < e->ts)
          continue;
        any = true;
        if (w->start < s)
          s = w->start;
        if (w->end > en)
          en = w->end;
        sum += w->sum;
        w->live = false;
        for (size_t x = 0; x < w->nel; x++)
          mel_add(&old, w->el[x]);
      }
      if (any || en - 1 + m->L > wm) {
        mwin *w = mfind(m, e->keyi, s, en);
        w->sum = sum;
        for (size_t x = 0; x < old.nel; x++)
          mel_add(w, old.el[x]);
        if (join)
          mel_add(w, ref);
        skipped = false;
        if (en - 1 <= wm)
          memit(m, w, join);
      }
      free(old.el);
    } else {
      for (int64_t st = fstart(e->ts, off, slide); st > e->ts - size;
           st -= slide) {
        if (st + size - 1 + m->L <= wm)
          continue;
        skipped = false;
        mwin *w = mfind(m, e->keyi, st, st + size);
        w->sum += e->v;
        if (join)
          mel_add(w, ref);
        if (st + size - 1 <= wm)
          memit(m, w, join);
      }
    }
    if (skipped && e->ts + m->L <= wm && m->late)
      outs_add(m->late, e->key, e->val, e->ts);
    if (join && ii % 2 == 0)
      continue; /* the watermark follows the second arrival */
    if (e->ts > maxts)
      maxts = e->ts;
    int64_t nw = maxts - BOUND - 1;
    if (nw > wm) {
      madvance(m, wm, nw, join);
      wm = nw;
    }
  }
  madvance(m, wm, INT64_MAX - 1, join);
}

/* ---- Jobs ------------------------------------------------------------------
 */

typedef struct rcase {
  int kind; /* 0 window, 1 window join, 2 interval join */
  sl_window_spec_t spec;
  sl_window_fn_t fn;
  sl_interval_join_spec_t ij;
} rcase;

static int join_fn(sl_ctx_t *ctx, const sl_record_t *l, const sl_record_t *r,
                   void *opaque) {
  (void)opaque;
  /* Both inputs are the same stream: keep true left x true right. */
  if (((const char *)l->value)[0] != 'L' || ((const char *)r->value)[0] != 'R')
    return 0;
  return wu_join_fmt(ctx, l, r, opaque);
}

static void run_job(const rcase *c, const rrec *r, size_t n, int par,
                    const char *backend, outs *main, outs *late) {
  const char *kv[] = {"state.backend", backend, "state.dir", wu_state_dir(),
                      NULL};
  sl_job_t *job = tu_job_kv(par, kv);
  rsrc s = {r, n, 0};
  sl_source_ops_t so = {.poll = rsrc_poll};
  sl_watermark_spec_t ws = {.kind = SL_WM_BOUNDED, .bound_ms = BOUND};
  sl_stream_t *src = sl_with_watermarks(sl_source(job, "src", &so, &s), &ws);
  sl_stream_t *k = sl_key_by(src, NULL, NULL);
  sl_stream_t *o;
  if (c->kind == 0)
    o = sl_window(k, "win", &c->spec, &c->fn, NULL);
  else if (c->kind == 1)
    o = sl_window_join(k, k, "win", &c->spec, join_fn, NULL);
  else
    o = sl_interval_join(k, k, "win", &c->ij, join_fn, NULL);
  ck_assert_int_eq(sl_sink(o, "sink", outs_sink, main), SL_OK);
  if (late)
    ck_assert_int_eq(
        sl_sink(sl_side_output(o, "late"), "late-sink", outs_sink, late),
        SL_OK);
  int rc = sl_job_run(job);
  ck_assert_msg(rc == SL_OK, "job: %s", sl_job_errmsg(job));
  sl_job_destroy(job);
}

static void check_case(const rcase *c, uint64_t seed, const char *backend,
                       void (*model_fn)(const rcase *, const rrec *, size_t,
                                        outs *, outs *)) {
  rrec *r = calloc(N_REC, sizeof(*r));
  gen(r, N_REC, seed, c->kind != 0);
  bool with_late = c->kind == 0 && c->spec.late_tag;
  int binary = c->kind == 0;
  outs want, want_late;
  outs_init(&want, binary);
  outs_init(&want_late, 0);
  model_fn(c, r, N_REC, &want, with_late ? &want_late : NULL);
  ck_assert_msg(want.n > 0, "the model produced nothing");
  for (int par = 1; par <= 2; par++) {
    outs got, got_late;
    outs_init(&got, binary);
    outs_init(&got_late, 0);
    run_job(c, r, N_REC, par, backend, &got, with_late ? &got_late : NULL);
    char what[96];
    snprintf(what, sizeof(what), "seed %" PRIu64 " P=%d %s", seed, par,
             backend);
    outs_check(&got, &want, what);
    if (with_late) {
      ck_assert_msg(want_late.n > 0, "no late data generated");
      outs_check(&got_late, &want_late, what);
    }
    outs_free(&got);
    outs_free(&got_late);
  }
  outs_free(&want);
  outs_free(&want_late);
  free(r);
}

static void model_windows(const rcase *c, const rrec *r, size_t n, outs *main,
                          outs *late) {
  model m = {.L = c->spec.allowed_lateness, .main = main, .late = late};
  const sl_window_spec_t *s = &c->spec;
  if (s->assigner == SL_WINDOW_SESSION)
    model_run(&m, r, n, 0, 0, 0, s->gap, c->kind == 1);
  else if (s->assigner == SL_WINDOW_TUMBLING)
    model_run(&m, r, n, s->size, s->size, s->offset, 0, c->kind == 1);
  else
    model_run(&m, r, n, s->size, s->slide, s->offset, 0, c->kind == 1);
  mfree(&m);
}

static void model_count(const rcase *c, const rrec *r, size_t n, outs *main,
                        outs *late) {
  (void)late;
  int cnt[N_KEYS] = {0};
  double sum[N_KEYS] = {0};
  for (size_t i = 0; i < n; i++) {
    int k = r[i].keyi;
    sum[k] += r[i].v;
    if ((uint64_t)++cnt[k] == c->spec.count) {
      outs_addd(main, r[i].key, sum[k], INT64_MAX);
      cnt[k] = 0;
      sum[k] = 0;
    }
  }
}

/* Interval join, from Flink's definition: an element is late iff ts <
 * watermark; otherwise it is buffered and joined with the other side's
 * buffered elements in range; a buffered element goes when the watermark
 * reaches its cleanup time. */
static void model_interval(const rcase *c, const rrec *r, size_t n, outs *main,
                           outs *late) {
  (void)late;
  int64_t lo = c->ij.lower + c->ij.lower_exclusive;
  int64_t hi = c->ij.upper - c->ij.upper_exclusive;
  bool *buf[2];
  buf[0] = calloc(n, 1);
  buf[1] = calloc(n, 1);
  int64_t wm = INT64_MIN, maxts = INT64_MIN;
  for (size_t i = 0; i < n; i++) {
    const rrec *e = &r[i];
    if (wm == INT64_MIN || e->ts >= wm) {
      buf[0][i] = buf[1][i] = true; /* the same stream feeds both sides */
      for (size_t j = 0; j < i; j++) {
        if (r[j].keyi != e->keyi || r[j].left == e->left)
          continue;
        const rrec *l = e->left ? e : &r[j], *rr = e->left ? &r[j] : e;
        size_t lj = e->left ? i : j, rj = e->left ? j : i;
        if (!buf[0][lj] || !buf[1][rj])
          continue;
        if (rr->ts < l->ts + lo || rr->ts > l->ts + hi)
          continue;
        char v[40];
        snprintf(v, sizeof(v), "%s|%s", l->val, rr->val);
        outs_add(main, e->key, v, l->ts > rr->ts ? l->ts : rr->ts);
      }
    }
    if (e->ts > maxts)
      maxts = e->ts;
    if (maxts - BOUND - 1 > wm) {
      wm = maxts - BOUND - 1;
      for (size_t j = 0; j <= i; j++) {
        int64_t cl = hi > 0 ? r[j].ts + hi : r[j].ts;
        int64_t cr = -lo > 0 ? r[j].ts - lo : r[j].ts;
        if (cl <= wm)
          buf[0][j] = false;
        if (cr <= wm)
          buf[1][j] = false;
      }
    }
  }
  free(buf[0]);
  free(buf[1]);
}

static const uint64_t seeds[] = {1, 2, 3};

static sl_window_fn_t sum_fn(void) {
  sl_window_fn_t f = {.builtin = SL_AGG_SUM, .num = wu_num};
  return f;
}

/* A case of the user's sum (add, no merge) over windows spec with
 * allowed lateness L and late data tagged. */
static rcase add_case(sl_window_spec_t spec, int64_t L) {
  rcase c = {.spec = spec};
  c.fn.add = wu_add_sum;
  c.fn.acc_size = sizeof(double);
  c.spec.allowed_lateness = L;
  c.spec.late_tag = "late";
  return c;
}

/* check_case against model_windows with 2-byte keys, then with 8-byte
 * ones (wide_keys). */
static void check_widths(const rcase *c, uint64_t seed, const char *backend) {
  for (int wide = 0; wide < 2; wide++) {
    wide_keys = wide;
    check_case(c, seed, backend, model_windows);
  }
  wide_keys = false;
}

START_TEST(random_tumbling) {
  for (size_t s = 0; s < 3; s++) {
    rcase c = {.spec = sl_window_tumbling(100), .fn = sum_fn()};
    c.spec.offset = (int64_t)s * 37 - 40;
    c.spec.allowed_lateness = s == 0 ? 0 : 60;
    c.spec.late_tag = "late";
    check_widths(&c, seeds[s], wu_backends[_i]);
  }
  /* The user's aggregate, and a window as small as the watermark's
   * bound (elements land in several open windows of a key). */
  rcase c = add_case(sl_window_tumbling(BOUND), 25);
  check_widths(&c, 7, wu_backends[_i]);
}
END_TEST

START_TEST(random_sliding_sliced) {
  for (size_t s = 0; s < 3; s++) {
    rcase c = {.spec = sl_window_sliding(100, s == 2 ? 25 : 30),
               .fn = sum_fn()};
    c.spec.offset = (int64_t)s * 11;
    c.spec.allowed_lateness = s == 1 ? 0 : 45;
    c.spec.late_tag = "late";
    check_case(&c, seeds[s] + 10, wu_backends[_i], model_windows);
  }
}
END_TEST

START_TEST(random_sliding_per_window) {
  /* No merge function: one accumulator per window. */
  rcase c = add_case(sl_window_sliding(90, 30), 50);
  check_widths(&c, 21, wu_backends[_i]);
}
END_TEST

START_TEST(random_session) {
  for (size_t s = 0; s < 3; s++) {
    rcase c = {.spec = sl_window_session(s == 2 ? 8 : 25), .fn = sum_fn()};
    c.spec.allowed_lateness = s == 0 ? 0 : 70;
    c.spec.late_tag = "late";
    check_widths(&c, seeds[s] + 20, wu_backends[_i]);
  }
}
END_TEST

START_TEST(random_global_count) {
  rcase c = {.spec = sl_window_count(4), .fn = sum_fn()};
  check_case(&c, 31, wu_backends[_i], model_count);
}
END_TEST

START_TEST(random_window_join) {
  rcase c = {.kind = 1, .spec = sl_window_tumbling(60)};
  check_case(&c, 41, wu_backends[_i], model_windows);
  c.spec = sl_window_sliding(60, 20);
  check_case(&c, 42, wu_backends[_i], model_windows);
  c.spec = sl_window_session(12);
  c.spec.allowed_lateness = 30;
  check_case(&c, 43, wu_backends[_i], model_windows);
}
END_TEST

START_TEST(random_interval_join) {
  rcase c = {.kind = 2};
  c.ij.lower = -20;
  c.ij.upper = 10;
  check_case(&c, 51, wu_backends[_i], model_interval);
  c.ij = (sl_interval_join_spec_t){
      .lower = 3, .upper = 30, .lower_exclusive = true};
  check_case(&c, 52, wu_backends[_i], model_interval);
  c.ij = (sl_interval_join_spec_t){
      .lower = -30, .upper = -2, .upper_exclusive = true};
  check_case(&c, 53, wu_backends[_i], model_interval);
}
END_TEST

int main(void) {
  Suite *s = suite_create("window_random");
  TCase *tc = tcase_create("random");
  tcase_set_timeout(tc, 120);
  int n = WU_N_BACKENDS;
  tcase_add_loop_test(tc, random_tumbling, 0, n);
  tcase_add_loop_test(tc, random_sliding_sliced, 0, n);
  tcase_add_loop_test(tc, random_sliding_per_window, 0, n);
  tcase_add_loop_test(tc, random_session, 0, n);
  tcase_add_loop_test(tc, random_global_count, 0, n);
  tcase_add_loop_test(tc, random_window_join, 0, n);
  tcase_add_loop_test(tc, random_interval_join, 0, n);
  suite_add_tcase(s, tc);
  return wu_run(s);
}
