/* SPDX-License-Identifier: Apache-2.0 */
/* Incremental snapshots of keyed state for a backend without native ones
 * (the hashmap): a worker writes, per checkpoint, one segment file with
 * only the key groups, and within them only the entries, that changed
 * since its previous checkpoint, and its worker file lists per key group
 * the chain of segment files (a base, then changes) that gives the key
 * group's entries. Segments are immutable and hard-linked into every
 * checkpoint that uses them, so each chk-<id> stays self-contained and
 * deleting an old one never removes data a newer one uses (RocksDB's
 * incremental checkpoints work the same way). See docs/checkpoints.md. */
#ifndef SL_CHECKPOINT_INCR_H
#define SL_CHECKPOINT_INCR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/format.h"
#include "core/buf.h"

struct sl__backend;  /* state/backend.h */
struct sl__snap_ids; /* checkpoint/codec.h */

/* Whether a name is that of a segment file (kv-<id>-w<worker>.seg). */
bool sl__seg_name_ok(const char *name, size_t len);

/* ---- Writing (a worker) ------------------------------------------------- */

/* What a worker remembers between its checkpoints: each key group's
 * chain. Owned by the worker; NULL-safe free. */
typedef struct sl__incr sl__incr;
sl__incr *sl__incr_new(uint32_t kg_lo, uint32_t kg_hi);
void sl__incr_free(sl__incr *in);

/* One snapshot's keyed state. */
typedef struct sl__incr_out {
  sl_buf_t seg;      /* the new segment file; len 0: none */
  char seg_name[64]; /* its name */
  char **links;      /* earlier segments the checkpoint uses */
  size_t n_links;
  uint64_t entries;           /* entries and change records written */
  uint32_t kg_full, kg_delta; /* key groups written whole / as changes */
} sl__incr_out;
void sl__incr_out_free(sl__incr_out *o);

/* Writes the keyed state of be for checkpoint id: a chain section per
 * non-empty key group into the worker file snap (after its states
 * section), the new data into o->seg. completed is the newest completed
 * checkpoint: when this worker's previous snapshot is not, its segment never
 * became durable and every key group is written whole. Key groups are written
 * whole too when their chain would grow too long or too large (see
 * incr.c). SL_OK or a negative sl_err. */
int sl__incr_put(sl__incr *in, struct sl__backend *be, sl_buf_t *snap,
                 uint64_t id, uint64_t completed, int worker, uint32_t max_par,
                 sl__incr_out *o);

/* sl__incr_put in two parts, so that the worker pauses only for the
 * first. sl__incr_begin, on the worker, writes the changed key groups'
 * changes and has the backend freeze those written whole (backend.h:
 * freeze); *job is then the rest of the work, for sl__incr_finish on any
 * thread, which writes the frozen key groups and every chain section into
 * snap (at its end: snap's next bytes must be its chain sections) and
 * finishes o->seg. *job is NULL when nothing was frozen: then everything
 * is written. A job that is not finished is dropped (sl__incr_job_drop:
 * the frozen key groups go back to the worker, the checkpoint must fail);
 * the next sl__incr_begin on the worker learns from it which chains start
 * over. */
typedef struct sl__incr_job sl__incr_job;
int sl__incr_begin(sl__incr *in, struct sl__backend *be, sl_buf_t *snap,
                   uint64_t id, uint64_t completed, int worker,
                   uint32_t max_par, sl__incr_out *o, sl__incr_job **job);
int sl__incr_finish(sl__incr_job *job, sl_buf_t *snap, sl__incr_out *o);
/* Drops the caller's reference (NULL-safe); an unfinished job is given up. */
void sl__incr_job_drop(sl__incr_job *job);

/* After a restore loaded key group kg from the chain section payload
 * chain (the restored checkpoint's segments, by name; base and delta
 * bytes as sl__chain_load counted them in sl__chain_io): the next snapshot
 * continues that chain. */
int sl__incr_seed(sl__incr *in, uint32_t kg, sl__rd chain, uint64_t base,
                  uint64_t delta);

/* ---- Reading ------------------------------------------------------------ */

/* A segment file of a checkpoint, checked, and where its sections are:
 * what reading a key group's chain needs, never the file's data. A chain
 * is read from the files, one link at a time (docs/checkpoints.md). */
typedef struct sl__seg_sec {
  uint32_t type, kg; /* SL__SEC_ENTRIES or SL__SEC_DELTA */
  uint64_t off, len; /* payload */
} sl__seg_sec;
typedef struct sl__seg {
  char *name; /* kv-<id>-w<i>.seg */
  char *path; /* where it is read from */
  sl__snap_head head;
  bool have_states;
  uint64_t states_off, states_len; /* its state names */
  sl__seg_sec *secs;               /* its keyed-state sections */
  size_t n_secs;
} sl__seg;
/* Records a section of sg found at payload offset off. */
int sl__seg_note(sl__seg *sg, uint32_t type, uint32_t kg, uint64_t off,
                 uint64_t len);
/* Reads the segment file at path (named name) through once, checking its
 * trailer and CRC32C, and records where its sections are (the checkpoint
 * check does the same with more checks). SL_OK, SL_ERR_CORRUPT or
 * SL_ERR_IO with the reason in err, SL_ERR_NOMEM. Free with
 * sl__seg_free. */
int sl__seg_read(sl__seg *sg, const char *path, const char *name, char *err,
                 size_t errlen);
void sl__seg_free(sl__seg *sg);
void sl__segs_free(sl__seg *segs, size_t n);
const sl__seg *sl__seg_find(const sl__seg *segs, size_t n, const void *name,
                            size_t len);

/* The names of a chain section's payload: 1 with the next name, 0 at the
 * end, SL_ERR_CORRUPT. Start with sl__chain_count. */
int sl__chain_count(sl__rd *p, uint32_t *n);
int sl__chain_next(sl__rd *p, const void **name, size_t *len);

/* Checks the chain of key group kg (payload p) against segs: every name
 * is a segment of the checkpoint, each holds exactly one section for kg,
 * whole entries (SL__SEC_ENTRIES) only first. SL_OK or SL_ERR_CORRUPT
 * with the reason in err. */
int sl__chain_check(sl__rd p, const sl__seg *segs, size_t n_segs, uint32_t kg,
                    char *err, size_t errlen);

/* What loading a chain read: the bytes of its base and of its changes
 * (sections as the writer counted them, for sl__incr_seed), and the
 * largest item buffer held. */
typedef struct sl__chain_io {
  uint64_t base, delta;
  size_t peak;
} sl__chain_io;

/* Loads key group kg from its chain (payload p) into m->to, each
 * segment's state ids mapped through its own states section (m->drop
 * applies): every link is opened and its two sections (state names, the
 * key group's) are read as a stream, one entry at a time, so memory is
 * that of one read buffer and one item. Adds to *io when not NULL.
 * SL_OK, SL_ERR_CORRUPT (with the segment named in err), SL_ERR_IO,
 * SL_ERR_NOMEM, or the backend's error. */
int sl__chain_load(sl__rd p, const sl__seg *segs, size_t n_segs,
                   const struct sl__snap_ids *m, uint32_t kg, sl__chain_io *io,
                   char *err, size_t errlen);

/* The entries of key group kg as its chain gives them, through fn with
 * the state's name and type (sluice-ckpt's inspect, dump and verify). */
typedef int (*sl__chain_fn)(const char *state, uint32_t type,
                            const sl__snap_entry *e, void *opaque);
int sl__chain_scan(sl__rd p, const sl__seg *segs, size_t n_segs,
                   uint32_t max_par, uint32_t kg, sl__chain_fn fn,
                   void *opaque);

#endif
