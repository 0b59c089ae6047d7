/* SPDX-License-Identifier: Apache-2.0 */
/* The scoring example end to end on its own dev broker
 * (examples/run-example.sh scoring): every event is scored once, with the
 * very score (all 17 digits) and model that the evaluator recomputes from
 * the input with the example's own feature and model code — for the
 * logistic model, the tree ensemble, a model version published to take
 * over mid-stream (by event time), and across a SIGKILL and restore that
 * must bring the published version back from broadcast state. */
#include <check.h>

#include "check_main.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define EVENTS 20000
#define SWAP_AT_MS "7200000" /* two hours into four of event time */

typedef struct run {
  long generated, read, scores, repeats, unlabelled;
  double auc;
  long same, missing, extra, changed, versions;
  long lr, gbt; /* events scored by each model */
  bool checked;
  int status;
} run;

static void run_scoring(const char *extra, run *r) {
  const char *build = getenv("SLUICE_BUILD_ROOT");
  char cmd[1024];
  snprintf(cmd, sizeof(cmd),
           "%s/examples/run-example.sh scoring --build %s --events %d "
           "--seed 7 --eval --check %s 2>&1",
           SLUICE_SOURCE_ROOT, build ? build : "build", EVENTS, extra);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  memset(r, 0, sizeof(*r));
  char line[512], model[64];
  long n;
  while (fgets(line, sizeof(line), p)) {
    fputs(line, stderr); /* the test log shows the evaluation */
    sscanf(line, "scoring-gen: %ld events", &r->generated);
    sscanf(line, "scores %ld (repeats %ld, unlabelled %ld) auc %lf", &r->scores,
           &r->repeats, &r->unlabelled, &r->auc);
    if (sscanf(line,
               "check: same %ld missing %ld extra %ld changed %ld "
               "versions %ld",
               &r->same, &r->missing, &r->extra, &r->changed,
               &r->versions) == 5)
      r->checked = true;
    if (sscanf(line, "model %63s scored %ld", model, &n) == 2) {
      if (!strcmp(model, "lr-v1"))
        r->lr = n;
      else if (!strcmp(model, "gbt-v1"))
        r->gbt = n;
    }
  }
  int st = pclose(p);
  r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Every generated event scored once, each score the reference's; the
 * evaluator's exit code 0 also says the AUC is at least 0.9. */
static void assert_exact(const run *r) {
  ck_assert_msg(r->status == 0, "run-example exit %d (auc %.4f)", r->status,
                r->auc);
  ck_assert_msg(r->checked, "no check line from the evaluator");
  ck_assert_int_gt(r->generated, EVENTS / 2);
  ck_assert_int_eq(r->scores, r->generated);
  ck_assert_int_eq(r->unlabelled, 0);
  ck_assert_int_eq(r->same, r->generated);
  ck_assert_int_eq(r->missing, 0);
  ck_assert_int_eq(r->extra, 0);
  ck_assert_int_eq(r->changed, 0);
}

static const char *const backends[] = {"hashmap", "rocksdb"};

START_TEST(logistic_scores_are_the_reference) {
  char extra[128];
  snprintf(extra, sizeof(extra), "--set state.backend=%s", backends[_i]);
  run r;
  run_scoring(extra, &r);
  assert_exact(&r);
  ck_assert_int_eq(r.versions, 0);
  ck_assert_int_eq(r.lr, r.generated);
  ck_assert_int_eq(r.repeats, 0);
}
END_TEST

START_TEST(tree_ensemble_scores_are_the_reference) {
  run r;
  run_scoring("--job --model --job examples/scoring/models/gbt.json "
              "--eval --model --eval examples/scoring/models/gbt.json",
              &r);
  assert_exact(&r);
  ck_assert_int_eq(r.gbt, r.generated);
}
END_TEST

/* The tree ensemble, published on the models topic, takes over from the
 * file's logistic model at 2 h of event time: the events before score by
 * the first, those after by the second, however the two inputs
 * interleaved at parallelism 2. */
START_TEST(model_swap_mid_stream) {
  run r;
  run_scoring("--gen --publish-model --gen examples/scoring/models/gbt.json "
              "--gen --at-ms --gen " SWAP_AT_MS,
              &r);
  assert_exact(&r);
  ck_assert_int_eq(r.versions, 1);
  ck_assert_int_gt(r.lr, 0);
  ck_assert_int_gt(r.gbt, 0);
  ck_assert_int_eq(r.lr + r.gbt, r.generated);
}
END_TEST

/* Killed after a checkpoint and restored: the published version comes
 * back from broadcast state, and every score is still the reference's
 * (repeats of the events after the checkpoint dropped by id). */
START_TEST(model_swap_survives_kill_and_restore) {
  run r;
  run_scoring("--gen --publish-model --gen examples/scoring/models/gbt.json "
              "--gen --at-ms --gen " SWAP_AT_MS " --rate 8000 "
              "--checkpoint-interval-ms 300 --kill-after-ms 200",
              &r);
  assert_exact(&r);
  ck_assert_int_eq(r.versions, 1);
  ck_assert_int_gt(r.lr, 0);
  ck_assert_int_gt(r.gbt, 0);
}
END_TEST

int main(void) {
#ifdef __SANITIZE_THREAD__
  /* As in test_examples.c: the example programs cannot run instrumented
   * by gcc 12's ThreadSanitizer (librdkafka's broker threads). */
  fprintf(stderr, "skipped under ThreadSanitizer\n");
  return 77;
#endif
  Suite *s = suite_create("scoring");
  TCase *tc = tcase_create("end_to_end");
  tcase_set_timeout(tc, 180);
  tcase_add_loop_test(tc, logistic_scores_are_the_reference, 0, 2);
  tcase_add_test(tc, tree_ensemble_scores_are_the_reference);
  tcase_add_test(tc, model_swap_mid_stream);
  tcase_add_test(tc, model_swap_survives_kill_and_restore);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
