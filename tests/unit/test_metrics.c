/* SPDX-License-Identifier: Apache-2.0 */
/* The metrics registry without a running job: the exact Prometheus text a
 * scraper reads (types, labels, escaping, histogram buckets), the JSON
 * rendering, naming rules, collectors, series removal, label matching of
 * sl_job_metric_value(), and the metrics.listen address rules. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "metrics/http.h"
#include "metrics/metrics.h"
#include "sluice.h"

static char *render(sl__metrics *m) {
  char *out = NULL;
  size_t len = 0;
  ck_assert_int_eq(
      sl__metrics_render(m, SL_METRICS_PROMETHEUS, "j", 0, &out, &len), SL_OK);
  ck_assert_uint_eq(len, strlen(out));
  return out;
}

START_TEST(test_text_exposition) {
  sl__metrics *m = sl__metrics_new();
  char err[256];
  sl__mfamily *c = sl__metrics_family(m, SL_METRIC_COUNTER, "t_requests_total",
                                      "Requests.\nSecond \\ line.", "path,code",
                                      NULL, 0, err, sizeof(err));
  ck_assert_msg(c != NULL, "%s", err);
  const char *lv1[] = {"/a\"b", "200"};
  const char *lv2[] = {"back\\slash\nnl", "500"};
  sl__mseries_inc(sl__mfamily_series(c, lv1), 3);
  sl__mseries_inc(sl__mfamily_series(c, lv1), 4);
  sl__mseries_inc(sl__mfamily_series(c, lv2), 1);
  sl__mfamily *g = sl__metrics_family(m, SL_METRIC_GAUGE, "t_temp_celsius",
                                      "Temp.", NULL, NULL, 0, err, sizeof(err));
  sl__mseries *gs = sl__mfamily_series(g, NULL);
  sl__mseries_set(gs, 0.1);
  sl__mseries_add(gs, -2.6);
  double bounds[] = {1, 2.5};
  sl__mfamily *h =
      sl__metrics_family(m, SL_METRIC_HISTOGRAM, "t_latency_seconds", "Lat.",
                         "op", bounds, 2, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  const char *op[] = {"x"};
  sl__mseries *hs = sl__mfamily_series(h, op);
  sl__mseries_observe(hs, 0.5);
  sl__mseries_observe(hs, 1); /* le is inclusive */
  sl__mseries_observe(hs, 2);
  sl__mseries_observe(hs, 7);
  char *text = render(m);
  const char *want =
      "# HELP t_requests_total Requests.\\nSecond \\\\ line.\n"
      "# TYPE t_requests_total counter\n"
      "t_requests_total{path=\"/a\\\"b\",code=\"200\"} 7\n"
      "t_requests_total{path=\"back\\\\slash\\nnl\",code=\"500\"} 1\n"
      "# HELP t_temp_celsius Temp.\n"
      "# TYPE t_temp_celsius gauge\n"
      "t_temp_celsius -2.5\n"
      "# HELP t_latency_seconds Lat.\n"
      "# TYPE t_latency_seconds histogram\n"
      "t_latency_seconds_bucket{op=\"x\",le=\"1\"} 2\n"
      "t_latency_seconds_bucket{op=\"x\",le=\"2.5\"} 3\n"
      "t_latency_seconds_bucket{op=\"x\",le=\"+Inf\"} 4\n"
      "t_latency_seconds_sum{op=\"x\"} 10.5\n"
      "t_latency_seconds_count{op=\"x\"} 4\n";
  ck_assert_str_eq(text, want);
  free(text);
  sl__metrics_free(m);
}
END_TEST

START_TEST(test_naming_rules) {
  sl__metrics *m = sl__metrics_new();
  char err[256];
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_COUNTER, "t_requests", "",
                                        NULL, NULL, 0, err, sizeof(err)));
  ck_assert_msg(strstr(err, "_total") != NULL, "%s", err);
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_GAUGE, "t_x_total", "",
                                        NULL, NULL, 0, err, sizeof(err)));
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_GAUGE, "9bad", "", NULL,
                                        NULL, 0, err, sizeof(err)));
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_GAUGE, "t-dash", "", NULL,
                                        NULL, 0, err, sizeof(err)));
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_GAUGE, "t_g", "", "a,__b",
                                        NULL, 0, err, sizeof(err)));
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_GAUGE, "t_g", "", "a,a",
                                        NULL, 0, err, sizeof(err)));
  ck_assert_msg(strstr(err, "twice") != NULL, "%s", err);
  double b[] = {2, 1};
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_HISTOGRAM, "t_h", "", NULL,
                                        b, 2, err, sizeof(err)));
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_HISTOGRAM, "t_h", "", "le",
                                        NULL, 0, err, sizeof(err)));
  /* Registering the same family again returns it; another shape clashes. */
  sl__mfamily *f = sl__metrics_family(m, SL_METRIC_GAUGE, "t_g", "", "a", NULL,
                                      0, err, sizeof(err));
  ck_assert_ptr_nonnull(f);
  ck_assert_ptr_eq(sl__metrics_family(m, SL_METRIC_GAUGE, "t_g", "", "a", NULL,
                                      0, err, sizeof(err)),
                   f);
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_GAUGE, "t_g", "", "b",
                                        NULL, 0, err, sizeof(err)));
  ck_assert_msg(strstr(err, "already registered") != NULL, "%s", err);
  /* A histogram's _count would collide with a gauge of that name. */
  ck_assert_ptr_nonnull(sl__metrics_family(m, SL_METRIC_HISTOGRAM, "t_h", "",
                                           NULL, NULL, 0, err, sizeof(err)));
  ck_assert_ptr_null(sl__metrics_family(m, SL_METRIC_GAUGE, "t_h_count", "",
                                        NULL, NULL, 0, err, sizeof(err)));
  sl__metrics_free(m);
}
END_TEST

static void collect_two(sl__mcollect *c, void *opaque) {
  int *calls = opaque;
  (*calls)++;
  const char *a[] = {"a"}, *b[] = {"b"}, *n[] = {"nan"};
  sl__mcollect_value(c, a, 1.5);
  sl__mcollect_value(c, n, NAN); /* skipped: no value */
  sl__mcollect_value(c, b, 42);
}

static double fn_gauge(void *opaque) {
  return *(double *)opaque;
}

START_TEST(test_collectors_and_fn_gauges) {
  sl__metrics *m = sl__metrics_new();
  char err[256];
  int calls = 0;
  sl__mfamily *f = sl__metrics_family(m, SL_METRIC_GAUGE, "t_pulled", "P.", "k",
                                      NULL, 0, err, sizeof(err));
  ck_assert_int_eq(sl__mfamily_set_collector(f, collect_two, &calls), SL_OK);
  ck_assert_int_eq(sl__mfamily_set_collector(f, collect_two, &calls),
                   SL_ERR_INVAL);
  ck_assert_ptr_null(sl__mfamily_series(f, NULL));
  sl__mfamily *g = sl__metrics_family(m, SL_METRIC_GAUGE, "t_fn", "F.", NULL,
                                      NULL, 0, err, sizeof(err));
  double v = 3;
  sl__mseries_set_fn(sl__mfamily_series(g, NULL), fn_gauge, &v);
  v = 8; /* read at scrape time, not at registration */
  char *text = render(m);
  ck_assert_str_eq(text, "# HELP t_pulled P.\n# TYPE t_pulled gauge\n"
                         "t_pulled{k=\"a\"} 1.5\nt_pulled{k=\"b\"} 42\n"
                         "# HELP t_fn F.\n# TYPE t_fn gauge\nt_fn 8\n");
  ck_assert_int_eq(calls, 1);
  free(text);
  sl__metrics_free(m);
}
END_TEST

START_TEST(test_series_remove_and_value_lookup) {
  sl__metrics *m = sl__metrics_new();
  char err[256];
  sl__mfamily *f = sl__metrics_family(m, SL_METRIC_COUNTER, "t_c_total", "",
                                      "op,worker", NULL, 0, err, sizeof(err));
  const char *a0[] = {"a", "0"}, *a1[] = {"a", "1"}, *b0[] = {"b", "0"};
  sl__mseries_inc(sl__mfamily_series(f, a0), 5);
  sl__mseries_inc(sl__mfamily_series(f, a1), 7);
  sl__mseries *b = sl__mfamily_series(f, b0);
  sl__mseries_inc(b, 100);
  double v = 0;
  ck_assert_int_eq(sl__metrics_value(m, "t_c_total", "op=a", &v), SL_OK);
  ck_assert_double_eq(v, 12);
  ck_assert_int_eq(sl__metrics_value(m, "t_c_total", "op=a,worker=1", &v),
                   SL_OK);
  ck_assert_double_eq(v, 7);
  ck_assert_int_eq(sl__metrics_value(m, "t_c_total", NULL, &v), SL_OK);
  ck_assert_double_eq(v, 112);
  ck_assert_int_eq(sl__metrics_value(m, "t_c_total", "op=zzz", &v),
                   SL_ERR_NOTFOUND);
  ck_assert_int_eq(sl__metrics_value(m, "t_nope_total", NULL, &v),
                   SL_ERR_NOTFOUND);
  ck_assert_int_eq(sl__metrics_value(m, "t_c_total", "op", &v), SL_ERR_INVAL);
  sl__mseries_remove(b);
  ck_assert_int_eq(sl__metrics_value(m, "t_c_total", "op=b", &v),
                   SL_ERR_NOTFOUND);
  /* The list stays usable after a removal. */
  sl__mseries_inc(sl__mfamily_series(f, b0), 1);
  ck_assert_int_eq(sl__metrics_value(m, "t_c_total", "op=b", &v), SL_OK);
  ck_assert_double_eq(v, 1);
  sl__metrics_free(m);
}
END_TEST

START_TEST(test_json_rendering) {
  sl__metrics *m = sl__metrics_new();
  char err[256];
  sl__mfamily *f = sl__metrics_family(m, SL_METRIC_COUNTER, "t_c_total", "",
                                      "op", NULL, 0, err, sizeof(err));
  const char *a[] = {"a\"q"};
  sl__mseries_inc(sl__mfamily_series(f, a), 9);
  double b[] = {1};
  sl__mfamily *h = sl__metrics_family(m, SL_METRIC_HISTOGRAM, "t_h_seconds", "",
                                      NULL, b, 1, err, sizeof(err));
  sl__mseries *hs = sl__mfamily_series(h, NULL);
  sl__mseries_observe(hs, 0.25);
  sl__mseries_observe(hs, 4);
  char *out = NULL;
  ck_assert_int_eq(
      sl__metrics_render(m, SL_METRICS_JSON, "orders", 1234, &out, NULL),
      SL_OK);
  ck_assert_ptr_null(strchr(out, '\n'));
  json_error_t je;
  json_t *root = json_loads(out, 0, &je);
  ck_assert_msg(root != NULL, "%s: %s", je.text, out);
  ck_assert_str_eq(json_string_value(json_object_get(root, "job")), "orders");
  ck_assert_int_eq(json_integer_value(json_object_get(root, "ts_ms")), 1234);
  json_t *ms = json_object_get(root, "metrics");
  json_t *c = json_array_get(json_object_get(ms, "t_c_total"), 0);
  ck_assert_str_eq(
      json_string_value(json_object_get(json_object_get(c, "labels"), "op")),
      "a\"q");
  ck_assert_int_eq(json_integer_value(json_object_get(c, "value")), 9);
  json_t *hj = json_array_get(json_object_get(ms, "t_h_seconds"), 0);
  ck_assert_int_eq(json_integer_value(json_object_get(hj, "count")), 2);
  ck_assert_double_eq(json_number_value(json_object_get(hj, "sum")), 4.25);
  json_t *bk = json_object_get(hj, "buckets");
  ck_assert_int_eq(json_integer_value(json_object_get(bk, "1")), 1);
  ck_assert_int_eq(json_integer_value(json_object_get(bk, "+Inf")), 2);
  json_decref(root);
  free(out);
  sl__metrics_free(m);
}
END_TEST

START_TEST(test_listen_address_rules) {
  sl__listen_addr a;
  char err[512];
  ck_assert_int_eq(sl__http_parse_listen("off", false, &a, err, sizeof(err)),
                   0);
  ck_assert_int_eq(
      sl__http_parse_listen("127.0.0.1:9249", false, &a, err, sizeof(err)), 1);
  ck_assert_int_eq(
      sl__http_parse_listen("localhost:0", false, &a, err, sizeof(err)), 1);
  ck_assert_int_eq(
      sl__http_parse_listen("[::1]:9249", false, &a, err, sizeof(err)), 1);
  ck_assert_int_eq(a.ss.ss_family, AF_INET6);
  static const struct {
    const char *value, *says;
  } bad[] = {
      {"9249", "is not an address"},
      {"127.0.0.1", "is not an address"},
      {"127.0.0.1:", "is not an address"},
      {":9249", "is not an address"},
      {"127.0.0.1:70000", "invalid port"},
      {"127.0.0.1:92a", "invalid port"},
      {"::1:9249", "is not an address"},
      {"[::1]9249", "is not an address"},
      {"example.com:9249", "not an IP address"},
      {"10.1.2.3:9249", "not a loopback address"},
      {"0.0.0.0:9249", "metrics.listen.allow.remote"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    ck_assert_msg(sl__http_parse_listen(bad[i].value, false, &a, err,
                                        sizeof(err)) == SL_ERR_CONF,
                  "%s accepted", bad[i].value);
    ck_assert_msg(strstr(err, bad[i].says) && strstr(err, "metrics.listen"),
                  "%s: %s", bad[i].value, err);
  }
  ck_assert_int_eq(
      sl__http_parse_listen("0.0.0.0:9249", true, &a, err, sizeof(err)), 1);
}
END_TEST

START_TEST(test_job_new_refuses_bad_listen) {
  char err[512];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(
      sl_conf_set(c, "metrics.listen", "10.0.0.7:9249", err, sizeof(err)),
      SL_OK);
  sl_job_t *job = sl_job_new("j", c, err, sizeof(err));
  ck_assert_ptr_null(job);
  ck_assert_msg(strstr(err, "not a loopback address") != NULL, "%s", err);
  /* The caller still owns conf and can fix it. */
  ck_assert_int_eq(
      sl_conf_set(c, "metrics.listen.allow.remote", "true", err, sizeof(err)),
      SL_OK);
  job = sl_job_new("j", c, err, sizeof(err));
  ck_assert_msg(job != NULL, "%s", err);
  ck_assert_int_eq(sl_job_metrics_port(job), SL_ERR_STATE);
  sl_job_destroy(job);
}
END_TEST

typedef struct hammer {
  sl__mseries *c, *g, *h;
} hammer;

static void *hammer_main(void *arg) {
  hammer *hm = arg;
  for (int i = 0; i < 100000; i++) {
    sl__mseries_inc(hm->c, 1);
    sl__mseries_add(hm->g, 0.5);
    sl__mseries_observe(hm->h, i % 2 ? 0.5 : 5);
  }
  return NULL;
}

/* Updates from several threads while another renders: nothing is lost and
 * every rendering is well-formed (TSan checks the rest). */
START_TEST(test_concurrent_updates_and_scrapes) {
  sl__metrics *m = sl__metrics_new();
  char err[256];
  double b[] = {1};
  hammer hm = {
      sl__mfamily_series(sl__metrics_family(m, SL_METRIC_COUNTER, "t_c_total",
                                            "", NULL, NULL, 0, err,
                                            sizeof(err)),
                         NULL),
      sl__mfamily_series(sl__metrics_family(m, SL_METRIC_GAUGE, "t_g", "", NULL,
                                            NULL, 0, err, sizeof(err)),
                         NULL),
      sl__mfamily_series(sl__metrics_family(m, SL_METRIC_HISTOGRAM, "t_h", "",
                                            NULL, b, 1, err, sizeof(err)),
                         NULL)};
  pthread_t t[3];
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, hammer_main, &hm), 0);
  for (int i = 0; i < 20; i++) {
    char *text = render(m);
    ck_assert_ptr_nonnull(strstr(text, "t_h_bucket{le=\"+Inf\"}"));
    free(text);
  }
  for (int i = 0; i < 3; i++)
    pthread_join(t[i], NULL);
  double v;
  ck_assert_int_eq(sl__metrics_value(m, "t_c_total", NULL, &v), SL_OK);
  ck_assert_double_eq(v, 300000);
  ck_assert_int_eq(sl__metrics_value(m, "t_g", NULL, &v), SL_OK);
  ck_assert_double_eq(v, 150000);
  ck_assert_int_eq(sl__metrics_value(m, "t_h", NULL, &v), SL_OK);
  ck_assert_double_eq(v, 300000);
  ck_assert_double_eq(sl__mseries_value(hm.h), 150000 * 0.5 + 150000 * 5);
  sl__metrics_free(m);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("metrics");
  TCase *tc = tcase_create("registry");
  tcase_add_test(tc, test_text_exposition);
  tcase_add_test(tc, test_naming_rules);
  tcase_add_test(tc, test_collectors_and_fn_gauges);
  tcase_add_test(tc, test_series_remove_and_value_lookup);
  tcase_add_test(tc, test_json_rendering);
  tcase_add_test(tc, test_concurrent_updates_and_scrapes);
  tcase_add_test(tc, test_listen_address_rules);
  tcase_add_test(tc, test_job_new_refuses_bad_listen);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
