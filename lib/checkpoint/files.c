/* SPDX-License-Identifier: Apache-2.0 */
/* Files of a checkpoint directory, shared by the coordinator, the
 * checkpoint check and sluice-ckpt (files.h): listing, reading, removing,
 * each listed file's size and checksum, retention. */
#include "checkpoint/files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/fault.h"
#include "core/util.h"
#include "sluice/common.h"

int sl__ckpt_crc_file(const char *path, uint32_t *crc, uint64_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  static __thread unsigned char buf[1 << 16];
  uint32_t c = 0;
  uint64_t total = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    if (n == 0)
      break;
    c = sl__crc32c(c, buf, (size_t)n);
    total += (uint64_t)n;
  }
  close(fd);
  *crc = c;
  *size = total;
  return 0;
}

bool sl__ckpt_safe_rel(const char *rel) {
  if (!rel[0] || rel[0] == '/')
    return false;
  for (const char *p = rel; *p;) {
    size_t n = strcspn(p, "/");
    if ((n == 2 && p[0] == '.' && p[1] == '.') || (n == 1 && p[0] == '.') ||
        n == 0)
      return false;
    p += n;
    if (*p == '/')
      p++;
  }
  return true;
}

/* Writes len bytes to path and fsyncs it. The fault point
 * checkpoint.write fails it as a full or failing disk would: half the
 * bytes written, then the error. */
int sl__ckpt_write_file(const char *path, const void *data, size_t len,
                        mode_t mode) {
  int fault = sl__fault_hit("checkpoint.write");
  int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return -1;
  const char *p = data;
  size_t stop = fault ? len / 2 : 0; /* with a fault: where the disk fails */
  while (len > stop) {
    ssize_t n = write(fd, p, len - stop);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  if (fault) {
    close(fd);
    errno = fault;
    return -1;
  }
  int rc = fsync(fd);
  return close(fd) || rc ? -1 : 0;
}

int sl__ckpt_fsync_path(const char *path, bool dir) {
  int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* chk-<id> directories of dir, newest first. */
int sl__ckpt_list(const char *dir, uint64_t **ids, size_t *n) {
  *ids = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d)
    return errno == ENOENT ? 0 : -1;
  size_t cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    if (strncmp(e->d_name, "chk-", 4) != 0 || !e->d_name[4])
      continue;
    errno = 0;
    unsigned long long v = strtoull(e->d_name + 4, &end, 10);
    if (*end || errno || v == 0)
      continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 16;
      uint64_t *a = realloc(*ids, cap * sizeof(*a));
      if (!a) {
        closedir(d);
        return -1;
      }
      *ids = a;
    }
    (*ids)[(*n)++] = v;
  }
  closedir(d);
  for (size_t i = 1; i < *n; i++) /* insertion sort, descending */
    for (size_t j = i; j > 0 && (*ids)[j - 1] < (*ids)[j]; j--) {
      uint64_t t = (*ids)[j];
      (*ids)[j] = (*ids)[j - 1];
      (*ids)[j - 1] = t;
    }
  return 0;
}

int sl__ckpt_file_check(const char *chk, json_t *entry, bool full, char *err,
                        size_t errlen) {
  const char *rel, *hex;
  json_int_t bytes;
  if (json_unpack(entry, "{s:s,s:I,s:s}", "path", &rel, "bytes", &bytes,
                  "crc32c", &hex)) {
    sl__errf(err, errlen, "_metadata has a malformed file entry");
    return SL_ERR_CORRUPT;
  }
  if (!sl__ckpt_safe_rel(rel)) {
    sl__errf(err, errlen,
             "_metadata lists \"%s\", which is not a file "
             "inside the checkpoint",
             rel);
    return SL_ERR_CORRUPT;
  }
  char fp[4200];
  snprintf(fp, sizeof(fp), "%s/%s", chk, rel);
  struct stat st;
  if (stat(fp, &st) != 0) {
    sl__errf(err, errlen, "%s is missing: %s", rel, strerror(errno));
    return SL_ERR_CORRUPT;
  }
  if (!full) {
    if ((uint64_t)st.st_size != (uint64_t)bytes) {
      sl__errf(err, errlen, "%s has %lld bytes, expected %lld", rel,
               (long long)st.st_size, (long long)bytes);
      return SL_ERR_CORRUPT;
    }
    return SL_OK;
  }
  uint32_t crc;
  uint64_t size;
  if (sl__ckpt_crc_file(fp, &crc, &size)) {
    sl__errf(err, errlen, "%s cannot be read: %s", rel, strerror(errno));
    return SL_ERR_CORRUPT;
  }
  char got[9];
  snprintf(got, sizeof(got), "%08x", crc);
  if (size != (uint64_t)bytes || strcmp(got, hex) != 0) {
    sl__errf(err, errlen,
             "%s is damaged (%" PRIu64 " bytes, crc32c %s; expected %lld "
             "bytes, crc32c %s)%s",
             rel, size, got, (long long)bytes, hex,
             size < (uint64_t)bytes ? ": truncated" : "");
    return SL_ERR_CORRUPT;
  }
  return SL_OK;
}

bool sl__ckpt_retain_next(sl__retention *r, bool complete) {
  if (complete && r->kept < r->keep) {
    r->kept++;
    r->seen_complete = true;
    return false;
  }
  return r->seen_complete;
}
