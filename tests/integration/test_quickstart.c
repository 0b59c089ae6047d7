/* SPDX-License-Identifier: Apache-2.0 */
/* The quickstart example end to end, as `make demo` runs it: the job binary
 * over the bundled clicks file must produce the same sessions at P=1 and
 * P=2, account for every valid click and skip the one malformed line. */
#include <check.h>

#include "check_main.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct run {
  char *lines[256];
  size_t n;
  long clicks;
} run;

static int cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_quickstart(const char *par, run *r) {
  const char *build = getenv("SLUICE_BUILD_ROOT");
  char cmd[1024];
  snprintf(cmd, sizeof(cmd),
           "%s/examples/quickstart/quickstart "
           "%s/examples/quickstart/clicks.jsonl %s 2>/dev/null",
           build ? build : "build", SLUICE_SOURCE_ROOT, par);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  memset(r, 0, sizeof(*r));
  char buf[512];
  while (fgets(buf, sizeof(buf), p) && r->n < 256) {
    buf[strcspn(buf, "\n")] = '\0';
    json_t *j = json_loads(buf, 0, NULL);
    ck_assert_msg(j != NULL, "not JSON: %s", buf);
    r->clicks += (long)json_integer_value(json_object_get(j, "clicks"));
    ck_assert(json_integer_value(json_object_get(j, "first")) <=
              json_integer_value(json_object_get(j, "last")));
    json_decref(j);
    r->lines[r->n++] = strdup(buf);
  }
  ck_assert_int_eq(pclose(p), 0);
  qsort(r->lines, r->n, sizeof(char *), cmp);
}

START_TEST(quickstart_same_sessions_at_p1_and_p2) {
  run a, b;
  run_quickstart("1", &a);
  run_quickstart("2", &b);
  ck_assert_uint_eq(a.n, b.n);
  ck_assert_uint_gt(a.n, 8);      /* several sessions per user */
  ck_assert_int_eq(a.clicks, 93); /* every valid line of the file */
  ck_assert_int_eq(b.clicks, 93);
  for (size_t i = 0; i < a.n; i++) {
    ck_assert_str_eq(a.lines[i], b.lines[i]);
    free(a.lines[i]);
    free(b.lines[i]);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("quickstart");
  TCase *tc = tcase_create("example");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, quickstart_same_sessions_at_p1_and_p2);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
