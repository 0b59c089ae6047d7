/* SPDX-License-Identifier: Apache-2.0 */
/* The snapshot codec (checkpoint/codec.h) over a real backend and timer
 * service: what a worker writes is what a worker of another key-group
 * range reads back, entry for entry and timer for timer, and malformed
 * payloads are refused. */
#include <check.h>
#include <inttypes.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "checkpoint/check.h"
#include "checkpoint/codec.h"
#include "checkpoint/incr.h"
#include "core/crc32c.h"
#include "core/fs.h"
#include "core/hash.h"
#include "state/backend.h"
#include "testutil.h"
#include "time/timers.h"

#define K 128 /* max parallelism */

static sl__backend *open_hashmap_of(uint32_t lo, uint32_t hi, uint32_t k) {
  char err[256];
  sl__backend_conf bc = {.kg_lo = lo, .kg_hi = hi, .max_par = k};
  sl__backend *be = sl__backend_find("hashmap")->open(&bc, err, sizeof(err));
  ck_assert_msg(be != NULL, "%s", err);
  return be;
}

static sl__backend *open_hashmap(uint32_t lo, uint32_t hi) {
  return open_hashmap_of(lo, hi, K);
}

/* A list value of the given elements, framed as the backends store it. */
static size_t frame_list(unsigned char *out, const char *const *el, int n) {
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    uint32_t l = (uint32_t)strlen(el[i]);
    memset(out + off, 0, sl__list_frame(l));
    memcpy(out + off, &l, 4);
    memcpy(out + off + SL__LIST_HDR, el[i], l);
    off += sl__list_frame(l);
  }
  return off;
}

/* Every entry of be in key groups [lo, hi), one line each, sorted. */
typedef struct lines {
  char *v[256];
  int n;
  uint32_t kg;
  const sl__backend *be;
} lines;

static const char *hex(const void *p, size_t n, char *buf) {
  for (size_t i = 0; i < n; i++)
    sprintf(buf + 2 * i, "%02x", ((const unsigned char *)p)[i]);
  buf[2 * n] = '\0';
  return buf;
}

static int line_cb(uint32_t state, const void *key, size_t key_len,
                   const void *ns, size_t ns_len, const void *mk, size_t mk_len,
                   const void *val, size_t len, void *opaque) {
  lines *l = opaque;
  const char *name;
  sl__btype type;
  ck_assert_int_eq(l->be->ops->state_info(l->be, state, &name, &type), 0);
  char *s = NULL, h[2 * 64 + 1];
  ck_assert_uint_le(len, 64);
  ck_assert_int_ge(asprintf(&s, "%u %s %.*s|%.*s|%.*s|%s", l->kg, name,
                            (int)key_len, (const char *)key, (int)ns_len,
                            (const char *)ns, (int)mk_len,
                            mk ? (const char *)mk : "", hex(val, len, h)),
                   0);
  ck_assert_int_lt(l->n, 256);
  l->v[l->n++] = s;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *render(sl__backend *be, uint32_t lo, uint32_t hi) {
  lines l = {.be = be};
  for (uint32_t g = lo; g < hi; g++) {
    l.kg = g;
    ck_assert_int_eq(be->ops->kg_scan(be, g, line_cb, &l), 0);
  }
  if (l.n)
    qsort(l.v, (size_t)l.n, sizeof(l.v[0]), cmp_str);
  size_t cap = 1, n = 0;
  for (int i = 0; i < l.n; i++)
    cap += strlen(l.v[i]) + 1;
  char *out = malloc(cap);
  out[0] = '\0';
  for (int i = 0; i < l.n; i++) {
    n += (size_t)sprintf(out + n, "%s\n", l.v[i]);
    free(l.v[i]);
  }
  return out;
}

typedef struct tlines {
  char *v[64];
  int n;
} tlines;

static int timer_cb(const sl__timer_view *v, int domain, void *opaque) {
  tlines *t = opaque;
  ck_assert_int_lt(t->n, 64);
  ck_assert_int_ge(asprintf(&t->v[t->n++], "%d %lld %u %.*s|%.*s", domain,
                            (long long)v->ts, v->kg, (int)v->key_len,
                            (const char *)v->key, (int)v->ns_len,
                            (const char *)v->ns),
                   0);
  return 0;
}

static char *render_timers(struct sl__timers *t) {
  tlines l = {0};
  ck_assert_int_eq(sl__timers_foreach(t, timer_cb, &l), 0);
  size_t cap = 1, n = 0;
  for (int i = 0; i < l.n; i++)
    cap += strlen(l.v[i]) + 1;
  char *out = malloc(cap);
  out[0] = '\0';
  for (int i = 0; i < l.n; i++) {
    n += (size_t)sprintf(out + n, "%s\n", l.v[i]);
    free(l.v[i]);
  }
  return out;
}

static uint32_t kg_of(const char *key) {
  return sl__key_group(sl__hash64(key, strlen(key)), K);
}

/* Keys "k0".."k39" with a value, a two-element list and a map entry each,
 * and two timers each, written by a worker of all K key groups; a worker
 * of [0, K/2) reads back exactly its half. */
START_TEST(codec_round_trip_into_another_range) {
  sl__backend *a = open_hashmap(0, K), *b = open_hashmap(0, K / 2),
              *want = open_hashmap(0, K / 2);
  uint32_t ids[3], wids[3];
  const char *names[3] = {"op/v", "op/l", "op/m"};
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(a->ops->register_state(a, names[i], (sl__btype)i, &ids[i]),
                     0);
    ck_assert_int_eq(
        want->ops->register_state(want, names[i], (sl__btype)i, &wids[i]), 0);
  }
  struct sl__timers *ta, *tb, *twant;
  ck_assert_int_eq(sl__timers_new(&ta), 0);
  ck_assert_int_eq(sl__timers_new(&tb), 0);
  ck_assert_int_eq(sl__timers_new(&twant), 0);
  for (int i = 0; i < 40; i++) {
    char key[8], val[16], el1[8], el2[16];
    snprintf(key, sizeof(key), "k%d", i);
    snprintf(val, sizeof(val), "v%d", i * 7);
    snprintf(el1, sizeof(el1), "a%d", i);
    snprintf(el2, sizeof(el2), "bb%d", i * 3);
    const char *els[2] = {el1, el2};
    unsigned char list[64];
    size_t ll = frame_list(list, els, 2);
    uint32_t kg = kg_of(key);
    uint64_t h = sl__hash64(key, strlen(key));
    for (int w = 0; w < 2; w++) {
      sl__backend *be = w ? want : a;
      const uint32_t *id = w ? wids : ids;
      if (w && kg >= K / 2)
        continue;
      ck_assert_int_eq(be->ops->insert(be, id[0], kg, key, strlen(key), NULL, 0,
                                       NULL, 0, val, strlen(val)),
                       0);
      ck_assert_int_eq(be->ops->insert(be, id[1], kg, key, strlen(key), "ns", 2,
                                       NULL, 0, list, ll),
                       0);
      ck_assert_int_eq(be->ops->insert(be, id[2], kg, key, strlen(key), NULL, 0,
                                       "mk", 2, val, strlen(val)),
                       0);
      struct sl__timers *t = w ? twant : ta;
      ck_assert_int_eq(
          sl__timers_add(t, i % 2, 1000 + i, h, kg, key, strlen(key), NULL, 0),
          0);
      ck_assert_int_eq(
          sl__timers_add(t, 0, 5000 - i, h, kg, key, strlen(key), "w", 1), 0);
    }
  }
  sl_buf_t buf;
  sl__buf_init(&buf);
  sl__snap_head head = {
      .worker = 0, .id = 7, .kg_lo = 0, .kg_hi = K, .max_par = K};
  uint64_t entries = 0, timers = 0;
  ck_assert_int_eq(sl__snap_begin_file(&buf, &head), 0);
  ck_assert_int_eq(sl__snap_put_states(&buf, a), 0);
  ck_assert_int_eq(sl__snap_put_entries(&buf, a, &entries), 0);
  ck_assert_int_eq(sl__snap_put_timers(&buf, "op", ta, &timers), 0);
  ck_assert_int_eq(sl__snap_finish_file(&buf), 0);
  ck_assert_uint_eq(entries, 120);
  ck_assert_uint_eq(timers, 80);

  char err[256];
  sl__snap_head h;
  sl__rd body, p;
  ck_assert_int_eq(
      sl__snap_check(buf.data, buf.len, &h, &body, err, sizeof(err)), 0);
  sl__snap_ids m = {.to = b};
  uint32_t type, kg;
  int r, lists = 0;
  while ((r = sl__snap_next(&body, &type, &kg, &p)) == 1) {
    if (type == SL__SEC_STATES) {
      ck_assert_int_eq(sl__snap_load_states(p, &m), 0);
    } else if (type == SL__SEC_ENTRIES) {
      if (kg < K / 2)
        ck_assert_int_eq(sl__snap_load_entries(p, &m, kg), 0);
      /* The list elements come back as they were framed. */
      sl__snap_entry e;
      while (sl__snap_entry_next(&p, &e) == 1) {
        if (e.state != ids[1])
          continue;
        size_t off = 0, len;
        const void *el;
        char got[64] = "";
        while (sl__snap_list_next(&e, &off, &el, &len) == 1)
          snprintf(got + strlen(got), sizeof(got) - strlen(got), "[%.*s]",
                   (int)len, (const char *)el);
        char key[8];
        snprintf(key, sizeof(key), "%.*s", (int)e.key_len, (const char *)e.key);
        int i = atoi(key + 1);
        char exp[64];
        snprintf(exp, sizeof(exp), "[a%d][bb%d]", i, i * 3);
        ck_assert_str_eq(got, exp);
        lists++;
      }
    } else if (type == SL__SEC_TIMERS) {
      const void *uid;
      size_t ul;
      ck_assert(sl__rd_bytes(&p, &uid, &ul));
      ck_assert_int_eq(sl__snap_load_timers(p, tb, 0, K / 2, 0), 0);
    }
  }
  ck_assert_int_eq(r, 0);
  ck_assert_int_eq(lists, 40);
  char *got = render(b, 0, K / 2), *exp = render(want, 0, K / 2);
  ck_assert_str_eq(got, exp);
  ck_assert_ptr_ne(strstr(got, "op/m"), NULL); /* not vacuous */
  free(got);
  free(exp);
  got = render_timers(tb);
  exp = render_timers(twant);
  ck_assert_str_eq(got, exp);
  ck_assert_uint_gt(strlen(got), 0);
  free(got);
  free(exp);
  sl__snap_ids_free(&m);
  sl__buf_free(&buf);
  sl__timers_free(ta);
  sl__timers_free(tb);
  sl__timers_free(twant);
  a->ops->close(a);
  b->ops->close(b);
  want->ops->close(want);
}
END_TEST

/* A list whose framing runs past its value, a timer of a domain that does
 * not exist, and entries before the states they name are corrupt. */
START_TEST(codec_refuses_malformed_payloads) {
  unsigned char v[12] = {0};
  uint32_t l = 9; /* claims 9 bytes; 4 follow the header */
  memcpy(v, &l, 4);
  sl__snap_entry e = {.val = v, .val_len = sizeof(v)};
  size_t off = 0, len;
  const void *el;
  ck_assert_int_eq(sl__snap_list_next(&e, &off, &el, &len), SL_ERR_CORRUPT);

  sl_buf_t b;
  sl__buf_init(&b);
  uint8_t domain = SL__SNAP_TIMER_DOMAINS;
  ck_assert_int_eq(sl__buf_u32(&b, 3), 0);
  ck_assert_int_eq(sl_buf_append(&b, &domain, 1), 0);
  ck_assert_int_eq(sl__buf_u64(&b, 10), 0);
  ck_assert_int_eq(sl__buf_bytes(&b, "k", 1), 0);
  ck_assert_int_eq(sl__buf_bytes(&b, "", 0), 0);
  sl__rd p = {b.data, (const unsigned char *)b.data + b.len, false};
  struct sl__timers *t;
  ck_assert_int_eq(sl__timers_new(&t), 0);
  ck_assert_int_eq(sl__snap_load_timers(p, t, 0, K, 0), SL_ERR_CORRUPT);
  sl__timers_free(t);

  sl__backend *be = open_hashmap(0, K);
  sl__snap_ids m = {.to = be};
  ck_assert_int_eq(sl__snap_load_entries(p, &m, 0), SL_ERR_CORRUPT);
  be->ops->close(be);
  sl__buf_free(&b);
}
END_TEST

/* Sums over every entry of be (order-independent): count and a hash of
 * each (key group, key, value). */
typedef struct digest {
  uint64_t n, sum;
  uint32_t kg;
} digest;

static int digest_cb(uint32_t state, const void *key, size_t key_len,
                     const void *ns, size_t ns_len, const void *mk,
                     size_t mk_len, const void *val, size_t len, void *opaque) {
  (void)state, (void)ns, (void)ns_len, (void)mk, (void)mk_len;
  digest *d = opaque;
  d->n++;
  d->sum += sl__hash64(key, key_len) * 31 + sl__hash64(val, len) + d->kg;
  return 0;
}

static digest digest_of(sl__backend *be) {
  digest d = {0};
  for (d.kg = 0; d.kg < be->max_par; d.kg++)
    ck_assert_int_eq(be->ops->kg_scan(be, d.kg, digest_cb, &d), 0);
  return d;
}

/* A worker file of n keys (a 64-byte value and a timer each) written to
 * path; its state in *be (the caller closes it). Returns the file size. */
static size_t write_big(const char *path, int n, sl__backend **be) {
  sl__backend *a = open_hashmap(0, K);
  uint32_t id;
  ck_assert_int_eq(a->ops->register_state(a, "op/v", SL__BT_VALUE, &id), 0);
  struct sl__timers *t;
  ck_assert_int_eq(sl__timers_new(&t), 0);
  for (int i = 0; i < n; i++) {
    char key[16], val[64];
    snprintf(key, sizeof(key), "key%d", i);
    memset(val, 'a' + i % 26, sizeof(val));
    uint64_t h = sl__hash64(key, strlen(key));
    ck_assert_int_eq(a->ops->insert(a, id, kg_of(key), key, strlen(key), NULL,
                                    0, NULL, 0, val, sizeof(val)),
                     0);
    ck_assert_int_eq(
        sl__timers_add(t, 0, i, h, kg_of(key), key, strlen(key), NULL, 0), 0);
  }
  sl_buf_t buf;
  sl__buf_init(&buf);
  sl__snap_head head = {.id = 1, .kg_lo = 0, .kg_hi = K, .max_par = K};
  uint64_t entries = 0, timers = 0;
  ck_assert_int_eq(sl__snap_begin_file(&buf, &head), 0);
  ck_assert_int_eq(sl__snap_put_states(&buf, a), 0);
  ck_assert_int_eq(sl__snap_put_entries(&buf, a, &entries), 0);
  ck_assert_int_eq(sl__snap_put_timers(&buf, "op", t, &timers), 0);
  ck_assert_int_eq(sl__snap_finish_file(&buf), 0);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(buf.data, 1, buf.len, f), buf.len);
  fclose(f);
  size_t len = buf.len;
  sl__buf_free(&buf);
  sl__timers_free(t);
  *be = a;
  return len;
}

/* Restores the file at path through the stream into a fresh backend and
 * timer service; returns the stream's peak item buffer. */
static size_t stream_restore(const char *path, sl__backend *want, int n) {
  char err[256];
  sl__snap_stream *st;
  sl__snap_head h;
  ck_assert_int_eq(sl__snap_stream_open(&st, path, NULL, 0, SL__STREAM_CRC, &h,
                                        err, sizeof(err)),
                   0);
  sl__backend *b = open_hashmap(0, K);
  struct sl__timers *t;
  ck_assert_int_eq(sl__timers_new(&t), 0);
  sl__snap_ids m = {.to = b};
  uint32_t type, kg;
  uint64_t len;
  sl__rd p;
  const void *uid;
  size_t ul;
  int r;
  while ((r = sl__snap_stream_next(st, &type, &kg, &len)) == 1) {
    if (type == SL__SEC_STATES) {
      ck_assert_int_eq(sl__snap_stream_payload(st, &p), 0);
      ck_assert_int_eq(sl__snap_load_states(p, &m), 0);
    } else if (type == SL__SEC_ENTRIES) {
      ck_assert_int_eq(sl__snap_stream_load_entries(st, &m, kg), 0);
    } else if (type == SL__SEC_TIMERS) {
      ck_assert_int_eq(sl__snap_stream_bytes(st, &uid, &ul), 1);
      ck_assert_int_eq(sl__snap_stream_load_timers(st, t, 0, K, 0), 0);
    }
  }
  ck_assert_int_eq(r, 0);
  digest got = digest_of(b), exp = digest_of(want);
  ck_assert_uint_eq(got.n, (uint64_t)n);
  ck_assert_uint_eq(got.n, exp.n);
  ck_assert_uint_eq(got.sum, exp.sum);
  ck_assert_uint_eq(sl__timers_count(t, 0), (size_t)n);
  size_t peak = sl__snap_stream_peak(st);
  sl__snap_stream_close(st);
  sl__snap_ids_free(&m);
  sl__timers_free(t);
  b->ops->close(b);
  return peak;
}

/* Restoring a worker file as a stream holds one item at a time: the
 * largest buffer it takes is the same for 1 000 and 40 000 keys (and
 * for the small file no larger than its biggest entry rounded up), while
 * every entry and timer is read back. A truncated or damaged file fails
 * at open with the reason. */
START_TEST(stream_restores_in_bounded_memory) {
  char dir[] = "/tmp/sluice-codec-XXXXXX", small[64], big[64], cut[64];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(small, sizeof(small), "%s/small.snap", dir);
  snprintf(big, sizeof(big), "%s/big.snap", dir);
  snprintf(cut, sizeof(cut), "%s/cut.snap", dir);
  sl__backend *a, *c;
  size_t small_len = write_big(small, 1000, &a);
  size_t big_len = write_big(big, 40000, &c);
  ck_assert_uint_gt(big_len, 30 * small_len);
  size_t p_small = stream_restore(small, a, 1000);
  size_t p_big = stream_restore(big, c, 40000);
  ck_assert_uint_eq(p_small, p_big);
  ck_assert_uint_eq(p_big, 256); /* the first item buffer, never grown */

  /* Half the file, and one flipped byte: refused with the reason. */
  unsigned char *data;
  size_t len;
  ck_assert_int_eq(sl__read_file(big, &data, &len), 0);
  FILE *f = fopen(cut, "wb");
  ck_assert_uint_eq(fwrite(data, 1, len / 2, f), len / 2);
  fclose(f);
  char err[256];
  sl__snap_stream *st;
  sl__snap_head h;
  ck_assert_int_eq(sl__snap_stream_open(&st, cut, NULL, 0, SL__STREAM_CRC, &h,
                                        err, sizeof(err)),
                   SL_ERR_CORRUPT);
  ck_assert_str_eq(err, "incomplete file (no valid trailer): truncated");
  data[len / 2] ^= 1;
  ck_assert_int_eq(sl__snap_stream_open(&st, NULL, data, len, SL__STREAM_CRC,
                                        &h, err, sizeof(err)),
                   SL_ERR_CORRUPT);
  ck_assert_ptr_nonnull(strstr(err, "checksum mismatch"));
  free(data);
  unlink(small);
  unlink(big);
  unlink(cut);
  rmdir(dir);
  a->ops->close(a);
  c->ops->close(c);
}
END_TEST

/* ---- Checkpoint directories -------------------------------------------- */

/* Heap in use, counted by replacing malloc (glibc supports it; its own
 * functions call the replacement). Under a sanitizer, whose allocator
 * must see every block, nothing is counted and the figures are 0. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
static size_t heap_in_use(void) {
  return 0;
}
#else
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
static size_t heap_live;

void *malloc(size_t n) {
  void *p = __libc_malloc(n);
  heap_live += p ? malloc_usable_size(p) : 0;
  return p;
}

void *calloc(size_t n, size_t size) {
  void *p = __libc_calloc(n, size);
  heap_live += p ? malloc_usable_size(p) : 0;
  return p;
}

void *realloc(void *p, size_t n) {
  size_t old = p ? malloc_usable_size(p) : 0;
  void *q = __libc_realloc(p, n);
  if (q)
    heap_live += malloc_usable_size(q) - old;
  else if (p && !n)
    heap_live -= old; /* freed */
  return q;
}

void free(void *p) {
  heap_live -= p ? malloc_usable_size(p) : 0;
  __libc_free(p);
}

static size_t heap_in_use(void) {
  return heap_live;
}
#endif

/* Writes name into chk and lists it in files with its size and CRC32C. */
static void put_file(const char *chk, const char *name, const sl_buf_t *b,
                     json_t *files) {
  char path[256], crc[9];
  snprintf(path, sizeof(path), "%s/%s", chk, name);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(b->data, 1, b->len, f), b->len);
  ck_assert_int_eq(fclose(f), 0);
  snprintf(crc, sizeof(crc), "%08x", sl__crc32c(0, b->data, b->len));
  json_array_append_new(files, json_pack("{s:s,s:I,s:s}", "path", name, "bytes",
                                         (json_int_t)b->len, "crc32c", crc));
}

/* _metadata of a one-worker checkpoint id of max parallelism k. */
static void put_meta(const char *chk, uint64_t id, uint32_t k, json_t *files) {
  char path[256];
  snprintf(path, sizeof(path), "%s/_metadata", chk);
  json_t *m =
      json_pack("{s:i,s:I,s:s,s:i,s:i,s:o,s:[{s:i,s:i,s:i,s:s}]}", "format", 3,
                "id", (json_int_t)id, "backend", "hashmap", "max_parallelism",
                (int)k, "parallelism", 1, "files", files, "workers", "index", 0,
                "kg_lo", 0, "kg_hi", (int)k, "file", "w0.snap");
  ck_assert_ptr_nonnull(m);
  ck_assert_int_eq(json_dump_file(m, path, 0), 0);
  json_decref(m);
}

static void key_of(int i, char *key, size_t n, uint64_t *h) {
  snprintf(key, n, "key%d", i);
  *h = sl__hash64(key, strlen(key));
}

#define CK 8 /* max parallelism of the chained checkpoint */

/* chk (created) as an incremental checkpoint 2 of n keys: w0.snap lists
 * per key group the chain kv-1-w0.seg (every key group whole), then
 * kv-2-w0.seg (every tenth key changed: every key group has changes).
 * The state in *out (the caller closes it). */
static void write_chained(const char *chk, int n, sl__backend **out) {
  ck_assert_int_eq(mkdir(chk, 0755), 0);
  sl__backend *a = open_hashmap_of(0, CK, CK);
  uint32_t id;
  ck_assert_int_eq(a->ops->register_state(a, "op/v", SL__BT_VALUE, &id), 0);
  for (int i = 0; i < n; i++) {
    char key[16], val[64];
    uint64_t h;
    key_of(i, key, sizeof(key), &h);
    memset(val, 'a' + i % 26, sizeof(val));
    ck_assert_int_eq(a->ops->insert(a, id, sl__key_group(h, CK), key,
                                    strlen(key), NULL, 0, NULL, 0, val,
                                    sizeof(val)),
                     0);
  }
  sl__incr *in = sl__incr_new(0, CK);
  sl_buf_t snap;
  sl__buf_init(&snap);
  sl__incr_out o1, o2;
  ck_assert_int_eq(sl__incr_put(in, a, &snap, 1, 0, 0, CK, &o1), 0);
  ck_assert_uint_eq(o1.kg_full, CK);
  for (int i = 0; i < n; i += 10) {
    char key[16];
    uint64_t h;
    key_of(i, key, sizeof(key), &h);
    sl__skey k = {id, sl__key_group(h, CK), h, key, strlen(key), NULL, 0};
    void *v;
    ck_assert_int_eq(a->ops->slot(a, &k, 64, &v), 1);
    memset(v, 'z', 64);
  }
  sl__buf_free(&snap);
  sl__buf_init(&snap);
  sl__snap_head head = {.id = 2, .kg_lo = 0, .kg_hi = CK, .max_par = CK};
  ck_assert_int_eq(sl__snap_begin_file(&snap, &head), 0);
  ck_assert_int_eq(sl__snap_put_states(&snap, a), 0);
  ck_assert_int_eq(sl__incr_put(in, a, &snap, 2, 1, 0, CK, &o2), 0);
  ck_assert_uint_eq(o2.kg_delta, CK);
  ck_assert_int_eq(sl__snap_finish_file(&snap), 0);
  json_t *files = json_array();
  put_file(chk, "w0.snap", &snap, files);
  put_file(chk, o1.seg_name, &o1.seg, files);
  put_file(chk, o2.seg_name, &o2.seg, files);
  put_meta(chk, 2, CK, files);
  sl__buf_free(&snap);
  sl__incr_out_free(&o1);
  sl__incr_out_free(&o2);
  sl__incr_free(in);
  *out = a;
}

/* Checks chk as restore does and loads every key group from its chain;
 * *held is the heap the check's result holds until restore ends, and
 * the return the largest item buffer a chain load took. */
static size_t restore_chained(const char *chk, sl__backend *want, int n,
                              size_t *held) {
  char err[512];
  size_t before = heap_in_use();
  sl__ckpt_check c = {.keep_small = true};
  ck_assert_msg(sl__ckpt_check_run(chk, &c, err, sizeof(err)) == SL_OK, "%s",
                err);
  *held = heap_in_use() - before;
  ck_assert_uint_eq(c.n_segs, 2);
  sl__backend *b = open_hashmap_of(0, CK, CK);
  sl__rd body = c.images[0].body, p;
  uint32_t type, kg, chains = 0;
  size_t peak = 0;
  int r;
  while ((r = sl__snap_next(&body, &type, &kg, &p)) == 1) {
    if (type != SL__SEC_CHAIN)
      continue;
    sl__snap_ids m = {.to = b};
    sl__chain_io io = {0};
    ck_assert_msg(sl__chain_load(p, c.segs, c.n_segs, &m, kg, &io, err,
                                 sizeof(err)) == SL_OK,
                  "%s", err);
    sl__snap_ids_free(&m);
    peak = io.peak > peak ? io.peak : peak;
    chains++;
  }
  ck_assert_int_eq(r, 0);
  ck_assert_uint_eq(chains, CK);
  digest got = digest_of(b), exp = digest_of(want);
  ck_assert_uint_eq(got.n, (uint64_t)n);
  ck_assert_uint_eq(got.sum, exp.sum);
  b->ops->close(b);
  sl__ckpt_check_free(&c);
  return peak;
}

static void rm_chk(const char *chk) {
  const char *names[] = {"_metadata", "w0.snap", "kv-1-w0.seg", "kv-2-w0.seg"};
  char path[256];
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s", chk, names[i]);
    unlink(path);
  }
  ck_assert_int_eq(rmdir(chk), 0);
}

/* The same for keyed state in chains of segment files: what the check
 * keeps for restore, and the largest buffer a chain load takes, are the
 * same for 1 000 and 40 000 keys (the segments are read from the files,
 * one link and one entry at a time, never held), and every entry is
 * restored. */
START_TEST(chains_restore_in_bounded_memory) {
  char dir[] = "/tmp/sluice-codec-XXXXXX", small[64], big[64];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(small, sizeof(small), "%s/chk-s", dir); /* names of one length */
  snprintf(big, sizeof(big), "%s/chk-b", dir);
  sl__backend *a, *c;
  write_chained(small, 1000, &a);
  write_chained(big, 40000, &c);
  size_t held_small, held_big;
  /* Once first: what the first check of a process allocates for good. */
  (void)restore_chained(small, a, 1000, &held_small);
  size_t p_small = restore_chained(small, a, 1000, &held_small);
  size_t p_big = restore_chained(big, c, 40000, &held_big);
  /* Equal up to malloc's rounding: the counts are usable sizes, which
   * depend on the heap's layout (a realloc in place or moved), so two
   * checks of one layout may differ by a few 16-byte steps; a segment
   * held whole would add megabytes. */
  ck_assert_msg(held_big <= held_small + 64 && held_small <= held_big + 64,
                "the check holds %zu bytes for 1000 keys, %zu for 40000",
                held_small, held_big);
  ck_assert_uint_eq(p_small, p_big);
  ck_assert_uint_eq(p_big, 256); /* the first item buffer, never grown */
  rm_chk(small);
  rm_chk(big);
  ck_assert_int_eq(rmdir(dir), 0);
  a->ops->close(a);
  c->ops->close(c);
}
END_TEST

#define TK 12 /* key groups (tasks) of the worker file */

/* A task taken over in group mode is loaded from a worker file of 12 key
 * groups: the check reads every byte of the file exactly once (its
 * checksums computed in the pass that decodes it), and loading one key
 * group reads the file's header, trailer and section headers, and the
 * payloads of just the sections it loads — state names, that key
 * group's entries, the timers — never the other key groups' entries,
 * which are skipped by offset. */
START_TEST(loading_one_key_group_reads_only_its_sections) {
  char dir[] = "/tmp/sluice-codec-XXXXXX", chk[64];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(chk, sizeof(chk), "%s/chk-1", dir);
  ck_assert_int_eq(mkdir(chk, 0755), 0);
  sl__backend *a = open_hashmap_of(0, TK, TK);
  uint32_t id;
  ck_assert_int_eq(a->ops->register_state(a, "op/v", SL__BT_VALUE, &id), 0);
  struct sl__timers *t;
  ck_assert_int_eq(sl__timers_new(&t), 0);
  enum { N = 6000 };
  for (int i = 0; i < N; i++) {
    char key[16], val[64];
    uint64_t h;
    key_of(i, key, sizeof(key), &h);
    memset(val, 'a' + i % 26, sizeof(val));
    uint32_t kg = sl__key_group(h, TK);
    ck_assert_int_eq(a->ops->insert(a, id, kg, key, strlen(key), NULL, 0, NULL,
                                    0, val, sizeof(val)),
                     0);
    if (i % 10 == 0)
      ck_assert_int_eq(
          sl__timers_add(t, 0, i, h, kg, key, strlen(key), NULL, 0), 0);
  }
  sl_buf_t b;
  sl__buf_init(&b);
  sl__snap_head head = {.id = 1, .kg_lo = 0, .kg_hi = TK, .max_par = TK};
  uint64_t entries = 0, timers = 0;
  ck_assert_int_eq(sl__snap_begin_file(&b, &head), 0);
  ck_assert_int_eq(sl__snap_put_states(&b, a), 0);
  ck_assert_int_eq(sl__snap_put_entries(&b, a, &entries), 0);
  ck_assert_int_eq(sl__snap_put_timers(&b, "op", t, &timers), 0);
  ck_assert_int_eq(sl__snap_finish_file(&b), 0);
  json_t *files = json_array();
  put_file(chk, "w0.snap", &b, files);
  put_meta(chk, 1, TK, files);

  /* What loading key group 5 needs, from the image. */
  const uint32_t want = 5;
  sl__rd body = {b.data + SL__SNAP_HEADER,
                 b.data + b.len - SL__SNAP_TRAILER_LEN, false},
         p;
  uint32_t type, kg;
  uint64_t expect = SL__SNAP_HEADER + SL__SNAP_TRAILER_LEN, kg_entries = 0;
  int sections = 0;
  while (sl__snap_next(&body, &type, &kg, &p) == 1) {
    uint64_t len = (uint64_t)(p.end - p.p);
    expect += 16;
    sections++;
    if (type == SL__SEC_STATES || type == SL__SEC_TIMERS)
      expect += len;
    if (type == SL__SEC_ENTRIES && kg == want) {
      expect += len;
      ck_assert_uint_lt(len, 1 << 16); /* read once, counted once */
      sl__snap_entry e;
      while (sl__snap_entry_next(&p, &e) == 1)
        kg_entries++;
    }
  }
  ck_assert_int_eq(sections, 2 + TK);

  char err[512];
  sl__ckpt_check c = {.keep_small = true};
  ck_assert_msg(sl__ckpt_check_run(chk, &c, err, sizeof(err)) == SL_OK, "%s",
                err);
  ck_assert_uint_eq(c.bytes_read, b.len);
  ck_assert_uint_eq(c.entries, N);
  ck_assert_uint_eq(c.timers, N / 10);

  /* Key group 5 as restore reads a worker file (runtime/restore.c). */
  sl__snap_stream *st;
  sl__snap_head h;
  char path[128];
  snprintf(path, sizeof(path), "%s/w0.snap", chk);
  ck_assert_int_eq(
      sl__snap_stream_open(&st, path, NULL, 0, 0, &h, err, sizeof(err)), 0);
  sl__backend *to = open_hashmap_of(want, want + 1, TK);
  struct sl__timers *tt;
  ck_assert_int_eq(sl__timers_new(&tt), 0);
  sl__snap_ids m = {.to = to};
  uint64_t len;
  int r;
  while ((r = sl__snap_stream_next(st, &type, &kg, &len)) == 1) {
    if (type == SL__SEC_STATES) {
      ck_assert_int_eq(sl__snap_stream_payload(st, &p), 0);
      ck_assert_int_eq(sl__snap_load_states(p, &m), 0);
    } else if (type == SL__SEC_ENTRIES && kg == want) {
      ck_assert_int_eq(sl__snap_stream_load_entries(st, &m, kg), 0);
    } else if (type == SL__SEC_TIMERS) {
      const void *uid;
      size_t ul;
      ck_assert_int_eq(sl__snap_stream_bytes(st, &uid, &ul), 1);
      ck_assert_int_eq(sl__snap_stream_load_timers(st, tt, want, want + 1, 0),
                       0);
    }
  }
  ck_assert_int_eq(r, 0);
  ck_assert_uint_eq(sl__snap_stream_read_bytes(st), expect);
  digest d = {.kg = want};
  ck_assert_int_eq(to->ops->kg_scan(to, want, digest_cb, &d), 0);
  ck_assert_uint_eq(d.n, kg_entries);
  printf("a task of a %zu-byte worker file of %d key groups: the check read "
         "%" PRIu64 " bytes, loading it %" PRIu64 "\n",
         b.len, TK, c.bytes_read, sl__snap_stream_read_bytes(st));
  sl__snap_stream_close(st);
  sl__snap_ids_free(&m);
  sl__ckpt_check_free(&c);
  sl__timers_free(tt);
  sl__timers_free(t);
  to->ops->close(to);
  a->ops->close(a);
  sl__buf_free(&b);
  snprintf(path, sizeof(path), "%s/_metadata", chk);
  unlink(path);
  snprintf(path, sizeof(path), "%s/w0.snap", chk);
  unlink(path);
  ck_assert_int_eq(rmdir(chk), 0);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("codec");
  TCase *tc = tcase_create("codec");
  tcase_add_test(tc, codec_round_trip_into_another_range);
  tcase_add_test(tc, codec_refuses_malformed_payloads);
  tcase_add_test(tc, stream_restores_in_bounded_memory);
  tcase_add_test(tc, chains_restore_in_bounded_memory);
  tcase_add_test(tc, loading_one_key_group_reads_only_its_sections);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
