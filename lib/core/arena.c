/* SPDX-License-Identifier: Apache-2.0 */
/* Bump allocator with mark/release (see arena.h). Released chunks go to a
 * spare list instead of free() so a steady workload stops allocating. */
#include "core/arena.h"

#include <stdlib.h>

#define SL__CHUNK_MIN (64 * 1024)

void *sl__arena_alloc(sl__arena *a, size_t size) {
  size = (size + 15) & ~(size_t)15;
  sl__arena_chunk *c = a->head;
  if (c && c->cap - c->used >= size) {
    void *p = c->data + c->used;
    c->used += size;
    return p;
  }
  sl__arena_chunk *n = NULL;
  if (a->spare && a->spare->cap >= size) {
    n = a->spare;
    a->spare = n->next;
  } else {
    size_t cap = size > SL__CHUNK_MIN ? size : SL__CHUNK_MIN;
    n = malloc(sizeof(*n) + cap);
    if (!n)
      return NULL;
    n->cap = cap;
  }
  n->used = size;
  n->next = c;
  a->head = n;
  return n->data;
}

/* Pops chunks newer than the mark's chunk, then rewinds it. */
void sl__arena_release(sl__arena *a, void *chunk, size_t used) {
  while (a->head && a->head != chunk) {
    sl__arena_chunk *c = a->head;
    a->head = c->next;
    c->next = a->spare;
    a->spare = c;
  }
  if (a->head)
    a->head->used = used;
}

void sl__arena_free(sl__arena *a) {
  for (int i = 0; i < 2; i++) {
    sl__arena_chunk *c = i ? a->spare : a->head;
    while (c) {
      sl__arena_chunk *n = c->next;
      free(c);
      c = n;
    }
  }
  a->head = a->spare = NULL;
}
