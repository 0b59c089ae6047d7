/* SPDX-License-Identifier: Apache-2.0 */
/* sluice-ckpt's readers (tools/sluice-ckpt) on a mutated checkpoint
 * directory: input parts (separated by "\0SL|") are _metadata, w0.snap,
 * w1.snap and _COMMITTED of DIR/chk-1; then list, inspect, verify or
 * dump runs on it as from the command line, output discarded. Each must
 * return one of the tool's exit codes. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

int sluice_ckpt_main(int argc, char **argv);

static const char *const names[] = {"_metadata", "w0.snap", "w1.snap",
                                    "_COMMITTED"};
#define N_NAMES (sizeof(names) / sizeof(names[0]))

static void run(const char *a, const char *b, const char *c, const char *d,
                const char *e) {
  char *argv[] = {(char *)"sluice-ckpt",
                  (char *)a,
                  (char *)b,
                  (char *)c,
                  (char *)d,
                  (char *)e,
                  NULL};
  int argc = 1;
  while (argv[argc])
    argc++;
  fflush(stdout);
  fflush(stderr);
  int out = dup(1), err = dup(2), null = open("/dev/null", O_WRONLY);
  FUZZ_ASSERT(out >= 0 && err >= 0 && null >= 0, "cannot redirect output");
  dup2(null, 1);
  dup2(null, 2);
  int rc = sluice_ckpt_main(argc, argv);
  fflush(stdout);
  fflush(stderr);
  dup2(out, 1);
  dup2(err, 2);
  close(out);
  close(err);
  close(null);
  FUZZ_ASSERT(rc >= 0 && rc <= 2, "%s %s: exit code %d", a, b, rc);
}

#define N_COMMANDS 7

static void command(size_t c, const char *dir, const char *chk) {
  switch (c) {
  case 0:
    run("list", dir, NULL, NULL, NULL);
    break;
  case 1:
    run("--json", "list", dir, NULL, NULL);
    break;
  case 2:
    run("inspect", chk, NULL, NULL, NULL);
    break;
  case 3:
    run("--json", "inspect", chk, NULL, NULL);
    break;
  case 4:
    run("--json", "verify", chk, NULL, NULL);
    break;
  case 5:
    run("dump", chk, "--uid", "count", NULL);
    break;
  default:
    run("dump", chk, "--uid", "count", "--ttl");
    break;
  }
}

FUZZ_TARGET(ckpt_tool) {
  char dir[600], chk[700];
  snprintf(dir, sizeof(dir), "%s/ckpt", fuzz_tmpdir());
  snprintf(chk, sizeof(chk), "%s/chk-1", dir);
  mkdir(dir, 0700);
  mkdir(chk, 0700);
  const uint8_t *part[N_NAMES];
  size_t len[N_NAMES];
  size_t n = fuzz_split(data, size, part, len, N_NAMES);
  for (size_t i = 0; i < N_NAMES; i++) {
    if (i < n) {
      fuzz_write(chk, names[i], part[i], len[i]);
    } else {
      char path[800];
      snprintf(path, sizeof(path), "%s/%s", chk, names[i]);
      unlink(path);
    }
  }
  /* libFuzzer runs one command per execution, picked by the input's
   * length (each input always gets the same one), which makes an
   * execution about seven times cheaper; the corpus replay (fuzz_corpus)
   * runs all seven on every input. */
#ifdef SLUICE_FUZZ_MAIN
  size_t only = size % N_COMMANDS;
#else
  size_t only = N_COMMANDS;
#endif
  for (size_t c = 0; c < N_COMMANDS; c++)
    if (only == N_COMMANDS || only == c)
      command(c, dir, chk);
  return 0;
}
