/* SPDX-License-Identifier: Apache-2.0 */
/* Whether a checkpoint can be restored: the one judgment that restore
 * (coord.c) and every `sluice-ckpt` command share. _metadata is parsed and
 * validated only here, so a checkpoint restore accepts is exactly one
 * verify accepts. Uses nothing above the checkpoint layer. */
#ifndef SL_CHECKPOINT_CHECK_H
#define SL_CHECKPOINT_CHECK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/format.h"
#include "checkpoint/incr.h"

/* One worker of _metadata's "workers". Strings point into the JSON. */
typedef struct sl__ckpt_worker {
  bool ok; /* the entry is well formed (always, once the check passed) */
  int index;
  uint32_t kg_lo, kg_hi;
  const char *file;   /* w<i>.snap, relative to the checkpoint */
  const char *native; /* native state directory (w<i>.state) or NULL */
} sl__ckpt_worker;

/* _metadata, parsed. Unknown members are allowed anywhere (newer writers
 * may add some); known ones must have their type and range. */
typedef struct sl__ckpt_meta {
  json_t *json; /* owned */
  int format;   /* SL__CKPT_FORMAT_MIN .. SL__CKPT_FORMAT */
  uint64_t id;
  const char *job, *backend; /* job: "" when absent */
  int64_t created_ms, duration_ms;
  uint64_t restarts;
  int par;
  uint32_t max_par;
  /* "key_groups": "murmur2" (group mode: a key's key group is its Kafka
   * partition, docs/scaling.md); absent: the key hash modulo max_par. */
  bool kg_murmur2;
  json_t *files;            /* validated array of {path, bytes, crc32c} */
  sl__ckpt_worker *workers; /* par entries (NULL when par is unknown) */
  int n_workers;
} sl__ckpt_meta;

/* A worker file checked (trailer, header), and with keep read into
 * memory; with keep_small only its sections other than keyed-state
 * entries and timers are (each timer section as its uid alone), so
 * restore holds a bounded part of the file and reads the entries and
 * timers from the file as a stream (codec.h). data's first
 * SL__SNAP_HEADER bytes are then zero; head holds the header. */
typedef struct sl__ckpt_image {
  unsigned char *data;
  size_t len;
  sl__snap_head head;
  sl__rd body;
} sl__ckpt_image;

/* A problem found: the file it is about, relative to the checkpoint
 * ("_metadata", "w1.snap", "w0.state/000012.sst"), and the message, which
 * names the file too. */
typedef void (*sl__ckpt_problem_fn)(const char *file, const char *msg,
                                    void *opaque);

typedef struct sl__ckpt_check {
  /* In. */
  bool quick;      /* sizes only: no checksums, worker files not read (list) */
  bool keep;       /* keep the worker files' images (inspect, dump) */
  bool keep_small; /* keep what restore reads whole (see sl__ckpt_image) */
  sl__ckpt_problem_fn problem; /* every problem; NULL: stop at the first */
  void *opaque;
  /* Out, valid after the call whatever it returned (free them). */
  sl__ckpt_meta meta;     /* meta.json NULL when _metadata is unreadable */
  sl__ckpt_image *images; /* with keep or keep_small: one per worker */
  sl__seg *segs;          /* segment files (incremental keyed state) */
  size_t n_segs;
  uint64_t n_files, bytes, entries, timers;
  /* Bytes read from the checkpoint's files (_metadata aside): each file
   * once, its checksum computed in the pass that decodes it. */
  uint64_t bytes_read;
  int n_problems;
} sl__ckpt_check;

/* Checks chk (a chk-<id> directory): _metadata (JSON, types, ranges; its
 * id against the directory name chk-<id>; parallelism, workers and
 * key-group ranges agreeing; every worker file listed in "files"), then
 * every listed file's size and CRC32C, then every segment file and every
 * worker file: its trailer, its header against _metadata and each section
 * decoded to its last byte, and every key group's chain of segments
 * (incr.h) against the segments. Worker and segment files are read once
 * each, as a stream (memory bounded by the largest item), their
 * checksums computed in the same pass; of segment files only where their
 * sections are is kept (segs). entries counts the keyed-state entries
 * of worker files; those of chains are what loading them gives. Native
 * state directories are checked file by file only; what a backend thinks
 * of them is the caller's business.
 * SL_OK; SL_ERR_NOTFOUND when there is no _metadata (an incomplete
 * checkpoint); SL_ERR_CORRUPT when anything is wrong, with the first
 * problem in err; SL_ERR_NOMEM. */
int sl__ckpt_check_run(const char *chk, sl__ckpt_check *c, char *err,
                       size_t errlen);
void sl__ckpt_check_free(sl__ckpt_check *c);

/* _metadata alone, parsed and validated as above (files not opened).
 * Same returns; on success *m is the caller's (sl__ckpt_meta_free). */
int sl__ckpt_meta_read(const char *chk, sl__ckpt_meta *m, char *err,
                       size_t errlen);
void sl__ckpt_meta_free(sl__ckpt_meta *m);

#endif
