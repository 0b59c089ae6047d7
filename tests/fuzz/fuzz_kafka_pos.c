/* SPDX-License-Identifier: Apache-2.0 */
/* The Kafka source's position decoder (lib/kafka/common.c) on any blob a
 * damaged checkpoint could hold: it either rejects the blob or yields
 * entries that encode back to a blob decoding to the same entries. */
#include <string.h>

#include "core/buf.h"
#include "fuzz.h"
#include "kafka/kafka_int.h"
#include "sluice.h"

#define MAX_ENTRIES 64

typedef struct seen {
  char group[512];
  char *topic[MAX_ENTRIES];
  int32_t part[MAX_ENTRIES];
  int64_t off[MAX_ENTRIES];
  sl__kpos_time time[MAX_ENTRIES];
  bool timed;
  size_t n;
} seen;

static int visit(const char *group, const char *topic, int32_t partition,
                 int64_t offset, const sl__kpos_time *t, void *arg) {
  seen *s = arg;
  if (s->n == MAX_ENTRIES)
    return 1; /* enough: stops the decoder, which must say so */
  snprintf(s->group, sizeof(s->group), "%s", group);
  s->topic[s->n] = strdup(topic);
  FUZZ_ASSERT(s->topic[s->n], "out of memory");
  s->part[s->n] = partition;
  s->off[s->n] = offset;
  s->timed = t != NULL;
  if (t)
    s->time[s->n] = *t;
  s->n++;
  return 0;
}

static void seen_free(seen *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->topic[i]);
}

FUZZ_TARGET(kafka_pos) {
  seen *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
  FUZZ_ASSERT(a && b, "out of memory");
  sl_blob_t blob = {data, size};
  int rc = sl__kpos_decode_time(&blob, visit, a);
  FUZZ_ASSERT(rc == SL_OK || rc == SL_ERR_CORRUPT || rc == 1, "rc %d", rc);
  /* The plain decoder agrees with the timed one on what is well formed. */
  if (rc == SL_OK && size > 0) {
    sl_buf_t out = {0};
    const char *topic[MAX_ENTRIES];
    for (size_t i = 0; i < a->n; i++)
      topic[i] = a->topic[i];
    int e = a->timed
                ? sl__kpos_encode_time(&out, a->group, topic, a->part, a->off,
                                       a->time, a->n)
                : sl__kpos_encode(&out, a->group, topic, a->part, a->off, a->n);
    FUZZ_ASSERT(e == SL_OK, "encode: %d", e);
    sl_blob_t again = {out.data, out.len};
    FUZZ_ASSERT(sl__kpos_decode_time(&again, visit, b) == SL_OK,
                "a re-encoded blob does not decode");
    FUZZ_ASSERT(a->n == b->n && a->timed == b->timed &&
                    strcmp(a->group, b->group) == 0,
                "entries %zu vs %zu", a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
      FUZZ_ASSERT(strcmp(a->topic[i], b->topic[i]) == 0 &&
                      a->part[i] == b->part[i] && a->off[i] == b->off[i],
                  "entry %zu differs after a round trip", i);
      FUZZ_ASSERT(!a->timed || (a->time[i].max_ts == b->time[i].max_ts &&
                                a->time[i].idle == b->time[i].idle &&
                                a->time[i].finished == b->time[i].finished),
                  "event time of entry %zu differs after a round trip", i);
    }
    sl__buf_free(&out);
  }
  seen_free(a);
  seen_free(b);
  free(a);
  free(b);
  return 0;
}
