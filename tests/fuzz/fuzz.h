/* SPDX-License-Identifier: Apache-2.0 */
/* What every fuzz target shares. A target is one function over a byte
 * string: built with -DSLUICE_FUZZ_MAIN it is libFuzzer's entry point
 * (make fuzz); built without, it is fuzz_<name>(), which the unit suite
 * fuzz_corpus replays over every seed and every input a fuzzer once
 * found (tests/fuzz/corpus/<name>/), so a fixed crash stays fixed. */
#ifndef SLUICE_TESTS_FUZZ_H
#define SLUICE_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef SLUICE_FUZZ_MAIN
#define FUZZ_TARGET(name)                                                      \
  int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
#else
#define FUZZ_TARGET(name) int fuzz_##name(const uint8_t *data, size_t size)
#endif

/* A property that does not hold is a finding: say which, then abort so
 * libFuzzer saves the input (and the replay test fails on it). */
#define FUZZ_ASSERT(cond, ...)                                                 \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "fuzz: %s:%d: %s: ", __FILE__, __LINE__, #cond);         \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* A private directory for targets that need files (made once per
 * process, under TMPDIR), and a file in it written with data. */
const char *fuzz_tmpdir(void);
void fuzz_write(const char *dir, const char *name, const void *data,
                size_t len);
/* Splits data at each occurrence of the 4-byte separator "\0SL|" into at
 * most max parts (the last part keeps the rest); returns how many. Targets
 * whose input is several files take them this way, so a mutation may
 * touch any of them, or move bytes between them. */
size_t fuzz_split(const uint8_t *data, size_t size, const uint8_t **part,
                  size_t *len, size_t max);

#endif
