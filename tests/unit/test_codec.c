/* SPDX-License-Identifier: Apache-2.0 */
/* The snapshot codec (checkpoint/codec.h) over a real backend and timer
 * service: what a worker writes is what a worker of another key-group
 * range reads back, entry for entry and timer for timer, and malformed
 * payloads are refused. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "checkpoint/codec.h"
#include "core/fs.h"
#include "core/hash.h"
#include "state/backend.h"
#include "testutil.h"
#include "time/timers.h"

#define K 128 /* max parallelism */

static sl__backend *open_hashmap(uint32_t lo, uint32_t hi) {
  char err[256];
  sl__backend_conf bc = {.kg_lo = lo, .kg_hi = hi, .max_par = K};
  sl__backend *be = sl__backend_find("hashmap")->open(&bc, err, sizeof(err));
  ck_assert_msg(be != NULL, "%s", err);
  return be;
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
  for (d.kg = 0; d.kg < K; d.kg++)
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
  ck_assert_int_eq(
      sl__snap_stream_open(&st, path, NULL, 0, SL__STREAM_CRC, &h, err, sizeof(err)), 0);
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
  ck_assert_int_eq(
      sl__snap_stream_open(&st, cut, NULL, 0, SL__STREAM_CRC, &h, err, sizeof(err)),
      SL_ERR_CORRUPT);
  ck_assert_str_eq(err, "incomplete file (no valid trailer): truncated");
  data[len / 2] ^= 1;
  ck_assert_int_eq(
      sl__snap_stream_open(&st, NULL, data, len, SL__STREAM_CRC, &h, err, sizeof(err)),
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

static Suite *suite(void) {
  Suite *s = suite_create("codec");
  TCase *tc = tcase_create("codec");
  tcase_add_test(tc, codec_round_trip_into_another_range);
  tcase_add_test(tc, codec_refuses_malformed_payloads);
  tcase_add_test(tc, stream_restores_in_bounded_memory);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
