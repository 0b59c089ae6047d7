/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/json.h: the exact text sl_json_dumpb/sl_json_dumps write (reals
 * in their shortest round-trip form, everything else as jansson writes
 * it), and that a program using the JSON helpers and jansson compiles and
 * links with nothing but `pkg-config --cflags --libs sluice`. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "sluice.h"
#include "sluice/json.h"

/* The text of a real, through sl_json_dumps. */
static char *real_text(double v) {
  json_t *j = json_real(v);
  ck_assert_ptr_nonnull(j);
  size_t len = 0;
  char *s = sl_json_dumps(j, &len);
  json_decref(j);
  ck_assert_ptr_nonnull(s);
  ck_assert_uint_eq(len, strlen(s));
  return s;
}

#define REAL_IS(v, want)                                                       \
  do {                                                                         \
    char *s_ = real_text(v);                                                   \
    ck_assert_str_eq(s_, want);                                                \
    free(s_);                                                                  \
  } while (0)

START_TEST(reals_shortest_round_trip) {
  REAL_IS(0.1, "0.1");
  REAL_IS(0.3, "0.3");
  REAL_IS(0.1 + 0.2, "0.30000000000000004");
  REAL_IS(1.0 / 3, "0.3333333333333333");
  REAL_IS(2.0 / 3, "0.6666666666666666");
  REAL_IS(-0.0, "-0.0");
  REAL_IS(0.0, "0.0");
  REAL_IS(1.0, "1.0");
  REAL_IS(100.0, "100.0");
  REAL_IS(-2.5, "-2.5");
  REAL_IS(123456.789, "123456.789");
  REAL_IS(0.0001, "0.0001");
  REAL_IS(0.00001, "1e-5");
  REAL_IS(1.5e-7, "1.5e-7");
  REAL_IS(1e15, "1000000000000000.0");
  REAL_IS(1234567890123456.0, "1234567890123456.0");
  REAL_IS(1e16, "1e16");
  REAL_IS(12345678901234568.0, "1.2345678901234568e16");
  REAL_IS(1e21, "1e21");
  REAL_IS(-1e21, "-1e21");
  REAL_IS(9007199254740993.0, "9007199254740992.0"); /* 2^53 + 1 rounds */
  REAL_IS(1e300, "1e300");
  REAL_IS(1e-300, "1e-300");
  REAL_IS(1.7976931348623157e308, "1.7976931348623157e308");
  REAL_IS(2.2250738585072014e-308, "2.2250738585072014e-308");
  REAL_IS(5e-324, "5e-324");
  REAL_IS(M_PI, "3.141592653589793");
}
END_TEST

/* Significant digits of a real's text: the mantissa's digits without
 * leading zeros and without the trailing zeros of its integer part. */
static int sig_digits(const char *s) {
  char d[40];
  int n = 0;
  for (const char *c = s; *c && *c != 'e'; c++)
    if (*c >= '0' && *c <= '9')
      d[n++] = *c;
  d[n] = '\0';
  /* "100.0" has one significant digit, "0.0001" one, "1.5" two. */
  int lead = 0;
  while (lead < n - 1 && d[lead] == '0')
    lead++;
  int end = n;
  while (end > lead + 1 && d[end - 1] == '0')
    end--;
  return end - lead;
}

/* Every text reads back as the same double, over a sweep of magnitudes
 * and digit counts. */
START_TEST(reals_read_back_exactly) {
  unsigned long long x = 88172645463325252ULL;
  for (int i = 0; i < 20000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    double v;
    memcpy(&v, &x, sizeof(v));
    if (!isfinite(v))
      continue;
    char *s = real_text(v);
    double back = strtod(s, NULL);
    ck_assert_msg(memcmp(&back, &v, sizeof(v)) == 0, "%s is not %.17g", s, v);
    /* And one significant digit fewer would not read back. */
    int digits = sig_digits(s);
    if (digits > 1) {
      char shorter[40];
      snprintf(shorter, sizeof(shorter), "%.*e", digits - 2, v);
      ck_assert_msg(strtod(shorter, NULL) != v, "%s for %s", shorter, s);
    }
    free(s);
  }
}
END_TEST

/* sl_json_emit writes the same text as the record's value. */
static int emit_fn(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  json_t *v = json_pack("{s:f,s:s#}", "x", 0.1, "v", (const char *)rec->value,
                        (int)rec->value_len);
  int rc = sl_json_emit(ctx, "k", 1, v, rec->ts + 1);
  json_decref(v);
  return rc;
}

static sl_stream_t *build_emit(sl_stream_t *const *in, size_t n, void *opaque) {
  (void)n;
  (void)opaque;
  return sl_flat_map(in[0], "emit", emit_fn, NULL);
}

START_TEST(emit_writes_shortest_reals) {
  char err[512];
  sl_harness_t *h =
      sl_harness_new(NULL, 1, false, build_emit, NULL, NULL, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, NULL, "a", 7), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 1);
  const sl_record_t *r = sl_harness_get(h, NULL, 0);
  ck_assert_str_eq(r->key, "k");
  ck_assert_str_eq(r->value, "{\"x\":0.1,\"v\":\"a\"}");
  ck_assert_uint_eq(r->value_len, strlen(r->value));
  ck_assert_int_eq(r->ts, 8);
  sl_harness_destroy(h);
}
END_TEST

START_TEST(documents_as_jansson_writes_them) {
  json_t *doc = json_loads("{\"b\":[1,-2,true,false,null,\"x\"],\"a\":{},"
                           "\"c\":[],\"d\":0.1,\"e\":1e21,\"f\":2}",
                           0, NULL);
  ck_assert_ptr_nonnull(doc);
  json_object_set_new(doc, "s",
                      json_string("q\"\\/\b\f\n\r\t\x01\x1f\x7f é€😀"));
  json_object_set_new(doc, "n", json_stringn("a\0b", 3));
  char *s = sl_json_dumps(doc, NULL);
  ck_assert_str_eq(s, "{\"b\":[1,-2,true,false,null,\"x\"],\"a\":{},\"c\":[],"
                      "\"d\":0.1,\"e\":1e21,\"f\":2,"
                      "\"s\":\"q\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\u001F\x7f "
                      "é€😀\",\"n\":\"a\\u0000b\"}");
  /* jansson writes the same except for its reals. */
  json_object_del(doc, "d");
  json_object_del(doc, "e");
  char *mine = sl_json_dumps(doc, NULL);
  char *theirs = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
  ck_assert_str_eq(mine, theirs);
  free(mine);
  free(theirs);
  free(s);
  json_decref(doc);
  /* Any value, not only objects and arrays. */
  json_t *str = json_string("top");
  s = sl_json_dumps(str, NULL);
  ck_assert_str_eq(s, "\"top\"");
  free(s);
  json_decref(str);
  json_t *i = json_integer(INT64_MIN);
  s = sl_json_dumps(i, NULL);
  ck_assert_str_eq(s, "-9223372036854775808");
  free(s);
  json_decref(i);
}
END_TEST

START_TEST(dumpb_measures_and_truncates) {
  json_t *doc = json_pack("{s:f,s:[i,i]}", "x", 0.1, "y", 1, 2);
  const char *want = "{\"x\":0.1,\"y\":[1,2]}";
  ck_assert_uint_eq(sl_json_dumpb(doc, NULL, 0), strlen(want));
  char buf[64];
  memset(buf, '#', sizeof(buf));
  ck_assert_uint_eq(sl_json_dumpb(doc, buf, 5), strlen(want));
  ck_assert_int_eq(memcmp(buf, "{\"x\":#", 6), 0);
  ck_assert_uint_eq(sl_json_dumpb(doc, buf, sizeof(buf)), strlen(want));
  ck_assert_int_eq(memcmp(buf, want, strlen(want)), 0);
  ck_assert_int_eq(buf[strlen(want)], '#'); /* no NUL written */
  json_decref(doc);
}
END_TEST

START_TEST(what_cannot_be_encoded) {
  ck_assert_uint_eq(sl_json_dumpb(NULL, NULL, 0), 0);
  ck_assert_ptr_null(sl_json_dumps(NULL, NULL));
  /* Bytes that are not UTF-8 (jansson refuses them too). */
  json_t *bad = json_stringn_nocheck("a\xff", 2);
  ck_assert_ptr_null(sl_json_dumps(bad, NULL));
  json_t *arr = json_array();
  json_array_append(arr, bad);
  ck_assert_uint_eq(sl_json_dumpb(arr, NULL, 0), 0);
  json_decref(arr);
  json_decref(bad);
  bad = json_stringn_nocheck("\xed\xa0\x80", 3); /* a surrogate */
  ck_assert_ptr_null(sl_json_dumps(bad, NULL));
  json_decref(bad);
  bad = json_stringn_nocheck("\xc0\xaf", 2); /* overlong '/' */
  ck_assert_ptr_null(sl_json_dumps(bad, NULL));
  json_decref(bad);
  /* 2048 levels of nesting are fine, 2049 are not. */
  json_t *deep = json_array();
  for (int d = 1; d < 2048; d++) {
    json_t *outer = json_array();
    json_array_append_new(outer, deep);
    deep = outer;
  }
  ck_assert_uint_eq(sl_json_dumpb(deep, NULL, 0), 2 * 2048);
  json_t *deeper = json_array();
  json_array_append_new(deeper, deep);
  ck_assert_uint_eq(sl_json_dumpb(deeper, NULL, 0), 0);
  json_decref(deeper);
}
END_TEST

/* ---- pkg-config --------------------------------------------------------- */

static const char prog[] =
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "#include <sluice.h>\n"
    "#include <sluice/json.h>\n"
    "int main(void) {\n"
    "  json_t *doc = json_loads(\"{\\\"a\\\":[1,0.1]}\", 0, NULL);\n"
    "  char *s = sl_json_dumps(sl_json_pointer(doc, \"/a\"), NULL);\n"
    "  printf(\"%s %s\\n\", s, sl_strerror(SL_ERR_USER));\n"
    "  free(s);\n"
    "  json_decref(doc);\n"
    "  return 0;\n"
    "}\n";

static int run(const char *cmd, char *out, size_t outlen) {
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  size_t n = fread(out, 1, outlen - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A job's program built as its users build it: the uninstalled sluice.pc
 * of this build tree stands for the installed one (same Requires, same
 * Libs; only the paths differ). */
START_TEST(pkg_config_alone_compiles_and_links_a_json_job) {
  const char *build = getenv("SLUICE_BUILD_ROOT");
  const char *cc = getenv("SLUICE_CC");
  const char *san = getenv("SLUICE_SANITIZE");
  ck_assert_msg(build && cc,
                "run by meson test (SLUICE_BUILD_ROOT, SLUICE_CC)");
  char dir[] = "/tmp/sluice-pc-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[128], cmd[4096], out[4096];
  snprintf(path, sizeof(path), "%s/job.c", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(prog, f);
  fclose(f);
  char sanflag[128] = "";
  if (san && *san && strcmp(san, "none") != 0)
    snprintf(sanflag, sizeof(sanflag), "-fsanitize=%s", san);
  snprintf(cmd, sizeof(cmd),
           "PKG_CONFIG_PATH='%s/meson-uninstalled' && export PKG_CONFIG_PATH "
           "&& pkg-config --print-requires sluice && "
           "%s -std=c11 -Wall -Wextra -Werror %s -o '%s/job' '%s' "
           "$(pkg-config --cflags --libs sluice) 2>&1",
           build, cc, sanflag, dir, path);
  int rc = run(cmd, out, sizeof(out));
  ck_assert_msg(rc == 0, "%s\n%s", cmd, out);
  ck_assert_msg(strncmp(out, "jansson", 7) == 0 && out[7] == '\n',
                "Requires: %s", out);
  snprintf(cmd, sizeof(cmd), "LD_LIBRARY_PATH='%s' '%s/job' 2>&1", build, dir);
  rc = run(cmd, out, sizeof(out));
  ck_assert_msg(rc == 0, "%s", out);
  ck_assert_str_eq(out, "[1,0.1] user function failed\n");
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("json");
  TCase *tc = tcase_create("json");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, reals_shortest_round_trip);
  tcase_add_test(tc, reals_read_back_exactly);
  tcase_add_test(tc, emit_writes_shortest_reals);
  tcase_add_test(tc, documents_as_jansson_writes_them);
  tcase_add_test(tc, dumpb_measures_and_truncates);
  tcase_add_test(tc, what_cannot_be_encoded);
  tcase_add_test(tc, pkg_config_alone_compiles_and_links_a_json_job);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
