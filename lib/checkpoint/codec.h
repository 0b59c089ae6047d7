/* SPDX-License-Identifier: Apache-2.0 */
/* Snapshots of keyed state over an explicit backend, timer service and
 * buffer: the sections of a worker's snapshot file (format.h) written from
 * them and read back into them, and a worker's native state directory read
 * through the backend that wrote it. The runtime calls these at barriers
 * and on restore; sluice-ckpt reads with them (and format.h alone), never
 * with the state or time layers' headers. */
#ifndef SL_CHECKPOINT_CODEC_H
#define SL_CHECKPOINT_CODEC_H

#include <stdbool.h>
#include <stdint.h>

#include "checkpoint/format.h"
#include "sluice/conf.h"

struct sl__backend; /* state/backend.h */
struct sl__timers;  /* time/timers.h */

/* ---- Writing ------------------------------------------------------------ */

/* SL__SEC_STATES: every state registered in be (id, type, name). */
int sl__snap_put_states(sl_buf_t *b, struct sl__backend *be);
/* SL__SEC_ENTRIES: one section per non-empty key group of be, in order;
 * adds the number of entries written to *entries. */
int sl__snap_put_entries(sl_buf_t *b, struct sl__backend *be,
                         uint64_t *entries);
/* One record of an SL__SEC_ENTRIES or SL__SEC_DELTA section: a backend
 * scan callback (kg_scan, kg_changes) over an sl__snap_recs, appending to
 * b and counting in n. val NULL (kg_changes only): the (state, key, ns)
 * holds nothing, a record only SL__SEC_DELTA has. */
typedef struct sl__snap_recs {
  sl_buf_t *b;
  uint64_t n;
} sl__snap_recs;
int sl__snap_put_rec(uint32_t state, const void *key, size_t key_len,
                     const void *ns, size_t ns_len, const void *mk,
                     size_t mk_len, const void *val, size_t len, void *opaque);
/* SL__SEC_TIMERS: every timer of t, under the operator's uid; adds the
 * number written to *timers. */
int sl__snap_put_timers(sl_buf_t *b, const char *uid, struct sl__timers *t,
                        uint64_t *timers);
/* SL__SEC_TASKWM: the watermark of every task in [lo, hi) that tw holds
 * (nothing when it holds none). */
struct sl__taskwm; /* time/taskwm.h */
int sl__snap_put_taskwm(sl_buf_t *b, const char *uid,
                        const struct sl__taskwm *tw, uint32_t lo, uint32_t hi);
/* SL__SEC_OPSTATE (src NULL) or SL__SEC_SOURCE: an operator's or a source
 * subtask's blob; a source subtask's event time follows its blob. */
typedef struct sl__snap_src {
  uint32_t subtask;
  sl__snap_src_time time;
} sl__snap_src;
int sl__snap_put_blob(sl_buf_t *b, uint32_t type, const char *uid,
                      const sl__snap_src *src, const void *blob, size_t len);

/* ---- Reading into a backend and timers ---------------------------------- */

/* A snapshot's state ids mapped to the target backend's: load_states
 * registers the names (restore registers states before operators ask for
 * them). Free with sl__snap_ids_free. */
typedef struct sl__snap_ids {
  struct sl__backend *to;
  uint32_t *ids; /* SL__SNAP_NO_STATE: a dropped state */
  uint32_t n;
  uint32_t kg; /* of the entries being inserted (the backend checks it) */
  /* States whose data is dropped, not registered, their entries skipped
   * (restore.allow.dropped.state): drop(name) true. NULL drops none. */
  bool (*drop)(const char *name, size_t len, void *opaque);
  void *drop_opaque;
  /* A checkpoint of an older key hash (format < SL__HASH_FORMAT): each
   * entry's key group is recomputed with today's hash, and only entries
   * whose key group is in [lo, hi) are inserted. */
  bool repartition;
  uint32_t lo, hi;
} sl__snap_ids;
#define SL__SNAP_NO_STATE UINT32_MAX
void sl__snap_ids_free(sl__snap_ids *m);

/* The SL__SEC_STATES payload p into m (m->to set). */
int sl__snap_load_states(sl__rd p, sl__snap_ids *m);
/* An SL__SEC_ENTRIES payload of key group kg into m->to. */
int sl__snap_load_entries(sl__rd p, sl__snap_ids *m, uint32_t kg);
/* The timers of an SL__SEC_TIMERS payload p (read past its uid) whose key
 * group is in [lo, hi), into t; with t NULL (a dropped operator) the
 * payload is only checked. rekey > 0: the checkpoint is of an older key
 * hash, and each timer's key group is recomputed for max parallelism
 * rekey first. */
int sl__snap_load_timers(sl__rd p, struct sl__timers *t, uint32_t lo,
                         uint32_t hi, uint32_t rekey);

/* ---- Reading a worker file as a stream ---------------------------------- */

/* A worker snapshot file read section by section and, in keyed-state and
 * timer sections, item by item: checking or restoring it holds the
 * current item (one entry, one timer) or one small section, never the
 * file, so memory is bounded by the largest item, not by the size of the
 * state. Reads a file (path) or an image in memory (path NULL). A file
 * is read with pread through a 64 KiB buffer that reads no further than
 * the current section, so a section skipped is not read at all (unless
 * the stream reads the file through, SL__STREAM_CRC_LAST). */
typedef struct sl__snap_stream sl__snap_stream;
enum {
  /* The CRC32C of everything before the trailer is checked at open, in
   * a pass over the file first. */
  SL__STREAM_CRC = 1,
  /* The file is read through in order (skipping reads too) and its CRC32C
   * computed on the way; sl__snap_stream_finish checks it. One pass
   * checks and decodes. */
  SL__STREAM_CRC_LAST = 2,
};
/* Opens path (or data/len) and checks its header and trailer as
 * sl__snap_check does (flags: SL__STREAM_*, 0 for neither checksum).
 * SL_OK with *h set; SL_ERR_CORRUPT or SL_ERR_IO (errno set) with the
 * reason in err; SL_ERR_NOMEM. */
int sl__snap_stream_open(sl__snap_stream **out, const char *path,
                         const void *data, size_t len, unsigned flags,
                         sl__snap_head *h, char *err, size_t errlen);
/* With SL__STREAM_CRC_LAST, once the sections were read (or not all of
 * them): reads what is left before the trailer and checks the CRC32C.
 * *file_crc is that of the whole file, trailer included (what
 * _metadata records), whatever the verdict. SL_OK, SL_ERR_CORRUPT
 * ("checksum mismatch ..." in err), SL_ERR_IO. */
int sl__snap_stream_finish(sl__snap_stream *s, uint32_t *file_crc, char *err,
                           size_t errlen);
void sl__snap_stream_close(sl__snap_stream *s);
/* The next section (what is left of the current one is skipped): 1 with
 * its type, key group and payload length, 0 at the end, SL_ERR_CORRUPT
 * on a malformed section header, SL_ERR_IO. */
int sl__snap_stream_next(sl__snap_stream *s, uint32_t *type, uint32_t *kg,
                         uint64_t *len);
/* What is left of the current section's payload, read into memory (for
 * the small sections: names, blobs, layouts). Valid until the next call
 * on s. 0, SL_ERR_IO or SL_ERR_NOMEM. */
int sl__snap_stream_payload(sl__snap_stream *s, sl__rd *p);
/* Items of the current section, each valid until the next call on s: a
 * byte string (a timer section's uid), a keyed-state entry, a timer. 1
 * with the item, 0 at the end of the section, SL_ERR_CORRUPT when the
 * item is cut short or malformed, SL_ERR_IO, SL_ERR_NOMEM. */
int sl__snap_stream_bytes(sl__snap_stream *s, const void **p, size_t *n);
int sl__snap_stream_entry(sl__snap_stream *s, sl__snap_entry *e);
int sl__snap_stream_timer(sl__snap_stream *s, sl__snap_timer *t);
/* A record of an SL__SEC_DELTA section (*clear: a removal, no value). */
int sl__snap_stream_delta(sl__snap_stream *s, sl__snap_entry *e, bool *clear);
/* Back to the start of the current section's payload. */
int sl__snap_stream_rewind(sl__snap_stream *s);
/* The file offset of the current section's payload, and the section at
 * off (payload offset) of len bytes made the current one, as an index
 * of the file recorded them (segment files, incr.h). 0 or
 * SL_ERR_CORRUPT when it is not inside the body. */
uint64_t sl__snap_stream_offset(const sl__snap_stream *s);
int sl__snap_stream_section(sl__snap_stream *s, uint64_t off, uint64_t len);
/* Bytes read from the file so far (0 for an image in memory). */
uint64_t sl__snap_stream_read_bytes(const sl__snap_stream *s);
/* The largest item buffer s has held (bytes): what reading it cost beyond
 * its fixed-size read buffer. */
size_t sl__snap_stream_peak(const sl__snap_stream *s);

/* Restore's readers over the current section of a stream: an
 * SL__SEC_ENTRIES section of key group kg into m->to, and the timers of
 * an SL__SEC_TIMERS section (read past its uid), as the two above. */
int sl__snap_stream_load_entries(sl__snap_stream *s, sl__snap_ids *m,
                                 uint32_t kg);
int sl__snap_stream_load_timers(sl__snap_stream *s, struct sl__timers *t,
                                uint32_t lo, uint32_t hi, uint32_t rekey);

/* ---- Native state directories ------------------------------------------- */

/* A worker's native state directory (chk-<id>/w<i>.state), opened
 * read-only through the backend named in the checkpoint, for key groups
 * [kg_lo, kg_hi) of max_par. NULL with *missing set when this build has
 * no such backend (or it writes no native snapshots); NULL with the
 * reason in err otherwise. conf may be NULL (defaults). */
typedef struct sl__native sl__native;
sl__native *sl__native_open(const char *dir, const char *backend,
                            const sl_conf_t *conf, uint32_t kg_lo,
                            uint32_t kg_hi, uint32_t max_par, int worker,
                            bool *missing, char *err, size_t errlen);
uint32_t sl__native_state_count(const sl__native *n);
int sl__native_state_info(const sl__native *n, uint32_t id, const char **name,
                          uint32_t *type);
/* Calls fn for every entry of key group kg (e->state is the directory's
 * state id), stopping at its first non-zero return. */
typedef int (*sl__snap_entry_fn)(const sl__snap_entry *e, void *opaque);
int sl__native_scan(sl__native *n, uint32_t kg, sl__snap_entry_fn fn,
                    void *opaque);
void sl__native_close(sl__native *n);
/* The key groups [lo, hi) of native directory dir into m->to: registers
 * its states in m and inserts their entries (restore at another
 * parallelism, or from another backend). With m->repartition every key
 * group of the directory is read and m's filter applies. */
int sl__snap_load_native(sl__native *n, sl__snap_ids *m, uint32_t lo,
                         uint32_t hi);

/* The key group the writer of a checkpoint of _metadata format `format`
 * gave key (sluice-ckpt's selection by key). */
uint32_t sl__snap_key_group(int format, const void *key, size_t len,
                            uint32_t max_par);

#endif
