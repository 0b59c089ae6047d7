/* SPDX-License-Identifier: Apache-2.0 */
/* Timer service: one timer per (domain, key, ns, ts), delete, firing order
 * (by timestamp, ties in insertion order) against a sorted reference,
 * timers registered while firing, foreach/restore, long keys, a 10^6
 * timer run that bounds time and memory, and the owner's recheck of
 * timers whose coarse slot comes up. */
#include "core/hash.h"
#include "sluice/common.h"
#include "time/timers.h"

#include <check.h>

#include "check_main.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define EV SL__TIMER_EVENT
#define PT SL__TIMER_PROC
#define MAXPAR 128

/* ---- helpers ------------------------------------------------------------ */

/* Services with the coarse level on (sl__timers_coarse), but in the
 * test case "level off", whose fixture clears it: results are the same
 * either way. */
static bool level_off;
static void set_level_off(void) {
  level_off = true;
}
static void clear_level_off(void) {
  level_off = false;
}

static struct sl__timers *svc(void) {
  struct sl__timers *t = NULL;
  ck_assert_int_eq(sl__timers_new(&t), SL_OK);
  ck_assert_ptr_nonnull(t);
  if (!level_off) {
    sl__timers_coarse(t, EV);
    sl__timers_coarse(t, PT);
  }
  return t;
}

static uint64_t khash(const void *k, size_t kl) {
  return sl__hash64(k, kl);
}

static void add_b(struct sl__timers *t, int d, int64_t ts, const void *k,
                  size_t kl, const void *ns, size_t nl) {
  uint64_t h = khash(k, kl);
  ck_assert_int_eq(
      sl__timers_add(t, d, ts, h, sl__key_group(h, MAXPAR), k, kl, ns, nl),
      SL_OK);
}

static int del_b(struct sl__timers *t, int d, int64_t ts, const void *k,
                 size_t kl, const void *ns, size_t nl) {
  uint64_t h = khash(k, kl);
  return sl__timers_del(t, d, ts, h, sl__key_group(h, MAXPAR), k, kl, ns, nl);
}

/* String key and namespace ("" = empty namespace). */
static void add_s(struct sl__timers *t, int d, int64_t ts, const char *k,
                  const char *ns) {
  add_b(t, d, ts, k, strlen(k), ns, strlen(ns));
}

static int del_s(struct sl__timers *t, int d, int64_t ts, const char *k,
                 const char *ns) {
  return del_b(t, d, ts, k, strlen(k), ns, strlen(ns));
}

/* Pops every timer <= upto and renders them as "ts:key/ns;" in firing
 * order, checking hash and kg on the way. */
static const char *pop_all(struct sl__timers *t, int d, int64_t upto, char *buf,
                           size_t cap) {
  sl__timer_view v;
  size_t o = 0;
  buf[0] = '\0';
  while (sl__timers_pop(t, d, upto, &v) == 1) {
    ck_assert_uint_eq(v.hash, khash(v.key, v.key_len));
    ck_assert_uint_eq(v.kg, sl__key_group(v.hash, MAXPAR));
    ck_assert_int_le(v.ts, upto);
    o += (size_t)snprintf(buf + o, cap - o, "%lld:%.*s/%.*s;", (long long)v.ts,
                          (int)v.key_len, (const char *)v.key, (int)v.ns_len,
                          (const char *)v.ns);
    ck_assert_uint_lt(o, cap);
  }
  return buf;
}

static uint64_t rng_state;
static uint64_t rnd(void) {
  /* xorshift64*: fixed seed per test, so failures reproduce. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dULL;
}

/* ---- dedup and identity ---------------------------------------------- */

START_TEST(test_dedup_same_key_ns_ts) {
  struct sl__timers *t = svc();
  char buf[256];
  for (int i = 0; i < 3; i++)
    add_s(t, EV, 100, "alice", "w1");
  ck_assert_uint_eq(sl__timers_count(t, EV), 1);
  ck_assert_str_eq(pop_all(t, EV, 1000, buf, sizeof buf), "100:alice/w1;");
  ck_assert_uint_eq(sl__timers_count(t, EV), 0);
  /* Popped: registering it again is a new timer. */
  add_s(t, EV, 100, "alice", "w1");
  ck_assert_uint_eq(sl__timers_count(t, EV), 1);
  sl__timers_free(t);
}
END_TEST

START_TEST(test_distinct_keys_namespaces_ts) {
  struct sl__timers *t = svc();
  char buf[512];
  add_s(t, EV, 100, "alice", "");
  add_s(t, EV, 100, "bob", "");
  add_s(t, EV, 100, "alice", "w1");
  add_s(t, EV, 100, "alice", "w2");
  add_s(t, EV, 101, "alice", "");
  /* Same bytes split differently between key and namespace. */
  add_s(t, EV, 100, "ali", "cew1");
  /* Again, all no-ops. */
  add_s(t, EV, 100, "alice", "w1");
  add_s(t, EV, 100, "bob", "");
  ck_assert_uint_eq(sl__timers_count(t, EV), 6);
  ck_assert_str_eq(pop_all(t, EV, SL_TS_MAX, buf, sizeof buf),
                   "100:alice/;100:bob/;100:alice/w1;100:alice/w2;"
                   "100:ali/cew1;101:alice/;");
  sl__timers_free(t);
}
END_TEST

START_TEST(test_same_hash_different_key) {
  /* Dedup compares bytes, not just the hash the caller supplied. */
  struct sl__timers *t = svc();
  ck_assert_int_eq(sl__timers_add(t, EV, 5, 42, 1, "a", 1, NULL, 0), SL_OK);
  ck_assert_int_eq(sl__timers_add(t, EV, 5, 42, 1, "b", 1, NULL, 0), SL_OK);
  ck_assert_int_eq(sl__timers_add(t, EV, 5, 42, 1, "a", 1, NULL, 0), SL_OK);
  ck_assert_uint_eq(sl__timers_count(t, EV), 2);
  ck_assert_int_eq(sl__timers_del(t, EV, 5, 42, 1, "b", 1, NULL, 0), 1);
  sl__timer_view v;
  ck_assert_int_eq(sl__timers_pop(t, EV, 5, &v), 1);
  ck_assert_mem_eq(v.key, "a", 1);
  ck_assert_int_eq(sl__timers_pop(t, EV, 5, &v), 0);
  sl__timers_free(t);
}
END_TEST

/* ---- delete -------------------------------------------------------------- */

START_TEST(test_delete) {
  struct sl__timers *t = svc();
  char buf[256];
  add_s(t, EV, 10, "k", "");
  add_s(t, EV, 20, "k", "");
  add_s(t, EV, 30, "k", "");
  ck_assert_int_eq(del_s(t, EV, 20, "k", ""), 1);
  ck_assert_uint_eq(sl__timers_count(t, EV), 2);
  /* Absent: never added, wrong ns, wrong domain, already deleted. */
  ck_assert_int_eq(del_s(t, EV, 25, "k", ""), 0);
  ck_assert_int_eq(del_s(t, EV, 10, "k", "x"), 0);
  ck_assert_int_eq(del_s(t, PT, 10, "k", ""), 0);
  ck_assert_int_eq(del_s(t, EV, 20, "k", ""), 0);
  ck_assert_uint_eq(sl__timers_count(t, EV), 2);
  /* Deleting the earliest one moves peek. */
  int64_t ts = 0;
  ck_assert_int_eq(del_s(t, EV, 10, "k", ""), 1);
  ck_assert(sl__timers_peek(t, EV, &ts));
  ck_assert_int_eq(ts, 30);
  /* Re-add after delete. */
  add_s(t, EV, 20, "k", "");
  add_s(t, EV, 10, "k", "");
  ck_assert_uint_eq(sl__timers_count(t, EV), 3);
  ck_assert_str_eq(pop_all(t, EV, 100, buf, sizeof buf), "10:k/;20:k/;30:k/;");
  /* Deleting a fired timer is a no-op. */
  ck_assert_int_eq(del_s(t, EV, 30, "k", ""), 0);
  ck_assert(!sl__timers_peek(t, EV, &ts));
  sl__timers_free(t);
}
END_TEST

/* ---- order against a reference ----------------------------------------- */

typedef struct ref {
  int64_t ts;
  uint32_t key;
  uint32_t ns;
  uint64_t order; /* insertion order of the first add */
  int deleted;
} ref;

static int ref_cmp(const void *a, const void *b) {
  const ref *x = a, *y = b;
  if (x->ts != y->ts)
    return x->ts < y->ts ? -1 : 1;
  return (x->order > y->order) - (x->order < y->order);
}

static void kname(char *k, uint32_t i) {
  snprintf(k, 9, "k%07u", (unsigned)i);
}

/* The reference's own dedup: a chained hash over (ts, key, ns). */
#define REF_BUCKETS 65536
static size_t ref_bucket(int64_t ts, uint32_t key, uint32_t ns) {
  return sl__mix64((uint64_t)ts ^ ((uint64_t)key << 32) ^ ns) % REF_BUCKETS;
}

/* Index of the live reference timer equal to (ts, key, ns), or SIZE_MAX. */
static size_t ref_live(const ref *r, const size_t *head, const size_t *next,
                       int64_t ts, uint32_t key, uint32_t ns) {
  for (size_t j = head[ref_bucket(ts, key, ns)]; j != SIZE_MAX; j = next[j])
    if (!r[j].deleted && r[j].ts == ts && r[j].key == key && r[j].ns == ns)
      return j;
  return SIZE_MAX;
}

/* Adds n random timers (duplicates and deletions included) and checks the
 * firing order, ties in first-insertion order, against qsort. */
static void random_order_run(uint64_t seed, size_t n, uint32_t nkeys,
                             int64_t span) {
  struct sl__timers *t = svc();
  rng_state = seed;
  ref *r = calloc(n, sizeof *r);
  size_t *next = malloc(n * sizeof *next);
  size_t *head = malloc(REF_BUCKETS * sizeof *head);
  ck_assert_ptr_nonnull(r);
  ck_assert_ptr_nonnull(next);
  ck_assert_ptr_nonnull(head);
  for (size_t b = 0; b < REF_BUCKETS; b++)
    head[b] = SIZE_MAX;
  size_t nr = 0, live = 0;
  char k[16];
  for (size_t i = 0; i < n; i++) {
    uint64_t x = rnd();
    uint32_t key = (uint32_t)(x % nkeys);
    int64_t ts = (int64_t)((x >> 32) % (uint64_t)span) - span / 4;
    uint32_t ns = (uint32_t)((x >> 20) & 1);
    kname(k, key);
    add_b(t, EV, ts, k, 8, &ns, ns ? sizeof ns : 0);
    size_t b = ref_bucket(ts, key, ns);
    if (ref_live(r, head, next, ts, key, ns) == SIZE_MAX) {
      r[nr] = (ref){ts, key, ns, i, 0};
      next[nr] = head[b];
      head[b] = nr;
      nr++;
      live++;
    }
    /* Now and then delete an earlier timer: that one, or one equal to it
     * added after it was deleted, or none (then delete is a no-op). */
    if (nr && rnd() % 8 == 0) {
      size_t j = rnd() % nr;
      size_t l = ref_live(r, head, next, r[j].ts, r[j].key, r[j].ns);
      kname(k, r[j].key);
      int got = del_b(t, EV, r[j].ts, k, 8, &r[j].ns, r[j].ns ? 4 : 0);
      ck_assert_int_eq(got, (l == SIZE_MAX ? 0 : 1));
      if (l != SIZE_MAX) {
        r[l].deleted = 1;
        live--;
      }
    }
    ck_assert_uint_eq(sl__timers_count(t, EV), live);
  }
  qsort(r, nr, sizeof *r, ref_cmp);
  sl__timer_view v;
  size_t j = 0;
  while (sl__timers_pop(t, EV, SL_TS_MAX, &v) == 1) {
    while (j < nr && r[j].deleted)
      j++;
    ck_assert_uint_lt(j, nr);
    kname(k, r[j].key);
    ck_assert_int_eq(v.ts, r[j].ts);
    ck_assert_uint_eq(v.key_len, 8);
    char got[9] = {0};
    memcpy(got, v.key, 8);
    ck_assert_str_eq(got, k);
    ck_assert_uint_eq(v.ns_len, r[j].ns ? 4 : 0);
    j++;
  }
  while (j < nr && r[j].deleted)
    j++;
  ck_assert_uint_eq(j, nr);
  ck_assert_uint_eq(sl__timers_count(t, EV), 0);
  free(r);
  free(next);
  free(head);
  sl__timers_free(t);
}

START_TEST(test_random_order_vs_reference) {
  /* Few keys and a narrow span: many duplicates and equal timestamps. */
  random_order_run(0x5eed0001, 20000, 50, 200);
  random_order_run(0x5eed0002, 20000, 10000, 1000000);
  /* Nearly all timestamps distinct. */
  random_order_run(0x5eed0003, 20000, 100000, (int64_t)1 << 50);
}
END_TEST

START_TEST(test_mass_delete_then_reuse) {
  /* Timestamps whose timers were all deleted must not linger: peek skips
   * them, and they can be registered again. */
  struct sl__timers *t = svc();
  char buf[256];
  int64_t ts = 0;
  for (int i = 0; i < 5000; i++) {
    add_s(t, EV, 1000 - i, "a", "");
    add_s(t, EV, 1000 - i, "b", "");
  }
  for (int i = 0; i < 5000; i++) {
    ck_assert_int_eq(del_s(t, EV, 1000 - i, "a", ""), 1);
    if (i != 2500)
      ck_assert_int_eq(del_s(t, EV, 1000 - i, "b", ""), 1);
  }
  ck_assert_uint_eq(sl__timers_count(t, EV), 1);
  ck_assert(sl__timers_peek(t, EV, &ts));
  ck_assert_int_eq(ts, -1500);
  add_s(t, EV, 7, "c", "");
  add_s(t, EV, -4000, "d", "");
  ck_assert_str_eq(pop_all(t, EV, SL_TS_MAX, buf, sizeof buf),
                   "-4000:d/;-1500:b/;7:c/;");
  ck_assert(!sl__timers_peek(t, EV, &ts));
  sl__timers_free(t);
}
END_TEST

/* ---- upto, peek, domains ---------------------------------------------- */

START_TEST(test_pop_respects_upto) {
  struct sl__timers *t = svc();
  char buf[256];
  int64_t ts = 0;
  ck_assert(!sl__timers_peek(t, EV, &ts));
  add_s(t, EV, 30, "c", "");
  add_s(t, EV, 10, "a", "");
  add_s(t, EV, 20, "b", "");
  ck_assert_str_eq(pop_all(t, EV, 9, buf, sizeof buf), "");
  ck_assert_str_eq(pop_all(t, EV, 20, buf, sizeof buf), "10:a/;20:b/;");
  ck_assert_uint_eq(sl__timers_count(t, EV), 1);
  ck_assert(sl__timers_peek(t, EV, &ts));
  ck_assert_int_eq(ts, 30);
  ck_assert_str_eq(pop_all(t, EV, 29, buf, sizeof buf), "");
  ck_assert_str_eq(pop_all(t, EV, 30, buf, sizeof buf), "30:c/;");
  /* Extreme timestamps. */
  add_s(t, EV, SL_TS_MAX, "max", "");
  add_s(t, EV, SL_TS_MIN, "min", "");
  ck_assert_str_eq(pop_all(t, EV, SL_TS_MIN, buf, sizeof buf),
                   "-9223372036854775808:min/;");
  ck_assert_str_eq(pop_all(t, EV, SL_TS_MAX - 1, buf, sizeof buf), "");
  ck_assert_str_eq(pop_all(t, EV, SL_TS_MAX, buf, sizeof buf),
                   "9223372036854775807:max/;");
  sl__timers_free(t);
}
END_TEST

START_TEST(test_domains_independent) {
  struct sl__timers *t = svc();
  char buf[256];
  int64_t ts = 0;
  add_s(t, EV, 10, "k", "");
  add_s(t, PT, 10, "k", "");
  add_s(t, PT, 5, "p", "");
  ck_assert_uint_eq(sl__timers_count(t, EV), 1);
  ck_assert_uint_eq(sl__timers_count(t, PT), 2);
  ck_assert(sl__timers_peek(t, EV, &ts));
  ck_assert_int_eq(ts, 10);
  ck_assert(sl__timers_peek(t, PT, &ts));
  ck_assert_int_eq(ts, 5);
  ck_assert_str_eq(pop_all(t, PT, 100, buf, sizeof buf), "5:p/;10:k/;");
  ck_assert_uint_eq(sl__timers_count(t, EV), 1);
  add_s(t, PT, 10, "k", "");
  ck_assert_int_eq(del_s(t, EV, 10, "k", ""), 1);
  ck_assert_uint_eq(sl__timers_count(t, PT), 1);
  ck_assert_str_eq(pop_all(t, EV, 100, buf, sizeof buf), "");
  ck_assert_str_eq(pop_all(t, PT, 100, buf, sizeof buf), "10:k/;");
  /* Bad domains are rejected, not crashed on. */
  sl__timer_view v;
  ck_assert_int_eq(sl__timers_add(t, 2, 1, 0, 0, "k", 1, NULL, 0),
                   SL_ERR_INVAL);
  ck_assert_int_eq(sl__timers_add(t, -1, 1, 0, 0, "k", 1, NULL, 0),
                   SL_ERR_INVAL);
  ck_assert_int_eq(sl__timers_del(t, 2, 1, 0, 0, "k", 1, NULL, 0),
                   SL_ERR_INVAL);
  ck_assert_int_eq(sl__timers_pop(t, 2, 1, &v), SL_ERR_INVAL);
  ck_assert(!sl__timers_peek(t, 2, &ts));
  ck_assert_uint_eq(sl__timers_count(t, 2), 0);
  sl__timers_free(t);
  sl__timers_free(NULL);
}
END_TEST

/* ---- registering while firing -------------------------------------------- */

START_TEST(test_add_while_popping) {
  /* As on_timer does: register timers for the current key, whose bytes
   * are the view's own, while the firing loop runs. */
  struct sl__timers *t = svc();
  char buf[512];
  size_t o = 0;
  static const char longkey[] = "a-key-longer-than-the-inline-bytes-0123456";
  add_s(t, EV, 10, "k", "");
  add_s(t, EV, 20, longkey, "ns");
  add_s(t, EV, 20, "z", "");
  sl__timer_view v;
  while (sl__timers_pop(t, EV, 100, &v) == 1) {
    o += (size_t)snprintf(buf + o, sizeof buf - o, "%lld:%.*s;",
                          (long long)v.ts, (int)v.key_len, (const char *)v.key);
    if (v.ts == 10) {
      ck_assert_int_eq(sl__timers_add(t, EV, 15, v.hash, v.kg, v.key, v.key_len,
                                      v.ns, v.ns_len),
                       SL_OK);
      /* In the past: fires next, as in Flink. */
      ck_assert_int_eq(sl__timers_add(t, EV, 5, v.hash, v.kg, v.key, v.key_len,
                                      v.ns, v.ns_len),
                       SL_OK);
      ck_assert_int_eq(sl__timers_add(t, EV, 200, v.hash, v.kg, v.key,
                                      v.key_len, v.ns, v.ns_len),
                       SL_OK);
      /* The timer that is firing is no longer pending. */
      ck_assert_int_eq(sl__timers_del(t, EV, 10, v.hash, v.kg, v.key, v.key_len,
                                      v.ns, v.ns_len),
                       0);
    }
    if (v.ts == 20 && v.ns_len == 2 && memcmp(v.ns, "ns", 2) == 0) {
      /* Many adds (growing every table) must not move the view. */
      for (int i = 0; i < 5000; i++)
        ck_assert_int_eq(sl__timers_add(t, EV, 1000 + i, v.hash, v.kg, v.key,
                                        v.key_len, v.ns, v.ns_len),
                         SL_OK);
      ck_assert_int_eq(
          sl__timers_add(t, EV, 20, v.hash, v.kg, v.key, v.key_len, "n2", 2),
          SL_OK);
      ck_assert_mem_eq(v.key, longkey, sizeof longkey - 1);
      ck_assert_mem_eq(v.ns, "ns", 2);
    }
    ck_assert_uint_lt(o, sizeof buf);
  }
  ck_assert_str_eq(buf, "10:k;5:k;15:k;20:a-key-longer-than-the-inline-bytes-"
                        "0123456;20:z;20:a-key-longer-than-the-inline-bytes-"
                        "0123456;");
  ck_assert_uint_eq(sl__timers_count(t, EV), 5001);
  ck_assert(sl__timers_peek(t, EV, &v.ts));
  ck_assert_int_eq(v.ts, 200);
  sl__timers_free(t);
}
END_TEST

/* ---- a randomised model -------------------------------------------------- */

/* The model: every pending timer with a sequence number; the next timer to
 * fire is the one with the least (ts, seq) of its domain, as "ties in
 * insertion order" means. */
typedef struct mtimer {
  int d;
  int64_t ts;
  char key[48];
  size_t kl;
  char ns[8];
  size_t nl;
  uint64_t seq;
} mtimer;

typedef struct model {
  mtimer *m;
  size_t n, cap;
  uint64_t seq;
} model;

static ptrdiff_t model_find(const model *md, int d, int64_t ts, const char *k,
                            size_t kl, const char *ns, size_t nl) {
  for (size_t i = 0; i < md->n; i++) {
    const mtimer *x = &md->m[i];
    if (x->d == d && x->ts == ts && x->kl == kl && x->nl == nl &&
        memcmp(x->key, k, kl) == 0 && memcmp(x->ns, ns, nl) == 0)
      return (ptrdiff_t)i;
  }
  return -1;
}

static void model_add(model *md, int d, int64_t ts, const char *k, size_t kl,
                      const char *ns, size_t nl) {
  if (model_find(md, d, ts, k, kl, ns, nl) >= 0)
    return;
  if (md->n == md->cap) {
    md->cap = md->cap ? md->cap * 2 : 64;
    md->m = realloc(md->m, md->cap * sizeof *md->m);
    ck_assert_ptr_nonnull(md->m);
  }
  mtimer *x = &md->m[md->n++];
  *x = (mtimer){.d = d, .ts = ts, .kl = kl, .nl = nl, .seq = md->seq++};
  memcpy(x->key, k, kl);
  memcpy(x->ns, ns, nl);
}

static ptrdiff_t model_next(const model *md, int d, int64_t upto) {
  ptrdiff_t best = -1;
  for (size_t i = 0; i < md->n; i++) {
    const mtimer *x = &md->m[i];
    if (x->d != d || x->ts > upto)
      continue;
    if (best < 0 || x->ts < md->m[best].ts ||
        (x->ts == md->m[best].ts && x->seq < md->m[best].seq))
      best = (ptrdiff_t)i;
  }
  return best;
}

static size_t model_count(const model *md, int d) {
  size_t c = 0;
  for (size_t i = 0; i < md->n; i++)
    c += md->m[i].d == d;
  return c;
}

static uint64_t mrng;
static uint32_t mrand(uint32_t n) {
  mrng ^= mrng << 13;
  mrng ^= mrng >> 7;
  mrng ^= mrng << 17;
  return (uint32_t)(mrng % n);
}

/* A random key (8 short ones, some longer than the inline bytes) and a
 * random namespace (mostly none). */
static size_t mkey(char *k) {
  uint32_t r = mrand(12);
  if (r < 8)
    return (size_t)snprintf(k, 48, "k%u", (unsigned)r);
  return (size_t)snprintf(k, 48, "a-key-longer-than-twenty-four-bytes-%u",
                          (unsigned)r);
}

static size_t mns(char *ns) {
  uint32_t r = mrand(6);
  if (r < 4)
    return 0;
  ns[0] = (char)('u' + r);
  return 1;
}

static int restore_fn(const sl__timer_view *v, int domain, void *opaque) {
  return sl__timers_add(opaque, domain, v->ts, v->hash, v->kg, v->key,
                        v->key_len, v->ns, v->ns_len);
}

/* Random operations against the model: adds (many duplicates and equal
 * timestamps), deletes, firing up to a moving time with timers added and
 * deleted from inside the firing loop (the current key, at the firing
 * timestamp too), and restores into a new service through foreach. Counts
 * and the earliest timestamp are compared every `every` operations:
 * counting deduplicates what registrations left unchecked, so rare counts
 * leave duplicates for deletes, firing and foreach to meet. */
static void model_run_d(uint64_t seed, int ops, uint32_t span, int every,
                        bool dels) {
  mrng = seed;
  model md = {0};
  struct sl__timers *t = svc();
  int64_t now[SL__TIMER_DOMAINS] = {0, 0};
  for (int op = 0; op < ops; op++) {
    int d = mrand(4) == 0 ? PT : EV;
    char k[48], ns[8];
    size_t kl = mkey(k), nl = mns(ns);
    int64_t ts = now[d] + (int64_t)mrand(span);
    uint32_t r = mrand(100);
    if (r < 55 || (!dels && r < 80)) {
      model_add(&md, d, ts, k, kl, ns, nl);
      add_b(t, d, ts, k, kl, ns, nl);
    } else if (r < 80) {
      ptrdiff_t i = model_find(&md, d, ts, k, kl, ns, nl);
      if (i < 0 && md.n && mrand(2)) {
        /* Mostly delete timers that exist. */
        i = (ptrdiff_t)mrand((uint32_t)md.n);
        mtimer *x = &md.m[i];
        d = x->d;
        ts = x->ts;
        kl = x->kl;
        nl = x->nl;
        memcpy(k, x->key, kl);
        memcpy(ns, x->ns, nl);
      }
      ck_assert_int_eq(del_b(t, d, ts, k, kl, ns, nl), i >= 0);
      if (i >= 0)
        md.m[i] = md.m[--md.n];
    } else if (r < 97) {
      now[d] += (int64_t)mrand(span / 2 + 1);
      sl__timer_view v;
      int got;
      while ((got = sl__timers_pop(t, d, now[d], &v)) == 1) {
        ptrdiff_t i = model_next(&md, d, now[d]);
        ck_assert_int_ge(i, 0);
        mtimer x = md.m[i];
        ck_assert_int_eq(v.ts, x.ts);
        ck_assert_uint_eq(v.key_len, x.kl);
        ck_assert_mem_eq(v.key, x.key, x.kl);
        ck_assert_uint_eq(v.ns_len, x.nl);
        if (x.nl)
          ck_assert_mem_eq(v.ns, x.ns, x.nl);
        ck_assert_uint_eq(v.hash, khash(x.key, x.kl));
        md.m[i] = md.m[--md.n];
        uint32_t w = mrand(8);
        if (w == 0) {
          /* The popped timer again, at its own timestamp: fires again in
           * this loop, after the timers of that timestamp added before. */
          model_add(&md, d, v.ts, x.key, x.kl, x.ns, x.nl);
          ck_assert_int_eq(sl__timers_add(t, d, v.ts, v.hash, v.kg, v.key,
                                          v.key_len, v.ns, v.ns_len),
                           SL_OK);
        } else if (w == 1) {
          int64_t ts2 = v.ts + (int64_t)mrand(span);
          model_add(&md, d, ts2, x.key, x.kl, x.ns, x.nl);
          ck_assert_int_eq(sl__timers_add(t, d, ts2, v.hash, v.kg, v.key,
                                          v.key_len, v.ns, v.ns_len),
                           SL_OK);
        } else if (w == 2 && dels) {
          int64_t ts2 = v.ts + (int64_t)mrand(4);
          ptrdiff_t j = model_find(&md, d, ts2, x.key, x.kl, x.ns, x.nl);
          ck_assert_int_eq(sl__timers_del(t, d, ts2, v.hash, v.kg, v.key,
                                          v.key_len, v.ns, v.ns_len),
                           j >= 0);
          if (j >= 0)
            md.m[j] = md.m[--md.n];
        }
        /* The view is intact after adds and deletes. */
        ck_assert_mem_eq(v.key, x.key, x.kl);
      }
      ck_assert_int_eq(got, 0);
      ck_assert_int_lt(model_next(&md, d, now[d]), 0);
    } else {
      struct sl__timers *t2 = svc();
      ck_assert_int_eq(sl__timers_foreach(t, restore_fn, t2), SL_OK);
      sl__timers_free(t);
      t = t2;
    }
    if (op % every)
      continue;
    ck_assert_uint_eq(sl__timers_count(t, EV), model_count(&md, EV));
    ck_assert_uint_eq(sl__timers_count(t, PT), model_count(&md, PT));
    int64_t pk;
    for (int dd = 0; dd < SL__TIMER_DOMAINS; dd++) {
      ptrdiff_t i = model_next(&md, dd, SL_TS_MAX);
      ck_assert_int_eq(sl__timers_peek(t, dd, &pk), i >= 0);
      if (i >= 0)
        ck_assert_int_eq(pk, md.m[i].ts);
    }
  }
  /* Drain both domains against the model. */
  for (int d = 0; d < SL__TIMER_DOMAINS; d++) {
    sl__timer_view v;
    while (sl__timers_pop(t, d, SL_TS_MAX, &v) == 1) {
      ptrdiff_t i = model_next(&md, d, SL_TS_MAX);
      ck_assert_int_ge(i, 0);
      ck_assert_int_eq(v.ts, md.m[i].ts);
      ck_assert_mem_eq(v.key, md.m[i].key, md.m[i].kl);
      md.m[i] = md.m[--md.n];
    }
  }
  ck_assert_uint_eq(md.n, 0);
  free(md.m);
  sl__timers_free(t);
}

static void model_run(uint64_t seed, int ops, uint32_t span, int every) {
  model_run_d(seed, ops, span, every, true);
}

START_TEST(test_random_ops_vs_model) {
  /* Narrow spans: buckets with many timers, deletes and re-adds (their
   * arrays compact, their tables fill with fired slots); wide: mostly one
   * timer per timestamp. */
  for (uint64_t s = 1; s <= 6; s++) {
    model_run(0xa11ce000 + s, 20000, 3, 1);
    model_run(0xb0b00000 + s, 20000, 40, 1);
    model_run(0xcafe0000 + s, 5000, 100000, 1);
    model_run(0xd00d0000 + s, 20000, 3, 997);
    model_run(0xf00d0000 + s, 20000, 40, 991);
  }
}
END_TEST

/* The same without deletes, which keep the coarse level of timestamps
 * ahead on (the first delete of a domain turns it off): timers appended
 * to coarse slots, deduplicated there in passes (timestamp included),
 * moved to their own buckets when the slot comes first, and flushed by
 * foreach; spans from one slot to many. */
START_TEST(test_random_ops_no_deletes) {
  for (uint64_t s = 1; s <= 4; s++) {
    model_run_d(0x5107e000 + s, 20000, 3, 1, false);
    model_run_d(0x5107f000 + s, 20000, 40, 1, false);
    model_run_d(0x51080000 + s, 20000, 1500, 1, false);
    model_run_d(0x51081000 + s, 5000, 100000, 1, false);
    model_run_d(0x51082000 + s, 20000, 3, 997, false);
    model_run_d(0x51083000 + s, 20000, 700, 991, false);
  }
}
END_TEST

/* Timers of one coarse slot registered many times over, without deletes:
 * the coarse array is deduplicated in passes, where the same key at
 * another timestamp of the slot is another timer. Each fires once, by
 * timestamp, ties in order of first registration (against the model). */
START_TEST(test_coarse_repeats) {
  enum { KEYS = 20, TSS = 10, ROUNDS = 60 };
  struct sl__timers *t = svc();
  model md = {0};
  char k[16];
  for (int r = 0; r < ROUNDS; r++)
    for (int i = 0; i < KEYS; i++) {
      int64_t ts = 5000 + (i * 3 + r) % TSS;
      size_t kl = (size_t)snprintf(k, sizeof k, "k%d", i);
      model_add(&md, EV, ts, k, kl, "", 0);
      add_b(t, EV, ts, k, kl, "", 0);
    }
  ck_assert_uint_eq(sl__timers_count(t, EV), KEYS * TSS);
  sl__timer_view v;
  while (sl__timers_pop(t, EV, SL_TS_MAX, &v) == 1) {
    ptrdiff_t i = model_next(&md, EV, SL_TS_MAX);
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(v.ts, md.m[i].ts);
    ck_assert_uint_eq(v.key_len, md.m[i].kl);
    ck_assert_mem_eq(v.key, md.m[i].key, md.m[i].kl);
    md.m[i] = md.m[--md.n];
  }
  ck_assert_uint_eq(md.n, 0);
  free(md.m);
  sl__timers_free(t);
}
END_TEST

/* sl__timers_ahead() called before each pop: what it describes, in
 * order, is the firing order of the due timers, each once, nothing past
 * upto, and it covers the next dist timers at every call. */
START_TEST(test_ahead_describes_next_timers) {
  enum { DIST = 4, N = 300 };
  struct sl__timers *t = svc();
  char k[16];
  uint64_t fired[N], told[2 * N];
  int64_t fired_ts[N];
  size_t told_at[N + 1]; /* n_told before pop i */
  for (int i = 0; i < N; i++) {
    /* Bucket sizes 1 to 9, some timestamps past upto, some repeats. */
    int64_t ts = 1000 + (i * 7919) % 97 * 3;
    snprintf(k, sizeof k, "k%d", i % 250);
    add_s(t, EV, ts, k, "");
    add_s(t, PT, ts, k, "");
  }
  int64_t upto = 1000 + 60 * 3;
  size_t n_told = 0, n_fired = 0;
  sl__timer_view v;
  for (;;) {
    sl__timer_run run[2];
    size_t nr = sl__timers_ahead(t, EV, upto, DIST, run);
    ck_assert_uint_le(nr, 2);
    for (size_t r = 0; r < nr; r++)
      for (size_t i = 0; i < run[r].n; i++) {
        ck_assert_uint_lt(n_told, 2 * N);
        uint64_t h;
        uint32_t g;
        memcpy(&h, (const char *)run[r].hash + i * run[r].stride, sizeof h);
        memcpy(&g, (const char *)run[r].kg + i * run[r].stride, sizeof g);
        ck_assert_uint_eq(g, sl__key_group(h, MAXPAR));
        told[n_told++] = h;
      }
    told_at[n_fired] = n_told;
    if (sl__timers_pop(t, EV, upto, &v) != 1)
      break;
    ck_assert_uint_lt(n_fired, N);
    fired_ts[n_fired] = v.ts;
    fired[n_fired++] = v.hash;
  }
  size_t n_due = n_fired;
  ck_assert_uint_gt(n_due, 2 * DIST);
  /* Before pop i: the timers from i on of the next two timestamps. */
  for (size_t i = 0; i < n_due; i++) {
    size_t j = i, two = 0;
    while (j < n_due && j < i + DIST &&
           (two += j == i || fired_ts[j] != fired_ts[j - 1]) <= 2)
      j++;
    ck_assert_uint_ge(told_at[i], j);
  }
  /* The last calls describe what is left, then nothing. */
  ck_assert_uint_eq(n_told, n_due);
  for (size_t i = 0; i < n_due; i++)
    ck_assert_uint_eq(told[i], fired[i]);
  sl__timers_free(t);
}
END_TEST

/* Registrations that repeat pending timers many times over, in buckets
 * large enough to be deduplicated in passes: each timer fires once, in the
 * order of its first registration; a delete removes every repetition; a
 * timer re-registered after its delete fires in its new place. */
START_TEST(test_repeated_registrations) {
  enum { KEYS = 300, ROUNDS = 40 };
  struct sl__timers *t = svc();
  char k[16];
  for (int r = 0; r < ROUNDS; r++)
    for (int i = 0; i < KEYS; i++) {
      /* Keys in a different order each round: first registrations in
       * order 0, 1, 2, ... */
      int key = r ? (i * 7 + r) % KEYS : i;
      snprintf(k, sizeof k, "k%d", key);
      add_s(t, EV, 100, k, "");
      add_s(t, EV, 200, k, "ns");
    }
  /* Keys 0..9 deleted at 100 (a bucket never counted: the delete meets its
   * repetitions), then 5 re-registered. */
  for (int i = 0; i < 10; i++) {
    snprintf(k, sizeof k, "k%d", i);
    ck_assert_int_eq(del_s(t, EV, 100, k, ""), 1);
    ck_assert_int_eq(del_s(t, EV, 100, k, ""), 0);
  }
  add_s(t, EV, 100, "k5", "");
  add_s(t, EV, 100, "k5", "");
  sl__timer_view v;
  int n = 0;
  while (sl__timers_pop(t, EV, 100, &v) == 1) {
    int want = n < KEYS - 10 ? n + 10 : 5;
    snprintf(k, sizeof k, "k%d", want);
    ck_assert_int_eq(v.ts, 100);
    ck_assert_uint_eq(v.key_len, strlen(k));
    ck_assert_mem_eq(v.key, k, strlen(k));
    n++;
  }
  ck_assert_int_eq(n, KEYS - 10 + 1);
  ck_assert_uint_eq(sl__timers_count(t, EV), KEYS);
  n = 0;
  while (sl__timers_pop(t, EV, 200, &v) == 1) {
    snprintf(k, sizeof k, "k%d", n);
    ck_assert_mem_eq(v.key, k, strlen(k));
    ck_assert_mem_eq(v.ns, "ns", 2);
    n++;
  }
  ck_assert_int_eq(n, KEYS);
  ck_assert_uint_eq(sl__timers_count(t, EV), 0);
  sl__timers_free(t);
}
END_TEST

/* ---- foreach and restore ------------------------------------------------- */

typedef struct visit {
  char buf[1024];
  size_t o;
  int calls;
  int stop_at;
  struct sl__timers *into; /* restore target, or NULL */
} visit;

static int visit_fn(const sl__timer_view *v, int domain, void *opaque) {
  visit *c = opaque;
  c->o += (size_t)snprintf(
      c->buf + c->o, sizeof c->buf - c->o, "%c%lld:%.*s/%.*s;",
      domain == EV ? 'e' : 'p', (long long)v->ts, (int)v->key_len,
      (const char *)v->key, (int)v->ns_len, (const char *)v->ns);
  ck_assert_uint_eq(v->hash, khash(v->key, v->key_len));
  if (c->into)
    ck_assert_int_eq(sl__timers_add(c->into, domain, v->ts, v->hash, v->kg,
                                    v->key, v->key_len, v->ns, v->ns_len),
                     SL_OK);
  return ++c->calls == c->stop_at ? 7 : 0;
}

START_TEST(test_foreach_and_restore) {
  struct sl__timers *t = svc();
  visit c;
  memset(&c, 0, sizeof c);
  ck_assert_int_eq(sl__timers_foreach(t, visit_fn, &c), SL_OK);
  ck_assert_int_eq(c.calls, 0);

  add_s(t, EV, 30, "b", "");
  add_s(t, EV, 10, "a", "w");
  add_s(t, PT, 7, "c", "");
  add_s(t, EV, 30, "a", ""); /* tie with b, added later */
  add_s(t, EV, 20, "gone", "");
  add_s(t, PT, 3, "d", "");
  ck_assert_int_eq(del_s(t, EV, 20, "gone", ""), 1);

  memset(&c, 0, sizeof c);
  c.into = svc();
  ck_assert_int_eq(sl__timers_foreach(t, visit_fn, &c), SL_OK);
  ck_assert_str_eq(c.buf, "e10:a/w;e30:b/;e30:a/;p3:d/;p7:c/;");
  /* foreach changes nothing. */
  ck_assert_uint_eq(sl__timers_count(t, EV), 3);
  ck_assert_uint_eq(sl__timers_count(t, PT), 2);

  /* The restored copy fires exactly like the original. */
  char a[256], b[256];
  for (int d = EV; d <= PT; d++) {
    ck_assert_uint_eq(sl__timers_count(c.into, d), sl__timers_count(t, d));
    ck_assert_str_eq(pop_all(c.into, d, SL_TS_MAX, a, sizeof a),
                     pop_all(t, d, SL_TS_MAX, b, sizeof b));
  }
  sl__timers_free(c.into);

  /* A non-zero return stops the iteration and is passed on. */
  add_s(t, EV, 1, "x", "");
  add_s(t, EV, 2, "y", "");
  add_s(t, PT, 3, "z", "");
  memset(&c, 0, sizeof c);
  c.stop_at = 2;
  ck_assert_int_eq(sl__timers_foreach(t, visit_fn, &c), 7);
  ck_assert_str_eq(c.buf, "e1:x/;e2:y/;");
  sl__timers_free(t);
}
END_TEST

typedef struct kgvisit {
  uint32_t first, last;
  size_t n;
} kgvisit;

static int kg_fn(const sl__timer_view *v, int domain, void *opaque) {
  kgvisit *c = opaque;
  (void)domain;
  ck_assert_uint_ge(v->kg, c->first);
  ck_assert_uint_le(v->kg, c->last);
  c->n++;
  return 0;
}

START_TEST(test_foreach_key_group_range) {
  struct sl__timers *t = svc();
  size_t per_kg[MAXPAR] = {0};
  char k[16];
  for (uint32_t i = 0; i < 2000; i++) {
    kname(k, i);
    uint64_t h = khash(k, 8);
    add_b(t, i % 3 ? EV : PT, i, k, 8, NULL, 0);
    per_kg[sl__key_group(h, MAXPAR)]++;
  }
  uint32_t ranges[][2] = {{0, 0}, {0, 63}, {64, 127}, {10, 20}, {0, 127}};
  for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
    kgvisit c = {ranges[r][0], ranges[r][1], 0};
    size_t want = 0;
    for (uint32_t g = c.first; g <= c.last; g++)
      want += per_kg[g];
    ck_assert_int_eq(sl__timers_foreach_kg(t, c.first, c.last, kg_fn, &c),
                     SL_OK);
    ck_assert_uint_eq(c.n, want);
  }
  sl__timers_free(t);
}
END_TEST

/* ---- long keys, empty namespaces ------------------------------------------
 */

START_TEST(test_long_keys_and_empty_namespace) {
  /* Lengths around the inline limit and the largest size class. */
  static const size_t lens[] = {0,  1,  8,  15,  16,   23,   24,   25,
                                31, 32, 33, 100, 4095, 4096, 4097, 70000};
  enum { NL = sizeof lens / sizeof lens[0] };
  struct sl__timers *t = svc();
  unsigned char *key[NL];
  for (size_t i = 0; i < NL; i++) {
    key[i] = malloc(lens[i] + 1);
    ck_assert_ptr_nonnull(key[i]);
    for (size_t j = 0; j < lens[i]; j++)
      key[i][j] = (unsigned char)(i * 31 + j * 7);
  }
  const char *nss[] = {"", "n", "a-namespace-of-some-length"};
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < NL; i++)
      for (int s = 0; s < 3; s++) {
        add_b(t, EV, (int64_t)i, key[i], lens[i], nss[s], strlen(nss[s]));
        add_b(t, EV, (int64_t)i, key[i], lens[i], nss[s], strlen(nss[s]));
        if (s == 0)
          add_b(t, EV, (int64_t)i, key[i], lens[i], NULL, 0); /* same */
        /* Deleted and re-added: storage is recycled. */
        ck_assert_int_eq(
            del_b(t, EV, (int64_t)i, key[i], lens[i], nss[s], strlen(nss[s])),
            1);
        add_b(t, EV, (int64_t)i, key[i], lens[i], nss[s], strlen(nss[s]));
      }
    ck_assert_uint_eq(sl__timers_count(t, EV), NL * 3);
    sl__timer_view v;
    for (size_t i = 0; i < NL; i++)
      for (int s = 0; s < 3; s++) {
        ck_assert_int_eq(sl__timers_pop(t, EV, SL_TS_MAX, &v), 1);
        ck_assert_int_eq(v.ts, (int64_t)i);
        ck_assert_uint_eq(v.key_len, lens[i]);
        ck_assert_ptr_nonnull(v.key);
        ck_assert_ptr_nonnull(v.ns);
        if (lens[i])
          ck_assert_mem_eq(v.key, key[i], lens[i]);
        ck_assert_uint_eq(v.ns_len, strlen(nss[s]));
        if (v.ns_len)
          ck_assert_mem_eq(v.ns, nss[s], v.ns_len);
      }
    ck_assert_int_eq(sl__timers_pop(t, EV, SL_TS_MAX, &v), 0);
  }
  /* Freed with long keys still pending (checked by the leak sanitizer). */
  for (size_t i = 0; i < NL; i++)
    add_b(t, PT, 1, key[i], lens[i], "", 0);
  sl__timers_free(t);
  for (size_t i = 0; i < NL; i++)
    free(key[i]);
}
END_TEST

/* ---- scale ----------------------------------------------------------------
 */

START_TEST(test_million_timers) {
  enum { N = 1000000, KEYS = 100000 };
  struct sl__timers *t = svc();
  uint64_t *h = malloc(KEYS * sizeof *h);
  char(*k)[8] = malloc(KEYS * sizeof *k);
  ck_assert_ptr_nonnull(h);
  ck_assert_ptr_nonnull(k);
  for (uint32_t i = 0; i < KEYS; i++) {
    char tmp[16];
    kname(tmp, i);
    memcpy(k[i], tmp, 8);
    h[i] = khash(k[i], 8);
  }
  /* Timestamp i / 10 for key i % KEYS: a million distinct timers. */
  for (uint32_t i = 0; i < N; i++) {
    uint32_t key = (i * 7919u) % KEYS;
    ck_assert_int_eq(sl__timers_add(t, EV, (int64_t)(N - i) / 10, h[key],
                                    sl__key_group(h[key], MAXPAR), k[key], 8,
                                    NULL, 0),
                     SL_OK);
  }
  ck_assert_uint_eq(sl__timers_count(t, EV), N);
  sl__timer_view v;
  int64_t last = SL_TS_MIN;
  size_t n = 0;
  while (sl__timers_pop(t, EV, SL_TS_MAX, &v) == 1) {
    ck_assert_int_ge(v.ts, last);
    last = v.ts;
    n++;
  }
  ck_assert_uint_eq(n, N);
  /* Speed is measured by bench/timers.c, not here. */
  free(h);
  free(k);
  sl__timers_free(t);
}
END_TEST

/* A checkpoint's iteration between registrations of the same slots: the
 * timers fire in the order of their first registration, each once, as
 * without it (with the coarse level on, foreach moves the slots' timers
 * to their timestamps' buckets, and later ones follow them there). */
START_TEST(test_registrations_after_foreach_keep_order) {
  struct sl__timers *t = svc();
  add_s(t, EV, 5000, "a", "");
  add_s(t, EV, 5001, "c", "");
  add_s(t, EV, 9000, "e", "");
  visit c;
  memset(&c, 0, sizeof c);
  ck_assert_int_eq(sl__timers_foreach(t, visit_fn, &c), SL_OK);
  ck_assert_str_eq(c.buf, "e5000:a/;e5001:c/;e9000:e/;");
  add_s(t, EV, 5000, "b", "");
  add_s(t, EV, 5000, "a", ""); /* pending already */
  add_s(t, EV, 5001, "d", "");
  add_s(t, EV, 9000, "f", "");
  memset(&c, 0, sizeof c);
  ck_assert_int_eq(sl__timers_foreach(t, visit_fn, &c), SL_OK);
  add_s(t, EV, 5001, "c", ""); /* pending already */
  add_s(t, EV, 5002, "g", "");
  char buf[256];
  ck_assert_str_eq(pop_all(t, EV, SL_TS_MAX, buf, sizeof buf),
                   "5000:a/;5000:b/;5001:c/;5001:d/;5002:g/;9000:e/;9000:f/;");
  sl__timers_free(t);
}
END_TEST

/* ---- recheck ------------------------------------------------------------
 * An owner whose timers are chains, as event-time sessions keep them:
 * each key has a deadline that only moves later until it fires, and one
 * pending timer at or before it. A timer that pops before its key's
 * deadline registers the key again at the deadline (an early firing); one
 * that pops at it fires for real. With sl__timers_recheck the service
 * moves early timers on when their coarse slot comes up; what fires for
 * real, and when, must be the same as without. */
#define CH_KEYS 64
typedef struct chain {
  struct sl__timers *t;
  int64_t dl[CH_KEYS]; /* INT64_MIN: none */
  size_t dues, pf_n, early;
  int64_t *log; /* real firings: ts * CH_KEYS + key */
  size_t nlog, caplog;
} chain;

static void ch_key(char *k, int i) {
  char b[16];
  snprintf(b, sizeof b, "k%07d", i);
  memcpy(k, b, 8);
}

static int ch_key_of(const sl__timer_view *v) {
  char b[9];
  ck_assert_uint_eq(v->key_len, 8);
  memcpy(b, v->key, 8);
  b[8] = '\0';
  return atoi(b + 1);
}

static int64_t ch_due(void *opaque, const sl__timer_view *v) {
  chain *c = opaque;
  c->dues++;
  int64_t d = c->dl[ch_key_of(v)];
  return d > v->ts ? d : v->ts;
}

static void ch_pf(void *opaque, const uint64_t *hash, const uint32_t *kg,
                  size_t stride, size_t n) {
  chain *c = opaque;
  for (size_t i = 0; i < n; i++) {
    uint64_t h;
    uint32_t g;
    memcpy(&h, (const char *)hash + i * stride, sizeof h);
    memcpy(&g, (const char *)kg + i * stride, sizeof g);
    ck_assert_uint_eq(g, sl__key_group(h, MAXPAR));
  }
  c->pf_n += n;
}

static void ch_new(chain *c, bool recheck) {
  memset(c, 0, sizeof *c);
  c->t = svc();
  /* Never NULL: qsort and the compares take no null pointer. */
  c->caplog = 256;
  c->log = malloc(c->caplog * sizeof *c->log);
  ck_assert_ptr_nonnull(c->log);
  for (int k = 0; k < CH_KEYS; k++)
    c->dl[k] = INT64_MIN;
  if (recheck)
    sl__timers_recheck(c->t, EV, ch_due, ch_pf, c);
}

static void ch_add(chain *c, int k, int64_t ts) {
  char key[8];
  ch_key(key, k);
  add_b(c->t, EV, ts, key, 8, NULL, 0);
}

/* Fires everything due at now, as the owner does, sometimes asking for
 * the timers ahead first (which flushes coarse slots too). */
static void ch_fire(chain *c, int64_t now, bool ahead) {
  sl__timer_view v;
  sl__timer_run runs[2];
  int got;
  for (;;) {
    if (ahead)
      sl__timers_ahead(c->t, EV, now, 8, runs);
    if ((got = sl__timers_pop(c->t, EV, now, &v)) != 1)
      break;
    int k = ch_key_of(&v);
    if (c->dl[k] > v.ts) {
      c->early++;
      ch_add(c, k, c->dl[k]);
    } else {
      ck_assert_int_eq(c->dl[k], v.ts);
      if (c->nlog == c->caplog) {
        c->caplog *= 2;
        c->log = realloc(c->log, c->caplog * sizeof *c->log);
        ck_assert_ptr_nonnull(c->log);
      }
      c->log[c->nlog++] = v.ts * CH_KEYS + k;
      c->dl[k] = INT64_MIN;
    }
  }
  ck_assert_int_eq(got, 0);
}

static int i64_cmp(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int ch_restore_fn(const sl__timer_view *v, int domain, void *opaque) {
  return sl__timers_add(opaque, domain, v->ts, v->hash, v->kg, v->key,
                        v->key_len, v->ns, v->ns_len);
}

static void recheck_run(uint64_t seed, int rounds, uint32_t grow,
                        uint32_t step) {
  rng_state = seed;
  chain a, b; /* with the recheck, without */
  ch_new(&a, true);
  ch_new(&b, false);
  int64_t now = 0;
  for (int r = 0; r < rounds; r++) {
    uint32_t op = (uint32_t)(rnd() % 100);
    int k = (int)(rnd() % CH_KEYS);
    if (op < 30) {
      if (a.dl[k] == INT64_MIN) {
        int64_t d = now + 1 + (int64_t)(rnd() % (2 * grow));
        a.dl[k] = b.dl[k] = d;
        ch_add(&a, k, d);
        ch_add(&b, k, d);
      }
    } else if (op < 80) {
      if (a.dl[k] > now) {
        int64_t d = a.dl[k] + (int64_t)(rnd() % grow);
        a.dl[k] = b.dl[k] = d;
      }
    } else if (op < 99) {
      now += (int64_t)(rnd() % step);
      bool ahead = rnd() % 2;
      ch_fire(&a, now, ahead);
      ch_fire(&b, now, ahead);
    } else {
      /* A restore (foreach) moves nothing. */
      size_t dues = a.dues;
      struct sl__timers *t2 = svc();
      ck_assert_int_eq(sl__timers_foreach(a.t, ch_restore_fn, t2), SL_OK);
      ck_assert_uint_eq(a.dues, dues);
      sl__timers_free(a.t);
      a.t = t2;
      sl__timers_recheck(a.t, EV, ch_due, ch_pf, &a);
    }
    ck_assert_uint_eq(a.nlog, b.nlog);
    qsort(a.log, a.nlog, sizeof *a.log, i64_cmp);
    qsort(b.log, b.nlog, sizeof *b.log, i64_cmp);
    ck_assert_mem_eq(a.log, b.log, a.nlog * sizeof *a.log);
    ck_assert_mem_eq(a.dl, b.dl, sizeof a.dl);
    ck_assert_uint_eq(sl__timers_count(a.t, EV), sl__timers_count(b.t, EV));
  }
  ch_fire(&a, SL_TS_MAX, false);
  ch_fire(&b, SL_TS_MAX, false);
  ck_assert_uint_eq(a.nlog, b.nlog);
  qsort(a.log, a.nlog, sizeof *a.log, i64_cmp);
  qsort(b.log, b.nlog, sizeof *b.log, i64_cmp);
  ck_assert_mem_eq(a.log, b.log, a.nlog * sizeof *a.log);
  ck_assert_uint_eq(sl__timers_count(a.t, EV), 0);
  /* The recheck was asked, saw the timers' hashes ahead, and spared
   * early firings. */
  ck_assert_uint_gt(a.dues, 0);
  ck_assert_uint_gt(a.pf_n, 0);
  ck_assert_uint_lt(a.early, b.early);
  free(a.log);
  free(b.log);
  sl__timers_free(a.t);
  sl__timers_free(b.t);
}

START_TEST(test_recheck_moves_early_timers) {
  /* Deadlines that move within a slot (no move: the service keeps
   * those), across a few slots, and across many. */
  for (uint64_t s = 1; s <= 4; s++) {
    recheck_run(0x7e0c0000 + s, 20000, 200, 100);
    recheck_run(0x7e0d0000 + s, 20000, 2000, 400);
    recheck_run(0x7e0e0000 + s, 20000, 20000, 3000);
  }
}
END_TEST

static Suite *timers_suite(void) {
  Suite *s = suite_create("timers");
  TCase *tc = tcase_create("core");
  /* The 10^6 run under sanitizers outlasts Check's 4 s default. */
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_dedup_same_key_ns_ts);
  tcase_add_test(tc, test_distinct_keys_namespaces_ts);
  tcase_add_test(tc, test_same_hash_different_key);
  tcase_add_test(tc, test_delete);
  tcase_add_test(tc, test_random_order_vs_reference);
  tcase_add_test(tc, test_mass_delete_then_reuse);
  tcase_add_test(tc, test_pop_respects_upto);
  tcase_add_test(tc, test_domains_independent);
  tcase_add_test(tc, test_add_while_popping);
  tcase_add_test(tc, test_random_ops_vs_model);
  tcase_add_test(tc, test_random_ops_no_deletes);
  tcase_add_test(tc, test_ahead_describes_next_timers);
  tcase_add_test(tc, test_coarse_repeats);
  tcase_add_test(tc, test_repeated_registrations);
  tcase_add_test(tc, test_foreach_and_restore);
  tcase_add_test(tc, test_registrations_after_foreach_keep_order);
  tcase_add_test(tc, test_foreach_key_group_range);
  tcase_add_test(tc, test_long_keys_and_empty_namespace);
  tcase_add_test(tc, test_million_timers);
  tcase_add_test(tc, test_recheck_moves_early_timers);
  suite_add_tcase(s, tc);
  /* The models again with the level off, as every operator but an
   * event-time session window runs the service. */
  TCase *off = tcase_create("level off");
  tcase_set_timeout(off, 300);
  tcase_add_checked_fixture(off, set_level_off, clear_level_off);
  tcase_add_test(off, test_random_order_vs_reference);
  tcase_add_test(off, test_random_ops_vs_model);
  tcase_add_test(off, test_random_ops_no_deletes);
  tcase_add_test(off, test_ahead_describes_next_timers);
  tcase_add_test(off, test_foreach_and_restore);
  tcase_add_test(off, test_registrations_after_foreach_keep_order);
  suite_add_tcase(s, off);
  return s;
}

int main(void) {
  return tu_run(timers_suite());
}
