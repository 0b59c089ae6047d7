/* SPDX-License-Identifier: Apache-2.0 */
/* The bot rules (see rules.h): a windowed request count and the regularity
 * of the gaps within a session. */
#include "rules.h"

#include <math.h>
#include <stdlib.h>

bool bot_rate_hit(int64_t requests) {
  return requests >= BOT_RATE_MIN;
}

static int cmp_ts(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

bool bot_regular_check(int64_t *ts, size_t n, double *mean_gap, double *cv) {
  *mean_gap = 0;
  *cv = 0;
  if (n < 2)
    return false;
  /* Window elements come in arrival order, which the network shuffles. */
  qsort(ts, n, sizeof(*ts), cmp_ts);
  double sum = 0, sq = 0;
  for (size_t i = 1; i < n; i++) {
    double g = (double)(ts[i] - ts[i - 1]);
    sum += g;
    sq += g * g;
  }
  double k = (double)(n - 1), mean = sum / k;
  double var = sq / k - mean * mean;
  *mean_gap = mean;
  *cv = mean > 0 ? sqrt(var > 0 ? var : 0) / mean : 0;
  return n >= BOT_REGULAR_MIN && mean > 0 && *cv < BOT_REGULAR_MAX_CV;
}
