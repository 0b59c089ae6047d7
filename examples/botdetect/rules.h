/* SPDX-License-Identifier: Apache-2.0 */
/* The bot detection job's three rules as plain functions, so the unit
 * tests check them without Kafka or a running job; docs/examples.md
 * explains the thresholds against the generator's model of people and
 * bots. */
#ifndef BOT_RULES_H
#define BOT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request as the job carries it between operators (fixed size). */
typedef struct bot_req {
  int32_t status;
  char path[92];
} bot_req;

/* Static files a browser fetches for a page (scripts, styles, images). */
bool bot_is_asset(const char *path);

/* request_rate: at least RATE_MIN_PAGES page requests (assets not counted:
 * a browser fetches several per page) from one IP in a sliding 10 s window
 * (slide 2 s). */
#define BOT_RATE_SIZE_MS 10000
#define BOT_RATE_SLIDE_MS 2000
#define BOT_RATE_MIN_PAGES 30

bool bot_rate_hit(int64_t pages);

/* crawler_session: a session (requests of one IP with gaps under 30 s) of
 * at least CRAWL_MIN_PAGES pages over CRAWL_MIN_DISTINCT distinct paths,
 * without a single asset, where at least CRAWL_MIN_404_SHARE of the pages
 * were not found: something that reads HTML and probes for paths. */
#define BOT_SESSION_GAP_MS 30000
#define BOT_CRAWL_MIN_PAGES 15
#define BOT_CRAWL_MIN_DISTINCT 10
#define BOT_CRAWL_MIN_404_SHARE 0.2

typedef struct bot_session {
  int64_t requests, pages, assets, not_found, distinct_paths;
} bot_session;

bool bot_crawler_hit(const bot_session *s);

/* regular_timing: a run of page requests from one IP (gaps under 30 s),
 * taken in event-time order, of at least REGULAR_MIN_PAGES pages whose gaps
 * vary little: coefficient of variation (stddev / mean) under
 * REGULAR_MAX_CV. People read for random times (CV near 1); a scheduler
 * ticks (CV near 0), however slowly. */
#define BOT_RUN_BREAK_MS 30000
#define BOT_REGULAR_MIN_PAGES 15
#define BOT_REGULAR_MAX_CV 0.25

typedef struct bot_regularity {
  int64_t start, last; /* first and latest page of the run */
  int64_t pages;
  double mean, m2; /* Welford's running mean and squared deviations */
  int64_t alerted; /* the run was reported */
} bot_regularity;

/* Adds a page request at ts (not before the previous one). Returns true
 * the first time the run looks scheduled. */
bool bot_regularity_add(bot_regularity *r, int64_t ts);
/* Coefficient of variation of the run's gaps (0 with fewer than 2). */
double bot_regularity_cv(const bot_regularity *r);

#endif
