/* SPDX-License-Identifier: Apache-2.0 */
/* Encoding and checking of worker snapshot files (format.h). */
#include "checkpoint/format.h"

#include <string.h>

#include "core/crc32c.h"
#include "core/util.h"

int sl__snap_begin_file(sl_buf_t *b, const sl__snap_head *h) {
  int rc = sl_buf_append(b, SL__SNAP_MAGIC, 8);
  if (!rc)
    rc = sl__buf_u32(b, SL__SNAP_VERSION);
  if (!rc)
    rc = sl__buf_u32(b, h->worker);
  if (!rc)
    rc = sl__buf_u64(b, h->id);
  if (!rc)
    rc = sl__buf_u32(b, h->kg_lo);
  if (!rc)
    rc = sl__buf_u32(b, h->kg_hi);
  if (!rc)
    rc = sl__buf_u32(b, h->max_par);
  if (!rc)
    rc = sl__buf_u32(b, 0);
  return rc;
}

int sl__snap_begin_section(sl_buf_t *b, uint32_t type, uint32_t kg,
                           size_t *mark) {
  int rc = sl__buf_u32(b, type);
  if (!rc)
    rc = sl__buf_u32(b, kg);
  *mark = b->len;
  return rc ? rc : sl__buf_u64(b, 0);
}

void sl__snap_end_section(sl_buf_t *b, size_t mark) {
  uint64_t len = b->len - mark - 8;
  for (int i = 0; i < 8; i++)
    b->data[mark + i] = (unsigned char)(len >> (8 * i));
}

int sl__snap_finish_file(sl_buf_t *b) {
  uint64_t len = b->len;
  uint32_t crc = sl__crc32c(0, b->data, b->len);
  int rc = sl__buf_u64(b, len);
  if (!rc)
    rc = sl__buf_u32(b, crc);
  return rc ? rc : sl_buf_append(b, SL__SNAP_TRAILER, 8);
}

bool sl__rd_u8(sl__rd *r, uint8_t *v) {
  if (r->bad || r->end - r->p < 1)
    return !(r->bad = true);
  *v = *r->p++;
  return true;
}
bool sl__rd_u32(sl__rd *r, uint32_t *v) {
  if (r->bad || r->end - r->p < 4)
    return !(r->bad = true);
  *v = sl__le32(r->p);
  r->p += 4;
  return true;
}
bool sl__rd_u64(sl__rd *r, uint64_t *v) {
  if (r->bad || r->end - r->p < 8)
    return !(r->bad = true);
  *v = sl__le64(r->p);
  r->p += 8;
  return true;
}
bool sl__rd_bytes(sl__rd *r, const void **p, size_t *n) {
  uint32_t len;
  if (!sl__rd_u32(r, &len))
    return false;
  if ((size_t)(r->end - r->p) < len)
    return !(r->bad = true);
  *p = r->p;
  *n = len;
  r->p += len;
  return true;
}

int sl__snap_check(const void *data, size_t len, sl__snap_head *h, sl__rd *body,
                   char *err, size_t errlen) {
  const unsigned char *d = data;
  if (len < SL__SNAP_HEADER + SL__SNAP_TRAILER_LEN) {
    sl__errf(err, errlen, "file too short (%zu bytes): truncated", len);
    return SL_ERR_CORRUPT;
  }
  if (memcmp(d, SL__SNAP_MAGIC, 8) != 0) {
    sl__errf(err, errlen, "not a sluice snapshot file (bad magic)");
    return SL_ERR_CORRUPT;
  }
  const unsigned char *t = d + len - SL__SNAP_TRAILER_LEN;
  if (memcmp(t + 12, SL__SNAP_TRAILER, 8) != 0 || sl__le64(t) != len - 20) {
    sl__errf(err, errlen, "incomplete file (no valid trailer): truncated");
    return SL_ERR_CORRUPT;
  }
  uint32_t want = sl__le32(t + 8), got = sl__crc32c(0, d, len - 20);
  if (want != got) {
    sl__errf(err, errlen, "checksum mismatch (crc32c %08x, expected %08x)", got,
             want);
    return SL_ERR_CORRUPT;
  }
  h->version = sl__le32(d + 8);
  if (h->version != SL__SNAP_VERSION) {
    sl__errf(err, errlen, "unsupported snapshot version %u", h->version);
    return SL_ERR_CORRUPT;
  }
  h->worker = sl__le32(d + 12);
  h->id = sl__le64(d + 16);
  h->kg_lo = sl__le32(d + 24);
  h->kg_hi = sl__le32(d + 28);
  h->max_par = sl__le32(d + 32);
  body->p = d + SL__SNAP_HEADER;
  body->end = t;
  body->bad = false;
  return SL_OK;
}

int sl__snap_next(sl__rd *body, uint32_t *type, uint32_t *kg, sl__rd *payload) {
  if (sl__rd_done(body))
    return 0;
  uint64_t len;
  if (!sl__rd_u32(body, type) || !sl__rd_u32(body, kg) ||
      !sl__rd_u64(body, &len) || (uint64_t)(body->end - body->p) < len)
    return SL_ERR_CORRUPT;
  payload->p = body->p;
  payload->end = body->p + len;
  payload->bad = false;
  body->p += len;
  return 1;
}

int sl__snap_states_count(sl__rd *p, uint32_t *n) {
  /* Each state takes at least 12 bytes: a count beyond that is damage,
   * not a reason to allocate. */
  if (!sl__rd_u32(p, n) || *n > (uint32_t)((p->end - p->p) / 12))
    return SL_ERR_CORRUPT;
  return 0;
}

int sl__snap_state_next(sl__rd *p, sl__snap_state *s) {
  if (sl__rd_done(p))
    return 0;
  if (!sl__rd_u32(p, &s->id) || !sl__rd_u32(p, &s->type) ||
      !sl__rd_bytes(p, &s->name, &s->name_len))
    return SL_ERR_CORRUPT;
  return 1;
}

int sl__snap_entry_next(sl__rd *p, sl__snap_entry *e) {
  if (sl__rd_done(p))
    return 0;
  uint8_t has_mk;
  e->mk = NULL;
  e->mk_len = 0;
  if (!sl__rd_u32(p, &e->state) || !sl__rd_bytes(p, &e->key, &e->key_len) ||
      !sl__rd_bytes(p, &e->ns, &e->ns_len) || !sl__rd_u8(p, &has_mk) ||
      has_mk > 1 || (has_mk && !sl__rd_bytes(p, &e->mk, &e->mk_len)) ||
      !sl__rd_bytes(p, &e->val, &e->val_len))
    return SL_ERR_CORRUPT;
  return 1;
}

int sl__snap_delta_next(sl__rd *p, sl__snap_entry *e, bool *clear) {
  if (sl__rd_done(p))
    return 0;
  uint8_t has_mk;
  e->mk = e->val = NULL;
  e->mk_len = e->val_len = 0;
  if (!sl__rd_u32(p, &e->state) || !sl__rd_bytes(p, &e->key, &e->key_len) ||
      !sl__rd_bytes(p, &e->ns, &e->ns_len) || !sl__rd_u8(p, &has_mk) ||
      has_mk > 2)
    return SL_ERR_CORRUPT;
  *clear = has_mk == 2;
  if (*clear)
    return 1;
  if ((has_mk && !sl__rd_bytes(p, &e->mk, &e->mk_len)) ||
      !sl__rd_bytes(p, &e->val, &e->val_len))
    return SL_ERR_CORRUPT;
  return 1;
}

int sl__snap_timer_next(sl__rd *p, sl__snap_timer *t) {
  if (sl__rd_done(p))
    return 0;
  uint64_t ts;
  if (!sl__rd_u32(p, &t->kg) || !sl__rd_u8(p, &t->domain) ||
      !sl__rd_u64(p, &ts) || !sl__rd_bytes(p, &t->key, &t->key_len) ||
      !sl__rd_bytes(p, &t->ns, &t->ns_len) ||
      t->domain >= SL__SNAP_TIMER_DOMAINS)
    return SL_ERR_CORRUPT;
  t->ts = (int64_t)ts;
  return 1;
}

int sl__snap_taskwm_next(sl__rd *p, uint32_t *kg, int64_t *wm) {
  if (sl__rd_done(p))
    return 0;
  uint64_t v;
  if (!sl__rd_u32(p, kg) || !sl__rd_u64(p, &v))
    return SL_ERR_CORRUPT;
  *wm = (int64_t)v;
  return 1;
}

int sl__snap_bcast_next(sl__rd *p, sl__snap_bentry *e) {
  if (sl__rd_done(p))
    return 0;
  if (!sl__rd_bytes(p, &e->name, &e->name_len) ||
      !sl__rd_bytes(p, &e->mk, &e->mk_len) ||
      !sl__rd_bytes(p, &e->val, &e->val_len))
    return SL_ERR_CORRUPT;
  return 1;
}

/* The event-time trailer of a source section, p just past the blob. */
static int src_time(sl__rd *p, sl__snap_src_time *t) {
  uint32_t magic;
  uint64_t ts;
  if (!sl__rd_u32(p, &magic) || magic != SL__SRC_TIME_MAGIC ||
      !sl__rd_u32(p, &t->subtasks) || !sl__rd_u64(p, &ts) ||
      !sl__rd_u8(p, &t->flags) || !sl__rd_done(p))
    return SL_ERR_CORRUPT;
  t->max_ts = (int64_t)ts;
  return 1;
}

int sl__snap_blob(sl__rd p, uint32_t type, const void **uid, size_t *uid_len,
                  uint32_t *subtask, const void **blob, size_t *blob_len) {
  *subtask = 0;
  if (!sl__rd_bytes(&p, uid, uid_len) ||
      (type == SL__SEC_SOURCE && !sl__rd_u32(&p, subtask)) ||
      !sl__rd_bytes(&p, blob, blob_len))
    return SL_ERR_CORRUPT;
  if (type == SL__SEC_SOURCE && !sl__rd_done(&p))
    return src_time(&p, &(sl__snap_src_time){0}) == 1 ? 0 : SL_ERR_CORRUPT;
  return sl__rd_done(&p) ? 0 : SL_ERR_CORRUPT;
}

int sl__snap_source_time(sl__rd p, sl__snap_src_time *t) {
  const void *u, *b;
  size_t ul, bl;
  uint32_t sub;
  if (!sl__rd_bytes(&p, &u, &ul) || !sl__rd_u32(&p, &sub) ||
      !sl__rd_bytes(&p, &b, &bl))
    return SL_ERR_CORRUPT;
  return sl__rd_done(&p) ? 0 : src_time(&p, t);
}
