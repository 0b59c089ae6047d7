/* SPDX-License-Identifier: Apache-2.0 */
/* Same input, same output, however it runs: random sequences of state
 * operations (value, list, map, reducing, aggregating, all with event-time
 * TTL) and event-time timers, read from several partitions that are far
 * apart in event time, run as real jobs at P=1 and P=2 on every backend
 * with the partitions interleaved in several ways, and compared with a
 * model that applies each key's operations in order. */
#include <inttypes.h>
#include <stdarg.h>

#include "check_main.h"
#include "window_util.h"

#define N_PART 4
#define N_KEYS 16 /* key i lives in partition i % N_PART */
#define PER_PART 1500
#define TTL 1000    /* ms, event time */
#define OFFSET 3000 /* partition p starts at p * OFFSET: apart > TTL */
#define JITTER 30   /* out-of-order within a partition */
#define STEP 20     /* largest ts step within a partition */
#define AHEAD 40    /* records a partition may run ahead of the slowest */
#define CHUNK 8     /* records emitted from one partition in a row */
/* No record is late however the partitions interleave: a subtask's
 * watermark trails its leading partition by more than any partition lags. */
#define BOUND (N_PART * OFFSET + (AHEAD + CHUNK) * STEP + JITTER + 100)

enum {
  OP_VPUT,
  OP_VGET,
  OP_VCLEAR,
  OP_LADD,
  OP_LGET,
  OP_MPUT,
  OP_MGET,
  OP_MDEL,
  OP_MITER,
  OP_RADD,
  OP_RGET,
  OP_AADD,
  OP_AGET,
  OP_TSET,
  OP_TDEL,
  N_OPS
};

typedef struct op {
  int key, part, seq; /* seq: the record's index within its key */
  int code, arg;
  int64_t ts;
  int64_t t; /* OP_TSET / OP_TDEL: the timer */
  char kbuf[8], vbuf[48];
} op;

/* xorshift; each source subtask has its own state (they run on their
 * workers' threads), the generator uses rng. */
static uint32_t rnd_r(uint64_t *s, uint32_t n) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return (uint32_t)((*s >> 11) % n);
}
static uint64_t rng;
static uint32_t rnd(uint32_t n) {
  return rnd_r(&rng, n);
}

/* ---- Input: per partition, in partition order ---------------------------- */

typedef struct input {
  op *part[N_PART];
  int n[N_PART];
} input;

/* Pending timers per key, so deletes hit timers that cannot have fired:
 * a record is never late, so the watermark is below its ts and a timer
 * at t >= ts is still pending. */
typedef struct ptimers {
  int64_t t[256];
  int n;
} ptimers;

static void gen_input(input *in, uint64_t seed) {
  rng = seed * 0x9e3779b97f4a7c15ULL + 7;
  ptimers *pt = calloc(N_KEYS, sizeof(*pt));
  int seq[N_KEYS] = {0};
  for (int p = 0; p < N_PART; p++) {
    in->part[p] = calloc(PER_PART, sizeof(op));
    in->n[p] = PER_PART;
    int64_t base = (int64_t)p * OFFSET;
    for (int i = 0; i < PER_PART; i++) {
      op *o = &in->part[p][i];
      base += 1 + rnd(STEP);
      o->part = p;
      o->key = p + N_PART * (int)rnd(N_KEYS / N_PART);
      o->seq = seq[o->key]++;
      o->ts = base - (rnd(4) == 0 ? rnd(JITTER) : 0);
      o->code = (int)rnd(N_OPS);
      o->arg = (int)rnd(1000);
      ptimers *k = &pt[o->key];
      if (o->code == OP_TSET) {
        o->t = o->ts + rnd(3 * TTL);
        if (k->n < 256)
          k->t[k->n++] = o->t;
      } else if (o->code == OP_TDEL) {
        int pick = -1;
        for (int j = 0; j < k->n; j++)
          if (k->t[j] >= o->ts) {
            pick = j;
            break;
          }
        if (pick < 0) {
          o->code = OP_VGET;
        } else {
          o->t = k->t[pick];
          k->t[pick] = k->t[--k->n];
        }
      }
      snprintf(o->kbuf, sizeof(o->kbuf), "k%d", o->key);
      snprintf(o->vbuf, sizeof(o->vbuf), "%d %d %d %" PRId64, o->seq, o->code,
               o->arg, o->t);
    }
  }
  free(pt);
}

static void free_input(input *in) {
  for (int p = 0; p < N_PART; p++)
    free(in->part[p]);
}

/* ---- Source: subtask s reads partitions p % P == s, interleaved --------- *
 * Partitions take turns in chunks chosen by a seeded schedule; one never
 * runs more than AHEAD records ahead of the slowest of the subtask. */

typedef struct sub {
  int parts[N_PART], n_parts;
  int pos[N_PART];
  int cur, left; /* partition of the current chunk, records left in it */
  uint64_t rng;
} sub;

typedef struct src {
  const input *in;
  uint64_t seed;
  sub subs[N_PART]; /* one per subtask */
} src;

static int src_open(sl_source_ctx_t *ctx, void *opaque) {
  src *s = opaque;
  int me = sl_source_ctx_subtask(ctx), n = sl_source_ctx_subtasks(ctx);
  sub *u = &s->subs[me];
  memset(u, 0, sizeof(*u));
  for (int p = 0; p < N_PART; p++)
    if (p % n == me)
      u->parts[u->n_parts++] = p;
  u->rng = s->seed * 31 + (uint64_t)me + 1;
  return 0;
}

static int src_poll(sl_source_ctx_t *ctx, void *opaque) {
  src *s = opaque;
  sub *u = &s->subs[sl_source_ctx_subtask(ctx)];
  size_t budget = sl_source_ctx_budget(ctx);
  for (size_t b = 0; b < budget; b++) {
    if (!u->left) {
      int slowest = INT32_MAX, cand[N_PART], nc = 0;
      for (int i = 0; i < u->n_parts; i++)
        if (u->pos[i] < s->in->n[u->parts[i]] && u->pos[i] < slowest)
          slowest = u->pos[i];
      if (slowest == INT32_MAX)
        return SL_POLL_END;
      for (int i = 0; i < u->n_parts; i++)
        if (u->pos[i] < s->in->n[u->parts[i]] && u->pos[i] <= slowest + AHEAD)
          cand[nc++] = i;
      u->cur = cand[rnd_r(&u->rng, (uint32_t)nc)];
      u->left = 1 + (int)rnd_r(&u->rng, CHUNK);
    }
    int i = u->cur, p = u->parts[i];
    if (u->pos[i] >= s->in->n[p]) {
      u->left = 0;
      continue;
    }
    const op *o = &s->in->part[p][u->pos[i]++];
    u->left--;
    sl_record_t rec = {o->kbuf, strlen(o->kbuf), o->vbuf, strlen(o->vbuf),
                       o->ts};
    int rc = sl_source_emit(ctx, &rec);
    if (rc)
      return rc;
  }
  return SL_POLL_MORE;
}

/* ---- The process function under test ------------------------------------ */

typedef struct pf_local {
  sl_state_t *v, *l, *m, *r, *a, *c;
} pf_local;

static int sum_u64(void *acc, const void *in, size_t len, void *opaque) {
  (void)len, (void)opaque;
  uint64_t a, b;
  memcpy(&a, acc, 8);
  memcpy(&b, in, 8);
  a += b;
  memcpy(acc, &a, 8);
  return 0;
}
/* Aggregating: accumulator {sum, count}, result "sum/count" as two u64. */
static int agg_add(void *acc, const void *in, size_t len, void *opaque) {
  (void)len, (void)opaque;
  uint64_t *a = acc, x;
  memcpy(&x, in, 8);
  a[0] += x;
  a[1]++;
  return 0;
}

static int pf_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  pf_local *l = calloc(1, sizeof(*l));
  sl_ctx_set_local(ctx, l);
  sl_state_ttl_t ttl = {.ttl_ms = TTL, .time = SL_TTL_EVENT_TIME};
  sl_state_desc_t dv = {.name = "v", .kind = SL_STATE_VALUE, .ttl = ttl};
  sl_state_desc_t dl = {.name = "l", .kind = SL_STATE_LIST, .ttl = ttl};
  sl_state_desc_t dm = {.name = "m", .kind = SL_STATE_MAP, .ttl = ttl};
  sl_state_desc_t dr = {.name = "r",
                        .kind = SL_STATE_REDUCING,
                        .ttl = ttl,
                        .value_size = 8,
                        .reduce = sum_u64};
  sl_state_desc_t da = {.name = "a",
                        .kind = SL_STATE_AGGREGATING,
                        .ttl = ttl,
                        .acc_size = 16,
                        .add = agg_add};
  sl_state_desc_t dc = {.name = "c", .kind = SL_STATE_VALUE, .ttl = ttl};
  l->v = sl_state_register(ctx, &dv);
  l->l = sl_state_register(ctx, &dl);
  l->m = sl_state_register(ctx, &dm);
  l->r = sl_state_register(ctx, &dr);
  l->a = sl_state_register(ctx, &da);
  l->c = sl_state_register(ctx, &dc);
  return l->v && l->l && l->m && l->r && l->a && l->c ? 0 : -1;
}

static void pf_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

/* Appends to an output line; out has room for OUTLEN bytes. */
#define OUTLEN 1024
static void cat(char *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void cat(char *out, const char *fmt, ...) {
  size_t n = strlen(out);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out + n, OUTLEN - n, fmt, ap);
  va_end(ap);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int emit_line(sl_ctx_t *ctx, const char *line) {
  const void *key;
  size_t kl;
  sl_ctx_key(ctx, &key, &kl);
  sl_record_t o = {key, kl, line, strlen(line), sl_ctx_timestamp(ctx)};
  return sl_emit(ctx, &o);
}

static int pf_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  pf_local *L = sl_ctx_local(ctx);
  char v[64], out[OUTLEN] = "";
  snprintf(v, sizeof(v), "%.*s", (int)rec->value_len, (const char *)rec->value);
  int seq, code, arg;
  int64_t t;
  if (sscanf(v, "%d %d %d %" SCNd64, &seq, &code, &arg, &t) != 4)
    return -1;
  uint64_t x = (uint64_t)arg;
  char mk[8], sv[16];
  snprintf(mk, sizeof(mk), "m%d", arg % 5);
  snprintf(sv, sizeof(sv), "%d", arg);
  const void *p;
  size_t n;
  int rc = 0;
  cat(out, "%d:", seq);
  switch (code) {
  case OP_VPUT:
    rc = sl_value_put(ctx, L->v, sv, strlen(sv));
    break;
  case OP_VGET:
    rc = sl_value_get(ctx, L->v, &p, &n);
    if (rc == 1)
      cat(out, "%.*s", (int)n, (const char *)p);
    break;
  case OP_VCLEAR:
    rc = sl_state_clear(ctx, L->v);
    break;
  case OP_LADD:
    rc = sl_list_add(ctx, L->l, sv, strlen(sv));
    break;
  case OP_LGET: {
    sl_list_iter_t it;
    rc = sl_list_get(ctx, L->l, &it);
    while (rc >= 0 && sl_list_next(&it, &p, &n) == 1)
      cat(out, "%.*s,", (int)n, (const char *)p);
    break;
  }
  case OP_MPUT:
    rc = sl_map_put(ctx, L->m, mk, strlen(mk), sv, strlen(sv));
    break;
  case OP_MGET:
    rc = sl_map_get(ctx, L->m, mk, strlen(mk), &p, &n);
    if (rc == 1)
      cat(out, "%.*s", (int)n, (const char *)p);
    break;
  case OP_MDEL:
    rc = sl_map_remove(ctx, L->m, mk, strlen(mk));
    if (rc >= 0)
      cat(out, "%d", rc);
    break;
  case OP_MITER: {
    sl_map_iter_t it;
    char ent[8][32], *ep[8];
    int ne = 0;
    const void *k;
    size_t kn;
    rc = sl_map_iter(ctx, L->m, &it);
    while (rc >= 0 && ne < 8 && sl_map_next(&it, &k, &kn, &p, &n) == 1) {
      snprintf(ent[ne], sizeof(ent[ne]), "%.*s=%.*s", (int)kn, (const char *)k,
               (int)n, (const char *)p);
      ep[ne] = ent[ne];
      ne++;
    }
    qsort(ep, (size_t)ne, sizeof(char *), cmp_str);
    for (int i = 0; i < ne; i++)
      cat(out, "%s,", ep[i]);
    break;
  }
  case OP_RADD:
    rc = sl_reducing_add(ctx, L->r, &x, 8);
    break;
  case OP_RGET:
    rc = sl_reducing_get(ctx, L->r, &p, &n);
    if (rc == 1) {
      memcpy(&x, p, 8);
      cat(out, "%" PRIu64, x);
    }
    break;
  case OP_AADD:
    rc = sl_aggregating_add(ctx, L->a, &x, 8);
    break;
  case OP_AGET:
    rc = sl_aggregating_get(ctx, L->a, &p, &n);
    if (rc == 1) {
      uint64_t a[2];
      memcpy(a, p, 16);
      cat(out, "%" PRIu64 "/%" PRIu64, a[0], a[1]);
    }
    break;
  case OP_TSET:
    rc = sl_timer_set(ctx, SL_EVENT_TIME, t);
    break;
  case OP_TDEL:
    rc = sl_timer_del(ctx, SL_EVENT_TIME, t);
    break;
  }
  if (rc < 0)
    return rc;
  return emit_line(ctx, out);
}

/* A timer counts the firings of its key in a TTL value state that only
 * timers touch (timers of a key fire in order, so the count is
 * determined whatever the elements around them). */
static int pf_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d, (void)opaque;
  pf_local *L = sl_ctx_local(ctx);
  uint64_t *c = sl_value_ptr(ctx, L->c, 8, NULL);
  if (!c)
    return -1;
  ++*c; /* created zeroed, also when expired */
  char out[OUTLEN];
  snprintf(out, sizeof(out), "T%" PRId64 ":%" PRIu64, ts, *c);
  return emit_line(ctx, out);
}

/* ---- The model: each key's operations in order --------------------------- */

typedef struct ment {
  bool on;
  int64_t last;
  int val;
} ment;

typedef struct mkey {
  ment v, r, a, c, m[5];
  uint64_t r_sum, a_sum, a_n, c_n;
  ment l[PER_PART];
  int l_n;
} mkey;

static bool live(const ment *e, int64_t now) {
  return e->on && !(e->last + TTL <= now);
}

typedef struct outs {
  pthread_mutex_t lock;
  char **s;
  size_t n, cap;
} outs;

static void outs_add(outs *o, const char *key, const char *val, int64_t ts) {
  char b[OUTLEN + 64];
  snprintf(b, sizeof(b), "%s|%s|%" PRId64, key, val, ts);
  pthread_mutex_lock(&o->lock);
  o->s = tu_grow(o->s, o->n, &o->cap, sizeof(char *));
  o->s[o->n++] = strdup(b);
  pthread_mutex_unlock(&o->lock);
}

static int outs_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  char k[16], v[OUTLEN];
  snprintf(k, sizeof(k), "%.*s", (int)rec->key_len, (const char *)rec->key);
  snprintf(v, sizeof(v), "%.*s", (int)rec->value_len, (const char *)rec->value);
  outs_add(opaque, k, v, rec->ts);
  return 0;
}

static void outs_init(outs *o) {
  memset(o, 0, sizeof(*o));
  pthread_mutex_init(&o->lock, NULL);
}

static void outs_free(outs *o) {
  for (size_t i = 0; i < o->n; i++)
    free(o->s[i]);
  free(o->s);
  pthread_mutex_destroy(&o->lock);
}

/* Timers per key: set and deleted in the key's order, all fire by the end
 * (the final watermark), in timestamp order. */
typedef struct mtimers {
  int64_t *t;
  size_t n, cap;
} mtimers;

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static void model_op(mkey *k, mtimers *tm, const op *o, char *out) {
  int64_t now = o->ts;
  ment *m = &k->m[o->arg % 5];
  cat(out, "%d:", o->seq);
  switch (o->code) {
  case OP_VPUT:
    k->v = (ment){true, now, o->arg};
    break;
  case OP_VGET:
    if (live(&k->v, now))
      cat(out, "%d", k->v.val);
    else
      k->v.on = false;
    break;
  case OP_VCLEAR:
    k->v.on = false;
    break;
  case OP_LADD:
    k->l[k->l_n++] = (ment){true, now, o->arg};
    break;
  case OP_LGET: {
    int j = 0;
    for (int i = 0; i < k->l_n; i++)
      if (live(&k->l[i], now)) {
        cat(out, "%d,", k->l[i].val);
        k->l[j++] = k->l[i];
      }
    k->l_n = j;
    break;
  }
  case OP_MPUT:
    *m = (ment){true, now, o->arg};
    break;
  case OP_MGET:
    if (live(m, now))
      cat(out, "%d", m->val);
    m->on = live(m, now);
    break;
  case OP_MDEL:
    cat(out, "%d", live(m, now) ? 1 : 0);
    m->on = false;
    break;
  case OP_MITER:
    for (int i = 0; i < 5; i++) /* "m0".."m4" sort as their index */
      if (live(&k->m[i], now))
        cat(out, "m%d=%d,", i, k->m[i].val);
    break;
  case OP_RADD:
    k->r_sum =
        live(&k->r, now) ? k->r_sum + (uint64_t)o->arg : (uint64_t)o->arg;
    k->r = (ment){true, now, 0};
    break;
  case OP_RGET:
    if (live(&k->r, now))
      cat(out, "%" PRIu64, k->r_sum);
    break;
  case OP_AADD:
    if (!live(&k->a, now))
      k->a_sum = k->a_n = 0;
    k->a_sum += (uint64_t)o->arg;
    k->a_n++;
    k->a = (ment){true, now, 0};
    break;
  case OP_AGET:
    if (live(&k->a, now))
      cat(out, "%" PRIu64 "/%" PRIu64, k->a_sum, k->a_n);
    break;
  case OP_TSET: {
    bool dup = false;
    for (size_t i = 0; i < tm->n; i++)
      dup |= tm->t[i] == o->t;
    if (!dup) {
      tm->t = tu_grow(tm->t, tm->n, &tm->cap, sizeof(int64_t));
      tm->t[tm->n++] = o->t;
    }
    break;
  }
  case OP_TDEL:
    for (size_t i = 0; i < tm->n; i++)
      if (tm->t[i] == o->t) {
        tm->t[i] = tm->t[--tm->n];
        break;
      }
    break;
  }
}

static void model_run(const input *in, outs *want) {
  mkey *keys = calloc(N_KEYS, sizeof(*keys));
  mtimers *tm = calloc(N_KEYS, sizeof(*tm));
  char out[OUTLEN];
  for (int p = 0; p < N_PART; p++)
    for (int i = 0; i < in->n[p]; i++) {
      const op *o = &in->part[p][i];
      out[0] = '\0';
      model_op(&keys[o->key], &tm[o->key], o, out);
      outs_add(want, o->kbuf, out, o->ts);
    }
  for (int key = 0; key < N_KEYS; key++) {
    mkey *k = &keys[key];
    char kb[8];
    snprintf(kb, sizeof(kb), "k%d", key);
    if (tm[key].n)
      qsort(tm[key].t, tm[key].n, sizeof(int64_t), cmp_i64);
    for (size_t i = 0; i < tm[key].n; i++) {
      int64_t t = tm[key].t[i];
      k->c_n = live(&k->c, t) ? k->c_n + 1 : 1;
      k->c = (ment){true, t, 0};
      snprintf(out, sizeof(out), "T%" PRId64 ":%" PRIu64, t, k->c_n);
      outs_add(want, kb, out, t);
    }
    free(tm[key].t);
  }
  free(tm);
  free(keys);
}

/* ---- Runs ---------------------------------------------------------------- */

static void run_job(const input *in, uint64_t seed, int par,
                    const char *backend, outs *got) {
  const char *kv[] = {"state.backend", backend, "state.dir", wu_state_dir(),
                      NULL};
  sl_job_t *job = tu_job_kv(par, kv);
  src s = {.in = in, .seed = seed};
  sl_source_ops_t so = {.open = src_open, .poll = src_poll, .parallel = true};
  sl_watermark_spec_t ws = {.kind = SL_WM_BOUNDED, .bound_ms = BOUND};
  sl_stream_t *st = sl_with_watermarks(sl_source(job, "src", &so, &s), &ws);
  sl_process_ops_t po = {.open = pf_open,
                         .on_element = pf_element,
                         .on_timer = pf_timer,
                         .close = pf_close};
  sl_stream_t *o = sl_process(sl_key_by(st, NULL, NULL), "proc", &po, NULL);
  ck_assert_int_eq(sl_sink(o, "sink", outs_sink, got), SL_OK);
  int rc = sl_job_run(job);
  ck_assert_msg(rc == SL_OK, "job: %s", sl_job_errmsg(job));
  sl_job_destroy(job);
}

static void check_same(outs *got, outs *want, const char *what) {
  wu_same_lines(got->s, got->n, want->s, want->n, what);
}

/* Two inputs, each at P=1 and P=2 with three interleavings: every run
 * gives exactly the model's output. */
START_TEST(same_output_every_interleaving) {
  const char *backend = wu_backends[_i];
  for (uint64_t seed = 1; seed <= 2; seed++) {
    input in;
    gen_input(&in, seed);
    outs want;
    outs_init(&want);
    model_run(&in, &want);
    for (int par = 1; par <= 2; par++)
      for (uint64_t sched = 1; sched <= 3; sched++) {
        outs got;
        outs_init(&got);
        run_job(&in, sched, par, backend, &got);
        char what[96];
        snprintf(what, sizeof(what),
                 "input %" PRIu64 " P=%d schedule %" PRIu64 " %s", seed, par,
                 sched, backend);
        check_same(&got, &want, what);
        outs_free(&got);
      }
    outs_free(&want);
    free_input(&in);
  }
}
END_TEST

/* The model is not vacuous: its expiry decides many reads. */
START_TEST(model_sees_expiry) {
  input in;
  gen_input(&in, 1);
  mkey *keys = calloc(N_KEYS, sizeof(*keys));
  mtimers tm[N_KEYS] = {0};
  int hits = 0, misses = 0;
  char out[OUTLEN];
  for (int p = 0; p < N_PART; p++)
    for (int i = 0; i < in.n[p]; i++) {
      const op *o = &in.part[p][i];
      if (o->code != OP_VGET && o->code != OP_MGET) {
        out[0] = '\0';
        model_op(&keys[o->key], &tm[o->key], o, out);
        continue;
      }
      bool was_on = o->code == OP_VGET ? keys[o->key].v.on
                                       : keys[o->key].m[o->arg % 5].on;
      out[0] = '\0';
      model_op(&keys[o->key], &tm[o->key], o, out);
      bool got = out[strlen(out) - 1] != ':';
      hits += got;
      misses += was_on && !got; /* stored, but expired */
    }
  for (int k = 0; k < N_KEYS; k++)
    free(tm[k].t);
  ck_assert_msg(hits > 100 && misses > 20, "hits %d, expired %d", hits, misses);
  free(keys);
  free_input(&in);
}
END_TEST

int main(void) {
  Suite *s = suite_create("state_random");
  TCase *tc = tcase_create("random");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, model_sees_expiry);
  tcase_add_loop_test(tc, same_output_every_interleaving, 0, WU_N_BACKENDS);
  suite_add_tcase(s, tc);
  return wu_run(s);
}
