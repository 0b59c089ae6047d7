/* SPDX-License-Identifier: Apache-2.0 */
/* What RocksDB runs on its own threads for the RocksDB backend: the merge
 * operator that concatenates framed list appends, and the compaction
 * filter that drops expired TTL items (values, map values, list elements)
 * against the clock the TTL layer last published. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "state/kstate_int.h"
#include "state/rocksdb_int.h"

/* ---- List merge operator ------------------------------------------------ */

/* Lists are sequences of 8-byte aligned frames, so appending is
 * concatenation: of the stored list and the operands (full merge), or of
 * operands alone (partial merge). */
static char *concat(const char *base, size_t base_len, const char *const *ops,
                    const size_t *lens, int n, unsigned char *ok,
                    size_t *out_len) {
  size_t total = base_len;
  for (int i = 0; i < n; i++)
    total += lens[i];
  char *r = malloc(total ? total : 1);
  if (!r) {
    *ok = 0;
    *out_len = 0;
    return NULL;
  }
  size_t o = 0;
  if (base_len)
    memcpy(r, base, base_len), o = base_len;
  for (int i = 0; i < n; i++) {
    if (lens[i])
      memcpy(r + o, ops[i], lens[i]);
    o += lens[i];
  }
  *ok = 1;
  *out_len = total;
  return r;
}

static char *full_merge(void *state, const char *key, size_t key_len,
                        const char *existing, size_t existing_len,
                        const char *const *ops, const size_t *lens, int n,
                        unsigned char *ok, size_t *out_len) {
  (void)state, (void)key, (void)key_len;
  return concat(existing, existing ? existing_len : 0, ops, lens, n, ok,
                out_len);
}

static char *partial_merge(void *state, const char *key, size_t key_len,
                           const char *const *ops, const size_t *lens, int n,
                           unsigned char *ok, size_t *out_len) {
  (void)state, (void)key, (void)key_len;
  return concat(NULL, 0, ops, lens, n, ok, out_len);
}

static void merge_free(void *state, const char *value, size_t len) {
  (void)state, (void)len;
  free((void *)value);
}

static void nothing(void *state) {
  (void)state;
}

static const char *merge_name(void *state) {
  (void)state;
  return "sluice.list_concat";
}

rocksdb_mergeoperator_t *sl__rk_merge_operator(void) {
  return rocksdb_mergeoperator_create(NULL, nothing, full_merge, partial_merge,
                                      merge_free, merge_name);
}

/* ---- TTL compaction filter ---------------------------------------------- */

/* The C API copies a changed value but never frees what the filter
 * returned, so a rewritten list goes in a per-thread buffer that lives
 * until its (RocksDB) thread ends. */
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;

typedef struct tl_buf {
  char *p;
  size_t cap;
} tl_buf;

static void buf_free(void *p) {
  tl_buf *b = p;
  free(b->p);
  free(b);
}

static void buf_init(void) {
  pthread_key_create(&buf_key, buf_free);
}

static char *thread_buf(size_t n) {
  pthread_once(&buf_once, buf_init);
  tl_buf *b = pthread_getspecific(buf_key);
  if (!b) {
    if (!(b = calloc(1, sizeof(*b))))
      return NULL;
    pthread_setspecific(buf_key, b);
  }
  if (n > b->cap) {
    char *p = realloc(b->p, n);
    if (!p)
      return NULL;
    b->p = p;
    b->cap = n;
  }
  return b->p;
}

static void dropped(rk_state *st, uint64_t entries, uint64_t bytes) {
  if (entries)
    atomic_fetch_add_explicit(&st->dropped_entries, entries,
                              memory_order_relaxed);
  atomic_fetch_add_explicit(&st->dropped_bytes, bytes, memory_order_relaxed);
}

/* Returns 1 to drop the entry. Items shorter than a timestamp are kept:
 * they cannot be ours with this TTL, and dropping data in the background
 * on a misconfiguration would be worse than keeping it. */
static unsigned char ttl_filter(void *state, int level, const char *key,
                                size_t key_len, const char *val, size_t len,
                                char **new_val, size_t *new_len,
                                unsigned char *changed) {
  (void)level;
  rk_state *st = state;
  *changed = 0;
  int64_t ttl = atomic_load_explicit(&st->ttl_ms, memory_order_acquire);
  if (ttl <= 0)
    return 0;
  int domain = atomic_load_explicit(&st->ttl_domain, memory_order_relaxed);
  int64_t now =
      atomic_load_explicit(&st->b->base.ttl_now[domain], memory_order_relaxed);
  rk_dkey dk;
  if (sl__rk_decode((const unsigned char *)key, key_len, st->type == SL__BT_MAP,
                    &dk))
    return 0;
  uint64_t kbytes = dk.key_len + dk.ns_len + dk.mk_len;
  if (st->type != SL__BT_LIST) {
    if (len < sizeof(int64_t) || !sl__ttl_expired(sl__ts_load(val), ttl, now))
      return 0;
    dropped(st, 1, kbytes + len);
    return 1;
  }
  /* A list: drop the expired elements, and the list when none is left. */
  const unsigned char *p = (const unsigned char *)val, *end = p + len;
  size_t keep = 0, n_expired = 0;
  for (const unsigned char *f = p; f + SL__LIST_HDR <= end;) {
    size_t el = sl__list_elem_len(f), fl = sl__list_frame(el);
    if (f + fl > end)
      return 0; /* not a list we wrote: leave it alone */
    if (el >= sizeof(int64_t) &&
        sl__ttl_expired(sl__ts_load(f + SL__LIST_HDR), ttl, now))
      n_expired++;
    else
      keep += fl;
    f += fl;
  }
  if (!n_expired)
    return 0;
  if (!keep) {
    dropped(st, 1, kbytes + len);
    return 1;
  }
  char *w = thread_buf(keep);
  if (!w)
    return 0;
  size_t o = 0;
  for (const unsigned char *f = p; f + SL__LIST_HDR <= end;) {
    size_t el = sl__list_elem_len(f), fl = sl__list_frame(el);
    if (!(el >= sizeof(int64_t) &&
          sl__ttl_expired(sl__ts_load(f + SL__LIST_HDR), ttl, now))) {
      memcpy(w + o, f, fl);
      o += fl;
    }
    f += fl;
  }
  dropped(st, 0, len - keep);
  *new_val = w;
  *new_len = keep;
  *changed = 1;
  return 0;
}

static const char *filter_name(void *state) {
  (void)state;
  return "sluice.ttl";
}

rocksdb_compactionfilter_t *sl__rk_filter(rk_state *st) {
  return rocksdb_compactionfilter_create(st, nothing, ttl_filter, filter_name);
}
