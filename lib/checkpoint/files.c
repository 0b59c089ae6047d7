/* SPDX-License-Identifier: Apache-2.0 */
/* Checks of a checkpoint directory shared by restore and sluice-ckpt
 * (files.h): _metadata's required fields and each listed file's size and
 * checksum. Restore stops at the first problem; the tool reports all. */
#include "checkpoint/files.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/util.h"

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

int sl__ckpt_meta_read(const char *chk, json_t **meta, char *err,
                       size_t errlen) {
  *meta = NULL;
  char path[4200];
  snprintf(path, sizeof(path), "%s/_metadata", chk);
  struct stat st;
  if (stat(path, &st) != 0) {
    sl__errf(err, errlen, "no _metadata (incomplete)");
    return SL_ERR_NOTFOUND;
  }
  json_error_t je;
  json_t *m = json_load_file(path, 0, &je);
  if (!m) {
    sl__errf(err, errlen, "_metadata is not valid JSON: %s (line %d)", je.text,
             je.line);
    return SL_ERR_CORRUPT;
  }
  json_int_t format = 0, id = 0, max_par = 0;
  const char *backend = NULL;
  json_t *files = NULL, *workers = NULL;
  if (json_unpack_ex(m, &je, 0, "{s:I,s:I,s:I,s:s,s:o,s:o}", "format", &format,
                     "id", &id, "max_parallelism", &max_par, "backend",
                     &backend, "files", &files, "workers", &workers) ||
      !json_is_array(files) || !json_is_array(workers)) {
    sl__errf(err, errlen, "_metadata is incomplete: %s",
             json_is_array(files) ? je.text : "no files array");
    json_decref(m);
    return SL_ERR_CORRUPT;
  }
  if (format != SL__CKPT_FORMAT) {
    sl__errf(err, errlen, "unsupported checkpoint format %lld",
             (long long)format);
    json_decref(m);
    return SL_ERR_CORRUPT;
  }
  *meta = m;
  return SL_OK;
}

/* A listed path must name a file inside the checkpoint: a damaged or
 * hostile _metadata must not make a reader (or a copy) leave it. */
static bool safe_rel(const char *rel) {
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

int sl__ckpt_file_check(const char *chk, json_t *entry, bool full, char *err,
                        size_t errlen) {
  const char *rel, *hex;
  json_int_t bytes;
  if (json_unpack(entry, "{s:s,s:I,s:s}", "path", &rel, "bytes", &bytes,
                  "crc32c", &hex)) {
    sl__errf(err, errlen, "_metadata has a malformed file entry");
    return SL_ERR_CORRUPT;
  }
  if (!safe_rel(rel)) {
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
