/* SPDX-License-Identifier: Apache-2.0 */
/* What ships in docs/monitoring stays true to the code: the Grafana
 * dashboard parses and every sluice_* name in its queries (and in the alert
 * rules and the README's metric table) is one the registry can produce;
 * the alert rules pass `promtool check rules` and their unit tests. */
#include <check.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check_main.h"
#include "metrics/metrics.h"
#include "sluice.h"

#ifndef SLUICE_SOURCE_ROOT
#error "the test build defines SLUICE_SOURCE_ROOT"
#endif
#define DOCS SLUICE_SOURCE_ROOT "/docs/monitoring"

typedef struct names {
  char v[128][96];
  bool family[128]; /* a family name, not a histogram's _bucket/_sum/_count */
  size_t n;
} names;

static int add_family(const char *name, sl_metric_type type, void *opaque) {
  names *ns = opaque;
  static const char *const hist[] = {"", "_bucket", "_sum", "_count"};
  for (size_t i = 0; i < (type == SL_METRIC_HISTOGRAM ? 4u : 1u); i++) {
    ck_assert_uint_lt(ns->n, 128);
    ns->family[ns->n] = i == 0;
    snprintf(ns->v[ns->n++], 96, "%s%s", name, hist[i]);
  }
  return 0;
}

static int add_new_family(const char *name, sl_metric_type type, void *opaque) {
  names *ns = opaque;
  for (size_t i = 0; i < ns->n; i++)
    if (strcmp(ns->v[i], name) == 0)
      return 0;
  return add_family(name, type, opaque);
}

/* Every name the registry of a fresh job can expose: of one process, and
 * in group mode (which adds the group's families). */
static void known_names(names *ns) {
  memset(ns, 0, sizeof(*ns));
  char err[256];
  sl_job_t *job = sl_job_new("docs", NULL, err, sizeof(err));
  ck_assert_ptr_nonnull(job);
  ck_assert_int_eq(sl__metrics_families(sl__metrics_of(job), add_family, ns),
                   0);
  sl_job_destroy(job);
  sl_conf_t *conf = sl_conf_new();
  ck_assert_int_eq(
      sl_conf_set(conf, "group.mode", "copartitioned", err, sizeof(err)), 0);
  ck_assert_int_eq(sl_conf_set(conf, "group.partitions", "4", err, sizeof(err)),
                   0);
  job = sl_job_new("docs", conf, err, sizeof(err));
  ck_assert_msg(job != NULL, "%s", err);
  ck_assert_int_eq(
      sl__metrics_families(sl__metrics_of(job), add_new_family, ns), 0);
  sl_job_destroy(job);
  ck_assert_uint_gt(ns->n, 20);
}

static bool known(const names *ns, const char *name) {
  for (size_t i = 0; i < ns->n; i++)
    if (strcmp(ns->v[i], name) == 0)
      return true;
  return false;
}

/* Checks every sluice_[a-z0-9_]+ token of text; returns how many distinct
 * known names it used. */
static size_t check_tokens(const names *ns, const char *text, const char *where,
                           names *used) {
  for (const char *p = text; (p = strstr(p, "sluice_"));) {
    if (p > text && (p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z'))) {
      p++;
      continue;
    }
    char tok[96];
    size_t n = 0;
    while (n + 1 < sizeof(tok) && ((p[n] >= 'a' && p[n] <= 'z') ||
                                   (p[n] >= '0' && p[n] <= '9') || p[n] == '_'))
      tok[n] = p[n], n++;
    tok[n] = '\0';
    p += n;
    ck_assert_msg(known(ns, tok), "%s names %s, which sluice does not export",
                  where, tok);
    if (!known(used, tok)) {
      ck_assert_uint_lt(used->n, 128);
      snprintf(used->v[used->n++], 96, "%s", tok);
    }
  }
  return used->n;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
  s[n] = '\0';
  fclose(f);
  return s;
}

/* Collects every "expr" string of the dashboard's panels and variables. */
static void collect_exprs(json_t *j, const names *ns, names *used,
                          size_t *n_expr) {
  if (json_is_object(j)) {
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
      if ((strcmp(k, "expr") == 0 || strcmp(k, "definition") == 0) &&
          json_is_string(v)) {
        (*n_expr)++;
        check_tokens(ns, json_string_value(v), "grafana-dashboard.json", used);
      } else {
        collect_exprs(v, ns, used, n_expr);
      }
    }
  } else if (json_is_array(j)) {
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) collect_exprs(v, ns, used, n_expr);
  }
}

START_TEST(test_dashboard_names_only_existing_metrics) {
  names ns, used = {.n = 0};
  known_names(&ns);
  json_error_t je;
  json_t *d = json_load_file(DOCS "/grafana-dashboard.json", 0, &je);
  ck_assert_msg(d != NULL, "grafana-dashboard.json:%d:%d: %s", je.line,
                je.column, je.text);
  ck_assert(json_is_array(json_object_get(d, "panels")));
  size_t n_expr = 0;
  collect_exprs(d, &ns, &used, &n_expr);
  ck_assert_uint_gt(n_expr, 20);
  /* It shows every area the issue names. */
  static const char *const must[] = {"sluice_operator_records_in_total",
                                     "sluice_operator_event_time_lag_seconds",
                                     "sluice_kafka_consumer_lag",
                                     "sluice_checkpoint_last_duration_seconds",
                                     "sluice_operator_state_bytes",
                                     "sluice_channel_queued_batches",
                                     "sluice_dead_letter_records_total",
                                     "sluice_job_restarts_total"};
  for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
    ck_assert_msg(known(&used, must[i]), "the dashboard does not show %s",
                  must[i]);
  json_decref(d);
}
END_TEST

START_TEST(test_alerts_and_readme_name_only_existing_metrics) {
  names ns, used = {.n = 0};
  known_names(&ns);
  char *rules = slurp(DOCS "/alerts.yml");
  check_tokens(&ns, rules, "alerts.yml", &used);
  static const char *const must[] = {
      "sluice_kafka_consumer_lag", "sluice_checkpoint_failures_total",
      "sluice_checkpoint_last_completed_age_seconds",
      "sluice_operator_watermark_timestamp_seconds",
      "sluice_dead_letter_records_total"};
  for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
    ck_assert_msg(known(&used, must[i]), "no alert rule uses %s", must[i]);
  free(rules);
  /* The README documents every family, and nothing else. */
  char *readme = slurp(DOCS "/README.md");
  names doc = {.n = 0};
  /* Rows of the metric table: | `name` | ... (prose may show examples of
   * names a module would add). */
  for (const char *l = readme; (l = strstr(l, "\n| `sluice_")); l++) {
    char row[96];
    sscanf(l + 4, "%95[a-z0-9_]", row);
    check_tokens(&ns, row, "README.md's metric table", &doc);
  }
  for (size_t i = 0; i < ns.n; i++) {
    char row[128];
    snprintf(row, sizeof(row), "| `%s` |", ns.v[i]);
    if (ns.family[i])
      ck_assert_msg(strstr(readme, row) != NULL,
                    "README.md has no table row for %s", ns.v[i]);
  }
  free(readme);
}
END_TEST

static int promtool(const char *args, char *out, size_t outlen) {
  if (system("command -v promtool >/dev/null 2>&1") != 0)
    return -1;
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "cd %s && promtool %s 2>&1", DOCS, args);
  FILE *p = popen(cmd, "r");
  size_t n = fread(out, 1, outlen - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

START_TEST(test_alert_rules_pass_promtool) {
  char out[8192];
  int rc = promtool("check rules alerts.yml", out, sizeof(out));
  if (rc < 0) {
    fprintf(stderr, "SKIP promtool check rules: promtool is not installed "
                    "(make deps installs the prometheus package)\n");
    return;
  }
  ck_assert_msg(rc == 0, "promtool check rules:\n%s", out);
  rc = promtool("test rules alerts_test.yml", out, sizeof(out));
  ck_assert_msg(rc == 0, "promtool test rules:\n%s", out);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("monitoring_docs");
  TCase *tc = tcase_create("docs");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_dashboard_names_only_existing_metrics);
  tcase_add_test(tc, test_alerts_and_readme_name_only_existing_metrics);
  tcase_add_test(tc, test_alert_rules_pass_promtool);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
