/* SPDX-License-Identifier: Apache-2.0 */
/* The worker snapshot file reader (lib/checkpoint/format.c): the file
 * check and every section decoder, on the input as is and on the input
 * with a valid trailer appended (so mutations get past the checksum and
 * reach the section decoders restore and sluice-ckpt run); and the
 * streaming reader restore uses (checkpoint/codec.h), which must find
 * exactly what the in-memory decoders find, item for item. */
#include <string.h>

#include "checkpoint/codec.h"
#include "checkpoint/format.h"
#include "checkpoint/layout.h"
#include "core/crc32c.h"
#include "fuzz.h"
#include "sluice.h"

static void walk(const uint8_t *data, size_t size) {
  sl__snap_head h;
  sl__rd body, p;
  char err[256];
  if (sl__snap_check(data, size, &h, &body, err, sizeof(err)) != SL_OK)
    return;
  uint32_t type, kg;
  int r;
  while ((r = sl__snap_next(&body, &type, &kg, &p)) == 1) {
    FUZZ_ASSERT(p.p >= data && p.end <= data + size && p.p <= p.end,
                "section outside the file");
    if (type == SL__SEC_STATES) {
      uint32_t n;
      sl__snap_state s;
      if (sl__snap_states_count(&p, &n))
        continue;
      for (uint32_t i = 0; i < n && sl__snap_state_next(&p, &s) == 1; i++)
        FUZZ_ASSERT((const uint8_t *)s.name + s.name_len <= data + size,
                    "state name outside the file");
    } else if (type == SL__SEC_ENTRIES) {
      sl__snap_entry e;
      while (sl__snap_entry_next(&p, &e) == 1)
        FUZZ_ASSERT((const uint8_t *)e.val + e.val_len <= data + size,
                    "value outside the file");
    } else if (type == SL__SEC_TIMERS) {
      const void *uid;
      size_t ul;
      sl__snap_timer t;
      if (!sl__rd_bytes(&p, &uid, &ul))
        continue;
      while (sl__snap_timer_next(&p, &t) == 1)
        FUZZ_ASSERT((const uint8_t *)t.ns + t.ns_len <= data + size,
                    "timer outside the file");
    } else if (type == SL__SEC_LAYOUT) {
      uint32_t n;
      sl__layout_rec r;
      char why[256];
      if (sl__layout_count(&p, &n))
        continue;
      while (sl__layout_next(&p, &r) == 1) {
        FUZZ_ASSERT((const uint8_t *)r.layout + r.layout_len <= data + size,
                    "layout outside the file");
        /* Against a layout of its own and a fixed one: no overrun. */
        (void)sl__layout_diff(r.layout, r.layout_len, "kind=value ttl=off",
                              NULL, why, sizeof(why));
      }
    } else if (type == SL__SEC_OPSTATE || type == SL__SEC_SOURCE) {
      const void *uid, *blob;
      size_t ul, bl;
      uint32_t sub;
      sl__snap_src_time st;
      if (sl__snap_blob(p, type, &uid, &ul, &sub, &blob, &bl) == 0)
        FUZZ_ASSERT((const uint8_t *)blob + bl <= data + size,
                    "blob outside the file");
      if (type == SL__SEC_SOURCE)
        (void)sl__snap_source_time(p, &st);
    }
  }
}

static bool same(const void *a, size_t al, const void *b, size_t bl) {
  return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

/* The stream over the same bytes: the same verdict (and message) on the
 * file, the same sections, entries, timers and payloads. */
static void same_as_stream(const uint8_t *data, size_t size) {
  sl__snap_head h, hs;
  sl__rd body, p;
  char err[256], serr[256];
  int rc = sl__snap_check(data, size, &h, &body, err, sizeof(err));
  sl__snap_stream *st;
  int src = sl__snap_stream_open(&st, NULL, data, size, SL__STREAM_CRC, &hs,
                                 serr, sizeof(serr));
  FUZZ_ASSERT(rc == src, "check %d, stream %d", rc, src);
  if (rc) {
    FUZZ_ASSERT(strcmp(err, serr) == 0, "\"%s\" vs \"%s\"", err, serr);
    return;
  }
  FUZZ_ASSERT(h.worker == hs.worker && h.id == hs.id && h.kg_lo == hs.kg_lo &&
                  h.kg_hi == hs.kg_hi && h.max_par == hs.max_par,
              "headers differ");
  for (;;) {
    uint32_t t1, k1, t2, k2;
    uint64_t l2;
    int r1 = sl__snap_next(&body, &t1, &k1, &p);
    int r2 = sl__snap_stream_next(st, &t2, &k2, &l2);
    FUZZ_ASSERT(r1 == r2, "next: %d vs %d", r1, r2);
    if (r1 != 1)
      break;
    FUZZ_ASSERT(t1 == t2 && k1 == k2 && l2 == (uint64_t)(p.end - p.p),
                "section headers differ");
    if (t1 == SL__SEC_ENTRIES) {
      sl__snap_entry a, b;
      do {
        r1 = sl__snap_entry_next(&p, &a);
        r2 = sl__snap_stream_entry(st, &b);
        FUZZ_ASSERT(r1 == r2, "entry: %d vs %d", r1, r2);
        FUZZ_ASSERT(r1 != 1 || (a.state == b.state &&
                                same(a.key, a.key_len, b.key, b.key_len) &&
                                same(a.ns, a.ns_len, b.ns, b.ns_len) &&
                                (a.mk == NULL) == (b.mk == NULL) &&
                                same(a.mk, a.mk_len, b.mk, b.mk_len) &&
                                same(a.val, a.val_len, b.val, b.val_len)),
                    "entries differ");
      } while (r1 == 1);
    } else if (t1 == SL__SEC_TIMERS) {
      const void *u1, *u2;
      size_t ul1, ul2;
      bool ok1 = sl__rd_bytes(&p, &u1, &ul1);
      bool ok2 = sl__snap_stream_bytes(st, &u2, &ul2) == 1;
      FUZZ_ASSERT(ok1 == ok2 && (!ok1 || same(u1, ul1, u2, ul2)),
                  "timer uids differ");
      sl__snap_timer a, b;
      do {
        r1 = ok1 ? sl__snap_timer_next(&p, &a) : 0;
        r2 = ok1 ? sl__snap_stream_timer(st, &b) : 0;
        FUZZ_ASSERT(r1 == r2, "timer: %d vs %d", r1, r2);
        FUZZ_ASSERT(r1 != 1 ||
                        (a.kg == b.kg && a.domain == b.domain && a.ts == b.ts &&
                         same(a.key, a.key_len, b.key, b.key_len) &&
                         same(a.ns, a.ns_len, b.ns, b.ns_len)),
                    "timers differ");
      } while (r1 == 1);
    } else {
      sl__rd q;
      FUZZ_ASSERT(sl__snap_stream_payload(st, &q) == 0, "payload unread");
      FUZZ_ASSERT(same(p.p, (size_t)(p.end - p.p), q.p, (size_t)(q.end - q.p)),
                  "payloads differ");
    }
  }
  sl__snap_stream_close(st);
}

/* The same bytes read from a file as the check reads it (through, the
 * checksum computed on the way) and as restore does (every other section
 * skipped by offset): the verdict on header and trailer, the sections,
 * their payloads and the checksum's verdict are those of the image. */
static void same_from_file(const uint8_t *data, size_t size) {
  char path[4200];
  snprintf(path, sizeof(path), "%s/w0.snap", fuzz_tmpdir());
  fuzz_write(fuzz_tmpdir(), "w0.snap", data, size);
  for (int sparse = 0; sparse < 2; sparse++) {
    sl__snap_stream *fs, *ms;
    sl__snap_head h1, h2;
    char e1[256], e2[256];
    int r1 = sl__snap_stream_open(&fs, path, NULL, 0,
                                  sparse ? 0 : SL__STREAM_CRC_LAST, &h1, e1,
                                  sizeof(e1));
    int r2 =
        sl__snap_stream_open(&ms, NULL, data, size, 0, &h2, e2, sizeof(e2));
    FUZZ_ASSERT(r1 == r2, "file %d, image %d", r1, r2);
    if (r1) {
      FUZZ_ASSERT(strcmp(e1, e2) == 0, "\"%s\" vs \"%s\"", e1, e2);
      continue;
    }
    for (int i = 0;; i++) {
      uint32_t t1, k1, t2, k2;
      uint64_t l1, l2;
      r1 = sl__snap_stream_next(fs, &t1, &k1, &l1);
      r2 = sl__snap_stream_next(ms, &t2, &k2, &l2);
      FUZZ_ASSERT(r1 == r2, "next: %d vs %d", r1, r2);
      if (r1 != 1)
        break;
      FUZZ_ASSERT(t1 == t2 && k1 == k2 && l1 == l2, "section headers differ");
      if (sparse && i % 2)
        continue; /* skipped: a seek */
      sl__rd p1, p2;
      FUZZ_ASSERT(sl__snap_stream_payload(fs, &p1) == 0, "payload unread");
      FUZZ_ASSERT(sl__snap_stream_payload(ms, &p2) == 0, "payload unread");
      FUZZ_ASSERT(
          same(p1.p, (size_t)(p1.end - p1.p), p2.p, (size_t)(p2.end - p2.p)),
          "payloads differ");
    }
    if (!sparse) {
      uint32_t got;
      sl__snap_head h;
      sl__snap_stream *cs;
      int want = sl__snap_stream_open(&cs, NULL, data, size, SL__STREAM_CRC, &h,
                                      e2, sizeof(e2));
      sl__snap_stream_close(cs);
      r1 = sl__snap_stream_finish(fs, &got, e1, sizeof(e1));
      FUZZ_ASSERT(r1 == want, "checksum verdict %d, expected %d", r1, want);
      FUZZ_ASSERT(got == sl__crc32c(0, data, size), "file checksum differs");
    }
    sl__snap_stream_close(fs);
    sl__snap_stream_close(ms);
  }
}

FUZZ_TARGET(snapshot) {
  walk(data, size);
  same_as_stream(data, size);
  same_from_file(data, size);
  /* The same bytes as the body of a file whose trailer is right. */
  uint8_t *img = malloc(size + SL__SNAP_TRAILER_LEN);
  FUZZ_ASSERT(img, "out of memory");
  memcpy(img, data, size);
  uint64_t len = size;
  uint32_t crc = sl__crc32c(0, data, size);
  for (int i = 0; i < 8; i++)
    img[size + i] = (uint8_t)(len >> (8 * i));
  for (int i = 0; i < 4; i++)
    img[size + 8 + i] = (uint8_t)(crc >> (8 * i));
  memcpy(img + size + 12, SL__SNAP_TRAILER, 8);
  walk(img, size + SL__SNAP_TRAILER_LEN);
  same_as_stream(img, size + SL__SNAP_TRAILER_LEN);
  same_from_file(img, size + SL__SNAP_TRAILER_LEN);
  free(img);
  return 0;
}
