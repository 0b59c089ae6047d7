/* SPDX-License-Identifier: Apache-2.0 */
/* The worker snapshot file reader (lib/checkpoint/format.c): the file
 * check and every section decoder, on the input as is and on the input
 * with a valid trailer appended (so mutations get past the checksum and
 * reach the section decoders restore and sluice-ckpt run). */
#include <string.h>

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
        (void)sl__layout_diff(r.layout, r.layout_len, "kind=value ttl=off", why,
                              sizeof(why));
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

FUZZ_TARGET(snapshot) {
  walk(data, size);
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
  free(img);
  return 0;
}
