/* SPDX-License-Identifier: Apache-2.0 */
/* The growable byte buffer behind the public sl_buf_t: what snapshots of
 * sources and operators, and the snapshot file writer, append to. */
#ifndef SL_CORE_BUF_H
#define SL_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

struct sl_buf {
  unsigned char *data;
  size_t len, cap;
};

static inline void sl__buf_init(sl_buf_t *b) {
  b->data = NULL;
  b->len = b->cap = 0;
}
void sl__buf_free(sl_buf_t *b);
/* Ensures room for n more bytes; SL_OK or SL_ERR_NOMEM. */
int sl__buf_reserve(sl_buf_t *b, size_t n);
int sl__buf_u32(sl_buf_t *b, uint32_t v);
int sl__buf_u64(sl_buf_t *b, uint64_t v);
/* A length-prefixed (u32) byte string. */
int sl__buf_bytes(sl_buf_t *b, const void *p, size_t n);

#endif
