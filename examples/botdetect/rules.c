/* SPDX-License-Identifier: Apache-2.0 */
/* The bot rules (see rules.h): a windowed page count, a session profile,
 * and the regularity of the gaps between pages. */
#include "rules.h"

#include <math.h>
#include <string.h>

bool bot_is_asset(const char *path) {
  static const char *const ext[] = {".css", ".js",  ".png",  ".jpg",
                                    ".ico", ".svg", ".woff2"};
  if (!strncmp(path, "/static/", 8))
    return true;
  const char *dot = strrchr(path, '.');
  for (size_t i = 0; dot && i < sizeof(ext) / sizeof(ext[0]); i++)
    if (!strcmp(dot, ext[i]))
      return true;
  return false;
}

bool bot_rate_hit(int64_t pages) {
  return pages >= BOT_RATE_MIN_PAGES;
}

bool bot_crawler_hit(const bot_session *s) {
  return s->pages >= BOT_CRAWL_MIN_PAGES && s->assets == 0 &&
         s->distinct_paths >= BOT_CRAWL_MIN_DISTINCT &&
         (double)s->not_found >= BOT_CRAWL_MIN_404_SHARE * (double)s->pages;
}

bool bot_regularity_add(bot_regularity *r, int64_t ts) {
  if (r->pages == 0 || ts - r->last >= BOT_RUN_BREAK_MS) {
    *r = (bot_regularity){.start = ts, .last = ts, .pages = 1};
    return false;
  }
  double gap = (double)(ts - r->last);
  int64_t n = r->pages; /* gaps after this one */
  double d = gap - r->mean;
  r->mean += d / (double)n;
  r->m2 += d * (gap - r->mean);
  r->last = ts;
  r->pages++;
  if (r->alerted || r->pages < BOT_REGULAR_MIN_PAGES || r->mean <= 0 ||
      bot_regularity_cv(r) >= BOT_REGULAR_MAX_CV)
    return false;
  r->alerted = 1;
  return true;
}

double bot_regularity_cv(const bot_regularity *r) {
  int64_t gaps = r->pages - 1;
  if (gaps < 1 || r->mean <= 0)
    return 0;
  double var = r->m2 / (double)gaps;
  return sqrt(var > 0 ? var : 0) / r->mean;
}
