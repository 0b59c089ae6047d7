/* SPDX-License-Identifier: Apache-2.0 */
/* The _metadata parser and the checkpoint check (lib/checkpoint/check.c)
 * on a mutated checkpoint: input parts (separated by "\0SL|") are
 * _metadata, w0.snap and w1.snap of a directory chk-1, read the way
 * restore reads them (full check, the sections it reads whole kept), the
 * way `sluice-ckpt inspect` does (images kept) and the way `sluice-ckpt
 * list` does (quick). */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/check.h"
#include "fuzz.h"
#include "sluice.h"

static const char *const names[] = {"_metadata", "w0.snap", "w1.snap"};

FUZZ_TARGET(metadata) {
  char chk[600];
  snprintf(chk, sizeof(chk), "%s/chk-1", fuzz_tmpdir());
  mkdir(chk, 0700);
  const uint8_t *part[3];
  size_t len[3];
  size_t n = fuzz_split(data, size, part, len, 3);
  for (size_t i = 0; i < 3; i++) {
    if (i < n) {
      fuzz_write(chk, names[i], part[i], len[i]);
    } else {
      char path[700];
      snprintf(path, sizeof(path), "%s/%s", chk, names[i]);
      unlink(path);
    }
  }
  char err[512];
  sl__ckpt_meta m;
  int rc = sl__ckpt_meta_read(chk, &m, err, sizeof(err));
  FUZZ_ASSERT(rc == SL_OK || rc == SL_ERR_CORRUPT || rc == SL_ERR_NOTFOUND,
              "meta_read: %d (%s)", rc, err);
  if (rc == SL_OK) {
    FUZZ_ASSERT(m.n_workers == m.par && m.par > 0, "%d workers, par %d",
                m.n_workers, m.par);
    for (int i = 0; i < m.n_workers; i++)
      FUZZ_ASSERT(m.workers[i].kg_lo <= m.workers[i].kg_hi &&
                      m.workers[i].kg_hi <= m.max_par,
                  "worker %d: key groups [%u, %u) of %u", i, m.workers[i].kg_lo,
                  m.workers[i].kg_hi, m.max_par);
    sl__ckpt_meta_free(&m);
  }
  /* As sluice-ckpt list (quick), inspect (keep) and restore (keep_small)
   * check it. */
  for (int how = 0; how < 3; how++) {
    sl__ckpt_check c = {
        .quick = how == 0, .keep = how == 1, .keep_small = how == 2};
    rc = sl__ckpt_check_run(chk, &c, err, sizeof(err));
    FUZZ_ASSERT(rc == SL_OK || rc == SL_ERR_CORRUPT || rc == SL_ERR_NOTFOUND,
                "check: %d (%s)", rc, err);
    sl__ckpt_check_free(&c);
  }
  return 0;
}
