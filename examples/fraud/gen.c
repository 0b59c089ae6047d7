/* SPDX-License-Identifier: Apache-2.0 */
/* fraud-gen: card transactions for the fraud example. Honest cards pay
 * near home at random times; a few labelled cards get one injected fraud
 * each (a burst, an outsized amount, or a payment on another continent).
 * Same seed, same records; the model is in docs/examples.md. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/exutil.h"
#include "rules.h"

#define PROG "fraud-gen"

/* Honest near misses, one in this many payments. */
#define TRIP_EVERY 500.0
#define BURST_EVERY 300.0
#define BIG_EVERY 200.0

typedef struct city {
  const char *name;
  double lat, lon;
} city;

static const city cities[] = {
    {"London", 51.51, -0.13},      {"Paris", 48.86, 2.35},
    {"Berlin", 52.52, 13.40},      {"Madrid", 40.42, -3.70},
    {"New York", 40.71, -74.01},   {"Chicago", 41.88, -87.63},
    {"São Paulo", -23.55, -46.63}, {"Tokyo", 35.68, 139.69},
    {"Singapore", 1.35, 103.82},   {"Sydney", -33.87, 151.21},
    {"Mumbai", 19.08, 72.88},      {"Lagos", 6.52, 3.38},
};
#define N_CITIES (int)(sizeof(cities) / sizeof(cities[0]))

typedef struct card {
  int home;
  double mean_amount;
  int64_t txns;
  bool injected;                   /* had its one fraud */
  bool travelled;                  /* made an honest trip: never gets fraud */
  int dest;                        /* trip destination, or -1 at home */
  int64_t land, leave, home_again; /* the trip's times */
} card;

typedef struct gen {
  ex_rng rng;
  ex_queue q;
  FILE *labels;
  int64_t max_delay;
  uint64_t next_id;
  uint64_t labelled[3];
} gen;

static const char *const rule_names[3] = {"velocity", "amount_spike",
                                          "impossible_travel"};

static int queue_txn(gen *g, int c, int64_t ts, double amount, double lat,
                     double lon) {
  char key[16], json[256];
  snprintf(key, sizeof(key), "c%05d", c);
  snprintf(json, sizeof(json),
           "{\"type\":\"txn\",\"id\":\"t%08" PRIu64 "\",\"card\":\"%s\","
           "\"ts\":%" PRId64 ",\"amount\":%.2f,\"lat\":%.4f,\"lon\":%.4f}",
           g->next_id++, key, ts, amount, lat, lon);
  return ex_queue_push(&g->q, ts + ex_rng_range(&g->rng, 0, g->max_delay), key,
                       json, ts);
}

static double honest_amount(gen *g, const card *cd) {
  /* Log-normal with sigma 0.4 around the card's own mean: the mean of
   * exp(mu + 0.4 Z) is exp(mu + 0.08). */
  return exp(log(cd->mean_amount) - 0.08 + 0.4 * ex_rng_normal(&g->rng));
}

/* Honest payments, including the near misses that keep the rules honest
 * (docs/examples.md): trips by plane, a few payments in a row, a big but
 * ordinary purchase. Returns the number of records queued (0 while the
 * card is in the air), or -1. */
static int honest_txn(gen *g, int c, card *cd, int64_t ts) {
  if (cd->dest >= 0 && ts >= cd->home_again)
    cd->dest = -1;
  if (cd->dest >= 0 && (ts < cd->land || ts >= cd->leave))
    return 0;
  const city *at = &cities[cd->dest >= 0 ? cd->dest : cd->home];
  if (cd->dest < 0 && !cd->injected &&
      ex_rng_unit(&g->rng) < 1.0 / TRIP_EVERY) {
    /* Fly after this payment: 800 km/h plus an hour at the airports, so
     * the payments either side are never faster than 800 km/h. */
    do
      cd->dest = (int)ex_rng_range(&g->rng, 0, N_CITIES - 1);
    while (cd->dest == cd->home);
    const city *d = &cities[cd->dest];
    double km = fraud_distance_km(at->lat, at->lon, d->lat, d->lon);
    int64_t flight = (int64_t)(km / 800.0 * 3600000.0) + 3600000;
    cd->land = ts + flight;
    cd->leave = cd->land + ex_rng_range(&g->rng, 2 * 3600000, 6 * 3600000);
    cd->home_again = cd->leave + flight;
    cd->travelled = true;
  }
  int n = 1;
  if (ex_rng_unit(&g->rng) < 1.0 / BURST_EVERY)
    n += (int)ex_rng_range(&g->rng, 2, 4); /* at most 5 within a minute */
  for (int i = 0; i < n; i++) {
    double amount = honest_amount(g, cd);
    if (ex_rng_unit(&g->rng) < 1.0 / BIG_EVERY)
      amount = cd->mean_amount * (3.0 + 3.0 * ex_rng_unit(&g->rng));
    cd->txns++;
    if (queue_txn(g, c, ts + i * ex_rng_range(&g->rng, 5000, 15000), amount,
                  at->lat + 0.05 * ex_rng_normal(&g->rng),
                  at->lon + 0.05 * ex_rng_normal(&g->rng)))
      return -1;
  }
  return n;
}

static void label(gen *g, int rule, int c, int64_t start, int64_t end) {
  fprintf(g->labels,
          "{\"rule\":\"%s\",\"entity\":\"c%05d\",\"start\":%" PRId64
          ",\"end\":%" PRId64 "}\n",
          rule_names[rule], c, start, end);
  g->labelled[rule]++;
}

/* Injects fraud of kind `rule` on card c, starting after event time t.
 * Returns the number of records queued, or -1. */
static int inject(gen *g, int rule, int c, card *cd, int64_t t) {
  const city *h = &cities[cd->home];
  if (rule == 0) {
    /* A burst of 12 payments 1-3 s apart: 12 in at most 33 s. */
    int64_t ts = t + ex_rng_range(&g->rng, 1000, 5000), first = ts;
    for (int i = 0; i < 12; i++) {
      if (i)
        ts += ex_rng_range(&g->rng, 1000, 3000);
      cd->txns++;
      if (queue_txn(g, c, ts, honest_amount(g, cd), h->lat, h->lon))
        return -1;
    }
    label(g, rule, c, first, ts);
    return 12;
  }
  if (rule == 1) {
    int64_t ts = t + ex_rng_range(&g->rng, 1000, 60000);
    double amount = cd->mean_amount * (30.0 + 30.0 * ex_rng_unit(&g->rng));
    if (queue_txn(g, c, ts, amount, h->lat, h->lon))
      return -1;
    label(g, rule, c, ts, ts);
    return 1;
  }
  /* A payment in a city at least 3000 km from home, 1-10 min after the
   * card was used at home: over 18000 km/h. */
  int far;
  do
    far = (int)ex_rng_range(&g->rng, 0, N_CITIES - 1);
  while (fraud_distance_km(h->lat, h->lon, cities[far].lat, cities[far].lon) <
         3000);
  int64_t ts = t + ex_rng_range(&g->rng, 60000, 600000);
  if (queue_txn(g, c, ts, honest_amount(g, cd), cities[far].lat,
                cities[far].lon))
    return -1;
  label(g, rule, c, ts, ts);
  return 1;
}

static void usage(FILE *f) {
  fprintf(f, "usage: " PROG " [--brokers host:port | --bootstrap-file F] "
             "[--topic fraud.txns]\n"
             "       [--labels fraud-labels.jsonl] [--events N] [--rate R] "
             "[--cards N] [--seed S]\n"
             "       [--inject-every N] [--max-delay-ms MS]\n"
             "Writes N transactions (0 = until killed) at R records/s (0 = as "
             "fast as possible),\n"
             "then one end-of-input record per partition, and the injected "
             "frauds to the labels file.\n");
}

int main(int argc, char **argv) {
  const char *brokers = NULL, *bootstrap = NULL, *topic = "fraud.txns";
  const char *labels_path = "fraud-labels.jsonl";
  long long events = 100000, cards = 2000, seed = 1, inject_every = 150;
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
    else if (!strcmp(a, "--cards"))
      cards = ex_arg_ll(PROG, a, v);
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
  if (cards < 10 || cards > 99999 || inject_every < 1 || max_delay < 0 ||
      events < 0) {
    fprintf(stderr, PROG ": --cards must be 10..99999, --inject-every >= 1, "
                         "--max-delay-ms and --events >= 0\n");
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
  ex_producer *p = ex_producer_new(addr, topic, rate);
  card *cd = calloc((size_t)cards, sizeof(*cd));
  if (!p || !cd)
    return 1;
  for (long long c = 0; c < cards; c++) {
    cd[c].dest = -1;
    cd[c].home = (int)ex_rng_range(&g.rng, 0, N_CITIES - 1);
    cd[c].mean_amount = 20.0 + 180.0 * ex_rng_unit(&g.rng);
  }
  /* Every card pays on average every 10 minutes of event time: together a
   * Poisson stream of cards/600 payments per second. */
  const double gap_ms = 600000.0 / (double)cards;
  int64_t t = EX_EPOCH_MS;
  long long produced = 0;
  int next_rule = 0, rc = 0;
  ex_pending e;
  while (!rc && (events == 0 || produced < events)) {
    t += (int64_t)ceil(ex_rng_exp(&g.rng, gap_ms));
    int c = (int)ex_rng_range(&g.rng, 0, cards - 1);
    int n = honest_txn(&g, c, &cd[c], t);
    rc = n < 0;
    produced += n;
    /* Fraud goes to cards without earlier fraud, and an outsized amount
     * only to cards with enough history to have a profile. */
    if (!rc && n > 0 && !cd[c].injected && !cd[c].travelled &&
        ex_rng_unit(&g.rng) < 1.0 / (double)inject_every &&
        (next_rule != 1 || cd[c].txns >= 12)) {
      int n = inject(&g, next_rule, c, &cd[c], t);
      rc = n < 0;
      produced += n;
      cd[c].injected = true;
      next_rule = (next_rule + 1) % 3;
    }
    while (!rc && ex_queue_pop_due(&g.q, t, &e)) {
      rc = ex_producer_send(p, e.key, -1, e.json, strlen(e.json), e.ts);
      free(e.key);
      free(e.json);
    }
  }
  int64_t last = t;
  while (!rc && ex_queue_pop_due(&g.q, INT64_MAX, &e)) {
    if (e.ts > last)
      last = e.ts;
    rc = ex_producer_send(p, e.key, -1, e.json, strlen(e.json), e.ts);
    free(e.key);
    free(e.json);
  }
  /* End of input: one record per partition an hour of event time after
   * the last payment moves every partition's watermark past every window
   * and timer, so the job emits all its alerts and can tell it is done. */
  int parts = rc ? -1 : ex_producer_partitions(p);
  if (!rc && parts < 1) {
    fprintf(stderr, PROG ": cannot read the partitions of %s\n", topic);
    rc = 1;
  }
  char end[64];
  snprintf(end, sizeof(end), "{\"type\":\"end\",\"ts\":%" PRId64 "}",
           last + 3600000);
  for (int i = 0; !rc && i < parts; i++)
    rc = ex_producer_send(p, NULL, i, end, strlen(end), last + 3600000);
  if (ex_producer_close(p))
    rc = 1;
  if (fclose(g.labels))
    rc = 1;
  ex_queue_free(&g.q);
  free(cd);
  fprintf(stderr,
          PROG ": %lld transactions, %.1f min of event time; labelled "
               "velocity %" PRIu64 ", amount_spike %" PRIu64
               ", impossible_travel %" PRIu64 "%s\n",
          produced, (double)(last - EX_EPOCH_MS) / 60000.0, g.labelled[0],
          g.labelled[1], g.labelled[2], rc ? " (FAILED)" : "");
  return rc ? 1 : 0;
}
