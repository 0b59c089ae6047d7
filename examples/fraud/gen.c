/* SPDX-License-Identifier: Apache-2.0 */
/* fraud-gen: card transactions for the fraud example. Honest accounts pay
 * merchants in their home country at random times, with near misses (trips
 * abroad, runs of payments, big purchases, small then large payments far
 * apart); a few labelled accounts get one injected fraud each. Same seed,
 * same records; the model is in docs/examples.md. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/exutil.h"
#include "rules.h"

#define PROG "fraud-gen"
#define MERCHANTS 500

/* Honest near misses: one payment in this many. */
#define TRIP_EVERY 500.0
#define RUN_EVERY 300.0
#define BIG_EVERY 200.0
#define SMALL_EVERY 200.0
#define VERIFY_EVERY 400.0

typedef struct account {
  int home;
  double mean_amount;
  int64_t txns;
  bool injected;                   /* had its one fraud */
  bool travelled;                  /* made an honest trip: never gets fraud */
  int dest;                        /* trip destination, or -1 at home */
  int64_t land, leave, home_again; /* the trip's times */
} account;

typedef struct gen {
  ex_rng rng;
  ex_queue q;
  FILE *labels;
  int64_t max_delay;
  uint64_t next_id;
  int n_countries;
  long long queued;
  uint64_t labelled[3];
} gen;

static const char *const rule_names[3] = {"small_then_large", "velocity",
                                          "impossible_travel"};

static int queue_txn(gen *g, int a, int64_t ts, double amount, int country) {
  char key[16], json[256];
  snprintf(key, sizeof(key), "a%05d", a);
  snprintf(json, sizeof(json),
           "{\"type\":\"txn\",\"id\":\"t%08" PRIu64 "\",\"account\":\"%s\","
           "\"merchant\":\"m%04d\",\"country\":\"%s\",\"ts\":%" PRId64
           ",\"amount\":%.2f}",
           g->next_id++, key, (int)ex_rng_range(&g->rng, 0, MERCHANTS - 1),
           fraud_country_at(country)->code, ts, amount);
  g->queued++;
  return ex_queue_push(&g->q, ts + ex_rng_range(&g->rng, 0, g->max_delay), key,
                       json, ts);
}

static double honest_amount(gen *g, const account *ac) {
  /* Log-normal with sigma 0.4 around the account's own mean: the mean of
   * exp(mu + 0.4 Z) is exp(mu + 0.08). */
  return exp(log(ac->mean_amount) - 0.08 + 0.4 * ex_rng_normal(&g->rng));
}

/* Honest payments with their near misses. Returns -1 on error. */
static int honest_txn(gen *g, int a, account *ac, int64_t ts) {
  if (ac->dest >= 0 && ts >= ac->home_again)
    ac->dest = -1;
  if (ac->dest >= 0 && (ts < ac->land || ts >= ac->leave))
    return 0; /* in the air */
  int at = ac->dest >= 0 ? ac->dest : ac->home;
  if (ac->dest < 0 && !ac->injected &&
      ex_rng_unit(&g->rng) < 1.0 / TRIP_EVERY) {
    /* Fly after this payment: 800 km/h plus an hour at the airports, so
     * the payments either side are never faster than 800 km/h. */
    do
      ac->dest = (int)ex_rng_range(&g->rng, 0, g->n_countries - 1);
    while (ac->dest == ac->home);
    double km = fraud_country_km(fraud_country_at(at)->code,
                                 fraud_country_at(ac->dest)->code);
    int64_t flight = (int64_t)(km / 800.0 * 3600000.0) + 3600000;
    ac->land = ts + flight;
    ac->leave = ac->land + ex_rng_range(&g->rng, 2 * 3600000, 6 * 3600000);
    ac->home_again = ac->leave + flight;
    ac->travelled = true;
  }
  double u = ex_rng_unit(&g->rng);
  if (u < 1.0 / VERIFY_EVERY) {
    /* A small charge, then a large purchase 2-30 minutes later: too far
     * apart for small_then_large. */
    ac->txns += 2;
    return queue_txn(g, a, ts, 0.01 + 0.98 * ex_rng_unit(&g->rng), at) ||
           queue_txn(g, a, ts + ex_rng_range(&g->rng, 120000, 1800000),
                     500.01 + 1500 * ex_rng_unit(&g->rng), at);
  }
  int n = 1;
  if (u < 1.0 / VERIFY_EVERY + 1.0 / RUN_EVERY)
    n += (int)ex_rng_range(&g->rng, 2, 4); /* at most 5 within a minute */
  for (int i = 0; i < n; i++) {
    double amount = honest_amount(g, ac), v = ex_rng_unit(&g->rng);
    if (v < 1.0 / BIG_EVERY)
      amount = ac->mean_amount * (3.0 + 3.0 * ex_rng_unit(&g->rng));
    else if (v < 1.0 / BIG_EVERY + 1.0 / SMALL_EVERY)
      amount = 0.01 + 0.98 * ex_rng_unit(&g->rng);
    ac->txns++;
    if (queue_txn(g, a, ts + i * ex_rng_range(&g->rng, 5000, 15000), amount,
                  at))
      return -1;
  }
  return 0;
}

static void label(gen *g, int rule, int a, int64_t start, int64_t end) {
  fprintf(g->labels,
          "{\"rule\":\"%s\",\"entity\":\"a%05d\",\"start\":%" PRId64
          ",\"end\":%" PRId64 "}\n",
          rule_names[rule], a, start, end);
  g->labelled[rule]++;
}

/* Injects fraud of kind `rule` on account a, starting after event time t
 * (the account just paid at home). */
static int inject(gen *g, int rule, int a, account *ac, int64_t t) {
  if (rule == 0) {
    /* Card testing: a payment under 1.00, then one of 500.01-1000 5-50 s
     * later (not enough to make a velocity total with honest payments). */
    int64_t small = t + ex_rng_range(&g->rng, 1000, 5000);
    int64_t large = small + ex_rng_range(&g->rng, 5000, 50000);
    if (queue_txn(g, a, small, 0.01 + 0.98 * ex_rng_unit(&g->rng), ac->home) ||
        queue_txn(g, a, large, 500.01 + 500 * ex_rng_unit(&g->rng), ac->home))
      return -1;
    label(g, rule, a, small, large);
    return 0;
  }
  if (rule == 1) {
    /* A spree within 5 minutes, every other one many ordinary payments
     * (14) or a few big ones (4 of 900-1500: over 3000 in total). It starts
     * over a minute after the account's last payment, which may have been
     * under 1.00: a big one right after it would be small_then_large. */
    bool many = g->labelled[1] % 2 == 0;
    int n = many ? 14 : 4;
    int64_t ts = t + ex_rng_range(&g->rng, 61000, 90000), first = ts;
    for (int i = 0; i < n; i++) {
      if (i)
        ts += ex_rng_range(&g->rng, 5000, many ? 20000 : 90000);
      double amount =
          many ? honest_amount(g, ac) : 900 + 600 * ex_rng_unit(&g->rng);
      if (queue_txn(g, a, ts, amount, ac->home))
        return -1;
    }
    label(g, rule, a, first, ts);
    return 0;
  }
  /* A payment in a country at least 3000 km from home, 1-10 min after the
   * account paid at home: over 18000 km/h. */
  int far;
  do
    far = (int)ex_rng_range(&g->rng, 0, g->n_countries - 1);
  while (fraud_country_km(fraud_country_at(ac->home)->code,
                          fraud_country_at(far)->code) < 3000);
  int64_t ts = t + ex_rng_range(&g->rng, 60000, 600000);
  if (queue_txn(g, a, ts, honest_amount(g, ac), far))
    return -1;
  label(g, rule, a, ts, ts);
  return 0;
}

/* Writes the rule records of a JSON-lines file to the rules topic, keyed by
 * rule name, with their "ts" as the message time. Returns the number
 * written, or -1 (printed). */
static long write_rules(const char *brokers, const char *topic,
                        const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    return -1;
  }
  ex_producer *p = ex_producer_new(brokers, topic, 0, 0);
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  long n = 0, no = 0;
  while (p && n >= 0 && (len = getline(&line, &cap, f)) >= 0) {
    no++;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      line[--len] = '\0';
    if (!len)
      continue;
    json_t *j = json_loads(line, 0, NULL);
    const char *rule = json_string_value(json_object_get(j, "rule"));
    json_t *ts = json_object_get(j, "ts");
    if (!rule || !json_is_integer(ts)) {
      fprintf(stderr, PROG ": %s:%ld: not a rule record\n", path, no);
      n = -1;
    } else if (ex_producer_send(p, rule, -1, line, (size_t)len,
                                json_integer_value(ts))) {
      n = -1;
    } else {
      n++;
    }
    json_decref(j);
  }
  free(line);
  fclose(f);
  if (!p || ex_producer_close(p))
    return -1;
  return n;
}

static void usage(FILE *f) {
  fprintf(f, "usage: " PROG " [--brokers host:port | --bootstrap-file F] "
             "[--topic fraud.txns]\n"
             "       [--labels fraud-labels.jsonl] [--events N] [--rate R] "
             "[--accounts N] [--seed S]\n"
             "       [--inject-every N] [--max-delay-ms MS] [--batch N]\n"
             "       [--rules FILE] [--rules-topic fraud.rules]\n"
             "Writes about N transactions (0 = until killed) at R records/s (0 "
             "= as fast as possible),\n"
             "and the injected frauds to the labels file.\n"
             "--batch N: at most N records per produced batch (0 = "
             "librdkafka's default), as a slow producer writes them.\n"
             "--rules FILE: first write the rule records of FILE (JSON lines "
             "{\"rule\",\"threshold\",\"ts\"})\n"
             "to the rules topic.\n");
}

int main(int argc, char **argv) {
  const char *brokers = NULL, *bootstrap = NULL, *topic = "fraud.txns";
  const char *labels_path = "fraud-labels.jsonl";
  const char *rules_path = NULL, *rules_topic = "fraud.rules";
  long long events = 100000, accounts = 2000, seed = 1, inject_every = 150;
  long long max_delay = 2000, batch = 0;
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
    else if (!strcmp(a, "--accounts"))
      accounts = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--seed"))
      seed = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--inject-every"))
      inject_every = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--max-delay-ms"))
      max_delay = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--batch"))
      batch = ex_arg_ll(PROG, a, v);
    else if (!strcmp(a, "--rules"))
      rules_path = v;
    else if (!strcmp(a, "--rules-topic"))
      rules_topic = v;
    else {
      usage(stderr);
      return 2;
    }
  }
  if (accounts < 10 || accounts > 99999 || inject_every < 1 || max_delay < 0 ||
      events < 0 || batch < 0 || batch > 1000000) {
    fprintf(stderr, PROG ": --accounts must be 10..99999, --inject-every "
                         ">= 1, --max-delay-ms and --events >= 0, --batch "
                         "0..1000000\n");
    return 2;
  }
  char addr[512];
  if (ex_resolve_brokers(brokers, bootstrap, 10000, addr, sizeof(addr)))
    return 1;
  if (rules_path) {
    long n = write_rules(addr, rules_topic, rules_path);
    if (n < 0)
      return 1;
    fprintf(stderr, PROG ": %ld rule records to %s\n", n, rules_topic);
  }
  gen g = {.max_delay = max_delay};
  while (fraud_country_at(g.n_countries))
    g.n_countries++;
  ex_rng_seed(&g.rng, (uint64_t)seed);
  if (!(g.labels = fopen(labels_path, "w"))) {
    perror(labels_path);
    return 1;
  }
  ex_producer *p = ex_producer_new(addr, topic, rate, (int)batch);
  account *ac = calloc((size_t)accounts, sizeof(*ac));
  if (!p || !ac)
    return 1;
  for (long long a = 0; a < accounts; a++) {
    ac[a].dest = -1;
    ac[a].home = (int)ex_rng_range(&g.rng, 0, g.n_countries - 1);
    ac[a].mean_amount = 20.0 + 180.0 * ex_rng_unit(&g.rng);
  }
  /* Every account pays on average every 10 minutes of event time:
   * together a Poisson stream of accounts/600 payments per second. */
  const double gap_ms = 600000.0 / (double)accounts;
  int64_t t = EX_EPOCH_MS, last = t;
  int next_rule = 0, rc = 0;
  while (!rc && (events == 0 || g.queued < events)) {
    t += (int64_t)ceil(ex_rng_exp(&g.rng, gap_ms));
    int a = (int)ex_rng_range(&g.rng, 0, accounts - 1);
    long long before = g.queued;
    rc = honest_txn(&g, a, &ac[a], t);
    /* Fraud goes to accounts at home that never had fraud nor travelled,
     * right after they paid, so one case cannot trip another rule. */
    if (!rc && g.queued > before && !ac[a].injected && !ac[a].travelled &&
        ex_rng_unit(&g.rng) < 1.0 / (double)inject_every) {
      rc = inject(&g, next_rule, a, &ac[a], t);
      ac[a].injected = true;
      next_rule = (next_rule + 1) % 3;
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
  free(ac);
  fprintf(stderr,
          PROG ": %lld transactions, %.1f min of event time; labelled "
               "small_then_large %" PRIu64 ", velocity %" PRIu64
               ", impossible_travel %" PRIu64 "%s\n",
          g.queued, (double)(last - EX_EPOCH_MS) / 60000.0, g.labelled[0],
          g.labelled[1], g.labelled[2], rc ? " (FAILED)" : "");
  return rc ? 1 : 0;
}
