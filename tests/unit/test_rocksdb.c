/* SPDX-License-Identifier: Apache-2.0 */
/* What only the RocksDB backend has (the shared state suite in test_state.c
 * covers the contract): native snapshots, restores and read-only snapshot
 * handles; state larger than the block cache; the compaction filter;
 * map iteration over entries that share a hash, under eviction; and the
 * errors a user meets: an unusable or locked state.dir, a full disk, a
 * corrupt snapshot. */
#include "core/hash.h"
#include "operator.h"
#include "sluice.h"
#include "state/backend.h"
#include "state/kstate_int.h"
#include "state/rocksdb_int.h"
#include "state/snap_task.h"
#include "state/state.h"

#include <check.h>

#include "check_main.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const sl__backend_ops *const ops = &sl__rocksdb_ops;

/* ---- helpers ------------------------------------------------------------ */

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}
static void rm_rf(const char *path) {
  nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory for one test, and a configuration whose state.dir is
 * in it (plus key/value settings, NULL-terminated). */
typedef struct tdir {
  char path[64];
  char state[128];
} tdir;

static void tdir_make(tdir *t) {
  snprintf(t->path, sizeof(t->path), "/tmp/sluice-test-rocksdb-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(t->path));
  snprintf(t->state, sizeof(t->state), "%s/state", t->path);
}

static sl_conf_t *conf_kv(const tdir *t, const char *const *kv) {
  char err[256];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "state.dir", t->state, err, sizeof(err)),
                   SL_OK);
  ck_assert_int_eq(sl_conf_set(c, "state.backend", "rocksdb", err, sizeof(err)),
                   SL_OK);
  for (; kv && kv[0]; kv += 2)
    ck_assert_msg(sl_conf_set(c, kv[0], kv[1], err, sizeof(err)) == SL_OK, "%s",
                  err);
  return c;
}

static sl__backend *open_range(const sl_conf_t *c, uint32_t lo, uint32_t hi,
                               uint32_t K, const char *restore) {
  char err[512] = "";
  sl__backend_conf bc = {.conf = c,
                         .kg_lo = lo,
                         .kg_hi = hi,
                         .max_par = K,
                         .restore_dir = restore};
  sl__backend *be = ops->open(&bc, err, sizeof(err));
  ck_assert_msg(be != NULL, "open: %s", err);
  return be;
}

static sl__skey skey(sl__backend *be, uint32_t state, const char *key,
                     const char *ns) {
  sl__skey k = {.state = state,
                .key = key,
                .key_len = strlen(key),
                .ns = ns,
                .ns_len = strlen(ns)};
  uint64_t h = sl__hash64(key, k.key_len);
  k.kg = sl__key_group(h, be->max_par);
  k.hash = sl__state_hash(h, ns, k.ns_len);
  return k;
}

/* Registers op/v, op/l and op/m (a value, a list and a map) in be. */
static void three_states(sl__backend *be, uint32_t ids[3]) {
  ck_assert_int_eq(be->ops->register_state(be, "op/v", SL__BT_VALUE, &ids[0]),
                   0);
  ck_assert_int_eq(be->ops->register_state(be, "op/l", SL__BT_LIST, &ids[1]),
                   0);
  ck_assert_int_eq(be->ops->register_state(be, "op/m", SL__BT_MAP, &ids[2]), 0);
}

static void put_u64(sl__backend *be, uint32_t st, const char *key, uint64_t v) {
  sl__skey k = skey(be, st, key, "");
  void *p;
  ck_assert_int_ge(be->ops->slot(be, &k, 8, &p), 0);
  memcpy(p, &v, 8);
}

/* The value of key, or UINT64_MAX when absent. */
static uint64_t get_u64(sl__backend *be, uint32_t st, const char *key) {
  sl__skey k = skey(be, st, key, "");
  void *p;
  size_t l;
  int rc = be->ops->get(be, &k, &p, &l, false);
  ck_assert_int_ge(rc, 0);
  if (!rc)
    return UINT64_MAX;
  ck_assert_uint_eq(l, 8);
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

typedef struct row {
  uint32_t state;
  char key[24], ns[8], mk[8];
  unsigned char val[64];
  size_t kl, nl, mkl, vl;
  int has_mk;
} row;
typedef struct rows {
  row *r;
  size_t n, cap;
} rows;

static int collect(uint32_t state, const void *k, size_t kl, const void *ns,
                   size_t nl, const void *mk, size_t mkl, const void *val,
                   size_t len, void *opaque) {
  rows *rs = opaque;
  if (rs->n == rs->cap) {
    rs->cap = rs->cap ? rs->cap * 2 : 64;
    rs->r = realloc(rs->r, rs->cap * sizeof(row));
  }
  row *r = &rs->r[rs->n++];
  memset(r, 0, sizeof(*r));
  ck_assert_uint_le(kl, sizeof(r->key));
  ck_assert_uint_le(len, sizeof(r->val));
  r->state = state;
  memcpy(r->key, k, kl);
  memcpy(r->ns, ns, nl);
  if (mk)
    memcpy(r->mk, mk, mkl);
  memcpy(r->val, val, len);
  r->kl = kl, r->nl = nl, r->mkl = mkl, r->vl = len, r->has_mk = mk != NULL;
  return 0;
}

static int cmp_row(const void *a, const void *b) {
  return memcmp(a, b, sizeof(row));
}

static void rows_sorted(sl__backend *be, uint32_t kg, rows *out) {
  memset(out, 0, sizeof(*out));
  ck_assert_int_eq(be->ops->kg_scan(be, kg, collect, out), 0);
  if (out->n)
    qsort(out->r, out->n, sizeof(row), cmp_row);
}

/* ---- snapshots and restores --------------------------------------------- */

/* Three kinds of state over two key groups, in a backend owning kg 0..7 of
 * 8. */
static void fill(sl__backend *be, uint32_t v, uint32_t l, uint32_t m, int from,
                 int to) {
  char key[24];
  void *p;
  for (int i = from; i < to; i++) {
    snprintf(key, sizeof(key), "key-%d", i);
    put_u64(be, v, key, (uint64_t)i);
    sl__skey k = skey(be, l, key, i % 3 ? "" : "ns");
    ck_assert_int_ge(be->ops->list_append(be, &k, 2, &p), 0);
    memcpy(p, "el", 2);
    k.state = m;
    ck_assert_int_ge(
        be->ops->map_slot(be, &k, "mk", 2, sl__hash64("mk", 2), 3, &p), 0);
    memcpy(p, "map", 3);
  }
}

START_TEST(snapshot_restore_sees_the_snapshot_not_later_writes) {
  tdir t;
  tdir_make(&t);
  sl_conf_t *c = conf_kv(&t, NULL);
  sl__backend *be = open_range(c, 0, 8, 8, NULL);
  uint32_t v, l, m;
  ck_assert_int_eq(ops->register_state(be, "op/v", SL__BT_VALUE, &v), 0);
  ck_assert_int_eq(ops->register_state(be, "op/l", SL__BT_LIST, &l), 0);
  ck_assert_int_eq(ops->register_state(be, "op/m", SL__BT_MAP, &m), 0);
  fill(be, v, l, m, 0, 500);
  rows before[8];
  for (uint32_t kg = 0; kg < 8; kg++)
    rows_sorted(be, kg, &before[kg]);
  char snap[160], err[512] = "";
  snprintf(snap, sizeof(snap), "%s/snap1", t.path);
  ck_assert_msg(ops->snapshot(be, snap, err, sizeof(err)) == 0, "%s", err);
  /* The snapshot directory must not exist yet. */
  ck_assert_int_ne(ops->snapshot(be, snap, err, sizeof(err)), 0);
  ck_assert_ptr_nonnull(strstr(err, snap));

  /* Keep writing: overwrite, add, delete. */
  put_u64(be, v, "key-1", 1111);
  fill(be, v, l, m, 500, 600);
  sl__skey k = skey(be, v, "key-2", "");
  ck_assert_int_eq(ops->del(be, &k), 1);
  ck_assert_uint_eq(get_u64(be, v, "key-1"), 1111);

  /* Two restores from the same snapshot: it stays intact. */
  for (int round = 0; round < 2; round++) {
    char conf_dir[160];
    snprintf(conf_dir, sizeof(conf_dir), "%s/restore%d", t.path, round);
    const char *kv[] = {"state.dir", conf_dir, NULL};
    sl_conf_t *c2 = conf_kv(&t, kv);
    sl__backend *r = open_range(c2, 0, 8, 8, snap);
    ck_assert_uint_eq(ops->state_count(r), 3);
    uint32_t id;
    ck_assert_int_eq(ops->register_state(r, "op/m", SL__BT_MAP, &id), 0);
    ck_assert_uint_eq(id, m);
    ck_assert_int_eq(ops->register_state(r, "op/m", SL__BT_LIST, &id),
                     SL_ERR_INVAL);
    ck_assert_uint_eq(get_u64(r, v, "key-1"), 1);
    ck_assert_uint_eq(get_u64(r, v, "key-2"), 2);
    ck_assert_uint_eq(get_u64(r, v, "key-550"), UINT64_MAX);
    for (uint32_t kg = 0; kg < 8; kg++) {
      rows after;
      rows_sorted(r, kg, &after);
      ck_assert_uint_eq(after.n, before[kg].n);
      if (after.n)
        ck_assert_mem_eq(after.r, before[kg].r, after.n * sizeof(row));
      free(after.r);
    }
    /* Stats come back with the state. */
    sl__state_stats s;
    ops->stats(r, v, &s);
    ck_assert_uint_eq(s.entries, 500);
    /* The restored state is writable (and writing it leaves the snapshot
     * alone: the next round restores the original again). */
    put_u64(r, v, "key-1", 77);
    put_u64(r, v, "new", 5);
    ck_assert_uint_eq(get_u64(r, v, "key-1"), 77);
    char snap2[160];
    snprintf(snap2, sizeof(snap2), "%s/snap-r%d", t.path, round);
    ck_assert_msg(ops->snapshot(r, snap2, err, sizeof(err)) == 0, "%s", err);
    ops->close(r);
    sl_conf_destroy(c2);
  }
  for (uint32_t kg = 0; kg < 8; kg++)
    free(before[kg].r);
  ops->close(be);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

START_TEST(open_snapshot_scans_exactly_a_key_group) {
  tdir t;
  tdir_make(&t);
  sl_conf_t *c = conf_kv(&t, NULL);
  /* A worker owning key groups 32..63 of 128 (worker 1 of 4). */
  sl__backend *be = open_range(c, 32, 64, 128, NULL);
  uint32_t v, l, m;
  ops->register_state(be, "op/v", SL__BT_VALUE, &v);
  ops->register_state(be, "op/l", SL__BT_LIST, &l);
  ops->register_state(be, "op/m", SL__BT_MAP, &m);
  char key[24];
  void *p;
  int stored = 0;
  for (int i = 0; i < 20000 && stored < 2000; i++) {
    snprintf(key, sizeof(key), "key-%d", i);
    sl__skey k = skey(be, v, key, "");
    if (k.kg < 32 || k.kg >= 64)
      continue;
    stored++;
    put_u64(be, v, key, (uint64_t)i);
    k.state = l;
    ops->list_append(be, &k, 3, &p);
    memcpy(p, "abc", 3);
    k.state = m;
    ops->map_slot(be, &k, key, strlen(key), sl__hash64(key, strlen(key)), 1,
                  &p);
    memcpy(p, "x", 1);
  }
  rows live[32];
  for (uint32_t kg = 32; kg < 64; kg++)
    rows_sorted(be, kg, &live[kg - 32]);
  char snap[160], err[512] = "";
  snprintf(snap, sizeof(snap), "%s/snap", t.path);
  ck_assert_msg(ops->snapshot(be, snap, err, sizeof(err)) == 0, "%s", err);
  put_u64(be, v, "after", 1); /* not in the snapshot */

  /* A reader (a tool, or a worker of another parallelism). */
  sl__backend_conf bc = {.conf = c, .max_par = 128};
  sl__backend *ro = ops->open_snapshot(snap, &bc, err, sizeof(err));
  ck_assert_msg(ro != NULL, "%s", err);
  ck_assert_uint_eq(ro->kg_lo, 32);
  ck_assert_uint_eq(ro->kg_hi, 64);
  ck_assert_uint_eq(ro->ops->state_count(ro), 3);
  uint64_t total = 0;
  for (uint32_t kg = 32; kg < 64; kg++) {
    rows got;
    rows_sorted(ro, kg, &got);
    ck_assert_uint_eq(got.n, live[kg - 32].n);
    if (got.n)
      ck_assert_mem_eq(got.r, live[kg - 32].r, got.n * sizeof(row));
    for (size_t i = 0; i < got.n; i++) {
      ck_assert_uint_eq(
          sl__key_group(sl__hash64(got.r[i].key, got.r[i].kl), 128), kg);
    }
    total += got.n;
    free(got.r);
    free(live[kg - 32].r);
  }
  ck_assert_uint_eq(total, 3 * (uint64_t)stored);
  ck_assert_int_eq(ro->ops->kg_scan(ro, 31, collect, &(rows){0}), SL_ERR_RANGE);
  /* Reads work, by name; writes do not. */
  uint32_t id;
  ck_assert_int_eq(ro->ops->register_state(ro, "op/v", SL__BT_VALUE, &id), 0);
  ck_assert_uint_eq(id, v);
  ck_assert_int_eq(ro->ops->register_state(ro, "op/none", SL__BT_VALUE, &id),
                   SL_ERR_NOTFOUND);
  ck_assert_uint_eq(get_u64(ro, v, "after"), UINT64_MAX);
  sl__skey k = skey(ro, v, "key-1", "");
  ck_assert_int_eq(ro->ops->slot(ro, &k, 8, &p), SL_ERR_STATE);
  ck_assert_int_eq(ro->ops->del(ro, &k), SL_ERR_STATE);
  ck_assert_int_ne(ro->ops->snapshot(ro, snap, err, sizeof(err)), 0);
  ro->ops->close(ro);
  /* The snapshot is still there for the next reader, as it was written. */
  ck_assert_int_eq(access(snap, F_OK), 0);
  char log[192];
  snprintf(log, sizeof(log), "%s/LOG", snap);
  ck_assert_int_ne(access(log, F_OK), 0);

  /* Another key-group count is refused with a clear message. */
  bc.max_par = 256;
  ck_assert_ptr_null(ops->open_snapshot(snap, &bc, err, sizeof(err)));
  ck_assert_ptr_nonnull(strstr(err, "128 key groups"));
  /* So is restoring a worker of another range from it. */
  sl__backend_conf rc = {.conf = c,
                         .kg_lo = 0,
                         .kg_hi = 32,
                         .max_par = 128,
                         .worker = 3,
                         .restore_dir = snap};
  ck_assert_ptr_null(ops->open(&rc, err, sizeof(err)));
  ck_assert_ptr_nonnull(strstr(err, "holds key groups 32..64 of 128"));
  ops->close(be);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

/* A task's load in group mode: key group X of a read-only snapshot of
 * another process's database copied into this one's (kg_load), in one
 * write batch or (from sl__rk_ingest_min entries on: _i == 1 lowers it to
 * 1) as an ingested table file. The result must be what inserting each
 * entry gives, with this database's own state ids (registered in another
 * order), only the states asked for (another stage's state of the same
 * key group stays, a state left out is not loaded), what it held of X in
 * those states replaced, what it cached of X forgotten, other key groups
 * untouched, and the states' counts right. */
START_TEST(kg_load_copies_a_key_group_from_a_snapshot) {
  size_t ingest_min = sl__rk_ingest_min; /* tests may share a process */
  if (_i == 1)
    sl__rk_ingest_min = 1;
  tdir ta, tb;
  tdir_make(&ta);
  tdir_make(&tb);
  sl_conf_t *ca = conf_kv(&ta, NULL), *cb = conf_kv(&tb, NULL);
  sl__backend *a = open_range(ca, 32, 64, 128, NULL);
  uint32_t ai[3];
  three_states(a, ai);
  uint32_t v = ai[0], l = ai[1], m = ai[2];
  char key[24];
  void *p;
  uint32_t X = UINT32_MAX, Y = UINT32_MAX;
  const char *kx = NULL;
  char kxbuf[24], kybuf[24];
  for (int i = 0; i < 6000; i++) {
    snprintf(key, sizeof(key), "key-%d", i);
    sl__skey k = skey(a, v, key, i % 5 ? "" : "ns");
    if (k.kg < 32 || k.kg >= 64)
      continue;
    if (X == UINT32_MAX && i % 5) {
      X = k.kg;
      snprintf(kxbuf, sizeof(kxbuf), "%s", key);
      kx = kxbuf;
    } else if (Y == UINT32_MAX && X != UINT32_MAX && k.kg != X) {
      Y = k.kg;
      snprintf(kybuf, sizeof(kybuf), "%s", key);
    }
    void *vp;
    ck_assert_int_ge(ops->slot(a, &k, 8, &vp), 0);
    memcpy(vp, &i, sizeof(i));
    memset((char *)vp + 4, 7, 4);
    k.state = l;
    ck_assert_int_ge(ops->list_append(a, &k, 3, &p), 0);
    memcpy(p, "abc", 3);
    k.state = m;
    for (int j = 0; j < 1 + i % 3; j++) {
      char mk[4] = {'m', (char)('0' + j), 0, 0};
      ck_assert_int_ge(ops->map_slot(a, &k, mk, 2, sl__hash64(mk, 2), 2, &p),
                       0);
      memcpy(p, "mv", 2);
    }
  }
  ck_assert_uint_ne(Y, UINT32_MAX);
  char snap[160], err[512] = "";
  snprintf(snap, sizeof(snap), "%s/snap", ta.path);
  ck_assert_msg(ops->snapshot(a, snap, err, sizeof(err)) == 0, "%s", err);
  sl__backend_conf bc = {.conf = ca, .max_par = 128};
  sl__backend *ro = ops->open_snapshot(snap, &bc, err, sizeof(err));
  ck_assert_msg(ro != NULL, "%s", err);

  /* b and the reference r: another stage's state first, then the three
   * in another order; b held stale entries of X and of Y, and read a key
   * of X that it did not have. */
  sl__backend *b = open_range(cb, 32, 64, 128, NULL);
  char rdir[192];
  snprintf(rdir, sizeof(rdir), "%s/ref", tb.path);
  const char *rkv[] = {"state.dir", rdir, NULL};
  sl_conf_t *cr = conf_kv(&tb, rkv);
  sl__backend *r = open_range(cr, 32, 64, 128, NULL);
  sl__backend *both[] = {b, r};
  uint32_t bx, bm, bv, bl;
  for (int i = 0; i < 2; i++) {
    ops->register_state(both[i], "other/x", SL__BT_VALUE, &bx);
    ops->register_state(both[i], "op/m", SL__BT_MAP, &bm);
    ops->register_state(both[i], "op/v", SL__BT_VALUE, &bv);
    ops->register_state(both[i], "op/l", SL__BT_LIST, &bl);
    put_u64(both[i], bx, kx, 99);
  }
  for (int i = 0; i < 3000; i++) {
    snprintf(key, sizeof(key), "stale-%d", i);
    sl__skey k = skey(b, bv, key, "");
    if (k.kg == X && _i == 0) /* the second run: b held none of X */
      put_u64(b, bv, key, 1);
  }
  put_u64(b, bv, kybuf, 5);
  put_u64(r, bv, kybuf, 5);
  ck_assert_uint_eq(get_u64(b, bv, kx), UINT64_MAX);
  /* Every state of ro into b's ids, but op/l. */
  uint32_t ids[3];
  for (uint32_t i = 0; i < 3; i++) {
    const char *name;
    sl__btype type;
    ck_assert_int_eq(ro->ops->state_info(ro, i, &name, &type), 0);
    ids[i] = strcmp(name, "op/v") == 0   ? bv
             : strcmp(name, "op/m") == 0 ? bm
                                         : UINT32_MAX;
  }
  ck_assert_int_eq(ops->kg_load(b, ro, X, ids, 3), 0);
  /* The reference: each entry inserted. */
  rows src;
  rows_sorted(ro, X, &src);
  size_t loaded = 0;
  for (size_t i = 0; i < src.n; i++) {
    row *w = &src.r[i];
    if (ids[w->state] == UINT32_MAX)
      continue;
    loaded++;
    ck_assert_int_eq(ops->insert(r, ids[w->state], X, w->key, w->kl, w->ns,
                                 w->nl, w->has_mk ? w->mk : NULL, w->mkl,
                                 w->val, w->vl),
                     0);
  }
  ck_assert_uint_gt(loaded, 0);
  ck_assert_uint_lt(loaded, src.n); /* op/l was left out */
  uint32_t kgs[] = {X, Y};
  for (int g = 0; g < 2; g++) {
    rows gb, gr;
    rows_sorted(b, kgs[g], &gb);
    rows_sorted(r, kgs[g], &gr);
    ck_assert_uint_eq(gb.n, gr.n);
    if (gb.n)
      ck_assert_mem_eq(gb.r, gr.r, gb.n * sizeof(row));
    free(gb.r);
    free(gr.r);
  }
  ck_assert_uint_ne(get_u64(b, bv, kx), UINT64_MAX);
  ck_assert_uint_eq(get_u64(b, bv, kx), get_u64(r, bv, kx));
  ck_assert_uint_eq(get_u64(b, bx, kx), 99);
  for (uint32_t id = 0; id < 4; id++) {
    sl__state_stats sb, sr;
    ops->stats(b, id, &sb);
    ops->stats(r, id, &sr);
    ck_assert_uint_eq(sb.entries, sr.entries);
    ck_assert_uint_eq(sb.bytes, sr.bytes);
  }
  /* Written after the load, read back. */
  put_u64(b, bv, kx, 12345);
  ck_assert_uint_eq(get_u64(b, bv, kx), 12345);
  free(src.r);
  ro->ops->close(ro);
  ops->close(a);
  ops->close(b);
  ops->close(r);
  sl_conf_destroy(ca);
  sl_conf_destroy(cb);
  sl_conf_destroy(cr);
  rm_rf(ta.path);
  rm_rf(tb.path);
  sl__rk_ingest_min = ingest_min;
}
END_TEST

/* ---- a state larger than the block cache -------------------------------- */

/* Under the sanitizers everything is several times slower: a smaller
 * state, with a block cache smaller by as much. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BIG_KEYS 1000000
#define BIG_MEMORY "32m"
#else
#define BIG_KEYS 5000000
#define BIG_MEMORY "128m"
#endif

static void big_val(uint32_t i, unsigned char *val) {
  memset(val, (int)(i & 0xff), 24);
  memcpy(val, &i, 4);
  if (i % 97 == 0)
    val[23] ^= 0xff; /* the sample that was read-modify-written */
}

typedef struct big_check {
  uint64_t n;
  int bad;
} big_check;

static int big_fn(uint32_t state, const void *k, size_t kl, const void *ns,
                  size_t nl, const void *mk, size_t mkl, const void *val,
                  size_t len, void *opaque) {
  (void)state, (void)ns, (void)mk, (void)mkl;
  big_check *c = opaque;
  char key[32];
  uint32_t i;
  unsigned char want[24];
  c->n++;
  if (kl >= sizeof(key) || nl || len != 24)
    return c->bad = 1;
  memcpy(key, k, kl);
  key[kl] = '\0';
  if (sscanf(key, "user-%u", &i) != 1)
    return c->bad = 1;
  big_val(i, want);
  return c->bad = memcmp(val, want, 24) != 0;
}

START_TEST(state_larger_than_the_cache) {
  tdir t;
  tdir_make(&t);
  /* 128 MiB: a 64 MiB block cache, 32 MiB of write buffers, 32 MiB of
   * write-back cache; 5 * 10^6 keys with 24-byte values are several times
   * that. */
  const char *kv[] = {"state.rocksdb.memory", BIG_MEMORY, NULL};
  sl_conf_t *c = conf_kv(&t, kv);
  sl__backend *be = open_range(c, 0, 128, 128, NULL);
  rk *b = (rk *)be;
  ck_assert_uint_eq(b->env->block_cache,
                    b->env->budget / 2 - b->env->budget / 16);
  uint32_t v;
  ops->register_state(be, "op/count", SL__BT_VALUE, &v);
  const char *env = getenv("SLUICE_TEST_BIG_KEYS");
  const uint32_t N = env ? (uint32_t)atol(env) : BIG_KEYS;
  char key[32];
  unsigned char val[24];
  for (uint32_t i = 0; i < N; i++) {
    snprintf(key, sizeof(key), "user-%u", i);
    sl__skey k = skey(be, v, key, "");
    void *p;
    int rc = ops->slot(be, &k, sizeof(val), &p);
    if (rc != 0)
      ck_abort_msg("key %u: slot %d", i, rc);
    big_val(i, val);
    val[23] ^= i % 97 == 0 ? 0xff : 0; /* as it was before the sample */
    memcpy(p, val, sizeof(val));
    /* The write-back cache stays within its share after every call. */
    if (b->cache.bytes > b->cache.limit)
      ck_abort_msg("key %u: cache %zu > %zu", i, b->cache.bytes,
                   b->cache.limit);
  }
  sl__state_stats s;
  ops->stats(be, v, &s);
  ck_assert_uint_eq(s.entries, N);
  /* Read-modify-write a sample (mostly RocksDB reads, not cache hits),
   * read another back. */
  for (uint32_t i = 0; i < N; i += 97) {
    snprintf(key, sizeof(key), "user-%u", i);
    sl__skey k = skey(be, v, key, "");
    void *p;
    ck_assert_int_eq(ops->slot(be, &k, sizeof(val), &p), 1);
    ((unsigned char *)p)[23] ^= 0xff;
  }
  for (uint32_t i = 1; i < N; i += 89) {
    snprintf(key, sizeof(key), "user-%u", i);
    sl__skey k = skey(be, v, key, "");
    void *p;
    size_t l;
    if (ops->get(be, &k, &p, &l, false) != 1 || l != sizeof(val))
      ck_abort_msg("key %u missing", i);
    big_val(i, val);
    if (memcmp(p, val, sizeof(val)))
      ck_abort_msg("key %u has another value", i);
  }
  /* Every entry, checked by scanning the key groups. */
  big_check chk = {0, 0};
  for (uint32_t kg = 0; kg < 128 && !chk.bad; kg++)
    ck_assert_int_eq(ops->kg_scan(be, kg, big_fn, &chk), chk.bad);
  ck_assert_int_eq(chk.bad, 0);
  ck_assert_uint_eq(chk.n, N);
  /* Within the budget: the block cache at its capacity (RocksDB may
   * overshoot it by what readers pin), the write-back cache at its
   * share. */
  ck_assert_uint_le(rocksdb_cache_get_usage(b->env->cache),
                    b->env->block_cache + ((size_t)4 << 20));
  ck_assert_uint_le(b->cache.bytes, b->cache.limit);
  ops->close(be);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

/* How the budget becomes RocksDB's options, per budget, parallelism and
 * state.rocksdb.malloc.tune (default shares: 25% write buffers, 25%
 * write-back, 2 memtables): the block cache gets the rest less 1/8 (the
 * heap's holes around its blocks), table files are 1/16 of the worker's
 * budget within 8..64 MiB, and the heap is trimmed after each memtable's
 * worth of writes when malloc.tune is on. */
START_TEST(budget_becomes_options) {
  static const struct {
    const char *memory, *tune;
    int par;
    size_t cache, memtable, target, trim;
  } cases[] = {
      {"256m", "true", 1, 112, 32, 16, 32},
      {"256m", "false", 1, 112, 32, 16, 0},
      {"512m", "true", 1, 224, 64, 32, 64},
      {"2g", "true", 1, 896, 256, 64, 256},
      {"256m", "true", 4, 112, 8, 8, 8},
      {"64m", "true", 2, 28, 4, 8, 4},
  };
  const size_t M = (size_t)1 << 20;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    tdir t;
    tdir_make(&t);
    const char *kv[] = {"state.rocksdb.memory", cases[i].memory,
                        "state.rocksdb.malloc.tune", cases[i].tune, NULL};
    sl_conf_t *c = conf_kv(&t, kv);
    char err[512] = "";
    sl__backend_conf bc = {.conf = c,
                           .kg_lo = 0,
                           .kg_hi = 128,
                           .max_par = 128,
                           .par = cases[i].par};
    sl__backend *be = ops->open(&bc, err, sizeof(err));
    ck_assert_msg(be != NULL, "open: %s", err);
    rk *b = (rk *)be;
    ck_assert_uint_eq(rocksdb_cache_get_capacity(b->env->cache),
                      cases[i].cache * M);
    ck_assert_uint_eq(rocksdb_options_get_write_buffer_size(b->opts),
                      cases[i].memtable * M);
    ck_assert_uint_eq(rocksdb_options_get_target_file_size_base(b->opts),
                      cases[i].target * M);
#ifdef __GLIBC__
    ck_assert_uint_eq(b->trim_every, cases[i].trim * M);
#else
    ck_assert_uint_eq(b->trim_every, 0);
#endif
    ops->close(be);
    sl_conf_destroy(c);
    rm_rf(t.path);
  }
}
END_TEST

/* ---- TTL: the compaction filter ----------------------------------------- */

static void frame(sl__backend *be, sl__skey *k, int64_t ts, const char *s) {
  void *p;
  size_t n = strlen(s);
  ck_assert_int_ge(be->ops->list_append(be, k, 8 + n, &p), 0);
  memcpy(p, &ts, 8);
  memcpy((char *)p + 8, s, n);
}

START_TEST(compaction_filter_drops_expired_items) {
  tdir t;
  tdir_make(&t);
  sl_conf_t *c = conf_kv(&t, NULL);
  sl__backend *be = open_range(c, 0, 4, 4, NULL);
  uint32_t v, l, m, keep;
  ops->register_state(be, "op/v", SL__BT_VALUE, &v);
  ops->register_state(be, "op/l", SL__BT_LIST, &l);
  ops->register_state(be, "op/m", SL__BT_MAP, &m);
  ops->register_state(be, "op/keep", SL__BT_VALUE, &keep);
  ops->set_ttl(be, v, 100, 0);
  ops->set_ttl(be, l, 100, 0);
  ops->set_ttl(be, m, 100, 1); /* event time */
  char key[16];
  void *p;
  for (int i = 0; i < 100; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    int64_t ts = i < 50 ? 0 : 1000; /* half old, half fresh */
    sl__skey k = skey(be, v, key, "");
    ops->slot(be, &k, 16, &p);
    memcpy(p, &ts, 8);
    memcpy((char *)p + 8, "payload!", 8);
    k.state = keep;
    ops->slot(be, &k, 8, &p);
    memcpy(p, &ts, 8);
    k.state = l;
    frame(be, &k, 0, "old");
    frame(be, &k, ts, "mixed");
    k.state = m;
    ops->map_slot(be, &k, "a", 1, sl__hash64("a", 1), 9, &p);
    memcpy(p, &ts, 8);
  }
  sl__state_stats sv, sl, sm;
  ops->stats(be, l, &sl);
  /* Nothing is expired before the clock says so. */
  sl__rocksdb_compact(be);
  ops->stats(be, v, &sv);
  ck_assert_uint_eq(sv.entries, 100);
  /* Processing time 1050; event time still unknown. */
  sl__backend_ttl_clock(be, 0, 1050);
  sl__rocksdb_compact(be);
  ops->stats(be, v, &sv);
  ck_assert_uint_eq(sv.entries, 50);
  sl__state_stats sl2;
  ops->stats(be, l, &sl2);
  ck_assert_uint_eq(sl2.entries, 50); /* all-old lists gone */
  /* The rest lost their "old" element (a frame of 8 + 8 + 3 bytes). */
  uint64_t want = 0;
  for (int i = 50; i < 100; i++)
    want += 3 + sl__list_frame(13);
  ck_assert_uint_eq(sl2.bytes, want);
  ck_assert_uint_gt(sl.bytes, want);
  ops->stats(be, m, &sm);
  ck_assert_uint_eq(sm.entries, 100);
  sl__skey k = skey(be, l, "k70", "");
  size_t len;
  ck_assert_int_eq(ops->get(be, &k, &p, &len, false), 1);
  ck_assert_uint_eq(len, sl__list_frame(13));
  ck_assert_mem_eq((char *)p + SL__LIST_HDR + 8, "mixed", 5);
  k = skey(be, v, "k10", "");
  ck_assert_int_eq(ops->get(be, &k, &p, &len, false), 0);
  k = skey(be, keep, "k10", "");
  ck_assert_int_eq(ops->get(be, &k, &p, &len, false), 1); /* no TTL */
  /* Event time reaches the map. */
  sl__backend_ttl_clock(be, 1, 100);
  sl__rocksdb_compact(be);
  ops->stats(be, m, &sm);
  ck_assert_uint_eq(sm.entries, 50);
  ops->close(be);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

/* ---- map iteration ------------------------------------------------------ */

/* Entries sharing a map-key hash (the backend trusts the caller's hash, so
 * the test can make them), removed and added while iterating, with a
 * write-back cache small enough to evict meanwhile. */
START_TEST(map_iteration_with_equal_hashes_and_eviction) {
  tdir t;
  tdir_make(&t);
  const char *kv[] = {"state.rocksdb.memory", "8m", NULL};
  sl_conf_t *c = conf_kv(&t, kv);
  sl__backend *be = open_range(c, 0, 1, 1, NULL);
  uint32_t m, other;
  ops->register_state(be, "op/m", SL__BT_MAP, &m);
  ops->register_state(be, "op/other", SL__BT_VALUE, &other);
  sl__skey k = skey(be, m, "the-key", "");
  enum { N = 3000 };
  char mk[16];
  void *p;
  size_t len;
  /* mh: groups of 1 to 4 entries share one. */
  for (int i = 0; i < N; i++) {
    snprintf(mk, sizeof(mk), "mk%d", i);
    uint64_t mh = (uint64_t)(i / (1 + i % 4)) * 0x9e3779b97f4a7c15ULL;
    ck_assert_int_eq(ops->map_slot(be, &k, mk, strlen(mk), mh, 4, &p), 0);
    memcpy(p, &i, 4);
  }
  for (int pass = 0; pass < 2; pass++) {
    static unsigned char seen[N];
    memset(seen, 0, sizeof(seen));
    sl__map_cursor cur = {.k = k};
    ck_assert_int_eq(ops->map_iter(be, &cur), 1);
    const void *key;
    size_t kl;
    int n = 0, removed = 0;
    while (ops->map_next(be, &cur, &key, &kl, &p, &len, false) == 1) {
      int i;
      memcpy(&i, p, 4);
      ck_assert_int_lt(i, N);
      ck_assert_int_eq(seen[i]++, 0);
      n++;
      char copy[16];
      memcpy(copy, key, kl);
      uint64_t mh = (uint64_t)(i / (1 + i % 4)) * 0x9e3779b97f4a7c15ULL;
      if (pass == 0 && i % 2) { /* the entry just returned */
        ck_assert_int_eq(ops->map_remove(be, &k, copy, kl, mh), 1);
        removed++;
      }
      /* Other state, enough of it to evict and flush. */
      for (int j = 0; j < 20; j++) {
        char ok[24];
        snprintf(ok, sizeof(ok), "o-%d-%d", pass, n * 20 + j);
        put_u64(be, other, ok, (uint64_t)j);
      }
    }
    if (pass == 0) {
      ck_assert_int_eq(n, N);
      ck_assert_int_eq(removed, N / 2);
    } else {
      ck_assert_int_eq(n, N / 2);
      for (int i = 0; i < N; i++)
        ck_assert_int_eq(seen[i], i % 2 == 0);
    }
  }
  /* del removes the rest, and the map is gone. */
  ck_assert_int_eq(ops->del(be, &k), 1);
  sl__map_cursor cur = {.k = k};
  ck_assert_int_eq(ops->map_iter(be, &cur), 0);
  sl__state_stats s;
  ops->stats(be, m, &s);
  ck_assert_uint_eq(s.entries, 0);
  ops->close(be);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

static int count_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "count", .kind = SL_STATE_VALUE};
  sl_state_t *st = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, st);
  return st ? 0 : SL_ERR_STATE;
}

/* Stores 4 KiB of noise per record (incompressible: a full disk fills). */
static int count_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)rec, (void)opaque;
  static uint64_t x = 88172645463325252ULL;
  uint64_t buf[512];
  for (int i = 0; i < 512; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buf[i] = x;
  }
  return sl_value_put(ctx, sl_ctx_local(ctx), buf, sizeof(buf));
}

static const sl_process_ops_t count_ops = {.open = count_open,
                                           .on_element = count_element};

START_TEST(state_dir_that_cannot_be_created) {
  tdir t;
  tdir_make(&t);
  /* A regular file where a directory should be. */
  char file[128], dir[160], err[1024] = "";
  snprintf(file, sizeof(file), "%s/file", t.path);
  fclose(fopen(file, "w"));
  snprintf(dir, sizeof(dir), "%s/sub", file);
  const char *kv[] = {"state.dir", dir, NULL};
  sl_conf_t *c = conf_kv(&t, kv);
  sl_harness_t *h =
      sl_harness_new_process(c, &count_ops, NULL, NULL, err, sizeof(err));
  ck_assert_ptr_null(h);
  ck_assert_msg(strstr(err, dir) && strstr(err, "cannot create") &&
                    strstr(err, "Not a directory"),
                "message: %s", err);
  sl_conf_destroy(c);
  /* Backends opened without a job say the same. */
  c = conf_kv(&t, kv);
  sl__backend_conf bc = {.conf = c, .kg_lo = 0, .kg_hi = 1, .max_par = 1};
  ck_assert_ptr_null(ops->open(&bc, err, sizeof(err)));
  ck_assert_ptr_nonnull(strstr(err, dir));
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

START_TEST(state_dir_locked_by_another_job) {
  tdir t;
  tdir_make(&t);
  char err[1024] = "";
  sl_harness_t *h1 = sl_harness_new_process(conf_kv(&t, NULL), &count_ops, NULL,
                                            NULL, err, sizeof(err));
  ck_assert_msg(h1 != NULL, "%s", err);
  ck_assert_int_eq(sl_harness_push_kv(h1, 0, "k", "v", 1), SL_OK);
  /* The same job name and state.dir, in this process ... */
  sl_conf_t *c = conf_kv(&t, NULL);
  sl_harness_t *h2 =
      sl_harness_new_process(c, &count_ops, NULL, NULL, err, sizeof(err));
  ck_assert_ptr_null(h2);
  ck_assert_msg(strstr(err, t.state) && strstr(err, "is in use") &&
                    strstr(err, "locked by another process or job"),
                "message: %s", err);
  sl_conf_destroy(c);
  /* ... and in another. */
  pid_t pid = fork();
  if (pid == 0) {
    c = conf_kv(&t, NULL);
    h2 = sl_harness_new_process(c, &count_ops, NULL, NULL, err, sizeof(err));
    _exit(!h2 && strstr(err, "is in use") ? 0 : 1);
  }
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  /* Once the first job is gone, the directory is free again. */
  sl_harness_destroy(h1);
  h2 = sl_harness_new_process(conf_kv(&t, NULL), &count_ops, NULL, NULL, err,
                              sizeof(err));
  ck_assert_msg(h2 != NULL, "%s", err);
  sl_harness_destroy(h2);
  /* Nothing left of the workers' databases. */
  char w0[160];
  snprintf(w0, sizeof(w0), "%s/harness/w0", t.state);
  ck_assert_int_ne(access(w0, F_OK), 0);
  rm_rf(t.path);
}
END_TEST

static sl_stream_t *build_count(sl_stream_t *const *in, size_t n,
                                void *opaque) {
  (void)n;
  return sl_process(in[0], "process", &count_ops, opaque);
}

static sl_harness_t *named_harness(const tdir *t, const char *name,
                                   const char *state_dir, char *err,
                                   size_t errlen) {
  sl_harness_opts_t o = {.n_inputs = 1,
                         .keyed = true,
                         .build = build_count,
                         .job_name = name,
                         .state_dir = state_dir};
  sl_conf_t *c = conf_kv(t, NULL);
  sl_harness_t *h = sl_harness_new_opts(c, &o, err, errlen);
  if (!h)
    sl_conf_destroy(c);
  return h;
}

static bool exists(const char *dir, const char *sub) {
  char p[256];
  snprintf(p, sizeof(p), "%s/%s", dir, sub);
  return access(p, F_OK) == 0;
}

/* Harnesses that live at the same time, each with its own job name or
 * state.dir, each with its own RocksDB directory. */
START_TEST(harnesses_with_own_job_names_and_state_dirs) {
  tdir t;
  tdir_make(&t);
  char err[1024] = "", other[160];
  snprintf(other, sizeof(other), "%s/other", t.path);
  sl_harness_t *left = named_harness(&t, "left", NULL, err, sizeof(err));
  ck_assert_msg(left != NULL, "%s", err);
  sl_harness_t *right = named_harness(&t, "right", NULL, err, sizeof(err));
  ck_assert_msg(right != NULL, "%s", err);
  ck_assert_str_eq(sl_job_name(sl_harness_job(left)), "left");
  ck_assert_str_eq(sl_job_name(sl_harness_job(right)), "right");
  ck_assert_int_eq(sl_harness_push_kv(left, 0, "k", "v", 1), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(right, 0, "k", "v", 1), SL_OK);
  ck_assert(exists(t.state, "left/w0") && exists(t.state, "right/w0"));
  /* A third "left" in the same state.dir is refused ... */
  sl_harness_t *again = named_harness(&t, "left", NULL, err, sizeof(err));
  ck_assert_ptr_null(again);
  ck_assert_msg(strstr(err, "is in use"), "message: %s", err);
  /* ... and takes its own state.dir. */
  again = named_harness(&t, "left", other, err, sizeof(err));
  ck_assert_msg(again != NULL, "%s", err);
  ck_assert_int_eq(sl_harness_push_kv(again, 0, "k", "v", 1), SL_OK);
  ck_assert(exists(other, "left/w0"));
  ck_assert_str_eq(sl_conf_get(sl_job_conf(sl_harness_job(again)), "state.dir"),
                   other);
  sl_harness_destroy(again);
  sl_harness_destroy(right);
  sl_harness_destroy(left);
  ck_assert(!exists(t.state, "left/w0") && !exists(t.state, "right/w0") &&
            !exists(other, "left/w0"));
  rm_rf(t.path);
}
END_TEST

START_TEST(full_disk_fails_the_job_and_the_snapshot) {
  tdir t;
  tdir_make(&t);
  char mnt[128];
  snprintf(mnt, sizeof(mnt), "%s/mnt", t.path);
  ck_assert_int_eq(mkdir(mnt, 0777), 0);
  if (mount("tmpfs", mnt, "tmpfs", 0, "size=4m")) {
    fprintf(stderr, "full_disk: skipped: cannot mount a small tmpfs (%s)\n",
            strerror(errno));
    rm_rf(t.path);
    return;
  }
  char sdir[160], err[1024] = "";
  snprintf(sdir, sizeof(sdir), "%s/state", mnt);
  /* Small write buffers, so memtables are flushed to the (full) disk. */
  const char *kv[] = {"state.dir", sdir, "state.rocksdb.memory", "16m", NULL};

  /* Through a job: it fails with a message naming state.dir and RocksDB's
   * reason, and stays failed. */
  sl_harness_t *h = sl_harness_new_process(conf_kv(&t, kv), &count_ops, NULL,
                                           NULL, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  int rc = SL_OK;
  char key[16];
  for (int i = 0; i < 20000 && rc == SL_OK; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    rc = sl_harness_push_kv(h, 0, key, "x", i);
  }
  ck_assert_int_ne(rc, SL_OK);
  const char *msg = sl_harness_errmsg(h);
  ck_assert_msg(strstr(msg, sdir) && strstr(msg, "No space left on device"),
                "message: %s", msg);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "k", "x", 1), rc);
  sl_harness_destroy(h);

  /* A snapshot that cannot be written is an error and leaves nothing that
   * could pass for a snapshot. */
  sl_conf_t *c = conf_kv(&t, kv);
  sl__backend *be = open_range(c, 0, 1, 1, NULL);
  uint32_t v;
  ck_assert_int_eq(ops->register_state(be, "op/v", SL__BT_VALUE, &v), 0);
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < 1200; i++) { /* ~5 MB, in the write-back cache */
    snprintf(key, sizeof(key), "k%d", i);
    sl__skey k = skey(be, v, key, "");
    void *p;
    if (ops->slot(be, &k, 4096, &p) < 0)
      break;
    for (int j = 0; j < 512; j++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      memcpy((char *)p + 8 * j, &x, 8);
    }
  }
  char snap[192];
  snprintf(snap, sizeof(snap), "%s/snap", mnt);
  rc = ops->snapshot(be, snap, err, sizeof(err));
  ck_assert_int_lt(rc, 0);
  ck_assert_msg(strstr(err, "No space left on device"), "message: %s", err);
  ck_assert_int_ne(access(snap, F_OK), 0);
  ck_assert_ptr_nonnull(be->errmsg);
  sl__skey k = skey(be, v, "k1", "");
  void *p;
  ck_assert_int_lt(ops->slot(be, &k, 8, &p) < 0
                       ? -1
                       : ops->get(be, &k, &p, &(size_t){0}, false),
                   1); /* nothing more passes for success */
  ops->close(be);
  sl_conf_destroy(c);
  umount(mnt);
  rm_rf(t.path);
}
END_TEST

static void corrupt(const char *dir, const char *suffix, bool truncate_it) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  struct dirent *de;
  int done = 0;
  while ((de = readdir(d))) {
    size_t n = strlen(de->d_name), sl = strlen(suffix);
    if (n < sl || strcmp(de->d_name + n - sl, suffix))
      continue;
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    /* A new file, not a write through the hard link the live DB shares. */
    unlink(path);
    FILE *f = fopen(path, "w");
    fputs(truncate_it ? "" : "garbage garbage garbage", f);
    fclose(f);
    done++;
  }
  closedir(d);
  ck_assert_int_gt(done, 0);
}

START_TEST(corrupt_snapshot_is_a_clear_error) {
  tdir t;
  tdir_make(&t);
  sl_conf_t *c = conf_kv(&t, NULL);
  sl__backend *be = open_range(c, 0, 1, 1, NULL);
  uint32_t v;
  ops->register_state(be, "op/v", SL__BT_VALUE, &v);
  put_u64(be, v, "a", 1);
  char snap[160], err[1024] = "";
  for (int i = 0; i < 3; i++) {
    snprintf(snap, sizeof(snap), "%s/snap%d", t.path, i);
    ck_assert_msg(ops->snapshot(be, snap, err, sizeof(err)) == 0, "%s", err);
  }
  ops->close(be);
  snprintf(snap, sizeof(snap), "%s/snap0", t.path);
  corrupt(snap, ".sst", true);
  snprintf(snap + strlen(snap) - 1, 2, "1");
  corrupt(snap, "CURRENT", false);
  for (int i = 0; i < 2; i++) {
    snprintf(snap, sizeof(snap), "%s/snap%d", t.path, i);
    sl__backend_conf bc = {
        .conf = c, .kg_lo = 0, .kg_hi = 1, .max_par = 1, .restore_dir = snap};
    ck_assert_ptr_null(ops->open(&bc, err, sizeof(err)));
    ck_assert_msg(strstr(err, snap) && strstr(err, "cannot restore"),
                  "message: %s", err);
    ck_assert_ptr_null(ops->open_snapshot(snap, &bc, err, sizeof(err)));
    ck_assert_msg(strstr(err, snap), "message: %s", err);
  }
  /* A directory that is no snapshot at all. */
  sl__backend_conf bc = {.conf = c, .max_par = 1};
  ck_assert_ptr_null(ops->open_snapshot(t.path, &bc, err, sizeof(err)));
  ck_assert_ptr_nonnull(strstr(err, t.path));
  /* The intact one still restores. */
  snprintf(snap, sizeof(snap), "%s/snap2", t.path);
  sl__backend *r = open_range(c, 0, 1, 1, snap);
  ck_assert_uint_eq(get_u64(r, 0, "a"), 1);
  ops->close(r);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

/* A table file of the live database damaged under the backend: reads
 * fail with RocksDB's "Corruption", naming the directory, for good. */
START_TEST(corrupt_database_is_a_clear_error) {
  tdir t;
  tdir_make(&t);
  sl_conf_t *c = conf_kv(&t, NULL);
  sl__backend *be = open_range(c, 0, 1, 1, NULL);
  rk *b = (rk *)be;
  uint32_t v;
  ops->register_state(be, "op/v", SL__BT_VALUE, &v);
  char key[16], err[1024] = "", snap[160];
  for (int i = 0; i < 20000; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    put_u64(be, v, key, (uint64_t)i);
  }
  /* Flush everything to table files, and forget what is cached. */
  snprintf(snap, sizeof(snap), "%s/snap", t.path);
  ck_assert_msg(ops->snapshot(be, snap, err, sizeof(err)) == 0, "%s", err);
  sl__rk_cache_drop_kg(b, UINT32_MAX);
  rocksdb_cache_set_capacity(b->env->cache, 0);
  rocksdb_cache_set_capacity(b->env->cache, b->env->block_cache);
  DIR *d = opendir(b->dir);
  struct dirent *de;
  int damaged = 0;
  while ((de = readdir(d))) {
    size_t n = strlen(de->d_name);
    if (n < 4 || strcmp(de->d_name + n - 4, ".sst"))
      continue;
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", b->dir, de->d_name);
    int fd = open(path, O_WRONLY);
    struct stat sb;
    fstat(fd, &sb);
    static char junk[4096];
    memset(junk, 0x5a, sizeof(junk));
    for (off_t o = 0; o + (off_t)sizeof(junk) < sb.st_size / 2;
         o += 2 * (off_t)sizeof(junk))
      ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), o),
                       (ssize_t)sizeof(junk));
    close(fd);
    damaged++;
  }
  closedir(d);
  ck_assert_int_gt(damaged, 0);
  int rc = 0;
  for (int i = 0; i < 20000 && rc >= 0; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    sl__skey k = skey(be, v, key, "");
    void *p;
    size_t l;
    rc = ops->get(be, &k, &p, &l, false);
  }
  ck_assert_int_eq(rc, SL_ERR_CORRUPT);
  ck_assert_ptr_nonnull(be->errmsg);
  ck_assert_msg(strstr(be->errmsg, b->dir) && strstr(be->errmsg, t.state) &&
                    strstr(be->errmsg, "Corruption"),
                "message: %s", be->errmsg);
  sl__skey k = skey(be, v, "new", "");
  void *p;
  ck_assert_int_eq(ops->slot(be, &k, 8, &p), SL_ERR_CORRUPT);
  ck_assert_int_lt(ops->snapshot(be, snap, err, sizeof(err)), 0);
  ops->close(be);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

/* ---- the snapshot's background part ------------------------------------- */

/* Entries of a backend as one sorted list of byte strings. */
typedef struct blobs {
  char **b;
  size_t *len;
  size_t n, cap;
} blobs;

static int blob_add(uint32_t state, const void *k, size_t kl, const void *ns,
                    size_t nl, const void *mk, size_t mkl, const void *val,
                    size_t len, void *opaque) {
  blobs *bs = opaque;
  if (bs->n == bs->cap) {
    bs->cap = bs->cap ? bs->cap * 2 : 256;
    bs->b = realloc(bs->b, bs->cap * sizeof(*bs->b));
    bs->len = realloc(bs->len, bs->cap * sizeof(*bs->len));
  }
  size_t n = 4 + 4 + kl + 4 + nl + 5 + mkl + 4 + len;
  char *p = malloc(n), *q = p;
  uint32_t u[4] = {state, (uint32_t)kl, (uint32_t)nl, (uint32_t)mkl};
  memcpy(q, &u[0], 4), q += 4;
  memcpy(q, &u[1], 4), q += 4;
  memcpy(q, k, kl), q += kl;
  memcpy(q, &u[2], 4), q += 4;
  memcpy(q, ns, nl), q += nl;
  *q++ = mk != NULL;
  memcpy(q, &u[3], 4), q += 4;
  if (mkl)
    memcpy(q, mk, mkl), q += mkl;
  uint32_t vl = (uint32_t)len;
  memcpy(q, &vl, 4), q += 4;
  memcpy(q, val, len);
  bs->b[bs->n] = p;
  bs->len[bs->n++] = n;
  return 0;
}

static int blob_cmp(const void *a, const void *b) {
  const char *x = *(char *const *)a, *y = *(char *const *)b;
  size_t lx, ly; /* lengths are stored just before each blob */
  memcpy(&lx, x - sizeof(size_t), sizeof(size_t));
  memcpy(&ly, y - sizeof(size_t), sizeof(size_t));
  int r = memcmp(x, y, lx < ly ? lx : ly);
  return r ? r : (lx > ly) - (lx < ly);
}

/* Every entry of be (key groups [0, K)), as length-prefixed blobs sorted. */
static void scan_all(sl__backend *be, uint32_t K, blobs *out) {
  memset(out, 0, sizeof(*out));
  for (uint32_t kg = 0; kg < K; kg++)
    ck_assert_int_eq(be->ops->kg_scan(be, kg, blob_add, out), 0);
  for (size_t i = 0; i < out->n; i++) { /* prefix each with its length */
    char *p = malloc(sizeof(size_t) + out->len[i]);
    memcpy(p, &out->len[i], sizeof(size_t));
    memcpy(p + sizeof(size_t), out->b[i], out->len[i]);
    free(out->b[i]);
    out->b[i] = p + sizeof(size_t);
  }
  qsort(out->b, out->n, sizeof(*out->b), blob_cmp);
}

static void blobs_free(blobs *bs) {
  for (size_t i = 0; i < bs->n; i++)
    free(bs->b[i] - sizeof(size_t));
  free(bs->b);
  free(bs->len);
}

static void blobs_eq(blobs *a, blobs *b, const char *what, int round) {
  ck_assert_msg(a->n == b->n, "round %d, %s: %zu entries, model %zu", round,
                what, a->n, b->n);
  for (size_t i = 0; i < a->n; i++) {
    size_t la, lb;
    memcpy(&la, a->b[i] - sizeof(size_t), sizeof(size_t));
    memcpy(&lb, b->b[i] - sizeof(size_t), sizeof(size_t));
    ck_assert_msg(la == lb && memcmp(a->b[i], b->b[i], la) == 0,
                  "round %d, %s: entry %zu of %zu differs from the model",
                  round, what, i, a->n);
  }
}

/* One random operation, applied alike to the RocksDB backend and to the
 * model (a hashmap backend: the contract's other implementation). Some
 * reach past the cache (map deletes and iteration, whole lists) and so
 * wait for a snapshot's background part; large values evict. */
typedef struct op {
  int kind, key, mk;
  uint32_t len;
  uint64_t seed;
} op;

/* Where an op of kind 9 loads a key group from: a read-only snapshot of
 * the three states over key groups 0..8 of 8 (their ids 0, 1, 2). */
static sl__backend *load_from;

typedef struct ins_ctx {
  sl__backend *be;
  const uint32_t *ids;
} ins_ctx;

static int insert_cb(uint32_t state, const void *k, size_t kl, const void *ns,
                     size_t nl, const void *mk, size_t mkl, const void *val,
                     size_t len, void *opaque) {
  ins_ctx *x = opaque;
  uint32_t kg = sl__key_group(sl__hash64(k, kl), x->be->max_par);
  return x->be->ops->insert(x->be, x->ids[state], kg, k, kl, ns, nl, mk, mkl,
                            val, len);
}

static void op_apply(sl__backend *be, const uint32_t *ids, const op *o) {
  const sl__backend_ops *bo = be->ops;
  char key[16], mk[8];
  snprintf(key, sizeof(key), "k%d", o->key);
  snprintf(mk, sizeof(mk), "m%d", o->mk);
  unsigned char val[2048];
  uint64_t x = o->seed;
  for (uint32_t i = 0; i < o->len; i++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    val[i] = (unsigned char)(x >> 56);
  }
  void *p;
  size_t len;
  sl__skey k = skey(be,
                    ids[o->kind < 2   ? 0
                        : o->kind < 5 ? 1
                                      : 2],
                    key, o->key % 5 ? "" : "ns");
  uint64_t mh = sl__hash64(mk, strlen(mk));
  switch (o->kind) {
  case 0: /* put a value, small or large */
    ck_assert_int_ge(bo->slot(be, &k, o->len, &p), 0);
    memcpy(p, val, o->len);
    break;
  case 1:
    ck_assert_int_ge(bo->del(be, &k), 0);
    break;
  case 2:
    ck_assert_int_ge(bo->list_append(be, &k, o->len, &p), 0);
    memcpy(p, val, o->len);
    break;
  case 3: /* the whole list */
    ck_assert_int_ge(bo->get(be, &k, &p, &len, false), 0);
    break;
  case 4:
    ck_assert_int_ge(bo->del(be, &k), 0);
    break;
  case 5:
    ck_assert_int_ge(bo->map_slot(be, &k, mk, strlen(mk), mh, o->len, &p), 0);
    memcpy(p, val, o->len);
    break;
  case 6:
    ck_assert_int_ge(bo->map_remove(be, &k, mk, strlen(mk), mh), 0);
    break;
  case 7: { /* iterate, writing through for_write */
    sl__map_cursor cur = {.k = k};
    if (bo->map_iter(be, &cur) == 1) {
      const void *m;
      size_t ml;
      while (bo->map_next(be, &cur, &m, &ml, &p, &len, true) == 1)
        if (len)
          ((unsigned char *)p)[0] ^= 1;
    }
    break;
  }
  case 9: { /* a key group loaded from a snapshot (a task's load) */
    uint32_t kg = (uint32_t)o->key % 8;
    if (bo->kg_load) {
      ck_assert_int_eq(bo->kg_load(be, load_from, kg, ids, 3), 0);
    } else { /* the model: what the load means */
      bo->kg_drop(be, kg, NULL);
      ins_ctx x = {be, ids};
      ck_assert_int_eq(load_from->ops->kg_scan(load_from, kg, insert_cb, &x),
                       0);
    }
    break;
  }
  default: /* the whole map */
    ck_assert_int_ge(bo->del(be, &k), 0);
    break;
  }
}

/* plain: none of the calls that write the cache out or wait for a
 * snapshot (map iteration, deletes of whole maps, key-group loads; a
 * load only where load_from is set). */
static op op_random(uint64_t *rng, bool plain) {
  *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
  uint64_t r = *rng >> 16;
  bool load = !plain && load_from && r % 61 == 0;
  op o = {.kind = load ? 9 : (int)(r % 9 % (plain ? 7 : 9)),
          .key = (int)(r / 9 % 300),
          .mk = (int)(r / 2700 % 4),
          .seed = *rng};
  o.len = 1 + (uint32_t)(r / 10800 % 24);
  if (o.kind == 0 && r % 7 == 0)
    o.len = 200 + (uint32_t)(r % 1800); /* fills the small cache */
  return o;
}

static sl__backend *model_at(const sl_conf_t *c, const op *log, size_t n,
                             uint32_t *ids) {
  sl__backend_conf bc = {.conf = c, .kg_lo = 0, .kg_hi = 8, .max_par = 8};
  char err[256];
  sl__backend *h = sl__hashmap_ops.open(&bc, err, sizeof(err));
  ck_assert_ptr_nonnull(h);
  ck_assert_int_eq(
      sl__hashmap_ops.register_state(h, "op/v", SL__BT_VALUE, &ids[0]), 0);
  ck_assert_int_eq(
      sl__hashmap_ops.register_state(h, "op/l", SL__BT_LIST, &ids[1]), 0);
  ck_assert_int_eq(
      sl__hashmap_ops.register_state(h, "op/m", SL__BT_MAP, &ids[2]), 0);
  for (size_t i = 0; i < n; i++)
    op_apply(h, ids, &log[i]);
  return h;
}

/* What the op's key holds now, read without writing, is what the model
 * holds: the worker's newest writes, else the frozen set, else RocksDB. */
static void read_same(sl__backend *be, sl__backend *model, const uint32_t *ids,
                      const op *o, int round) {
  char key[16], mk[8];
  snprintf(key, sizeof(key), "k%d", o->key);
  snprintf(mk, sizeof(mk), "m%d", o->mk);
  int which = o->kind < 2 ? 0 : o->kind < 5 ? 1 : 2;
  const char *ns = o->key % 5 ? "" : "ns";
  sl__skey k = skey(be, ids[which], key, ns);
  sl__skey mkey = skey(model, ids[which], key, ns);
  uint64_t mh = sl__hash64(mk, strlen(mk));
  void *p = NULL, *q = NULL;
  size_t len = 0, mlen = 0;
  int rc, mrc;
  if (which < 2) {
    rc = be->ops->get(be, &k, &p, &len, false);
    mrc = model->ops->get(model, &mkey, &q, &mlen, false);
  } else {
    rc = be->ops->map_get(be, &k, mk, strlen(mk), mh, &p, &len, false);
    mrc =
        model->ops->map_get(model, &mkey, mk, strlen(mk), mh, &q, &mlen, false);
  }
  ck_assert_msg(rc == mrc && (rc != 1 || (len == mlen && !memcmp(p, q, len))),
                "round %d: op %d on %s/%s reads %d (%zu bytes), model %d "
                "(%zu bytes)",
                round, o->kind, key, mk, rc, len, mrc, mlen);
}

/* The worker goes on writing while the background part of a snapshot
 * (copy the frozen entries, write them, flush the memtables, make the
 * checkpoint) is held at one of its steps — before the copy, half-way
 * through it, before the writes, the flush or the checkpoint —, or not
 * held: whatever it does — puts, deletes, list appends, map writes and
 * removes, and calls that must wait for the background part (map deletes
 * and iteration, whole lists, eviction of a small cache) — the snapshot
 * holds exactly the state at its call, every read after a write what the
 * model reads, and the live backend the state after every write, all
 * compared with a model that replays the same operations. Every seventh
 * snapshot fails (its directory cannot be made) and must lose nothing;
 * the dirty generations wrap on the way. Two budgets: a cache that holds
 * every key (large frozen sets, which the worker writes through while
 * the thread reads them) and one too small for anything, which evicts
 * all the time; each with the frozen sets written through write batches
 * and, in runs 2 and 3, as table files RocksDB takes in (what large ones
 * take). */
START_TEST(snapshot_is_the_barrier_while_the_worker_writes) {
  tdir t;
  tdir_make(&t);
  bool small = _i & 1;
  size_t ingest_min = sl__rk_ingest_min; /* tests may share a process */
  if (_i & 2)
    sl__rk_ingest_min = 1;
  const char *kv[] = {"state.rocksdb.memory", small ? "8m" : "64m", NULL};
  sl_conf_t *c = conf_kv(&t, kv);
  sl__backend *be = open_range(c, 0, 8, 8, NULL);
  uint32_t ids[3], mids[3];
  three_states(be, ids);
  rk_cache *cache = &((rk *)be)->cache;
  cache->gen = RK_GEN_MAX - 20; /* wraps at about round 20 */
  /* A snapshot of the same states written by other ops, for the worker's
   * key-group loads (kind 9). */
  tdir ts;
  tdir_make(&ts);
  sl_conf_t *cs = conf_kv(&ts, NULL);
  sl__backend *src = open_range(cs, 0, 8, 8, NULL);
  uint32_t sids[3];
  three_states(src, sids);
  ck_assert(sids[0] == 0 && sids[1] == 1 && sids[2] == 2);
  uint64_t srng = 7;
  for (int i = 0; i < 1500; i++) {
    op o = op_random(&srng, true);
    op_apply(src, sids, &o);
  }
  char ssnap[160], serr[512] = "";
  snprintf(ssnap, sizeof(ssnap), "%s/snap", ts.path);
  ck_assert_msg(ops->snapshot(src, ssnap, serr, sizeof(serr)) == 0, "%s", serr);
  ops->close(src);
  sl__backend_conf sbc = {.conf = cs, .max_par = 8};
  load_from = ops->open_snapshot(ssnap, &sbc, serr, sizeof(serr));
  ck_assert_msg(load_from != NULL, "%s", serr);
  sl__backend *live = model_at(c, NULL, 0, mids);
  enum { ROUNDS = 60, BEFORE = 150, AFTER = 150 };
  op *log = malloc(ROUNDS * (BEFORE + AFTER) * sizeof(*log));
  size_t n = 0;
  uint64_t rng = 42;
  bool wrapped = false;
  for (int round = 0; round < ROUNDS; round++) {
    /* Enough left dirty at the barrier to make a frozen set. */
    for (int i = 0; i < BEFORE; i++) {
      log[n] = op_random(&rng, i >= BEFORE / 3);
      op_apply(be, ids, &log[n]);
      op_apply(live, mids, &log[n++]);
    }
    size_t at_barrier = n;
    /* Hold at step 1 to 5, or not at all; the worker's calls go before
     * the hold is lifted, except those that wait for it. */
    sl__snap_task_hold(round % 6);
    bool fails = round % 7 == 6;
    char snap[160], err[512] = "";
    snprintf(snap, sizeof(snap), "%s/%ssnap%d", t.path, fails ? "missing/" : "",
             round);
    uint16_t gen = cache->gen;
    struct sl__snap_task *task = NULL;
    ck_assert_msg(ops->snapshot_begin(be, snap, &task, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_ptr_nonnull(task);
    bool wraps = cache->gen < gen;
    wrapped |= wraps;
    int after = (round * 37) % (AFTER + 1); /* how far the worker gets */
    for (int i = 0; i < after; i++) {
      log[n] = op_random(&rng, round % 3 != 2);
      op_apply(be, ids, &log[n]);
      op_apply(live, mids, &log[n]);
      read_same(be, live, ids, &log[n++], round);
    }
    sl__snap_task_hold(0);
    int rc = sl__snap_task_wait(task, err, sizeof(err));
    if (fails) {
      ck_assert_msg(rc == SL_ERR_IO, "round %d: %d (%s)", round, rc, err);
      ck_assert_msg(be->errmsg == NULL, "%s", be->errmsg);
    } else {
      ck_assert_msg(rc == 0, "%s", err);
    }

    sl__backend *model = model_at(c, log, at_barrier, mids);
    ck_assert_mem_eq(ids, mids, sizeof(ids));
    blobs got, want;
    if (!fails) {
      sl__backend_conf bc = {.conf = c, .max_par = 8};
      sl__backend *ro = ops->open_snapshot(snap, &bc, err, sizeof(err));
      ck_assert_msg(ro != NULL, "%s", err);
      scan_all(ro, 8, &got);
      scan_all(model, 8, &want);
      blobs_eq(&got, &want, "snapshot", round);
      blobs_free(&got);
      blobs_free(&want);
      ops->close(ro);
    }
    sl__hashmap_ops.close(model);

    model = model_at(c, log, n, mids);
    scan_all(be, 8, &got);
    if (wraps) {
      /* The snapshots on either side of the wrap are in: no entry keeps
       * a generation of the last round of them (they come round again). */
      size_t cap = (size_t)1 << cache->bits;
      for (size_t i = 0; i < cap; i++) {
        rk_entry *e = cache->slots[i].e;
        ck_assert_msg(!e || !e->dgen || e->dgen == cache->gen,
                      "round %d: an entry of generation %u after the wrap",
                      round, e ? e->dgen : 0);
      }
    }
    scan_all(model, 8, &want);
    blobs_eq(&got, &want, "live", round);
    blobs_free(&got);
    blobs_free(&want);
    sl__hashmap_ops.close(model);
    rm_rf(snap);
  }
  /* The frozen entries were read by the snapshots' threads while the
   * worker wrote: some it had to copy first. */
  if (!small)
    ck_assert_msg(cache->cows > 0, "no entry was copied before a write");
  else /* and the small cache evicted while snapshots were in flight */
    ck_assert_msg(cache->early_evicted > 0, "no eviction without a wait");
  ck_assert(wrapped);
  size_t loads = 0;
  for (size_t i = 0; i < n; i++)
    loads += log[i].kind == 9;
  ck_assert_msg(loads >= 10, "%zu key-group loads", loads);
  load_from->ops->close(load_from);
  load_from = NULL;
  sl_conf_destroy(cs);
  rm_rf(ts.path);
  sl__rk_ingest_min = ingest_min;
  free(log);
  sl__hashmap_ops.close(live);
  ops->close(be);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

/* Key "f<i>" of state st, named in buf. */
static sl__skey blob_key(sl__backend *be, uint32_t st, int i, char buf[32]) {
  snprintf(buf, 32, "f%d", i);
  return skey(be, st, buf, "");
}

/* Key "f<i>" holds len bytes of fill. */
static void put_blob(sl__backend *be, uint32_t st, int i, size_t len,
                     unsigned char fill) {
  char key[32];
  sl__skey k = blob_key(be, st, i, key);
  void *p;
  ck_assert_int_ge(be->ops->slot(be, &k, len, &p), 0);
  memset(p, fill, len);
}

static void blob_is(sl__backend *be, uint32_t st, int i, size_t len,
                    unsigned char fill) {
  char key[32];
  sl__skey k = blob_key(be, st, i, key);
  void *p;
  size_t l;
  ck_assert_int_eq(be->ops->get(be, &k, &p, &l, false), 1);
  ck_assert_uint_eq(l, len);
  for (size_t j = 0; j < len; j++)
    ck_assert_msg(((unsigned char *)p)[j] == fill, "%s: byte %zu", key, j);
}

/* A cache far smaller than what the worker reads while a snapshot is in
 * flight, held after the thread copied and sorted the frozen set: evictions
 * drop the frozen entries without waiting for the snapshot (the hold is never
 * lifted), the worker reads them back from the snapshot's records before
 * RocksDB has them, and writes to some of them; the snapshot then holds
 * the values of the barrier, the live state the newest. */
START_TEST(eviction_does_not_wait_for_a_snapshot_in_flight) {
  tdir t;
  tdir_make(&t);
  const char *kv[] = {"state.rocksdb.memory", "32m", NULL};
  sl_conf_t *c = conf_kv(&t, kv);
  sl__backend *be = open_range(c, 0, 8, 8, NULL);
  rk_cache *cache = &((rk *)be)->cache;
  uint32_t v;
  ck_assert_int_eq(ops->register_state(be, "v", SL__BT_VALUE, &v), 0);
  enum { FROZEN = 3000, LEN = 512, READS = 120000 };
  char key[32];
  for (int i = 0; i < FROZEN; i++)
    put_blob(be, v, i, LEN, (unsigned char)i);
  sl__snap_task_hold(2); /* after the copy, before the writes */
  char snap[160], err[512] = "";
  snprintf(snap, sizeof(snap), "%s/snap", t.path);
  struct sl__snap_task *task = NULL;
  ck_assert_msg(ops->snapshot_begin(be, snap, &task, err, sizeof(err)) == 0,
                "%s", err);
  /* Keys that exist nowhere fill the cache with clean entries. */
  for (int i = 0; i < READS; i++) {
    snprintf(key, sizeof(key), "absent%d", i);
    ck_assert_uint_eq(get_u64(be, v, key), UINT64_MAX);
  }
  ck_assert_msg(cache->early_evicted > FROZEN,
                "%llu entries evicted while the snapshot was in flight",
                (unsigned long long)cache->early_evicted);
  for (int i = 0; i < FROZEN; i++) {
    blob_is(be, v, i, LEN, (unsigned char)i);
    if (i % 3 == 0)
      put_blob(be, v, i, LEN, (unsigned char)(i + 1));
  }
  ck_assert_msg(cache->early_read > FROZEN / 2,
                "%llu misses read from the snapshot's records",
                (unsigned long long)cache->early_read);
  ck_assert_msg(!sl__snap_task_done(task), "the worker waited for the thread");
  sl__snap_task_hold(0);
  ck_assert_msg(sl__snap_task_wait(task, err, sizeof(err)) == 0, "%s", err);

  sl__backend_conf bc = {.conf = c, .max_par = 8};
  sl__backend *ro = ops->open_snapshot(snap, &bc, err, sizeof(err));
  ck_assert_msg(ro != NULL, "%s", err);
  for (int i = 0; i < FROZEN; i++) {
    blob_is(ro, v, i, LEN, (unsigned char)i);
    blob_is(be, v, i, LEN, (unsigned char)(i + (i % 3 == 0)));
  }
  ops->close(ro);
  ops->close(be);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

/* The whole list under key "L", read from be, equals the model's. */
static void list_same(sl__backend *be, uint32_t id, sl__backend *model,
                      uint32_t mid, const char *what, int round) {
  sl__skey k = skey(be, id, "L", ""), mk = skey(model, mid, "L", "");
  void *p = NULL, *q = NULL;
  size_t len = 0, mlen = 0;
  int rc = be->ops->get(be, &k, &p, &len, false);
  int mrc = model->ops->get(model, &mk, &q, &mlen, false);
  ck_assert_msg(rc == mrc && len == mlen && (!len || !memcmp(p, q, len)),
                "round %d, %s: list of %zu bytes (%d), model %zu (%d)", round,
                what, len, rc, mlen, mrc);
}

/* A list too long for the cache keeps only its appended frames there and
 * writes them as a merge: frames appended before a barrier are the
 * snapshot's, those after it the next flush's, whichever step the
 * snapshot's thread is held at while the worker appends — each frame
 * once in the snapshot and once in the live list. */
START_TEST(long_list_appends_across_snapshots) {
  tdir t;
  tdir_make(&t);
  const char *kv[] = {"state.rocksdb.memory", "64m", NULL};
  sl_conf_t *c = conf_kv(&t, kv);
  sl__backend *be = open_range(c, 0, 8, 8, NULL);
  sl__backend_conf mbc = {.conf = c, .kg_lo = 0, .kg_hi = 8, .max_par = 8};
  char err[512] = "";
  sl__backend *model = sl__hashmap_ops.open(&mbc, err, sizeof(err));
  ck_assert_ptr_nonnull(model);
  uint32_t id, mid;
  ck_assert_int_eq(ops->register_state(be, "l", SL__BT_LIST, &id), 0);
  ck_assert_int_eq(
      sl__hashmap_ops.register_state(model, "l", SL__BT_LIST, &mid), 0);
  rk_cache *cache = &((rk *)be)->cache;
  unsigned char frame[4096];
  int f = 0;
  bool appending = false;
  for (int round = 0; round < 24; round++) {
    for (int phase = 0; phase < 2; phase++) {
      sl__snap_task *task = NULL;
      char snap[160];
      snprintf(snap, sizeof(snap), "%s/snap%d", t.path, round);
      if (phase == 1) {
        sl__snap_task_hold(round % 6);
        ck_assert_msg(ops->snapshot_begin(be, snap, &task, err, sizeof(err)) ==
                          0,
                      "%s", err);
      }
      for (int i = 0; i < 3 + round % 5; i++, f++) {
        void *p, *q;
        memset(frame, f & 0xff, sizeof(frame));
        sl__skey k = skey(be, id, "L", ""), mk = skey(model, mid, "L", "");
        ck_assert_int_ge(ops->list_append(be, &k, sizeof(frame), &p), 0);
        ck_assert_int_ge(
            sl__hashmap_ops.list_append(model, &mk, sizeof(frame), &q), 0);
        memcpy(p, frame, sizeof(frame));
        memcpy(q, frame, sizeof(frame));
        rk_entry *e;
        rk_probe(cache, rk_hash(&k), &k, false, NULL, 0, &e);
        appending |= e && (e->flags & RK_APPEND);
      }
      if (phase == 0)
        continue;
      sl__snap_task_hold(0);
      ck_assert_msg(sl__snap_task_wait(task, err, sizeof(err)) == 0, "%s", err);
      list_same(be, id, model, mid, "live", round);
      /* The snapshot holds what the model held at the barrier: the model
       * without the frames appended after it. */
      sl__backend_conf bc = {.conf = c, .max_par = 8};
      sl__backend *ro = ops->open_snapshot(snap, &bc, err, sizeof(err));
      ck_assert_msg(ro != NULL, "%s", err);
      uint32_t rid;
      ck_assert_int_eq(ro->ops->register_state(ro, "l", SL__BT_LIST, &rid), 0);
      sl__skey k = skey(ro, rid, "L", ""), mk = skey(model, mid, "L", "");
      void *p = NULL, *q = NULL;
      size_t len = 0, mlen = 0;
      ck_assert_int_eq(ro->ops->get(ro, &k, &p, &len, false), 1);
      ck_assert_int_eq(model->ops->get(model, &mk, &q, &mlen, false), 1);
      size_t later = (3 + (size_t)(round % 5)) * sl__list_frame(sizeof(frame));
      ck_assert_msg(len == mlen - later && !memcmp(p, q, len),
                    "round %d: snapshot list of %zu bytes, model %zu at the "
                    "barrier",
                    round, len, mlen - later);
      ops->close(ro);
      rm_rf(snap);
    }
  }
  ck_assert_msg(appending, "the list never became an appended one");
  sl__hashmap_ops.close(model);
  ops->close(be);
  sl_conf_destroy(c);
  rm_rf(t.path);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rocksdb");
  TCase *tc = tcase_create("snapshots");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, snapshot_restore_sees_the_snapshot_not_later_writes);
  tcase_add_test(tc, open_snapshot_scans_exactly_a_key_group);
  tcase_add_loop_test(tc, kg_load_copies_a_key_group_from_a_snapshot, 0, 2);
  tcase_add_test(tc, corrupt_snapshot_is_a_clear_error);
  tcase_add_loop_test(tc, snapshot_is_the_barrier_while_the_worker_writes, 0,
                      4);
  tcase_add_test(tc, long_list_appends_across_snapshots);
  tcase_add_test(tc, eviction_does_not_wait_for_a_snapshot_in_flight);
  suite_add_tcase(s, tc);
  tc = tcase_create("state");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, compaction_filter_drops_expired_items);
  tcase_add_test(tc, map_iteration_with_equal_hashes_and_eviction);
  tcase_add_test(tc, state_larger_than_the_cache);
  tcase_add_test(tc, budget_becomes_options);
  suite_add_tcase(s, tc);
  tc = tcase_create("errors");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, state_dir_that_cannot_be_created);
  tcase_add_test(tc, state_dir_locked_by_another_job);
  tcase_add_test(tc, harnesses_with_own_job_names_and_state_dirs);
  tcase_add_test(tc, full_disk_fails_the_job_and_the_snapshot);
  tcase_add_test(tc, corrupt_database_is_a_clear_error);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
