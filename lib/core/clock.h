/* SPDX-License-Identifier: Apache-2.0 */
/* The library's own readings of the system clocks, for what is measured
 * in real time whatever the job's processing-time clock (timeouts, pauses,
 * durations, metrics timestamps). Processing time seen by operators comes
 * from the job's sl_clock_t (sluice/time.h), never from these. */
#ifndef SL_CORE_CLOCK_H
#define SL_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t sl__clock_ms(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic milliseconds (durations, deadlines). */
static inline int64_t sl__mono_ms(void) {
  return sl__clock_ms(CLOCK_MONOTONIC);
}
/* Monotonic nanoseconds (short waits). */
static inline int64_t sl__mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
/* Monotonic milliseconds at tick resolution, for a hot loop that only
 * needs to notice that about a second went by. */
static inline int64_t sl__mono_coarse_ms(void) {
  return sl__clock_ms(CLOCK_MONOTONIC_COARSE);
}
/* Milliseconds since the epoch (timestamps shown to people). */
static inline int64_t sl__wall_ms(void) {
  return sl__clock_ms(CLOCK_REALTIME);
}

#endif
