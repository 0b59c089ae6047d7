/* SPDX-License-Identifier: Apache-2.0 */
/* File-system helpers: mkdir -p, read a whole file, remove a tree. */
#include "core/conf.h"
#include "core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

sl__fmode sl__fs_mode(const sl_conf_t *conf) {
  static const sl__fmode modes[] = {{0600, 0700}, {0640, 0750}, {0666, 0777}};
  int i = sl__conf_enum(conf, "files.access");
  return modes[i >= 0 && i < 3 ? i : 0];
}

int sl__mkdirs(const char *path, mode_t mode) {
  size_t n = strlen(path);
  char *buf = malloc(n + 1);
  if (!buf) {
    errno = ENOMEM;
    return -1;
  }
  memcpy(buf, path, n + 1);
  int rc = 0;
  for (char *p = buf + 1; *p && !rc; p++) {
    if (*p != '/')
      continue;
    *p = 0;
    if (mkdir(buf, mode) && errno != EEXIST)
      rc = -1;
    *p = '/';
  }
  if (!rc && mkdir(buf, mode) && errno != EEXIST)
    rc = -1;
  struct stat st;
  if (!rc && (stat(buf, &st) || !S_ISDIR(st.st_mode))) {
    errno = ENOTDIR;
    rc = -1;
  }
  int saved = errno;
  free(buf);
  errno = saved;
  return rc;
}

int sl__read_file(const char *path, unsigned char **data, size_t *len) {
  *data = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  struct stat st;
  if (fstat(fd, &st)) {
    close(fd);
    return -1;
  }
  unsigned char *d = malloc(st.st_size ? (size_t)st.st_size : 1);
  size_t got = 0;
  while (d && got < (size_t)st.st_size) {
    ssize_t n = read(fd, d + got, (size_t)st.st_size - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  close(fd);
  if (!d || got != (size_t)st.st_size) {
    free(d);
    errno = d ? EIO : ENOMEM;
    return -1;
  }
  *data = d;
  *len = got;
  return 0;
}

/* nftw has no argument for its callback: whether a removal failed. */
static _Thread_local int rm_failed;

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  if (remove(path))
    rm_failed = errno;
  return 0; /* go on: remove all that can be removed */
}

int sl__rmtree(const char *path) {
  rm_failed = 0;
  if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS))
    return -1;
  if (rm_failed) {
    errno = rm_failed;
    return -1;
  }
  return 0;
}
