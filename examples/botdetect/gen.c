/* SPDX-License-Identifier: Apache-2.0 */
/* botdetect-gen: web requests for the bot detection example. People visit
 * in sessions of a few pages (each with its assets) with random reading
 * times; labelled bots, each from its own IP, scrape fast, poll on a timer,
 * or crawl without assets probing for paths that are not there.
 * Same seed, same records; the model is in docs/examples.md. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/exutil.h"

#define PROG "botdetect-gen"

/* Human near misses: one visit in SLIDESHOW_EVERY is a slideshow, one in
 * CACHED_EVERY fetches no assets, one page in TABS_EVERY opens a burst of
 * tabs. */
#define SLIDESHOW_EVERY 100.0
#define CACHED_EVERY 30.0
#define TABS_EVERY 50.0

static const char *const agents[] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/120.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14) Chrome/119.0 Mobile",
};

typedef struct gen {
  ex_rng rng;
  ex_queue q;
  FILE *labels;
  int64_t max_delay;
  long long queued;
  uint64_t labelled[3];
} gen;

static const char *const rule_names[3] = {"request_rate", "regular_timing",
                                          "crawler_session"};

static int queue_req(gen *g, const char *ip, int64_t ts, const char *ua,
                     const char *path, int status) {
  char json[320];
  snprintf(json, sizeof(json),
           "{\"type\":\"req\",\"ip\":\"%s\",\"ts\":%" PRId64
           ",\"path\":\"%s\",\"status\":%d,\"ua\":\"%s\"}",
           ip, ts, path, status, ua);
  g->queued++;
  return ex_queue_push(&g->q, ts + ex_rng_range(&g->rng, 0, g->max_delay), ip,
                       json, ts);
}

/* A page and, unless cached, the 2-5 assets a browser fetches for it within
 * 400 ms. People favour popular items: the item number is log-uniform. */
static int page_view(gen *g, const char *ip, int64_t t, const char *ua,
                     bool assets) {
  static const char *const files[] = {"/static/app.js", "/static/app.css",
                                      "/static/logo.svg", "/favicon.ico"};
  char path[64];
  int item = (int)exp(ex_rng_unit(&g->rng) * log(5000.0));
  snprintf(path, sizeof(path), "/item/%d", item);
  bool missing = ex_rng_unit(&g->rng) < 0.02;
  if (queue_req(g, ip, t, ua, path, missing ? 404 : 200))
    return -1;
  int n = assets && !missing ? (int)ex_rng_range(&g->rng, 2, 5) : 0;
  for (int i = 0; i < n; i++) {
    const char *f = files[i % 4];
    char img[64];
    if (i >= 4) {
      snprintf(img, sizeof(img), "/img/%d.png", item);
      f = img;
    }
    if (queue_req(g, ip, t + ex_rng_range(&g->rng, 20, 400), ua, f, 200))
      return -1;
  }
  return 0;
}

/* A visit: 1 + geometric(mean 9) pages, reading each for 300 ms plus an
 * exponential time of mean 7.7 s. Near misses (docs/examples.md): cached
 * visits fetch no assets, some pages open a burst of tabs (up to 15 pages
 * within 5 s), some visits are a slideshow (20-40 pages every 1.5-9 s:
 * steadier than reading, not as steady as a scheduler). */
static int human_session(gen *g, long long who, int64_t t) {
  char ip[32];
  snprintf(ip, sizeof(ip), "10.%lld.%lld.%lld", (who >> 16) & 255,
           (who >> 8) & 255, who & 255);
  const char *ua = agents[who % 3];
  bool slideshow = ex_rng_unit(&g->rng) < 1.0 / SLIDESHOW_EVERY;
  bool cached = ex_rng_unit(&g->rng) < 1.0 / CACHED_EVERY;
  int pages = 1;
  if (slideshow)
    pages = (int)ex_rng_range(&g->rng, 20, 40);
  else
    while (ex_rng_unit(&g->rng) < 0.9)
      pages++;
  for (int i = 0; i < pages; i++) {
    if (page_view(g, ip, t, ua, !cached))
      return -1;
    if (!slideshow && ex_rng_unit(&g->rng) < 1.0 / TABS_EVERY) {
      int tabs = (int)ex_rng_range(&g->rng, 5, 14);
      for (int k = 0; k < tabs; k++)
        if (page_view(g, ip, t + ex_rng_range(&g->rng, 50, 5000), ua, !cached))
          return -1;
    }
    t += slideshow ? ex_rng_range(&g->rng, 1500, 9000)
                   : 300 + (int64_t)ex_rng_exp(&g->rng, 7700);
  }
  return 0;
}

/* A bot of kind rule from a fresh IP, starting after t; each shows one
 * trait and passes the other two rules:
 * - request_rate: a headless browser scraping 80 pages (with assets) with
 *   exponential gaps of mean 120 ms (about 10 s);
 * - regular_timing: a headless browser on a timer, 40 pages every
 *   2 s +- 50 ms (78 s), with assets;
 * - crawler_session: a script reading 30-50 pages at a person's pace, no
 *   assets, every third one a probe that is not found. */
static int bot(gen *g, int rule, int n, int64_t t) {
  static const char *const probes[] = {"/wp-login.php", "/.env",
                                       "/admin",        "/phpmyadmin",
                                       "/.git/config",  "/backup.zip"};
  char ip[32], path[64];
  snprintf(ip, sizeof(ip), "172.16.%d.%d", (n >> 8) & 255, n & 255);
  const char *ua = rule == 2 ? "python-requests/2.31" : agents[n % 3];
  int64_t first = t + ex_rng_range(&g->rng, 0, 5000), ts = first;
  int count = rule == 0   ? 80
              : rule == 1 ? 40
                          : (int)ex_rng_range(&g->rng, 30, 50);
  for (int i = 0; i < count; i++) {
    if (i)
      ts += rule == 0   ? 1 + (int64_t)ex_rng_exp(&g->rng, 120)
            : rule == 1 ? 2000 + ex_rng_range(&g->rng, -50, 50)
                        : 300 + (int64_t)ex_rng_exp(&g->rng, 3000);
    int rc;
    if (rule < 2) {
      rc = page_view(g, ip, ts, ua, true);
    } else if (i % 3 == 0) {
      snprintf(path, sizeof(path), "%s%s", probes[ex_rng_range(&g->rng, 0, 5)],
               i % 2 ? "" : ".bak");
      rc = queue_req(g, ip, ts, ua, path, 404);
    } else {
      snprintf(path, sizeof(path), "/item/%d",
               (int)ex_rng_range(&g->rng, 1, 5000));
      rc = queue_req(g, ip, ts, ua, path, 200);
    }
    if (rc)
      return -1;
  }
  fprintf(g->labels,
          "{\"rule\":\"%s\",\"entity\":\"%s\",\"start\":%" PRId64
          ",\"end\":%" PRId64 "}\n",
          rule_names[rule], ip, first, ts);
  g->labelled[rule]++;
  return 0;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: " PROG " [--brokers host:port | --bootstrap-file F] "
          "[--topic botdetect.requests]\n"
          "       [--labels botdetect-labels.jsonl] [--events N] [--rate R] "
          "[--people N] [--seed S]\n"
          "       [--inject-every N] [--max-delay-ms MS]\n"
          "Writes about N requests (0 = until killed) at R records/s (0 = as "
          "fast as possible),\n"
          "and the bots to the labels file.\n");
}

int main(int argc, char **argv) {
  const char *brokers = NULL, *bootstrap = NULL, *topic = "botdetect.requests";
  const char *labels_path = "botdetect-labels.jsonl";
  long long events = 100000, people = 3000, seed = 1, inject_every = 10;
  long long max_delay = 2000;
  double rate = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!v) {
      usage(stderr);
      return 2;
    }
    i++;
    if (!strcmp(a, "--brokers"))
      brokers = v;
    else if (!strcmp(a, "--bootstrap-file"))
      bootstrap = v;
    else if (!strcmp(a, "--topic"))
      topic = v;
    else if (!strcmp(a, "--labels"))
      labels_path = v;
    else if (!strcmp(a, "--events"))
      events = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--rate"))
      rate = ex_arg_double(PROG, a, v);
    else if (!strcmp(a, "--people"))
      people = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--seed"))
      seed = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--inject-every"))
      inject_every = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--max-delay-ms"))
      max_delay = ex_arg_ll(PROG, a, v);
    else {
      usage(stderr);
      return 2;
    }
  }
  if (people < 10 || people > 1 << 24 || inject_every < 1 || max_delay < 0 ||
      events < 0) {
    fprintf(stderr, PROG ": --people must be 10..16777216, --inject-every "
                         ">= 1, --max-delay-ms and --events >= 0\n");
    return 2;
  }
  char addr[512];
  if (ex_resolve_brokers(brokers, bootstrap, 10000, addr, sizeof(addr)))
    return 1;
  gen g = {.max_delay = max_delay};
  ex_rng_seed(&g.rng, (uint64_t)seed);
  if (!(g.labels = fopen(labels_path, "w"))) {
    perror(labels_path);
    return 1;
  }
  ex_producer *p = ex_producer_new(addr, topic, rate, 0);
  if (!p)
    return 1;
  /* Each person starts a visit on average every 20 minutes of event time:
   * together a Poisson stream of people/1200 visits per second. */
  const double gap_ms = 1200000.0 / (double)people;
  int64_t t = EX_EPOCH_MS, last = t;
  int rc = 0, bots = 0;
  while (!rc && (events == 0 || g.queued < events)) {
    t += (int64_t)ceil(ex_rng_exp(&g.rng, gap_ms));
    rc = human_session(&g, ex_rng_range(&g.rng, 0, people - 1), t);
    if (!rc && ex_rng_unit(&g.rng) < 1.0 / (double)inject_every) {
      rc = bot(&g, bots % 3, bots, t);
      bots++;
    }
    if (!rc)
      rc = ex_queue_send_due(&g.q, p, t, &last);
  }
  /* The rest. */
  if (!rc)
    rc = ex_queue_send_due(&g.q, p, INT64_MAX, &last);
  if (ex_producer_close(p))
    rc = 1;
  if (fclose(g.labels))
    rc = 1;
  ex_queue_free(&g.q);
  fprintf(stderr,
          PROG ": %lld requests, %.1f min of event time; labelled "
               "request_rate %" PRIu64 ", regular_timing %" PRIu64
               ", crawler_session %" PRIu64 "%s\n",
          g.queued, (double)(last - EX_EPOCH_MS) / 60000.0, g.labelled[0],
          g.labelled[1], g.labelled[2], rc ? " (FAILED)" : "");
  return rc ? 1 : 0;
}
