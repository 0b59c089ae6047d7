/* SPDX-License-Identifier: Apache-2.0 */
/* Timer service throughput: 10^7 event-time timers over 10^5 keys with
 * pseudo-random timestamps in a window that moves with the watermark,
 * fired by advancing the watermark step by step, as a keyed operator does.
 * Prints one line: bench=timers timers=... keys=... seconds=...
 * timers_per_sec=... and the ratio to a minimal baseline run in the same
 * process (see baseline()). */
#include "bench.h"
#include "core/hash.h"
#include "sluice/common.h"
#include "time/timers.h"

#include <stdbool.h>
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

/* The next registration at watermark wm: its key index in *k and its
 * timestamp, from the same sequence for the baseline and the queue. */
static inline int64_t next_timer(int64_t wm, uint32_t *k) {
  uint64_t x = rnd();
  *k = (uint32_t)(x % N_KEYS);
  return wm + 1 + (int64_t)((x >> 40) % WINDOW);
}

/* The baseline, run first in the same process: the same registrations
 * and firings through the least a timer queue can do for this input, a
 * ring of WINDOW + 1 arrays indexed by ts (timestamps here never lie
 * further ahead), appended to and read back in order, with no
 * deduplication, no namespace, no delete and no restore. Returns the
 * timers fired; *secs gets the time. */
static uint64_t baseline(const uint64_t *hash, double *secs) {
  enum { SLOTS = WINDOW + 1 };
  uint32_t *len = calloc(SLOTS, sizeof *len);
  uint32_t *cap = calloc(SLOTS, sizeof *cap);
  uint64_t **arr = calloc(SLOTS, sizeof *arr);
  if (!len || !cap || !arr)
    return 0;
  uint64_t fired = 0, sum = 0;
  int64_t wm = 0;
  rng = 0x9e3779b97f4a7c15ULL;
  double t0 = bench_now();
  for (uint32_t added = 0; added < N_TIMERS;) {
    for (uint32_t j = 0; j < PER_STEP && added < N_TIMERS; j++, added++) {
      uint32_t k;
      int64_t ts = next_timer(wm, &k);
      size_t slot = (size_t)(ts % SLOTS);
      if (len[slot] == cap[slot]) {
        cap[slot] = cap[slot] ? cap[slot] * 2 : 64;
        arr[slot] = realloc(arr[slot], cap[slot] * sizeof **arr);
        if (!arr[slot])
          return 0;
      }
      arr[slot][len[slot]++] = hash[k] ^ (uint64_t)ts;
    }
    wm++;
    size_t slot = (size_t)(wm % SLOTS);
    for (uint32_t i = 0; i < len[slot]; i++, fired++)
      sum += arr[slot][i];
    len[slot] = 0;
  }
  for (int64_t end = wm + SLOTS; wm < end;) {
    size_t slot = (size_t)(++wm % SLOTS);
    for (uint32_t i = 0; i < len[slot]; i++, fired++)
      sum += arr[slot][i];
    len[slot] = 0;
  }
  *secs = bench_now() - t0;
  for (size_t i = 0; i < SLOTS; i++)
    free(arr[i]);
  free(arr);
  free(len);
  free(cap);
  return fired + (sum == 42); /* keeps the reads */
}

/* argv[1] "service" skips the baseline (for instruction counts of the
 * timer service alone). */
int main(int argc, char **argv) {
  bool service_only = argc > 1 && strcmp(argv[1], "service") == 0;
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

  double base_secs = 0;
  uint64_t base_fired = service_only ? N_TIMERS : baseline(hash, &base_secs);
  if (base_fired < N_TIMERS) {
    fprintf(stderr, "bench=timers error=baseline fired=%llu\n",
            (unsigned long long)base_fired);
    return 1;
  }
  rng = 0x9e3779b97f4a7c15ULL;
  uint64_t fired = 0;
  int64_t wm = 0, last = SL_TS_MIN;
  sl__timer_view v;
  double t0 = bench_now();
  for (uint32_t added = 0; added < N_TIMERS;) {
    for (uint32_t j = 0; j < PER_STEP && added < N_TIMERS; j++, added++) {
      uint32_t k;
      int64_t ts = next_timer(wm, &k);
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
  printf("bench=timers timers=%u keys=%u fired=%llu seconds=%.3f "
         "timers_per_sec=%.0f baseline_per_sec=%.0f ratio_to_baseline=%.2f\n",
         N_TIMERS, N_KEYS, (unsigned long long)fired, secs, N_TIMERS / secs,
         N_TIMERS / base_secs, base_secs / secs);
  sl__timers_free(t);
  free(keys);
  free(hash);
  return 0;
}
