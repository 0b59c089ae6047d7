/* SPDX-License-Identifier: Apache-2.0 */
/* Growable byte buffer for snapshots. Integers are written little-endian
 * so snapshot files read the same on every machine. */
#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

void sl__buf_free(sl_buf_t *b) {
  free(b->data);
  sl__buf_init(b);
}

int sl__buf_reserve(sl_buf_t *b, size_t n) {
  if (b->cap - b->len >= n)
    return SL_OK;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < n) {
    if (cap > SIZE_MAX / 2)
      return SL_ERR_NOMEM;
    cap *= 2;
  }
  unsigned char *d = realloc(b->data, cap);
  if (!d)
    return SL_ERR_NOMEM;
  b->data = d;
  b->cap = cap;
  return SL_OK;
}

int sl_buf_append(sl_buf_t *b, const void *data, size_t n) {
  if (!b || (n && !data))
    return SL_ERR_INVAL;
  int rc = sl__buf_reserve(b, n);
  if (rc)
    return rc;
  if (n)
    memcpy(b->data + b->len, data, n);
  b->len += n;
  return SL_OK;
}

int sl__buf_u32(sl_buf_t *b, uint32_t v) {
  unsigned char x[4] = {v, v >> 8, v >> 16, v >> 24};
  return sl_buf_append(b, x, 4);
}

int sl__buf_u64(sl_buf_t *b, uint64_t v) {
  unsigned char x[8];
  for (int i = 0; i < 8; i++)
    x[i] = (unsigned char)(v >> (8 * i));
  return sl_buf_append(b, x, 8);
}

int sl__buf_bytes(sl_buf_t *b, const void *p, size_t n) {
  if (n > UINT32_MAX)
    return SL_ERR_RANGE;
  int rc = sl__buf_u32(b, (uint32_t)n);
  return rc ? rc : sl_buf_append(b, p, n);
}
