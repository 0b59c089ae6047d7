/* SPDX-License-Identifier: Apache-2.0 */
/* Error-buffer formatting and string helpers used across the library. */
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void sl__prefault(void *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t m = (uintptr_t)(page > 0 ? page : 4096) - 1;
  uintptr_t a = ((uintptr_t)p + m) & ~m, e = ((uintptr_t)p + len) & ~m;
  if (e > a)
    (void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
#else
  (void)p;
  (void)len;
#endif
}

void sl__verrf(char *err, size_t errlen, const char *fmt, va_list ap) {
  if (!err || errlen == 0)
    return;
  vsnprintf(err, errlen, fmt, ap);
}

void sl__errf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sl__verrf(err, errlen, fmt, ap);
  va_end(ap);
}

char *sl__strdup(const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

void sl__escape(char *buf, size_t buflen, const void *data, size_t len,
                size_t max) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = data;
  size_t o = 0;
  if (buflen == 0)
    return;
  for (size_t i = 0; i < len && i < max; i++) {
    unsigned char c = p[i];
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
      if (o + 1 >= buflen)
        break;
      buf[o++] = (char)c;
    } else {
      if (o + 4 >= buflen)
        break;
      buf[o++] = '\\';
      buf[o++] = 'x';
      buf[o++] = hex[c >> 4];
      buf[o++] = hex[c & 15];
    }
  }
  if (len > max && o + 3 < buflen) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o] = '\0';
}
