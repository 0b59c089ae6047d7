/* SPDX-License-Identifier: Apache-2.0 */
/* Incremental snapshots of the hashmap backend (checkpoint/incr.h): random
 * updates, list appends, map writes and removals, deletions, TTL cleanup
 * and dropped key groups across many checkpoints, some of which fail;
 * after every completed one, the key groups loaded from their chains of
 * segments equal, entry for entry, a model of the state and the live
 * backend (what a full checkpoint writes), with only the segments the
 * newest checkpoint uses kept, and restarts continue the chains. The
 * same with the key groups written whole frozen and written by another
 * thread while updates go on; and, one operation at a time under many
 * seeds, a freeze interleaved with updates and the scans of its key
 * groups: each scan gives what its key group held when frozen, and the
 * next changes of a key group give what was written after. */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "checkpoint/codec.h"
#include "checkpoint/incr.h"
#include "core/hash.h"
#include "state/backend.h"
#include "state/hashmap.h"

#define K 16 /* max parallelism: every key group on one worker */
#define KEYS 120
#define MAX_ITEMS 4096

static sl__backend *open_hashmap(void) {
  char err[256];
  sl__backend_conf bc = {.kg_lo = 0, .kg_hi = K, .max_par = K};
  sl__backend *be = sl__backend_find("hashmap")->open(&bc, err, sizeof(err));
  ck_assert_msg(be != NULL, "%s", err);
  return be;
}

/* ---- The model ---------------------------------------------------------- */

/* One stored item: a value or a whole (framed) list, or one map entry. */
typedef struct item {
  char state[2]; /* "v", "l" or "m" */
  char key[24];
  size_t kl;
  char ns[8];
  size_t nl;
  char mk[8];
  size_t mkl;
  unsigned char val[600];
  size_t len;
} item;

typedef struct model {
  item it[MAX_ITEMS];
  int n;
} model;

static item *mfind(model *m, const char *st, const char *key, size_t kl,
                   const char *ns, size_t nl, const char *mk, size_t mkl) {
  for (int i = 0; i < m->n; i++) {
    item *x = &m->it[i];
    if (!strcmp(x->state, st) && x->kl == kl && !memcmp(x->key, key, kl) &&
        x->nl == nl && !memcmp(x->ns, ns, nl) && x->mkl == mkl &&
        !memcmp(x->mk, mk, mkl))
      return x;
  }
  return NULL;
}

static item *mput(model *m, const char *st, const char *key, size_t kl,
                  const char *ns, size_t nl, const char *mk, size_t mkl) {
  item *x = mfind(m, st, key, kl, ns, nl, mk, mkl);
  if (x)
    return x;
  ck_assert_int_lt(m->n, MAX_ITEMS);
  x = &m->it[m->n++];
  memset(x, 0, sizeof(*x));
  strcpy(x->state, st);
  memcpy(x->key, key, kl);
  x->kl = kl;
  memcpy(x->ns, ns, nl);
  x->nl = nl;
  memcpy(x->mk, mk, mkl);
  x->mkl = mkl;
  return x;
}

static void mdel_at(model *m, int i) {
  m->it[i] = m->it[--m->n];
}

/* Removes every item of (state, key, ns); with key NULL, of key group kg. */
static void mdel(model *m, const char *st, const char *key, size_t kl,
                 const char *ns, size_t nl, int kg) {
  for (int i = m->n - 1; i >= 0; i--) {
    item *x = &m->it[i];
    bool hit = key ? !strcmp(x->state, st) && x->kl == kl &&
                         !memcmp(x->key, key, kl) && x->nl == nl &&
                         !memcmp(x->ns, ns, nl)
                   : (int)sl__key_group(sl__hash64(x->key, x->kl), K) == kg;
    if (hit)
      mdel_at(m, i);
  }
}

/* ---- Rendering: one line per item, sorted ------------------------------- */

typedef struct lines {
  char **v;
  size_t n, cap;
  const sl__backend *be;
} lines;

static void add_line(lines *l, const char *st, const void *key, size_t kl,
                     const void *ns, size_t nl, const void *mk, size_t mkl,
                     bool has_mk, const void *val, size_t len) {
  size_t sz = 16 + 2 * (kl + nl + mkl + len) + 8;
  char *s = malloc(sz), *p = s;
  p += sprintf(p, "%s|", st);
  for (size_t i = 0; i < kl; i++)
    p += sprintf(p, "%02x", ((const unsigned char *)key)[i]);
  *p++ = '|';
  for (size_t i = 0; i < nl; i++)
    p += sprintf(p, "%02x", ((const unsigned char *)ns)[i]);
  *p++ = '|';
  if (!has_mk)
    *p++ = '-';
  for (size_t i = 0; i < mkl; i++)
    p += sprintf(p, "%02x", ((const unsigned char *)mk)[i]);
  *p++ = '|';
  for (size_t i = 0; i < len; i++)
    p += sprintf(p, "%02x", ((const unsigned char *)val)[i]);
  *p = 0;
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 256;
    l->v = realloc(l->v, l->cap * sizeof(*l->v));
  }
  l->v[l->n++] = s;
}

static int line_cb(uint32_t state, const void *key, size_t kl, const void *ns,
                   size_t nl, const void *mk, size_t mkl, const void *val,
                   size_t len, void *opaque) {
  lines *l = opaque;
  const char *name;
  sl__btype type;
  ck_assert_int_eq(l->be->ops->state_info(l->be, state, &name, &type), 0);
  add_line(l, name, key, kl, ns, nl, mk, mkl, mk != NULL, val, len);
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join(lines *l) {
  if (l->n) /* an empty state has no array */
    qsort(l->v, l->n, sizeof(*l->v), cmp_str);
  size_t total = 1;
  for (size_t i = 0; i < l->n; i++)
    total += strlen(l->v[i]) + 1;
  char *out = malloc(total), *p = out;
  for (size_t i = 0; i < l->n; i++) {
    p += sprintf(p, "%s\n", l->v[i]);
    free(l->v[i]);
  }
  *p = 0;
  free(l->v);
  return out;
}

static char *render_be(sl__backend *be) {
  lines l = {.be = be};
  for (uint32_t kg = 0; kg < K; kg++)
    ck_assert_int_eq(be->ops->kg_scan(be, kg, line_cb, &l), 0);
  return join(&l);
}

static char *render_model(const model *m) {
  lines l = {0};
  for (int i = 0; i < m->n; i++) {
    const item *x = &m->it[i];
    add_line(&l, x->state, x->key, x->kl, x->ns, x->nl, x->mk, x->mkl,
             !strcmp(x->state, "m"), x->val, x->len);
  }
  return join(&l);
}

/* ---- Operations --------------------------------------------------------- */

typedef struct world {
  sl__backend *be;
  uint32_t v, l, m; /* state ids in be */
  model *md;
  unsigned seed;
} world;

static unsigned rnd(world *w, unsigned n) {
  return (unsigned)rand_r(&w->seed) % n;
}

static void reg(world *w) {
  /* Restarts register in another order: ids differ from the files'. */
  bool rev = rnd(w, 2);
  sl__backend *be = w->be;
  if (rev) {
    ck_assert_int_eq(be->ops->register_state(be, "m", SL__BT_MAP, &w->m), 0);
    ck_assert_int_eq(be->ops->register_state(be, "l", SL__BT_LIST, &w->l), 0);
  }
  ck_assert_int_eq(be->ops->register_state(be, "v", SL__BT_VALUE, &w->v), 0);
  ck_assert_int_eq(be->ops->register_state(be, "l", SL__BT_LIST, &w->l), 0);
  ck_assert_int_eq(be->ops->register_state(be, "m", SL__BT_MAP, &w->m), 0);
}

static bool expired(const void *val, size_t len, void *opaque) {
  (void)opaque;
  return len && ((const unsigned char *)val)[0] < 24;
}

static void one_op(world *w) {
  char key[24], ns[8] = {0}, mk[8];
  unsigned kn = rnd(w, KEYS);
  /* Mostly 8-byte keys (inline slots), some longer (out of line). */
  size_t kl = kn % 7 == 0 ? 20 : 8;
  memset(key, 0, sizeof(key));
  snprintf(key, sizeof(key), "k%06u", kn);
  size_t nl = rnd(w, 3) == 0 ? 8 : 0;
  if (nl)
    ns[0] = (char)('a' + rnd(w, 2));
  uint64_t kh = sl__hash64(key, kl);
  sl__skey k = {
      0, sl__key_group(kh, K), sl__state_hash(kh, ns, nl), key, kl, ns, nl};
  sl__backend *be = w->be;
  model *md = w->md;
  unsigned op = rnd(w, 100);
  void *p;
  size_t len;
  if (op < 30) { /* value: write a whole value of 8 or 20 bytes */
    k.state = w->v;
    size_t vl = rnd(w, 2) ? 8 : 20;
    ck_assert_int_ge(be->ops->slot(be, &k, vl, &p), 0);
    item *x = mput(md, "v", key, kl, ns, nl, "", 0);
    x->len = vl;
    for (size_t i = 0; i < vl; i++)
      ((unsigned char *)p)[i] = x->val[i] = (unsigned char)rnd(w, 256);
  } else if (op < 40) { /* value: read-modify-write in place */
    k.state = w->v;
    if (be->ops->get(be, &k, &p, &len, true) == 1) {
      item *x = mfind(md, "v", key, kl, ns, nl, "", 0);
      ck_assert_ptr_nonnull(x);
      ((unsigned char *)p)[0] = x->val[0] = (unsigned char)rnd(w, 256);
    }
  } else if (op < 55) { /* list append */
    k.state = w->l;
    item *x = mfind(md, "l", key, kl, ns, nl, "", 0);
    size_t el = 1 + rnd(w, 12);
    if (x && x->len + sl__list_frame(el) > sizeof(x->val)) {
      ck_assert_int_eq(be->ops->del(be, &k), 1);
      mdel(md, "l", key, kl, ns, nl, -1);
      return;
    }
    ck_assert_int_ge(be->ops->list_append(be, &k, el, &p), 0);
    x = mput(md, "l", key, kl, ns, nl, "", 0);
    unsigned char *f = x->val + x->len;
    memset(f, 0, sl__list_frame(el));
    uint32_t l32 = (uint32_t)el;
    memcpy(f, &l32, 4);
    for (size_t i = 0; i < el; i++)
      ((unsigned char *)p)[i] = f[SL__LIST_HDR + i] =
          (unsigned char)rnd(w, 256);
    x->len += sl__list_frame(el);
  } else if (op < 72) { /* map put */
    k.state = w->m;
    size_t mkl = 1 + rnd(w, 4);
    for (size_t i = 0; i < mkl; i++)
      mk[i] = (char)('a' + rnd(w, 3));
    size_t vl = 1 + rnd(w, 9);
    ck_assert_int_ge(
        be->ops->map_slot(be, &k, mk, mkl, sl__hash64(mk, mkl), vl, &p), 0);
    item *x = mput(md, "m", key, kl, ns, nl, mk, mkl);
    x->len = vl;
    for (size_t i = 0; i < vl; i++)
      ((unsigned char *)p)[i] = x->val[i] = (unsigned char)rnd(w, 256);
  } else if (op < 82) { /* map remove */
    k.state = w->m;
    size_t mkl = 1 + rnd(w, 4);
    for (size_t i = 0; i < mkl; i++)
      mk[i] = (char)('a' + rnd(w, 3));
    int had = mfind(md, "m", key, kl, ns, nl, mk, mkl) != NULL;
    ck_assert_int_eq(be->ops->map_remove(be, &k, mk, mkl, sl__hash64(mk, mkl)),
                     had);
    item *x = mfind(md, "m", key, kl, ns, nl, mk, mkl);
    if (x)
      mdel_at(md, (int)(x - md->it));
  } else if (op < 96) { /* delete a (key, ns) of any state */
    const char *names[3] = {"v", "l", "m"};
    uint32_t ids[3] = {w->v, w->l, w->m};
    unsigned s = rnd(w, 3);
    k.state = ids[s];
    be->ops->del(be, &k);
    mdel(md, names[s], key, kl, ns, nl, -1);
  } else if (op < 99) { /* TTL cleanup of every expired item of a state */
    const char *names[3] = {"v", "l", "m"};
    uint32_t ids[3] = {w->v, w->l, w->m};
    unsigned s = rnd(w, 3);
    be->ops->cleanup(be, ids[s], 100000, expired, NULL);
    for (int i = md->n - 1; i >= 0; i--) {
      item *x = &md->it[i];
      if (strcmp(x->state, names[s]))
        continue;
      if (s != 1) {
        if (expired(x->val, x->len, NULL))
          mdel_at(md, i);
        continue;
      }
      unsigned char out[600];
      size_t o = 0;
      for (size_t off = 0; off < x->len;) {
        uint32_t el;
        memcpy(&el, x->val + off, 4);
        if (!expired(x->val + off + SL__LIST_HDR, el, NULL)) {
          memcpy(out + o, x->val + off, sl__list_frame(el));
          o += sl__list_frame(el);
        }
        off += sl__list_frame(el);
      }
      if (!o) {
        mdel_at(md, i);
      } else {
        memcpy(x->val, out, o);
        x->len = o;
      }
    }
  } else { /* a key group handed away: everything in it goes */
    unsigned kg = rnd(w, K);
    be->ops->kg_drop(be, kg, NULL);
    mdel(md, NULL, NULL, 0, NULL, 0, (int)kg);
  }
}

/* ---- Checkpoints -------------------------------------------------------- */

typedef struct store {
  char dir[64]; /* the segment files, as a checkpoint holds them */
  sl__seg *segs;
  size_t n;
} store;

static void store_add(store *s, const sl__incr_out *o) {
  if (!o->seg.len)
    return;
  char path[128], err[256];
  snprintf(path, sizeof(path), "%s/%s", s->dir, o->seg_name);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(o->seg.data, 1, o->seg.len, f), o->seg.len);
  ck_assert_int_eq(fclose(f), 0);
  s->segs = realloc(s->segs, (s->n + 1) * sizeof(*s->segs));
  ck_assert_msg(sl__seg_read(&s->segs[s->n++], path, o->seg_name, err,
                             sizeof(err)) == SL_OK,
                "%s", err);
}

/* Keeps only the segments the newest checkpoint uses, as retention of one
 * checkpoint would: its own and the ones it links. */
static void store_retain(store *s, const sl__incr_out *o) {
  size_t j = 0;
  for (size_t i = 0; i < s->n; i++) {
    bool keep = !strcmp(s->segs[i].name, o->seg_name);
    for (size_t l = 0; l < o->n_links && !keep; l++)
      keep = !strcmp(s->segs[i].name, o->links[l]);
    if (keep) {
      s->segs[j++] = s->segs[i];
    } else {
      unlink(s->segs[i].path);
      sl__seg_free(&s->segs[i]);
    }
  }
  s->n = j;
}

/* A fresh backend loaded from the chains of the worker file's body. With
 * in, the chains are continued there (a restart). */
static sl__backend *restore(const sl_buf_t *snap, const store *st, sl__incr *in,
                            world *w) {
  sl__backend *be = open_hashmap();
  world tmp = *w;
  tmp.be = be;
  reg(&tmp);
  w->seed = tmp.seed;
  sl__rd body = {snap->data, snap->data + snap->len, false}, p;
  uint32_t type, kg;
  int r;
  while ((r = sl__snap_next(&body, &type, &kg, &p)) == 1) {
    if (type != SL__SEC_CHAIN)
      continue;
    char err[256];
    ck_assert_msg(sl__chain_check(p, st->segs, st->n, kg, err, sizeof(err)) ==
                      SL_OK,
                  "%s", err);
    sl__snap_ids m = {.to = be};
    sl__chain_io io = {0};
    ck_assert_msg(sl__chain_load(p, st->segs, st->n, &m, kg, &io, err,
                                 sizeof(err)) == SL_OK,
                  "%s", err);
    if (in) {
      ck_assert_int_eq(sl__incr_seed(in, kg, p, io.base, io.delta), 0);
      ck_assert_int_eq(be->ops->kg_clean(be, kg), 0);
    }
  }
  ck_assert_int_eq(r, 0);
  return be;
}

/* The part of a snapshot the coordinator writes, on its own thread. */
typedef struct finisher {
  sl__incr_job *job;
  sl_buf_t *snap;
  sl__incr_out *o;
  int rc;
} finisher;

static void *finish_main(void *p) {
  finisher *f = p;
  f->rc = sl__incr_finish(f->job, f->snap, f->o);
  return NULL;
}

/* With concurrent, updates go on while another thread writes the key
 * groups the snapshot froze; the checkpoint must hold the state of the
 * barrier. */
static void run(unsigned seed, int rounds, bool concurrent) {
  model *md = calloc(1, sizeof(*md));
  world w = {.be = open_hashmap(), .md = md, .seed = seed};
  reg(&w);
  sl__incr *in = sl__incr_new(0, K);
  store st = {.dir = "/tmp/sluice-incr-XXXXXX"};
  ck_assert_ptr_nonnull(mkdtemp(st.dir));
  uint64_t completed = 0;
  int restarts = 0, failures = 0, deltas = 0, during = 0;
  model *at = calloc(1, sizeof(*at)); /* the state at the barrier */
  for (int id = 1; id <= rounds; id++) {
    /* Quiet rounds too: nothing or a handful of changes. */
    unsigned ops = rnd(&w, 4) == 0 ? rnd(&w, 4) : rnd(&w, 300);
    for (unsigned i = 0; i < ops; i++)
      one_op(&w);
    sl_buf_t snap;
    sl__buf_init(&snap);
    sl__incr_out o;
    memcpy(at, md, sizeof(*at));
    if (!concurrent) {
      ck_assert_int_eq(
          sl__incr_put(in, w.be, &snap, (uint64_t)id, completed, 0, K, &o), 0);
    } else {
      finisher f = {.snap = &snap, .o = &o};
      ck_assert_int_eq(sl__incr_begin(in, w.be, &snap, (uint64_t)id, completed,
                                      0, K, &o, &f.job),
                       0);
      pthread_t th;
      if (f.job)
        ck_assert_int_eq(pthread_create(&th, NULL, finish_main, &f), 0);
      unsigned n = rnd(&w, 200);
      for (unsigned i = 0; i < n; i++) {
        if (rnd(&w, 8) == 0)
          sched_yield();
        one_op(&w);
      }
      during += (int)n;
      if (f.job) {
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        ck_assert_int_eq(f.rc, 0);
        sl__incr_job_drop(f.job);
      }
    }
    deltas += o.kg_delta;
    bool fail = rnd(&w, 6) == 0;
    if (fail) { /* its files never become durable */
      failures++;
    } else {
      completed = (uint64_t)id;
      store_add(&st, &o);
      /* A checkpoint only links segments of complete ones. */
      for (size_t l = 0; l < o.n_links; l++)
        ck_assert_msg(
            sl__seg_find(st.segs, st.n, o.links[l], strlen(o.links[l])) != NULL,
            "seed %u checkpoint %d links %s, which is in no "
            "complete checkpoint",
            seed, id, o.links[l]);
      store_retain(&st, &o);
      bool restart = rnd(&w, 5) == 0;
      sl__incr *in2 = restart ? sl__incr_new(0, K) : NULL;
      sl__backend *rb = restore(&snap, &st, in2, &w);
      char *now = render_model(md), *live = render_be(w.be),
           *want = render_model(at), *got = render_be(rb);
      ck_assert_msg(strcmp(live, now) == 0,
                    "seed %u checkpoint %d: the backend differs from the "
                    "model\nbackend:\n%s\nmodel:\n%s",
                    seed, id, live, now);
      free(now);
      ck_assert_msg(strcmp(got, want) == 0,
                    "seed %u checkpoint %d: restored from the chains:\n%s\n"
                    "expected:\n%s",
                    seed, id, got, want);
      free(want);
      free(live);
      free(got);
      if (restart) {
        /* The restored state is that of the barrier: so is the model. */
        memcpy(md, at, sizeof(*md));
        w.be->ops->close(w.be);
        sl__incr_free(in);
        w.be = rb;
        in = in2;
        /* The ids the restored backend gave the states. */
        reg(&w);
        restarts++;
      } else {
        rb->ops->close(rb);
      }
    }
    sl__incr_out_free(&o);
    sl__buf_free(&snap);
  }
  /* The run exercised what it claims to. */
  ck_assert_msg(restarts > 0 && failures > 0 && deltas > 0,
                "seed %u: %d restarts, %d failed checkpoints, %d key groups "
                "written as changes",
                seed, restarts, failures, deltas);
  sl__incr_free(in);
  w.be->ops->close(w.be);
  for (size_t i = 0; i < st.n; i++)
    unlink(st.segs[i].path);
  ck_assert_int_eq(rmdir(st.dir), 0);
  sl__segs_free(st.segs, st.n);
  ck_assert_msg(!concurrent || during > 0, "seed %u: no update during a write",
                seed);
  free(md);
  free(at);
}

START_TEST(chains_restore_exactly_the_state) {
  for (unsigned seed = 1; seed <= 12; seed++)
    run(seed * 7919u, 60, false);
}
END_TEST

START_TEST(updates_while_frozen_key_groups_are_written) {
  for (unsigned seed = 1; seed <= 24; seed++)
    run(seed * 6007u, 40, true);
}
END_TEST

/* ---- Freezes, one operation at a time ----------------------------------- */

static char *render_kg(sl__backend *be, uint32_t kg) {
  lines l = {.be = be};
  ck_assert_int_eq(be->ops->kg_scan(be, kg, line_cb, &l), 0);
  return join(&l);
}

static char *render_model_kg(const model *m, uint32_t kg) {
  lines l = {0};
  for (int i = 0; i < m->n; i++) {
    const item *x = &m->it[i];
    if (sl__key_group(sl__hash64(x->key, x->kl), K) != kg)
      continue;
    add_line(&l, x->state, x->key, x->kl, x->ns, x->nl, x->mk, x->mkl,
             !strcmp(x->state, "m"), x->val, x->len);
  }
  return join(&l);
}

/* Where "state|key|ns|" ends in a line. */
static size_t prefix_len(const char *line) {
  const char *p = line;
  for (int i = 0; i < 3; i++)
    p = strchr(p, '|') + 1;
  return (size_t)(p - line);
}

/* A key group's lines, to which kg_changes' records are applied as
 * restore applies them: a record without a value empties its (key, ns),
 * a value or a list replaces it, a map entry is added. */
static int apply_cb(uint32_t state, const void *key, size_t kl, const void *ns,
                    size_t nl, const void *mk, size_t mkl, const void *val,
                    size_t len, void *opaque) {
  lines *l = opaque;
  size_t n = l->n;
  line_cb(state, key, kl, ns, nl, mk, mkl, val ? val : "", len, l);
  char *rec = l->v[--l->n];
  size_t pl = prefix_len(rec);
  if (!val || !mk) {
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
      if (!strncmp(l->v[i], rec, pl))
        free(l->v[i]);
      else
        l->v[j++] = l->v[i];
    }
    l->n = j;
  }
  if (val)
    l->v[l->n++] = rec;
  else
    free(rec);
  return 0;
}

/* text (join's format) split back into lines. */
static void split(lines *l, const char *text) {
  for (const char *p = text; *p;) {
    const char *e = strchr(p, '\n');
    if (l->n == l->cap) {
      l->cap = l->cap ? 2 * l->cap : 256;
      l->v = realloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = strndup(p, (size_t)(e - p));
    p = e + 1;
  }
}

/* Rounds of: updates; a freeze of a random set of key groups; updates
 * interleaved with the scans of the frozen key groups in a random order
 * (sometimes given up before all are scanned); the view released; more
 * updates. Each scan equals the model of its key group at the freeze.
 * Then every key group's changes, applied to what was last recorded of it
 * (the scan, or the previous round), give the model now; a key group
 * whose changes are not known (not scanned, or too many) is recorded
 * whole, as a snapshot would write it. */
static void freeze_rounds(unsigned seed, int rounds, int *copied, int *ahead) {
  model *md = calloc(1, sizeof(*md));
  world w = {.be = open_hashmap(), .md = md, .seed = seed};
  reg(&w);
  sl__backend *be = w.be;
  char *rec[K];
  for (uint32_t kg = 0; kg < K; kg++) {
    rec[kg] = render_kg(be, kg);
    ck_assert_int_eq(be->ops->kg_clean(be, kg), 0);
  }
  for (int r = 0; r < rounds; r++) {
    unsigned ops = rnd(&w, 300);
    for (unsigned i = 0; i < ops; i++)
      one_op(&w);
    uint32_t fz[K];
    size_t n = 0;
    char *want[K] = {0};
    bool scanned[K] = {0};
    for (uint32_t kg = 0; kg < K; kg++)
      if (rnd(&w, 4)) {
        fz[n++] = kg;
        want[kg] = render_model_kg(md, kg);
      }
    struct sl__frozen *f = be->ops->freeze(be, fz, n);
    ck_assert_ptr_nonnull(f);
    for (size_t i = n; i > 1; i--) { /* scanned in a random order */
      size_t j = rnd(&w, (unsigned)i);
      uint32_t t = fz[i - 1];
      fz[i - 1] = fz[j];
      fz[j] = t;
    }
    size_t scans = rnd(&w, 8) == 0 ? rnd(&w, (unsigned)n + 1) : n;
    for (size_t i = 0; i < scans;) {
      if (rnd(&w, 3) == 0) {
        one_op(&w);
        continue;
      }
      uint32_t kg = fz[i++];
      /* Whether an update took it back (and copied it) before its scan. */
      bool taken = false;
      for (uint32_t id = 0; id < ((hm *)be)->n_states; id++)
        taken |= !((hm *)be)->states[id].tables[kg].frozen;
      lines l = {.be = be};
      ck_assert_int_eq(be->ops->frozen_scan(f, kg, line_cb, &l), 0);
      char *got = join(&l);
      ck_assert_msg(!strcmp(got, want[kg]),
                    "seed %u round %d: key group %u scanned after the "
                    "freeze:\n%s\nat the freeze:\n%s",
                    seed, r, kg, got, want[kg]);
      free(got);
      scanned[kg] = true;
      *copied += taken;
      *ahead += !taken;
    }
    ops = rnd(&w, 40);
    for (unsigned i = 0; i < ops; i++)
      one_op(&w);
    be->ops->frozen_release(f);
    ops = rnd(&w, 40);
    for (unsigned i = 0; i < ops; i++)
      one_op(&w);
    char *live = render_be(be), *now = render_model(md);
    ck_assert_msg(!strcmp(live, now),
                  "seed %u round %d: backend\n%s\nmodel\n%s", seed, r, live,
                  now);
    free(live);
    free(now);
    for (uint32_t kg = 0; kg < K; kg++) {
      bool frozen = want[kg] != NULL;
      const char *base = scanned[kg] ? want[kg] : frozen ? NULL : rec[kg];
      char *model_kg = render_model_kg(md, kg);
      int rc = 1;
      if (base) {
        lines l = {.be = be};
        split(&l, base);
        rc = be->ops->kg_changes(be, kg, apply_cb, &l);
        ck_assert_int_ge(rc, 0);
        if (!rc) {
          char *got = join(&l);
          ck_assert_msg(!strcmp(got, model_kg),
                        "seed %u round %d: key group %u (%s) from its "
                        "changes:\n%s\nmodel:\n%s",
                        seed, r, kg, scanned[kg] ? "scanned" : "not frozen",
                        got, model_kg);
          free(got);
        } else {
          for (size_t i = 0; i < l.n; i++)
            free(l.v[i]);
          free(l.v);
        }
      }
      if (rc) { /* written whole */
        char *whole = render_kg(be, kg);
        ck_assert_str_eq(whole, model_kg);
        free(whole);
        ck_assert_int_eq(be->ops->kg_clean(be, kg), 0);
      }
      free(rec[kg]);
      rec[kg] = model_kg;
      free(want[kg]);
    }
  }
  for (uint32_t kg = 0; kg < K; kg++)
    free(rec[kg]);
  be->ops->close(be);
  free(md);
}

START_TEST(writes_after_a_freeze_stay_out_of_its_scans) {
  int copied = 0, ahead = 0;
  for (unsigned seed = 1; seed <= 200; seed++)
    freeze_rounds(seed * 104729u, 10, &copied, &ahead);
  /* Both orders happened: updates that copied a key group before its
   * scan, and scans of key groups no update had touched. */
  ck_assert_int_gt(copied, 100);
  ck_assert_int_gt(ahead, 100);
}
END_TEST

/* A hashmap backend with value state "v" (*v) holding keys 0 .. n-1, each
 * its own key as its 8-byte value. */
static sl__backend *open_counted(uint32_t *v, uint64_t n) {
  sl__backend *be = open_hashmap();
  ck_assert_int_eq(be->ops->register_state(be, "v", SL__BT_VALUE, v), 0);
  for (uint64_t i = 0; i < n; i++) {
    uint64_t kh = sl__hash64(&i, 8);
    sl__skey k = {*v, sl__key_group(kh, K), kh, &i, 8, NULL, 0};
    void *p;
    ck_assert_int_eq(be->ops->slot(be, &k, 8, &p), 0);
    memcpy(p, &i, 8);
  }
  return be;
}

/* Adds one to every hundredth key (every key: step 1) of the N keys. */
static void bump_keys(sl__backend *be, uint32_t v, uint64_t n, uint64_t step) {
  for (uint64_t i = 0; i < n; i += step) {
    uint64_t kh = sl__hash64(&i, 8);
    sl__skey k = {v, sl__key_group(kh, K), kh, &i, 8, NULL, 0};
    void *p;
    ck_assert_int_eq(be->ops->slot(be, &k, 8, &p), 1);
    ++*(uint64_t *)p;
  }
}

/* After the first checkpoint, one in a hundred keys changed: the new
 * segment holds those entries only, and the unchanged key groups are
 * linked, not written. */
START_TEST(a_few_changes_cost_a_few_bytes) {
  enum { N = 20000 };
  uint32_t v;
  sl__backend *be = open_counted(&v, N);
  sl__incr *in = sl__incr_new(0, K);
  sl_buf_t snap;
  sl__buf_init(&snap);
  sl__incr_out full, next;
  ck_assert_int_eq(sl__incr_put(in, be, &snap, 1, 0, 0, K, &full), 0);
  ck_assert_uint_eq(full.kg_full, K);
  ck_assert_uint_eq(full.entries, N);
  bump_keys(be, v, N, 100);
  ck_assert_int_eq(sl__incr_put(in, be, &snap, 2, 1, 0, K, &next), 0);
  ck_assert_uint_eq(next.kg_full, 0);
  ck_assert_uint_eq(next.entries, N / 100);
  ck_assert_uint_eq(next.n_links, 1);
  ck_assert_str_eq(next.links[0], full.seg_name);
  ck_assert_msg(next.seg.len * 20 <= full.seg.len,
                "changes %zu bytes, full %zu bytes", next.seg.len,
                full.seg.len);
  /* Nothing changed: no segment at all. */
  sl__incr_out none;
  ck_assert_int_eq(sl__incr_put(in, be, &snap, 3, 2, 0, K, &none), 0);
  ck_assert_uint_eq(none.seg.len, 0);
  ck_assert_uint_eq(none.n_links, 2);
  sl__incr_out_free(&full);
  sl__incr_out_free(&next);
  sl__incr_out_free(&none);
  sl__buf_free(&snap);
  sl__incr_free(in);
  be->ops->close(be);
}
END_TEST

/* In group mode a key's key group is its Kafka partition (murmur2): a
 * removal in a chain is checked against that, as every entry is, and a
 * chain of such keys loads exactly. */
START_TEST(removals_follow_the_checkpoints_key_groups) {
  sl__backend *be = open_hashmap();
  be->kg_murmur2 = true; /* as group.mode sets it */
  uint32_t v;
  ck_assert_int_eq(be->ops->register_state(be, "v", SL__BT_VALUE, &v), 0);
  enum { N = 64 };
  sl__skey keys[N];
  char names[N][8];
  int moved = 0;
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof(names[i]), "k%d", i);
    size_t l = strlen(names[i]);
    uint64_t kh = sl__hash64(names[i], l);
    uint32_t kg = sl__murmur2_partition(names[i], l, K);
    moved += kg != sl__key_group(kh, K);
    keys[i] = (sl__skey){v, kg, kh, names[i], l, NULL, 0};
    void *p;
    ck_assert_int_eq(be->ops->slot(be, &keys[i], 8, &p), 0);
    memset(p, i, 8);
  }
  ck_assert_int_gt(moved, N / 2); /* the two hashes disagree */
  sl__incr *in = sl__incr_new(0, K);
  sl_buf_t snap;
  sl__buf_init(&snap);
  sl__incr_out o1, o2;
  ck_assert_int_eq(sl__incr_put(in, be, &snap, 1, 0, 0, K, &o1), 0);
  for (int i = 0; i < N; i += 4)
    ck_assert_int_eq(be->ops->del(be, &keys[i]), 1);
  sl__buf_free(&snap);
  sl__buf_init(&snap);
  ck_assert_int_eq(sl__incr_put(in, be, &snap, 2, 1, 0, K, &o2), 0);
  ck_assert_uint_gt(o2.kg_delta, 0);
  store st = {.dir = "/tmp/sluice-incr-XXXXXX"};
  ck_assert_ptr_nonnull(mkdtemp(st.dir));
  store_add(&st, &o1);
  store_add(&st, &o2);
  sl__backend *rb = open_hashmap();
  rb->kg_murmur2 = true;
  sl__rd body = {snap.data, snap.data + snap.len, false}, p;
  uint32_t type, kg;
  while (sl__snap_next(&body, &type, &kg, &p) == 1) {
    if (type != SL__SEC_CHAIN)
      continue;
    char err[256];
    sl__snap_ids m = {.to = rb};
    ck_assert_msg(sl__chain_load(p, st.segs, st.n, &m, kg, NULL, err,
                                 sizeof(err)) == SL_OK,
                  "%s", err);
    sl__snap_ids_free(&m);
  }
  char *want = render_be(be), *got = render_be(rb);
  ck_assert_str_eq(got, want);
  free(want);
  free(got);
  for (size_t i = 0; i < st.n; i++)
    unlink(st.segs[i].path);
  ck_assert_int_eq(rmdir(st.dir), 0);
  sl__segs_free(st.segs, st.n);
  sl__incr_out_free(&o1);
  sl__incr_out_free(&o2);
  sl__buf_free(&snap);
  sl__incr_free(in);
  rb->ops->close(rb);
  be->ops->close(be);
}
END_TEST

/* A key group most of whose entries change between two checkpoints (a
 * checkpoint a second over keys updated evenly) is written whole next
 * time, and its changes go untracked (no clean marks, no log) for one
 * more checkpoint, then two, four and at most eight when it keeps
 * outgrowing its log, so that the worker does not track what is thrown
 * away; once an interval stays under the log's limit, the key group is
 * written incrementally again. */
START_TEST(a_key_group_that_changes_whole_rests) {
  enum { N = 20000 };
  uint32_t v;
  sl__backend *be = open_counted(&v, N);
  sl__incr *in = sl__incr_new(0, K);
  sl_buf_t snap;
  sl__buf_init(&snap);
  /* Before each checkpoint, every key changed (1) or one in a hundred
   * (100); then how many key groups it writes whole (K or 0). */
  static const struct {
    uint64_t step;
    unsigned whole;
  } round[] = {
      {1, K},   /* the first: nothing known */
      {1, K},   /* hot: written whole, and rests for one */
      {100, K}, /* resting: whole, untracked; tracked from here */
      {100, 0}, /* cold: only the changes */
      {1, K},   /* hot again (the first time in a row): rests for one */
      {1, K},   /* resting */
      {1, K},   /* hot the second time in a row: rests for two */
      {100, K}, /* resting */
      {100, K}, /* resting; tracked from here */
      {100, 0}, /* cold */
      {100, 0},
  };
  for (size_t r = 0; r < sizeof(round) / sizeof(round[0]); r++) {
    if (r)
      bump_keys(be, v, N, round[r].step);
    sl__incr_out o;
    ck_assert_int_eq(sl__incr_put(in, be, &snap, r + 1, r, 0, K, &o), 0);
    ck_assert_msg(o.kg_full == round[r].whole,
                  "checkpoint %zu: %u key groups whole, want %u", r + 1,
                  (unsigned)o.kg_full, round[r].whole);
    ck_assert_uint_eq(o.entries, round[r].whole ? N : N / 100);
    sl__incr_out_free(&o);
  }
  sl__buf_free(&snap);
  sl__incr_free(in);
  be->ops->close(be);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("incr");
  TCase *tc = tcase_create("incr");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, chains_restore_exactly_the_state);
  tcase_add_test(tc, updates_while_frozen_key_groups_are_written);
  tcase_add_test(tc, writes_after_a_freeze_stay_out_of_its_scans);
  tcase_add_test(tc, a_few_changes_cost_a_few_bytes);
  tcase_add_test(tc, a_key_group_that_changes_whole_rests);
  tcase_add_test(tc, removals_follow_the_checkpoints_key_groups);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
