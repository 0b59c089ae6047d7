/* SPDX-License-Identifier: Apache-2.0 */
/* The example jobs' detection rules and the evaluator's scoring, without
 * Kafka: each rule fires on the case it is meant for and stays quiet on
 * the honest traffic next to it, and duplicate alerts do not change the
 * score. */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../examples/botdetect/rules.h"
#include "../../examples/common/eval.h"
#include "../../examples/fraud/rules.h"

static fraud_txn txn(int64_t ts, double amount, const char *country) {
  fraud_txn t = {.ts = ts, .amount = amount};
  snprintf(t.country, sizeof(t.country), "%s", country);
  return t;
}

START_TEST(small_then_large_within_a_minute) {
  fraud_txn small = txn(10000, 0.99, "GB"), large = txn(70000, 500.01, "GB");
  ck_assert(fraud_small_then_large(&small, &large)); /* exactly 60 s */
  large.ts = 70001;
  ck_assert(!fraud_small_then_large(&small, &large));
  large.ts = 9999; /* before the small one */
  ck_assert(!fraud_small_then_large(&small, &large));
  large.ts = 20000;
  large.amount = 500.00; /* the bounds are strict: < 1.00, > 500.00 */
  ck_assert(!fraud_small_then_large(&small, &large));
  large.amount = 2000;
  small.amount = 1.00;
  ck_assert(!fraud_small_then_large(&small, &large));
  ck_assert(fraud_is_small(0.5) && !fraud_is_small(1.0));
  ck_assert(fraud_is_large(500.5) && !fraud_is_large(500.0));
}
END_TEST

START_TEST(velocity_counts_totals_and_merges) {
  fraud_velocity_acc a, b;
  fraud_velocity_init(&a);
  fraud_velocity_init(&b);
  for (int i = 0; i < FRAUD_VELOCITY_MAX_TXNS; i++) {
    fraud_txn t = txn(1000 + i, 10, "GB");
    fraud_velocity_add(i % 2 ? &a : &b, &t);
  }
  fraud_velocity_merge(&a, &b);
  ck_assert_int_eq(a.count, FRAUD_VELOCITY_MAX_TXNS);
  ck_assert(!fraud_velocity_hit(&a)); /* "more than" N */
  ck_assert_int_eq(a.first, 1000);
  ck_assert_int_eq(a.last, 1000 + FRAUD_VELOCITY_MAX_TXNS - 1);
  fraud_txn t = txn(999, 10, "GB");
  fraud_velocity_add(&a, &t);
  ck_assert(fraud_velocity_hit(&a));
  ck_assert_int_eq(a.first, 999);
  /* Few payments, large total. */
  fraud_velocity_init(&b);
  t.amount = FRAUD_VELOCITY_MAX_TOTAL / 2;
  fraud_velocity_add(&b, &t);
  fraud_velocity_add(&b, &t);
  ck_assert(!fraud_velocity_hit(&b));
  t.amount = 0.01;
  fraud_velocity_add(&b, &t);
  ck_assert(fraud_velocity_hit(&b));
}
END_TEST

START_TEST(travel_needs_distance_and_speed) {
  /* London -> Paris (about 340 km) in a minute: under the distance floor. */
  fraud_txn gb = txn(0, 1, "GB"), fr = txn(60000, 1, "FR");
  double km, kmh;
  ck_assert(!fraud_travel_check(&gb, &fr, &km, &kmh));
  ck_assert(km > 300 && km < 400);
  /* London -> Washington (about 5900 km): 2 h is impossible, 8 h is a
   * flight; the order of the arguments does not matter. */
  fraud_txn us = txn(2 * 3600000, 1, "US");
  ck_assert(fraud_travel_check(&us, &gb, &km, &kmh));
  ck_assert(km > 5800 && km < 6000);
  ck_assert(kmh > 2900 && kmh < 3000);
  us.ts = 8 * 3600000;
  ck_assert(!fraud_travel_check(&gb, &us, &km, &kmh));
  /* Same instant: impossible, with a finite speed in the evidence. */
  us.ts = 0;
  ck_assert(fraud_travel_check(&gb, &us, &km, &kmh));
  ck_assert(isfinite(kmh));
  /* Same country, or one the table does not know: never. */
  fraud_txn gb2 = txn(0, 1, "GB"), xx = txn(0, 1, "XX");
  ck_assert(!fraud_travel_check(&gb, &gb2, &km, &kmh));
  ck_assert(!fraud_travel_check(&gb, &xx, &km, &kmh));
  ck_assert_ptr_nonnull(fraud_country_at(0));
  ck_assert_ptr_null(fraud_country_find("XX"));
}
END_TEST

/* Thresholds by name, versions by event time, and the rules under them. */
START_TEST(rule_versions_by_event_time) {
  fraud_params p;
  fraud_params_default(&p);
  ck_assert(p.large_above == FRAUD_LARGE_ABOVE &&
            p.velocity_txns == FRAUD_VELOCITY_MAX_TXNS);
  ck_assert_int_eq(fraud_params_set(&p, "large_amount", 800), 0);
  ck_assert_int_eq(fraud_params_set(&p, "no_such_rule", 1), -1);
  ck_assert_int_eq(fraud_params_set(&p, "travel_kmh", -1), -1);
  ck_assert_int_eq(fraud_params_set(&p, "travel_kmh", NAN), -1);
  ck_assert(p.large_above == 800);

  const fraud_rule_version v[] = {{100, "large_amount", 800},
                                  {100, "velocity_txns", 3},
                                  {200, "large_amount", 900},
                                  {300, "large_amount", 500}};
  fraud_params_at(v, 4, 99, &p);
  ck_assert(p.large_above == FRAUD_LARGE_ABOVE);
  fraud_params_at(v, 4, 100, &p); /* in force from its time on */
  ck_assert(p.large_above == 800 && p.velocity_txns == 3);
  fraud_params_at(v, 4, 250, &p);
  ck_assert(p.large_above == 900 && p.velocity_txns == 3);
  fraud_params_at(v, 4, 1000, &p);
  ck_assert(p.large_above == 500);

  fraud_txn small = txn(0, 0.5, "GB"), large = txn(1000, 850, "GB");
  fraud_params_at(v, 4, 150, &p);
  ck_assert(fraud_small_then_large_p(&p, &small, &large));
  fraud_params_at(v, 4, 250, &p);
  ck_assert(!fraud_small_then_large_p(&p, &small, &large));
  fraud_velocity_acc acc;
  fraud_velocity_init(&acc);
  for (int i = 0; i < 4; i++)
    fraud_velocity_add(&acc, &small);
  ck_assert(fraud_velocity_hit_p(&p, &acc) && !fraud_velocity_hit(&acc));
  fraud_txn gb = txn(0, 1, "GB"), us = txn(2 * 3600000, 1, "US");
  double km, kmh;
  ck_assert(fraud_travel_check_p(&p, &gb, &us, &km, &kmh));
  ck_assert_int_eq(fraud_params_set(&p, "travel_kmh", 3000), 0);
  ck_assert(!fraud_travel_check_p(&p, &gb, &us, &km, &kmh));
}
END_TEST

/* An alert opens an incident unless it ends within the interval after the
 * previous alert of its account and rule; 0 turns grouping off. */
START_TEST(incidents_by_suppression_interval) {
  ck_assert(fraud_incident_opens(false, 0, 100, 50));
  ck_assert(!fraud_incident_opens(true, 100, 150, 50));
  ck_assert(fraud_incident_opens(true, 100, 151, 50));
  ck_assert(fraud_incident_opens(true, 100, 100, 0));
}
END_TEST

START_TEST(bot_assets_and_rate) {
  ck_assert(bot_is_asset("/static/app.js"));
  ck_assert(bot_is_asset("/img/12.png"));
  ck_assert(bot_is_asset("/favicon.ico"));
  ck_assert(!bot_is_asset("/item/12"));
  ck_assert(!bot_is_asset("/backup.zip"));
  ck_assert(!bot_rate_hit(BOT_RATE_MIN_PAGES - 1));
  ck_assert(bot_rate_hit(BOT_RATE_MIN_PAGES));
}
END_TEST

START_TEST(bot_crawler_session) {
  bot_session s = {.requests = 40,
                   .pages = 40,
                   .assets = 0,
                   .not_found = 8,
                   .distinct_paths = 30};
  ck_assert(bot_crawler_hit(&s)); /* 20 % not found */
  s.not_found = 7;
  ck_assert(!bot_crawler_hit(&s));
  s.not_found = 20;
  s.assets = 1; /* a browser */
  ck_assert(!bot_crawler_hit(&s));
  s.assets = 0;
  s.distinct_paths = BOT_CRAWL_MIN_DISTINCT - 1; /* hammering one page */
  ck_assert(!bot_crawler_hit(&s));
  s.distinct_paths = 14;
  s.pages = s.requests = BOT_CRAWL_MIN_PAGES - 1;
  ck_assert(!bot_crawler_hit(&s));
}
END_TEST

START_TEST(bot_regular_timing) {
  bot_regularity r = {0};
  /* A timer every 2 s +- 20 ms: reported once, at its 15th page. */
  int hits = 0;
  int64_t t = 1000;
  for (int i = 0; i < 40; i++) {
    if (bot_regularity_add(&r, t)) {
      hits++;
      ck_assert_int_eq(r.pages, BOT_REGULAR_MIN_PAGES);
      ck_assert_int_eq(r.start, 1000);
    }
    t += 2000 + (i % 3 - 1) * 20;
  }
  ck_assert_int_eq(hits, 1);
  ck_assert(bot_regularity_cv(&r) < 0.05);
  ck_assert(fabs(r.mean - 2000) < 20);
  /* A pause of 30 s starts a new run, which can be reported again. */
  t += 30000;
  for (int i = 0; i < BOT_REGULAR_MIN_PAGES; i++, t += 2000)
    hits += bot_regularity_add(&r, t);
  ck_assert_int_eq(hits, 2);
  /* A reader: gaps of 1, 9, 3, 20, 2 ... seconds. */
  const int64_t gaps[] = {1000, 9000, 3000, 20000, 2000, 7000, 500, 12000};
  bot_regularity h = {0};
  t = 0;
  for (int i = 0; i < 40; i++) {
    ck_assert(!bot_regularity_add(&h, t));
    t += gaps[i % 8];
  }
  ck_assert(bot_regularity_cv(&h) > 0.5);
}
END_TEST

static void add(ex_eval *ev, int label, const char *json) {
  int rc = label ? ex_eval_add_label(ev, json, strlen(json))
                 : ex_eval_add_alert(ev, json, strlen(json));
  ck_assert_msg(rc == 0, "rejected: %s", json);
}

START_TEST(eval_scores_distinct_alerts) {
  ex_eval *ev = ex_eval_new();
  add(ev, 1, "{\"rule\":\"r\",\"entity\":\"a\",\"start\":100,\"end\":200}");
  add(ev, 1, "{\"rule\":\"r\",\"entity\":\"b\",\"start\":100,\"end\":200}");
  /* Overlaps a's label: true positive, twice (a replay) counts once. */
  const char *tp =
      "{\"id\":\"r/a/150\",\"rule\":\"r\",\"entity\":\"a\",\"start\":150,"
      "\"end\":300}";
  add(ev, 0, tp);
  add(ev, 0, tp);
  /* Right entity, wrong time; right time, other rule: false positives. */
  add(ev, 0,
      "{\"id\":\"r/b/201\",\"rule\":\"r\",\"entity\":\"b\",\"start\":201,"
      "\"end\":250}");
  add(ev, 0,
      "{\"id\":\"s/b/100\",\"rule\":\"s\",\"entity\":\"b\",\"start\":100,"
      "\"end\":100}");
  ck_assert_int_eq(ex_eval_add_alert(ev, "{\"rule\":\"r\"}", 12), -1);
  ck_assert_int_eq(ex_eval_add_label(ev, "not json", 8), -1);

  ex_eval_result r;
  ex_eval_score(ev, "r", &r);
  ck_assert_uint_eq(r.alerts, 2);
  ck_assert_uint_eq(r.duplicates, 1);
  ck_assert_uint_eq(r.true_pos, 1);
  ck_assert_uint_eq(r.labels, 2);
  ck_assert_uint_eq(r.detected, 1);
  ck_assert(fabs(r.precision - 0.5) < 1e-9);
  ck_assert(fabs(r.recall - 0.5) < 1e-9);
  ex_eval_score(ev, "s", &r);
  ck_assert_uint_eq(r.alerts, 1);
  ck_assert_uint_eq(r.true_pos, 0);
  ck_assert(fabs(r.recall - 1.0) < 1e-9); /* no labels */
  ck_assert_str_eq(ex_eval_rule_at(ev, 0), "r");
  ck_assert_str_eq(ex_eval_rule_at(ev, 1), "s");
  ck_assert_ptr_null(ex_eval_rule_at(ev, 2));
  ex_eval_free(ev);
}
END_TEST

/* A run against a reference: by id and by text, per rule; a repeat
 * with other text is a conflict; the saved alerts read back equal. */
START_TEST(eval_compares_with_a_reference) {
  ex_eval *ref = ex_eval_new(), *ev = ex_eval_new();
  const char *a = "{\"id\":\"a\",\"rule\":\"r\",\"entity\":\"x\","
                  "\"start\":1,\"end\":2}";
  const char *b = "{\"id\":\"b\",\"rule\":\"r\",\"entity\":\"x\","
                  "\"start\":3,\"end\":4}";
  const char *b2 = "{\"id\":\"b\",\"rule\":\"r\",\"entity\":\"x\","
                   "\"start\":3,\"end\":5}";
  const char *c = "{\"id\":\"c\",\"rule\":\"r\",\"entity\":\"x\","
                  "\"start\":5,\"end\":6}";
  const char *s = "{\"id\":\"d\",\"rule\":\"s\",\"entity\":\"x\","
                  "\"start\":5,\"end\":6}";
  add(ref, 0, a);
  add(ref, 0, b);
  add(ref, 0, s);
  add(ev, 0, b2);
  add(ev, 0, c);
  add(ev, 0, s);
  add(ev, 0, s);
  ex_eval_diff d;
  ex_eval_compare(ev, ref, "r", &d, NULL);
  ck_assert_uint_eq(d.missing, 1); /* a */
  ck_assert_uint_eq(d.extra, 1);   /* c */
  ck_assert_uint_eq(d.same, 1);    /* b */
  ck_assert_uint_eq(d.changed, 1); /* b's end */
  ex_eval_compare(ev, ref, "s", &d, NULL);
  ck_assert(d.same == 1 && !d.missing && !d.extra && !d.changed);
  ex_eval_result r;
  ex_eval_score(ev, "", &r);
  ck_assert_uint_eq(r.duplicates, 1);
  ck_assert_uint_eq(r.conflicts, 0);
  add(ev, 0, b); /* b again, with the reference's text */
  ex_eval_score(ev, "", &r);
  ck_assert_uint_eq(r.conflicts, 1);

  /* Saved and read back: the same alerts. */
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ck_assert_int_eq(ex_eval_write_alerts(ref, f), 0);
  fclose(f);
  ex_eval *back = ex_eval_new();
  for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save))
    add(back, 0, line);
  ex_eval_compare(back, ref, "r", &d, NULL);
  ck_assert(d.same == 2 && !d.missing && !d.extra && !d.changed);
  free(buf);
  ex_eval_free(back);
  ex_eval_free(ev);
  ex_eval_free(ref);
}
END_TEST

/* The evaluator's incident model: per rule and entity, chained by end
 * within the interval, each incident's first alert kept. */
START_TEST(eval_groups_incidents) {
  ex_eval *ev = ex_eval_new();
  char buf[256];
  /* entity x, rule r: ends 100, 140, 180 (one chain), 300 (a new one);
   * rule s at 120 and entity y at 110 are their own incidents. */
  const struct {
    const char *id, *rule, *ent;
    int start, end;
  } a[] = {{"r/x/180", "r", "x", 170, 180}, {"r/x/100", "r", "x", 90, 100},
           {"r/x/300", "r", "x", 290, 300}, {"r/x/140", "r", "x", 40, 140},
           {"s/x/120", "s", "x", 110, 120}, {"r/y/110", "r", "y", 100, 110}};
  for (size_t i = 0; i < sizeof(a) / sizeof(a[0]); i++) {
    snprintf(buf, sizeof(buf),
             "{\"id\":\"%s\",\"rule\":\"%s\",\"entity\":\"%s\","
             "\"start\":%d,\"end\":%d}",
             a[i].id, a[i].rule, a[i].ent, a[i].start, a[i].end);
    add(ev, 0, buf);
  }
  add(ev, 0, buf); /* a repeat counts once */
  ck_assert_uint_eq(ex_eval_incidents(ev, 50), 2);
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  ck_assert_int_eq(ex_eval_write_alerts(ev, f), 0);
  fclose(f);
  /* By id: r/x/100 and r/x/300 open incidents, r/x/140 and r/x/180 join. */
  ck_assert_ptr_nonnull(strstr(out, "\"r/x/100\""));
  ck_assert_ptr_nonnull(strstr(out, "\"r/x/300\""));
  ck_assert_ptr_null(strstr(out, "\"r/x/140\""));
  ck_assert_ptr_null(strstr(out, "\"r/x/180\""));
  ck_assert_ptr_nonnull(strstr(out, "\"s/x/120\""));
  ck_assert_ptr_nonnull(strstr(out, "\"r/y/110\""));
  ex_eval_result r;
  ex_eval_score(ev, "r", &r);
  ck_assert_uint_eq(r.alerts, 3);
  ck_assert_uint_eq(ex_eval_incidents(ev, 0), 0);
  free(out);
  ex_eval_free(ev);
}
END_TEST

int main(void) {
  Suite *s = suite_create("examples");
  TCase *tc = tcase_create("rules");
  tcase_add_test(tc, small_then_large_within_a_minute);
  tcase_add_test(tc, velocity_counts_totals_and_merges);
  tcase_add_test(tc, travel_needs_distance_and_speed);
  tcase_add_test(tc, rule_versions_by_event_time);
  tcase_add_test(tc, incidents_by_suppression_interval);
  tcase_add_test(tc, bot_assets_and_rate);
  tcase_add_test(tc, bot_crawler_session);
  tcase_add_test(tc, bot_regular_timing);
  tcase_add_test(tc, eval_scores_distinct_alerts);
  tcase_add_test(tc, eval_compares_with_a_reference);
  tcase_add_test(tc, eval_groups_incidents);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
