/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode's task pointers (tasks.h): tasks/<task>.json under the shared
 * checkpoint.dir, each naming the checkpoint that holds the task's newest
 * complete snapshot and the input offset stored with it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "checkpoint/files.h"
#include "checkpoint/tasks.h"
#include "core/util.h"
#include "sluice/common.h"

int sl__task_ptr_write(const char *root, const sl__task_ptr *p, mode_t fmode,
                       mode_t dmode) {
  char dir[4200], tmp[4300], path[4300];
  snprintf(dir, sizeof(dir), "%s/tasks", root);
  if (sl__mkdirs(dir, dmode))
    return -1;
  json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:i,s:I}", "task",
                        (json_int_t)p->task, "checkpoint", p->checkpoint,
                        "source", p->source, "topic", p->topic, "partition",
                        (int)p->partition, "offset", (json_int_t)p->offset);
  if (o && p->pending[0] &&
      (json_object_set_new(o, "pending", json_string(p->pending)) ||
       json_object_set_new(o, "pending_offset",
                           json_integer((json_int_t)p->pending_offset)))) {
    json_decref(o);
    o = NULL;
  }
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text) {
    errno = ENOMEM;
    return -1;
  }
  /* The temp name is the writer's own (its pid): two processes that both
   * believe they own the task (one of them a zombie) never write into one
   * file; the rename decides, and a reader sees one whole pointer. */
  snprintf(path, sizeof(path), "%s/%" PRIu32 ".json", dir, p->task);
  snprintf(tmp, sizeof(tmp), "%s/.%" PRIu32 ".%ld.tmp", dir, p->task,
           (long)getpid());
  int rc = sl__ckpt_write_file(tmp, text, strlen(text), fmode);
  free(text);
  if (!rc && (rc = rename(tmp, path)))
    unlink(tmp);
  if (!rc)
    rc = sl__ckpt_fsync_path(dir, true);
  return rc;
}

int sl__task_ptr_read(const char *root, uint32_t task, sl__task_ptr *p,
                      char *err, size_t errlen) {
  char path[4300];
  snprintf(path, sizeof(path), "%s/tasks/%" PRIu32 ".json", root, task);
  json_error_t je;
  json_t *o = json_load_file(path, 0, &je);
  if (!o) {
    if (access(path, F_OK) && errno == ENOENT)
      return 0;
    sl__errf(err, errlen, "%s: %s", path, je.text);
    return SL_ERR_CORRUPT;
  }
  const char *chk = NULL, *src = NULL, *topic = NULL, *pend = NULL;
  json_int_t t = -1, off = -1, pend_off = -1;
  int part = -1;
  int bad = json_unpack(o, "{s:I,s:s,s:s,s:s,s:i,s:I,s?s,s?I}", "task", &t,
                        "checkpoint", &chk, "source", &src, "topic", &topic,
                        "partition", &part, "offset", &off, "pending", &pend,
                        "pending_offset", &pend_off);
  /* No snapshot before (checkpoint "") only beside a pending one. */
  bool none = !bad && !chk[0] && off == -1 && pend;
  if (!bad &&
      (t != (json_int_t)task ||
       (!none && (!sl__ckpt_safe_rel(chk) || off < 0)) ||
       (pend && (!sl__ckpt_safe_rel(pend) || pend_off < 0 ||
                 strlen(pend) >= sizeof(p->pending))) ||
       strlen(chk) >= sizeof(p->checkpoint) ||
       strlen(src) >= sizeof(p->source) || strlen(topic) >= sizeof(p->topic)))
    bad = 1;
  if (!bad) {
    p->task = task;
    snprintf(p->checkpoint, sizeof(p->checkpoint), "%s", chk);
    snprintf(p->source, sizeof(p->source), "%s", src);
    snprintf(p->topic, sizeof(p->topic), "%s", topic);
    p->partition = part;
    p->offset = off;
    snprintf(p->pending, sizeof(p->pending), "%s", pend ? pend : "");
    p->pending_offset = pend ? pend_off : -1;
  }
  json_decref(o);
  if (bad) {
    sl__errf(err, errlen, "%s: not a task pointer of task %" PRIu32, path,
             task);
    return SL_ERR_CORRUPT;
  }
  return 1;
}

bool sl__task_ptr_refs(const char *root, uint32_t n, const char *rel) {
  for (uint32_t t = 0; t < n; t++) {
    sl__task_ptr p;
    char err[64];
    int r = sl__task_ptr_read(root, t, &p, err, sizeof(err));
    if (r < 0 || (r == 1 && (strcmp(p.checkpoint, rel) == 0 ||
                             strcmp(p.pending, rel) == 0)))
      return true;
  }
  return false;
}

int sl__task_ckpt_state(const char *root, const char *rel) {
  char path[4800];
  snprintf(path, sizeof(path), "%s/%s/_COMMITTED", root, rel);
  if (access(path, F_OK) == 0)
    return SL__TASK_CKPT_COMMITTED;
  snprintf(path, sizeof(path), "%s/%s/_metadata", root, rel);
  return access(path, F_OK) == 0 ? SL__TASK_CKPT_DURABLE : SL__TASK_CKPT_NONE;
}

/* Whether nobody holds dir/.lock (its process is gone); on true the
 * lock is held through *fd until the caller closes it. */
static bool abandoned(const char *dir, int *fd) {
  char lock[4600];
  snprintf(lock, sizeof(lock), "%s/.lock", dir);
  *fd = open(lock, O_RDWR | O_CLOEXEC);
  if (*fd < 0)
    return false;
  if (flock(*fd, LOCK_EX | LOCK_NB)) {
    close(*fd);
    *fd = -1;
    return false;
  }
  return true;
}

bool sl__task_inst_alive(const char *inst_dir) {
  char lock[4600];
  snprintf(lock, sizeof(lock), "%s/.lock", inst_dir);
  int fd = open(lock, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  bool alive = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd); /* releases the probe's lock */
  return alive;
}

void sl__task_gc(const char *root, uint32_t n, const char *self, bool dry_run,
                 void (*removed)(const char *name, void *opaque),
                 void *opaque) {
  char dir[4200];
  snprintf(dir, sizeof(dir), "%s/instances", root);
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.' || (self && strcmp(e->d_name, self) == 0))
      continue;
    char inst[4500];
    snprintf(inst, sizeof(inst), "%s/%s", dir, e->d_name);
    int fd;
    if (!abandoned(inst, &fd))
      continue;
    uint64_t *ids = NULL;
    size_t m = 0;
    /* Kept when unreadable, and without a checkpoint yet: maybe a
     * process between creating its directory and locking it. */
    bool keep = sl__ckpt_list(inst, &ids, &m) != 0 || m == 0;
    for (size_t i = 0; i < m && !keep; i++) {
      char rel[600];
      snprintf(rel, sizeof(rel), "instances/%s/chk-%" PRIu64, e->d_name,
               ids[i]);
      keep = sl__task_ptr_refs(root, n, rel);
    }
    free(ids);
    if (!keep && (dry_run || !sl__rmtree(inst)) && removed)
      removed(e->d_name, opaque);
    close(fd);
  }
  closedir(d);
}
