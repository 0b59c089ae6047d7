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
