/* SPDX-License-Identifier: Apache-2.0 */
/* Output of the Kafka event-time suites collected in memory: one line per
 * window count or late record, compared as one sorted string. */
#ifndef SL_TEST_OUTS_H
#define SL_TEST_OUTS_H

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

typedef struct outs {
  pthread_mutex_t mu;
  char **line;
  size_t n, cap;
} outs;

static outs out;

static inline void outs_reset(void) {
  for (size_t i = 0; i < out.n; i++)
    free(out.line[i]);
  free(out.line);
  memset(&out, 0, sizeof(out));
  pthread_mutex_init(&out.mu, NULL);
}

static inline void outs_add(const char *kind, const sl_record_t *r, int64_t v) {
  char buf[256];
  snprintf(buf, sizeof(buf), "%s key=%.*s ts=%" PRId64 " v=%" PRId64, kind,
           (int)r->key_len, (const char *)r->key, r->ts, v);
  pthread_mutex_lock(&out.mu);
  if (out.n == out.cap) {
    out.cap = out.cap ? out.cap * 2 : 64;
    out.line = realloc(out.line, out.cap * sizeof(char *));
  }
  out.line[out.n++] = strdup(buf);
  pthread_mutex_unlock(&out.mu);
}

static inline int count_sink(sl_ctx_t *ctx, const sl_record_t *r,
                             void *opaque) {
  (void)ctx, (void)opaque;
  int64_t n = 0;
  if (r->value_len == sizeof(n))
    memcpy(&n, r->value, sizeof(n));
  outs_add("window", r, n);
  return 0;
}

static inline int late_sink(sl_ctx_t *ctx, const sl_record_t *r, void *opaque) {
  (void)ctx, (void)opaque;
  outs_add("late", r, 0);
  return 0;
}

static inline int cmp_line(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted lines joined by newlines; frees them. Caller frees. */
static inline char *join(char **line, size_t n) {
  if (n)
    qsort(line, n, sizeof(char *), cmp_line);
  size_t len = 1;
  for (size_t i = 0; i < n; i++)
    len += strlen(line[i]) + 1;
  char *s = calloc(1, len);
  for (size_t i = 0; i < n; i++)
    strcat(strcat(s, line[i]), "\n");
  return s;
}

static inline char *outs_take(void) {
  pthread_mutex_lock(&out.mu);
  char *s = join(out.line, out.n);
  pthread_mutex_unlock(&out.mu);
  return s;
}

#endif
