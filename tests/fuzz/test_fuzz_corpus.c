/* SPDX-License-Identifier: Apache-2.0 */
/* Replays every file under tests/fuzz/corpus/<target>/ through its fuzz
 * target (built here without libFuzzer): the seeds, and each input a
 * fuzzer once found a crash with, named crash-<what> after the finding.
 * A target aborts on a broken property, so a regression fails the test
 * (and under AddressSanitizer any memory error does). */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check_main.h"
#include "fuzz/fuzz.h"

int fuzz_json_scan(const uint8_t *data, size_t size);
int fuzz_snapshot(const uint8_t *data, size_t size);
int fuzz_metadata(const uint8_t *data, size_t size);
int fuzz_conf(const uint8_t *data, size_t size);
int fuzz_kafka_pos(const uint8_t *data, size_t size);
int fuzz_ckpt_tool(const uint8_t *data, size_t size);

static const struct {
  const char *name;
  int (*fn)(const uint8_t *, size_t);
} targets[] = {
    {"json_scan", fuzz_json_scan}, {"snapshot", fuzz_snapshot},
    {"metadata", fuzz_metadata},   {"conf", fuzz_conf},
    {"kafka_pos", fuzz_kafka_pos}, {"ckpt_tool", fuzz_ckpt_tool},
};

static unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f, "cannot open %s", path);
  size_t cap = 4096, n = 0;
  unsigned char *b = malloc(cap);
  size_t got;
  while (b && (got = fread(b + n, 1, cap - n, f)) > 0)
    if ((n += got) == cap)
      b = realloc(b, cap *= 2);
  ck_assert_ptr_nonnull(b);
  fclose(f);
  *len = n;
  return b;
}

START_TEST(replay) {
  char dir[1024];
  snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", SLUICE_SOURCE_ROOT,
           targets[_i].name);
  DIR *d = opendir(dir);
  ck_assert_msg(d, "no corpus at %s", dir);
  struct dirent *de;
  int files = 0;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.')
      continue;
    char path[2048];
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    size_t len;
    unsigned char *data = slurp(path, &len);
    ck_assert_int_eq(targets[_i].fn(data, len), 0);
    free(data);
    files++;
  }
  closedir(d);
  ck_assert_msg(files > 0, "corpus %s is empty", dir);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fuzz_corpus");
  TCase *tc = tcase_create("replay");
  tcase_add_loop_test(tc, replay, 0,
                      (int)(sizeof(targets) / sizeof(targets[0])));
  suite_add_tcase(s, tc);
  return tu_run(s);
}
