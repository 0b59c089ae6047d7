/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers of the fuzz targets (fuzz.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

const char *fuzz_tmpdir(void) {
  static char dir[512];
  if (!dir[0]) {
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/sluice-fuzz-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir)) {
      perror("fuzz: mkdtemp");
      abort();
    }
  }
  return dir;
}

void fuzz_write(const char *dir, const char *name, const void *data,
                size_t len) {
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    perror("fuzz: open");
    abort();
  }
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      perror("fuzz: write");
      abort();
    }
    p += n;
    len -= (size_t)n;
  }
  close(fd);
}

size_t fuzz_split(const uint8_t *data, size_t size, const uint8_t **part,
                  size_t *len, size_t max) {
  static const uint8_t sep[4] = {0, 'S', 'L', '|'};
  size_t n = 0, start = 0;
  for (size_t i = 0; n + 1 < max && i + 4 <= size; i++) {
    /* memcmp only at a NUL: the fuzzer's hook on every call cost more
     * than the target at each byte. */
    const uint8_t *nul = memchr(data + i, 0, size - 3 - i);
    if (!nul)
      break;
    i = (size_t)(nul - data);
    if (memcmp(data + i, sep, 4) != 0)
      continue;
    part[n] = data + start;
    len[n++] = i - start;
    start = i + 4;
    i += 3;
  }
  part[n] = data + start;
  len[n++] = size - start;
  return n;
}
