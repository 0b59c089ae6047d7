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

/* After a restore loaded key group kg from the chain section payload
 * chain (the restored checkpoint's segments, by name; base and delta
 * bytes as sl__chain_load counted them): the next snapshot continues
 * that chain. */
int sl__incr_seed(sl__incr *in, uint32_t kg, sl__rd chain, uint64_t base,
                  uint64_t delta);

/* ---- Reading ------------------------------------------------------------ */

/* A segment file of a checkpoint, read and checked (sl__snap_check). */
typedef struct sl__seg {
  char *name;
  unsigned char *data;
  size_t len;
  sl__snap_head head;
  sl__rd body;
} sl__seg;
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

/* Loads key group kg from its chain (payload p) into m->to, each
 * segment's state ids mapped through its own states section (m->drop
 * applies); adds the bytes of its base and of its changes to *base and
 * *delta when not NULL. */
int sl__chain_load(sl__rd p, const sl__seg *segs, size_t n_segs,
                   const struct sl__snap_ids *m, uint32_t kg, uint64_t *base,
                   uint64_t *delta);

/* The entries of key group kg as its chain gives them, through fn with
 * the state's name and type (sluice-ckpt's inspect and dump). */
typedef int (*sl__chain_fn)(const char *state, uint32_t type,
                            const sl__snap_entry *e, void *opaque);
int sl__chain_scan(sl__rd p, const sl__seg *segs, size_t n_segs,
                   uint32_t max_par, uint32_t kg, sl__chain_fn fn,
                   void *opaque);

#endif
