/* SPDX-License-Identifier: Apache-2.0 */
/* Timer service throughput: 10^7 event-time timers over 10^5 keys with
 * pseudo-random timestamps in a window that moves with the watermark,
 * fired by advancing the watermark step by step, as a keyed operator does.
 * Prints one line: bench=timers timers=... keys=... seconds=... */
#include "bench.h"
#include "core/hash.h"
#include "sluice/common.h"
#include "time/timers.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_TIMERS 10000000u
#define N_KEYS 100000u
#define MAX_PAR 128u
/* Timers registered per watermark step and the width of the window their
 * timestamps fall in: about PER_STEP * WINDOW / 2 = 500k pending timers. */
#define PER_STEP 1000u
#define WINDOW 1000u

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static inline uint64_t rnd(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545f4914f6cdd1dULL;
}

int main(void) {
  /* Keys, their hashes and key groups are computed once up front, as the
   * exchange does before records reach the operator. */
  char(*keys)[8] = malloc(N_KEYS * sizeof *keys);
  uint64_t *hash = malloc(N_KEYS * sizeof *hash);
  struct sl__timers *t = NULL;
  if (!keys || !hash || sl__timers_new(&t) != SL_OK) {
    fprintf(stderr, "bench=timers error=nomem\n");
    return 1;
  }
  for (uint32_t i = 0; i < N_KEYS; i++) {
    char tmp[16];
    snprintf(tmp, sizeof tmp, "k%07u", (unsigned)i);
    memcpy(keys[i], tmp, 8);
    hash[i] = sl__hash64(keys[i], 8);
  }

  uint64_t fired = 0;
  int64_t wm = 0, last = SL_TS_MIN;
  sl__timer_view v;
  double t0 = bench_now();
  for (uint32_t added = 0; added < N_TIMERS;) {
    for (uint32_t j = 0; j < PER_STEP && added < N_TIMERS; j++, added++) {
      uint64_t x = rnd();
      uint32_t k = (uint32_t)(x % N_KEYS);
      int64_t ts = wm + 1 + (int64_t)((x >> 40) % WINDOW);
      if (sl__timers_add(t, SL__TIMER_EVENT, ts, hash[k],
                         sl__key_group(hash[k], MAX_PAR), keys[k], 8, NULL,
                         0) != SL_OK) {
        fprintf(stderr, "bench=timers error=add\n");
        return 1;
      }
    }
    wm++;
    while (sl__timers_pop(t, SL__TIMER_EVENT, wm, &v) == 1) {
      last = v.ts;
      fired++;
    }
  }
  while (sl__timers_pop(t, SL__TIMER_EVENT, SL_TS_MAX, &v) == 1) {
    if (v.ts < last) {
      fprintf(stderr, "bench=timers error=order\n");
      return 1;
    }
    last = v.ts;
    fired++;
  }
  double secs = bench_now() - t0;
  /* Equal (key, ts) pairs are merged, so a few fewer timers fire than
   * were registered; far fewer would mean a bug. */
  if (fired > N_TIMERS || fired < N_TIMERS / 100 * 99) {
    fprintf(stderr, "bench=timers error=fired fired=%llu\n",
            (unsigned long long)fired);
    return 1;
  }
  printf("bench=timers timers=%u keys=%u seconds=%.3f timers_per_sec=%.0f\n",
         N_TIMERS, N_KEYS, secs, N_TIMERS / secs);
  sl__timers_free(t);
  free(keys);
  free(hash);
  return 0;
}
