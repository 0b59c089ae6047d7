/* SPDX-License-Identifier: Apache-2.0 */
/* The examples' evaluator: reads every alert in the alerts topic (or a
 * JSON-lines file) and the generator's labels, prints precision and recall
 * per rule over distinct alerts, and exits 1 when a rule is below target.
 * Given a reference (the distinct alerts of another run, saved with
 * --save-alerts), it also requires the same alerts exactly: one job on one
 * input must give one result, whatever its parallelism, backend or
 * restarts. Built once per example with that example's rules and target. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "eval.h"
#include "exutil.h"

#ifndef EVAL_PROG
#define EVAL_PROG "evaluate"
#endif
#ifndef EVAL_RULES
#define EVAL_RULES ""
#endif
#ifndef EVAL_TARGET
#define EVAL_TARGET 0.9
#endif
#ifndef EVAL_TOPIC
#define EVAL_TOPIC "alerts"
#endif

static void usage(FILE *f) {
  fprintf(f,
          "usage: " EVAL_PROG " --labels FILE [--alerts-topic T | "
          "--alerts-file F]\n"
          "       [--brokers host:port | --bootstrap-file F] [--rules "
          "a,b,...] [--target X]\n"
          "       [--save-alerts FILE] [--reference FILE] [--incidents MS]\n"
          "Scores alerts against labels; exits 1 when a rule's precision or "
          "recall is below\n"
          "the target (default %.2f) or it has no labelled case. Rules: "
          "%s. Topic: %s.\n"
          "--save-alerts writes the distinct alerts (JSON lines, by id); "
          "--reference compares\n"
          "the distinct alerts with such a file and exits 1 unless they are "
          "the same.\n"
          "--incidents MS groups the alerts of one rule and entity into "
          "incidents first: an\n"
          "alert ending at most MS after the previous one's end is part of "
          "its incident\n"
          "(what fraud-job --suppress-ms MS writes from per-alert output).\n",
          EVAL_TARGET, EVAL_RULES, EVAL_TOPIC);
}

typedef int (*line_fn)(ex_eval *, const char *, size_t);

static int read_lines(ex_eval *ev, const char *path, line_fn add, size_t *n) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    return -1;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  long no = 0;
  int rc = 0;
  while ((len = getline(&line, &cap, f)) >= 0) {
    no++;
    if (len <= 1)
      continue;
    if (add(ev, line, (size_t)len)) {
      fprintf(stderr, EVAL_PROG ": %s:%ld: not a label/alert object\n", path,
              no);
      rc = -1;
      break;
    }
    (*n)++;
  }
  free(line);
  fclose(f);
  return rc;
}

/* An alert from the alerts topic into the evaluation. */
static int add_alert(const char *v, size_t len, int64_t ts, void *opaque) {
  (void)ts;
  return ex_eval_add_alert(opaque, v, len);
}

/* One line per rule of either run ("vs-ref <rule> same N missing N extra N
 * changed N", then the first differences); 0 when the distinct alerts are
 * those of the reference, text for text, and no repeat differed. */
static int compare(ex_eval *ev, ex_eval *ref, const char *path) {
  size_t differ = 0;
  ex_eval_diff d;
  printf("compared with the reference %s:\n", path);
  for (int pass = 0; pass < 2; pass++) {
    ex_eval *from = pass ? ev : ref;
    for (size_t i = 0; ex_eval_rule_at(from, i); i++) {
      const char *rule = ex_eval_rule_at(from, i);
      if (pass) { /* a rule of this run only: not shown yet */
        bool seen = false;
        for (size_t k = 0; !seen && ex_eval_rule_at(ref, k); k++)
          seen = !strcmp(ex_eval_rule_at(ref, k), rule);
        if (seen)
          continue;
      }
      ex_eval_compare(ev, ref, rule, &d, NULL);
      printf("vs-ref %s same %zu missing %zu extra %zu changed %zu\n", rule,
             d.same, d.missing, d.extra, d.changed);
      ex_eval_compare(ev, ref, rule, &d, stdout);
      differ += d.missing + d.extra + d.changed;
    }
  }
  ex_eval_result r;
  ex_eval_score(ev, "", &r);
  differ += r.conflicts;
  printf("%s alerts as the reference%s\n", differ ? "NOT the same" : "the same",
         r.conflicts ? " (and a repeated alert differs)" : "");
  return differ ? -1 : 0;
}

static int save_alerts(ex_eval *ev, const char *path) {
  FILE *f = fopen(path, "w");
  if (!f || ex_eval_write_alerts(ev, f) || fclose(f)) {
    perror(path);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *labels = NULL, *alerts_file = NULL, *topic = EVAL_TOPIC;
  const char *brokers = NULL, *bootstrap = NULL, *rules = EVAL_RULES;
  const char *save = NULL, *reference = NULL;
  double target = EVAL_TARGET;
  long long incidents = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--labels") && v)
      labels = argv[++i];
    else if (!strcmp(a, "--alerts-file") && v)
      alerts_file = argv[++i];
    else if (!strcmp(a, "--alerts-topic") && v)
      topic = argv[++i];
    else if (!strcmp(a, "--brokers") && v)
      brokers = argv[++i];
    else if (!strcmp(a, "--bootstrap-file") && v)
      bootstrap = argv[++i];
    else if (!strcmp(a, "--rules") && v)
      rules = argv[++i];
    else if (!strcmp(a, "--save-alerts") && v)
      save = argv[++i];
    else if (!strcmp(a, "--reference") && v)
      reference = argv[++i];
    else if (!strcmp(a, "--incidents") && v)
      incidents = ex_arg_ll(EVAL_PROG, a, argv[++i]);
    else if (!strcmp(a, "--target") && v)
      target = ex_arg_double(EVAL_PROG, a, argv[++i]);
    else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (!labels) {
    usage(stderr);
    return 2;
  }
  ex_eval *ev = ex_eval_new(), *ref = NULL;
  size_t n_labels = 0, n_alerts = 0, n_ref = 0;
  if (!ev || read_lines(ev, labels, ex_eval_add_label, &n_labels))
    return 2;
  if (reference && (!(ref = ex_eval_new()) ||
                    read_lines(ref, reference, ex_eval_add_alert, &n_ref)))
    return 2;
  if (alerts_file) {
    if (read_lines(ev, alerts_file, ex_eval_add_alert, &n_alerts))
      return 2;
  } else {
    char addr[512];
    if (ex_resolve_brokers(brokers, bootstrap, 5000, addr, sizeof(addr)) ||
        ex_read_topic(EVAL_PROG, addr, topic, false, "an alert", add_alert, ev,
                      &n_alerts))
      return 2;
  }

  if (incidents > 0)
    printf("grouped into incidents (%lld ms): %zu alerts dropped\n", incidents,
           ex_eval_incidents(ev, incidents));
  printf("%-18s %7s %6s %6s %7s %9s %10s %7s\n", "rule", "alerts", "tp", "fp",
         "labels", "detected", "precision", "recall");
  int fail = 0;
  /* The expected rules first (a rule that never fired must still show),
   * then any other rule the alerts or labels mention. */
  char *want = strdup(rules);
  if (!want)
    return 2;
  ex_eval_result r = {0};
  for (char *save = NULL, *rule = strtok_r(want, ",", &save); rule;
       rule = strtok_r(NULL, ",", &save)) {
    ex_eval_score(ev, rule, &r);
    bool ok = r.labels > 0 && r.precision >= target && r.recall >= target;
    fail |= !ok;
    printf("%-18s %7zu %6zu %6zu %7zu %9zu %10.4f %7.4f%s\n", rule, r.alerts,
           r.true_pos, r.alerts - r.true_pos, r.labels, r.detected, r.precision,
           r.recall, ok ? "" : (r.labels ? "  BELOW TARGET" : "  NO LABELS"));
  }
  for (size_t i = 0; ex_eval_rule_at(ev, i); i++) {
    const char *rule = ex_eval_rule_at(ev, i);
    char pat[256];
    snprintf(pat, sizeof(pat), ",%s,", rule);
    char list[1024];
    snprintf(list, sizeof(list), ",%s,", rules);
    if (strstr(list, pat))
      continue;
    ex_eval_score(ev, rule, &r);
    printf("%-18s %7zu %6zu %6zu %7zu %9zu %10.4f %7.4f  (not scored)\n", rule,
           r.alerts, r.true_pos, r.alerts - r.true_pos, r.labels, r.detected,
           r.precision, r.recall);
  }
  free(want);
  ex_eval_score(ev, "", &r);
  printf("%zu alert records (%zu duplicates of an alert already counted, "
         "%zu of them different), %zu labels; target %.2f: %s\n",
         n_alerts, r.duplicates, r.conflicts, n_labels, target,
         fail ? "FAIL" : "PASS");
  if (ref && compare(ev, ref, reference))
    fail = 1;
  if (save && save_alerts(ev, save))
    fail = 1;
  ex_eval_free(ref);
  ex_eval_free(ev);
  return fail ? 1 : 0;
}
