/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode's task pointers (tasks.h): generations
 * tasks/<task>/<generation>.json under the shared checkpoint.dir, the
 * newest naming the checkpoint that holds the task's newest complete
 * snapshot and the input offset stored with it; version 1 named by
 * partition, version 2 by topic and partition. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <sys/stat.h>
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

/* A generation file's name: digits without a leading zero, ".json". 0
 * when name is not one. */
static uint64_t gen_of_file(const char *name) {
  uint64_t g = 0;
  const char *s = name;
  if (*s < '1' || *s > '9')
    return 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (g > (UINT64_MAX - 9) / 10)
      return 0;
    g = g * 10 + (uint64_t)(*s - '0');
  }
  return strcmp(s, ".json") == 0 ? g : 0;
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

/* The newest generation in directory dir (a task's tasks/<name>/): 0 with
 * *gen (0: none, or no such directory), or -1 with errno. */
static int newest_gen(const char *dir, uint64_t *gen) {
  *gen = 0;
  DIR *d = opendir(dir);
  if (!d)
    return errno == ENOENT ? 0 : -1;
  for (struct dirent *e; (e = readdir(d));) {
    uint64_t g = gen_of_file(e->d_name);
    if (g > *gen)
      *gen = g;
  }
  closedir(d);
  return 0;
}

/* How much older than a new generation one below the one before it must
 * be to be removed. A writer that read generation n and is slower than
 * this to create n + 1 (stopped, in practice) may find n + 1 removed and
 * create it anew; it then cannot tell whether the newer ones followed its
 * file, and counts itself overtaken (write: SL__TASK_PTR_MOVED). */
#define GEN_KEEP_S 10

static int cmp_gen(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Whether name is a writer's temp file, ".<generation>.<pid>.tmp". */
static bool temp_file(const char *name) {
  const char *s = name;
  if (*s++ != '.' || *s < '0' || *s > '9')
    return false;
  while (*s >= '0' && *s <= '9')
    s++;
  if (*s++ != '.' || *s < '0' || *s > '9')
    return false;
  while (*s >= '0' && *s <= '9')
    s++;
  return strcmp(s, ".tmp") == 0;
}

/* How much older than a new generation a writer's temp file must be to be
 * removed: one left by a writer that died between writing it and linking
 * it. A writer still at it after that long (stopped) finds its file
 * gone, and counts itself overtaken. */
#define TEMP_KEEP_S 60

/* Removes the generations of dir below gen - 1 that are GEN_KEEP_S older
 * than generation gen (by the store's own clock: modification times),
 * oldest first, up to the first that is not, and temp files TEMP_KEEP_S
 * older. Best effort: the next write tidies what this one left. */
static void prune_gens(const char *dir, uint64_t gen) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  char name[32];
  struct stat now, st;
  uint64_t *old = NULL;
  size_t n = 0, cap = 0;
  snprintf(name, sizeof(name), "%" PRIu64 ".json", gen);
  bool ok = fstatat(dirfd(d), name, &now, 0) == 0;
  for (struct dirent *e; ok && (e = readdir(d));) {
    uint64_t g = gen_of_file(e->d_name);
    if (!g && temp_file(e->d_name) && !fstatat(dirfd(d), e->d_name, &st, 0) &&
        st.st_mtim.tv_sec + TEMP_KEEP_S <= now.st_mtim.tv_sec)
      unlinkat(dirfd(d), e->d_name, 0);
    if (!g || g + 1 >= gen)
      continue;
    if (n == cap) {
      uint64_t *a = realloc(old, (cap = cap ? 2 * cap : 16) * sizeof(*a));
      if (!(ok = a != NULL))
        break;
      old = a;
    }
    old[n++] = g;
  }
  if (ok && n)
    qsort(old, n, sizeof(*old), cmp_gen);
  for (size_t i = 0; ok && i < n; i++) {
    snprintf(name, sizeof(name), "%" PRIu64 ".json", old[i]);
    if (fstatat(dirfd(d), name, &st, 0))
      continue;
    if (st.st_mtim.tv_sec + GEN_KEEP_S > now.st_mtim.tv_sec)
      break;
    unlinkat(dirfd(d), name, 0);
  }
  free(old);
  closedir(d);
}

/* Whether generation gen in dir follows the generation stamped stamp. */
static bool follows(const char *dir, uint64_t gen, uint64_t stamp) {
  char path[5200];
  snprintf(path, sizeof(path), "%s/%" PRIu64 ".json", dir, gen);
  json_t *o = json_load_file(path, 0, NULL);
  json_t *f = o ? json_object_get(o, "follows") : NULL;
  bool yes = json_is_integer(f) && (uint64_t)json_integer_value(f) == stamp;
  json_decref(o);
  return yes;
}

static char *ptr_text(const sl__task_ptr *p, const char *name, uint64_t gen,
                      uint64_t stamp) {
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
  if (o &&
      (json_object_set_new(o, "generation", json_integer((json_int_t)gen)) ||
       json_object_set_new(o, "stamp", json_integer((json_int_t)stamp)) ||
       json_object_set_new(o, "follows", json_integer((json_int_t)p->stamp)))) {
    json_decref(o);
    o = NULL;
  }
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text)
    errno = ENOMEM;
  return text;
}

/* What tasks/<name>.json holds once the task has generations: a file
 * that no reader of the single-file layout takes for a pointer (it fails
 * on it with "an unknown version" instead of finding the task without
 * one). */
static int write_marker(const char *dir, const char *name, mode_t fmode) {
  char tmp[5000], path[5000];
  json_t *o = json_pack("{s:i,s:s,s:s}", "version", 3, "task", name,
                        "generations", "tasks/<task>/<generation>.json");
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text) {
    errno = ENOMEM;
    return -1;
  }
  snprintf(tmp, sizeof(tmp), "%s/.%s.%ld.tmp", dir, name, (long)getpid());
  snprintf(path, sizeof(path), "%s/%s.json", dir, name);
  int rc = sl__ckpt_write_file(tmp, text, strlen(text), fmode);
  free(text);
  if (!rc && rename(tmp, path))
    rc = -1;
  if (rc)
    unlink(tmp);
  return rc;
}

/* unlink() that leaves errno as it was. */
static void unlink_quiet(const char *path) {
  int e = errno;
  unlink(path);
  errno = e;
}

int sl__task_ptr_write(const char *root, sl__task_ptr *p, mode_t fmode,
                       mode_t dmode) {
  char dir[4200], gdir[4900], tmp[5200], path[5200], old[4300], name[600];
  snprintf(dir, sizeof(dir), "%s/tasks", root);
  name_of(p, name, sizeof(name));
  snprintf(gdir, sizeof(gdir), "%s/%s", dir, name);
  if (sl__mkdirs(gdir, dmode))
    return -1;
  uint64_t gen = p->gen + 1, newest = 0, stamp = new_stamp();
  char *text = ptr_text(p, name, gen, stamp);
  if (!text)
    return -1;
  /* Durable under a name of the writer's own first, so that the new
   * generation appears whole or not at all. */
  snprintf(tmp, sizeof(tmp), "%s/.%" PRIu64 ".%ld.tmp", gdir, gen,
           (long)getpid());
  snprintf(path, sizeof(path), "%s/%" PRIu64 ".json", gdir, gen);
  int rc = sl__ckpt_write_file(tmp, text, strlen(text), fmode);
  free(text);
  /* The compare-and-swap: link() creates the generation after the one
   * this process last read or wrote, and fails if another process
   * created it first. (On NFS a link retried after its reply was lost
   * fails with EEXIST although it linked: the temp file then has two
   * names.) */
  struct stat st;
  if (!rc && link(tmp, path))
    rc = errno == ENOENT   ? SL__TASK_PTR_MOVED /* stopped for a minute */
         : errno != EEXIST ? -1
         : stat(tmp, &st) == 0 && st.st_nlink == 2 ? 0
                                                   : SL__TASK_PTR_MOVED;
  unlink_quiet(tmp);
  /* Generations are removed (prune_gens), so gen may have been written
   * and removed since this process read gen - 1: the newest, which is
   * never removed, is then above it, and the file just linked is not the
   * pointer. A newer one above it is also what a process that followed
   * this write made, within the moment since the link: then gen + 1
   * follows this file's stamp. */
  if (!rc && !(rc = newest_gen(gdir, &newest)) && newest > gen &&
      !follows(gdir, gen + 1, stamp)) {
    unlink_quiet(path);
    rc = SL__TASK_PTR_MOVED;
  }
  if (!rc)
    rc = sl__ckpt_fsync_path(gdir, true);
  /* A task's first generation turns its single file (the layout before,
   * or none) into the marker; the version 1 pointer a named task was read
   * from (a store of one repartition topic) goes. */
  if (!rc && gen == 1)
    rc = write_marker(dir, name, fmode);
  snprintf(old, sizeof(old), "%s/%" PRId32 ".json", dir, p->partition);
  if (!rc && p->legacy && unlink(old) && errno != ENOENT)
    rc = -1;
  if (!rc && (gen == 1 || p->legacy))
    rc = sl__ckpt_fsync_path(dir, true);
  if (!rc) {
    p->gen = gen;
    p->stamp = stamp;
    p->legacy = false;
    prune_gens(gdir, gen);
  }
  return rc;
}

void sl__task_ptr_file(const char *name, uint64_t gen, char *out, size_t cap) {
  if (gen)
    snprintf(out, cap, "tasks/%s/%" PRIu64 ".json", name, gen);
  else
    snprintf(out, cap, "tasks/%s.json", name);
}

/* Parses the pointer file path (generation gen of task name, 0: the
 * single file) into *p: 1, 0 when path is not there, or SL_ERR_CORRUPT
 * (reason in err). */
static int read_path(const char *path, const char *name, uint64_t gen,
                     sl__task_ptr *p, char *err, size_t errlen) {
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
  json_int_t off = -1, pend_off = -1, fgen = 0, fol = 0;
  int part = -1, version = 1;
  int bad = json_unpack(o, "{s?i,s:o,s:s,s:s,s:s,s:i,s:I,s?s,s?I,s?I,s?I}",
                        "version", &version, "task", &task, "checkpoint", &chk,
                        "source", &src, "topic", &topic, "partition", &part,
                        "offset", &off, "pending", &pend, "pending_offset",
                        &pend_off, "generation", &fgen, "follows", &fol);
  json_t *stamp = json_object_get(o, "stamp");
  json_t *ver = json_object_get(o, "version");
  bool marker = json_is_integer(ver) && json_integer_value(ver) == 3 &&
                json_object_get(o, "generations");
  /* Version 1 is named by its task number, version 2 by topic and
   * partition; the file's name must be the one its content gives, and a
   * generation's file the generation its content gives. */
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
      ((!v1 && !v2) || (uint64_t)fgen != gen || fol < 0 ||
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
    p->gen = gen;
    p->stamp = stamp ? (uint64_t)json_integer_value(stamp) : 0;
  }
  json_decref(o);
  if (bad && marker && !gen) {
    sl__errf(err, errlen,
             "%s: the task's pointer is in tasks/%s/, which holds none (its "
             "generations were removed)",
             path, name);
    return SL_ERR_CORRUPT;
  }
  if (bad) {
    sl__errf(err, errlen, "%s: not a task pointer of task %s%s", path, name,
             version != 1 && version != 2 ? " (an unknown version)" : "");
    return SL_ERR_CORRUPT;
  }
  return 1;
}

int sl__task_ptr_read_file(const char *root, const char *name, sl__task_ptr *p,
                           char *err, size_t errlen) {
  char gdir[4800], path[5000];
  snprintf(gdir, sizeof(gdir), "%s/tasks/%s", root, name);
  /* The newest generation, or the single file without one. Writers
   * remove old generations, so the one found can be gone by the time it
   * is read: then there is a newer one. */
  for (int tries = 0;; tries++) {
    uint64_t gen;
    if (newest_gen(gdir, &gen)) {
      sl__errf(err, errlen, "%s: %s", gdir, strerror(errno));
      return SL_ERR_IO;
    }
    if (gen)
      snprintf(path, sizeof(path), "%s/%" PRIu64 ".json", gdir, gen);
    else
      snprintf(path, sizeof(path), "%s/tasks/%s.json", root, name);
    int r = read_path(path, name, gen, p, err, errlen);
    if (r || !gen)
      return r;
    if (tries == 1000) {
      sl__errf(err, errlen, "%s: its newest generation keeps disappearing",
               gdir);
      return SL_ERR_IO;
    }
  }
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
  /* Such a store had no generations. */
  if (strcmp(old.topic, topic) != 0 || old.partition != partition || old.gen)
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
  /* A task's directory of generations, or its single file (the layout
   * before generations; once it has them, their marker): each task once. */
  while (!rc && (e = readdir(d))) {
    size_t len = strlen(e->d_name);
    struct stat st;
    bool file = len > 5 && strcmp(e->d_name + len - 5, ".json") == 0;
    if (e->d_name[0] == '.' ||
        (!file &&
         (fstatat(dirfd(d), e->d_name, &st, 0) || !S_ISDIR(st.st_mode))))
      continue;
    if (file)
      len -= 5;
    bool seen = false;
    for (size_t i = 0; i < *n && !seen; i++)
      seen =
          strlen((*names)[i]) == len && !strncmp((*names)[i], e->d_name, len);
    if (seen)
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
    if (!((*names)[*n] = strndup(e->d_name, len)))
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
