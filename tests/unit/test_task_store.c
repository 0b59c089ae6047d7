/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode's shared task store (checkpoint/tasks.h): pointers read back
 * as written, a damaged pointer is an error and not "none", retention
 * sees which checkpoints pointers name, and the directory of an instance
 * is removed only when its process is gone (its lock is free) and no
 * pointer names one of its checkpoints. */
#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "checkpoint/tasks.h"
#include "sluice/common.h"
#include "testutil.h"

static char root[128];

static void setup_root(void) {
  snprintf(root, sizeof(root), "/tmp/sluice-task-store-%ld", (long)getpid());
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s", root, root);
  ck_assert_int_eq(system(cmd), 0);
}

static void teardown_root(void) {
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
  ck_assert_int_eq(system(cmd), 0);
}

/* Points task at chk, as its owner: after the pointer there (its
 * generation). */
static void put(uint32_t task, const char *chk, int64_t offset) {
  sl__task_ptr p = {.task = task, .partition = (int32_t)task, .offset = offset},
               cur;
  char err[256];
  if (sl__task_ptr_read(root, task, &cur, err, sizeof(err)) == 1)
    p.gen = cur.gen;
  snprintf(p.checkpoint, sizeof(p.checkpoint), "%s", chk);
  snprintf(p.source, sizeof(p.source), "in");
  snprintf(p.topic, sizeof(p.topic), "events");
  ck_assert_int_eq(sl__task_ptr_write(root, &p, 0600, 0700), 0);
}

/* Writes text as the file rel of the store. */
static void write_text(const char *rel, const char *text) {
  char path[600];
  snprintf(path, sizeof(path), "%s/%s", root, rel);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

/* Task task's pointer as a store written before generations had it:
 * the single file tasks/<task>.json. */
static void put_single(uint32_t task, const char *chk, int64_t offset) {
  char text[600], rel[64], cmd[300];
  snprintf(cmd, sizeof(cmd), "mkdir -p %s/tasks", root);
  ck_assert_int_eq(system(cmd), 0);
  snprintf(text, sizeof(text),
           "{\"task\":%u,\"checkpoint\":\"%s\",\"source\":\"in\","
           "\"topic\":\"events\",\"partition\":%u,\"offset\":%lld,"
           "\"stamp\":790658343711837048}",
           task, chk, task, (long long)offset);
  snprintf(rel, sizeof(rel), "tasks/%u.json", task);
  write_text(rel, text);
}

/* Sets the modification time of the file rel of the store s seconds
 * back. */
static void age(const char *rel, int s) {
  char path[600];
  snprintf(path, sizeof(path), "%s/%s", root, rel);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  struct timespec t[2] = {st.st_atim, st.st_mtim};
  t[1].tv_sec -= s;
  ck_assert_int_eq(utimensat(AT_FDCWD, path, t, 0), 0);
}

static bool exists(const char *rel) {
  char path[600];
  snprintf(path, sizeof(path), "%s/%s", root, rel);
  return access(path, F_OK) == 0;
}

/* An instance directory with checkpoints chk-<ids> (each with _metadata)
 * and a .lock file. */
static void instance(const char *name, const int *ids, int n) {
  char path[600];
  snprintf(path, sizeof(path), "mkdir -p %s/instances/%s", root, name);
  ck_assert_int_eq(system(path), 0);
  for (int i = 0; i < n; i++) {
    snprintf(path, sizeof(path), "mkdir -p %s/instances/%s/chk-%d", root, name,
             ids[i]);
    ck_assert_int_eq(system(path), 0);
    snprintf(path, sizeof(path), "%s/instances/%s/chk-%d/_metadata", root, name,
             ids[i]);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
  }
  snprintf(path, sizeof(path), "%s/instances/%s/.lock", root, name);
  int fd = open(path, O_CREAT | O_RDWR, 0600);
  ck_assert_int_ge(fd, 0);
  close(fd);
}

/* The tasks sl__task_ptr_list gives are want[0, n), in that order. */
static void listed(const char *const *want, size_t n_want) {
  char **names;
  size_t n;
  ck_assert_int_eq(sl__task_ptr_list(root, &names, &n), 0);
  ck_assert_uint_eq(n, n_want);
  for (size_t i = 0; i < n; i++) {
    ck_assert_str_eq(names[i], want[i]);
    free(names[i]);
  }
  free(names);
}

START_TEST(pointer_reads_back_as_written) {
  setup_root();
  sl__task_ptr p;
  char err[256];
  ck_assert_int_eq(sl__task_ptr_read(root, 3, &p, err, sizeof(err)), 0);
  put(3, "instances/h-1-2/chk-7", 1234);
  ck_assert_int_eq(sl__task_ptr_read(root, 3, &p, err, sizeof(err)), 1);
  ck_assert_uint_eq(p.task, 3);
  ck_assert_str_eq(p.checkpoint, "instances/h-1-2/chk-7");
  ck_assert_str_eq(p.source, "in");
  ck_assert_str_eq(p.topic, "events");
  ck_assert_int_eq(p.partition, 3);
  ck_assert_int_eq(p.offset, 1234);
  /* Replaced whole: the newer one is read. */
  put(3, "instances/h-1-2/chk-8", 1300);
  ck_assert_int_eq(sl__task_ptr_read(root, 3, &p, err, sizeof(err)), 1);
  ck_assert_str_eq(p.checkpoint, "instances/h-1-2/chk-8");
  ck_assert_int_eq(p.offset, 1300);
  teardown_root();
}
END_TEST

START_TEST(damaged_pointer_is_an_error) {
  setup_root();
  const struct {
    const char *text, *why;
  } bad[] = {
      {"{\"task\":5,\"checkpoint\":\"instances/h/chk-1\"", "cut short"},
      {"{\"task\":4,\"checkpoint\":\"instances/h/chk-1\",\"source\":\"in\","
       "\"topic\":\"t\",\"partition\":5,\"offset\":1}",
       "another task's"},
      {"{\"task\":5,\"checkpoint\":\"../elsewhere/chk-1\",\"source\":\"in\","
       "\"topic\":\"t\",\"partition\":5,\"offset\":1}",
       "a path outside the store"},
      {"{\"task\":5,\"checkpoint\":\"instances/h/chk-1\",\"source\":\"in\","
       "\"topic\":\"t\",\"partition\":5,\"offset\":-2}",
       "a negative offset"},
      {"{\"task\":5,\"checkpoint\":\"instances/h/chk-1\",\"source\":\"in\","
       "\"topic\":\"t\",\"partition\":5,\"offset\":1,"
       "\"pending\":\"../x/chk-2\",\"pending_offset\":3}",
       "a pending path outside the store"},
      {"{\"task\":5,\"checkpoint\":\"\",\"source\":\"in\","
       "\"topic\":\"t\",\"partition\":5,\"offset\":-1}",
       "no snapshot and nothing pending"},
  };
  char err[256];
  put_single(5, "instances/h/chk-1", 1);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    write_text("tasks/5.json", bad[i].text);
    sl__task_ptr p;
    err[0] = '\0';
    ck_assert_msg(sl__task_ptr_read(root, 5, &p, err, sizeof(err)) ==
                      SL_ERR_CORRUPT,
                  "%s read as valid", bad[i].why);
    ck_assert_msg(strstr(err, "tasks/5.json"), "%s: %s", bad[i].why, err);
    /* Retention keeps everything while it cannot tell. */
    ck_assert(sl__task_ptr_refs(root, "instances/h/chk-99"));
  }
  /* A generation whose content gives another generation. */
  put(6, "instances/h/chk-1", 1);
  write_text("tasks/6/1.json",
             "{\"task\":6,\"checkpoint\":\"instances/h/chk-1\",\"source\":"
             "\"in\",\"topic\":\"t\",\"partition\":6,\"offset\":1,"
             "\"generation\":2}");
  sl__task_ptr p;
  ck_assert_int_eq(sl__task_ptr_read(root, 6, &p, err, sizeof(err)),
                   SL_ERR_CORRUPT);
  ck_assert_msg(strstr(err, "tasks/6/1.json"), "%s", err);
  /* The marker of a task whose generations are gone. */
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -r %s/tasks/6", root);
  ck_assert_int_eq(system(cmd), 0);
  ck_assert_int_eq(sl__task_ptr_read(root, 6, &p, err, sizeof(err)),
                   SL_ERR_CORRUPT);
  ck_assert_msg(strstr(err, "which holds none"), "%s", err);
  teardown_root();
}
END_TEST

START_TEST(refs_name_the_pointed_checkpoints) {
  setup_root();
  put(0, "instances/a/chk-3", 10);
  put(2, "instances/b/chk-9", 20);
  ck_assert(sl__task_ptr_refs(root, "instances/a/chk-3"));
  ck_assert(sl__task_ptr_refs(root, "instances/b/chk-9"));
  ck_assert(!sl__task_ptr_refs(root, "instances/a/chk-2"));
  ck_assert(!sl__task_ptr_refs(root, "instances/b/chk-3"));
  teardown_root();
}
END_TEST

/* With repartition topics a task is named by topic and partition
 * (version 2); a store of one repartition topic named its tasks by
 * partition (version 1), and such a pointer still serves its topic's
 * task until the first named write replaces it. */
START_TEST(named_pointers_and_the_layout_before) {
  setup_root();
  char err[256];
  sl__task_ptr p;
  /* The layout before: tasks/3.json of topic "events". */
  put_single(3, "instances/a/chk-3", 30);
  ck_assert_int_eq(
      sl__task_ptr_read_named(root, "events", 3, &p, err, sizeof(err)), 1);
  ck_assert(p.named && p.legacy);
  ck_assert_str_eq(p.checkpoint, "instances/a/chk-3");
  ck_assert_int_eq(p.offset, 30);
  /* Not another topic's, nor another partition's. */
  ck_assert_int_eq(
      sl__task_ptr_read_named(root, "other", 3, &p, err, sizeof(err)), 0);
  ck_assert_int_eq(
      sl__task_ptr_read_named(root, "events", 4, &p, err, sizeof(err)), 0);
  /* The first named write removes the old file. */
  sl__task_ptr_read_named(root, "events", 3, &p, err, sizeof(err));
  snprintf(p.checkpoint, sizeof(p.checkpoint), "instances/b/chk-5");
  p.offset = 40;
  ck_assert_int_eq(sl__task_ptr_write(root, &p, 0600, 0700), 0);
  ck_assert(exists("tasks/events-3/1.json"));
  ck_assert(!exists("tasks/3.json"));
  ck_assert_int_eq(
      sl__task_ptr_read_named(root, "events", 3, &p, err, sizeof(err)), 1);
  ck_assert(p.named && !p.legacy);
  ck_assert_str_eq(p.checkpoint, "instances/b/chk-5");
  /* Two stages' partition 3 are two pointers. */
  sl__task_ptr q = p;
  q.gen = 0; /* none there yet */
  snprintf(q.topic, sizeof(q.topic), "job-total-repartition");
  snprintf(q.checkpoint, sizeof(q.checkpoint), "instances/c/chk-1");
  ck_assert_int_eq(sl__task_ptr_write(root, &q, 0600, 0700), 0);
  ck_assert_int_eq(sl__task_ptr_read_file(root, "job-total-repartition-3", &p,
                                          err, sizeof(err)),
                   1);
  ck_assert_str_eq(p.checkpoint, "instances/c/chk-1");
  ck_assert(sl__task_ptr_refs(root, "instances/b/chk-5"));
  ck_assert(sl__task_ptr_refs(root, "instances/c/chk-1"));
  ck_assert(!sl__task_ptr_refs(root, "instances/a/chk-3"));
  put(10, "instances/a/chk-3", 1);
  put(2, "instances/a/chk-3", 1);
  const char *const all[] = {"2", "10", "events-3", "job-total-repartition-3"};
  listed(all, 4);
  /* A file whose name is not the one its content gives is damaged. */
  char cmd[600];
  snprintf(cmd, sizeof(cmd),
           "mkdir %s/tasks/x-3 && cp %s/tasks/events-3/1.json "
           "%s/tasks/x-3/1.json",
           root, root, root);
  ck_assert_int_eq(system(cmd), 0);
  ck_assert_int_eq(sl__task_ptr_read_file(root, "x-3", &p, err, sizeof(err)),
                   SL_ERR_CORRUPT);
  teardown_root();
}
END_TEST

/* A checkpoint named pending (its transaction committing) reads back,
 * also beside no snapshot at all; retention keeps it; how far it got is
 * its _COMMITTED mark, else its _metadata. */
START_TEST(pending_checkpoint_reads_back_and_is_kept) {
  setup_root();
  sl__task_ptr p = {.task = 1, .partition = 1, .offset = 10},
               q = {.task = 2, .partition = 2, .offset = -1};
  snprintf(p.checkpoint, sizeof(p.checkpoint), "instances/a/chk-3");
  snprintf(p.pending, sizeof(p.pending), "instances/a/chk-4");
  p.pending_offset = 17;
  snprintf(q.pending, sizeof(q.pending), "instances/b/chk-1");
  q.pending_offset = 5;
  sl__task_ptr *w[] = {&p, &q};
  for (int i = 0; i < 2; i++) {
    snprintf(w[i]->source, sizeof(w[i]->source), "in");
    snprintf(w[i]->topic, sizeof(w[i]->topic), "events");
    ck_assert_int_eq(sl__task_ptr_write(root, w[i], 0600, 0700), 0);
  }
  sl__task_ptr r;
  char err[256];
  ck_assert_int_eq(sl__task_ptr_read(root, 1, &r, err, sizeof(err)), 1);
  ck_assert_str_eq(r.checkpoint, "instances/a/chk-3");
  ck_assert_int_eq(r.offset, 10);
  ck_assert_str_eq(r.pending, "instances/a/chk-4");
  ck_assert_int_eq(r.pending_offset, 17);
  ck_assert_int_eq(sl__task_ptr_read(root, 2, &r, err, sizeof(err)), 1);
  ck_assert_str_eq(r.checkpoint, "");
  ck_assert_int_eq(r.offset, -1);
  ck_assert_str_eq(r.pending, "instances/b/chk-1");
  ck_assert_int_eq(r.pending_offset, 5);
  ck_assert(sl__task_ptr_refs(root, "instances/a/chk-4"));
  ck_assert(sl__task_ptr_refs(root, "instances/b/chk-1"));
  /* Without a pending one, no snapshot is no pointer. */
  q.pending[0] = '\0';
  ck_assert_int_eq(sl__task_ptr_write(root, &q, 0600, 0700), 0);
  ck_assert_int_eq(sl__task_ptr_read(root, 2, &r, err, sizeof(err)),
                   SL_ERR_CORRUPT);
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -r %s/tasks/2 %s/tasks/2.json", root, root);
  ck_assert_int_eq(system(cmd), 0);
  /* Written without a pending one, it has none. */
  p.pending[0] = '\0';
  ck_assert_int_eq(sl__task_ptr_write(root, &p, 0600, 0700), 0);
  ck_assert_int_eq(sl__task_ptr_read(root, 1, &r, err, sizeof(err)), 1);
  ck_assert_str_eq(r.pending, "");
  ck_assert(!sl__task_ptr_refs(root, "instances/a/chk-4"));
  ck_assert_int_eq(sl__task_ckpt_state(root, "instances/a/chk-4"),
                   SL__TASK_CKPT_NONE);
  int ids[] = {4};
  instance("a", ids, 1);
  ck_assert_int_eq(sl__task_ckpt_state(root, "instances/a/chk-4"),
                   SL__TASK_CKPT_DURABLE);
  char mark[600];
  snprintf(mark, sizeof(mark), "%s/instances/a/chk-4/_COMMITTED", root);
  FILE *f = fopen(mark, "w");
  ck_assert_ptr_nonnull(f);
  fclose(f);
  ck_assert_int_eq(sl__task_ckpt_state(root, "instances/a/chk-4"),
                   SL__TASK_CKPT_COMMITTED);
  teardown_root();
}
END_TEST

START_TEST(gc_removes_only_gone_unreferenced_instances) {
  setup_root();
  const int one[] = {4}, two[] = {5, 6};
  instance("gone", one, 1);      /* lock free, nothing points at it */
  instance("named", two, 2);     /* lock free, task 1 points at chk-5 */
  instance("alive", one, 1);     /* its process holds the lock */
  instance("self", one, 1);      /* the caller */
  instance("starting", NULL, 0); /* no checkpoint yet */
  put(1, "instances/named/chk-5", 7);
  char lock[600];
  snprintf(lock, sizeof(lock), "%s/instances/alive/.lock", root);
  int fd = open(lock, O_RDWR);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
  /* flock locks belong to an open file: gc's own open competes with fd
   * even in this process. */
  sl__task_gc(root, "self", false, NULL, NULL);
  close(fd);
  ck_assert(!exists("instances/gone"));
  ck_assert(exists("instances/named/chk-5"));
  ck_assert(exists("instances/alive/chk-4"));
  ck_assert(exists("instances/self/chk-4"));
  ck_assert(exists("instances/starting"));
  /* Once task 1 points elsewhere, "named" goes too. */
  put(1, "instances/self/chk-4", 9);
  sl__task_gc(root, "self", false, NULL, NULL);
  ck_assert(!exists("instances/named"));
  teardown_root();
}
END_TEST

static void note_removed(const char *name, void *opaque) {
  char *buf = opaque;
  strcat(buf, name);
  strcat(buf, ";");
}

START_TEST(gc_dry_run_names_what_it_would_remove) {
  setup_root();
  const int one[] = {4};
  instance("gone", one, 1);
  instance("alive", one, 1);
  char lock[600];
  snprintf(lock, sizeof(lock), "%s/instances/alive/.lock", root);
  int fd = open(lock, O_RDWR);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
  char inst[600];
  snprintf(inst, sizeof(inst), "%s/instances/alive", root);
  ck_assert(sl__task_inst_alive(inst));
  snprintf(inst, sizeof(inst), "%s/instances/gone", root);
  ck_assert(!sl__task_inst_alive(inst));
  char names[256] = "";
  sl__task_gc(root, NULL, true, note_removed, names);
  ck_assert_str_eq(names, "gone;");
  ck_assert(exists("instances/gone/chk-4"));
  /* The probe released its lock: the owner still holds its own. */
  ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
  names[0] = 0;
  sl__task_gc(root, NULL, false, note_removed, names);
  ck_assert_str_eq(names, "gone;");
  ck_assert(!exists("instances/gone"));
  ck_assert(exists("instances/alive/chk-4"));
  close(fd);
  teardown_root();
}
END_TEST

/* A write creates the generation after the one the writer read or
 * wrote last, and only if nobody created it first: a process that lost
 * the task (stopped meanwhile) cannot point it back over its new owner's
 * pointer. */
START_TEST(pointer_write_is_a_compare_and_swap) {
  setup_root();
  char err[256];
  sl__task_ptr a = {.task = 4, .partition = 4, .offset = 10}, b, r;
  snprintf(a.checkpoint, sizeof(a.checkpoint), "instances/a/chk-1");
  snprintf(a.source, sizeof(a.source), "in");
  snprintf(a.topic, sizeof(a.topic), "events");
  /* Expecting none: generation 1. */
  ck_assert_int_eq(sl__task_ptr_write(root, &a, 0600, 0700), 0);
  ck_assert_uint_eq(a.gen, 1);
  ck_assert_int_eq(sl__task_ptr_read(root, 4, &r, err, sizeof(err)), 1);
  ck_assert_uint_eq(r.gen, 1);
  /* b takes the task over from the pointer and writes its own. */
  ck_assert_int_eq(sl__task_ptr_read(root, 4, &b, err, sizeof(err)), 1);
  snprintf(b.checkpoint, sizeof(b.checkpoint), "instances/b/chk-1");
  b.offset = 20;
  ck_assert_int_eq(sl__task_ptr_write(root, &b, 0600, 0700), 0);
  ck_assert_uint_eq(b.gen, 2);
  /* a, which has not heard, writes nothing: b's pointer stays. */
  snprintf(a.checkpoint, sizeof(a.checkpoint), "instances/a/chk-2");
  a.offset = 15;
  ck_assert_int_eq(sl__task_ptr_write(root, &a, 0600, 0700),
                   SL__TASK_PTR_MOVED);
  ck_assert_uint_eq(a.gen, 1);
  snprintf(a.pending, sizeof(a.pending), "instances/a/chk-3");
  a.pending_offset = 16;
  ck_assert_int_eq(sl__task_ptr_write(root, &a, 0600, 0700),
                   SL__TASK_PTR_MOVED);
  ck_assert_int_eq(sl__task_ptr_read(root, 4, &r, err, sizeof(err)), 1);
  ck_assert_str_eq(r.checkpoint, "instances/b/chk-1");
  ck_assert_str_eq(r.pending, "");
  ck_assert_int_eq(r.offset, 20);
  ck_assert_uint_eq(r.gen, 2);
  /* Nor may a writer that expects no pointer replace one. */
  sl__task_ptr c = b;
  c.gen = 0;
  ck_assert_int_eq(sl__task_ptr_write(root, &c, 0600, 0700),
                   SL__TASK_PTR_MOVED);
  /* b goes on. A generation below the one before the newest goes once
   * it is 10 s older than the newest. */
  snprintf(b.checkpoint, sizeof(b.checkpoint), "instances/b/chk-2");
  ck_assert_int_eq(sl__task_ptr_write(root, &b, 0600, 0700), 0);
  ck_assert_int_eq(sl__task_ptr_read(root, 4, &r, err, sizeof(err)), 1);
  ck_assert_str_eq(r.checkpoint, "instances/b/chk-2");
  ck_assert(exists("tasks/4/1.json") && exists("tasks/4/2.json"));
  age("tasks/4/1.json", 10);
  age("tasks/4/2.json", 9);
  /* Temp files of writers that died before their link go after 60 s. */
  write_text("tasks/4/.7.4242.tmp", "{}");
  write_text("tasks/4/.7.4243.tmp", "{}");
  age("tasks/4/.7.4242.tmp", 60);
  age("tasks/4/.7.4243.tmp", 59);
  snprintf(b.checkpoint, sizeof(b.checkpoint), "instances/b/chk-3");
  ck_assert_int_eq(sl__task_ptr_write(root, &b, 0600, 0700), 0);
  ck_assert_uint_eq(b.gen, 4);
  ck_assert(!exists("tasks/4/1.json"));
  ck_assert(exists("tasks/4/2.json") && exists("tasks/4/3.json"));
  ck_assert(!exists("tasks/4/.7.4242.tmp"));
  ck_assert(exists("tasks/4/.7.4243.tmp"));
  /* A writer whose next generation was written and removed since: its
   * link succeeds, but the newest is above it and does not follow it,
   * so it wrote nothing. */
  c.gen = 0;
  ck_assert_int_eq(sl__task_ptr_write(root, &c, 0600, 0700),
                   SL__TASK_PTR_MOVED);
  ck_assert(!exists("tasks/4/1.json"));
  ck_assert_int_eq(sl__task_ptr_read(root, 4, &r, err, sizeof(err)), 1);
  ck_assert_str_eq(r.checkpoint, "instances/b/chk-3");
  ck_assert_uint_eq(r.gen, 4);
  ck_assert_uint_eq(r.stamp, b.stamp);
  /* A pointer of the layout before generations reads as generation 0;
   * the first who read it writes generation 1 and turns the file into a
   * marker that a reader of that layout refuses; a second reader of the
   * old file writes nothing. */
  put_single(6, "instances/o/chk-9", 30);
  ck_assert_int_eq(sl__task_ptr_read(root, 6, &r, err, sizeof(err)), 1);
  ck_assert_uint_eq(r.gen, 0);
  ck_assert_str_eq(r.checkpoint, "instances/o/chk-9");
  sl__task_ptr old = r;
  ck_assert_int_eq(sl__task_ptr_write(root, &r, 0600, 0700), 0);
  ck_assert_uint_eq(r.gen, 1);
  ck_assert_int_eq(sl__task_ptr_write(root, &old, 0600, 0700),
                   SL__TASK_PTR_MOVED);
  char path[600];
  snprintf(path, sizeof(path), "%s/tasks/6.json", root);
  json_t *m = json_load_file(path, 0, NULL);
  ck_assert_ptr_nonnull(m);
  ck_assert_int_eq(json_integer_value(json_object_get(m, "version")), 3);
  ck_assert_ptr_null(json_object_get(m, "checkpoint"));
  json_decref(m);
  ck_assert_int_eq(sl__task_ptr_read(root, 6, &r, err, sizeof(err)), 1);
  ck_assert_str_eq(r.checkpoint, "instances/o/chk-9");
  ck_assert_uint_eq(r.gen, 1);
  /* A stamp that is not a number makes a pointer of that layout damaged. */
  write_text("tasks/7.json",
             "{\"task\":7,\"checkpoint\":\"instances/o/chk-9\",\"source\":"
             "\"in\",\"topic\":\"events\",\"partition\":7,\"offset\":30,"
             "\"stamp\":\"x\"}");
  ck_assert_int_eq(sl__task_ptr_read(root, 7, &r, err, sizeof(err)),
                   SL_ERR_CORRUPT);
  /* The tasks listed: directories and single files, each once. */
  const char *const all[] = {"4", "6", "7"};
  listed(all, 3);
  teardown_root();
}
END_TEST

/* A writer stopped at any point of its write keeps no other writer
 * waiting: 200 times, at a random moment of another process's loop of
 * writes, that process is stopped (SIGSTOP) and this one reads the
 * pointer and writes its next generation, each time at the first try (a
 * stopped writer creates no generation, and one it created before the
 * stop is the newest or below it). Resumed, the other finds the task
 * moved, reads it again and goes on. */
START_TEST(stopped_writer_holds_nobody_up) {
  setup_root();
  put(8, "instances/x/chk-1", 0);
  pid_t kid = fork();
  ck_assert_int_ge(kid, 0);
  if (kid == 0) {
    char err[256];
    for (;;) {
      sl__task_ptr p;
      if (sl__task_ptr_read(root, 8, &p, err, sizeof(err)) != 1)
        _exit(2);
      p.offset++;
      int r = sl__task_ptr_write(root, &p, 0600, 0700);
      if (r && r != SL__TASK_PTR_MOVED)
        _exit(3);
    }
  }
  unsigned seed = (unsigned)getpid();
  int64_t mine = 1ll << 40; /* not a value the other process writes */
  for (int i = 0; i < 200; i++) {
    struct timespec d = {0, (long)(rand_r(&seed) % 500) * 1000};
    nanosleep(&d, NULL);
    ck_assert_int_eq(kill(kid, SIGSTOP), 0);
    siginfo_t si;
    ck_assert_int_eq(waitid(P_PID, (id_t)kid, &si, WSTOPPED), 0);
    ck_assert_int_eq(si.si_code, CLD_STOPPED);
    sl__task_ptr p;
    char err[256];
    ck_assert_int_eq(sl__task_ptr_read(root, 8, &p, err, sizeof(err)), 1);
    p.offset = ++mine;
    ck_assert_int_eq(sl__task_ptr_write(root, &p, 0600, 0700), 0);
    ck_assert_int_eq(sl__task_ptr_read(root, 8, &p, err, sizeof(err)), 1);
    ck_assert_int_eq(p.offset, mine);
    ck_assert_int_eq(kill(kid, SIGCONT), 0);
  }
  ck_assert_int_eq(kill(kid, SIGKILL), 0);
  int st;
  ck_assert_int_eq(waitpid(kid, &st, 0), kid);
  ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  teardown_root();
}
END_TEST

/* Processes that write one pointer in turn, each a read followed by a
 * compare-and-swap that adds one to its offset (again from a fresh read
 * when another process wrote in between): under any interleaving no
 * addition is lost, so the compare and the replace are one step. */
START_TEST(concurrent_writers_lose_no_update) {
  setup_root();
  enum { PROCS = 4, ADDS = 150 };
  put(7, "instances/x/chk-1", 0);
  pid_t kid[PROCS];
  for (int i = 0; i < PROCS; i++) {
    kid[i] = fork();
    ck_assert_int_ge(kid[i], 0);
    if (kid[i] == 0) {
      char err[256];
      int done = 0;
      while (done < ADDS) {
        sl__task_ptr p;
        if (sl__task_ptr_read(root, 7, &p, err, sizeof(err)) != 1)
          _exit(2);
        p.offset++;
        int r = sl__task_ptr_write(root, &p, 0600, 0700);
        if (r == 0)
          done++;
        else if (r != SL__TASK_PTR_MOVED)
          _exit(3);
      }
      _exit(0);
    }
  }
  for (int i = 0; i < PROCS; i++) {
    int st;
    ck_assert_int_eq(waitpid(kid[i], &st, 0), kid[i]);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
  }
  sl__task_ptr p;
  char err[256];
  ck_assert_int_eq(sl__task_ptr_read(root, 7, &p, err, sizeof(err)), 1);
  ck_assert_int_eq(p.offset, PROCS * ADDS);
  teardown_root();
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("task_store");
  TCase *tc = tcase_create("task_store");
  tcase_add_test(tc, pointer_reads_back_as_written);
  tcase_add_test(tc, damaged_pointer_is_an_error);
  tcase_add_test(tc, refs_name_the_pointed_checkpoints);
  tcase_add_test(tc, named_pointers_and_the_layout_before);
  tcase_add_test(tc, pending_checkpoint_reads_back_and_is_kept);
  tcase_add_test(tc, gc_removes_only_gone_unreferenced_instances);
  tcase_add_test(tc, gc_dry_run_names_what_it_would_remove);
  tcase_add_test(tc, pointer_write_is_a_compare_and_swap);
  tcase_add_test(tc, stopped_writer_holds_nobody_up);
  tcase_add_test(tc, concurrent_writers_lose_no_update);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
