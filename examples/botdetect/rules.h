/* SPDX-License-Identifier: Apache-2.0 */
/* The bot detection job's two rules as plain functions, so the unit tests
 * check them without Kafka or a running job; docs/examples.md explains the
 * thresholds against the generator's model of people and bots. */
#ifndef BOT_RULES_H
#define BOT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* request_rate: at least RATE_MIN requests from one IP in a sliding 10 s
 * window (slide 2 s). A person reading pages makes a few. */
#define BOT_RATE_SIZE_MS 10000
#define BOT_RATE_SLIDE_MS 2000
#define BOT_RATE_MIN 30

bool bot_rate_hit(int64_t requests);

/* regular_timing: a session (requests of one IP with gaps under 30 s) of at
 * least REGULAR_MIN requests whose gaps vary little: coefficient of
 * variation (stddev / mean) under REGULAR_MAX_CV. People read for random
 * times (CV near 1); a scheduler ticks (CV near 0), however slowly. */
#define BOT_SESSION_GAP_MS 30000
#define BOT_REGULAR_MIN 15
#define BOT_REGULAR_MAX_CV 0.25

/* Sorts ts[0..n) and sets the mean gap (ms) and its coefficient of
 * variation; returns true when the session looks scheduled. */
bool bot_regular_check(int64_t *ts, size_t n, double *mean_gap, double *cv);

#endif
