/* SPDX-License-Identifier: Apache-2.0 */
/* The checkpoint store, without a job: writing files durably, listing
 * chk-<id>, reading and checking one listed file, retention (reading a
 * whole file, mkdir -p and removing a tree are core/fs.h). Shared by the
 * coordinator (coord.c), the checkpoint check (check.h) and the sluice-ckpt
 * tool; uses nothing above the checkpoint layer. */
#ifndef SL_CHECKPOINT_FILES_H
#define SL_CHECKPOINT_FILES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/fs.h"

/* Version of _metadata ("format") this build writes; it reads every one
 * from SL__CKPT_FORMAT_MIN on. 2: keys of 8 and 16 bytes hash
 * differently (sl__hash64 in core/hash.h), so format 1's key groups are
 * read with sl__hash64_v1 and re-partitioned on restore. 3: keyed state
 * of the hashmap backend may be in segment files that later checkpoints
 * share (checkpoint/incr.h); the key hash is format 2's. */
#define SL__CKPT_FORMAT 3
#define SL__CKPT_FORMAT_MIN 1

/* chk-<id> directory ids of dir (id > 0, decimal), newest first; *ids is
 * malloc'd. A missing dir is empty. 0 or -1 with errno. */
int sl__ckpt_list(const char *dir, uint64_t **ids, size_t *n);
/* Writes len bytes to path, created with mode, and fsyncs it (a temp
 * name, then rename, makes it atomic). 0 or -1 with errno. */
int sl__ckpt_write_file(const char *path, const void *data, size_t len,
                        mode_t mode);
/* fsync of a file, or of a directory (after a rename in it). */
int sl__ckpt_fsync_path(const char *path, bool dir);

/* CRC32C and size of a file, streamed. 0 or -1 with errno. */
int sl__ckpt_crc_file(const char *path, uint32_t *crc, uint64_t *size);

/* Whether a path from _metadata names something inside the checkpoint
 * (relative, no "." or ".." component): a damaged or hostile _metadata
 * must not make a reader, or a copy, leave it. */
bool sl__ckpt_safe_rel(const char *rel);

/* Checks one entry of _metadata's "files" against the file in chk: its
 * path stays inside chk, it exists with the recorded size and, when full,
 * the recorded CRC32C (without full it is the quick check: size only).
 * SL_OK or SL_ERR_CORRUPT with e.g. "w0.snap is damaged (...)" in err. */
int sl__ckpt_file_check(const char *chk, json_t *entry, bool full, char *err,
                        size_t errlen);

/* Retention, shared by the coordinator (checkpoint.retained) and
 * `sluice-ckpt prune`: fed the checkpoints of a directory newest first,
 * says for each whether to remove it. The newest `keep` complete ones
 * stay; everything else older than the newest complete one goes; what is
 * newer than that may still be being written and stays. */
typedef struct sl__retention {
  long keep, kept;
  bool seen_complete;
} sl__retention;
bool sl__ckpt_retain_next(sl__retention *r, bool complete);

#endif
