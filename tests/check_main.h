/* SPDX-License-Identifier: Apache-2.0 */
/* The main() body every Check suite shares: run the suite (Check prints
 * its summary line) and exit non-zero when any test failed. */
#ifndef SL_CHECK_MAIN_H
#define SL_CHECK_MAIN_H

#include <check.h>
#include <stdlib.h>

static inline int tu_run(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
