/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode's task pointers (tasks.h): tasks/<task>.json under the shared
 * checkpoint.dir, each naming the checkpoint that holds the task's newest
 * complete snapshot and the input offset stored with it; version 1 named
 * by partition, version 2 by topic and partition. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/files.h"
#include "checkpoint/tasks.h"
#include "core/util.h"
#include "sluice/common.h"

/* The file name of p's pointer, without ".json". */
static void name_of(const sl__task_ptr *p, char *out, size_t cap) {
  if (p->named)
    snprintf(out, cap, "%s-%" PRId32, p->topic, p->partition);
  else
    snprintf(out, cap, "%" PRIu32, p->task);
}

static bool all_digits(const char *s) {
  if (!*s)
    return false;
  for (; *s; s++)
    if (*s < '0' || *s > '9')
      return false;
  return true;
}

/* A new stamp: 62 random bits, never 0 (a pointer without a stamp). */
static uint64_t new_stamp(void) {
  uint64_t x = 0;
  if (getrandom(&x, sizeof(x), 0) != (ssize_t)sizeof(x)) {
    /* No entropy source: the time, the pid and a counter, mixed. */
    static _Atomic uint64_t n;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    x = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
        ((uint64_t)getpid() << 40) ^ atomic_fetch_add(&n, 1);
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15u;
    x ^= x >> 29;
  }
  x &= (1ull << 62) - 1;
  return x ? x : 1;
}

/* The stamp of the pointer at path: 0 with *st (none there, or one
 * without a stamp), or -1 with errno (EBADMSG: not a pointer). */
static int stamp_at(const char *path, uint64_t *st) {
  json_error_t je;
  json_t *o = json_load_file(path, 0, &je);
  *st = 0;
  if (!o) {
    if (access(path, F_OK) && errno == ENOENT)
      return 0;
    errno = EBADMSG;
    return -1;
  }
  json_t *v = json_object_get(o, "stamp");
  if (v && (!json_is_integer(v) || json_integer_value(v) < 0)) {
    json_decref(o);
    errno = EBADMSG;
    return -1;
  }
  *st = v ? (uint64_t)json_integer_value(v) : 0;
  json_decref(o);
  return 0;
}

static char *ptr_text(const sl__task_ptr *p, const char *name, uint64_t st) {
  json_t *o =
      p->named ? json_pack("{s:i,s:s,s:s,s:s,s:s,s:i,s:I}", "version", 2,
                           "task", name, "checkpoint", p->checkpoint, "source",
                           p->source, "topic", p->topic, "partition",
                           (int)p->partition, "offset", (json_int_t)p->offset)
               : json_pack("{s:I,s:s,s:s,s:s,s:i,s:I}", "task",
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
  if (o && json_object_set_new(o, "stamp", json_integer((json_int_t)st))) {
    json_decref(o);
    o = NULL;
  }
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text)
    errno = ENOMEM;
  return text;
}

/* How long a writer waits for another one's turn on a task's pointer. A
 * turn lasts a read and a rename; only a process stopped (or frozen)
 * inside one holds it longer, and then the write fails (EWOULDBLOCK). */
#define PTR_LOCK_WAIT_MS 10000

/* Takes lock file path exclusively: its descriptor, or -1 with errno. */
static int lock_turn(const char *path, mode_t fmode) {
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, fmode);
  if (fd < 0)
    return -1;
  for (int waited = 0;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
      return fd;
    if (errno != EWOULDBLOCK && errno != EINTR)
      break;
    if (waited >= PTR_LOCK_WAIT_MS) {
      errno = EWOULDBLOCK;
      break;
    }
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
    waited++;
  }
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}

int sl__task_ptr_write(const char *root, sl__task_ptr *p, mode_t fmode,
                       mode_t dmode) {
  char dir[4200], tmp[5000], path[5000], lock[5000], old[4300], name[600];
  snprintf(dir, sizeof(dir), "%s/tasks", root);
  if (sl__mkdirs(dir, dmode))
    return -1;
  name_of(p, name, sizeof(name));
  uint64_t st = new_stamp();
  char *text = ptr_text(p, name, st);
  if (!text)
    return -1;
  /* Durable under the writer's own temp name (its pid) first, so that a
   * turn is only the compare and the rename, and a reader sees one whole
   * pointer. */
  snprintf(tmp, sizeof(tmp), "%s/.%s.%ld.tmp", dir, name, (long)getpid());
  int rc = sl__ckpt_write_file(tmp, text, strlen(text), fmode);
  free(text);
  /* Writers of one task take turns (an exclusive lock on a file of its
   * own, released by the kernel should the holder die), so that the
   * stamp compared is the one the rename replaces. */
  snprintf(lock, sizeof(lock), "%s/.%s.lock", dir, name);
  int lfd = rc ? -1 : lock_turn(lock, fmode);
  if (lfd < 0)
    rc = -1;
  /* Compared with the version 1 pointer it was read from while no named
   * one replaced that. */
  snprintf(path, sizeof(path), "%s/%s.json", dir, name);
  snprintf(old, sizeof(old), "%s/%" PRId32 ".json", dir, p->partition);
  uint64_t cur = 0;
  if (!rc && !(rc = stamp_at(path, &cur)) && p->legacy && access(path, F_OK) &&
      errno == ENOENT)
    rc = stamp_at(old, &cur);
  if (!rc && cur != p->stamp)
    rc = SL__TASK_PTR_MOVED;
  if (!rc && rename(tmp, path))
    rc = -1;
  int e = errno;
  if (lfd >= 0)
    close(lfd); /* ends the turn */
  if (rc)
    unlink(tmp);
  errno = e;
  /* The version 1 pointer the task was read from goes once the named one
   * is durable: a reader looks for the named one first. */
  if (!rc && p->legacy && unlink(old) && errno != ENOENT)
    rc = -1;
  if (!rc)
    rc = sl__ckpt_fsync_path(dir, true);
  if (!rc)
    p->stamp = st;
  return rc;
}

int sl__task_ptr_read_file(const char *root, const char *name, sl__task_ptr *p,
                           char *err, size_t errlen) {
  char path[4800];
  snprintf(path, sizeof(path), "%s/tasks/%s.json", root, name);
  json_error_t je;
  json_t *o = json_load_file(path, 0, &je);
  if (!o) {
    if (access(path, F_OK) && errno == ENOENT)
      return 0;
    sl__errf(err, errlen, "%s: %s", path, je.text);
    return SL_ERR_CORRUPT;
  }
  const char *chk = NULL, *src = NULL, *topic = NULL, *pend = NULL;
  json_t *task = NULL;
  json_int_t off = -1, pend_off = -1;
  int part = -1, version = 1;
  int bad = json_unpack(o, "{s?i,s:o,s:s,s:s,s:s,s:i,s:I,s?s,s?I}", "version",
                        &version, "task", &task, "checkpoint", &chk, "source",
                        &src, "topic", &topic, "partition", &part, "offset",
                        &off, "pending", &pend, "pending_offset", &pend_off);
  json_t *stamp = json_object_get(o, "stamp");
  /* Version 1 is named by its task number, version 2 by topic and
   * partition; the file's name must be the one its content gives. */
  char want[600] = "";
  if (!bad && version == 2)
    snprintf(want, sizeof(want), "%s-%d", topic, part);
  bool v1 = !bad && version == 1 && json_is_integer(task) && all_digits(name) &&
            json_integer_value(task) == strtoll(name, NULL, 10);
  bool v2 = !bad && version == 2 && json_is_string(task) &&
            strcmp(json_string_value(task), name) == 0 &&
            strcmp(want, name) == 0;
  /* No snapshot before (checkpoint "") only beside a pending one. */
  bool none = !bad && !chk[0] && off == -1 && pend;
  if (!bad &&
      ((!v1 && !v2) ||
       (stamp && (!json_is_integer(stamp) || json_integer_value(stamp) < 0)) ||
       (!none && (!sl__ckpt_safe_rel(chk) || off < 0)) ||
       (pend && (!sl__ckpt_safe_rel(pend) || pend_off < 0 ||
                 strlen(pend) >= sizeof(p->pending))) ||
       strlen(chk) >= sizeof(p->checkpoint) ||
       strlen(src) >= sizeof(p->source) || strlen(topic) >= sizeof(p->topic)))
    bad = 1;
  if (!bad) {
    memset(p, 0, sizeof(*p));
    p->task = v1 ? (uint32_t)json_integer_value(task) : 0;
    p->named = v2;
    snprintf(p->checkpoint, sizeof(p->checkpoint), "%s", chk);
    snprintf(p->source, sizeof(p->source), "%s", src);
    snprintf(p->topic, sizeof(p->topic), "%s", topic);
    p->partition = part;
    p->offset = off;
    snprintf(p->pending, sizeof(p->pending), "%s", pend ? pend : "");
    p->pending_offset = pend ? pend_off : -1;
    p->stamp = stamp ? (uint64_t)json_integer_value(stamp) : 0;
  }
  json_decref(o);
  if (bad) {
    sl__errf(err, errlen, "%s: not a task pointer of task %s%s", path, name,
             version != 1 && version != 2 ? " (an unknown version)" : "");
    return SL_ERR_CORRUPT;
  }
  return 1;
}

int sl__task_ptr_read(const char *root, uint32_t task, sl__task_ptr *p,
                      char *err, size_t errlen) {
  char name[16];
  snprintf(name, sizeof(name), "%" PRIu32, task);
  return sl__task_ptr_read_file(root, name, p, err, errlen);
}

int sl__task_ptr_read_named(const char *root, const char *topic,
                            int32_t partition, sl__task_ptr *p, char *err,
                            size_t errlen) {
  char name[600];
  snprintf(name, sizeof(name), "%s-%" PRId32, topic, partition);
  int r = sl__task_ptr_read_file(root, name, p, err, errlen);
  if (r)
    return r;
  /* A store of one repartition topic named its tasks by partition. */
  snprintf(name, sizeof(name), "%" PRId32, partition);
  sl__task_ptr old;
  if ((r = sl__task_ptr_read_file(root, name, &old, err, errlen)) != 1)
    return r;
  if (strcmp(old.topic, topic) != 0 || old.partition != partition)
    return 0;
  *p = old;
  p->task = 0;
  p->named = p->legacy = true;
  return 1;
}

static int cmp_name(const void *a, const void *b) {
  const char *x = *(char *const *)a, *y = *(char *const *)b;
  bool dx = all_digits(x), dy = all_digits(y);
  if (dx != dy)
    return dx ? -1 : 1;
  if (dx && strlen(x) != strlen(y))
    return strlen(x) < strlen(y) ? -1 : 1;
  return strcmp(x, y);
}

int sl__task_ptr_list(const char *root, char ***names, size_t *n) {
  char dir[4200];
  snprintf(dir, sizeof(dir), "%s/tasks", root);
  *names = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d)
    return errno == ENOENT ? 0 : -1;
  size_t cap = 0;
  struct dirent *e;
  int rc = 0;
  while (!rc && (e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (e->d_name[0] == '.' || len <= 5 ||
        strcmp(e->d_name + len - 5, ".json") != 0)
      continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 16;
      char **a = realloc(*names, cap * sizeof(*a));
      if (!a) {
        rc = -1;
        break;
      }
      *names = a;
    }
    if (!((*names)[*n] = strndup(e->d_name, len - 5)))
      rc = -1;
    else
      (*n)++;
  }
  closedir(d);
  if (rc) {
    for (size_t i = 0; i < *n; i++)
      free((*names)[i]);
    free(*names);
    *names = NULL;
    *n = 0;
    errno = ENOMEM;
    return -1;
  }
  if (*n)
    qsort(*names, *n, sizeof(**names), cmp_name);
  return 0;
}

bool sl__task_ptr_refs(const char *root, const char *rel) {
  char **names;
  size_t n;
  if (sl__task_ptr_list(root, &names, &n))
    return true;
  bool refs = false;
  for (size_t i = 0; i < n; i++) {
    sl__task_ptr p;
    char err[64];
    int r =
        refs ? 0 : sl__task_ptr_read_file(root, names[i], &p, err, sizeof(err));
    if (r < 0 || (r == 1 && (strcmp(p.checkpoint, rel) == 0 ||
                             strcmp(p.pending, rel) == 0)))
      refs = true;
    free(names[i]);
  }
  free(names);
  return refs;
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

void sl__task_gc(const char *root, const char *self, bool dry_run,
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
      keep = sl__task_ptr_refs(root, rel);
    }
    free(ids);
    if (!keep && (dry_run || !sl__rmtree(inst)) && removed)
      removed(e->d_name, opaque);
    close(fd);
  }
  closedir(d);
}
