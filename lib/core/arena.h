/* SPDX-License-Identifier: Apache-2.0 */
/* A bump allocator with mark/release, for per-record scratch memory:
 * operators mark before a user call and release after it, so scratch use
 * is bounded by one record's nesting and costs no malloc in steady state. */
#ifndef SL_CORE_ARENA_H
#define SL_CORE_ARENA_H

#include <stddef.h>

typedef struct sl__arena_chunk {
  struct sl__arena_chunk *next;
  size_t cap;
  size_t used;
  _Alignas(16) unsigned char data[];
} sl__arena_chunk;

typedef struct sl__arena {
  sl__arena_chunk *head;  /* chunk in use; older ones follow via next */
  sl__arena_chunk *spare; /* released chunks kept for reuse */
} sl__arena;

void *sl__arena_alloc(sl__arena *a, size_t size);
void sl__arena_release(sl__arena *a, void *chunk, size_t used);
void sl__arena_free(sl__arena *a);

#endif
