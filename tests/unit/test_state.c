/* SPDX-License-Identifier: Apache-2.0 */
/* Keyed state: every kind with keys and namespaces kept apart, many keys
 * and key groups, TTL semantics (Flink's StateTtlConfig, exact timings),
 * and the backend contract. Every test runs once per backend in
 * `backends`, so a new backend is covered by adding one row. */
#include "core/hash.h"
#include "state/backend.h"
#include "state/keyed.h"
#include "state/kstate_int.h"  /* sl__ttl_expired */
#include "state/rocksdb_int.h" /* sl__rocksdb_compact */
#include "state/state.h"

#include <check.h>

#include "check_main.h"
#include <ftw.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const sl__backend_ops *const backends[] = {&sl__hashmap_ops,
                                                  &sl__rocksdb_ops};
#define N_BACKENDS ((int)(sizeof(backends) / sizeof(backends[0])))

/* Backends open with this configuration: state.dir is a directory of this
 * test run (backends opened without a job make private directories in it
 * and remove them when closed). */
static sl_conf_t *g_conf;
static char g_dir[64];

/* Expiry that a backend runs on its own, now: the hashmap's incremental
 * cleanup already ran on access; RocksDB's compaction filter runs when
 * RocksDB compacts. */
static void background_cleanup(sl__backend *be) {
  if (be->ops == &sl__rocksdb_ops)
    sl__rocksdb_compact(be);
}

/* ---- fixture ------------------------------------------------------------ */

typedef struct fx {
  sl__backend *be;
  struct sl__kstate *ks;
  sl__keyed k;
  int64_t now; /* processing time seen by TTL */
  int64_t wm;  /* the operator's input watermark */
  uint32_t K;
  char keybuf[64], nsbuf[64];
} fx;

static int64_t fx_now(void *opaque) {
  return ((fx *)opaque)->now;
}

static sl__backend *open_be(int bi, uint32_t K, uint32_t lo, uint32_t hi) {
  char err[256] = "";
  sl__backend_conf bc = {
      .conf = g_conf, .kg_lo = lo, .kg_hi = hi, .max_par = K};
  sl__backend *be = backends[bi]->open(&bc, err, sizeof(err));
  ck_assert_msg(be != NULL, "open %s: %s", backends[bi]->name, err);
  return be;
}

static void fx_init(fx *f, int bi) {
  memset(f, 0, sizeof(*f));
  f->K = 128;
  f->be = open_be(bi, f->K, 0, f->K);
  f->ks = sl__kstate_new(f->be, true, "op", fx_now, f);
  ck_assert_ptr_nonnull(f->ks);
  f->k.state = f->ks;
  f->wm = SL_TS_MIN;
  f->k.wm = &f->wm;
}

static void fx_fini(fx *f) {
  sl__kstate_destroy(f->ks);
}

/* Makes key current (empty namespace), as key_by + the operator would. */
static void fx_key(fx *f, const char *key) {
  size_t n = strlen(key);
  memcpy(f->keybuf, key, n);
  f->k.key = f->keybuf;
  f->k.key_len = n;
  f->k.hash = sl__hash64(key, n);
  f->k.kg = sl__key_group(f->k.hash, f->K);
  f->k.ns = NULL;
  f->k.ns_len = 0;
}

static void fx_ns(fx *f, const char *ns) {
  size_t n = strlen(ns);
  memcpy(f->nsbuf, ns, n);
  f->k.ns = n ? f->nsbuf : NULL;
  f->k.ns_len = n;
}

static sl_state_t *reg(fx *f, const sl_state_desc_t *d) {
  char err[256] = "";
  sl_state_t *st = NULL;
  int rc = sl__state_register(f->ks, d, &st, err, sizeof(err));
  ck_assert_msg(rc == 0, "register %s: %d %s", d->name, rc, err);
  return st;
}

static sl_state_t *reg_kind(fx *f, const char *name, sl_state_kind kind) {
  sl_state_desc_t d = {.name = name, .kind = kind};
  return reg(f, &d);
}

static sl__state_stats stats(fx *f, sl_state_t *st) {
  sl__state_stats s;
  f->be->ops->stats(f->be, sl__state_id(st), &s);
  return s;
}

/* The value as a string, or "<absent>". */
static const char *vget(fx *f, sl_state_t *st) {
  static char buf[256];
  const void *v;
  size_t l;
  int rc = sl__value_get(&f->k, st, &v, &l);
  ck_assert_int_ge(rc, 0);
  if (!rc)
    return "<absent>";
  ck_assert_uint_lt(l, sizeof(buf));
  memcpy(buf, v, l);
  buf[l] = 0;
  return buf;
}

static void vput(fx *f, sl_state_t *st, const char *s) {
  ck_assert_int_eq(sl__value_put(&f->k, st, s, strlen(s)), 0);
}

/* The list joined with ',', or "" when empty. */
static const char *lget(fx *f, sl_state_t *st) {
  static char buf[4096];
  sl_list_iter_t it;
  const void *v;
  size_t l, o = 0;
  int rc = sl__list_get(&f->k, st, &it);
  ck_assert_int_ge(rc, 0);
  buf[0] = 0;
  while (sl_list_next(&it, &v, &l) == 1) {
    ck_assert_uint_eq((uintptr_t)v % 8, 0);
    ck_assert_uint_lt(o + l + 2, sizeof(buf));
    if (o)
      buf[o++] = ',';
    memcpy(buf + o, v, l);
    o += l;
    buf[o] = 0;
  }
  ck_assert_int_eq(rc, o > 0);
  return buf;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The map as sorted "k=v" joined with ',', or "". */
static const char *mget_all(fx *f, sl_state_t *st) {
  static char buf[8192];
  char *items[256];
  int n = 0;
  sl_map_iter_t it;
  const void *mk, *v;
  size_t mkl, l;
  ck_assert_int_eq(sl__map_iter(&f->k, st, &it), 0);
  int rc;
  while ((rc = sl_map_next(&it, &mk, &mkl, &v, &l)) == 1) {
    ck_assert_int_lt(n, 256);
    items[n] = malloc(mkl + l + 2);
    memcpy(items[n], mk, mkl);
    items[n][mkl] = '=';
    memcpy(items[n] + mkl + 1, v, l);
    items[n][mkl + 1 + l] = 0;
    n++;
  }
  ck_assert_int_eq(rc, 0);
  qsort(items, (size_t)n, sizeof(*items), cmp_str);
  buf[0] = 0;
  for (int i = 0; i < n; i++) {
    if (i)
      strcat(buf, ",");
    strcat(buf, items[i]);
    free(items[i]);
  }
  ck_assert_int_eq(sl__map_is_empty(&f->k, st), n == 0);
  return buf;
}

static void mput(fx *f, sl_state_t *st, const char *mk, const char *v) {
  ck_assert_int_eq(sl__map_put(&f->k, st, mk, strlen(mk), v, strlen(v)), 0);
}

static const char *mget(fx *f, sl_state_t *st, const char *mk) {
  static char buf[256];
  const void *v;
  size_t l;
  int rc = sl__map_get(&f->k, st, mk, strlen(mk), &v, &l);
  ck_assert_int_ge(rc, 0);
  if (!rc)
    return "<absent>";
  memcpy(buf, v, l);
  buf[l] = 0;
  return buf;
}

/* ---- kinds, keys and namespaces ----------------------------------------- */

static const char *const KEYS[] = {"alice", "bob", "", "a-much-longer-key-x"};
static const char *const NSS[] = {"", "w1", "w2"};

START_TEST(test_value_isolation) {
  fx f;
  fx_init(&f, _i);
  sl_state_t *a = reg_kind(&f, "a", SL_STATE_VALUE);
  sl_state_t *b = reg_kind(&f, "b", SL_STATE_VALUE);
  char v[64];
  for (size_t i = 0; i < 4; i++)
    for (size_t j = 0; j < 3; j++) {
      fx_key(&f, KEYS[i]);
      fx_ns(&f, NSS[j]);
      ck_assert_str_eq(vget(&f, a), "<absent>");
      snprintf(v, sizeof(v), "a:%s/%s", KEYS[i], NSS[j]);
      vput(&f, a, v);
      snprintf(v, sizeof(v), "b:%s/%s", KEYS[i], NSS[j]);
      vput(&f, b, v);
    }
  ck_assert_uint_eq(stats(&f, a).entries, 12);
  for (size_t i = 0; i < 4; i++)
    for (size_t j = 0; j < 3; j++) {
      fx_key(&f, KEYS[i]);
      fx_ns(&f, NSS[j]);
      snprintf(v, sizeof(v), "a:%s/%s", KEYS[i], NSS[j]);
      ck_assert_str_eq(vget(&f, a), v);
      snprintf(v, sizeof(v), "b:%s/%s", KEYS[i], NSS[j]);
      ck_assert_str_eq(vget(&f, b), v);
    }
  /* Overwrite with other lengths, then clear one (key, ns) of one state. */
  fx_key(&f, "bob");
  fx_ns(&f, "w1");
  vput(&f, a, "");
  ck_assert_str_eq(vget(&f, a), "");
  vput(&f, a, "a much longer value than before, to force the entry to grow");
  ck_assert_str_eq(vget(&f, a),
                   "a much longer value than before, to force the entry to "
                   "grow");
  ck_assert_int_eq(sl__state_clear(&f.k, a), 0);
  ck_assert_str_eq(vget(&f, a), "<absent>");
  ck_assert_str_eq(vget(&f, b), "b:bob/w1");
  ck_assert_int_eq(sl__state_clear(&f.k, a), 0); /* clearing nothing is ok */
  fx_ns(&f, "");
  ck_assert_str_eq(vget(&f, a), "a:bob/");
  ck_assert_uint_eq(stats(&f, a).entries, 11);
  ck_assert_uint_eq(stats(&f, b).entries, 12);
  /* Wrong kind and foreign handles are refused. */
  const void *p;
  size_t l;
  sl_state_t *lst = reg_kind(&f, "l", SL_STATE_LIST);
  ck_assert_int_eq(sl__value_get(&f.k, lst, &p, &l), SL_ERR_INVAL);
  ck_assert_int_eq(sl__list_add(&f.k, a, "x", 1), SL_ERR_INVAL);
  sl__keyed other = f.k;
  other.state = NULL;
  ck_assert_int_eq(sl__value_get(&other, a, &p, &l), SL_ERR_STATE);
  fx_fini(&f);
}
END_TEST

START_TEST(test_value_ptr) {
  fx f;
  fx_init(&f, _i);
  sl_state_t *c = reg_kind(&f, "count", SL_STATE_VALUE);
  int err = 0;
  bool created = false;
  for (int round = 1; round <= 3; round++)
    for (size_t i = 0; i < 4; i++) {
      fx_key(&f, KEYS[i]);
      uint64_t *p = sl__value_ptr(&f.k, c, sizeof(*p), &created, &err);
      ck_assert_ptr_nonnull(p);
      ck_assert_uint_eq((uintptr_t)p % 8, 0);
      ck_assert_int_eq(created, round == 1);
      ck_assert_uint_eq(*p, (uint64_t)(round - 1) * (i + 1));
      *p += i + 1;
    }
  fx_key(&f, "bob");
  const void *v;
  size_t l;
  ck_assert_int_eq(sl__value_get(&f.k, c, &v, &l), 1);
  ck_assert_uint_eq(l, 8);
  ck_assert_uint_eq(*(const uint64_t *)v, 6);
  /* Another size replaces the value with a zeroed slot. */
  uint32_t *q = sl__value_ptr(&f.k, c, sizeof(*q), &created, &err);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(created, true);
  ck_assert_uint_eq(*q, 0);
  ck_assert_ptr_nonnull(sl__value_ptr(&f.k, c, 4, NULL, &err));
  ck_assert_uint_eq(stats(&f, c).entries, 4);
  fx_fini(&f);
}
END_TEST

START_TEST(test_list) {
  fx f;
  fx_init(&f, _i);
  sl_state_t *st = reg_kind(&f, "l", SL_STATE_LIST);
  char v[64];
  for (int n = 0; n < 5; n++)
    for (size_t i = 0; i < 4; i++)
      for (size_t j = 0; j < 3; j++) {
        fx_key(&f, KEYS[i]);
        fx_ns(&f, NSS[j]);
        snprintf(v, sizeof(v), "%s%s%d", KEYS[i], NSS[j], n);
        ck_assert_int_eq(sl__list_add(&f.k, st, v, strlen(v)), 0);
      }
  fx_key(&f, "bob");
  fx_ns(&f, "w2");
  ck_assert_str_eq(lget(&f, st), "bobw20,bobw21,bobw22,bobw23,bobw24");
  fx_key(&f, "");
  fx_ns(&f, "");
  ck_assert_str_eq(lget(&f, st), "0,1,2,3,4");
  ck_assert_int_eq(sl__list_add(&f.k, st, NULL, 0), 0); /* empty element */
  ck_assert_str_eq(lget(&f, st), "0,1,2,3,4,");
  /* update replaces, n = 0 clears. */
  const void *vals[] = {"x", "yy", "zzzzzzzzz"};
  size_t lens[] = {1, 2, 9};
  ck_assert_int_eq(sl__list_update(&f.k, st, vals, lens, 3), 0);
  ck_assert_str_eq(lget(&f, st), "x,yy,zzzzzzzzz");
  ck_assert_int_eq(sl__list_update(&f.k, st, NULL, NULL, 0), 0);
  ck_assert_str_eq(lget(&f, st), "");
  fx_key(&f, "alice");
  ck_assert_int_eq(sl__state_clear(&f.k, st), 0);
  ck_assert_str_eq(lget(&f, st), "");
  fx_ns(&f, "w1");
  ck_assert_str_eq(lget(&f, st),
                   "alicew10,alicew11,alicew12,alicew13,alicew14");
  ck_assert_uint_eq(stats(&f, st).entries, 10);

  /* An iterator survives other state calls, including appends that move
   * its own list. */
  sl_list_iter_t it;
  const void *p;
  size_t l;
  ck_assert_int_eq(sl__list_get(&f.k, st, &it), 1);
  ck_assert_int_eq(sl_list_next(&it, &p, &l), 1);
  ck_assert_mem_eq(p, "alicew10", 8);
  for (int n = 0; n < 200; n++)
    ck_assert_int_eq(sl__list_add(&f.k, st, "more", 4), 0);
  int seen = 1;
  while (sl_list_next(&it, &p, &l) == 1)
    seen++;
  ck_assert_int_ge(seen, 5);
  ck_assert_int_le(seen, 205);
  ck_assert_int_eq(sl_list_next(&it, &p, &l), 0); /* stays at the end */
  fx_fini(&f);
}
END_TEST

START_TEST(test_map) {
  fx f;
  fx_init(&f, _i);
  sl_state_t *st = reg_kind(&f, "m", SL_STATE_MAP);
  char mk[32], v[64];
  for (size_t i = 0; i < 4; i++)
    for (size_t j = 0; j < 3; j++) {
      fx_key(&f, KEYS[i]);
      fx_ns(&f, NSS[j]);
      ck_assert_str_eq(mget_all(&f, st), "");
      for (int n = 0; n < 3; n++) {
        snprintf(mk, sizeof(mk), "k%d", n);
        snprintf(v, sizeof(v), "%s|%s|%d", KEYS[i], NSS[j], n);
        mput(&f, st, mk, v);
      }
    }
  ck_assert_uint_eq(stats(&f, st).entries, 36);
  fx_key(&f, "alice");
  fx_ns(&f, "w1");
  ck_assert_str_eq(mget_all(&f, st),
                   "k0=alice|w1|0,k1=alice|w1|1,k2=alice|w1|2");
  ck_assert_str_eq(mget(&f, st, "k1"), "alice|w1|1");
  ck_assert_str_eq(mget(&f, st, "k9"), "<absent>");
  ck_assert_int_eq(sl__map_contains(&f.k, st, "k2", 2), 1);
  ck_assert_int_eq(sl__map_contains(&f.k, st, "k", 1), 0);
  mput(&f, st, "k1", "a longer value to make the map entry grow");
  mput(&f, st, "", "empty map key");
  ck_assert_str_eq(mget(&f, st, ""), "empty map key");
  ck_assert_int_eq(sl__map_remove(&f.k, st, "k0", 2), 1);
  ck_assert_int_eq(sl__map_remove(&f.k, st, "k0", 2), 0);
  ck_assert_str_eq(mget_all(&f, st),
                   "=empty map key,k1=a longer value to make the map entry "
                   "grow,k2=alice|w1|2");
  /* Others untouched. */
  fx_ns(&f, "w2");
  ck_assert_str_eq(mget_all(&f, st),
                   "k0=alice|w2|0,k1=alice|w2|1,k2=alice|w2|2");
  fx_key(&f, "bob");
  fx_ns(&f, "w1");
  ck_assert_str_eq(mget(&f, st, "k0"), "bob|w1|0");

  /* Removing every entry while iterating, then the map is empty and gone. */
  sl_map_iter_t it;
  const void *k, *p;
  size_t kl, l;
  int n = 0;
  ck_assert_int_eq(sl__map_iter(&f.k, st, &it), 0);
  while (sl_map_next(&it, &k, &kl, &p, &l) == 1) {
    char key[16];
    memcpy(key, k, kl);
    ck_assert_int_eq(sl__map_remove(&f.k, st, key, kl), 1);
    n++;
  }
  ck_assert_int_eq(n, 3);
  ck_assert_int_eq(sl__map_is_empty(&f.k, st), 1);
  ck_assert_uint_eq(stats(&f, st).entries, 36 + 1 - 1 - 3);

  /* A large map, and clear. */
  for (int i = 0; i < 1000; i++) {
    snprintf(mk, sizeof(mk), "key%d", i);
    mput(&f, st, mk, mk);
  }
  for (int i = 0; i < 1000; i += 7) {
    snprintf(mk, sizeof(mk), "key%d", i);
    ck_assert_str_eq(mget(&f, st, mk), mk);
  }
  ck_assert_int_eq(sl__map_is_empty(&f.k, st), 0);
  ck_assert_int_eq(sl__state_clear(&f.k, st), 0);
  ck_assert_int_eq(sl__map_is_empty(&f.k, st), 1);
  ck_assert_uint_eq(stats(&f, st).entries, 33);
  fx_fini(&f);
}
END_TEST

static int sum_u64(void *acc, const void *in, size_t len, void *opaque) {
  uint64_t a, b;
  (void)opaque;
  ck_assert_uint_eq(len, 8);
  memcpy(&a, acc, 8);
  memcpy(&b, in, 8);
  a += b;
  memcpy(acc, &a, 8);
  return a == 999 ? 1 : 0; /* lets the test make reduce fail */
}

START_TEST(test_reducing) {
  fx f;
  fx_init(&f, _i);
  sl_state_desc_t d = {.name = "sum",
                       .kind = SL_STATE_REDUCING,
                       .value_size = 8,
                       .reduce = sum_u64};
  sl_state_t *st = reg(&f, &d);
  const void *v;
  size_t l;
  for (size_t i = 0; i < 4; i++)
    for (uint64_t x = 1; x <= 10; x++) {
      fx_key(&f, KEYS[i]);
      uint64_t y = x * (i + 1);
      ck_assert_int_eq(sl__reducing_add(&f.k, st, &y, 8), 0);
    }
  for (size_t i = 0; i < 4; i++) {
    fx_key(&f, KEYS[i]);
    ck_assert_int_eq(sl__reducing_get(&f.k, st, &v, &l), 1);
    ck_assert_uint_eq(l, 8);
    ck_assert_uint_eq(*(const uint64_t *)v, 55 * (i + 1));
  }
  fx_ns(&f, "w");
  ck_assert_int_eq(sl__reducing_get(&f.k, st, &v, &l), 0);
  ck_assert_int_eq(sl__reducing_add(&f.k, st, "abc", 3), SL_ERR_INVAL);
  uint64_t x = 990;
  ck_assert_int_eq(sl__reducing_add(&f.k, st, &x, 8), 0);
  x = 9;
  ck_assert_int_eq(sl__reducing_add(&f.k, st, &x, 8), SL_ERR_USER);
  fx_fini(&f);
}
END_TEST

typedef struct avg_acc {
  int64_t sum, count;
} avg_acc;
static void avg_init(void *acc, void *opaque) {
  (void)opaque;
  ((avg_acc *)acc)->count = 0;
  ((avg_acc *)acc)->sum = 0;
}
static int avg_add(void *acc, const void *in, size_t len, void *opaque) {
  (void)opaque;
  if (len != 8)
    return 1;
  int64_t x;
  memcpy(&x, in, 8);
  ((avg_acc *)acc)->sum += x;
  ((avg_acc *)acc)->count++;
  return 0;
}
static void avg_merge(void *acc, const void *other, void *opaque) {
  (void)opaque;
  ((avg_acc *)acc)->sum += ((const avg_acc *)other)->sum;
  ((avg_acc *)acc)->count += ((const avg_acc *)other)->count;
}
static void avg_result(const void *acc, void *out, void *opaque) {
  (void)opaque;
  const avg_acc *a = acc;
  double r = a->count ? (double)a->sum / (double)a->count : 0;
  memcpy(out, &r, sizeof(r));
}

static sl_state_desc_t avg_desc(const char *name, bool with_result) {
  sl_state_desc_t d = {.name = name,
                       .kind = SL_STATE_AGGREGATING,
                       .acc_size = sizeof(avg_acc),
                       .init = avg_init,
                       .add = avg_add,
                       .merge = avg_merge};
  if (with_result) {
    d.result = avg_result;
    d.result_size = sizeof(double);
  }
  return d;
}

START_TEST(test_aggregating) {
  fx f;
  fx_init(&f, _i);
  sl_state_desc_t d1 = avg_desc("avg", true), d2 = avg_desc("acc", false);
  sl_state_t *avg = reg(&f, &d1), *acc = reg(&f, &d2);
  const void *v;
  size_t l;
  for (size_t j = 0; j < 3; j++) {
    fx_key(&f, "k");
    fx_ns(&f, NSS[j]);
    ck_assert_int_eq(sl__aggregating_get(&f.k, avg, &v, &l), 0);
    for (int64_t x = 1; x <= 4; x++) {
      int64_t y = x * (int64_t)(j + 1);
      ck_assert_int_eq(sl__aggregating_add(&f.k, avg, &y, 8), 0);
      ck_assert_int_eq(sl__aggregating_add(&f.k, acc, &y, 8), 0);
    }
  }
  fx_ns(&f, "w2");
  ck_assert_int_eq(sl__aggregating_get(&f.k, avg, &v, &l), 1);
  ck_assert_uint_eq(l, sizeof(double));
  ck_assert_double_eq(*(const double *)v, 7.5);
  ck_assert_int_eq(sl__aggregating_get(&f.k, acc, &v, &l), 1);
  ck_assert_uint_eq(l, sizeof(avg_acc));
  ck_assert_int_eq(((const avg_acc *)v)->sum, 30);
  ck_assert_int_eq(((const avg_acc *)v)->count, 4);
  ck_assert_int_eq(sl__aggregating_add(&f.k, avg, "x", 1), SL_ERR_USER);
  fx_fini(&f);
}
END_TEST

START_TEST(test_merge_namespaces) {
  fx f;
  fx_init(&f, _i);
  sl_state_desc_t da = avg_desc("avg", true);
  sl_state_desc_t dr = {.name = "sum",
                        .kind = SL_STATE_REDUCING,
                        .value_size = 8,
                        .reduce = sum_u64};
  sl_state_t *avg = reg(&f, &da), *sum = reg(&f, &dr);
  sl_state_t *lst = reg_kind(&f, "l", SL_STATE_LIST);
  sl_state_t *val = reg_kind(&f, "v", SL_STATE_VALUE);
  fx_key(&f, "user");
  const char *wins[] = {"s1", "s2", "s3"};
  for (int w = 0; w < 3; w++) {
    fx_ns(&f, wins[w]);
    for (int64_t x = 1; x <= 2; x++) {
      int64_t y = x + 10 * w;
      ck_assert_int_eq(sl__aggregating_add(&f.k, avg, &y, 8), 0);
      ck_assert_int_eq(sl__reducing_add(&f.k, sum, &y, 8), 0);
      char e[8];
      snprintf(e, sizeof(e), "%s.%d", wins[w], (int)x);
      ck_assert_int_eq(sl__list_add(&f.k, lst, e, strlen(e)), 0);
    }
  }
  /* Merge s1 and s3 into s2 (s2 listed too: merging into itself is a
   * no-op), and into a new window m from nothing. */
  const void *srcs[] = {"s1", "s2", "s3"};
  size_t lens[] = {2, 2, 2};
  fx_ns(&f, "s2");
  ck_assert_int_eq(sl__state_merge_ns(&f.k, avg, srcs, lens, 3), 0);
  ck_assert_int_eq(sl__state_merge_ns(&f.k, sum, srcs, lens, 3), 0);
  ck_assert_int_eq(sl__state_merge_ns(&f.k, lst, srcs, lens, 3), 0);
  ck_assert_int_eq(sl__state_merge_ns(&f.k, val, srcs, lens, 3), SL_ERR_INVAL);
  const void *v;
  size_t l;
  ck_assert_int_eq(sl__aggregating_get(&f.k, avg, &v, &l), 1);
  ck_assert_double_eq(*(const double *)v, (3.0 + 23 + 43) / 6);
  ck_assert_int_eq(sl__reducing_get(&f.k, sum, &v, &l), 1);
  ck_assert_uint_eq(*(const uint64_t *)v, 3 + 23 + 43);
  ck_assert_str_eq(lget(&f, lst), "s2.1,s2.2,s1.1,s1.2,s3.1,s3.2");
  for (int w = 0; w < 3; w += 2) {
    fx_ns(&f, wins[w]);
    ck_assert_int_eq(sl__aggregating_get(&f.k, avg, &v, &l), 0);
    ck_assert_int_eq(sl__reducing_get(&f.k, sum, &v, &l), 0);
    ck_assert_str_eq(lget(&f, lst), "");
  }
  const void *src2[] = {"s2"};
  size_t len2[] = {2};
  fx_ns(&f, "m");
  ck_assert_int_eq(sl__state_merge_ns(&f.k, sum, src2, len2, 1), 0);
  ck_assert_int_eq(sl__reducing_get(&f.k, sum, &v, &l), 1);
  ck_assert_uint_eq(*(const uint64_t *)v, 69);
  ck_assert_uint_eq(stats(&f, sum).entries, 1);
  fx_fini(&f);
}
END_TEST

START_TEST(test_register) {
  fx f;
  fx_init(&f, _i);
  char err[256];
  sl_state_t *st, *a = reg_kind(&f, "a", SL_STATE_VALUE);
  ck_assert_ptr_eq(reg_kind(&f, "a", SL_STATE_VALUE), a); /* shared */
  sl_state_desc_t d = {.name = "a", .kind = SL_STATE_LIST};
  ck_assert_int_eq(sl__state_register(f.ks, &d, &st, err, sizeof(err)),
                   SL_ERR_INVAL);
  ck_assert_str_eq(err,
                   "state \"a\" is already registered with another descriptor");
  ck_assert_ptr_null(st);
  d.kind = SL_STATE_VALUE;
  d.ttl.ttl_ms = 10;
  ck_assert_int_eq(sl__state_register(f.ks, &d, &st, err, sizeof(err)),
                   SL_ERR_INVAL);
  struct {
    sl_state_desc_t d;
    const char *msg;
  } bad[] = {
      {{.name = NULL}, "state descriptor without a name"},
      {{.name = ""}, "state descriptor without a name"},
      {{.name = "x", .kind = (sl_state_kind)9}, "state \"x\": unknown kind"},
      {{.name = "x", .ttl = {.ttl_ms = -1}}, "state \"x\": negative ttl_ms"},
      {{.name = "x", .ttl = {.ttl_ms = 1, .time = (sl_ttl_time)5}},
       "state \"x\": unknown TTL update type, visibility or time domain"},
      {{.name = "x", .kind = SL_STATE_REDUCING, .value_size = 8},
       "state \"x\": a reducing state needs reduce and value_size > 0"},
      {{.name = "x", .kind = SL_STATE_AGGREGATING, .add = avg_add},
       "state \"x\": an aggregating state needs add and acc_size > 0"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ck_assert_int_eq(sl__state_register(f.ks, &bad[i].d, &st, err, sizeof(err)),
                     SL_ERR_INVAL);
    ck_assert_str_eq(err, bad[i].msg);
  }
  /* Names in the backend carry the operator uid. */
  const char *name;
  sl__btype type;
  ck_assert_int_eq(f.be->ops->state_info(f.be, sl__state_id(a), &name, &type),
                   0);
  ck_assert_str_eq(name, "op/a");
  ck_assert_int_eq(type, SL__BT_VALUE);
  /* A second operator on the same backend gets its own states. */
  struct sl__kstate *ks2 = sl__kstate_new(f.be, false, "op2", fx_now, &f);
  sl_state_t *a2;
  ck_assert_int_eq(sl__state_register(ks2, &(sl_state_desc_t){.name = "a"}, &a2,
                                      err, sizeof(err)),
                   0);
  ck_assert_uint_ne(sl__state_id(a2), sl__state_id(a));
  sl__keyed k2 = f.k;
  k2.state = ks2;
  fx_key(&f, "k");
  k2.key = f.k.key, k2.key_len = f.k.key_len, k2.hash = f.k.hash;
  k2.kg = f.k.kg;
  vput(&f, a, "one");
  ck_assert_int_eq(sl__value_put(&k2, a2, "two", 3), 0);
  ck_assert_str_eq(vget(&f, a), "one");
  ck_assert_int_eq(sl__value_get(&f.k, a2, &(const void *){0}, &(size_t){0}),
                   SL_ERR_STATE);
  sl__kstate_destroy(ks2);
  fx_fini(&f);
}
END_TEST

/* ---- many keys and key groups ------------------------------------------- */

static int count_fn(uint32_t state, const void *k, size_t kl, const void *ns,
                    size_t nl, const void *mk, size_t mkl, const void *val,
                    size_t len, void *opaque) {
  (void)state, (void)k, (void)kl, (void)ns, (void)nl, (void)mk, (void)mkl;
  (void)val, (void)len;
  (*(uint64_t *)opaque)++;
  return 0;
}

START_TEST(test_many_keys) {
  fx f;
  fx_init(&f, _i);
  sl_state_t *c = reg_kind(&f, "count", SL_STATE_VALUE);
  sl_state_t *m = reg_kind(&f, "m", SL_STATE_MAP);
  const uint32_t N = 1000000;
  int err = 0;
  char key[32];
  for (int round = 1; round <= 2; round++)
    for (uint32_t i = 0; i < N; i++) {
      fx_key(&f, (snprintf(key, sizeof(key), "user-%u", i), key));
      bool created;
      uint64_t *p = sl__value_ptr(&f.k, c, 8, &created, &err);
      ck_assert_ptr_nonnull(p);
      if (created != (round == 1) || *p != (uint64_t)(round - 1) * i)
        ck_abort_msg("key %u round %d: created %d value %llu", i, round,
                     created, (unsigned long long)*p);
      *p += i;
      if (round == 1 && i % 10 == 0)
        mput(&f, m, "x", key);
    }
  sl__state_stats s = stats(&f, c);
  ck_assert_uint_eq(s.entries, N);
  ck_assert_uint_eq(stats(&f, m).entries, N / 10);
  /* Remove every third key, then check all. */
  for (uint32_t i = 0; i < N; i += 3) {
    fx_key(&f, (snprintf(key, sizeof(key), "user-%u", i), key));
    ck_assert_int_eq(sl__state_clear(&f.k, c), 0);
  }
  for (uint32_t i = 0; i < N; i++) {
    fx_key(&f, (snprintf(key, sizeof(key), "user-%u", i), key));
    const void *v;
    size_t l;
    int rc = sl__value_get(&f.k, c, &v, &l);
    if (rc != (i % 3 != 0) || (rc && *(const uint64_t *)v != 2ull * i))
      ck_abort_msg("key %u: rc %d", i, rc);
  }
  ck_assert_uint_eq(stats(&f, c).entries, N - (N + 2) / 3);
  /* Every key group holds some keys: scan them all and count. */
  uint64_t total = 0;
  for (uint32_t kg = 0; kg < f.K; kg++) {
    uint64_t n = 0;
    ck_assert_int_eq(f.be->ops->kg_scan(f.be, kg, count_fn, &n), 0);
    ck_assert_uint_gt(n, 0);
    total += n;
  }
  ck_assert_uint_eq(total, N - (N + 2) / 3 + N / 10);
  fx_fini(&f);
}
END_TEST

START_TEST(test_kg_range) {
  uint32_t Ks[] = {1, 7, 128, 1000, 32768};
  int Ps[] = {1, 2, 3, 7, 64};
  for (size_t a = 0; a < 5; a++)
    for (size_t b = 0; b < 5; b++) {
      uint32_t K = Ks[a];
      int P = Ps[b];
      if ((uint32_t)P > K)
        continue;
      uint32_t next = 0;
      for (int w = 0; w < P; w++) {
        uint32_t lo, hi;
        sl__kg_range(w, P, K, &lo, &hi);
        ck_assert_uint_eq(lo, next);
        ck_assert_uint_lt(lo, hi);
        for (uint32_t kg = lo; kg < hi; kg++)
          ck_assert_int_eq(sl__kg_worker(kg, P, K), w);
        next = hi;
      }
      ck_assert_uint_eq(next, K);
    }
}
END_TEST

/* A worker owning a part of the key groups keeps the keys of exactly
 * those groups. */
START_TEST(test_partial_range) {
  fx f;
  memset(&f, 0, sizeof(f));
  f.K = 128;
  uint32_t lo, hi;
  sl__kg_range(2, 3, f.K, &lo, &hi);
  f.be = open_be(_i, f.K, lo, hi);
  f.ks = sl__kstate_new(f.be, true, "op", fx_now, &f);
  f.k.state = f.ks;
  sl_state_t *st = reg_kind(&f, "v", SL_STATE_VALUE);
  char key[32];
  int stored = 0;
  for (int i = 0; i < 10000; i++) {
    fx_key(&f, (snprintf(key, sizeof(key), "%d", i), key));
    if (f.k.kg < lo || f.k.kg >= hi)
      continue;
    vput(&f, st, key);
    stored++;
  }
  ck_assert_uint_eq(stats(&f, st).entries, (uint64_t)stored);
  ck_assert_int_eq(f.be->ops->kg_scan(f.be, lo - 1, count_fn, &(uint64_t){0}),
                   SL_ERR_RANGE);
  char err[128];
  sl__backend_conf bc = {
      .conf = g_conf, .kg_lo = 5, .kg_hi = 5, .max_par = 128};
  ck_assert_ptr_null(backends[_i]->open(&bc, err, sizeof(err)));
  fx_fini(&f);
}
END_TEST

/* ---- TTL ---------------------------------------------------------------- */

START_TEST(test_ttl_expired_formula) {
  /* Expired iff last + ttl <= now, exactly, for every magnitude. */
  ck_assert(!sl__ttl_expired(0, 100, 99));
  ck_assert(sl__ttl_expired(0, 100, 100));
  ck_assert(sl__ttl_expired(-50, 100, 50));
  ck_assert(!sl__ttl_expired(1000, INT64_MAX, INT64_MAX));
  ck_assert(!sl__ttl_expired(0, INT64_MAX, INT64_MAX - 1));
  ck_assert(sl__ttl_expired(0, INT64_MAX, INT64_MAX));
  ck_assert(sl__ttl_expired(-5, INT64_MAX, INT64_MAX - 5));
  ck_assert(!sl__ttl_expired(-5, INT64_MAX, INT64_MAX - 6));
  ck_assert(!sl__ttl_expired(INT64_MIN, INT64_MAX, -2));
  ck_assert(sl__ttl_expired(INT64_MIN, INT64_MAX, -1));
  ck_assert(sl__ttl_expired(INT64_MIN, 1, INT64_MAX));
  ck_assert(!sl__ttl_expired(INT64_MAX, 1, INT64_MAX));
  ck_assert(!sl__ttl_expired(INT64_MIN, 1, INT64_MIN));
  ck_assert(!sl__ttl_expired(0, 0, INT64_MAX)); /* no TTL */
}
END_TEST

/* The conformance sequence of docs/state.md. */
START_TEST(test_ttl_create_write_never_expired) {
  fx f;
  fx_init(&f, _i);
  sl_state_desc_t d = {.name = "v",
                       .kind = SL_STATE_VALUE,
                       .ttl = {.ttl_ms = 100,
                               .update = SL_TTL_ON_CREATE_AND_WRITE,
                               .visibility = SL_TTL_NEVER_RETURN_EXPIRED}};
  sl_state_t *st = reg(&f, &d);
  fx_key(&f, "k");
  f.now = 0;
  vput(&f, st, "v0");
  f.now = 20;
  ck_assert_str_eq(vget(&f, st), "v0");
  f.now = 50;
  vput(&f, st, "v1");
  f.now = 120; /* 50 + 100 > 120: the read at 20 did not matter */
  ck_assert_str_eq(vget(&f, st), "v1");
  f.now = 149;
  ck_assert_str_eq(vget(&f, st), "v1");
  ck_assert_uint_eq(stats(&f, st).entries, 1);
  f.now = 300;
  ck_assert_str_eq(vget(&f, st), "<absent>");
  ck_assert_uint_eq(stats(&f, st).entries, 0);
  /* Expiry is exact: at last + ttl the value is gone. */
  f.now = 1000;
  vput(&f, st, "v2");
  f.now = 1099;
  ck_assert_str_eq(vget(&f, st), "v2");
  f.now = 1100;
  ck_assert_str_eq(vget(&f, st), "<absent>");
  fx_fini(&f);
}
END_TEST

START_TEST(test_ttl_read_write_return_expired) {
  fx f;
  fx_init(&f, _i);
  sl_state_desc_t d = {
      .name = "v",
      .kind = SL_STATE_VALUE,
      .ttl = {.ttl_ms = 100,
              .update = SL_TTL_ON_READ_AND_WRITE,
              .visibility = SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP,
              .cleanup_per_access = -1}};
  sl_state_t *st = reg(&f, &d);
  fx_key(&f, "k");
  f.now = 0;
  vput(&f, st, "v0");
  f.now = 80;
  ck_assert_str_eq(vget(&f, st), "v0"); /* refreshes: now lives to 180 */
  f.now = 170;
  ck_assert_str_eq(vget(&f, st), "v0"); /* to 270 */
  f.now = 400;
  ck_assert_str_eq(vget(&f, st), "v0"); /* expired, returned once */
  ck_assert_uint_eq(stats(&f, st).entries, 0);
  ck_assert_str_eq(vget(&f, st), "<absent>");
  fx_fini(&f);
}
END_TEST

START_TEST(test_ttl_event_time) {
  fx f;
  fx_init(&f, _i);
  sl_state_desc_t d = {.name = "v",
                       .kind = SL_STATE_VALUE,
                       .ttl = {.ttl_ms = 100, .time = SL_TTL_EVENT_TIME}};
  sl_state_t *st = reg(&f, &d);
  fx_key(&f, "k");
  f.now = 1000000; /* processing time plays no part */
  f.k.ts = 5000;
  vput(&f, st, "e");
  f.k.ts = 5099;
  ck_assert_str_eq(vget(&f, st), "e");
  f.now = 99999999;
  ck_assert_str_eq(vget(&f, st), "e");
  f.k.ts = 5100;
  f.now = 0;
  ck_assert_str_eq(vget(&f, st), "<absent>");
  fx_fini(&f);
}
END_TEST

START_TEST(test_ttl_huge) {
  fx f;
  fx_init(&f, _i);
  sl_state_desc_t d = {
      .name = "v", .kind = SL_STATE_VALUE, .ttl = {.ttl_ms = INT64_MAX}};
  sl_state_t *st = reg(&f, &d);
  fx_key(&f, "k");
  f.now = 1700000000000; /* a real epoch time */
  vput(&f, st, "forever");
  f.now = INT64_MAX;
  ck_assert_str_eq(vget(&f, st), "forever");
  f.now = INT64_MIN; /* a clock going backwards does not expire it either */
  ck_assert_str_eq(vget(&f, st), "forever");
  fx_fini(&f);
}
END_TEST

START_TEST(test_ttl_value_ptr) {
  fx f;
  fx_init(&f, _i);
  sl_state_desc_t d = {
      .name = "c",
      .kind = SL_STATE_VALUE,
      .ttl = {.ttl_ms = 10,
              .visibility = SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP,
              .cleanup_per_access = -1}};
  sl_state_t *st = reg(&f, &d);
  fx_key(&f, "k");
  int err;
  bool created;
  for (f.now = 0; f.now < 50; f.now += 5) { /* each access refreshes */
    uint64_t *p = sl__value_ptr(&f.k, st, 8, &created, &err);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p % 8, 0);
    ck_assert_int_eq(created, f.now == 0);
    ++*p;
  }
  f.now = 55;
  uint64_t *p = sl__value_ptr(&f.k, st, 8, &created, &err);
  ck_assert_int_eq(created, true); /* expired counts as absent */
  ck_assert_uint_eq(*p, 0);
  fx_fini(&f);
}
END_TEST

START_TEST(test_ttl_list_map_reducing) {
  fx f;
  fx_init(&f, _i);
  sl_state_ttl_t ttl = {.ttl_ms = 100, .cleanup_per_access = -1};
  sl_state_desc_t dl = {.name = "l", .kind = SL_STATE_LIST, .ttl = ttl};
  sl_state_desc_t dm = {.name = "m", .kind = SL_STATE_MAP, .ttl = ttl};
  sl_state_desc_t dr = {.name = "r",
                        .kind = SL_STATE_REDUCING,
                        .ttl = ttl,
                        .value_size = 8,
                        .reduce = sum_u64};
  sl_state_desc_t da = avg_desc("a", true);
  da.ttl = ttl;
  sl_state_t *l = reg(&f, &dl), *m = reg(&f, &dm), *r = reg(&f, &dr),
             *a = reg(&f, &da);
  fx_key(&f, "k");
  uint64_t one = 1;
  int64_t six = 6;
  f.now = 0;
  ck_assert_int_eq(sl__list_add(&f.k, l, "e0", 2), 0);
  mput(&f, m, "a", "0");
  ck_assert_int_eq(sl__reducing_add(&f.k, r, &one, 8), 0);
  ck_assert_int_eq(sl__aggregating_add(&f.k, a, &six, 8), 0);
  f.now = 50;
  ck_assert_int_eq(sl__list_add(&f.k, l, "e1", 2), 0);
  mput(&f, m, "b", "1");
  f.now = 99;
  ck_assert_str_eq(lget(&f, l), "e0,e1");
  ck_assert_str_eq(mget_all(&f, m), "a=0,b=1");
  f.now = 100; /* per element and per entry, as in Flink */
  ck_assert_str_eq(lget(&f, l), "e1");
  ck_assert_str_eq(mget(&f, m, "a"), "<absent>");
  ck_assert_str_eq(mget_all(&f, m), "b=1");
  ck_assert_uint_eq(stats(&f, m).entries, 1);
  const void *v;
  size_t len;
  ck_assert_int_eq(sl__reducing_get(&f.k, r, &v, &len), 0);
  ck_assert_int_eq(sl__aggregating_get(&f.k, a, &v, &len), 0);
  /* An add after expiry starts from scratch. */
  ck_assert_int_eq(sl__reducing_add(&f.k, r, &one, 8), 0);
  ck_assert_int_eq(sl__reducing_get(&f.k, r, &v, &len), 1);
  ck_assert_uint_eq(*(const uint64_t *)v, 1);
  ck_assert_int_eq(sl__reducing_add(&f.k, r, &one, 8), 0);
  ck_assert_int_eq(sl__reducing_get(&f.k, r, &v, &len), 1);
  ck_assert_uint_eq(*(const uint64_t *)v, 2);
  f.now = 150;
  ck_assert_str_eq(lget(&f, l), "");
  ck_assert_uint_eq(stats(&f, l).entries, 0);
  ck_assert_int_eq(sl__map_is_empty(&f.k, m), 1);
  ck_assert_uint_eq(stats(&f, m).entries, 0);
  fx_fini(&f);
}
END_TEST

START_TEST(test_ttl_list_map_return_once) {
  fx f;
  fx_init(&f, _i);
  sl_state_ttl_t ttl = {.ttl_ms = 100,
                        .update = SL_TTL_ON_READ_AND_WRITE,
                        .visibility = SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP,
                        .cleanup_per_access = -1};
  sl_state_desc_t dl = {.name = "l", .kind = SL_STATE_LIST, .ttl = ttl};
  sl_state_desc_t dm = {.name = "m", .kind = SL_STATE_MAP, .ttl = ttl};
  sl_state_t *l = reg(&f, &dl), *m = reg(&f, &dm);
  fx_key(&f, "k");
  f.now = 0;
  ck_assert_int_eq(sl__list_add(&f.k, l, "e0", 2), 0);
  mput(&f, m, "a", "0");
  f.now = 60;
  ck_assert_int_eq(sl__list_add(&f.k, l, "e1", 2), 0);
  mput(&f, m, "b", "1");
  f.now = 90; /* a read refreshes every element / entry read */
  ck_assert_str_eq(lget(&f, l), "e0,e1");
  ck_assert_str_eq(mget(&f, m, "a"), "0");
  f.now = 170; /* b (60) expired, a (read at 90) not */
  ck_assert_str_eq(mget_all(&f, m), "a=0,b=1"); /* b returned once */
  ck_assert_str_eq(mget_all(&f, m), "a=0");
  f.now = 400;
  ck_assert_str_eq(lget(&f, l), "e0,e1");
  ck_assert_str_eq(lget(&f, l), "");
  ck_assert_str_eq(mget(&f, m, "a"), "0");
  ck_assert_str_eq(mget(&f, m, "a"), "<absent>");
  ck_assert_uint_eq(stats(&f, l).entries + stats(&f, m).entries, 0);
  fx_fini(&f);
}
END_TEST

/* Entries that are never read again are removed by accesses to other
 * keys of the same state (Flink's incremental cleanup). */
START_TEST(test_ttl_incremental_cleanup) {
  fx f;
  fx_init(&f, _i);
  sl_state_ttl_t ttl = {.ttl_ms = 100};
  sl_state_desc_t dv = {.name = "v", .kind = SL_STATE_VALUE, .ttl = ttl};
  sl_state_desc_t dl = {.name = "l", .kind = SL_STATE_LIST, .ttl = ttl};
  sl_state_desc_t dm = {.name = "m", .kind = SL_STATE_MAP, .ttl = ttl};
  sl_state_t *sts[3] = {reg(&f, &dv), reg(&f, &dl), reg(&f, &dm)};
  char key[32];
  f.now = 0;
  for (int i = 0; i < 2000; i++) {
    fx_key(&f, (snprintf(key, sizeof(key), "old-%d", i), key));
    vput(&f, sts[0], key);
    ck_assert_int_eq(sl__list_add(&f.k, sts[1], key, strlen(key)), 0);
    mput(&f, sts[2], "x", key);
  }
  for (int s = 0; s < 3; s++)
    ck_assert_uint_eq(stats(&f, sts[s]).entries, 2000);
  f.now = 500;
  fx_key(&f, "live");
  for (int n = 0; n < 2000; n++) { /* 5 entries per access by default */
    vput(&f, sts[0], "x");
    ck_assert_int_eq(sl__list_add(&f.k, sts[1], "x", 1), 0);
    mput(&f, sts[2], "x", "x");
  }
  background_cleanup(f.be);
  for (int s = 0; s < 3; s++)
    ck_assert_uint_eq(stats(&f, sts[s]).entries, 1);
  ck_assert_str_eq(vget(&f, sts[0]), "x");
  fx_fini(&f);
}
END_TEST

/* Partitions far apart in event time: elements of a leading partition must
 * not expire entries of other keys that elements of a lagging one still
 * read. Cleanup of other keys waits for the watermark. */
START_TEST(test_ttl_event_cleanup_waits_for_watermark) {
  fx f;
  fx_init(&f, _i);
  sl_state_ttl_t ttl = {.ttl_ms = 100, .time = SL_TTL_EVENT_TIME};
  sl_state_desc_t dv = {.name = "v", .kind = SL_STATE_VALUE, .ttl = ttl};
  sl_state_desc_t dm = {.name = "m", .kind = SL_STATE_MAP, .ttl = ttl};
  sl_state_t *v = reg(&f, &dv), *m = reg(&f, &dm);
  char key[32];
  f.wm = 900;
  for (int i = 0; i < 100; i++) { /* the lagging partition's keys */
    fx_key(&f, (snprintf(key, sizeof(key), "lag-%d", i), key));
    f.k.ts = 1000;
    vput(&f, v, key);
    mput(&f, m, "x", key);
  }
  fx_key(&f, "lead"); /* far ahead */
  f.k.ts = 100000;
  for (int n = 0; n < 200; n++) {
    vput(&f, v, "x");
    mput(&f, m, "x", "x");
  }
  background_cleanup(f.be);
  for (int i = 0; i < 100; i++) {
    fx_key(&f, (snprintf(key, sizeof(key), "lag-%d", i), key));
    f.k.ts = 1050; /* still live at its own time */
    ck_assert_str_eq(vget(&f, v), key);
    ck_assert_str_eq(mget(&f, m, "x"), key);
  }
  /* Once the watermark passes their expiry, they are cleaned up. */
  f.wm = 1200;
  fx_key(&f, "lead");
  f.k.ts = 100000;
  for (int n = 0; n < 200; n++) {
    vput(&f, v, "x");
    mput(&f, m, "x", "x");
  }
  background_cleanup(f.be);
  ck_assert_uint_eq(stats(&f, v).entries, 1);
  ck_assert_uint_eq(stats(&f, m).entries, 1);
  fx_fini(&f);
}
END_TEST

/* Both backends, one random sequence of operations: every state kind, keys
 * and namespaces, TTL in both time domains with event times from several
 * partitions out of order and a watermark trailing them, incremental and
 * background cleanup. Every result must be the same on both. */
static uint64_t agree_rng;
static uint32_t agree_rnd(uint32_t n) {
  agree_rng ^= agree_rng << 13, agree_rng ^= agree_rng >> 7,
      agree_rng ^= agree_rng << 17;
  return (uint32_t)((agree_rng >> 11) % n);
}

typedef struct agree_states {
  sl_state_t *st[10];
} agree_states;

static void agree_register(fx *f, agree_states *a) {
  for (int t = 0; t < 2; t++) {
    sl_state_ttl_t ttl = {
        .ttl_ms = 50,
        .time = t ? SL_TTL_EVENT_TIME : SL_TTL_PROCESSING_TIME,
        .update = t ? SL_TTL_ON_CREATE_AND_WRITE : SL_TTL_ON_READ_AND_WRITE};
    char names[5][8];
    for (int k = 0; k < 5; k++)
      snprintf(names[k], sizeof(names[k]), "%c%d", "vlmra"[k], t);
    sl_state_desc_t d[5] = {
        {.name = names[0], .kind = SL_STATE_VALUE, .ttl = ttl},
        {.name = names[1], .kind = SL_STATE_LIST, .ttl = ttl},
        {.name = names[2], .kind = SL_STATE_MAP, .ttl = ttl},
        {.name = names[3],
         .kind = SL_STATE_REDUCING,
         .ttl = ttl,
         .value_size = 8,
         .reduce = sum_u64},
        avg_desc(names[4], true)};
    d[4].ttl = ttl;
    for (int k = 0; k < 5; k++)
      a->st[t * 5 + k] = reg(f, &d[k]);
  }
}

/* One operation on f; its result as text in out. */
static void agree_op(fx *f, agree_states *a, uint32_t op, uint32_t arg,
                     char *out, size_t n) {
  sl_state_t *st = a->st[op % 10];
  char v[16], mk[8];
  snprintf(v, sizeof(v), "%u", arg);
  snprintf(mk, sizeof(mk), "m%u", arg % 4);
  uint64_t x = arg;
  const void *p;
  size_t l;
  int rc = 0;
  out[0] = '\0';
  switch ((op / 10) % 4 * 5 + op % 5) {
  case 0: /* value */
    vput(f, st, v);
    break;
  case 5:
    snprintf(out, n, "%s", vget(f, st));
    break;
  case 10:
    rc = sl__state_clear(&f->k, st);
    break;
  case 15: {
    bool created;
    int err;
    uint64_t *c = sl__value_ptr(&f->k, st, 8, &created, &err);
    ck_assert_ptr_nonnull(c);
    snprintf(out, n, "%d/%" PRIu64, created, *c);
    *c = x;
    break;
  }
  case 1: /* list */
  case 16:
    rc = sl__list_add(&f->k, st, v, strlen(v));
    break;
  case 6:
    snprintf(out, n, "%s", lget(f, st));
    break;
  case 11: {
    const void *vals[2] = {v, "u"};
    size_t lens[2] = {strlen(v), 1};
    rc = sl__list_update(&f->k, st, vals, lens, arg % 3);
    break;
  }
  case 2: /* map */
    mput(f, st, mk, v);
    break;
  case 7:
    snprintf(out, n, "%s", mget(f, st, mk));
    break;
  case 12:
    rc = sl__map_remove(&f->k, st, mk, strlen(mk));
    snprintf(out, n, "%d", rc);
    break;
  case 17:
    snprintf(out, n, "%s", mget_all(f, st));
    break;
  case 3: /* reducing */
  case 13:
    rc = sl__reducing_add(&f->k, st, &x, 8);
    break;
  case 8:
  case 18:
    rc = sl__reducing_get(&f->k, st, &p, &l);
    if (rc == 1)
      snprintf(out, n, "%" PRIu64, *(const uint64_t *)p);
    break;
  case 4: /* aggregating */
  case 14:
    rc = sl__aggregating_add(&f->k, st, &x, 8);
    break;
  case 9:
  case 19:
    rc = sl__aggregating_get(&f->k, st, &p, &l);
    if (rc == 1)
      snprintf(out, n, "%.3f", *(const double *)p);
    break;
  }
  ck_assert_int_ge(rc, 0);
}

START_TEST(test_backends_agree_random) {
  enum { PARTS = 3, KEYS_N = 12, OPS = 20000 };
  fx f[2];
  agree_states a[2];
  for (int b = 0; b < 2; b++) {
    fx_init(&f[b], b);
    agree_register(&f[b], &a[b]);
  }
  agree_rng = 0x5eed;
  int64_t part_ts[PARTS], now = 0;
  for (int p = 0; p < PARTS; p++)
    part_ts[p] = p * 400; /* apart by more than the TTL */
  char r0[8192], r1[8192], key[16], ns[8];
  for (int i = 0; i < OPS; i++) {
    int p = (int)agree_rnd(PARTS);
    part_ts[p] += agree_rnd(8);
    int64_t ts = part_ts[p] - agree_rnd(20); /* out of order */
    int64_t wm = INT64_MAX;
    for (int q = 0; q < PARTS; q++)
      wm = part_ts[q] - 21 < wm ? part_ts[q] - 21 : wm;
    now += agree_rnd(3);
    snprintf(key, sizeof(key), "k%u", p + PARTS * agree_rnd(KEYS_N / PARTS));
    snprintf(ns, sizeof(ns), "%s", agree_rnd(4) ? "" : "w1");
    uint32_t op = agree_rnd(40), arg = agree_rnd(100);
    bool compact = agree_rnd(500) == 0;
    for (int b = 0; b < 2; b++) {
      f[b].now = now;
      f[b].wm = wm;
      fx_key(&f[b], key);
      fx_ns(&f[b], ns);
      f[b].k.ts = ts;
      agree_op(&f[b], &a[b], op, arg, b ? r1 : r0, sizeof(r0));
      if (compact)
        background_cleanup(f[b].be);
    }
    ck_assert_msg(strcmp(r0, r1) == 0,
                  "op %d (%u on %s/%s at %" PRId64 "): hashmap \"%s\", "
                  "rocksdb \"%s\"",
                  i, op, key, ns, ts, r0, r1);
  }
  for (int b = 0; b < 2; b++)
    fx_fini(&f[b]);
}
END_TEST

/* ---- the backend contract, for any backend ------------------------------ */

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

static void contract_values(const sl__backend_ops *ops) {
  sl__backend_conf bc = {
      .conf = g_conf, .kg_lo = 0, .kg_hi = 16, .max_par = 16};
  char err[128];
  sl__backend *be = ops->open(&bc, err, sizeof(err));
  ck_assert_ptr_nonnull(be);
  uint32_t a, b, again;
  ck_assert_int_eq(ops->register_state(be, "a", SL__BT_VALUE, &a), 0);
  ck_assert_int_eq(ops->register_state(be, "b", SL__BT_VALUE, &b), 0);
  ck_assert_int_eq(ops->register_state(be, "a", SL__BT_VALUE, &again), 0);
  ck_assert_uint_eq(again, a);
  ck_assert_int_eq(ops->register_state(be, "a", SL__BT_MAP, &again),
                   SL_ERR_INVAL);
  ck_assert_uint_eq(ops->state_count(be), 2);
  sl__skey k1 = skey(be, a, "key", ""), k2 = skey(be, a, "key", "ns");
  sl__skey k3 = skey(be, b, "key", ""), k4 = skey(be, a, "", "");
  void *p;
  size_t l;
  ck_assert_int_eq(ops->get(be, &k1, &p, &l, false), 0);
  ck_assert_int_eq(ops->slot(be, &k1, 5, &p), 0);
  ck_assert_mem_eq(p, "\0\0\0\0\0", 5); /* created zero-filled */
  memcpy(p, "hello", 5);
  ck_assert_int_eq(ops->slot(be, &k1, 5, &p), 1);
  ck_assert_mem_eq(p, "hello", 5);
  ck_assert_int_eq(ops->slot(be, &k1, 300, &p), 2); /* grows, keeps bytes */
  ck_assert_mem_eq(p, "hello", 5);
  ck_assert_int_eq(ops->slot(be, &k1, 3, &p), 2);
  ck_assert_mem_eq(p, "hel", 3);
  ck_assert_int_eq(ops->get(be, &k1, &p, &l, true), 1);
  ck_assert_uint_eq(l, 3);
  memcpy(p, "HEL", 3); /* for_write: modified in place */
  ck_assert_int_eq(ops->get(be, &k1, &p, &l, false), 1);
  ck_assert_mem_eq(p, "HEL", 3);
  ck_assert_int_eq(ops->get(be, &k2, &p, &l, false), 0);
  ck_assert_int_eq(ops->get(be, &k3, &p, &l, false), 0);
  ck_assert_int_eq(ops->slot(be, &k4, 0, &p), 0);
  ck_assert_int_eq(ops->get(be, &k4, &p, &l, false), 1);
  ck_assert_uint_eq(l, 0);
  sl__state_stats s;
  ops->stats(be, a, &s);
  ck_assert_uint_eq(s.entries, 2);
  ck_assert_uint_eq(s.bytes, 3 + 3);
  uint64_t epoch = be->epoch;
  ck_assert_int_eq(ops->del(be, &k1), 1);
  ck_assert_uint_ne(be->epoch, epoch); /* invalidates handed-out bytes */
  ck_assert_int_eq(ops->del(be, &k1), 0);
  ops->stats(be, a, &s);
  ck_assert_uint_eq(s.entries, 1);
  ck_assert_uint_eq(s.bytes, 0);
  ops->close(be);
}

static void contract_list_map(const sl__backend_ops *ops) {
  sl__backend_conf bc = {.conf = g_conf, .kg_lo = 0, .kg_hi = 4, .max_par = 4};
  char err[128];
  sl__backend *be = ops->open(&bc, err, sizeof(err));
  uint32_t ls, ms;
  ck_assert_int_eq(ops->register_state(be, "l", SL__BT_LIST, &ls), 0);
  ck_assert_int_eq(ops->register_state(be, "m", SL__BT_MAP, &ms), 0);
  sl__skey lk = skey(be, ls, "k", "");
  void *p;
  size_t l;
  ck_assert_int_eq(ops->list_append(be, &lk, 3, &p), 0);
  memcpy(p, "abc", 3);
  ck_assert_int_eq(ops->list_append(be, &lk, 9, &p), 1);
  memcpy(p, "123456789", 9);
  ck_assert_int_eq(ops->get(be, &lk, &p, &l, false), 1);
  ck_assert_uint_eq(l, sl__list_frame(3) + sl__list_frame(9));
  ck_assert_uint_eq(sl__list_elem_len(p), 3);
  ck_assert_mem_eq((char *)p + SL__LIST_HDR, "abc", 3);
  ck_assert_uint_eq(sl__list_elem_len((unsigned char *)p + 16), 9);
  ck_assert_mem_eq((char *)p + 16 + SL__LIST_HDR, "123456789", 9);

  sl__skey mk = skey(be, ms, "k", "");
  for (int i = 0; i < 50; i++) {
    char key[8];
    snprintf(key, sizeof(key), "m%d", i);
    ck_assert_int_eq(ops->map_slot(be, &mk, key, strlen(key),
                                   sl__hash64(key, strlen(key)), 4, &p),
                     0);
    memcpy(p, &i, 4);
  }
  sl__state_stats s;
  ops->stats(be, ms, &s);
  ck_assert_uint_eq(s.entries, 50);
  ck_assert_int_eq(
      ops->map_get(be, &mk, "m7", 2, sl__hash64("m7", 2), &p, &l, false), 1);
  ck_assert_int_eq(*(int *)p, 7);
  /* Iterate, removing every other entry and touching other state. */
  sl__map_cursor c = {.k = mk};
  ck_assert_int_eq(ops->map_iter(be, &c), 1);
  const void *key;
  size_t kl;
  int seen = 0, mask[50] = {0};
  while (ops->map_next(be, &c, &key, &kl, &p, &l, false) == 1) {
    int v = *(int *)p;
    ck_assert_int_eq(mask[v]++, 0);
    seen++;
    if (v % 2 == 0) {
      char copy[16]; /* sl__hash64 reads 16 bytes when kl is 16 */
      memcpy(copy, key, kl);
      ck_assert_int_eq(ops->map_remove(be, &mk, copy, kl, sl__hash64(copy, kl)),
                       1);
    }
    void *lp;
    ck_assert_int_ge(ops->list_append(be, &lk, 100, &lp), 0);
  }
  ck_assert_int_eq(seen, 50);
  ops->stats(be, ms, &s);
  ck_assert_uint_eq(s.entries, 25);
  /* Removing the last entry removes the map. */
  for (int i = 1; i < 50; i += 2) {
    char k2[8];
    snprintf(k2, sizeof(k2), "m%d", i);
    ck_assert_int_eq(
        ops->map_remove(be, &mk, k2, strlen(k2), sl__hash64(k2, strlen(k2))),
        1);
  }
  ck_assert_int_eq(ops->map_iter(be, &c), 0);
  ck_assert_int_eq(ops->map_next(be, &c, &key, &kl, &p, &l, false), 0);
  ck_assert_int_eq(ops->del(be, &lk), 1);
  ops->stats(be, ls, &s);
  ck_assert_uint_eq(s.entries, 0);
  ops->close(be);
}

typedef struct row {
  uint32_t state;
  char key[16], ns[16], mk[16], val[300];
  size_t kl, nl, mkl, vl;
  bool has_mk;
} row;
typedef struct rows {
  row r[64];
  int n;
} rows;

static int collect_fn(uint32_t state, const void *k, size_t kl, const void *ns,
                      size_t nl, const void *mk, size_t mkl, const void *val,
                      size_t len, void *opaque) {
  rows *rs = opaque;
  ck_assert_int_lt(rs->n, 64);
  row *r = &rs->r[rs->n++];
  memset(r, 0, sizeof(*r));
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

/* Snapshot one key group with kg_scan, restore it with insert into a new
 * backend, and get the same entries back. */
static void contract_kg(const sl__backend_ops *ops) {
  sl__backend_conf bc = {.conf = g_conf, .kg_lo = 0, .kg_hi = 8, .max_par = 8};
  char err[128];
  sl__backend *be = ops->open(&bc, err, sizeof(err));
  uint32_t v, l, m;
  ops->register_state(be, "v", SL__BT_VALUE, &v);
  ops->register_state(be, "l", SL__BT_LIST, &l);
  ops->register_state(be, "m", SL__BT_MAP, &m);
  void *p;
  char key[16];
  uint32_t kg0 = 0;
  for (int i = 0; i < 40; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    sl__skey k = skey(be, v, key, i % 2 ? "ns" : "");
    if (i == 0)
      kg0 = k.kg;
    ops->slot(be, &k, 4, &p);
    memcpy(p, "val!", 4);
    k.state = l;
    ops->list_append(be, &k, 2, &p);
    memcpy(p, "li", 2);
    k.state = m;
    ops->map_slot(be, &k, "mk", 2, sl__hash64("mk", 2), 1, &p);
    memcpy(p, "M", 1);
  }
  rows *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
  ck_assert_int_eq(ops->kg_scan(be, kg0, collect_fn, a), 0);
  ck_assert_int_gt(a->n, 0);
  ck_assert_int_eq(a->n % 3, 0);

  sl__backend *be2 = ops->open(&bc, err, sizeof(err));
  for (uint32_t id = 0; id < ops->state_count(be); id++) {
    const char *name;
    sl__btype t;
    uint32_t id2;
    ck_assert_int_eq(ops->state_info(be, id, &name, &t), 0);
    ck_assert_int_eq(ops->register_state(be2, name, t, &id2), 0);
    ck_assert_uint_eq(id2, id);
  }
  for (int i = 0; i < a->n; i++) {
    row *r = &a->r[i];
    ck_assert_int_eq(ops->insert(be2, r->state, kg0, r->key, r->kl, r->ns,
                                 r->nl, r->has_mk ? r->mk : NULL, r->mkl,
                                 r->val, r->vl),
                     0);
  }
  ck_assert_int_eq(ops->kg_scan(be2, kg0, collect_fn, b), 0);
  ck_assert_int_eq(b->n, a->n);
  qsort(a->r, (size_t)a->n, sizeof(row), cmp_row);
  qsort(b->r, (size_t)b->n, sizeof(row), cmp_row);
  ck_assert_mem_eq(a->r, b->r, (size_t)a->n * sizeof(row));
  /* Restored entries are found by ordinary lookups. */
  row *r = &a->r[0];
  sl__skey k = skey(be2, r->state, r->key, r->ns);
  size_t len;
  if (r->state != m)
    ck_assert_int_eq(ops->get(be2, &k, &p, &len, false), 1);
  /* Wrong key group or state are refused. */
  ck_assert_int_eq(ops->insert(be2, v, (kg0 + 1) % 8, r->key, r->kl, r->ns,
                               r->nl, NULL, 0, "x", 1),
                   SL_ERR_CORRUPT);
  ck_assert_int_eq(
      ops->insert(be2, 99, kg0, r->key, r->kl, "", 0, NULL, 0, "x", 1),
      SL_ERR_INVAL);
  ck_assert_int_eq(
      ops->insert(be2, m, kg0, r->key, r->kl, "", 0, NULL, 0, "x", 1),
      SL_ERR_INVAL);
  /* Dropping the key group of some states leaves the others' (group
   * mode: key group kg0 of another keyed stage is another task). */
  uint32_t n_states = ops->state_count(be2);
  bool *only_v = calloc(n_states, sizeof(*only_v));
  only_v[v] = true;
  ops->kg_drop(be2, kg0, only_v);
  free(only_v);
  b->n = 0;
  ck_assert_int_eq(ops->kg_scan(be2, kg0, collect_fn, b), 0);
  int others = 0;
  for (int i = 0; i < a->n; i++)
    others += a->r[i].state != v;
  ck_assert_int_gt(others, 0);
  ck_assert_int_eq(b->n, others);
  for (int i = 0; i < b->n; i++)
    ck_assert_uint_ne(b->r[i].state, v);
  /* Dropping a key group removes exactly its entries. */
  sl__state_stats s1, s2;
  ops->stats(be, v, &s1);
  ops->kg_drop(be, kg0, NULL);
  ops->stats(be, v, &s2);
  ck_assert_uint_eq(s1.entries - s2.entries, (uint64_t)a->n / 3);
  b->n = 0;
  ck_assert_int_eq(ops->kg_scan(be, kg0, collect_fn, b), 0);
  ck_assert_int_eq(b->n, 0);
  free(a);
  free(b);
  ops->close(be);
  ops->close(be2);
}

static bool odd_first(const void *val, size_t len, void *opaque) {
  (void)opaque;
  return len > 0 && (((const unsigned char *)val)[0] & 1);
}

static void contract_cleanup_and_growth(const sl__backend_ops *ops) {
  /* One key group, so one table grows through many incremental
   * migrations while entries are looked up and deleted. */
  sl__backend_conf bc = {.conf = g_conf, .kg_lo = 0, .kg_hi = 1, .max_par = 1};
  char err[128];
  sl__backend *be = ops->open(&bc, err, sizeof(err));
  uint32_t v, l, m;
  ops->register_state(be, "v", SL__BT_VALUE, &v);
  ops->register_state(be, "l", SL__BT_LIST, &l);
  ops->register_state(be, "m", SL__BT_MAP, &m);
  const int N = 200000;
  char key[16];
  void *p;
  size_t len;
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof(key), "%d", i);
    sl__skey k = skey(be, v, key, "");
    ck_assert_int_eq(ops->slot(be, &k, 4, &p), 0);
    memcpy(p, &i, 4);
    if (i % 3 == 0) {
      snprintf(key, sizeof(key), "%d", i / 2);
      sl__skey d = skey(be, v, key, "");
      ck_assert_int_eq(ops->del(be, &d), 1);
    }
    if (i % 7 == 0) {
      snprintf(key, sizeof(key), "%d", i / 7);
      sl__skey g = skey(be, v, key, "");
      ck_assert_int_ge(ops->get(be, &g, &p, &len, false), 0);
    }
  }
  /* Exactly the keys never deleted remain. */
  char *gone = calloc((size_t)N, 1);
  for (int i = 0; i < N; i += 3)
    gone[i / 2] = 1;
  uint64_t live = 0;
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof(key), "%d", i);
    sl__skey k = skey(be, v, key, "");
    int rc = ops->get(be, &k, &p, &len, false);
    if (rc != !gone[i] || (rc && memcmp(p, &i, 4)))
      ck_abort_msg("key %d: rc %d, gone %d", i, rc, gone[i]);
    live += rc;
  }
  sl__state_stats s;
  ops->stats(be, v, &s);
  ck_assert_uint_eq(s.entries, live);
  free(gone);

  if (!ops->cleanup) { /* expires by other means (test_ttl_*) */
    ops->close(be);
    return;
  }
  /* cleanup removes exactly the items the predicate names, eventually
   * visiting everything. */
  for (int i = 0; i < 100; i++) {
    snprintf(key, sizeof(key), "c%d", i);
    sl__skey k = skey(be, l, key, "");
    for (unsigned char c = 0; c < 4; c++) {
      ops->list_append(be, &k, 1, &p);
      *(unsigned char *)p = c;
    }
    k.state = m;
    for (unsigned char c = 0; c < 4; c++) {
      char mk[2] = {(char)('a' + c), 0};
      ops->map_slot(be, &k, mk, 1, sl__hash64(mk, 1), 1, &p);
      *(unsigned char *)p = c;
    }
  }
  size_t removed = 0;
  for (int r = 0; r < 400; r++)
    removed += ops->cleanup(be, l, 5, odd_first, NULL) +
               ops->cleanup(be, m, 5, odd_first, NULL);
  ck_assert_uint_eq(removed, 400);
  sl__skey k = skey(be, l, "c5", "");
  ck_assert_int_eq(ops->get(be, &k, &p, &len, false), 1);
  ck_assert_uint_eq(len, 2 * sl__list_frame(1));
  ck_assert_uint_eq(((unsigned char *)p)[SL__LIST_HDR], 0);
  ck_assert_uint_eq(((unsigned char *)p)[16 + SL__LIST_HDR], 2);
  ops->stats(be, m, &s);
  ck_assert_uint_eq(s.entries, 200);
  ops->close(be);
}

static bool every_item(const void *val, size_t len, void *opaque) {
  (void)val, (void)len, (void)opaque;
  return true;
}

/* A full cleanup (budget SIZE_MAX, as a snapshot runs it) visits every
 * key group once and returns: with 128 key groups it removes every item,
 * with 4 it ends (budget * HM_SCAN_FACTOR must not wrap around). */
static void contract_full_cleanup(const sl__backend_ops *ops, uint32_t n_kg) {
  if (!ops->cleanup)
    return;
  sl__backend_conf bc = {
      .conf = g_conf, .kg_lo = 0, .kg_hi = n_kg, .max_par = n_kg};
  char err[128];
  sl__backend *be = ops->open(&bc, err, sizeof(err));
  ck_assert_msg(be != NULL, "%s", err);
  uint32_t v;
  ops->register_state(be, "v", SL__BT_VALUE, &v);
  char key[16];
  void *p;
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof(key), "%d", i);
    sl__skey k = skey(be, v, key, "");
    ck_assert_int_eq(ops->slot(be, &k, 4, &p), 0);
    memcpy(p, &i, 4);
  }
  ck_assert_uint_eq(ops->cleanup(be, v, SIZE_MAX, every_item, NULL), 1000);
  sl__state_stats s;
  ops->stats(be, v, &s);
  ck_assert_uint_eq(s.entries, 0);
  ops->close(be);
}

START_TEST(test_contract_full_cleanup) {
  contract_full_cleanup(backends[_i], 128);
  contract_full_cleanup(backends[_i], 4);
}
END_TEST

START_TEST(test_contract_values) {
  contract_values(backends[_i]);
}
END_TEST
START_TEST(test_contract_list_map) {
  contract_list_map(backends[_i]);
}
END_TEST
START_TEST(test_contract_kg) {
  contract_kg(backends[_i]);
}
END_TEST
START_TEST(test_contract_cleanup_growth) {
  contract_cleanup_and_growth(backends[_i]);
}
END_TEST

/* The hashmap's probing under adversarial hashes: every key's hash has
 * one of two home slots (the first slot, or the last so its cluster wraps
 * around the end of the array and the mirrored control bytes) and one of
 * three tags, so clusters run over many 16-slot groups and most control
 * bytes match. Values of two lengths (inline and out of line), with and
 * without a namespace, are created, resized, read and deleted at random
 * while the table grows (incrementally beyond 1024 slots), and every
 * answer is compared with a model. */
#define CL_KEYS 3000
START_TEST(test_hashmap_clusters) {
  sl__backend_conf bc = {.conf = g_conf, .kg_lo = 0, .kg_hi = 1, .max_par = 1};
  char err[128];
  sl__backend *be = sl__hashmap_ops.open(&bc, err, sizeof(err));
  ck_assert_ptr_nonnull(be);
  const sl__backend_ops *ops = be->ops;
  uint32_t id;
  ck_assert_int_eq(ops->register_state(be, "v", SL__BT_VALUE, &id), 0);
  static char keys[CL_KEYS][8];
  static uint64_t model[CL_KEYS]; /* value; 0: absent */
  static size_t mlen[CL_KEYS];
  const char ns[8] = "window01";
  uint64_t rng = 12345, n_live = 0;
  for (uint32_t i = 0; i < CL_KEYS; i++)
    memcpy(keys[i], &(uint64_t){0x6b00000000000000ULL | i}, 8);
  for (uint32_t step = 0; step < 60000; step++) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    uint32_t i = (uint32_t)(rng >> 33) % CL_KEYS;
    /* Namespaced entries are other keys (ids with bit 0 set). */
    bool with_ns = i & 1;
    sl__skey k = {.state = id,
                  .kg = 0,
                  .hash = ((i % 2) ? 0xffffffff00000000ULL : 0) |
                          (uint64_t)(i % 3) << 16 | (i & 0xffff),
                  .key = keys[i],
                  .key_len = 8,
                  .ns = with_ns ? ns : NULL,
                  .ns_len = with_ns ? 8 : 0};
    unsigned op = (unsigned)(rng >> 20) % 8;
    void *p;
    size_t l;
    if (op < 4) { /* write, sometimes with the other length */
      size_t len = (rng >> 40) % 4 ? 8 : 16;
      int rc = ops->slot(be, &k, len, &p);
      ck_assert_int_eq(rc, !model[i] ? 0 : mlen[i] == len ? 1 : 2);
      if (model[i]) {
        uint64_t got;
        memcpy(&got, p, 8);
        ck_assert_uint_eq(got, model[i]);
      } else {
        n_live++;
      }
      model[i] = step + 1;
      mlen[i] = len;
      memcpy(p, &model[i], 8);
    } else if (op < 6) {
      int rc = ops->get(be, &k, &p, &l, false);
      ck_assert_int_eq(rc, model[i] != 0);
      if (rc) {
        uint64_t got;
        memcpy(&got, p, 8);
        ck_assert_uint_eq(got, model[i]);
        ck_assert_uint_eq(l, mlen[i]);
      }
    } else {
      ck_assert_int_eq(ops->del(be, &k), model[i] != 0);
      n_live -= model[i] != 0;
      model[i] = 0;
    }
  }
  sl__state_stats st;
  ops->stats(be, id, &st);
  ck_assert_uint_eq(st.entries, n_live);
  ops->close(be);
}
END_TEST

/* ---- Direct probes ------------------------------------------------------
 * The state layer probes the hashmap's tables itself for the per-record
 * case (8-byte keys, no namespace, value-typed states without TTL) and
 * calls the backend for everything else. Random accesses of 8-byte keys
 * over few key groups (tables of thousands of entries, so they grow and
 * migrate incrementally) against a model: values, lengths that change
 * (resized, moved out of line and back), clears, reducing state; and, on
 * a backend with incremental snapshots, after each round but the first
 * (which creates the keys) every key written or cleared since kg_clean
 * is reported by kg_changes, and no other. */
typedef struct dmodel {
  uint64_t val[4]; /* the value bytes (up to 32) */
  size_t len;
  bool live;
  uint64_t sum; /* the reducing state, 0: absent */
  bool touched; /* written or cleared since the last kg_clean */
} dmodel;

typedef struct dchanges {
  uint32_t v_id, r_id;
  uint8_t *seen; /* per key: reported */
  uint32_t n_keys;
} dchanges;

static int dchange_fn(uint32_t state, const void *k, size_t kl, const void *ns,
                      size_t nl, const void *mk, size_t mkl, const void *val,
                      size_t len, void *opaque) {
  (void)ns, (void)mk, (void)mkl, (void)val, (void)len;
  dchanges *c = opaque;
  uint64_t key;
  ck_assert_uint_eq(kl, 8);
  ck_assert_uint_eq(nl, 0);
  memcpy(&key, k, 8);
  ck_assert_uint_lt(key, c->n_keys);
  if (state == c->v_id)
    c->seen[key] |= 1;
  return 0;
}

/* Makes the 8-byte *key current, as key_by would. */
static void dkey(fx *f, const uint64_t *key) {
  f->k.key = key;
  f->k.key_len = 8;
  f->k.hash = sl__hash64(key, 8);
  f->k.kg = sl__key_group(f->k.hash, f->K);
  f->k.ns = NULL;
  f->k.ns_len = 0;
}

START_TEST(test_direct_probes_agree_with_model) {
  fx f;
  memset(&f, 0, sizeof(f));
  f.K = 4;
  f.be = open_be(_i, f.K, 0, f.K);
  f.ks = sl__kstate_new(f.be, true, "op", fx_now, &f);
  ck_assert_ptr_nonnull(f.ks);
  f.k.state = f.ks;
  f.wm = SL_TS_MIN;
  f.k.wm = &f.wm;
  sl_state_t *v = reg_kind(&f, "v", SL_STATE_VALUE);
  sl_state_desc_t rd = {.name = "r",
                        .kind = SL_STATE_REDUCING,
                        .reduce = sum_u64,
                        .value_size = 8};
  sl_state_t *r = reg(&f, &rd);
  const uint32_t N = 6000;
  dmodel *m = calloc(N, sizeof(*m));
  dchanges ch = {sl__state_id(v), sl__state_id(r), calloc(N, 1), N};
  ck_assert(m && ch.seen);
  bool incr = f.be->ops->kg_clean != NULL;
  uint64_t rng = 7, key;
  int err = 0;
  for (int round = 0; round < 6; round++) {
    if (incr)
      for (uint32_t kg = 0; kg < f.K; kg++)
        ck_assert_int_eq(f.be->ops->kg_clean(f.be, kg), 0);
    for (uint32_t i = 0; i < N; i++)
      m[i].touched = false;
    /* The first round mostly creates; later ones mostly find, and change
     * fewer keys than a key group's log keeps (half its entries). */
    for (uint32_t op = 0; op < (round ? 1500u : 3 * N); op++) {
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      key = round ? (rng >> 8) % N : (op < N ? op : (rng >> 8) % N);
      dkey(&f, &key);
      dmodel *d = &m[key];
      unsigned what = (unsigned)(rng >> 40) % 16;
      if (what < 8) { /* the per-record case: an 8-byte counter */
        bool created;
        uint64_t *p = sl__value_ptr(&f.k, v, 8, &created, &err);
        ck_assert_ptr_nonnull(p);
        bool fresh = !d->live || d->len != 8;
        ck_assert_int_eq(created, fresh);
        if (!fresh)
          ck_assert_uint_eq(*p, d->val[0]);
        else
          ck_assert_uint_eq(*p, 0);
        d->val[0] = *p + 1;
        *p = d->val[0];
        d->len = 8, d->live = true, d->touched = true;
      } else if (what < 11) { /* another length: 0 to 32 bytes */
        size_t len = (size_t)(rng >> 20) % 33;
        uint64_t buf[4];
        for (int j = 0; j < 4; j++)
          buf[j] = rng * (uint64_t)(j + 1);
        ck_assert_int_eq(sl__value_put(&f.k, v, buf, len), 0);
        memcpy(d->val, buf, sizeof(buf));
        d->len = len, d->live = true, d->touched = true;
      } else if (what < 14) {
        const void *p;
        size_t l;
        int rc = sl__value_get(&f.k, v, &p, &l);
        ck_assert_int_eq(rc, d->live);
        if (rc) {
          ck_assert_uint_eq(l, d->len);
          ck_assert(memcmp(p, d->val, l) == 0);
        }
      } else if (what < 15) {
        uint64_t x = rng >> 3;
        ck_assert_int_eq(sl__reducing_add(&f.k, r, &x, 8), 0);
        d->sum += x;
        const void *p;
        size_t l;
        ck_assert_int_eq(sl__reducing_get(&f.k, r, &p, &l), 1);
        ck_assert_uint_eq(l, 8);
        ck_assert_uint_eq(*(const uint64_t *)p, d->sum);
      } else {
        ck_assert_int_eq(sl__state_clear(&f.k, v), 0);
        d->touched |= d->live;
        d->live = false;
      }
    }
    uint64_t live = 0;
    for (uint32_t i = 0; i < N; i++)
      live += m[i].live;
    ck_assert_uint_eq(stats(&f, v).entries, live);
    if (!incr || round == 0)
      continue;
    memset(ch.seen, 0, N);
    for (uint32_t kg = 0; kg < f.K; kg++)
      ck_assert_int_eq(f.be->ops->kg_changes(f.be, kg, dchange_fn, &ch), 0);
    for (uint32_t i = 0; i < N; i++)
      if ((ch.seen[i] & 1) != m[i].touched)
        ck_abort_msg("round %d key %u: touched %d, reported %d", round, i,
                     m[i].touched, ch.seen[i] & 1);
  }
  /* A dropped key group's tables are emptied in place: its keys are
   * found by neither path, and are created again; the others are as
   * they were. */
  f.be->ops->kg_drop(f.be, 1, NULL);
  for (key = 0; key < N; key++) {
    dkey(&f, &key);
    bool dropped = f.k.kg == 1, created;
    const void *p;
    size_t l;
    ck_assert_int_eq(sl__value_get(&f.k, v, &p, &l), m[key].live && !dropped);
    uint64_t *q = sl__value_ptr(&f.k, v, 8, &created, &err);
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(created, dropped || !m[key].live || m[key].len != 8);
  }
  free(ch.seen);
  free(m);
  sl__kstate_destroy(f.ks);
}
END_TEST

static Suite *state_suite(void) {
  Suite *s = suite_create("state");
  TCase *kinds = tcase_create("kinds");
  tcase_add_loop_test(kinds, test_register, 0, N_BACKENDS);
  tcase_add_loop_test(kinds, test_value_isolation, 0, N_BACKENDS);
  tcase_add_loop_test(kinds, test_value_ptr, 0, N_BACKENDS);
  tcase_add_loop_test(kinds, test_list, 0, N_BACKENDS);
  tcase_add_loop_test(kinds, test_map, 0, N_BACKENDS);
  tcase_add_loop_test(kinds, test_reducing, 0, N_BACKENDS);
  tcase_add_loop_test(kinds, test_aggregating, 0, N_BACKENDS);
  tcase_add_loop_test(kinds, test_merge_namespaces, 0, N_BACKENDS);
  tcase_add_loop_test(kinds, test_direct_probes_agree_with_model, 0,
                      N_BACKENDS);
  suite_add_tcase(s, kinds);

  TCase *scale = tcase_create("scale");
  tcase_set_timeout(scale, 300);
  tcase_add_test(scale, test_kg_range);
  tcase_add_loop_test(scale, test_many_keys, 0, N_BACKENDS);
  tcase_add_test(scale, test_hashmap_clusters);
  tcase_add_loop_test(scale, test_partial_range, 0, N_BACKENDS);
  suite_add_tcase(s, scale);

  TCase *ttl = tcase_create("ttl");
  tcase_add_test(ttl, test_ttl_expired_formula);
  tcase_add_loop_test(ttl, test_ttl_create_write_never_expired, 0, N_BACKENDS);
  tcase_add_loop_test(ttl, test_ttl_read_write_return_expired, 0, N_BACKENDS);
  tcase_add_loop_test(ttl, test_ttl_event_time, 0, N_BACKENDS);
  tcase_add_loop_test(ttl, test_ttl_huge, 0, N_BACKENDS);
  tcase_add_loop_test(ttl, test_ttl_value_ptr, 0, N_BACKENDS);
  tcase_add_loop_test(ttl, test_ttl_list_map_reducing, 0, N_BACKENDS);
  tcase_add_loop_test(ttl, test_ttl_list_map_return_once, 0, N_BACKENDS);
  tcase_add_loop_test(ttl, test_ttl_incremental_cleanup, 0, N_BACKENDS);
  tcase_add_loop_test(ttl, test_ttl_event_cleanup_waits_for_watermark, 0,
                      N_BACKENDS);
  tcase_add_test(ttl, test_backends_agree_random);
  suite_add_tcase(s, ttl);

  TCase *contract = tcase_create("contract");
  tcase_set_timeout(contract, 300);
  tcase_add_loop_test(contract, test_contract_values, 0, N_BACKENDS);
  tcase_add_loop_test(contract, test_contract_list_map, 0, N_BACKENDS);
  tcase_add_loop_test(contract, test_contract_kg, 0, N_BACKENDS);
  tcase_add_loop_test(contract, test_contract_cleanup_growth, 0, N_BACKENDS);
  tcase_add_loop_test(contract, test_contract_full_cleanup, 0, N_BACKENDS);
  suite_add_tcase(s, contract);
  return s;
}

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

int main(void) {
  char err[256];
  snprintf(g_dir, sizeof(g_dir), "/tmp/sluice-test-state-XXXXXX");
  if (!mkdtemp(g_dir) || !(g_conf = sl_conf_new()) ||
      sl_conf_set(g_conf, "state.dir", g_dir, err, sizeof(err))) {
    perror("test state.dir");
    return EXIT_FAILURE;
  }
  int rc = tu_run(state_suite());
  nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  sl_conf_destroy(g_conf);
  return rc;
}
