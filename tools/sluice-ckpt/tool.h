/* SPDX-License-Identifier: Apache-2.0 */
/* sluice-ckpt, the operator's tool for checkpoint directories: what the
 * commands share (options, an opened checkpoint, output helpers). Every
 * judgment goes through lib/checkpoint's check (check.h), the one restore
 * runs, so the tool accepts exactly the checkpoints a job restores. */
#ifndef SLUICE_CKPT_TOOL_H
#define SLUICE_CKPT_TOOL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/check.h"
#include "checkpoint/codec.h"
#include "checkpoint/files.h"
#include "checkpoint/format.h"
#include "checkpoint/tasks.h"
#include "core/json.h"

/* Exit codes, the contract for scripts (docs/checkpoints.md). */
enum {
  TOOL_OK = 0,
  TOOL_DAMAGED = 1, /* damaged or incomplete checkpoint */
  TOOL_USAGE = 2,   /* bad usage, I/O error, not a checkpoint */
};

typedef struct tool_opts {
  bool json;
  const char *path; /* the positional DIR or CHK */
  const char *uid, *state, *to;
  const char *key;
  size_t key_len;
  bool have_key;
  long keep; /* -1: not given */
  /* --task of a group store: its name as given ("3", or "<topic>-3"
   * with repartition topics) and its key group, the partition; -1: not
   * given. */
  const char *task_name;
  long task;
  bool ttl, dry_run;
} tool_opts;

/* One worker's part of an opened checkpoint. */
typedef struct tool_worker {
  int index;
  const char *file;   /* w<i>.snap, relative (points into meta) */
  const char *native; /* w<i>.state or NULL */
  uint32_t kg_lo, kg_hi;
  unsigned char *data; /* the .snap image */
  size_t len;
  sl__snap_head head;
  sl__rd body;
} tool_worker;

/* A checkpoint opened for reading: the whole check passed (as verify and
 * restore run it) and every .snap file is in memory. */
typedef struct tool_ckpt {
  char *path;
  sl__ckpt_meta m; /* owns the JSON the strings point into */
  json_t *meta;    /* m.json */
  uint64_t id;
  int par;
  uint32_t max_par;
  const char *backend, *job;
  tool_worker *w;
  int n_w;
  sl__seg *segs; /* segment files of incremental keyed state */
  size_t n_segs;
  bool committed;
} tool_ckpt;

/* Opens chk for reading. TOOL_OK, or TOOL_DAMAGED / TOOL_USAGE with the
 * message already printed to stderr. */
int tool_open(const char *chk, tool_ckpt *ck);
void tool_close(tool_ckpt *ck);

/* Checks everything about chk (verify); fills *report (owned by the
 * caller) with status, problems and notes. Returns the exit code. */
int tool_verify_report(const char *chk, json_t **report);

/* Opens w's native state directory (w->native, key groups of w) with the
 * checkpoint's backend, read-only. NULL with *missing set when this build
 * does not have that backend, or NULL with the reason in err. */
sl__native *tool_native_open(const char *chk, const char *backend,
                             const tool_worker *w, bool *missing, char *err,
                             size_t errlen);

/* A group-mode checkpoint.dir (docs/scaling.md): instances/<instance>/
 * with ordinary checkpoints, tasks/<task>/<generation>.json pointers. */
typedef struct tool_store {
  const char *root;
  char **tasks; /* names of the pointer files (sl__task_ptr_list) */
  size_t n;
} tool_store;

/* Whether dir is a group store (it has instances/ or tasks/). */
bool tool_is_store(const char *dir);

/* Checkpoint listing and retention of one directory, shared by the
 * ordinary and the group commands (dir.c). */
int tool_list_ids(const char *dir, uint64_t **ids, size_t *n);
/* list's quick check of one checkpoint: "complete", "incomplete" or
 * "damaged" (why says why). */
const char *tool_quick_status(const char *chk, char *why, size_t len);
void tool_list_rows(const char *dir, const uint64_t *ids, size_t n, bool json,
                    json_t *arr);
/* prune of one directory: s and inst (its instance name) given, what a
 * task pointer names is kept too. Appends {id, path, status} rows. */
int tool_prune_dir(const char *dir, const tool_opts *o, const tool_store *s,
                   const char *inst, json_t *removed, json_t *kept);

/* Commands on a group store (store.c). */
int store_list(const tool_opts *o);
int store_prune(const tool_opts *o);
int store_verify(const tool_opts *o);
int store_inspect(const tool_opts *o);
/* The part of one checkpoint that is task p->task (read.c): the worker
 * holding its key group (NULL when none does) and the offset of its
 * partition in the position of its source (-1 when not recorded). */
const tool_worker *tool_task_worker(const tool_ckpt *ck, uint32_t task);
int64_t tool_task_position(const tool_ckpt *ck, const sl__task_ptr *p);

/* The checkpoint --task names, for dump and restore: TOOL_OK with its
 * path in chk, else an exit code with the reason printed. */
/* A pointer's pending checkpoint (p->pending set): one line saying what
 * becomes of it, and its fields in a JSON object (nothing without one). */
void tool_pending_text(const char *root, const sl__task_ptr *p, char *out,
                       size_t len);
void tool_pending_json(const char *root, const sl__task_ptr *p, json_t *j);
int store_task_checkpoint(const tool_opts *o, sl__task_ptr *p, char *chk,
                          size_t len);

int cmd_list(const tool_opts *o);
int cmd_inspect(const tool_opts *o);
int cmd_verify(const tool_opts *o);
int cmd_dump(const tool_opts *o);
int cmd_prune(const tool_opts *o);
int cmd_restore(const tool_opts *o);

/* Output helpers. */
__attribute__((format(printf, 1, 2))) void tool_err(const char *fmt, ...);
void tool_print_json(json_t *j);         /* one document, indented, then "\n" */
void tool_print_line(json_t *j);         /* one compact line (JSON lines) */
char *tool_hex(const void *p, size_t n); /* malloc'd */
/* "12.3 KiB" into buf. */
const char *tool_size(uint64_t bytes, char *buf, size_t len);
/* "2026-11-23 15:20:01.123Z" into buf. */
const char *tool_time(int64_t ms, char *buf, size_t len);
const char *tool_btype(uint32_t type);

/* Source positions: decodes a blob into fields of out (e.g. next, step)
 * and returns the decoder's name, or NULL for an unknown shape. */
const char *tool_decode_position(const char *uid, uint32_t subtask,
                                 const void *blob, size_t len, json_t *out);

#endif
