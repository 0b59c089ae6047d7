/* SPDX-License-Identifier: Apache-2.0 */
/* Broadcast state in a checkpoint. Every instance of a broadcast process
 * operator writes its own copy (as Flink does); the copies are equal by
 * contract (the broadcast side alone writes, from the same records), so
 * restore, at any parallelism, gives every new instance one of them. */
#include <string.h>

#include "checkpoint/bcast.h"

int sl__snap_put_bcast(sl_buf_t *b, const char *uid, const sl__bstates *bs) {
  size_t mark;
  int rc = sl__snap_begin_section(b, SL__SEC_BCAST, SL__SNAP_NO_KG, &mark);
  if (!rc)
    rc = sl__buf_bytes(b, uid, strlen(uid));
  for (size_t i = 0; !rc && i < sl__bstates_count(bs); i++) {
    sl_bstate_t *st = sl__bstates_at(bs, i);
    const char *name = sl__bstate_name(st);
    sl_bstate_iter_t it;
    const void *mk, *val;
    size_t mk_len, len;
    rc = sl_bstate_iter(NULL, st, &it);
    while (!rc && sl_bstate_next(&it, &mk, &mk_len, &val, &len) == 1) {
      rc = sl__buf_bytes(b, name, strlen(name));
      if (!rc)
        rc = sl__buf_bytes(b, mk, mk_len);
      if (!rc)
        rc = sl__buf_bytes(b, val, len);
    }
  }
  if (!rc)
    sl__snap_end_section(b, mark);
  return rc;
}

int sl__snap_load_bcast(sl__rd p, sl__bstates *bs) {
  sl__bstates_clear(bs);
  sl__snap_bentry e;
  int r;
  while ((r = sl__snap_bcast_next(&p, &e)) == 1) {
    sl_bstate_t *st;
    int rc = sl__bstates_find(bs, e.name, e.name_len, true, &st);
    if (!rc)
      rc = sl__bstate_put(st, e.mk, e.mk_len, e.val, e.val_len);
    if (rc)
      return rc;
  }
  return r;
}
