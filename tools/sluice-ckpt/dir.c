/* SPDX-License-Identifier: Apache-2.0 */
/* Commands on a checkpoint.dir and on copies: `list` (quick check of each
 * chk-<id>), `prune` (the coordinator's retention rule, by hand) and
 * `restore` (a verified, self-contained copy of one checkpoint). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/sluice-ckpt/tool.h"

/* ---- Quick look at one checkpoint --------------------------------------- */

typedef struct quick {
  uint64_t id;
  const char *status; /* complete, incomplete, damaged */
  char why[512];
  bool committed;
  int64_t created_ms;
  bool created_from_mtime;
  uint64_t bytes;
  int par;
} quick;

static uint64_t du_total;
static int du_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)path;
  (void)ftw;
  if (flag == FTW_F)
    du_total += (uint64_t)sb->st_size;
  return 0;
}

/* Complete: _metadata reads and every listed file has its listed size
 * (no checksums: that is verify). */
static void quick_check(const char *chk, uint64_t id, quick *q) {
  memset(q, 0, sizeof(*q));
  q->id = id;
  char mark[4200];
  struct stat st;
  snprintf(mark, sizeof(mark), "%s/_COMMITTED", chk);
  q->committed = stat(mark, &st) == 0;
  sl__ckpt_meta meta;
  int rc = sl__ckpt_meta_read(chk, &meta, q->why, sizeof(q->why));
  if (rc) {
    q->status = rc == SL_ERR_NOTFOUND ? "incomplete" : "damaged";
    if (stat(chk, &st) == 0) {
      q->created_ms = (int64_t)st.st_mtime * 1000;
      q->created_from_mtime = true;
    }
    du_total = 0;
    nftw(chk, du_cb, 8, FTW_PHYS);
    q->bytes = du_total;
    return;
  }
  q->created_ms = meta.created_ms;
  q->par = meta.par;
  sl__ckpt_meta_free(&meta);
  sl__ckpt_check c = {.quick = true};
  rc = sl__ckpt_check_run(chk, &c, q->why, sizeof(q->why));
  q->status = rc ? "damaged" : "complete";
  q->bytes = c.bytes;
  sl__ckpt_check_free(&c);
}

const char *tool_quick_status(const char *chk, char *why, size_t len) {
  quick q;
  quick_check(chk, 0, &q);
  snprintf(why, len, "%s", q.why);
  return q.status;
}

/* ids of dir's chk-<id> directories (not symlinks or files), newest
 * first; TOOL_USAGE with a message when dir cannot be read. */
int tool_list_ids(const char *dir, uint64_t **ids, size_t *n) {
  struct stat st;
  if (stat(dir, &st) != 0) {
    tool_err("%s: %s", dir, strerror(errno));
    return TOOL_USAGE;
  }
  if (!S_ISDIR(st.st_mode)) {
    tool_err("%s is not a directory", dir);
    return TOOL_USAGE;
  }
  if (sl__ckpt_list(dir, ids, n)) {
    tool_err("cannot list %s: %s", dir, strerror(errno));
    return TOOL_USAGE;
  }
  size_t k = 0;
  for (size_t i = 0; i < *n; i++) {
    char chk[4200];
    snprintf(chk, sizeof(chk), "%s/chk-%" PRIu64, dir, (*ids)[i]);
    if (lstat(chk, &st) == 0 && S_ISDIR(st.st_mode))
      (*ids)[k++] = (*ids)[i];
  }
  *n = k;
  return TOOL_OK;
}

void tool_list_rows(const char *dir, const uint64_t *ids, size_t n, bool json,
                    json_t *arr) {
  if (!json && n)
    printf("%-8s %-25s %-10s %-9s %10s %3s\n", "ID", "CREATED (UTC)", "STATUS",
           "COMMITTED", "SIZE", "P");
  for (size_t i = 0; i < n; i++) {
    char chk[4200], when[64], sz[32];
    snprintf(chk, sizeof(chk), "%s/chk-%" PRIu64, dir, ids[i]);
    quick q;
    quick_check(chk, ids[i], &q);
    tool_time(q.created_ms, when, sizeof(when));
    if (json) {
      json_t *j = json_pack(
          "{s:I,s:s,s:s,s:I,s:s,s:b,s:b,s:I}", "id", (json_int_t)q.id, "path",
          chk, "status", q.status, "created_ms", (json_int_t)q.created_ms,
          "created", when, "created_from_mtime", q.created_from_mtime,
          "committed", q.committed, "bytes", (json_int_t)q.bytes);
      json_object_set_new(j, "parallelism",
                          q.par ? json_integer(q.par) : json_null());
      if (strcmp(q.status, "complete") != 0)
        json_object_set_new(j, "reason", json_string(q.why));
      json_array_append_new(arr, j);
      continue;
    }
    char p[16] = "-";
    if (q.par)
      snprintf(p, sizeof(p), "%d", q.par);
    printf("%-8" PRIu64 " %-25s %-10s %-9s %10s %3s", q.id, when, q.status,
           q.committed ? "yes" : "no", tool_size(q.bytes, sz, sizeof(sz)), p);
    if (strcmp(q.status, "damaged") == 0)
      printf("  (%s)", q.why);
    printf("\n");
  }
}

int cmd_list(const tool_opts *o) {
  if (tool_is_store(o->path))
    return store_list(o);
  uint64_t *ids = NULL;
  size_t n;
  int rc = tool_list_ids(o->path, &ids, &n);
  if (rc)
    return rc;
  json_t *arr = json_array();
  tool_list_rows(o->path, ids, n, o->json, arr);
  if (o->json) {
    json_t *doc = json_pack("{s:s,s:o}", "dir", o->path, "checkpoints", arr);
    tool_print_json(doc);
    json_decref(doc);
  } else {
    json_decref(arr);
    if (!n) {
      char meta[4200];
      struct stat st;
      snprintf(meta, sizeof(meta), "%s/_metadata", o->path);
      printf("no checkpoints in %s%s\n", o->path,
             stat(meta, &st) == 0 ? " (it is a checkpoint itself: use "
                                    "sluice-ckpt inspect)"
                                  : "");
    }
  }
  free(ids);
  return TOOL_OK;
}

/* ---- prune -------------------------------------------------------------- */

int tool_prune_dir(const char *dir, const tool_opts *o, const tool_store *s,
                   const char *inst, json_t *removed, json_t *kept) {
  uint64_t *ids = NULL;
  size_t n;
  int rc = tool_list_ids(dir, &ids, &n);
  if (rc)
    return rc;
  /* The coordinator's retention rule (files.h), except that "complete"
   * is the quick check, so a damaged checkpoint is not one of the N; in
   * a group store, what a task pointer names stays too, as the running
   * processes' retention keeps it (checkpoint/tasks.h). */
  struct stat st;
  sl__retention ret = {.keep = o->keep};
  for (size_t i = 0; i < n; i++) {
    char chk[4200];
    snprintf(chk, sizeof(chk), "%s/chk-%" PRIu64, dir, ids[i]);
    quick q;
    quick_check(chk, ids[i], &q);
    bool complete = strcmp(q.status, "complete") == 0;
    const char *why = NULL;
    if (sl__ckpt_retain_next(&ret, complete))
      why = complete ? "older than the newest kept" : q.status;
    char rel[600];
    snprintf(rel, sizeof(rel), "instances/%s/chk-%" PRIu64, inst ? inst : "",
             ids[i]);
    if (why && s && sl__task_ptr_refs(s->root, rel))
      why = NULL;
    json_t *j = json_pack("{s:I,s:s,s:s}", "id", (json_int_t)ids[i], "path",
                          chk, "status", q.status);
    if (!why) {
      json_array_append_new(kept, j);
      continue;
    }
    /* A running job's retention may remove it at the same time: what is
     * gone is removed, whoever removed it. */
    if (!o->dry_run && sl__rmtree(chk) && lstat(chk, &st) == 0) {
      tool_err("cannot remove %s: %s", chk, strerror(errno));
      json_decref(j);
      rc = TOOL_USAGE;
      continue;
    }
    json_array_append_new(removed, j);
    if (!o->json)
      printf("%s %s (%s)\n", o->dry_run ? "would remove" : "removed", chk, why);
  }
  free(ids);
  return rc;
}

int cmd_prune(const tool_opts *o) {
  if (o->keep < 1) {
    tool_err("prune needs --keep N (N >= 1 complete checkpoints to keep)");
    return TOOL_USAGE;
  }
  if (tool_is_store(o->path))
    return store_prune(o);
  json_t *removed = json_array(), *kept = json_array();
  int rc = tool_prune_dir(o->path, o, NULL, NULL, removed, kept);
  if (o->json) {
    json_t *doc = json_pack("{s:s,s:I,s:b,s:o,s:o}", "dir", o->path, "keep",
                            (json_int_t)o->keep, "dry_run", o->dry_run,
                            "removed", removed, "kept", kept);
    if (rc != TOOL_USAGE || json_array_size(removed) + json_array_size(kept))
      tool_print_json(doc);
    json_decref(doc);
  } else {
    if (rc != TOOL_USAGE || json_array_size(removed) + json_array_size(kept))
      printf("kept %zu checkpoint director%s, %s %zu\n", json_array_size(kept),
             json_array_size(kept) == 1 ? "y" : "ies",
             o->dry_run ? "would remove" : "removed", json_array_size(removed));
    json_decref(removed);
    json_decref(kept);
  }
  return rc;
}

/* ---- restore ------------------------------------------------------------ */

static int fsync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* Copies bytes (never a link: the copy must survive the source's
 * removal or damage) and syncs them. */
static int copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return -1;
  int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) {
    close(in);
    return -1;
  }
  static unsigned char buf[1 << 16];
  int rc = 0;
  for (;;) {
    ssize_t n = read(in, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      rc = n < 0 ? -1 : 0;
      break;
    }
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0) {
        rc = -1;
        break;
      }
      off += w;
    }
    if (rc)
      break;
  }
  int e = errno;
  if (!rc)
    rc = fsync(out);
  if (close(out))
    rc = -1;
  close(in);
  errno = rc ? e : 0;
  return rc;
}

/* Copies one relative path from chk into tmp, creating its directory. */
static int copy_rel(const char *chk, const char *tmp, const char *rel) {
  char from[4200], to[4200];
  snprintf(from, sizeof(from), "%s/%s", chk, rel);
  snprintf(to, sizeof(to), "%s/%s", tmp, rel);
  char *slash = strrchr(to, '/');
  *slash = 0;
  int rc = sl__mkdirs(to, 0700);
  if (!rc && strchr(rel, '/'))
    rc = fsync_dir(to);
  *slash = '/';
  if (rc)
    return rc;
  return copy_file(from, to);
}

/* Whether path (which need not exist yet) is dir or lies inside it, after
 * resolving symlinks of the part that exists. */
static bool inside(const char *path, const char *dir) {
  char *d = realpath(dir, NULL), buf[4200], *p = NULL;
  snprintf(buf, sizeof(buf), "%s", path);
  while (d && !(p = realpath(buf, NULL))) {
    char *slash = strrchr(buf, '/');
    if (!slash)
      p = realpath(".", NULL);
    if (!slash || slash == buf) {
      if (!p)
        p = realpath("/", NULL);
      break;
    }
    *slash = 0;
  }
  size_t dl = d ? strlen(d) : 0;
  bool in = d && p && strncmp(p, d, dl) == 0 && (p[dl] == 0 || p[dl] == '/');
  free(d);
  free(p);
  return in;
}

int cmd_restore(const tool_opts *o) {
  /* --task: a copy of the checkpoint the task's pointer names. */
  tool_opts to = *o;
  sl__task_ptr ptr;
  char chk[4800];
  if (o->to && o->task >= 0) {
    int rc = store_task_checkpoint(o, &ptr, chk, sizeof(chk));
    if (rc)
      return rc;
    to.path = chk;
    o = &to;
  }
  if (!o->to) {
    tool_err("restore needs --to DIR (where to put the copy)");
    return TOOL_USAGE;
  }
  if (inside(o->to, o->path)) {
    tool_err("--to %s is inside %s: the copy must go elsewhere (restore "
             "never writes into the checkpoint it copies)",
             o->to, o->path);
    return TOOL_USAGE;
  }
  json_t *rep;
  int rc = tool_verify_report(o->path, &rep);
  if (rc) {
    if (rep) {
      tool_err("%s is not valid; not copying it:", o->path);
      size_t i;
      json_t *pj;
      json_array_foreach(json_object_get(rep, "problems"), i, pj) {
        fprintf(stderr, "  %s\n",
                json_string_value(json_object_get(pj, "error")));
      }
      json_decref(rep);
    }
    return rc;
  }
  uint64_t id = (uint64_t)json_integer_value(json_object_get(rep, "id"));
  json_decref(rep);
  char dst[4200], tmp[4200];
  snprintf(dst, sizeof(dst), "%s/chk-%" PRIu64, o->to, id);
  snprintf(tmp, sizeof(tmp), "%s/.chk-%" PRIu64 ".tmp.%ld", o->to, id,
           (long)getpid());
  struct stat st;
  if (lstat(dst, &st) == 0) {
    tool_err("%s already exists; not overwriting it", dst);
    return TOOL_USAGE;
  }
  /* A copy of the job's state is as private as the job keeps it by
   * default (files.access=private). */
  if (sl__mkdirs(o->to, 0700) || mkdir(tmp, 0700)) {
    tool_err("cannot create %s: %s", tmp, strerror(errno));
    return TOOL_USAGE;
  }
  sl__ckpt_meta meta;
  char err[1024];
  if (sl__ckpt_meta_read(o->path, &meta, err, sizeof(err))) {
    tool_err("%s: %s", o->path, err);
    sl__rmtree(tmp);
    return TOOL_DAMAGED;
  }
  /* The listed files, then _COMMITTED, then _metadata last: the copy is
   * complete only once its metadata is there, as when a job writes it. */
  size_t i, n = 0;
  uint64_t bytes = 0;
  json_t *fj;
  const char *bad = NULL;
  json_array_foreach(meta.files, i, fj) {
    const char *rel = json_string_value(json_object_get(fj, "path"));
    if (copy_rel(o->path, tmp, rel)) {
      bad = rel;
      break;
    }
    n++;
    bytes += (uint64_t)json_integer_value(json_object_get(fj, "bytes"));
  }
  char mark[4200];
  snprintf(mark, sizeof(mark), "%s/_COMMITTED", o->path);
  bool committed = stat(mark, &st) == 0;
  if (!bad && committed && copy_rel(o->path, tmp, "_COMMITTED"))
    bad = "_COMMITTED";
  if (!bad && copy_rel(o->path, tmp, "_metadata"))
    bad = "_metadata";
  sl__ckpt_meta_free(&meta);
  if (bad) {
    tool_err("cannot copy %s/%s to %s: %s", o->path, bad, tmp, strerror(errno));
    sl__rmtree(tmp);
    return TOOL_USAGE;
  }
  if (fsync_dir(tmp)) {
    tool_err("cannot sync %s: %s", tmp, strerror(errno));
    sl__rmtree(tmp);
    return TOOL_USAGE;
  }
  /* The copy is checked before it gets its final name. */
  rc = tool_verify_report(tmp, &rep);
  if (rc) {
    tool_err("the copy in %s does not verify; removed it", tmp);
    json_decref(rep);
    sl__rmtree(tmp);
    return rc;
  }
  json_decref(rep);
  if (rename(tmp, dst) || fsync_dir(o->to)) {
    tool_err("cannot rename %s to %s: %s", tmp, dst, strerror(errno));
    sl__rmtree(tmp);
    return TOOL_USAGE;
  }
  if (o->json) {
    json_t *doc = json_pack("{s:s,s:s,s:I,s:I,s:I,s:b,s:s}", "from", o->path,
                            "to", dst, "id", (json_int_t)id, "files",
                            (json_int_t)n, "bytes", (json_int_t)bytes,
                            "committed", committed, "restore_from", dst);
    tool_print_json(doc);
    json_decref(doc);
  } else {
    char sz[32];
    printf("copied checkpoint %" PRIu64 " to %s (%zu files, %s), verified\n"
           "start a job from it with restore.from=%s\n",
           id, dst, n, tool_size(bytes, sz, sizeof(sz)), dst);
  }
  return TOOL_OK;
}
