/* SPDX-License-Identifier: Apache-2.0 */
/* Processing-time clocks: the system wall clock, and a manual clock that
 * tests move by hand so that time-dependent logic runs without sleeping. */
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "sluice/time.h"

struct sl_clock {
  int manual;
  _Atomic int64_t now;
};

sl_clock_t *sl_clock_new_system(void) {
  sl_clock_t *c = calloc(1, sizeof(*c));
  return c;
}

sl_clock_t *sl_clock_new_manual(int64_t start_ms) {
  sl_clock_t *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  c->manual = 1;
  atomic_init(&c->now, start_ms);
  return c;
}

void sl_clock_destroy(sl_clock_t *clock) {
  free(clock);
}

int64_t sl_clock_now(const sl_clock_t *clock) {
  if (clock && clock->manual)
    return atomic_load(&((sl_clock_t *)clock)->now);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sl_clock_set(sl_clock_t *clock, int64_t now_ms) {
  if (!clock || !clock->manual)
    return SL_ERR_INVAL;
  int64_t cur = atomic_load(&clock->now);
  while (now_ms > cur &&
         !atomic_compare_exchange_weak(&clock->now, &cur, now_ms)) {
  }
  return SL_OK;
}

int sl_clock_advance(sl_clock_t *clock, int64_t delta_ms) {
  if (!clock || !clock->manual || delta_ms < 0)
    return SL_ERR_INVAL;
  atomic_fetch_add(&clock->now, delta_ms);
  return SL_OK;
}
