/* SPDX-License-Identifier: Apache-2.0 */
/* The snapshot file of one worker in a checkpoint (chk-<id>/w<i>.snap):
 * a header, typed sections (state names, per-key-group entries and
 * timers, operator state, source positions) and a trailer with the
 * CRC32C of everything before it, so a file can be verified on its own.
 * Integers are little-endian; byte strings are u32-length-prefixed. */
#ifndef SL_CHECKPOINT_FORMAT_H
#define SL_CHECKPOINT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define SL__SNAP_MAGIC "SLSNAP\x01\x00"
#define SL__SNAP_TRAILER "SLSNAPOK"
#define SL__SNAP_VERSION 1u
#define SL__SNAP_HEADER 40      /* magic, version, worker, id, kg range, K */
#define SL__SNAP_TRAILER_LEN 20 /* u64 length, u32 crc, magic */
#define SL__SNAP_NO_KG UINT32_MAX

enum {
  SL__SEC_STATES = 1,  /* u32 n; n x (u32 id, u32 type, bytes name) */
  SL__SEC_ENTRIES = 2, /* per kg: (u32 state, bytes key, bytes ns,
                          u8 has_mk, [bytes mk], bytes value)* */
  SL__SEC_TIMERS = 3,  /* per (uid, kg): bytes uid, (u8 domain, i64 ts,
                          bytes key, bytes ns)* */
  SL__SEC_OPSTATE = 4, /* bytes uid, bytes blob */
  SL__SEC_SOURCE = 5,  /* bytes uid, u32 subtask, bytes blob, [event time:
                          u32 "SLST", u32 subtasks, u64 max_ts, u8 flags] */
  SL__SEC_BCAST = 6,   /* broadcast state of one instance: bytes uid,
                          (bytes state name, bytes map key, bytes value)* */
  /* 7: SL__SEC_LAYOUT, the state layouts (checkpoint/layout.h). */
  /* Incremental keyed state (checkpoint/incr.h). In a worker file, per
   * key group: the segment files whose sections, applied in order to an
   * empty key group, give its entries. */
  SL__SEC_CHAIN = 8, /* per kg: u32 n, n x bytes segment file name */
  /* In a segment file, per kg: changes since the previous link, records
   * as in SL__SEC_ENTRIES with has_mk 2 for "(state, key, ns) holds
   * nothing" (no mk, no value): a removal, or a map's clearing before its
   * current entries. */
  SL__SEC_DELTA = 9,
  /* Group mode's keyed stage: the watermark of each task (key group) the
   * instance held, restored with the task (docs/scaling.md). */
  SL__SEC_TASKWM = 10, /* bytes uid, (u32 kg, i64 watermark)* */
};

typedef struct sl__snap_head {
  uint32_t version, worker;
  uint64_t id;
  uint32_t kg_lo, kg_hi, max_par;
} sl__snap_head;

/* Writing: header, then sections (begin, payload appended to the buffer,
 * end patches the length), then the trailer. */
int sl__snap_begin_file(sl_buf_t *b, const sl__snap_head *h);
int sl__snap_begin_section(sl_buf_t *b, uint32_t type, uint32_t kg,
                           size_t *mark);
void sl__snap_end_section(sl_buf_t *b, size_t mark);
int sl__snap_finish_file(sl_buf_t *b);

/* The little-endian integers at p (unchecked). */
static inline uint32_t sl__le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static inline uint64_t sl__le64(const unsigned char *p) {
  return (uint64_t)sl__le32(p) | (uint64_t)sl__le32(p + 4) << 32;
}

/* Reading from memory, bounds-checked: every read returns false (and
 * poisons the reader) past the end. */
typedef struct sl__rd {
  const unsigned char *p, *end;
  bool bad;
} sl__rd;
bool sl__rd_u8(sl__rd *r, uint8_t *v);
bool sl__rd_u32(sl__rd *r, uint32_t *v);
bool sl__rd_u64(sl__rd *r, uint64_t *v);
bool sl__rd_bytes(sl__rd *r, const void **p, size_t *n);
static inline bool sl__rd_done(const sl__rd *r) {
  return r->p == r->end;
}

/* Checks a whole file image: header magic and version, trailer, length
 * and CRC32C. On success sets *h and *body (the sections). SL_OK or
 * SL_ERR_CORRUPT with the reason in err. */
int sl__snap_check(const void *data, size_t len, sl__snap_head *h, sl__rd *body,
                   char *err, size_t errlen);
/* Next section of body: 1 with its type, kg and payload reader, 0 at the
 * end, SL_ERR_CORRUPT on a malformed section. */
int sl__snap_next(sl__rd *body, uint32_t *type, uint32_t *kg, sl__rd *payload);

/* Decoding section payloads, shared by restore and sluice-ckpt so both
 * read the layout of the enum above the same way. Each *_next returns 1
 * with the next item (pointers into the file image), 0 at the end of the
 * payload, SL_ERR_CORRUPT when it is malformed. */
/* The type of a state in SL__SEC_STATES: how its values are laid out. A
 * LIST value is framed elements (sl__snap_list_next). */
enum { SL__SNAP_VALUE = 0, SL__SNAP_LIST = 1, SL__SNAP_MAP = 2 };
typedef struct sl__snap_state {
  uint32_t id, type;
  const void *name;
  size_t name_len;
} sl__snap_state;
/* SL__SEC_STATES: the count first (bounded by what the payload can hold),
 * then state_next n times. */
int sl__snap_states_count(sl__rd *p, uint32_t *n);
int sl__snap_state_next(sl__rd *p, sl__snap_state *s);

typedef struct sl__snap_entry {
  uint32_t state;
  const void *key, *ns, *mk, *val; /* mk NULL: not a map entry */
  size_t key_len, ns_len, mk_len, val_len;
} sl__snap_entry;
int sl__snap_entry_next(sl__rd *p, sl__snap_entry *e);
/* SL__SEC_DELTA: as entry_next, with *clear set for a record that
 * empties its (state, key, ns) (e->mk and e->val NULL). */
int sl__snap_delta_next(sl__rd *p, sl__snap_entry *e, bool *clear);

/* The elements of a LIST entry's value: 1 with the element at *off (then
 * advanced past it), 0 at the end, SL_ERR_CORRUPT when the framing does
 * not add up. Start with *off = 0. */
int sl__snap_list_next(const sl__snap_entry *e, size_t *off, const void **elem,
                       size_t *len);

/* SL__SEC_TIMERS: the uid first (sl__rd_bytes), then timer_next. A
 * domain is SL_EVENT_TIME or SL_PROC_TIME (a larger one is
 * corrupt). */
#define SL__SNAP_TIMER_DOMAINS 2
typedef struct sl__snap_timer {
  uint32_t kg;
  uint8_t domain;
  int64_t ts;
  const void *key, *ns;
  size_t key_len, ns_len;
} sl__snap_timer;
int sl__snap_timer_next(sl__rd *p, sl__snap_timer *t);

/* SL__SEC_TASKWM: the uid first (sl__rd_bytes), then one task's
 * watermark per call: 1 with *kg and *wm, 0 at the end, SL_ERR_CORRUPT. */
int sl__snap_taskwm_next(sl__rd *p, uint32_t *kg, int64_t *wm);

/* SL__SEC_OPSTATE and SL__SEC_SOURCE: the whole payload (subtask is set
 * for sources only). */
int sl__snap_blob(sl__rd p, uint32_t type, const void **uid, size_t *uid_len,
                  uint32_t *subtask, const void **blob, size_t *blob_len);

/* SL__SEC_BCAST: the uid first (sl__rd_bytes), then bcast_next, in state
 * then map-key order. */
typedef struct sl__snap_bentry {
  const void *name, *mk, *val;
  size_t name_len, mk_len, val_len;
} sl__snap_bentry;
int sl__snap_bcast_next(sl__rd *p, sl__snap_bentry *e);

/* The event time of a source subtask, kept by the runtime after the
 * source's own blob (sources whose watermarks the runtime generates): the
 * generator's highest timestamp, whether the subtask was idle and whether
 * its input had ended (SL_POLL_END, not a stop). Sections written before
 * it existed have none. */
#define SL__SRC_TIME_MAGIC 0x54534c53u /* "SLST" */
/* SL__SRC_WM: max_ts holds the watermark a user generator (SL_WM_CUSTOM)
 * had emitted, not a highest timestamp. */
enum { SL__SRC_IDLE = 1, SL__SRC_FINISHED = 2, SL__SRC_WM = 4 };
typedef struct sl__snap_src_time {
  uint32_t subtasks;
  int64_t max_ts;
  uint8_t flags;
} sl__snap_src_time;
/* 1 with *t when the SL__SEC_SOURCE payload p has it, 0 when not,
 * SL_ERR_CORRUPT when malformed. */
int sl__snap_source_time(sl__rd p, sl__snap_src_time *t);

#endif
