/* SPDX-License-Identifier: Apache-2.0 */
/* scoring-gen: user events (sessions of page views, purchases and logins)
 * from humans and bots, deterministic from --seed, as JSON to Kafka, with
 * each user's label (bot or not) in the labels file. Bots browse faster,
 * over more pages, log in more and buy less; some are slow and some humans
 * are fast, so the features separate them well but not perfectly. With
 * --publish-model it also writes a model to the models topic, effective
 * from an event time. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/exutil.h"
#include "userfeatures.h"

#define PROG "scoring-gen"

typedef struct ev {
  int64_t ts;
  uint64_t seq;
  int user, kind, page;
  double amount;
} ev;

typedef struct evs {
  ev *v;
  size_t n, cap;
} evs;

static int push(evs *e, ev x) {
  if (e->n == e->cap) {
    size_t cap = e->cap ? 2 * e->cap : 4096;
    ev *nv = realloc(e->v, cap * sizeof(ev));
    if (!nv)
      return -1;
    e->v = nv;
    e->cap = cap;
  }
  x.seq = e->n;
  e->v[e->n++] = x;
  return 0;
}

static int by_time(const void *a, const void *b) {
  const ev *x = a, *y = b;
  if (x->ts != y->ts)
    return x->ts < y->ts ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* One user's events over span_ms: sessions separated by long pauses. */
static int user_events(ex_rng *r, evs *out, int user, int bot,
                       int64_t span_ms) {
  /* Humans: a session about every 90 min, ~8 events 45 s apart, a few
   * favourite pages; 1 in 10 is a fast human. Bots: ~60 events 3 s apart
   * over all pages; 1 in 3 is slow. */
  bool fast = !bot && ex_rng_unit(r) < 0.1, slow = bot && ex_rng_unit(r) < 0.33;
  double sess_gap = bot ? 3600e3 : 5400e3;
  double sess_len = bot ? 60 : 8;
  double gap = bot ? (slow ? 15e3 : 3e3) : (fast ? 12e3 : 45e3);
  int fav = (int)ex_rng_range(r, 0, SC_PAGES - 1);
  int64_t t = (int64_t)ex_rng_exp(r, sess_gap / 2);
  while (t < span_ms) {
    int n = 1 + (int)ex_rng_exp(r, sess_len);
    bool login = bot || ex_rng_unit(r) < 0.7;
    for (int i = 0; i < n && t < span_ms; i++) {
      ev e = {.ts = EX_EPOCH_MS + t, .user = user, .kind = SC_VIEW};
      double u = ex_rng_unit(r);
      if ((i == 0 && login) || u < (bot ? 0.05 : 0.01))
        e.kind = SC_LOGIN;
      else if (u < (bot ? 0.06 : 0.09)) {
        e.kind = SC_PURCHASE;
        e.amount = round(100 * exp(3.5 + 0.6 * ex_rng_normal(r))) / 100;
      }
      e.page = bot ? (int)ex_rng_range(r, 0, SC_PAGES - 1)
                   : (fav + (int)ex_rng_range(r, 0, 5)) % SC_PAGES;
      if (push(out, e))
        return -1;
      t += 1 + (int64_t)ex_rng_exp(r, gap);
    }
    t += (int64_t)ex_rng_exp(r, sess_gap);
  }
  return 0;
}

/* Sends a model file to topic as {"ts":<effective from>,"model":{...}}. */
static int publish_model(const char *brokers, const char *topic,
                         const char *path, int64_t ts) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    return -1;
  }
  static char body[1 << 20];
  size_t n = fread(body, 1, sizeof(body) - 1, f);
  fclose(f);
  body[n] = '\0';
  size_t cap = n + 64;
  char *msg = malloc(cap);
  if (!msg)
    return -1;
  int len = snprintf(msg, cap, "{\"ts\":%" PRId64 ",\"model\":%s}", ts, body);
  ex_producer *p = ex_producer_new(brokers, topic, 0, 0);
  int rc = !p || ex_producer_send(p, "model", 0, msg, (size_t)len, ts) ? -1 : 0;
  if (p && ex_producer_close(p))
    rc = -1;
  free(msg);
  return rc;
}

static void usage(FILE *f) {
  fprintf(f, "usage: " PROG " [--brokers host:port | --bootstrap-file F] "
             "[--topic T] [--labels FILE]\n"
             "       [--events N] [--users N] [--rate R] [--seed S] "
             "[--max-delay-ms MS] [--batch N]\n"
             "       [--publish-model FILE [--at-ms MS] [--models-topic T]]\n"
             "Writes about N user events (default 40000) of N users (default "
             "events / 60) to\n"
             "T (scoring.events), each delivered up to --max-delay-ms late, "
             "and each user's label\n"
             "({\"user\",\"bot\"}) to the labels file. --publish-model first "
             "writes the model in\n"
             "FILE to the models topic (scoring.models), effective from event "
             "time epoch + MS;\n"
             "with --events 0 it writes only the model.\n");
}

int main(int argc, char **argv) {
  const char *brokers = NULL, *bootstrap = NULL, *topic = "scoring.events";
  const char *labels_path = "scoring-labels.jsonl", *model = NULL;
  const char *models_topic = "scoring.models";
  long long events = 40000, users = 0, seed = 1, max_delay = 2000, batch = 0;
  long long at_ms = 0;
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
    else if (!strcmp(a, "--users"))
      users = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--rate"))
      rate = ex_arg_double(PROG, a, v);
    else if (!strcmp(a, "--seed"))
      seed = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--max-delay-ms"))
      max_delay = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--batch"))
      batch = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--publish-model"))
      model = v;
    else if (!strcmp(a, "--at-ms"))
      at_ms = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--models-topic"))
      models_topic = v;
    else {
      usage(stderr);
      return 2;
    }
  }
  if (!users)
    users = events / 60 + 1;
  if (events < 0 || users < 1 || users > 9999999 || max_delay < 0 ||
      batch < 0) {
    fprintf(stderr, PROG ": --events >= 0, --users 1..9999999, "
                         "--max-delay-ms and --batch >= 0\n");
    return 2;
  }
  char addr[512];
  if (ex_resolve_brokers(brokers, bootstrap, 10000, addr, sizeof(addr)))
    return 1;
  /* The model first: a bounded job started after the generator reads
   * both topics whole, whichever order they were written in. */
  if (model && publish_model(addr, models_topic, model, EX_EPOCH_MS + at_ms))
    return 1;
  if (!events)
    return 0;
  ex_rng rng;
  ex_rng_seed(&rng, (uint64_t)seed);
  FILE *labels = fopen(labels_path, "w");
  if (!labels) {
    perror(labels_path);
    return 1;
  }
  /* Four hours of event time; the sorted events are cut at N. */
  evs all = {0};
  int rc = 0, bots = 0;
  for (int u = 0; u < users && !rc; u++) {
    int bot = ex_rng_unit(&rng) < 0.2;
    bots += bot;
    fprintf(labels, "{\"user\":\"u%d\",\"bot\":%d}\n", u, bot);
    rc = user_events(&rng, &all, u, bot, 4 * 3600 * 1000);
  }
  if (rc || fclose(labels)) {
    fprintf(stderr, PROG ": out of memory or cannot write %s\n", labels_path);
    return 1;
  }
  qsort(all.v, all.n, sizeof(ev), by_time);
  if (all.n > (size_t)events)
    all.n = (size_t)events;
  ex_producer *p = ex_producer_new(addr, topic, rate, (int)batch);
  if (!p)
    return 1;
  ex_queue q = {0};
  int64_t last = EX_EPOCH_MS;
  char key[16], json[256];
  for (size_t i = 0; i < all.n && !rc; i++) {
    const ev *e = &all.v[i];
    snprintf(key, sizeof(key), "u%d", e->user);
    snprintf(json, sizeof(json),
             "{\"type\":\"event\",\"id\":\"e%zu\",\"user\":\"%s\",\"kind\":"
             "\"%s\",\"page\":%d,\"amount\":%.2f,\"ts\":%" PRId64 "}",
             i, key, sc_kind_name(e->kind), e->page, e->amount, e->ts);
    int64_t delay = max_delay ? ex_rng_range(&rng, 0, max_delay) : 0;
    rc = ex_queue_push(&q, e->ts + delay, key, json, e->ts) ||
         ex_queue_send_due(&q, p, e->ts, &last);
  }
  if (!rc)
    rc = ex_queue_send_due(&q, p, INT64_MAX, &last);
  if (ex_producer_close(p))
    rc = 1;
  ex_queue_free(&q);
  fprintf(stderr,
          PROG ": %zu events of %lld users (%d bots), %.1f min of event "
               "time%s\n",
          all.n, users, bots, (double)(last - EX_EPOCH_MS) / 60000.0,
          rc ? " (FAILED)" : "");
  free(all.v);
  return rc ? 1 : 0;
}
