/* SPDX-License-Identifier: Apache-2.0 */
/* Nexmark queries against a brute-force model: each query runs on 40 000
 * generated events (out of order within 50 ms, watermarks 60 ms behind)
 * at P=1 and P=2 on both backends, and its output, as sorted text lines,
 * must equal exactly what the model computes from the query's definition
 * over the whole input. The model shares only the generator and the
 * output structs with the queries, never their code. */
#include <check.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check_main.h"
#include "examples/nexmark/nx_driver.h"
#include "examples/nexmark/nx_kafka.h"

#define N_EVENTS 40000
#define W 1000     /* q7, q8, q12 window; q5 size */
#define SLIDE 200  /* q5 */
#define GAP 500    /* q11 */
#define SEGS 4     /* q12: processing-time windows */
#define T0 1000000 /* q12: the manual clock's start, a multiple of W */

static nx_config gen;
static nx_query_conf qc;
static nx_event ev[N_EVENTS];
static char state_dir[64];
/* Set while the end-to-end test reads the events from the dev broker. */
static const char *kafka_bootstrap;
#define KAFKA_TOPIC "nexmark.events"
#define KAFKA_PARTS 4

/* ---- Text lines ---------------------------------------------------------- */

typedef struct lines {
  pthread_mutex_t lock;
  char **v;
  size_t n, cap;
  const nx_query *q;
} lines;

static void add(lines *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void add(lines *l, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 1024;
    l->v = realloc(l->v, l->cap * sizeof(*l->v));
    ck_assert_ptr_nonnull(l->v);
  }
  l->v[l->n++] = strdup(buf);
}

static void lines_free(lines *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
  memset(l, 0, sizeof(*l));
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int sink_fn(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  lines *l = opaque;
  char buf[512];
  l->q->format(rec, buf, sizeof(buf));
  pthread_mutex_lock(&l->lock);
  add(l, "%s", buf);
  pthread_mutex_unlock(&l->lock);
  return 0;
}

/* ---- The model ------------------------------------------------------------
 */

#define FOR_BIDS(b)                                                            \
  for (size_t i_ = 0; i_ < N_EVENTS; i_++)                                     \
    for (const nx_bid *b = &ev[i_].u.bid; ev[i_].type == NX_BID && b; b = NULL)

static int64_t floor_to(int64_t ts, int64_t size) {
  return ts - ((ts % size) + size) % size;
}

static void model_q0(lines *out, int64_t num, int64_t den) {
  FOR_BIDS(b)
  add(out, "%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64, b->auction,
      b->bidder, b->price * num / den, b->date_time);
}

static void model_q2(lines *out) {
  FOR_BIDS(b)
  if (b->auction % 123 == 0)
    add(out, "%" PRId64 ",%" PRId64, b->auction, b->price);
}

static void model_q3(lines *out) {
  for (size_t i = 0; i < N_EVENTS; i++) {
    const nx_auction *a = &ev[i].u.auction;
    if (ev[i].type != NX_AUCTION || a->category != 10)
      continue;
    for (size_t j = 0; j < N_EVENTS; j++) {
      const nx_person *p = &ev[j].u.person;
      if (ev[j].type == NX_PERSON && p->id == a->seller &&
          (!strcmp(p->state, "OR") || !strcmp(p->state, "ID") ||
           !strcmp(p->state, "CA")))
        add(out, "%s,%s,%s,%" PRId64, p->name, p->city, p->state, a->id);
    }
  }
}

/* Winning bids: for every auction, its valid bids (within [dateTime,
 * expires]) ranked by price desc, time asc, bidder asc. */
typedef struct winner {
  const nx_auction *a;
  const nx_bid *b;
} winner;
static winner *winners;
static size_t n_winners;

static void model_winners(void) {
  if (winners)
    return;
  winners = calloc(N_EVENTS, sizeof(*winners));
  for (size_t i = 0; i < N_EVENTS; i++) {
    const nx_auction *a = &ev[i].u.auction;
    if (ev[i].type != NX_AUCTION)
      continue;
    const nx_bid *best = NULL;
    FOR_BIDS(b) {
      if (b->auction != a->id || b->date_time < a->date_time ||
          b->date_time > a->expires)
        continue;
      if (!best || b->price > best->price ||
          (b->price == best->price &&
           (b->date_time < best->date_time ||
            (b->date_time == best->date_time && b->bidder < best->bidder))))
        best = b;
    }
    if (best)
      winners[n_winners++] = (winner){a, best};
  }
}

static void model_q9(lines *out) {
  model_winners();
  for (size_t i = 0; i < n_winners; i++) {
    const nx_auction *a = winners[i].a;
    const nx_bid *b = winners[i].b;
    add(out,
        "%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64
        ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64,
        a->id, a->seller, a->category, a->initial_bid, a->reserve, a->date_time,
        a->expires, b->bidder, b->price, b->date_time);
  }
}

/* q4: after the auctions of a category that closed at time T, the sum
 * and count of the winning prices of all of its auctions closed by T. */
static void model_q4(lines *out) {
  model_winners();
  for (size_t i = 0; i < n_winners; i++) {
    const nx_auction *a = winners[i].a;
    bool first = true; /* one line per (category, closing time) */
    int64_t sum = 0, count = 0;
    for (size_t j = 0; j < n_winners; j++) {
      const nx_auction *o = winners[j].a;
      if (o->category != a->category || o->expires > a->expires)
        continue;
      if (o->expires == a->expires && o->id < a->id)
        first = false;
      sum += winners[j].b->price;
      count++;
    }
    if (first)
      add(out, "%" PRId64 ",0,%" PRId64 "/%" PRId64 "@%" PRId64, a->category,
          sum, count, a->expires);
  }
}

/* q6: after each auction of a seller closes (by closing time, then id),
 * the prices of the seller's last 10 closed auctions up to it. */
static bool closes_before(const nx_auction *x, const nx_auction *y) {
  return x->expires < y->expires ||
         (x->expires == y->expires && x->id <= y->id);
}

static int cmp_close(const void *x, const void *y) {
  const nx_auction *a = ((const winner *)x)->a, *b = ((const winner *)y)->a;
  return a == b ? 0 : closes_before(a, b) ? -1 : 1;
}

static void model_q6(lines *out) {
  model_winners();
  winner *mine = malloc(sizeof(*mine) * (n_winners + 1));
  for (size_t i = 0; i < n_winners; i++) {
    const nx_auction *a = winners[i].a;
    size_t n = 0;
    for (size_t j = 0; j < n_winners; j++)
      if (winners[j].a->seller == a->seller && closes_before(winners[j].a, a))
        mine[n++] = winners[j];
    qsort(mine, n, sizeof(*mine), cmp_close);
    int64_t sum = 0, count = 0;
    for (size_t j = n > 10 ? n - 10 : 0; j < n; j++)
      sum += mine[j].b->price, count++;
    add(out, "%" PRId64 ",%" PRId64 ",%" PRId64 "/%" PRId64 "@%" PRId64,
        a->seller, a->id, sum, count, a->expires);
  }
  free(mine);
}

/* (window start, key) pairs, counted. */
typedef struct wk {
  int64_t start, key;
} wk;
static int cmp_wk(const void *a, const void *b) {
  const wk *x = a, *y = b;
  return x->start != y->start ? (x->start < y->start ? -1 : 1)
         : x->key != y->key   ? (x->key < y->key ? -1 : 1)
                              : 0;
}

static void model_q5(lines *out) {
  size_t n = 0;
  wk *v = malloc(sizeof(*v) * N_EVENTS * (W / SLIDE));
  FOR_BIDS(b)
  for (int64_t s = floor_to(b->date_time, SLIDE); s > b->date_time - W;
       s -= SLIDE)
    v[n++] = (wk){s, b->auction};
  qsort(v, n, sizeof(*v), cmp_wk);
  for (size_t i = 0; i < n;) { /* one window at a time */
    size_t end = i, max = 0;
    while (end < n && v[end].start == v[i].start)
      end++;
    for (int pass = 0; pass < 2; pass++)
      for (size_t j = i; j < end;) {
        size_t k = j;
        while (k < end && v[k].key == v[j].key)
          k++;
        if (pass == 0 && k - j > max)
          max = k - j;
        if (pass == 1 && k - j == max)
          add(out, "%" PRId64 ",%zu,[%" PRId64 ",%" PRId64 ")", v[j].key, max,
              v[j].start, v[j].start + W);
        j = k;
      }
    i = end;
  }
  free(v);
}

static void model_q7(lines *out) {
  int64_t last =
      gen.first_event_time_ms + N_EVENTS * gen.inter_event_delay_us / 1000;
  for (int64_t s = floor_to(gen.first_event_time_ms, W); s <= last; s += W) {
    int64_t max = -1;
    FOR_BIDS(b)
    if (floor_to(b->date_time, W) == s && b->price > max)
      max = b->price;
    FOR_BIDS(b)
    if (floor_to(b->date_time, W) == s && b->price == max)
      add(out, "%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 "@%" PRId64,
          b->auction, b->bidder, b->price, b->date_time, s + W - 1);
  }
}

static void model_q8(lines *out) {
  for (size_t i = 0; i < N_EVENTS; i++) {
    const nx_person *p = &ev[i].u.person;
    if (ev[i].type != NX_PERSON)
      continue;
    for (size_t j = 0; j < N_EVENTS; j++) {
      const nx_auction *a = &ev[j].u.auction;
      if (ev[j].type == NX_AUCTION && a->seller == p->id &&
          floor_to(a->date_time, W) == floor_to(p->date_time, W)) {
        add(out, "%" PRId64 ",%s,%" PRId64, p->id, p->name,
            floor_to(p->date_time, W));
        break;
      }
    }
  }
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* q11: a bidder's bid times, sorted; a session ends where the next bid is
 * more than GAP after the session's last (windows [t, t + GAP) that
 * overlap or touch merge). */
static void model_q11(lines *out) {
  wk *v = malloc(sizeof(*v) * N_EVENTS);
  size_t n = 0;
  FOR_BIDS(b) v[n++] = (wk){b->bidder, b->date_time};
  qsort(v, n, sizeof(*v), cmp_wk); /* by bidder, then time */
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && v[j].start == v[i].start && v[j].key <= v[j - 1].key + GAP)
      j++;
    add(out, "%" PRId64 ",%zu,[%" PRId64 ",%" PRId64 ")", v[i].start, j - i,
        v[i].key, v[j - 1].key + GAP);
    i = j;
  }
  free(v);
}

/* q12: events are fed in SEGS segments, the clock moved to the next
 * window between them, so segment k's bids fall in [T0 + kW, T0 + (k+1)W). */
static void model_q12(lines *out) {
  for (int s = 0; s < SEGS; s++) {
    size_t n = 0;
    int64_t *v = malloc(sizeof(*v) * N_EVENTS);
    for (size_t i = (size_t)s * N_EVENTS / SEGS;
         i < (size_t)(s + 1) * N_EVENTS / SEGS; i++)
      if (ev[i].type == NX_BID)
        v[n++] = ev[i].u.bid.bidder;
    qsort(v, n, sizeof(*v), cmp_i64);
    for (size_t i = 0, j; i < n; i = j) {
      for (j = i; j < n && v[j] == v[i]; j++)
        ;
      add(out, "%" PRId64 ",%zu,[%" PRId64 ",%" PRId64 ")", v[i], j - i,
          (int64_t)T0 + s * W, (int64_t)T0 + (s + 1) * W);
    }
    free(v);
  }
}

static void model(const char *q, lines *out) {
  if (!strcmp(q, "q0"))
    model_q0(out, 1, 1);
  else if (!strcmp(q, "q1"))
    model_q0(out, 908, 1000);
  else if (!strcmp(q, "q2"))
    model_q2(out);
  else if (!strcmp(q, "q3"))
    model_q3(out);
  else if (!strcmp(q, "q4"))
    model_q4(out);
  else if (!strcmp(q, "q5"))
    model_q5(out);
  else if (!strcmp(q, "q6"))
    model_q6(out);
  else if (!strcmp(q, "q7"))
    model_q7(out);
  else if (!strcmp(q, "q8"))
    model_q8(out);
  else if (!strcmp(q, "q9"))
    model_q9(out);
  else if (!strcmp(q, "q11"))
    model_q11(out);
  else if (!strcmp(q, "q12"))
    model_q12(out);
}

/* ---- q12's pacing: the source waits at each segment's end until the
 * window has processed every bid so far, then moves the clock to the next
 * window. The window's records_in counts a batch just before the worker
 * processes it, so "processed" needs more: each worker, from its own
 * thread (in its source subtask's poll, between batches), must have seen
 * the count complete; then every counted batch is done. */

typedef struct pace {
  sl_clock_t *clock;
  int par;
  size_t bids_before[SEGS + 1]; /* bids in segments < k */
  bool seen[SEGS + 1][2];       /* worker w saw them all counted */
  lines *got;
  size_t expected;
  double deadline;
} pace;

static double wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool hold(sl_job_t *job, int w, uint64_t i, void *opaque) {
  pace *p = opaque;
  size_t seg = (size_t)(i * SEGS / N_EVENTS);
  int64_t next = T0 + (int64_t)seg * W;
  if (seg == 0 || (i < N_EVENTS && sl_clock_now(p->clock) >= next))
    return false;
  sl_op_stats_t st;
  bool counted = sl_job_op_stats(job, "q12.count", &st) == SL_OK &&
                 st.records_in >= p->bids_before[seg];
  pthread_mutex_lock(&p->got->lock);
  p->seen[seg][w] |= counted;
  bool all = true;
  for (int k = 0; k < p->par; k++)
    all &= p->seen[seg][k];
  if (all)
    sl_clock_set(p->clock, next);
  /* At the end, give the last windows time to fire, within a deadline. */
  if (all && i == N_EVENTS && !p->deadline)
    p->deadline = wall() + 30;
  bool wait = !all || (i == N_EVENTS && p->got->n < p->expected &&
                       wall() < p->deadline);
  pthread_mutex_unlock(&p->got->lock);
  return wait;
}

/* ---- The test -------------------------------------------------------------
 */

static const char *const backends[] = {"hashmap", "rocksdb"};

/* Runs query q and collects its output lines into *got. */
static int run_query(const nx_query *q, int par, const char *backend,
                     const char *dir, lines *got, size_t expected, char *err,
                     size_t errlen) {
  nx_run_opts o;
  nx_run_opts_default(&o);
  o.query = q;
  o.gen = gen;
  o.qc = qc;
  o.events = N_EVENTS;
  o.parallelism = par;
  o.backend = backend;
  o.state_dir = dir;
  o.watermark_bound_ms = 60;
  o.sink = sink_fn;
  o.sink_opaque = got;
  o.kafka_bootstrap = kafka_bootstrap;
  o.kafka_topic = KAFKA_TOPIC;
  o.kafka_partitions = KAFKA_PARTS;
  o.kafka_timeout_s = 120;
  pace p = {.got = got, .expected = expected, .par = par};
  if (q->proc_time) {
    p.clock = sl_clock_new_manual(T0);
    for (size_t s = 0; s <= SEGS; s++)
      for (size_t i = 0; i < s * N_EVENTS / SEGS; i++)
        p.bids_before[s] += ev[i].type == NX_BID;
    o.clock = p.clock;
    o.hold = hold;
    o.hold_opaque = &p;
  }
  int rc = nx_run(&o, err, errlen);
  sl_clock_destroy(p.clock);
  return rc;
}

/* got's lines equal the model's (want), sorted; frees both. */
static void expect_model(const nx_query *q, int par, const char *backend,
                         lines *want, lines *got) {
  qsort(want->v, want->n, sizeof(char *), cmp_str);
  qsort(got->v, got->n, sizeof(char *), cmp_str);
  for (size_t i = 0; i < want->n && i < got->n; i++)
    ck_assert_msg(!strcmp(want->v[i], got->v[i]),
                  "%s P=%d %s: line %zu: model %s, job %s", q->name, par,
                  backend, i, want->v[i], got->v[i]);
  ck_assert_msg(want->n == got->n, "%s P=%d %s: model %zu lines, job %zu",
                q->name, par, backend, want->n, got->n);
  lines_free(want);
  lines_free(got);
}

static void check_query(const nx_query *q, int par, const char *backend) {
  lines want = {.q = q}, got = {.q = q};
  pthread_mutex_init(&got.lock, NULL);
  model(q->name, &want);
  ck_assert_msg(want.n > 0, "%s: the model has no output", q->name);
  char err[512];
  int rc =
      run_query(q, par, backend, state_dir, &got, want.n, err, sizeof(err));
  ck_assert_msg(rc == SL_OK, "%s: %s", q->name, err);
  expect_model(q, par, backend, &want, &got);
}

START_TEST(query_matches_model) {
  const nx_query *q = &nx_queries[_i];
  for (int par = 1; par <= 2; par++)
    for (int b = 0; b < 2; b++)
      check_query(q, par, backends[b]);
}
END_TEST

/* Two q8 jobs at once in one process, then one more after them: a
 * query keeps no process-wide state, so each job's output is exactly the
 * model's. At P=1 the sink is chained into the join, so it runs between
 * two pairs of one window; job 0's sink waits there until job 1 has
 * caught up, which interleaves the two jobs' joins at every output. */
typedef struct q8_run {
  const char *backend;
  char dir[96];
  lines got;
  struct q8_run *other; /* job 0 waits for this one */
  size_t n;
  bool done;
  int rc;
  char err[512];
} q8_run;

static pthread_mutex_t q8_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q8_cond = PTHREAD_COND_INITIALIZER;

static int q8_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  q8_run *r = opaque;
  sink_fn(ctx, rec, &r->got);
  pthread_mutex_lock(&q8_mu);
  r->n++;
  pthread_cond_broadcast(&q8_cond);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10; /* never hang: a slow other job only loses overlap */
  while (r->other && !r->other->done && r->other->n < r->n &&
         pthread_cond_timedwait(&q8_cond, &q8_mu, &until) == 0)
    ;
  pthread_mutex_unlock(&q8_mu);
  return 0;
}

static void *q8_thread(void *arg) {
  q8_run *r = arg;
  nx_run_opts o;
  nx_run_opts_default(&o);
  o.query = nx_query_find("q8");
  o.gen = gen;
  o.qc = qc;
  o.events = N_EVENTS;
  o.backend = r->backend;
  o.state_dir = r->dir;
  o.watermark_bound_ms = 60;
  o.sink = q8_sink;
  o.sink_opaque = r;
  r->rc = nx_run(&o, r->err, sizeof(r->err));
  pthread_mutex_lock(&q8_mu);
  r->done = true;
  pthread_cond_broadcast(&q8_cond);
  pthread_mutex_unlock(&q8_mu);
  return NULL;
}

START_TEST(q8_jobs_concurrently) {
  const nx_query *q = nx_query_find("q8");
  for (int round = 0; round < 2; round++) {
    q8_run runs[2] = {{.backend = "hashmap"}, {.backend = "rocksdb"}};
    int n = round == 0 ? 2 : 1;
    if (n == 2)
      runs[0].other = &runs[1];
    pthread_t t[2];
    for (int k = 0; k < n; k++) {
      runs[k].got.q = q;
      pthread_mutex_init(&runs[k].got.lock, NULL);
      snprintf(runs[k].dir, sizeof(runs[k].dir), "%s/q8-%d-%d", state_dir,
               round, k);
      ck_assert_int_eq(pthread_create(&t[k], NULL, q8_thread, &runs[k]), 0);
    }
    for (int k = 0; k < n; k++)
      pthread_join(t[k], NULL);
    for (int k = 0; k < n; k++) {
      ck_assert_msg(runs[k].rc == SL_OK, "q8 %s: %s", runs[k].backend,
                    runs[k].err);
      lines want = {.q = q};
      model("q8", &want);
      expect_model(q, 1, runs[k].backend, &want, &runs[k].got);
    }
  }
}
END_TEST

/* End to end: the events as JSON through the dev broker (a child
 * process), read back by the Kafka source, give the model's output. q5
 * needs event-time windows and q9 timers at every auction's expiry, which
 * only the end marker's watermark fires for the last auctions. */
START_TEST(kafka_end_to_end) {
  const char *build = getenv("SLUICE_BUILD_ROOT");
  char tool[1024], err[512];
  snprintf(tool, sizeof(tool), "%s/tools/sluice-kafka-dev",
           build ? build : "build");
  nx_kafka_dev dev;
  ck_assert_msg(!nx_kafka_dev_start(tool, KAFKA_TOPIC, KAFKA_PARTS, &dev, err,
                                    sizeof(err)),
                "%s", err);
  int rc = nx_kafka_produce(dev.bootstrap, KAFKA_TOPIC, KAFKA_PARTS, &gen,
                            N_EVENTS, err, sizeof(err));
  if (rc)
    nx_kafka_dev_stop(&dev);
  ck_assert_msg(rc == 0, "%s", err);
  kafka_bootstrap = dev.bootstrap;
  static const char *const queries[] = {"q5", "q9"};
  for (int k = 0; k < 2; k++)
    for (int par = 1; par <= 2; par++)
      check_query(nx_query_find(queries[k]), par, backends[par - 1]);
  kafka_bootstrap = NULL;
  nx_kafka_dev_stop(&dev);
}
END_TEST

/* The generator is deterministic, has Nexmark's mix, and keeps its
 * disorder within the bound the tests rely on. */
START_TEST(generator_model) {
  size_t n[3] = {0, 0, 0};
  int64_t max_ts = 0, worst = 0;
  for (size_t i = 0; i < N_EVENTS; i++) {
    nx_event e;
    nx_generate(&gen, i, &e);
    ck_assert_int_eq(memcmp(&e, &ev[i], nx_event_size(&e)), 0);
    n[e.type]++;
    int64_t ts = e.type == NX_BID       ? e.u.bid.date_time
                 : e.type == NX_AUCTION ? e.u.auction.date_time
                                        : e.u.person.date_time;
    if (max_ts - ts > worst)
      worst = max_ts - ts;
    if (ts > max_ts)
      max_ts = ts;
    char js[512];
    nx_event back;
    nx_event_to_json(&e, js, sizeof(js));
    ck_assert_int_eq(nx_event_from_json(js, strlen(js), &back), 0);
    ck_assert_int_eq(memcmp(&back, &e, nx_event_size(&e)), 0);
  }
  ck_assert_uint_eq(n[NX_PERSON], N_EVENTS / 50);
  ck_assert_uint_eq(n[NX_AUCTION], N_EVENTS / 50 * 3);
  ck_assert_uint_eq(n[NX_BID], N_EVENTS / 50 * 46);
  ck_assert_int_gt(worst, 0);
  ck_assert_int_le(worst, nx_max_disorder_ms(&gen));
  ck_assert_int_lt(nx_max_disorder_ms(&gen), 60);
}
END_TEST

int main(void) {
  nx_config_default(&gen);
  gen.seed = 7;
  gen.inter_event_delay_us = 200; /* 40 000 events: 8 s of event time */
  gen.out_of_order_group = 250;   /* up to 50 ms out of order */
  nx_query_conf_default(&qc);
  qc.window_ms = W;
  qc.proc_window_ms = W;
  qc.slide_ms = SLIDE;
  qc.session_ms = GAP;
  qc.closed_retention_ms = 2000;
  for (size_t i = 0; i < N_EVENTS; i++)
    nx_generate(&gen, i, &ev[i]);
  snprintf(state_dir, sizeof(state_dir), "/tmp/sluice-nexmark-XXXXXX");
  if (!mkdtemp(state_dir))
    return EXIT_FAILURE;

  Suite *s = suite_create("nexmark");
  TCase *tc = tcase_create("queries");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, generator_model);
  tcase_add_test(tc, q8_jobs_concurrently);
  tcase_add_loop_test(tc, query_matches_model, 0, (int)nx_n_queries);
  suite_add_tcase(s, tc);
  TCase *kafka = tcase_create("kafka");
  tcase_set_timeout(kafka, 300);
  tcase_add_test(kafka, kafka_end_to_end);
  suite_add_tcase(s, kafka);
  int rc = tu_run(s);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", state_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", state_dir);
  free(winners);
  return rc;
}
