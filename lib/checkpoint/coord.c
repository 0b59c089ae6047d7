/* SPDX-License-Identifier: Apache-2.0 */
/* The checkpoint coordinator, on the thread of sl_job_run(): triggers
 * checkpoints (interval, min pause, on demand, final), collects the
 * workers' snapshots, writes chk-<id>/ (files, then _metadata atomically,
 * participants' commit, then _COMMITTED), keeps the newest N, and at
 * start picks and loads the checkpoint to restore. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/check.h"
#include "checkpoint/files.h"
#include "checkpoint/coord.h"
#include "checkpoint/tasks.h"
#include "state/backend.h"
#include "core/conf.h"
#include "core/crc32c.h"
#include "core/fault.h"
#include "core/log.h"
#include "core/clock.h"
#include "core/fs.h"
#include "core/util.h"
#include "sluice/checkpoint.h"

/* ---- The coordinator's state -------------------------------------------- */
/* A file of a native state directory in the previous checkpoint. */
typedef struct sl__prev_file {
  char *path;
  uint64_t ino, size;
  uint32_t crc;
} sl__prev_file;

struct sl__ckpt {
  sl__ckpt_env env;
  sl_ckpt_participant_t *parts; /* sl__ckpt_add_participant */
  int n_parts;
  bool on; /* checkpoint.dir or restore.from is set */
  char *dir;
  /* Group mode: checkpoint.dir is the store every process shares (root);
   * this process writes into root/instances/<inst> (dir), and task
   * pointers (tasks.h) decide what retention keeps. NULL otherwise. */
  char *root, *inst;
  sl__fmode fmode; /* files.access */
  int lock_fd;     /* flock on <dir>/.lock while the job runs; -1: none */
  int64_t interval_ms, min_pause_ms, timeout_ms;
  int tolerable, retained;
  bool final;

  pthread_mutex_t mu;
  /* Guarded by mu. */
  uint64_t cur;     /* in progress (0: none) */
  sl__wsnap **acks; /* per worker, for cur */
  int n_acks;
  _Atomic uint64_t demand;            /* sl_job_checkpoint() asked for one */
  _Atomic uint64_t trigger, complete; /* newest triggered / completed */
  bool final_taken;
  int64_t last_trigger;                  /* monotonic ms */
  int64_t last_done_job_ms;              /* job clock at the last completion */
  int64_t durations[SL__CKPT_DURATIONS]; /* of the newest completions */
  uint64_t last_id;   /* newest id used (triggered or found on disk) */
  uint64_t last_done; /* newest completed */
  /* Its chk-<id> directory: a revival moves dir to a new instance
   * directory, and the newest completed checkpoint stays in the old one
   * until the next completes (sl_job_checkpoint_info). */
  char last_done_path[4096];
  int64_t last_done_ms, last_duration_ms, last_bytes, last_bytes_new;
  uint64_t completed, failed;
  int fails_in_row;

  int64_t cur_start; /* monotonic ms */
  int64_t last_end;  /* monotonic ms of the last completion or failure */
  uint64_t prev_id;  /* previous complete checkpoint, for incremental reuse */

  sl__prev_file *prev; /* for checksums of shared (hard-linked) files */
  size_t n_prev;
  /* Where the segments of incremental keyed state that workers reuse
   * are: the newest complete checkpoint, else the restored one. */
  char *link_dir;
  int64_t last_pause_us;

  sl__restore *rs;      /* NULL when not restoring; freed once restored */
  uint64_t restored_id; /* the checkpoint the job started from */
  uint64_t restarts;    /* restores over the job's life, kept in metadata */
  int restored;         /* workers done restoring (mu) */
};

#define FORMAT_VERSION SL__CKPT_FORMAT

/* snprintf for paths and messages: truncation is acceptable (paths are
 * checked when used), so no return value to ignore. */
__attribute__((format(printf, 3, 4))) static void pathf(char *buf, size_t len,
                                                        const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, len, fmt, ap);
  va_end(ap);
}

/* Formats err and returns rc: an error with its message. */
__attribute__((format(printf, 4, 5))) static int
failf(char *err, size_t errlen, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sl__verrf(err, errlen, fmt, ap);
  va_end(ap);
  return rc;
}

#define LOG(ck, lvl, ...)                                                      \
  sl__log((ck)->env.conf, (ck)->env.name, lvl, "checkpoint", __VA_ARGS__)

void sl__ckpt_path(const struct sl__ckpt *ck, uint64_t id, char *buf,
                   size_t len) {
  pathf(buf, len, "%s/chk-%" PRIu64, ck->dir, id);
}

const char *sl__ckpt_root(const struct sl__ckpt *ck) {
  return ck->root;
}

void sl__ckpt_rel(const struct sl__ckpt *ck, uint64_t id, char *buf,
                  size_t len) {
  pathf(buf, len, "instances/%s/chk-%" PRIu64, ck->inst, id);
}

void sl__wsnap_free(sl__wsnap *s) {
  if (!s)
    return;
  /* The directory may be removed once this returns: let it be complete. */
  sl__snap_task_wait(s->native_task, NULL, 0);
  sl__incr_job_drop(s->pending);
  sl__buf_free(&s->file);
  sl__buf_free(&s->tail);
  sl__incr_out_free(&s->incr);
  free(s);
}

void sl__wsnap_finish(sl__wsnap *s) {
  if (s->native_task) {
    char err[sizeof(s->err)];
    int rc = sl__snap_task_wait(s->native_task, err, sizeof(err));
    s->native_task = NULL;
    if (rc && !s->rc) {
      s->rc = rc;
      snprintf(s->err, sizeof(s->err), "%s", err);
    }
  }
  if (!s->pending)
    return;
  int rc = s->rc ? s->rc : sl__incr_finish(s->pending, &s->file, &s->incr);
  sl__incr_job_drop(s->pending);
  s->pending = NULL;
  if (!rc) {
    s->state_entries += s->incr.entries;
    rc = sl_buf_append(&s->file, s->tail.data, s->tail.len);
  }
  if (!rc)
    rc = sl__snap_finish_file(&s->file);
  sl__buf_free(&s->tail);
  if (rc && !s->rc) {
    snprintf(s->err, sizeof(s->err), "worker %d: snapshot failed: %s",
             s->worker, sl_strerror(rc));
    s->rc = rc;
  }
}

/* ---- Files -------------------------------------------------------------- */

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* ---- Writing a checkpoint ----------------------------------------------- */

typedef sl__prev_file prev_file;

/* File rel of the checkpoint being written (at path, st its stat) into
 * its file list and into next (the next checkpoint's prev). Its checksum
 * is reused from the previous checkpoint when it is the same inode (a
 * hard link to the same immutable file): that is what makes such
 * checkpoints incremental. linked: a file of an earlier checkpoint,
 * shared whether or not its checksum was known. */
static int add_file(struct sl__ckpt *ck, json_t *files, const char *path,
                    const char *rel, const struct stat *st, bool linked,
                    uint64_t *bytes, uint64_t *bytes_new, prev_file **next,
                    size_t *n_next, char *err, size_t errlen) {
  uint32_t crc = 0;
  uint64_t size = (uint64_t)st->st_size;
  bool known = false;
  for (size_t i = 0; i < ck->n_prev && !known; i++)
    if (ck->prev[i].ino == (uint64_t)st->st_ino && ck->prev[i].size == size &&
        strcmp(ck->prev[i].path, rel) == 0) {
      crc = ck->prev[i].crc;
      known = true;
    }
  if (!known && sl__ckpt_crc_file(path, &crc, &size)) {
    sl__errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    return SL_ERR_IO;
  }
  bool shared = linked || known;
  char hex[9];
  pathf(hex, sizeof(hex), "%08x", crc);
  json_array_append_new(files, json_pack("{s:s,s:I,s:s,s:b}", "path", rel,
                                         "bytes", (json_int_t)size, "crc32c",
                                         hex, "shared", shared));
  *bytes += size;
  if (!shared)
    *bytes_new += size;
  prev_file *a = realloc(*next, (*n_next + 1) * sizeof(*a));
  if (!a)
    return SL_ERR_NOMEM;
  *next = a;
  a[*n_next] = (prev_file){strdup(rel), (uint64_t)st->st_ino, size, crc};
  (*n_next)++;
  return 0;
}

/* Files of native state directories (see add_file). */
static int add_native_files(struct sl__ckpt *ck, json_t *files, const char *chk,
                            const char *sub, uint64_t *bytes,
                            uint64_t *bytes_new, prev_file **next,
                            size_t *n_next, char *err, size_t errlen) {
  char dir[4096];
  pathf(dir, sizeof(dir), "%s/%s", chk, sub);
  DIR *d = opendir(dir);
  if (!d) {
    sl__errf(err, errlen, "cannot read %s: %s", dir, strerror(errno));
    return SL_ERR_IO;
  }
  struct dirent *e;
  int rc = 0;
  while (!rc && (e = readdir(d))) {
    if (e->d_name[0] == '.')
      continue;
    char path[4096], rel[1024];
    pathf(path, sizeof(path), "%s/%s", dir, e->d_name);
    pathf(rel, sizeof(rel), "%s/%s", sub, e->d_name);
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode))
      continue;
    rc = add_file(ck, files, path, rel, &st, false, bytes, bytes_new, next,
                  n_next, err, errlen);
  }
  closedir(d);
  return rc;
}

/* Segment file name of an earlier checkpoint into chk: a hard link to
 * the same immutable file, or a copy where links are not possible. */
static int link_segment(const struct sl__ckpt *ck, const char *chk,
                        const char *name, char *err, size_t errlen) {
  char src[4200], dst[4200];
  pathf(src, sizeof(src), "%s/%s", ck->link_dir ? ck->link_dir : "", name);
  pathf(dst, sizeof(dst), "%s/%s", chk, name);
  if (!ck->link_dir) {
    sl__errf(err, errlen, "%s: no earlier checkpoint holds it", name);
    return SL_ERR_STATE;
  }
  if (link(src, dst) == 0)
    return 0;
  if (errno == EXDEV || errno == EPERM || errno == EMLINK) {
    unsigned char *data;
    size_t len;
    if (sl__read_file(src, &data, &len) == 0) {
      int rc = sl__ckpt_write_file(dst, data, len, ck->fmode.file);
      free(data);
      if (rc == 0)
        return 0;
    }
  }
  sl__errf(err, errlen, "cannot link %s into %s: %s", src, chk,
           strerror(errno));
  return SL_ERR_IO;
}

/* A worker's incremental keyed state: its new segment (written), then
 * the earlier segments it uses (linked, their checksums reused from the
 * previous checkpoint's list when the file is the same). */
static int add_segments(struct sl__ckpt *ck, json_t *files, const char *chk,
                        const sl__wsnap *s, uint64_t *bytes,
                        uint64_t *bytes_new, prev_file **next, size_t *n_next,
                        char *err, size_t errlen) {
  const sl__incr_out *o = &s->incr;
  char path[4200], hex[9];
  if (o->seg.len) {
    pathf(path, sizeof(path), "%s/%s", chk, o->seg_name);
    if (sl__ckpt_write_file(path, o->seg.data, o->seg.len, ck->fmode.file)) {
      sl__errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
      return SL_ERR_IO;
    }
    uint32_t crc = sl__crc32c(0, o->seg.data, o->seg.len);
    pathf(hex, sizeof(hex), "%08x", crc);
    json_array_append_new(
        files, json_pack("{s:s,s:I,s:s,s:b}", "path", o->seg_name, "bytes",
                         (json_int_t)o->seg.len, "crc32c", hex, "shared", 0));
    *bytes += o->seg.len;
    *bytes_new += o->seg.len;
    struct stat st;
    prev_file *a = realloc(*next, (*n_next + 1) * sizeof(*a));
    if (!a)
      return SL_ERR_NOMEM;
    *next = a;
    a[*n_next] =
        (prev_file){strdup(o->seg_name),
                    stat(path, &st) ? 0 : (uint64_t)st.st_ino, o->seg.len, crc};
    (*n_next)++;
  }
  for (size_t i = 0; i < o->n_links; i++) {
    const char *name = o->links[i];
    /* Workers restored at another parallelism share the segments of
     * the workers before them: one link each. */
    bool have = false;
    size_t j;
    json_t *f;
    json_array_foreach(files, j, f) {
      const char *p = json_string_value(json_object_get(f, "path"));
      have = have || (p && strcmp(p, name) == 0);
    }
    if (have)
      continue;
    int rc = link_segment(ck, chk, name, err, errlen);
    if (rc)
      return rc;
    pathf(path, sizeof(path), "%s/%s", chk, name);
    struct stat st;
    if (stat(path, &st)) {
      sl__errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
      return SL_ERR_IO;
    }
    if ((rc = add_file(ck, files, path, name, &st, true, bytes, bytes_new, next,
                       n_next, err, errlen)))
      return rc;
  }
  return 0;
}

static json_t *operators_json(const sl__graph *g) {
  json_t *ops = json_array();
  for (int i = 0; i < g->n_nodes; i++) {
    sl__node *n = g->nodes[i];
    if (!n->uid)
      continue;
    const char *kind = n->kind == SL__NODE_SOURCE ? "source"
                       : n->ops                   ? n->ops->kind
                                                  : "?";
    json_array_append_new(ops,
                          json_pack("{s:s,s:s,s:b}", "uid", n->uid, "kind",
                                    kind, "keyed", n->ops && n->ops->keyed));
  }
  return ops;
}

/* Writes chk-<id>: worker files, then _metadata (temp, fsync, rename). */
static int write_checkpoint(struct sl__ckpt *ck, uint64_t id, sl__wsnap **snaps,
                            int64_t duration_ms, uint64_t *total_bytes,
                            uint64_t *new_bytes, char *err, size_t errlen) {
  const sl__ckpt_env *env = &ck->env;
  char chk[4096], path[4200];
  sl__ckpt_path(ck, id, chk, sizeof(chk));
  json_t *files = json_array(), *workers = json_array();
  uint64_t bytes = 0, bytes_new = 0;
  prev_file *next = NULL;
  size_t n_next = 0;
  int rc = 0;
  for (int w = 0; !rc && w < env->par; w++) {
    sl__wsnap *s = snaps[w];
    char name[64];
    pathf(name, sizeof(name), "w%d.snap", w);
    pathf(path, sizeof(path), "%s/%s", chk, name);
    if (sl__ckpt_write_file(path, s->file.data, s->file.len, ck->fmode.file)) {
      sl__errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
      rc = SL_ERR_IO;
      break;
    }
    char hex[9];
    pathf(hex, sizeof(hex), "%08x", sl__crc32c(0, s->file.data, s->file.len));
    json_array_append_new(files, json_pack("{s:s,s:I,s:s,s:b}", "path", name,
                                           "bytes", (json_int_t)s->file.len,
                                           "crc32c", hex, "shared", 0));
    bytes += s->file.len;
    bytes_new += s->file.len;
    if (!rc)
      rc = add_segments(ck, files, chk, s, &bytes, &bytes_new, &next, &n_next,
                        err, errlen);
    char native[64] = "";
    if (!rc && s->native) {
      pathf(native, sizeof(native), "w%d.state", w);
      rc = add_native_files(ck, files, chk, native, &bytes, &bytes_new, &next,
                            &n_next, err, errlen);
    }
    json_t *wj = json_pack("{s:i,s:i,s:i,s:s,s:I,s:I}", "index", w, "kg_lo",
                           (int)s->kg_lo, "kg_hi", (int)s->kg_hi, "file", name,
                           "state_entries", (json_int_t)s->state_entries,
                           "timers", (json_int_t)s->timers);
    json_object_set_new(wj, "native",
                        s->native ? json_string(native) : json_null());
    json_array_append_new(workers, wj);
  }
  if (!rc && sl__ckpt_fsync_path(chk, true)) {
    sl__errf(err, errlen, "cannot sync %s: %s", chk, strerror(errno));
    rc = SL_ERR_IO;
  }
  json_t *meta = NULL;
  if (!rc) {
    meta = json_pack(
        "{s:i,s:I,s:s,s:I,s:I,s:i,s:i,s:s,s:I,s:I,s:o,s:o,s:o}", "format",
        FORMAT_VERSION, "id", (json_int_t)id, "job", env->name, "created_ms",
        (json_int_t)sl__wall_ms(), "duration_ms", (json_int_t)duration_ms,
        "parallelism", env->par, "max_parallelism", (int)env->max_par,
        "backend", sl__conf_str(env->conf, "state.backend"), "bytes",
        (json_int_t)bytes, "bytes_new", (json_int_t)bytes_new, "operators",
        operators_json(env->graph), "workers", workers, "files", files);
    workers = files = NULL;
    /* For sluice_job_restarts_total across restarts. */
    if (meta)
      json_object_set_new(meta, "restarts",
                          json_integer((json_int_t)ck->restarts));
    /* Group mode: key groups are Kafka partitions (murmur2), which the
     * checks of a worker file's keys must know. */
    if (meta && ck->root)
      json_object_set_new(meta, "key_groups", json_string("murmur2"));
    char tmp[4200];
    pathf(tmp, sizeof(tmp), "%s/_metadata.tmp", chk);
    pathf(path, sizeof(path), "%s/_metadata", chk);
    char *text =
        meta ? json_dumps(meta, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    if (!text) {
      rc = SL_ERR_NOMEM;
    } else if (sl__ckpt_write_file(tmp, text, strlen(text), ck->fmode.file) ||
               (errno = sl__fault_hit("checkpoint.metadata")) ||
               rename(tmp, path) || sl__ckpt_fsync_path(chk, true)) {
      sl__errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
      rc = SL_ERR_IO;
    }
    free(text);
  }
  json_decref(meta);
  json_decref(workers);
  json_decref(files);
  if (!rc) {
    for (size_t i = 0; i < ck->n_prev; i++)
      free(ck->prev[i].path);
    free(ck->prev);
    ck->prev = next;
    ck->n_prev = n_next;
    *total_bytes = bytes;
    *new_bytes = bytes_new;
  } else {
    for (size_t i = 0; i < n_next; i++)
      free(next[i].path);
    free(next);
  }
  return rc;
}

/* Keeps the newest `retained` complete checkpoints; removes older ones and
 * incomplete directories older than the newest complete one. */
static void retain(struct sl__ckpt *ck) {
  uint64_t *ids;
  size_t n;
  if (sl__ckpt_list(ck->dir, &ids, &n))
    return;
  sl__retention r = {.keep = ck->retained};
  for (size_t i = 0; i < n; i++) {
    char chk[4096], meta[4200];
    sl__ckpt_path(ck, ids[i], chk, sizeof(chk));
    pathf(meta, sizeof(meta), "%s/_metadata", chk);
    bool complete = exists(meta);
    if (ids[i] == ck->cur || !sl__ckpt_retain_next(&r, complete))
      continue;
    /* Group mode: a checkpoint some task pointer names is that task's
     * newest snapshot (maybe of a task this process gave away), kept
     * until its owner points elsewhere. */
    char rel[600];
    if (ck->root && (sl__ckpt_rel(ck, ids[i], rel, sizeof(rel)),
                     sl__task_ptr_refs(ck->root, rel)))
      continue;
    if (sl__rmtree(chk))
      LOG(ck, SL__LOG_WARN, "cannot remove old checkpoint %s: %s", chk,
          strerror(errno));
  }
  free(ids);
  if (ck->root)
    sl__task_gc(ck->root, ck->inst, false, NULL, NULL);
}

/* ---- Coordinator -------------------------------------------------------- */

void sl__ckpt_ack(struct sl__ckpt *ck, sl__wsnap *s) {
  pthread_mutex_lock(&ck->mu);
  if (s->id == ck->cur && !ck->acks[s->worker]) {
    ck->acks[s->worker] = s;
    ck->n_acks++;
    s = NULL;
  }
  pthread_mutex_unlock(&ck->mu);
  sl__wsnap_free(s); /* of a checkpoint given up meanwhile */
}

/* The bookkeeping of a checkpoint that failed or could not start (mu
 * held). */
static void count_failure(struct sl__ckpt *ck) {
  ck->failed++;
  ck->fails_in_row++;
  ck->last_end = sl__mono_ms();
}

/* The bookkeeping of a completed checkpoint (mu held): what
 * sl_job_checkpoint_info and the metrics read. */
static void note_done(struct sl__ckpt *ck, uint64_t id, int64_t duration,
                      uint64_t bytes, uint64_t bytes_new) {
  ck->last_done = id;
  ck->last_done_path[0] = '\0';
  if (ck->dir)
    sl__ckpt_path(ck, id, ck->last_done_path, sizeof(ck->last_done_path));
  ck->last_done_ms = sl__wall_ms();
  ck->last_done_job_ms = sl_clock_now(*ck->env.clock);
  ck->last_duration_ms = duration;
  ck->durations[ck->completed % SL__CKPT_DURATIONS] = duration;
  ck->last_bytes = (int64_t)bytes;
  ck->last_bytes_new = (int64_t)bytes_new;
  ck->completed++;
  ck->fails_in_row = 0;
  ck->last_end = sl__mono_ms();
}

void sl__ckpt_note(struct sl__ckpt *ck, uint64_t id, int64_t duration_ms,
                   uint64_t bytes, uint64_t restarts) {
  pthread_mutex_lock(&ck->mu);
  if (id)
    note_done(ck, id, duration_ms, bytes, bytes);
  else if (!restarts)
    count_failure(ck);
  if (restarts)
    ck->restarts = restarts;
  pthread_mutex_unlock(&ck->mu);
}

/* Starts checkpoint last_id + 1 (mu held). A directory that cannot be
 * created fails the checkpoint; returns the error that must fail the job
 * when that makes too many failures in a row, else 0. */
static int trigger(struct sl__ckpt *ck, char *err, size_t errlen) {
  uint64_t id = ++ck->last_id;
  char chk[4096];
  sl__ckpt_path(ck, id, chk, sizeof(chk));
  int fault = sl__fault_hit("checkpoint.mkdir");
  if (fault || sl__mkdirs(chk, ck->fmode.dir)) {
    const char *why = strerror(fault ? fault : errno);
    LOG(ck, SL__LOG_WARN, "checkpoint %" PRIu64 " failed: cannot create %s: %s",
        id, chk, why);
    count_failure(ck);
    if (ck->fails_in_row <= ck->tolerable)
      return 0;
    return failf(err, errlen, SL_ERR_IO,
                 "checkpoint %" PRIu64 " failed (cannot create %s: %s) and %d "
                 "consecutive failures exceed "
                 "checkpoint.tolerable.failures=%d",
                 id, chk, why, ck->fails_in_row, ck->tolerable);
  }
  ck->cur = id;
  ck->cur_start = sl__mono_ms();
  ck->n_acks = 0;
  atomic_store_explicit(&ck->trigger, id, memory_order_release);
  return 0;
}

static void clear_acks(struct sl__ckpt *ck) {
  for (int w = 0; w < ck->env.par; w++) {
    sl__wsnap_free(ck->acks[w]);
    ck->acks[w] = NULL;
  }
  ck->n_acks = 0;
}

/* Gives up checkpoint cur (mu held, released meanwhile). Returns the
 * error that must fail the job when too many failed in a row, else 0. */
static int fail_cur(struct sl__ckpt *ck, const char *why, char *err,
                    size_t errlen) {
  uint64_t id = ck->cur;
  char chk[4096];
  sl__ckpt_path(ck, id, chk, sizeof(chk));
  LOG(ck, SL__LOG_WARN, "checkpoint %" PRIu64 " failed: %s", id, why);
  clear_acks(ck);
  ck->cur = 0;
  count_failure(ck);
  pthread_mutex_unlock(&ck->mu);
  for (int i = 0; i < ck->n_parts; i++)
    if (ck->parts[i].abort)
      ck->parts[i].abort(id, ck->parts[i].opaque);
  sl__rmtree(chk);
  pthread_mutex_lock(&ck->mu);
  if (ck->fails_in_row <= ck->tolerable)
    return 0;
  sl__errf(err, errlen,
           "checkpoint %" PRIu64 " failed (%s) and %d consecutive "
           "failures exceed checkpoint.tolerable.failures=%d",
           id, why, ck->fails_in_row, ck->tolerable);
  return SL_ERR_IO;
}

/* Every worker acked cur (mu held; released during the I/O). Returns an
 * error that must fail the job, else 0. */
static int complete_cur(struct sl__ckpt *ck, char *err, size_t errlen) {
  uint64_t id = ck->cur;
  char why[512] = "";
  /* Key groups the workers froze are written here, while they go on. The
   * acks stay: only this thread completes or gives up cur. */
  pthread_mutex_unlock(&ck->mu);
  for (int w = 0; w < ck->env.par; w++)
    sl__wsnap_finish(ck->acks[w]);
  pthread_mutex_lock(&ck->mu);
  for (int w = 0; w < ck->env.par && !why[0]; w++)
    if (ck->acks[w]->rc)
      pathf(why, sizeof(why), "%s", ck->acks[w]->err);
  if (why[0])
    return fail_cur(ck, why, err, errlen);
  int64_t duration = sl__mono_ms() - ck->cur_start;
  int64_t pause_us = 0;
  for (int w = 0; w < ck->env.par; w++)
    if (ck->acks[w]->pause_us > pause_us)
      pause_us = ck->acks[w]->pause_us;
  pthread_mutex_unlock(&ck->mu);
  uint64_t bytes = 0, bytes_new = 0;
  int rc = write_checkpoint(ck, id, ck->acks, duration, &bytes, &bytes_new, why,
                            sizeof(why));
  for (int i = 0; !rc && i < ck->n_parts; i++) {
    if (ck->parts[i].commit &&
        (rc = ck->parts[i].commit(id, ck->parts[i].opaque))) {
      /* The state is durable but the output is not committed: the
       * checkpoint stays without _COMMITTED and restart resolves it. */
      pthread_mutex_lock(&ck->mu);
      clear_acks(ck);
      ck->cur = 0;
      const char *why =
          ck->parts[i].error ? ck->parts[i].error(ck->parts[i].opaque) : NULL;
      sl__errf(err, errlen, "checkpoint %" PRIu64 ": commit failed: %s", id,
               why ? why : sl_strerror(rc));
      return rc;
    }
  }
  if (!rc) {
    char path[4200];
    sl__ckpt_path(ck, id, path, sizeof(path));
    strcat(path, "/_COMMITTED");
    /* The fault point between the commit and its mark: a crash here is
     * what restart resolution is for. */
    if ((errno = sl__fault_hit("checkpoint.commit")) ||
        sl__ckpt_write_file(path, "", 0, ck->fmode.file))
      LOG(ck, SL__LOG_WARN, "cannot write %s: %s", path, strerror(errno));
  }
  pthread_mutex_lock(&ck->mu);
  if (rc)
    return fail_cur(ck, why, err, errlen);
  clear_acks(ck);
  ck->cur = 0;
  note_done(ck, id, duration, bytes, bytes_new);
  ck->last_pause_us = pause_us;
  char *done_dir = malloc(4096);
  if (done_dir) {
    sl__ckpt_path(ck, id, done_dir, 4096);
    free(ck->link_dir);
    ck->link_dir = done_dir;
  }
  atomic_store_explicit(&ck->complete, id, memory_order_release);
  LOG(ck, SL__LOG_INFO,
      "checkpoint %" PRIu64 " completed in %" PRId64 " ms, %" PRIu64 " bytes",
      id, duration, bytes);
  pthread_mutex_unlock(&ck->mu);
  retain(ck);
  pthread_mutex_lock(&ck->mu);
  return 0;
}

/* Releases the lock on checkpoint.dir (lock_dir, below). */
static void unlock_dir(struct sl__ckpt *ck) {
  if (ck->lock_fd >= 0)
    close(ck->lock_fd); /* releases the flock */
  ck->lock_fd = -1;
}

/* One step of the state machine, at t->now: complete, time out, trigger
 * (interval, min pause, demand), or take the final checkpoint once the
 * workers finished cleanly. */
static int ckpt_tick(void *svc, const sl__tick *t, int64_t *next_due, char *err,
                     size_t errlen) {
  struct sl__ckpt *ck = svc;
  if (!ck->dir)
    return SL__SVC_IDLE;
  int rc = 0;
  pthread_mutex_lock(&ck->mu);
  for (;;) {
    int64_t now = sl__mono_ms();
    if (ck->cur && ck->n_acks == ck->env.par) {
      if ((rc = complete_cur(ck, err, errlen)))
        break;
      continue;
    }
    if (ck->cur && now - ck->cur_start >= ck->timeout_ms) {
      char why[128];
      pathf(why, sizeof(why),
            "not complete after checkpoint.timeout.ms=%" PRId64,
            ck->timeout_ms);
      if ((rc = fail_cur(ck, why, err, errlen)))
        break;
      continue;
    }
    if (ck->cur) {
      if (ck->cur_start + ck->timeout_ms < *next_due)
        *next_due = ck->cur_start + ck->timeout_ms;
      rc = t->workers_done ? SL__SVC_BUSY : SL__SVC_IDLE;
      break;
    }
    if (t->workers_done) {
      if (ck->final && !ck->final_taken && t->workers_clean) {
        ck->final_taken = true;
        if ((rc = trigger(ck, err, errlen)))
          break;
        continue;
      }
      break;
    }
    int64_t due = INT64_MAX;
    if (atomic_load(&ck->demand))
      due = now;
    else if (ck->interval_ms > 0)
      due = ck->last_trigger + ck->interval_ms;
    if (due != INT64_MAX && due < ck->last_end + ck->min_pause_ms)
      due = ck->last_end + ck->min_pause_ms;
    if (due <= now) {
      atomic_store(&ck->demand, 0);
      ck->last_trigger = now;
      if ((rc = trigger(ck, err, errlen)))
        break;
      continue;
    }
    if (due < *next_due)
      *next_due = due;
    break;
  }
  pthread_mutex_unlock(&ck->mu);
  return rc;
}

static void ckpt_stop(void *svc) {
  struct sl__ckpt *ck = svc;
  pthread_mutex_lock(&ck->mu);
  if (ck->cur) {
    char err[64];
    fail_cur(ck, "the job ended before it completed", err, sizeof(err));
  }
  pthread_mutex_unlock(&ck->mu);
  unlock_dir(ck); /* the job is over: the directory is free */
}

/* ---- Restore ------------------------------------------------------------ */

static void restore_free(sl__restore *rs) {
  if (!rs)
    return;
  for (int i = 0; i < rs->n_files; i++) {
    free(rs->files[i].data);
    free(rs->files[i].snap);
    free(rs->files[i].native_dir);
  }
  free(rs->files);
  sl__segs_free(rs->segs, rs->n_segs);
  free(rs->path);
  free(rs->backend);
  free(rs);
}

static bool job_has_uid(const sl__graph *g, const char *uid, size_t len) {
  for (int i = 0; i < g->n_nodes; i++) {
    const char *u = g->nodes[i]->uid;
    if (u && strlen(u) == len && memcmp(u, uid, len) == 0)
      return true;
  }
  return false;
}

/* Whether a state name "<uid>/<name>" belongs to an operator of the job. */
static bool job_has_state(const sl__graph *g, const void *name, size_t len) {
  const char *s = name;
  for (size_t i = len; i-- > 0;)
    if (s[i] == '/' && job_has_uid(g, s, i))
      return true;
  return false;
}

/* Checks that every piece of state in the files belongs to an operator the
 * job still has. */
static int check_uids(const sl__graph *g, const sl__restore *rs, char *err,
                      size_t errlen) {
  for (int f = 0; f < rs->n_files; f++) {
    sl__rd body = rs->files[f].body, p;
    uint32_t t, kg;
    int r;
    while ((r = sl__snap_next(&body, &t, &kg, &p)) == 1) {
      const void *u;
      size_t ul;
      if (t == SL__SEC_STATES) {
        uint32_t n;
        sl__snap_state st;
        if (sl__snap_states_count(&p, &n))
          return SL_ERR_CORRUPT;
        for (uint32_t i = 0; i < n; i++) {
          if (sl__snap_state_next(&p, &st) != 1)
            return SL_ERR_CORRUPT;
          u = st.name;
          ul = st.name_len;
          if (!job_has_state(g, u, ul)) {
            sl__errf(err, errlen,
                     "it holds state \"%.*s\" of an operator uid the job no "
                     "longer has (set restore.allow.dropped.state=true to "
                     "drop it)",
                     (int)ul, (const char *)u);
            return SL_ERR_STATE;
          }
        }
      } else if (t == SL__SEC_TIMERS || t == SL__SEC_OPSTATE ||
                 t == SL__SEC_SOURCE || t == SL__SEC_BCAST) {
        if (!sl__rd_bytes(&p, &u, &ul))
          return SL_ERR_CORRUPT;
        if (!job_has_uid(g, u, ul)) {
          sl__errf(err, errlen,
                   "it holds state of operator uid \"%.*s\" which the job no "
                   "longer has (set restore.allow.dropped.state=true to drop "
                   "it)",
                   (int)ul, (const char *)u);
          return SL_ERR_STATE;
        }
      }
    }
    if (r < 0)
      return r;
  }
  return 0;
}

/* Loads chk-<id> (path) after the checkpoint check that sluice-ckpt
 * verify runs too (check.h): restore takes nothing verify refuses.
 * Returns SL_OK, SL_ERR_CORRUPT / SL_ERR_NOTFOUND for a damaged or
 * incomplete checkpoint (the caller may fall back to an older one), or
 * another error that must stop the job (e.g. SL_ERR_CONF for a
 * max.parallelism mismatch). */
static int ckpt_load(const char *path, uint32_t want_max_par, sl__restore **out,
                     char *err, size_t errlen) {
  *out = NULL;
  sl__ckpt_check c = {.keep_small = true};
  int rc = sl__ckpt_check_run(path, &c, err, errlen);
  const sl__ckpt_meta *m = &c.meta;
  if (!rc && want_max_par && m->max_par != want_max_par) {
    sl__errf(err, errlen,
             "it was taken with max.parallelism=%u but the job has %u; "
             "key groups cannot change for the life of the job's state",
             m->max_par, want_max_par);
    rc = SL_ERR_CONF;
  }
  sl__restore *rs = NULL;
  if (!rc && !(rs = calloc(1, sizeof(*rs))))
    rc = SL_ERR_NOMEM;
  if (!rc) {
    *out = rs;
    rs->id = m->id;
    rs->format = m->format;
    rs->restarts = m->restarts;
    rs->path = strdup(path);
    rs->backend = strdup(m->backend);
    rs->files = calloc((size_t)m->n_workers + 1, sizeof(*rs->files));
    if (!rs->path || !rs->backend || !rs->files)
      rc = SL_ERR_NOMEM;
  }
  char *abs = NULL;
  for (int i = 0; !rc && i < m->n_workers; i++) {
    sl__rfile *rf = &rs->files[rs->n_files++];
    sl__ckpt_image *im = &c.images[i];
    rf->data = im->data;
    rf->len = im->len;
    rf->head = im->head;
    rf->body = im->body;
    im->data = NULL; /* now the restore's */
    if ((!abs && !(abs = realpath(path, NULL))) ||
        asprintf(&rf->snap, "%s/%s", abs, m->workers[i].file) < 0) {
      rf->snap = NULL;
      rc = SL_ERR_NOMEM;
      break;
    }
    if (!m->workers[i].native)
      continue;
    if (asprintf(&rf->native_dir, "%s/%s", abs, m->workers[i].native) < 0) {
      rf->native_dir = NULL;
      rc = SL_ERR_NOMEM;
    }
  }
  if (!rc) {
    rs->segs = c.segs; /* now the restore's */
    rs->n_segs = c.n_segs;
    c.segs = NULL;
    c.n_segs = 0;
  }
  for (size_t i = 0; !rc && i < rs->n_segs; i++) {
    sl__seg *sg = &rs->segs[i];
    char *p;
    if ((!abs && !(abs = realpath(path, NULL))) ||
        asprintf(&p, "%s/%s", abs, sg->name) < 0) {
      rc = SL_ERR_NOMEM;
      break;
    }
    free(sg->path);
    sg->path = p;
  }
  free(abs);
  sl__ckpt_check_free(&c);
  if (rc) {
    restore_free(*out);
    *out = NULL;
  }
  return rc;
}

int sl__ckpt_load_path(const char *path, uint32_t max_par, sl__restore **out,
                       char *err, size_t errlen) {
  return ckpt_load(path, max_par, out, err, errlen);
}

void sl__ckpt_restore_free(sl__restore *rs) {
  restore_free(rs);
}

/* Restart resolution for exactly-once sinks (DESIGN §8): a checkpoint
 * whose _COMMITTED mark is missing is used only if every participant
 * says its output was committed. */
static int resolve(const struct sl__ckpt *ck, const sl__restore *rs) {
  const sl__graph *g = ck->env.graph;
  if (!ck->n_parts)
    return 1;
  char mark[4200];
  pathf(mark, sizeof(mark), "%s/_COMMITTED", rs->path);
  if (exists(mark))
    return 1;
  /* Source positions, grouped per source uid. */
  size_t n_uids = 0;
  const char **uids = calloc((size_t)g->n_nodes + 1, sizeof(*uids));
  const sl_blob_t **pos = calloc((size_t)g->n_nodes + 1, sizeof(*pos));
  size_t *counts = calloc((size_t)g->n_nodes + 1, sizeof(*counts));
  sl_blob_t **own = calloc((size_t)g->n_nodes + 1, sizeof(*own));
  int rc = uids && pos && counts && own ? 1 : SL_ERR_NOMEM;
  for (int i = 0; rc == 1 && i < g->n_nodes; i++) {
    sl__node *n = g->nodes[i];
    if (n->kind != SL__NODE_SOURCE || !n->uid)
      continue;
    size_t cap = 0;
    for (int f = 0; f < rs->n_files; f++) {
      sl__rd body = rs->files[f].body, p;
      uint32_t t, kg;
      while (sl__snap_next(&body, &t, &kg, &p) == 1) {
        const void *u, *blob;
        size_t ul, bl;
        uint32_t sub;
        if (t != SL__SEC_SOURCE ||
            sl__snap_blob(p, t, &u, &ul, &sub, &blob, &bl) ||
            ul != strlen(n->uid) || memcmp(u, n->uid, ul) != 0)
          continue;
        if (counts[n_uids] == cap) {
          cap = cap ? 2 * cap : 4;
          sl_blob_t *a = realloc(own[n_uids], cap * sizeof(*a));
          if (!a) {
            rc = SL_ERR_NOMEM;
            break;
          }
          own[n_uids] = a;
        }
        own[n_uids][counts[n_uids]++] = (sl_blob_t){blob, bl};
      }
    }
    uids[n_uids] = n->uid;
    pos[n_uids] = own[n_uids];
    n_uids++;
  }
  for (int i = 0; rc == 1 && i < ck->n_parts; i++)
    if (ck->parts[i].resolve)
      rc = ck->parts[i].resolve(rs->id, uids, pos, counts, n_uids,
                                ck->parts[i].opaque);
  for (size_t i = 0; own && i < n_uids; i++)
    free(own[i]);
  free(own);
  free(uids);
  free(pos);
  free(counts);
  return rc;
}

static int pick_restore(struct sl__ckpt *ck, const char *from, char *out,
                        size_t outlen) {
  const sl__ckpt_env *env = &ck->env;
  char err[1024];
  bool allow_drop = sl__conf_bool(env->conf, "restore.allow.dropped.state");
  if (strcmp(from, "latest") != 0) {
    int rc = ckpt_load(from, env->max_par, &ck->rs, err, sizeof(err));
    if (!rc && !allow_drop)
      rc = check_uids(env->graph, ck->rs, err, sizeof(err));
    if (!rc && resolve(ck, ck->rs) != 1) {
      sl__errf(err, sizeof(err),
               "its exactly-once output was not committed (no _COMMITTED "
               "and the sinks could not confirm it)");
      rc = SL_ERR_STATE;
    }
    if (rc)
      return failf(out, outlen, rc, "cannot restore from checkpoint %s: %s",
                   from, err);
    return 0;
  }
  if (!ck->dir)
    return failf(out, outlen, SL_ERR_CONF,
                 "restore.from=latest needs checkpoint.dir");
  uint64_t *ids;
  size_t n;
  if (sl__ckpt_list(ck->dir, &ids, &n))
    return failf(out, outlen, SL_ERR_IO, "cannot list %s: %s", ck->dir,
                 strerror(errno));
  int rc = 0, complete = 0;
  for (size_t i = 0; i < n && !ck->rs; i++) {
    char chk[4096];
    sl__ckpt_path(ck, ids[i], chk, sizeof(chk));
    rc = ckpt_load(chk, env->max_par, &ck->rs, err, sizeof(err));
    if (rc == SL_ERR_NOTFOUND) {
      LOG(ck, SL__LOG_INFO,
          "checkpoint %s is incomplete (no _metadata); "
          "ignored",
          chk);
      rc = 0;
      continue;
    }
    complete++;
    if (!rc && !allow_drop &&
        (rc = check_uids(env->graph, ck->rs, err, sizeof(err)))) {
      restore_free(ck->rs);
      ck->rs = NULL;
      char msg[1200];
      pathf(msg, sizeof(msg), "%s", err);
      pathf(err, sizeof(err), "%s: %s", chk, msg);
      break; /* the job changed: an older checkpoint would not help */
    }
    if (!rc) {
      int r = resolve(ck, ck->rs);
      if (r != 1) {
        LOG(ck, SL__LOG_WARN,
            "checkpoint %s skipped: its exactly-once output was not "
            "committed; using the previous one",
            chk);
        restore_free(ck->rs);
        ck->rs = NULL;
        /* Not damaged: the job's committed state is older. Before the
         * first committed checkpoint that is the empty start. */
        complete--;
        if (r < 0) {
          rc = r;
          pathf(err, sizeof(err), "resolving it failed: %s", sl_strerror(r));
          break;
        }
        continue;
      }
    }
    if (rc == SL_ERR_CORRUPT) {
      LOG(ck, SL__LOG_WARN,
          "checkpoint %s is damaged and skipped: %s; trying the previous one",
          chk, err);
      rc = 0;
      continue;
    }
    if (rc) {
      if (rc != SL_ERR_STATE) {
        char msg[1200];
        pathf(msg, sizeof(msg), "%s", err);
        pathf(err, sizeof(err), "%s: %s", chk, msg);
      }
      break;
    }
  }
  free(ids);
  if (rc)
    return failf(out, outlen, rc, "cannot restore: checkpoint %s", err);
  if (!ck->rs && complete)
    return failf(out, outlen, SL_ERR_CORRUPT,
                 "cannot restore: none of the %d complete checkpoints "
                 "in %s is valid (see the log); remove them or unset "
                 "restore.from to start empty",
                 complete, ck->dir);
  if (ck->rs)
    LOG(ck, SL__LOG_INFO, "restoring from %s", ck->rs->path);
  return 0;
}

struct sl__ckpt *sl__ckpt_new(const sl__ckpt_env *env) {
  struct sl__ckpt *ck = calloc(1, sizeof(*ck));
  if (!ck || !(ck->acks = calloc((size_t)env->par, sizeof(*ck->acks)))) {
    free(ck);
    return NULL;
  }
  ck->env = *env;
  ck->lock_fd = -1;
  ck->last_end = INT64_MIN / 2;
  pthread_mutex_init(&ck->mu, NULL);
  return ck;
}

int sl__ckpt_add_participant(struct sl__ckpt *ck,
                             const sl_ckpt_participant_t *p) {
  sl_ckpt_participant_t *a =
      realloc(ck->parts, (size_t)(ck->n_parts + 1) * sizeof(*a));
  if (!a)
    return SL_ERR_NOMEM;
  ck->parts = a;
  ck->parts[ck->n_parts++] = *p;
  return SL_OK;
}

int sl__ckpt_setup_image(struct sl__ckpt *ck, const void *data, size_t len,
                         char *err, size_t errlen) {
  sl__restore *rs = calloc(1, sizeof(*rs));
  if (rs) {
    rs->files = calloc(1, sizeof(*rs->files));
    rs->path = strdup("(snapshot)");
    rs->backend = strdup("hashmap");
  }
  if (!rs || !rs->files || !rs->path || !rs->backend ||
      !(rs->files[0].data = malloc(len ? len : 1))) {
    restore_free(rs);
    pathf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  ck->rs = rs;
  ck->on = true;
  rs->id = 1;
  rs->format = SL__CKPT_FORMAT;
  rs->n_files = 1;
  memcpy(rs->files[0].data, data, len);
  rs->files[0].len = len;
  char why[256];
  if (sl__snap_check(rs->files[0].data, len, &rs->files[0].head,
                     &rs->files[0].body, why, sizeof(why))) {
    pathf(err, errlen, "not a valid snapshot: %s", why);
    return SL_ERR_CORRUPT;
  }
  if (rs->files[0].head.max_par != ck->env.max_par) {
    pathf(err, errlen,
          "the snapshot has max.parallelism=%u but the harness has %u",
          rs->files[0].head.max_par, ck->env.max_par);
    return SL_ERR_CONF;
  }
  return 0;
}

/* After a restore, the files of the restored checkpoint's native state
 * directories are what the new checkpoints share (the restored database
 * hard-links them): remember their inodes and checksums, so the first
 * checkpoint of the run is incremental too. */
static void seed_prev(struct sl__ckpt *ck, const char *chk) {
  sl__ckpt_meta meta;
  char err[256];
  if (sl__ckpt_meta_read(chk, &meta, err, sizeof(err)))
    return;
  size_t i;
  json_t *f;
  json_array_foreach(meta.files, i, f) {
    const char *rel = json_string_value(json_object_get(f, "path"));
    const char *hex = json_string_value(json_object_get(f, "crc32c"));
    if (!rel || !hex ||
        !(strchr(rel, '/') || sl__seg_name_ok(rel, strlen(rel))))
      continue; /* only native state and segments are shared */
    char path[4200];
    pathf(path, sizeof(path), "%s/%s", chk, rel);
    /* A file that cannot be remembered is written again: the first
     * checkpoint is then less incremental, never wrong. */
    struct stat st;
    if (stat(path, &st))
      continue;
    prev_file *a = realloc(ck->prev, (ck->n_prev + 1) * sizeof(*a));
    if (!a)
      break;
    ck->prev = a;
    a[ck->n_prev] =
        (prev_file){strdup(rel), (uint64_t)st.st_ino, (uint64_t)st.st_size,
                    (uint32_t)strtoul(hex, NULL, 16)};
    if (a[ck->n_prev].path)
      ck->n_prev++;
  }
  sl__ckpt_meta_free(&meta);
}

/* One job at a time per checkpoint.dir: two jobs writing chk-<id> into
 * one directory would overwrite each other's checkpoints and delete them
 * by retention. An flock on <dir>/.lock, held while the job runs, says so
 * at start; the kernel drops it when the process dies, so a crash never
 * leaves a stale lock. Each job opens the file itself, and locks on
 * separate open files conflict within one process too. */
static int lock_dir(struct sl__ckpt *ck, char *err, size_t errlen) {
  char lock[4200];
  pathf(lock, sizeof(lock), "%s/.lock", ck->dir);
  ck->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, ck->fmode.file);
  if (ck->lock_fd < 0)
    return failf(err, errlen, SL_ERR_IO,
                 "checkpoint.dir \"%s\": cannot create \"%s\": %s", ck->dir,
                 lock, strerror(errno));
  if (flock(ck->lock_fd, LOCK_EX | LOCK_NB)) {
    int en = errno;
    close(ck->lock_fd);
    ck->lock_fd = -1;
    return failf(err, errlen, SL_ERR_STATE,
                 "checkpoint.dir \"%s\" is in use: another job is "
                 "running with it (\"%s\" is locked by this or "
                 "another process: %s); give each running job its own "
                 "checkpoint.dir",
                 ck->dir, lock, en == EWOULDBLOCK ? "held" : strerror(en));
  }
  return 0;
}

static int ckpt_start_locked(struct sl__ckpt *ck, char *err, size_t errlen);

/* Group mode: checkpoint.dir becomes the shared root, and this process
 * writes under a directory of its own, named so that no other process,
 * on this machine or another, ever picks the same (host, pid, start
 * time): instances never share a directory, so they never race on one. */
static int group_dirs(struct sl__ckpt *ck) {
  char host[256] = "host";
  if (gethostname(host, sizeof(host) - 1) == 0)
    host[sizeof(host) - 1] = 0;
  for (char *p = host; *p; p++)
    if (*p == '/' || *p == '.')
      *p = '_';
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ck->root = ck->dir;
  ck->dir = NULL;
  if (asprintf(&ck->inst, "%s-%ld-%lld%03ld", host, (long)getpid(),
               (long long)ts.tv_sec, ts.tv_nsec / 1000000) < 0) {
    ck->inst = NULL;
    return -1;
  }
  if (asprintf(&ck->dir, "%s/instances/%s", ck->root, ck->inst) < 0) {
    ck->dir = NULL;
    return -1;
  }
  return 0;
}

/* Under mu: other threads read what start sets (sl_job_checkpoint_info,
 * the metrics). */
static int ckpt_start(void *svc, char *err, size_t errlen) {
  struct sl__ckpt *ck = svc;
  pthread_mutex_lock(&ck->mu);
  int rc = ckpt_start_locked(ck, err, errlen);
  pthread_mutex_unlock(&ck->mu);
  return rc;
}

static int ckpt_start_locked(struct sl__ckpt *ck, char *err, size_t errlen) {
  const sl_conf_t *conf = ck->env.conf;
  const char *dir = sl__conf_str(conf, "checkpoint.dir");
  const char *from = sl__conf_str(conf, "restore.from");
  if (!dir[0] && !from[0])
    return 0;
  ck->on = true;
  ck->interval_ms = sl__conf_int(conf, "checkpoint.interval.ms");
  ck->min_pause_ms = sl__conf_int(conf, "checkpoint.min.pause.ms");
  ck->timeout_ms = sl__conf_int(conf, "checkpoint.timeout.ms");
  ck->tolerable = (int)sl__conf_int(conf, "checkpoint.tolerable.failures");
  ck->retained = (int)sl__conf_int(conf, "checkpoint.retained");
  ck->final = sl__conf_bool(conf, "checkpoint.final");
  ck->fmode = sl__fs_mode(conf);
  ck->last_trigger = sl__mono_ms();
  if (dir[0]) {
    if (!(ck->dir = strdup(dir)))
      return failf(err, errlen, SL_ERR_NOMEM, "out of memory");
    size_t l = strlen(ck->dir);
    while (l > 1 && ck->dir[l - 1] == '/')
      ck->dir[--l] = 0;
    if (sl__conf_enum(conf, "group.mode") != 0 && group_dirs(ck))
      return failf(err, errlen, SL_ERR_NOMEM, "out of memory");
    if (sl__mkdirs(ck->dir, ck->fmode.dir))
      return failf(err, errlen, SL_ERR_IO,
                   "checkpoint.dir \"%s\" cannot be created: %s", dir,
                   strerror(errno));
    int lrc = lock_dir(ck, err, errlen);
    if (lrc)
      return lrc;
    uint64_t *ids;
    size_t n;
    if (sl__ckpt_list(ck->dir, &ids, &n))
      return failf(err, errlen, SL_ERR_IO, "checkpoint.dir \"%s\": %s", dir,
                   strerror(errno));
    ck->last_id = n ? ids[0] : 0; /* new checkpoints never reuse an id */
    free(ids);
  }
  int rc = from[0] ? pick_restore(ck, from, err, errlen) : 0;
  if (!rc && ck->rs) {
    seed_prev(ck, ck->rs->path);
    if (!(ck->link_dir = strdup(ck->rs->path)))
      return failf(err, errlen, SL_ERR_NOMEM, "out of memory");
    ck->restored_id = ck->rs->id;
    ck->restarts = ck->rs->restarts + 1;
    if (ck->rs->id > ck->last_id)
      ck->last_id = ck->rs->id;
  }
  return rc;
}

static void ckpt_destroy(void *svc) {
  struct sl__ckpt *ck = svc;
  if (!ck)
    return;
  unlock_dir(ck);
  clear_acks(ck);
  free(ck->acks);
  restore_free(ck->rs);
  for (size_t i = 0; i < ck->n_prev; i++)
    free(ck->prev[i].path);
  free(ck->prev);
  free(ck->link_dir);
  free(ck->parts);
  pthread_mutex_destroy(&ck->mu);
  free(ck->dir);
  free(ck->root);
  free(ck->inst);
  free(ck);
}

/* A revival (core/service.h): the checkpoint in progress is given up and
 * the next run starts from a clean slate, its ids continuing the
 * sequence. One id is skipped and published as triggered: no checkpoint
 * takes it, so the output epochs of the run that ended (all below it)
 * and of the next (from it on) never meet (sl__job_revived_from), and
 * the workers of the next run, which start at it, take no barrier of the
 * run that ended. In group mode the process also writes into a new
 * instance directory, as a restarted process would: the old one's lock
 * is released, and the retention of any process removes it once no task
 * pointer names its checkpoints. */
static int ckpt_restart(void *svc, char *err, size_t errlen) {
  struct sl__ckpt *ck = svc;
  if (!ck->dir)
    return 0;
  int rc = 0;
  pthread_mutex_lock(&ck->mu);
  if (ck->cur) {
    char why[64];
    fail_cur(ck, "the run ended before it completed", why, sizeof(why));
  }
  /* The new run counts its own failures: the one given up above is not
   * one of them. */
  ck->fails_in_row = 0;
  clear_acks(ck);
  ck->final_taken = false;
  ck->last_trigger = ck->last_end = sl__mono_ms();
  free(ck->link_dir);
  ck->link_dir = NULL;
  for (size_t i = 0; i < ck->n_prev; i++)
    free(ck->prev[i].path);
  free(ck->prev);
  ck->prev = NULL;
  ck->n_prev = 0;
  ck->prev_id = 0;
  uint64_t boundary = ++ck->last_id;
  if (ck->root) {
    unlock_dir(ck);
    free(ck->dir);
    free(ck->inst);
    ck->inst = NULL;
    ck->dir = ck->root;
    ck->root = NULL;
    if (group_dirs(ck))
      rc = failf(err, errlen, SL_ERR_NOMEM, "out of memory");
    else if (sl__mkdirs(ck->dir, ck->fmode.dir))
      rc = failf(err, errlen, SL_ERR_IO, "checkpoint.dir: cannot create %s: %s",
                 ck->dir, strerror(errno));
    else
      rc = lock_dir(ck, err, errlen);
  }
  atomic_store_explicit(&ck->trigger, boundary, memory_order_release);
  pthread_mutex_unlock(&ck->mu);
  return rc;
}

const sl__service_ops sl__ckpt_service = {.name = "checkpoint coordinator",
                                          .start = ckpt_start,
                                          .tick = ckpt_tick,
                                          .stop = ckpt_stop,
                                          .restart = ckpt_restart,
                                          .destroy = ckpt_destroy};

void sl__ckpt_restored(struct sl__ckpt *ck) {
  sl__fault_hit("restore"); /* a crash while the other workers restore */
  pthread_mutex_lock(&ck->mu);
  if (++ck->restored == ck->env.par) {
    restore_free(ck->rs); /* every worker took its part */
    ck->rs = NULL;
  }
  pthread_mutex_unlock(&ck->mu);
}

/* ---- What other threads read ------------------------------------------- */

const sl__restore *sl__ckpt_restoring(const struct sl__ckpt *ck) {
  return ck ? ck->rs : NULL;
}

bool sl__ckpt_enabled(const struct sl__ckpt *ck) {
  return ck && ck->dir;
}

uint64_t sl__ckpt_triggered(const struct sl__ckpt *ck) {
  return atomic_load_explicit(&((struct sl__ckpt *)ck)->trigger,
                              memory_order_acquire);
}

uint64_t sl__ckpt_completed(const struct sl__ckpt *ck) {
  return atomic_load_explicit(&((struct sl__ckpt *)ck)->complete,
                              memory_order_acquire);
}

int sl__ckpt_demand(struct sl__ckpt *ck) {
  if (!ck)
    return SL_ERR_STATE;
  /* dir under mu: a revival replaces it (ckpt_restart). */
  pthread_mutex_lock(&ck->mu);
  bool on = ck->dir != NULL;
  if (on)
    atomic_store(&ck->demand, 1);
  pthread_mutex_unlock(&ck->mu);
  return on ? SL_OK : SL_ERR_STATE;
}

void sl__ckpt_info(struct sl__ckpt *ck, sl_checkpoint_info_t *out) {
  memset(out, 0, sizeof(*out));
  pthread_mutex_lock(&ck->mu);
  out->id = ck->last_done;
  out->completed_at_ms = ck->last_done_ms;
  out->duration_ms = ck->last_duration_ms;
  out->bytes = (uint64_t)ck->last_bytes;
  out->bytes_new = (uint64_t)ck->last_bytes_new;
  out->completed = ck->completed;
  out->failed = ck->failed;
  out->restored_from = ck->restored_id;
  out->pause_us = ck->last_pause_us;
  if (ck->last_done)
    pathf(out->path, sizeof(out->path), "%s", ck->last_done_path);
  pthread_mutex_unlock(&ck->mu);
}

void sl__ckpt_stats_get(struct sl__ckpt *ck, sl__ckpt_stats *out) {
  memset(out, 0, sizeof(*out));
  pthread_mutex_lock(&ck->mu);
  out->enabled = ck->dir || ck->completed || ck->failed;
  out->completed = ck->completed;
  out->failed = ck->failed;
  out->restarts = ck->restarts;
  out->last_id = ck->last_done;
  out->last_duration_ms = ck->last_duration_ms;
  out->last_bytes = ck->last_bytes;
  out->last_done_job_ms = ck->last_done_job_ms;
  memcpy(out->durations, ck->durations, sizeof(out->durations));
  pthread_mutex_unlock(&ck->mu);
}
