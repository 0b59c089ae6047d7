/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode across processes: a dev broker (sluice-kafka-dev) and
 * several processes of one windowed job (group_job.c) started by the
 * test, sharing a co-partitioned input through Kafka's consumer group.
 * Every process is stopped at the end of its test. */
#include <check.h>
#include <jansson.h>
#include <stdbool.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/tasks.h"
#include "core/hash.h"
#include "test_kafka_util.h"

#define PARTS 12
#define KEYS 48
#define SECONDS 5
#define WAIT_MS 60000
/* How long a revived process may take to get partitions back. */
#define REJOIN_MS 180000
/* Event time of the first window: a message timestamp of 0 would mean
 * "now" to the producer. */
#define T0 10000

static char bs[256];
/* Processes started and not yet stopped: a failed assertion leaves them,
 * and main() kills them so none outlives the suite. */
static pid_t kids[16];
static int n_kids;

static void track(pid_t pid) {
  if (n_kids < 16)
    kids[n_kids++] = pid;
}

static void untrack(pid_t pid) {
  for (int i = 0; i < n_kids; i++)
    if (kids[i] == pid)
      kids[i] = kids[--n_kids];
}
static pid_t broker;
static char dir[256];
/* The topics of the repartition tests: a real broker's test
 * (kill_through_repartition_exactly_once) names its own. */
static const char *in_topic = "in", *out_topic = "out",
                  *repart_topic = "group-job-count-repartition";

static const char *build_root(void) {
  const char *b = getenv("SLUICE_BUILD_ROOT");
  return b ? b : "build";
}

/* Starts the dev broker; extra (and extra2) name one more topic
 * (name:partitions). */
static void start_broker_with2(const char *extra, const char *extra2);
static void start_broker_with(const char *extra) {
  start_broker_with2(extra, NULL);
}
static void start_broker(void) {
  start_broker_with(NULL);
}

static void start_broker_with2(const char *extra, const char *extra2) {
  char tool[1024], file[512], cmd[300];
  snprintf(dir, sizeof(dir), "/tmp/sluice-group-test-%ld", (long)getpid());
  /* What a failed test before this one left (its checkpoint store). */
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
  mkdir(dir, 0700);
  snprintf(tool, sizeof(tool), "%s/tools/sluice-kafka-dev", build_root());
  snprintf(file, sizeof(file), "%s/bootstrap", dir);
  unlink(file);
  broker = fork();
  ck_assert_int_ge(broker, 0);
  if (broker == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    if (extra2)
      execl(tool, tool, "--topic", "in:12", "--topic", "out:1", "--topic",
            "in5:5", "--topic", extra, "--topic", extra2, "--bootstrap-file",
            file, (char *)NULL);
    else if (extra)
      execl(tool, tool, "--topic", "in:12", "--topic", "out:1", "--topic",
            "in5:5", "--topic", extra, "--bootstrap-file", file, (char *)NULL);
    else
      execl(tool, tool, "--topic", "in:12", "--topic", "out:1", "--topic",
            "in5:5", "--bootstrap-file", file, (char *)NULL);
    _exit(127);
  }
  track(broker);
  bs[0] = '\0';
  for (int i = 0; i < 400 && !bs[0]; i++) {
    FILE *f = fopen(file, "r");
    if (f) {
      if (!fgets(bs, sizeof(bs), f))
        bs[0] = '\0';
      fclose(f);
    }
    if (!bs[0])
      tk_sleep_ms(25);
  }
  ck_assert_msg(bs[0], "no bootstrap file %s", file);
  bs[strcspn(bs, "\n")] = '\0';
}

static void stop_pid(pid_t pid, int sig, int want_exit) {
  ck_assert_int_eq(kill(pid, sig), 0);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  untrack(pid);
  if (want_exit >= 0) {
    ck_assert_msg(WIFEXITED(status), "process %ld did not exit", (long)pid);
    ck_assert_int_eq(WEXITSTATUS(status), want_exit);
  }
}

/* GROUP_TEST_KEEP set: the test's directory (logs, store) stays. */
static void stop_broker(void) {
  stop_pid(broker, SIGTERM, 0);
  if (getenv("GROUP_TEST_KEEP")) {
    fprintf(stderr, "kept %s\n", dir);
    return;
  }
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* A job process; its stderr goes to <dir>/<name>.err. With backend, it
 * checkpoints into the shared store <dir>/ckpt with that state backend;
 * process two_workers ("b" unless a test says otherwise) then runs two
 * workers (a task's partition is read on one worker and its state loaded
 * on another), the others one. */
static const char *two_workers = "b";
static pid_t start_job_ck(const char *mode, const char *parts, const char *name,
                          const char *backend);
static pid_t start_job(const char *mode, const char *parts, const char *name) {
  return start_job_ck(mode, parts, name, NULL);
}

/* Processes started while set run with an exactly_once sink. */
static bool exactly_once;
/* Processes started while set multiply each count by the factor that
 * topic "rules" puts in broadcast state (group_job.c), and check_output
 * expects that (factor_at). */
static bool broadcast;

static pid_t start_job_ck(const char *mode, const char *parts, const char *name,
                          const char *backend) {
  char bin[1024], errf[512];
  snprintf(bin, sizeof(bin), "%s/tests/integration/test-group-job",
           build_root());
  snprintf(errf, sizeof(errf), "%s/%s.err", dir, name);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int null = open("/dev/null", O_WRONLY);
    dup2(fd, 2);
    dup2(null, 1);
    char ck[300];
    snprintf(ck, sizeof(ck), "%s/ckpt", dir);
    if (exactly_once)
      setenv("GROUP_JOB_EXACTLY_ONCE", name, 1);
    if (broadcast)
      setenv("GROUP_JOB_BROADCAST", "1", 1);
    if (backend)
      execl(bin, bin, bs, mode, parts, ck, backend,
            strcmp(name, two_workers) ? "1" : "2", (char *)NULL);
    else
      execl(bin, bin, bs, mode, parts, (char *)NULL);
    _exit(127);
  }
  track(pid);
  return pid;
}

/* How many partitions the process reads: the sum over the subtasks of
 * source src ("source <src>[<subtask>]: ...") of the last count the log
 * gave after a rebalance, or 0. */
static int status_of_source(const char *name, const char *src);
static int status_of(const char *name) {
  return status_of_source(name, "in");
}

/* What each consumer of source src in process name reads now, by its
 * log (last[subtask], -1: no rebalance logged); returns the sum. */
static int reads_of_source(const char *name, const char *src, int last[8]) {
  char tag[128];
  size_t tag_len = (size_t)snprintf(tag, sizeof(tag), "source %s[", src);
  char path[512], line[1024];
  snprintf(path, sizeof(path), "%s/%s.err", dir, name);
  for (int i = 0; i < 8; i++)
    last[i] = -1;
  FILE *f = fopen(path, "r");
  int n = 0;
  if (!f)
    return 0;
  while (fgets(line, sizeof(line), f)) {
    const char *r = strstr(line, "group rebalance:");
    const char *sub = strstr(line, tag);
    if (r && sub && (r = strstr(r, "; reads ")))
      last[atoi(sub + tag_len) & 7] = atoi(r + 8);
  }
  fclose(f);
  for (int i = 0; i < 8; i++)
    n += last[i] > 0 ? last[i] : 0;
  return n;
}

static int status_of_source(const char *name, const char *src) {
  int last[8];
  return reads_of_source(name, src, last);
}

/* Waits until the consumers of source src in the named processes read
 * want partitions in all, as evenly as the cooperative-sticky assignor
 * leaves them once its rounds are over (at most one apart): a member's
 * rebalance is over, not merely a round of it. */
static void wait_balanced(const char *const *names, int n, int want,
                          const char *src) {
  for (int i = 0; i < WAIT_MS / 50; i++) {
    int sum = 0, least = PARTS, most = 0, last[8];
    for (int j = 0; j < n; j++) {
      sum += reads_of_source(names[j], src, last);
      for (int m = 0; m < 8; m++)
        if (last[m] >= 0) {
          least = last[m] < least ? last[m] : least;
          most = last[m] > most ? last[m] : most;
        }
    }
    if (sum == want && most - least <= 1)
      return;
    tk_sleep_ms(50);
  }
  ck_abort_msg("the group never balanced %d partitions of source %s", want,
               src);
}

/* Waits until the named processes read want partitions in all, each at
 * least one: the group is stable before any data is produced. */
static void wait_assigned_source(const char *const *names, int n, int want,
                                 const char *src);
static void wait_assigned(const char *const *names, int n, int want) {
  wait_assigned_source(names, n, want, "in");
}

/* wait_assigned_source within ms. */
static void wait_assigned_source_ms(const char *const *names, int n, int want,
                                    const char *src, int ms) {
  for (int i = 0; i < ms / 50; i++) {
    int sum = 0, least = PARTS;
    for (int j = 0; j < n; j++) {
      int s = status_of_source(names[j], src);
      sum += s;
      if (s < least)
        least = s;
    }
    if (sum == want && least > 0)
      return;
    tk_sleep_ms(50);
  }
  /* What each process reads as the wait gives up. */
  char got[256] = "";
  for (int j = 0, len = 0; j < n && len < (int)sizeof(got); j++)
    len += snprintf(got + len, sizeof(got) - (size_t)len, " %s:%d", names[j],
                    status_of_source(names[j], src));
  ck_abort_msg("the group never settled on %d partitions of source %s in %d "
               "ms; the processes read%s",
               want, src, ms, got);
}

static void wait_assigned_source(const char *const *names, int n, int want,
                                 const char *src) {
  wait_assigned_source_ms(names, n, want, src, WAIT_MS);
}

static void key_of(int i, char *buf, size_t cap) {
  snprintf(buf, cap, "user-%d", i);
}

/* Every key gets i % 3 + 1 events in each of SECONDS windows from T0, written
 * to the partition Kafka's default partitioner gives the key; then every
 * partition gets one record at 100 s, which moves its watermark past
 * every window without firing its own. */
/* The phase (0, 1, 2) of the event j of second s when the input is
 * produced in three parts: each part ends inside a window, so windows
 * open at a handoff carry state across it. */
static int phase_of(int s, int j) {
  if (s < 2 || (s == 2 && j == 0))
    return 0;
  if (s == 2 || (s == 3 && j == 0))
    return 1;
  return 2;
}

/* A flush record's key (or value) that Kafka's default partitioner puts
 * in partition part: "flush-<i>" with the first i that does. */
static void flush_key(int32_t part, char *key, size_t cap) {
  for (int i = 0;; i++) {
    snprintf(key, cap, "flush-%d", i);
    if ((int32_t)sl__murmur2_partition(key, strlen(key), PARTS) == part)
      return;
  }
}

/* The events of one phase (-1: all of them), and after the last phase
 * the flush records (phase 3: those alone). */
static void produce_phase(int phase) {
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  rd_kafka_t *p = tk_producer(&c);
  char key[64];
  for (int s = 0; s < SECONDS; s++)
    for (int i = 0; i < KEYS; i++)
      for (int j = 0; j <= i % 3; j++) {
        if (phase >= 0 && phase_of(s, j) != phase)
          continue;
        key_of(i, key, sizeof(key));
        int32_t part = (int32_t)sl__murmur2_partition(key, strlen(key), PARTS);
        tk_send(p, "in", part, key, "x", T0 + s * 1000 + j * 10, NULL, NULL);
      }
  for (int32_t part = 0; part < PARTS && (phase < 0 || phase >= 2); part++) {
    flush_key(part, key, sizeof(key));
    tk_send(p, "in", part, key, "x", 100000, NULL, NULL);
  }
  tk_flush(p);
  rd_kafka_destroy(p);
}

static void produce(void) {
  produce_phase(-1);
}

/* The rules of the broadcast job, in a topic of one partition: factor 10
 * from the start, 100 from inside the third window, and 100 again far
 * ahead, which moves the rules' watermark past every window. */
#define RULE_CHANGE_MS (T0 + 2500)
static void produce_rules(void) {
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  rd_kafka_t *p = tk_producer(&c);
  tk_send(p, "rules", 0, "factor", "10", 1, NULL, NULL);
  tk_send(p, "rules", 0, "factor", "100", RULE_CHANGE_MS, NULL, NULL);
  tk_send(p, "rules", 0, "factor", "100", 200000, NULL, NULL);
  tk_flush(p);
  rd_kafka_destroy(p);
}

/* The factor the broadcast job applies to the window ending at max_ts. */
static int factor_at(int64_t max_ts) {
  if (!broadcast)
    return 1;
  return max_ts < RULE_CHANGE_MS ? 10 : 100;
}

static int cmp_line(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted output lines against sorted expected ones: says which are
 * missing or extra, asserts them equal, and frees both. */
static void assert_same_lines(char **got, size_t n_got, char **exp, size_t n) {
  for (size_t i = 0, j = 0; i < n || j < n_got;) {
    int d = i == n ? 1 : j == n_got ? -1 : strcmp(exp[i], got[j]);
    if (d)
      fprintf(stderr, "%s %s\n", d < 0 ? "missing" : "extra",
              d < 0 ? exp[i] : got[j]);
    i += d <= 0;
    j += d >= 0;
  }
  ck_assert_uint_eq(n_got, n);
  for (size_t i = 0; i < n; i++)
    ck_assert_str_eq(got[i], exp[i]);
  for (size_t i = 0; i < n_got; i++)
    free(got[i]);
  for (size_t i = 0; i < n; i++)
    free(exp[i]);
  free(got);
  free(exp);
}

/* Reads "out" until the expected number of windows arrived and then a
 * second more (so extra output would show), and compares the sorted
 * "key,max_ts,count" lines with the model of produce() (which is what one
 * process writes: one_process_without_group_mode). With dups, a line may
 * repeat an expected one (at-least-once after a failure): every window
 * is there with its exact count, and nothing else. */
static void check_output_dups(bool dups);
static void check_output(void) {
  check_output_dups(false);
}

static void check_output_dups(bool dups) {
  enum { WANT = KEYS * SECONDS };
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  tk_reader r;
  tk_reader_open(&r, &c, "out", 1);
  tk_read(&r, WANT, WAIT_MS);
  tk_read(&r, WANT + 1, 1000);
  /* Repeats count towards WANT: read on until the output is quiet. */
  for (size_t was = 0; dups && was != r.n;) {
    was = r.n;
    tk_read(&r, r.n + 1, 3000);
  }
  char **got = calloc(r.n + 1, sizeof(char *));
  char **exp = calloc(WANT, sizeof(char *));
  for (size_t i = 0; i < r.n; i++) {
    got[i] = malloc(640);
    snprintf(got[i], 640, "%s,%" PRId64 ",%s", r.m[i].key, r.m[i].ts,
             r.m[i].value);
  }
  size_t n = 0;
  for (int s = 0; s < SECONDS; s++)
    for (int i = 0; i < KEYS; i++) {
      char key[64];
      key_of(i, key, sizeof(key));
      exp[n] = malloc(128);
      int64_t max_ts = T0 + s * 1000 + 999;
      snprintf(exp[n++], 128, "%s,%" PRId64 ",%d", key, max_ts,
               (i % 3 + 1) * factor_at(max_ts));
    }
  qsort(got, r.n, sizeof(char *), cmp_line);
  qsort(exp, n, sizeof(char *), cmp_line);
  for (size_t i = 0, j = 0; i < n || j < r.n;) {
    int c = i == n ? 1 : j == r.n ? -1 : strcmp(exp[i], got[j]);
    if (c)
      fprintf(stderr, "%s %s\n", c < 0 ? "missing" : "extra",
              c < 0 ? exp[i] : got[j]);
    i += c <= 0;
    j += c >= 0;
  }
  if (dups) {
    /* Drop repeats of an expected line, then compare exactly. */
    size_t m = 0;
    for (size_t j = 0; j < r.n; j++) {
      if (m && strcmp(got[m - 1], got[j]) == 0 &&
          bsearch(&got[j], exp, n, sizeof(char *), cmp_line)) {
        free(got[j]);
        continue;
      }
      got[m++] = got[j];
    }
    if (m != r.n)
      fprintf(stderr, "%zu duplicate window(s) (at-least-once)\n", r.n - m);
    r.n = m;
  }
  assert_same_lines(got, r.n, exp, n);
  tk_reader_close(&r);
}

/* Reads the pointer of the task that reads partition part of topic
 * (named by its partition for the co-partitioned input "in", by topic
 * and partition for a repartition topic): whether it has one. */
static bool pointer_of(const char *topic, int part, sl__task_ptr *p) {
  char root[512], name[300], err[1024];
  snprintf(root, sizeof(root), "%s/ckpt", dir);
  if (strcmp(topic, "in") == 0)
    snprintf(name, sizeof(name), "%d", part);
  else
    snprintf(name, sizeof(name), "%s-%d", topic, part);
  int r = sl__task_ptr_read_file(root, name, p, err, sizeof(err));
  ck_assert_msg(r >= 0, "%s", err);
  return r == 1;
}

/* The offset the pointer of the task of partition part of topic holds
 * in the shared store (0 without a pointer). */
static int64_t pointer_offset(const char *topic, int part) {
  sl__task_ptr p;
  return pointer_of(topic, part, &p) ? p.offset : 0;
}

/* Waits until every task's pointer is at the end of its partition of
 * topic: everything produced so far is in the state of a complete
 * snapshot. */
static void wait_snapshotted_of(const char *topic);
static void wait_snapshotted(void) {
  wait_snapshotted_of("in");
}

static void wait_snapshotted_of(const char *topic) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bs, NULL, 0);
  rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  int64_t hi[PARTS];
  for (int p = 0; p < PARTS; p++) {
    int64_t lo;
    ck_assert_int_eq(
        rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi[p], 10000), 0);
  }
  rd_kafka_destroy(rk);
  for (int i = 0; i < WAIT_MS / 50; i++) {
    int at_end = 0;
    for (int p = 0; p < PARTS; p++)
      at_end += pointer_offset(topic, p) == hi[p];
    if (at_end == PARTS)
      return;
    tk_sleep_ms(50);
  }
  for (int p = 0; p < PARTS; p++)
    fprintf(stderr, "task %d: pointer at %lld, partition end %lld\n", p,
            (long long)pointer_offset(topic, p), (long long)hi[p]);
  ck_abort_msg("the tasks' snapshots never reached the partitions' ends");
}

/* Three processes of the windowed job share 12 tasks with their state in
 * the shared checkpoint store. Once everything produced so far (two of
 * three parts, windows open in every task) is in complete snapshots, one
 * is SIGKILLed; after the session timeout the survivors restore its tasks
 * from their snapshots, read on from the offsets stored with them, and
 * the output is the one process's, up to repeats of windows the dead
 * process wrote after its tasks' last snapshots (at-least-once). */
static void killed_member_state_moves(const char *backend) {
  start_broker();
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job_ck("copartitioned", "12", names[i], backend);
  wait_assigned(names, 3, PARTS);
  produce_phase(0);
  produce_phase(1);
  wait_snapshotted();
  int had = status_of("c");
  stop_pid(p[2], SIGKILL, -1);
  wait_assigned(names, 2, PARTS);
  ck_assert_int_gt(had, 0);
  produce_phase(2);
  check_output_dups(true);
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  stop_broker();
}

START_TEST(killed_member_state_moves_hashmap) {
  killed_member_state_moves("hashmap");
}
END_TEST

START_TEST(killed_member_state_moves_rocksdb) {
  killed_member_state_moves("rocksdb");
}
END_TEST

/* One process, then three (tasks move to the newcomers: each revoked
 * task is snapshotted before its partition is let go), then two (the
 * third leaves on SIGTERM after its final snapshot). Each part of the
 * input is produced between two of these steps, so windows are open at
 * every handoff; graceful handoffs lose nothing and repeat nothing. */
static void scale_1_3_2(const char *backend) {
  start_broker();
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  p[0] = start_job_ck("copartitioned", "12", "a", backend);
  wait_assigned(names, 1, PARTS);
  produce_phase(0);
  wait_snapshotted();
  for (int i = 1; i < 3; i++)
    p[i] = start_job_ck("copartitioned", "12", names[i], backend);
  wait_assigned(names, 3, PARTS);
  produce_phase(1);
  wait_snapshotted();
  stop_pid(p[2], SIGTERM, 0);
  wait_assigned(names, 2, PARTS);
  produce_phase(2);
  check_output();
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  stop_broker();
}

START_TEST(scale_1_3_2_hashmap) {
  scale_1_3_2("hashmap");
}
END_TEST

START_TEST(scale_1_3_2_rocksdb) {
  scale_1_3_2("rocksdb");
}
END_TEST

/* The events of produce() but each key's first: with rest, those of b's
 * keys (of_b: by partition) from second 2 on; else the others. */
static void send_lagging(rd_kafka_t *pr, const bool *of_b, bool rest) {
  char key[64];
  for (int s = 0; s < SECONDS; s++)
    for (int i = 0; i < KEYS; i++)
      for (int j = 0; j <= i % 3; j++) {
        key_of(i, key, sizeof(key));
        int32_t part = (int32_t)sl__murmur2_partition(key, strlen(key), PARTS);
        if ((s == 0 && j == 0) || rest != (of_b[part] && s >= 2))
          continue;
        tk_send(pr, "in", part, key, "x", T0 + s * 1000 + j * 10, NULL, NULL);
      }
  tk_flush(pr);
}

/* A task whose event time is behind the watermark of the process it
 * moves to. Two processes share the 12 tasks; a first record per key
 * (second 0) tells, through the tasks' pointers, which process holds
 * which. Then a's tasks get all five seconds of their keys' events and
 * b's only the first two, so a's watermark is three seconds ahead of
 * b's tasks. b leaves on SIGTERM: its tasks move to a with their
 * snapshots, and the rest of their events (seconds 2 to 4) arrive there,
 * older than a's watermark. Each task keeps its own watermark across
 * the move (restored with its snapshot), so none of them is late and
 * the output is exactly the one process's (the model of produce()).
 * Without it, a drops b's events of seconds 2 and 3 as late. */
static void pointer_checkpoint(const char *topic, int part, char *out,
                               size_t cap);
static bool named_by(const char *chk, pid_t pid);
/* The first record of each key (second 0), then, once they are in
 * complete snapshots, which partitions' tasks process b holds (of_b:
 * their pointers name b's checkpoints); returns how many keys those are,
 * checked to be some but not all. */
static int tasks_of_b(rd_kafka_t *pr, pid_t b, bool of_b[PARTS]) {
  char key[64];
  for (int i = 0; i < KEYS; i++) {
    key_of(i, key, sizeof(key));
    int32_t part = (int32_t)sl__murmur2_partition(key, strlen(key), PARTS);
    tk_send(pr, "in", part, key, "x", T0, NULL, NULL);
  }
  tk_flush(pr);
  wait_snapshotted();
  for (int part = 0; part < PARTS; part++) {
    char chk[512] = "";
    if (pointer_offset("in", part) > 0)
      pointer_checkpoint("in", part, chk, sizeof(chk));
    of_b[part] = chk[0] && named_by(chk, b);
  }
  int b_keys = 0;
  for (int i = 0; i < KEYS; i++) {
    key_of(i, key, sizeof(key));
    b_keys += of_b[sl__murmur2_partition(key, strlen(key), PARTS)];
  }
  ck_assert_msg(b_keys > 0 && b_keys < KEYS, "b holds %d of %d keys", b_keys,
                KEYS);
  return b_keys;
}

static void lagging_task_moves_shape(const char *backend, const char *shape) {
  start_broker();
  pid_t p[2];
  const char *names[] = {"a", "b"};
  if (shape)
    setenv("GROUP_JOB_SHAPE", shape, 1);
  for (int i = 0; i < 2; i++)
    p[i] = start_job_ck("copartitioned", "12", names[i], backend);
  unsetenv("GROUP_JOB_SHAPE");
  wait_assigned(names, 2, PARTS);
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  rd_kafka_t *pr = tk_producer(&c);
  bool of_b[PARTS];
  tasks_of_b(pr, p[1], of_b);
  /* Everything but b's keys' seconds 2 to 4 (the first record of each
   * key is in already); b leaves; then the rest. */
  send_lagging(pr, of_b, false);
  wait_snapshotted();
  stop_pid(p[1], SIGTERM, 0);
  wait_assigned(names, 1, PARTS);
  send_lagging(pr, of_b, true);
  rd_kafka_destroy(pr);
  produce_phase(3); /* the flush records alone */
  check_output();
  stop_pid(p[0], SIGTERM, 0);
  stop_broker();
}

static void lagging_task_moves(const char *backend) {
  lagging_task_moves_shape(backend, NULL);
}

START_TEST(lagging_task_moves_hashmap) {
  lagging_task_moves("hashmap");
}
END_TEST

START_TEST(lagging_task_moves_rocksdb) {
  lagging_task_moves("rocksdb");
}
END_TEST

/* A moved task whose partition receives nothing after the move: with
 * an idle timeout the partition is idle at the new owner as it would be
 * in one process, so the task stops waiting for a record and its open
 * windows fire with the watermark of the others. The timeout (10 s) is
 * longer than any gap between the records before the move: a partition
 * idle when a burst of records arrives would let the first partition
 * read in the burst take the watermark past windows whose records the
 * others still hold (which idleness does in one process too). Two processes
 * share the 12 tasks; b's keys get events of seconds 0 and 1 only, a's
 * of all five. b leaves on SIGTERM; its tasks move to a with the window
 * of second 1 open; only a's partitions get flush records. The output
 * is exactly one process's: every key's windows of the seconds it had
 * events in (before, the moved tasks' windows of second 1 never fired).
 * gen: NULL for the bounded strategy (the task follows its records), or
 * a user generator (GROUP_JOB_WM; the source sends the task's). */
static void silent_task_moves(const char *backend, const char *gen) {
  start_broker();
  pid_t p[2];
  const char *names[] = {"a", "b"};
  setenv("GROUP_JOB_IDLE_MS", "10000", 1);
  if (gen)
    setenv("GROUP_JOB_WM", gen, 1);
  for (int i = 0; i < 2; i++)
    p[i] = start_job_ck("copartitioned", "12", names[i], backend);
  unsetenv("GROUP_JOB_IDLE_MS");
  unsetenv("GROUP_JOB_WM");
  wait_assigned(names, 2, PARTS);
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  rd_kafka_t *pr = tk_producer(&c);
  bool of_b[PARTS];
  int b_keys = tasks_of_b(pr, p[1], of_b);
  /* The rest of the events: b's keys up to second 1. */
  enum { B_SECONDS = 2 };
  char key[64];
  for (int s = 0; s < SECONDS; s++)
    for (int i = 0; i < KEYS; i++) {
      key_of(i, key, sizeof(key));
      int32_t part = (int32_t)sl__murmur2_partition(key, strlen(key), PARTS);
      for (int j = 0; j <= i % 3; j++)
        if (!(s == 0 && j == 0) && (!of_b[part] || s < B_SECONDS))
          tk_send(pr, "in", part, key, "x", T0 + s * 1000 + j * 10, NULL, NULL);
    }
  tk_flush(pr);
  wait_snapshotted();
  stop_pid(p[1], SIGTERM, 0);
  wait_assigned(names, 1, PARTS);
  /* A flush record at 100 s to each of a's partitions, once a second:
   * a live input rather than one record, since once a's partitions went
   * idle too before the moved ones did (their idle clocks start when
   * they are assigned or loaded), every partition would be idle and the
   * watermark would stay where it was, in one process as well. */
  size_t want = (size_t)(KEYS - b_keys) * SECONDS + (size_t)b_keys * B_SECONDS;
  tk_reader r;
  tk_reader_open(&r, &c, "out", 1);
  for (int round = 0; round < WAIT_MS / 1000 && r.n < want; round++) {
    for (int32_t part = 0; part < PARTS; part++) {
      if (of_b[part])
        continue;
      flush_key(part, key, sizeof(key));
      tk_send(pr, "in", part, key, "x", 100000, NULL, NULL);
    }
    tk_flush(pr);
    tk_read(&r, want, 1000);
  }
  rd_kafka_destroy(pr);
  tk_read(&r, want + 1, 1000);
  char **got = calloc(r.n + 1, sizeof(char *));
  char **exp = calloc(want, sizeof(char *));
  for (size_t k = 0; k < r.n; k++) {
    got[k] = malloc(640);
    snprintf(got[k], 640, "%s,%" PRId64 ",%s", r.m[k].key, r.m[k].ts,
             r.m[k].value);
  }
  size_t n = 0;
  for (int s = 0; s < SECONDS; s++)
    for (int i = 0; i < KEYS; i++) {
      key_of(i, key, sizeof(key));
      if (of_b[sl__murmur2_partition(key, strlen(key), PARTS)] &&
          s >= B_SECONDS)
        continue;
      exp[n] = malloc(128);
      snprintf(exp[n++], 128, "%s,%d,%d", key, T0 + s * 1000 + 999, i % 3 + 1);
    }
  qsort(got, r.n, sizeof(char *), cmp_line);
  qsort(exp, n, sizeof(char *), cmp_line);
  assert_same_lines(got, r.n, exp, n);
  tk_reader_close(&r);
  stop_pid(p[0], SIGTERM, 0);
  stop_broker();
}

START_TEST(silent_task_moves_hashmap) {
  silent_task_moves("hashmap", NULL);
}
END_TEST

START_TEST(silent_task_moves_rocksdb) {
  silent_task_moves("rocksdb", NULL);
}
END_TEST

START_TEST(silent_task_moves_custom_hashmap) {
  silent_task_moves("hashmap", "custom");
}
END_TEST

/* The same with two keyed event-time operators in the keyed stage: the
 * counts go on, by the same key, to a second tumbling window (their
 * sum per window: the counts again). The moved tasks' counts of seconds
 * 2 and 3 reach it three seconds behind its watermark; it judges them
 * by their task's watermark, which the first window sends it in order
 * with its output, so they are not late (before, every one of them was
 * dropped). */
START_TEST(lagging_window_after_window_hashmap) {
  lagging_task_moves_shape("hashmap", "window2");
}
END_TEST

START_TEST(lagging_window_after_window_rocksdb) {
  lagging_task_moves_shape("rocksdb", "window2");
}
END_TEST

/* The same with a process function that hands each record on, then the
 * window by the same key: the moved tasks' records reach the window
 * behind its watermark, and the process function sends their task's
 * watermark after each record that moved it. */
START_TEST(lagging_window_after_process_hashmap) {
  lagging_task_moves_shape("hashmap", "process");
}
END_TEST

/* The same through a keyed operator of two inputs: a window join of the
 * input with its events at a whole second, whose pairs a window counts
 * by the same key. The join takes a task's watermark as the minimum over
 * its two inputs, each moved by the task's records on it, and sends it to
 * the window after it. */
START_TEST(lagging_join_then_window_hashmap) {
  lagging_task_moves_shape("hashmap", "join");
}
END_TEST

START_TEST(lagging_join_then_window_rocksdb) {
  lagging_task_moves_shape("rocksdb", "join");
}
END_TEST

/* The same with a user watermark generator (SL_WM_CUSTOM) at the source,
 * one instance per partition: a generator's watermark cannot be derived
 * from the records, so the source sends each moved task's, its
 * partition's generator's, to the keyed stage, and the generator of a
 * moved partition starts from the watermark its task's snapshot
 * recorded. A periodic generator with state (the highest timestamp, its
 * watermark every watermark.interval.ms) and a punctuated one (after
 * each record). With RocksDB process a, which the tasks move to, runs
 * two workers: a moved partition may be read on one and its task held
 * on the other, so its watermark crosses the exchange. Without per-task
 * watermarks for them, a drops b's events of seconds 2 and 3 as late. */
static void lagging_custom(const char *backend, const char *gen,
                           const char *shape) {
  setenv("GROUP_JOB_WM", gen, 1);
  if (strcmp(backend, "rocksdb") == 0)
    two_workers = "a";
  lagging_task_moves_shape(backend, shape);
  two_workers = "b";
  unsetenv("GROUP_JOB_WM");
}

START_TEST(lagging_custom_hashmap) {
  lagging_custom("hashmap", "custom", NULL);
}
END_TEST

START_TEST(lagging_custom_rocksdb) {
  lagging_custom("rocksdb", "custom", NULL);
}
END_TEST

START_TEST(lagging_punctuated_hashmap) {
  lagging_custom("hashmap", "punctuated", NULL);
}
END_TEST

/* And with a window after the window: the first sends the moved tasks'
 * watermarks, which it takes from the source, on to the second. */
START_TEST(lagging_custom_window2_hashmap) {
  lagging_custom("hashmap", "custom", "window2");
}
END_TEST

/* Broadcast state in group mode: the rules topic (one partition) feeds
 * only a broadcast, so every process reads all of it outside the group
 * and holds the same broadcast state; the one process without group
 * mode and three processes sharing the input's 12 tasks (one of them
 * with two workers, whose second rules subtask reads nothing) write
 * exactly the same, the model's, counts times the factor in force. */
static void broadcast_in_every_process(const char *backend) {
  broadcast = true;
  start_broker_with("rules:1");
  pid_t a = start_job("off", "0", "a");
  produce_rules();
  produce();
  check_output();
  stop_pid(a, SIGTERM, 0);
  stop_broker();

  start_broker_with("rules:1");
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job_ck("copartitioned", "12", names[i], backend);
  wait_assigned(names, 3, PARTS);
  produce_rules();
  produce();
  check_output();
  for (int i = 0; i < 3; i++)
    stop_pid(p[i], SIGTERM, 0);
  stop_broker();
  broadcast = false;
}

START_TEST(broadcast_in_every_process_hashmap) {
  broadcast_in_every_process("hashmap");
}
END_TEST

START_TEST(broadcast_in_every_process_rocksdb) {
  broadcast_in_every_process("rocksdb");
}
END_TEST

/* The log of process name as one string (freed by the caller). */
static char *log_of(const char *name) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s.err", dir, name);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  char *text = NULL;
  size_t cap = 0, n = 0, got;
  do {
    if (n + 4096 + 1 > cap) {
      cap = (n + 4096 + 1) * 2;
      text = realloc(text, cap);
      ck_assert_ptr_nonnull(text);
    }
    got = fread(text + n, 1, 4096, f);
    n += got;
  } while (got > 0);
  fclose(f);
  text[n] = '\0';
  return text;
}

/* The checkpoint each task's pointer names (e.g.
 * "instances/host-4242-1796405927919/chk-17"). */
static void pointer_checkpoint(const char *topic, int part, char *out,
                               size_t cap) {
  sl__task_ptr p;
  ck_assert_msg(pointer_of(topic, part, &p), "no pointer of %s[%d]", topic,
                part);
  snprintf(out, cap, "%s", p.checkpoint);
}

/* Whether the instance directory a checkpoint path names is process
 * pid's ("instances/<host>-<pid>-<start>/chk-N"). */
static bool named_by(const char *chk, pid_t pid) {
  char pat[64];
  snprintf(pat, sizeof(pat), "-%ld-", (long)pid);
  const char *slash = strchr(chk + strlen("instances/"), '/');
  const char *at = strstr(chk, pat);
  return at && slash && at < slash;
}

/* The checkpoints the process's log says completed (its transaction
 * committed before the line is written) or whose transaction committed
 * (group_job.c logs that with an exactly_once sink, also when it dies
 * right after), in *ids (allocated; free it); returns how many. */
static int completions_of(const char *name, long **ids) {
  char *text = log_of(name);
  int n = 0, cap = 0;
  *ids = NULL;
  for (const char *p = text; (p = strstr(p, "checkpoint ")); p++) {
    char *end;
    long id = strtol(p + 11, &end, 10);
    if (end == p + 11 || (strncmp(end, " completed in ", 14) != 0 &&
                          strncmp(end, " committed\n", 11) != 0))
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 256;
      *ids = realloc(*ids, (size_t)cap * sizeof(**ids));
      ck_assert_ptr_nonnull(*ids);
    }
    (*ids)[n++] = id;
  }
  free(text);
  return n;
}

/* The run boundaries of the process's revivals, in the order it logged
 * them ("... checkpoints continue after id N)"), into ids (at most cap);
 * returns how many. The text of the log before the first of them is the
 * run the process was fenced in. */
#define REVIVED "checkpoints continue after id "
static int revivals_of(const char *name, long *ids, int cap) {
  char *text = log_of(name);
  int n = 0;
  for (const char *p = text; n < cap && (p = strstr(p, REVIVED)); p++)
    ids[n++] = strtol(p + strlen(REVIVED), NULL, 10);
  free(text);
  return n;
}

/* What a read_committed consumer of "out" would read, as far as the mock
 * cluster lets a test see it (it does not filter aborted transactions):
 * a record of process P (header gj.proc) with epoch E (sluice.epoch: the
 * last barrier before it) was committed iff P's log says a checkpoint
 * after E completed in the run that wrote it. A revival aborts the open
 * transaction and starts a new run, whose epochs begin at the boundary
 * it logged: so the completion must also be below the first boundary
 * after E. Compared with the model exactly: no window lost, none twice. */
static void check_committed_output(const char *const *names, int n_names) {
  enum { WANT = KEYS * SECONDS };
  long *done[8], bound[8][8];
  int n_done[8], n_bound[8];
  for (int i = 0; i < n_names; i++) {
    n_done[i] = completions_of(names[i], &done[i]);
    n_bound[i] = revivals_of(names[i], bound[i], 8);
  }
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  tk_reader r;
  tk_reader_open(&r, &c, out_topic, 1);
  tk_read(&r, WANT, WAIT_MS);
  for (size_t was = 0; was != r.n;) {
    was = r.n;
    tk_read(&r, r.n + 1, 3000);
  }
  char **got = calloc(r.n + 1, sizeof(char *));
  char **exp = calloc(WANT, sizeof(char *));
  size_t m = 0, aborted = 0;
  for (size_t i = 0; i < r.n; i++) {
    char proc[64], epoch[32];
    tk_header(&r.m[i], "gj.proc", proc, sizeof(proc));
    tk_header(&r.m[i], "sluice.epoch", epoch, sizeof(epoch));
    int who = -1;
    for (int j = 0; j < n_names; j++)
      if (strcmp(proc, names[j]) == 0)
        who = j;
    ck_assert_msg(who >= 0 && epoch[0], "record without its headers: %s",
                  r.m[i].headers);
    long e = atol(epoch), hi = LONG_MAX;
    for (int b = 0; b < n_bound[who]; b++)
      if (bound[who][b] > e && bound[who][b] < hi)
        hi = bound[who][b];
    bool committed = false;
    for (int d = 0; d < n_done[who] && !committed; d++)
      committed = done[who][d] > e && done[who][d] < hi;
    if (!committed) {
      aborted++;
      continue;
    }
    got[m] = malloc(640);
    snprintf(got[m++], 640, "%s,%" PRId64 ",%s", r.m[i].key, r.m[i].ts,
             r.m[i].value);
  }
  fprintf(stderr, "%zu records read, %zu of them in aborted transactions\n",
          r.n, aborted);
  size_t n = 0;
  for (int s = 0; s < SECONDS; s++)
    for (int i = 0; i < KEYS; i++) {
      char key[64];
      key_of(i, key, sizeof(key));
      exp[n] = malloc(128);
      snprintf(exp[n++], 128, "%s,%d,%d", key, T0 + s * 1000 + 999, i % 3 + 1);
    }
  qsort(got, m, sizeof(char *), cmp_line);
  qsort(exp, n, sizeof(char *), cmp_line);
  for (size_t i = 0, j = 0; i < n || j < m;) {
    int d = i == n ? 1 : j == m ? -1 : strcmp(exp[i], got[j]);
    if (d)
      fprintf(stderr, "%s %s\n", d < 0 ? "missing" : "extra",
              d < 0 ? exp[i] : got[j]);
    i += d <= 0;
    j += d >= 0;
  }
  ck_assert_uint_eq(m, n);
  for (size_t i = 0; i < n; i++)
    ck_assert_str_eq(got[i], exp[i]);
  for (size_t i = 0; i < m; i++)
    free(got[i]);
  for (size_t i = 0; i < n; i++)
    free(exp[i]);
  free(got);
  free(exp);
  for (int i = 0; i < n_names; i++)
    free(done[i]);
  tk_reader_close(&r);
}

/* Waits until the process's log holds line (a part of one). */
static void wait_logged(const char *name, const char *line) {
  for (int i = 0; i < WAIT_MS / 50; i++) {
    char *text = log_of(name);
    bool found = strstr(text, line) != NULL;
    free(text);
    if (found)
      return;
    tk_sleep_ms(50);
  }
  ck_abort_msg("process %s never logged \"%s\"", name, line);
}

/* Restart resolution per task (DESIGN §8 in group mode): three processes
 * with an exactly_once sink; once everything so far is in complete
 * snapshots, c commits a transaction holding window output and dies
 * right after the commit, before _COMMITTED and before it points its
 * tasks at that checkpoint (group_job.c's GROUP_JOB_KILL_ARM: the fault
 * point checkpoint.commit). The survivors take its tasks, find the
 * checkpoint named pending in their pointers, see that its transaction
 * committed, and restore from it, not from the checkpoint before it,
 * whose records the committed output already holds: the committed output
 * is the one process's, every window once. */
START_TEST(killed_after_commit_before_pointers) {
  start_broker();
  exactly_once = true;
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  char arm[512];
  snprintf(arm, sizeof(arm), "%s/arm", dir);
  for (int i = 0; i < 3; i++) {
    if (i == 2)
      setenv("GROUP_JOB_KILL_ARM", arm, 1);
    p[i] = start_job_ck("copartitioned", "12", names[i], "hashmap");
  }
  unsetenv("GROUP_JOB_KILL_ARM");
  wait_assigned(names, 3, PARTS);
  produce_phase(0);
  wait_snapshotted();
  int had = status_of("c");
  ck_assert_int_gt(had, 0);
  FILE *f = fopen(arm, "w");
  ck_assert_ptr_nonnull(f);
  fclose(f);
  wait_logged("c", "group-job: armed at checkpoint ");
  produce_phase(1);
  int status = 0;
  ck_assert_int_eq(waitpid(p[2], &status, 0), p[2]);
  untrack(p[2]);
  char *text = log_of("c");
  ck_assert_msg(strstr(text, "group-job: output after the armed commit"), "%s",
                text);
  ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                "c did not die at the fault point: %s", text);
  free(text);
  wait_assigned(names, 2, PARTS);
  produce_phase(2);
  wait_snapshotted();
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  int resolved = 0;
  for (int i = 0; i < 2; i++) {
    text = log_of(names[i]);
    for (const char *l = text; (l = strstr(l, " committed: restoring from it"));
         l++)
      resolved++;
    free(text);
  }
  check_committed_output(names, 3);
  /* Each of c's tasks was restored from the checkpoint named pending. */
  ck_assert_int_eq(resolved, had);
  exactly_once = false;
  stop_broker();
}
END_TEST

/* The same scaling with an exactly_once sink: every handoff commits the
 * revoked tasks' output with their offsets before the partitions move,
 * and the committed output is the one process's, every window once. */
START_TEST(scale_1_3_2_exactly_once) {
  start_broker();
  exactly_once = true;
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  p[0] = start_job_ck("copartitioned", "12", "a", "hashmap");
  wait_assigned(names, 1, PARTS);
  produce_phase(0);
  wait_snapshotted();
  for (int i = 1; i < 3; i++)
    p[i] = start_job_ck("copartitioned", "12", names[i], "hashmap");
  wait_assigned(names, 3, PARTS);
  produce_phase(1);
  wait_snapshotted();
  stop_pid(p[2], SIGTERM, 0);
  wait_assigned(names, 2, PARTS);
  produce_phase(2);
  wait_snapshotted();
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  check_committed_output(names, 3);
  exactly_once = false;
  stop_broker();
}
END_TEST

/* Settings group mode cannot run with are refused by sl_job_new. */
static void refused(const char *const *kv, const char *want) {
  char err[512];
  sl_conf_t *conf = sl_conf_new();
  ck_assert_int_eq(
      sl_conf_set(conf, "group.mode", "copartitioned", err, sizeof(err)), 0);
  for (; kv[0]; kv += 2)
    ck_assert_int_eq(sl_conf_set(conf, kv[0], kv[1], err, sizeof(err)), 0);
  err[0] = '\0';
  sl_job_t *job = sl_job_new("group-job", conf, err, sizeof(err));
  ck_assert_ptr_null(job);
  ck_assert_msg(strstr(err, want), "%s", err);
  sl_conf_destroy(conf);
}

START_TEST(group_settings_are_checked) {
  const char *none[] = {NULL};
  refused(none, "group.mode=copartitioned needs group.partitions");
  const char *ckpt[] = {"group.partitions", "12", "restore.from", "latest",
                        NULL};
  refused(ckpt, "unset restore.from");
  const char *par[] = {"group.partitions", "2", "parallelism", "3", NULL};
  refused(par, "parallelism (3) must not exceed group.partitions (2)");
}
END_TEST

static int co_elem(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  return 0;
}

/* In repartition mode an operator that reads two key_by streams would be
 * one task made of partition N of two topics, which the group may give
 * to two processes: a clear error at start, before any broker is asked
 * (the bootstrap address is never dialled). */
START_TEST(two_key_bys_into_one_operator_is_an_error) {
  char err[512];
  sl_conf_t *conf = sl_conf_new();
  const char *kv[] = {"group.mode",
                      "repartition",
                      "group.partitions",
                      "4",
                      "kafka.bootstrap.servers",
                      "127.0.0.1:1",
                      NULL};
  for (int i = 0; kv[i]; i += 2)
    ck_assert_int_eq(sl_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err)), 0);
  sl_job_t *job = sl_job_new("two", conf, err, sizeof(err));
  ck_assert_msg(job != NULL, "%s", err);
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *a = sl_key_by(sl_source_kafka(job, "a", "a", &so), NULL, NULL);
  sl_stream_t *b = sl_key_by(sl_source_kafka(job, "b", "b", &so), NULL, NULL);
  sl_co_process_ops_t ops = {.on_element1 = co_elem, .on_element2 = co_elem};
  sl_stream_t *j = sl_co_process(a, b, "join", &ops, NULL);
  ck_assert_int_eq(sl_sink_kafka(j, "out", "out", NULL), 0);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  ck_assert_msg(
      strstr(sl_job_errmsg(job), "operator \"join\" reads two key_by streams"),
      "%s", sl_job_errmsg(job));
  sl_job_destroy(job);
}
END_TEST

START_TEST(murmur2_partition_is_kafkas) {
  /* librdkafka's murmur2 partitioner is the Java client's. */
  char err[512], key[64];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  ck_assert_ptr_nonnull(rk);
  rd_kafka_topic_t *t = rd_kafka_topic_new(rk, "t", NULL);
  for (int i = 0; i < 2000; i++) {
    size_t len = (size_t)snprintf(key, sizeof(key), "key-%d-%.*s", i, i % 13,
                                  "abcdefghijklm");
    for (int32_t parts = 1; parts <= 40; parts += 13)
      ck_assert_int_eq(
          (int32_t)sl__murmur2_partition(key, len, (uint32_t)parts),
          rd_kafka_msg_partitioner_murmur2(t, key, len, parts, NULL, NULL));
  }
  rd_kafka_topic_destroy(t);
  rd_kafka_destroy(rk);
}
END_TEST

/* The reference: one process, group mode off. */
START_TEST(one_process_without_group_mode) {
  start_broker();
  pid_t a = start_job("off", "0", "a");
  produce();
  check_output();
  stop_pid(a, SIGTERM, 0);
  stop_broker();
}
END_TEST

/* One process in group mode reads all 12 partitions and writes what the
 * job without group mode writes. */
START_TEST(one_process_in_group_mode) {
  start_broker();
  pid_t a = start_job("copartitioned", "12", "a");
  const char *names[] = {"a"};
  wait_assigned(names, 1, PARTS);
  produce();
  check_output();
  stop_pid(a, SIGTERM, 0);
  stop_broker();
}
END_TEST

/* Three processes share the 12 partitions (each reads some); together
 * they write exactly what one process writes. */
START_TEST(three_processes_share_the_partitions) {
  start_broker();
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job("copartitioned", "12", names[i]);
  wait_assigned(names, 3, PARTS);
  produce();
  check_output();
  for (int i = 0; i < 3; i++)
    stop_pid(p[i], SIGTERM, 0);
  stop_broker();
}
END_TEST

/* How many partitions of "in" the job's group committed offsets for
 * (*committed) and how many of those offsets are the partition's end. */
static int committed_of_in(int *committed) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bs, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", "sluice-group-job", NULL, 0);
  rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
  for (int p = 0; p < PARTS; p++)
    rd_kafka_topic_partition_list_add(l, "in", p);
  ck_assert_int_eq(rd_kafka_committed(rk, l, 10000), 0);
  int at_end = 0;
  *committed = 0;
  for (int p = 0; p < PARTS; p++) {
    if (l->elems[p].offset < 0)
      continue;
    int64_t lo, hi;
    ck_assert_int_eq(
        rd_kafka_query_watermark_offsets(rk, "in", p, &lo, &hi, 10000), 0);
    at_end += l->elems[p].offset == hi;
    (*committed)++;
  }
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  return at_end;
}

/* The partitions the job's group committed offsets for, each checked
 * against the partition's end: a member that leaves commits everything
 * it read of its partitions before they move. */
static int committed_at_end(void) {
  int committed, at_end = committed_of_in(&committed);
  ck_assert_int_eq(at_end, committed);
  return committed;
}

/* Waits until the group's offsets of every partition of "in" are at its
 * end: a partition that moves from now on is read again from there. */
static void wait_committed_at_end(void) {
  int committed;
  for (int i = 0; i < WAIT_MS / 100; i++) {
    if (committed_of_in(&committed) == PARTS)
      return;
    tk_sleep_ms(100);
  }
  ck_abort_msg("the group's offsets of \"in\" never reached its end");
}

/* Three processes, then one leaves on SIGTERM: it gives its partitions
 * back at once with everything it read committed, and the two others
 * take them over. */
START_TEST(sigterm_hands_partitions_over) {
  start_broker();
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job("copartitioned", "12", names[i]);
  wait_assigned(names, 3, PARTS);
  produce();
  check_output();
  int had = status_of("c");
  stop_pid(p[2], SIGTERM, 0);
  ck_assert_int_eq(status_of("c"), 0);
  ck_assert_int_eq(committed_at_end(), had);
  wait_assigned(names, 2, PARTS);
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  stop_broker();
}
END_TEST

/* A process that dies (SIGKILL) leaves its partitions to the survivor
 * once the group's session timeout (kafka.session.timeout.ms, 6 s in
 * group_job.c) noticed. */
START_TEST(killed_member_partitions_move_to_the_survivor) {
  start_broker();
  const char *names[] = {"a", "b"};
  pid_t a = start_job("copartitioned", "12", "a");
  pid_t b = start_job("copartitioned", "12", "b");
  wait_assigned(names, 2, PARTS);
  stop_pid(b, SIGKILL, -1);
  wait_assigned(names, 1, PARTS);
  stop_pid(a, SIGTERM, 0);
  stop_broker();
}
END_TEST

/* A declaration that does not match the topic is a clear error. */
START_TEST(wrong_partition_count_is_an_error) {
  start_broker();
  pid_t a = start_job("copartitioned", "8", "a");
  int status = 0;
  ck_assert_int_eq(waitpid(a, &status, 0), a);
  untrack(a);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 1);
  char path[512], msg[1024] = "";
  snprintf(path, sizeof(path), "%s/a.err", dir);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(msg, 1, sizeof(msg) - 1, f);
  msg[n] = '\0';
  fclose(f);
  ck_assert_msg(strstr(msg, "topic in has 12 partitions but "
                            "group.partitions declares 8"),
                "%s", msg);
  stop_broker();
}
END_TEST

/* ---- Repartition topic ----------------------------------------------------
 * group_job.c with GROUP_JOB_KEY_BY_VALUE keys by the value, which the
 * input's producer did not partition by: the key_by crosses processes
 * through the topic below (group.mode=repartition). */
#define REPART "group-job-count-repartition"

/* The events of produce()'s model with the key "user-<i>" in the value,
 * each message keyed by a counter and written round robin to the 12
 * partitions, so a key's events are spread over all of them. Returns how
 * many were written. */
static int64_t produce_unkeyed(void) {
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  rd_kafka_t *p = tk_producer(&c);
  char key[64], value[64];
  int64_t n = 0;
  for (int s = 0; s < SECONDS; s++)
    for (int i = 0; i < KEYS; i++)
      for (int j = 0; j <= i % 3; j++, n++) {
        snprintf(key, sizeof(key), "m-%" PRId64, n);
        key_of(i, value, sizeof(value));
        tk_send(p, "in", (int32_t)(n % PARTS), key, value,
                T0 + s * 1000 + j * 10, NULL, NULL);
      }
  tk_flush(p);
  rd_kafka_destroy(p);
  return n;
}

/* The events of produce_unkeyed() of one phase (phase_of), each at the
 * partition and with the message key it has there. Returns how many. */
static int64_t produce_unkeyed_phase(int phase) {
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  rd_kafka_t *p = tk_producer(&c);
  char key[64], value[64];
  int64_t n = 0, sent = 0;
  for (int s = 0; s < SECONDS; s++)
    for (int i = 0; i < KEYS; i++)
      for (int j = 0; j <= i % 3; j++, n++) {
        if (phase_of(s, j) != phase)
          continue;
        snprintf(key, sizeof(key), "m-%" PRId64, n);
        key_of(i, value, sizeof(value));
        tk_send(p, in_topic, (int32_t)(n % PARTS), key, value,
                T0 + s * 1000 + j * 10, NULL, NULL);
        sent++;
      }
  tk_flush(p);
  rd_kafka_destroy(p);
  return sent;
}

/* How often each event (key i, second s, j-th of the second) is in the
 * repartition topic; returns how many distinct events are. */
static int64_t repartition_copies(int copies[KEYS][SECONDS][3]) {
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  tk_reader r;
  tk_reader_open(&r, &c, repart_topic, PARTS);
  for (size_t was = (size_t)-1; was != r.n;) {
    was = r.n;
    tk_read(&r, r.n + 1, 2000);
  }
  memset(copies, 0, sizeof(int) * KEYS * SECONDS * 3);
  int64_t distinct = 0;
  for (size_t k = 0; k < r.n; k++) {
    int i, off = (int)(r.m[k].ts - T0);
    if (sscanf(r.m[k].key, "user-%d", &i) != 1)
      continue; /* a flush record */
    int s = off / 1000, j = off % 1000 / 10;
    ck_assert_msg(i >= 0 && i < KEYS && s >= 0 && s < SECONDS && j <= i % 3,
                  "unexpected record %s at %" PRId64, r.m[k].key, r.m[k].ts);
    distinct += copies[i][s][j]++ == 0;
  }
  tk_reader_close(&r);
  return distinct;
}

/* Messages in topic, over its PARTS partitions. */
static int64_t messages_in(const char *topic) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bs, NULL, 0);
  rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  int64_t sum = 0;
  for (int p = 0; p < PARTS; p++) {
    int64_t lo, hi;
    ck_assert_int_eq(
        rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000), 0);
    sum += hi;
  }
  rd_kafka_destroy(rk);
  return sum;
}

/* Messages in the repartition topic. */
static int64_t repartitioned(void) {
  return messages_in(REPART);
}

/* Once every event is in the repartition topic: one record at 100 s for
 * each of its partitions (a value whose murmur2 partition it is), which
 * moves every task's watermark past every window without firing its
 * own. Records read back from one partition come from all input
 * partitions in any order, so the flush must come after all of them. */
static void flush_repartitioned(int64_t events) {
  for (int i = 0; i < WAIT_MS / 50 && repartitioned() < events; i++)
    tk_sleep_ms(50);
  ck_assert_int_eq(repartitioned(), events);
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  rd_kafka_t *p = tk_producer(&c);
  char value[64];
  for (int32_t part = 0; part < PARTS; part++) {
    flush_key(part, value, sizeof(value));
    tk_send(p, in_topic, part, "flush", value, 100000, NULL, NULL);
  }
  tk_flush(p);
  rd_kafka_destroy(p);
}

/* Three processes (with backend: checkpointing into the shared store,
 * process b with two workers) of the job keyed by the value: the input
 * is not partitioned by that key, the key change crosses processes
 * through the repartition topic, whose partitions are the tasks, and the
 * output is exactly the one process's (the model of check_output). */
static void key_change_through_repartition(const char *backend) {
  /* librdkafka 2.0's mock cluster does not create topics through the
   * admin API: the tool creates it, as docs/scaling.md says. */
  start_broker_with(REPART ":12");
  setenv("GROUP_JOB_KEY_BY_VALUE", "1", 1);
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job_ck("repartition", "12", names[i], backend);
  unsetenv("GROUP_JOB_KEY_BY_VALUE");
  wait_assigned(names, 3, PARTS);
  wait_assigned_source(names, 3, PARTS, "count-repartition");
  flush_repartitioned(produce_unkeyed());
  check_output();
  for (int i = 0; i < 3; i++)
    stop_pid(p[i], SIGTERM, 0);
  stop_broker();
}

START_TEST(key_change_through_repartition_topic) {
  key_change_through_repartition(NULL);
}
END_TEST

START_TEST(key_change_through_repartition_topic_with_store) {
  key_change_through_repartition("hashmap");
}
END_TEST

/* Three processes of the job keyed by the value, with the shared store;
 * once the first part of the input is in complete snapshots, the second
 * part is written and one process is SIGKILLed while it works on it. The
 * survivors take its tasks (the repartition topic's partitions) and its
 * partitions of the input. At least once: the input it read after its
 * last committed positions is read again and written to the repartition
 * topic a second time, and windows count those copies (docs/scaling.md);
 * nothing is lost. So the output has every window once, and its count is
 * the number of copies of its events in the repartition topic, which is
 * the one process's count where nothing was copied twice. */
START_TEST(killed_member_through_repartition_topic) {
  start_broker_with(REPART ":12");
  setenv("GROUP_JOB_KEY_BY_VALUE", "1", 1);
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job_ck("repartition", "12", names[i], "hashmap");
  unsetenv("GROUP_JOB_KEY_BY_VALUE");
  wait_assigned(names, 3, PARTS);
  wait_assigned_source(names, 3, PARTS, "count-repartition");
  int64_t events = produce_unkeyed_phase(0);
  for (int i = 0; i < WAIT_MS / 50 && repartitioned() < events; i++)
    tk_sleep_ms(50);
  wait_snapshotted_of(REPART);
  ck_assert_int_gt(status_of("c"), 0);
  /* Killed once the second part is in the repartition topic: the input
   * positions that cover it are committed at the next checkpoint, which
   * c may not live to complete. */
  events += produce_unkeyed_phase(1);
  for (int i = 0; i < WAIT_MS / 10 && repartitioned() < events; i++)
    tk_sleep_ms(10);
  stop_pid(p[2], SIGKILL, -1);
  wait_assigned(names, 2, PARTS);
  wait_assigned_source(names, 2, PARTS, "count-repartition");
  events += produce_unkeyed_phase(2);
  static int copies[KEYS][SECONDS][3];
  int64_t distinct = 0;
  for (int i = 0; i < WAIT_MS / 500 && distinct < events; i++)
    distinct = repartition_copies(copies);
  ck_assert_int_eq(distinct, events);
  /* A member can lose its partitions in a rebalance (the dev broker
   * expires one that rejoins late) and its successor reads them again
   * from the group's offsets: copies written after the flush would come
   * after the watermark and count nowhere, as in Flink (late), so the
   * flush waits until nothing before it can be read again. */
  wait_committed_at_end();
  flush_repartitioned(repartitioned());
  enum { WANT = KEYS * SECONDS };
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  tk_reader r;
  tk_reader_open(&r, &c, "out", 1);
  tk_read(&r, WANT, WAIT_MS);
  for (size_t was = 0; was != r.n;) {
    was = r.n;
    tk_read(&r, r.n + 1, 3000);
  }
  /* The copies again: all of them are in the topic before the flush. */
  ck_assert_int_eq(repartition_copies(copies), events);
  char **got = calloc(r.n + 1, sizeof(char *));
  char **exp = calloc(WANT, sizeof(char *));
  int twice = 0;
  for (size_t k = 0; k < r.n; k++) {
    got[k] = malloc(640);
    snprintf(got[k], 640, "%s,%" PRId64 ",%s", r.m[k].key, r.m[k].ts,
             r.m[k].value);
  }
  size_t n = 0;
  for (int s = 0; s < SECONDS; s++)
    for (int i = 0; i < KEYS; i++) {
      char key[64];
      int count = 0;
      for (int j = 0; j <= i % 3; j++) {
        count += copies[i][s][j];
        twice += copies[i][s][j] - 1;
      }
      key_of(i, key, sizeof(key));
      exp[n] = malloc(128);
      snprintf(exp[n++], 128, "%s,%d,%d", key, T0 + s * 1000 + 999, count);
    }
  fprintf(stderr, "%d event(s) written to the repartition topic twice\n",
          twice);
  qsort(got, r.n, sizeof(char *), cmp_line);
  qsort(exp, n, sizeof(char *), cmp_line);
  assert_same_lines(got, r.n, exp, n);
  tk_reader_close(&r);
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  stop_broker();
}
END_TEST

/* ---- Exactly-once through the repartition topic ---------------------------
 * With an exactly_once sink the repartition topic is written in the
 * transactions of the checkpoints, with the upstream sources' offsets,
 * and read back read_committed (docs/scaling.md). The dev broker drops
 * offsets sent with a transaction and neither delays nor filters what a
 * read_committed consumer reads, so these runs have no failure: what they
 * show is that a failure-free run and graceful handoffs give the model's
 * committed output, that nothing is written to the repartition topic
 * twice, that its records belong to transactions, and that no offset is
 * committed outside one. */

/* Every record of the repartition topic belongs to a transaction: it
 * carries the epoch (sluice.epoch) that the exactly-once writer gives
 * it. Returns how many there are. */
static size_t repartitioned_in_transactions(void) {
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  tk_reader r;
  tk_reader_open(&r, &c, REPART, PARTS);
  for (size_t was = (size_t)-1; was != r.n;) {
    was = r.n;
    tk_read(&r, r.n + 1, 2000);
  }
  size_t plain = 0;
  for (size_t i = 0; i < r.n; i++) {
    char epoch[32];
    plain += !tk_header(&r.m[i], "sluice.epoch", epoch, sizeof(epoch))[0];
  }
  size_t n = r.n;
  tk_reader_close(&r);
  ck_assert_msg(plain == 0,
                "%zu of %zu repartition records outside a transaction", plain,
                n);
  return n;
}

/* The offsets the job's group committed for the input topic outside a
 * transaction: on the dev broker, which drops those sent with one, none
 * may be there once the processes stopped. */
static void assert_no_plain_commits(void) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bs, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", "sluice-group-job", NULL, 0);
  rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
  for (int p = 0; p < PARTS; p++)
    rd_kafka_topic_partition_list_add(l, "in", p);
  ck_assert_int_eq(rd_kafka_committed(rk, l, 10000), 0);
  int committed = 0;
  for (int p = 0; p < PARTS; p++) {
    if (l->elems[p].offset >= 0)
      fprintf(stderr, "in[%d]: committed %" PRId64 " outside a transaction\n",
              p, l->elems[p].offset);
    committed += l->elems[p].offset >= 0;
  }
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  ck_assert_int_eq(committed, 0);
}

/* Waits until n events are in the repartition topic. */
static void wait_repartitioned(int64_t n) {
  for (int i = 0; i < WAIT_MS / 50 && repartitioned() < n; i++)
    tk_sleep_ms(50);
  ck_assert_int_eq(repartitioned(), n);
}

/* Three processes of the job keyed by the value with an exactly_once
 * sink and the shared store (b with two workers), no failure: the
 * committed output is exactly the one process's, the repartition topic
 * holds every event once, in transactions. */
START_TEST(repartition_exactly_once) {
  start_broker_with(REPART ":12");
  exactly_once = true;
  setenv("GROUP_JOB_KEY_BY_VALUE", "1", 1);
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job_ck("repartition", "12", names[i], "hashmap");
  unsetenv("GROUP_JOB_KEY_BY_VALUE");
  wait_assigned(names, 3, PARTS);
  wait_assigned_source(names, 3, PARTS, "count-repartition");
  int64_t events = produce_unkeyed();
  flush_repartitioned(events);
  wait_repartitioned(events + PARTS);
  wait_snapshotted_of(REPART);
  for (int i = 0; i < 3; i++)
    stop_pid(p[i], SIGTERM, 0);
  check_committed_output(names, 3);
  assert_no_plain_commits();
  ck_assert_uint_eq(repartitioned_in_transactions(), (size_t)events + PARTS);
  exactly_once = false;
  stop_broker();
}
END_TEST

/* The scaling of scale_1_3_2 through the repartition topic with an
 * exactly_once sink: one process, then three (the input's partitions and
 * the tasks move to the newcomers: each revoked input partition is kept
 * until a transaction carried its offset, and its new owner starts
 * there), then two (SIGTERM). Nothing is written to the repartition
 * topic twice, and the committed output is the one process's, every
 * window once. */
START_TEST(scale_through_repartition_exactly_once) {
  start_broker_with(REPART ":12");
  exactly_once = true;
  setenv("GROUP_JOB_KEY_BY_VALUE", "1", 1);
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  p[0] = start_job_ck("repartition", "12", "a", "hashmap");
  wait_assigned(names, 1, PARTS);
  wait_assigned_source(names, 1, PARTS, "count-repartition");
  int64_t events = produce_unkeyed_phase(0);
  wait_repartitioned(events);
  wait_snapshotted_of(REPART);
  for (int i = 1; i < 3; i++)
    p[i] = start_job_ck("repartition", "12", names[i], "hashmap");
  wait_assigned(names, 3, PARTS);
  wait_assigned_source(names, 3, PARTS, "count-repartition");
  events += produce_unkeyed_phase(1);
  wait_repartitioned(events);
  wait_snapshotted_of(REPART);
  stop_pid(p[2], SIGTERM, 0);
  wait_assigned(names, 2, PARTS);
  wait_assigned_source(names, 2, PARTS, "count-repartition");
  events += produce_unkeyed_phase(2);
  flush_repartitioned(events);
  wait_repartitioned(events + PARTS);
  wait_snapshotted_of(REPART);
  unsetenv("GROUP_JOB_KEY_BY_VALUE");
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  check_committed_output(names, 3);
  ck_assert_uint_eq(repartitioned_in_transactions(), (size_t)events + PARTS);
  assert_no_plain_commits();
  exactly_once = false;
  stop_broker();
}
END_TEST

/* The instance directory (in the store, "instances/<host>-<pid>-<start>")
 * process pid writes into now: the newest of its own, after a revival. */
static void instance_of(pid_t pid, char *out, size_t cap) {
  char insts[512], pat[64];
  snprintf(insts, sizeof(insts), "%s/ckpt/instances", dir);
  snprintf(pat, sizeof(pat), "-%ld-", (long)pid);
  out[0] = '\0';
  long long newest = -1;
  DIR *d = opendir(insts);
  ck_assert_ptr_nonnull(d);
  for (struct dirent *e; (e = readdir(d));) {
    const char *at = strstr(e->d_name, pat);
    long long start = at ? strtoll(at + strlen(pat), NULL, 10) : -1;
    if (at && start > newest) {
      newest = start;
      snprintf(out, cap, "instances/%s", e->d_name);
    }
  }
  closedir(d);
  ck_assert_msg(out[0], "process %ld has no instance in the store", (long)pid);
}

/* How many task pointers of topic name a checkpoint of instance inst. */
static int pointers_naming(const char *topic, const char *inst) {
  int n = 0;
  size_t len = strlen(inst);
  for (int part = 0; part < PARTS; part++) {
    char chk[512];
    pointer_checkpoint(topic, part, chk, sizeof(chk));
    n += strncmp(chk, inst, len) == 0 && chk[len] == '/';
  }
  return n;
}

/* Waits until no task pointer of topic names a checkpoint of inst: the
 * instance's tasks were taken over and snapshotted by others. */
static void wait_pointers_left(const char *topic, const char *inst) {
  for (int i = 0; i < WAIT_MS / 50 && pointers_naming(topic, inst); i++)
    tk_sleep_ms(50);
  ck_assert_int_eq(pointers_naming(topic, inst), 0);
}

/* The highest checkpoint the log's text before its n-th revival line
 * (n = 1: the first; 0: the whole log) says completed or committed. */
static long completed_before_revival(const char *name, int n) {
  char *text = log_of(name);
  char *cut = NULL;
  for (int i = 0; i < n; i++) {
    cut = strstr(cut ? cut + 1 : text, REVIVED);
    ck_assert_msg(cut, "process %s logged no revival %d", name, i + 1);
  }
  if (cut)
    *cut = '\0';
  long last = 0;
  for (const char *p = text; (p = strstr(p, "checkpoint ")); p++) {
    char *end;
    long id = strtol(p + 11, &end, 10);
    if (end != p + 11 &&
        (strncmp(end, " completed in ", 14) == 0 ||
         strncmp(end, " committed\n", 11) == 0) &&
        id > last)
      last = id;
  }
  free(text);
  return last;
}

/* Whether thread tid of process pid is stopped: its state in /proc is
 * 'T'. */
static bool thread_stopped(pid_t pid, const char *tid) {
  char path[300], stat[512];
  snprintf(path, sizeof(path), "/proc/%ld/task/%s/stat", (long)pid, tid);
  FILE *f = fopen(path, "r");
  if (!f)
    return true; /* it ended */
  size_t n = fread(stat, 1, sizeof(stat) - 1, f);
  fclose(f);
  stat[n] = '\0';
  const char *st = strrchr(stat, ')');
  return st && st[1] == ' ' && st[2] == 'T';
}

/* Waits until process pid is stopped (a SIGSTOP took hold of every one
 * of its threads: one still running may yet write a line to its log). */
static void wait_stopped(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%ld/task", (long)pid);
  for (int i = 0; i < WAIT_MS / 10; i++) {
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    bool all = true;
    for (struct dirent *e; all && (e = readdir(d));)
      if (e->d_name[0] != '.')
        all = thread_stopped(pid, e->d_name);
    closedir(d);
    if (all)
      return;
    tk_sleep_ms(10);
  }
  ck_abort_msg("process %ld never stopped", (long)pid);
}

/* Whether the pointers of topic that name a checkpoint of instance inst
 * are at rest after its checkpoint id: each names inst/chk-<id>, none a
 * pending one, and there are want of them (the tasks it owns). */
static bool pointers_at_rest(const char *topic, const char *inst, long id,
                             int want) {
  char chk[600];
  snprintf(chk, sizeof(chk), "%s/chk-%ld", inst, id);
  size_t il = strlen(inst);
  int n = 0;
  for (int part = 0; part < PARTS; part++) {
    sl__task_ptr p;
    if (!pointer_of(topic, part, &p))
      continue;
    if (strncmp(p.checkpoint, inst, il) || p.checkpoint[il] != '/')
      continue; /* another instance's */
    if (p.pending[0] || strcmp(p.checkpoint, chk))
      return false;
    n++;
  }
  return n == want;
}

/* Stops process pid (SIGSTOP) between two of its commits: once a
 * checkpoint completed after the call and the tasks' pointers (of topic,
 * in instance inst) name it, the commit after it is a checkpoint
 * interval (200 ms) away. A stop inside a commit's last request, or
 * while it writes its pointers, is the gap no self-check can see on the
 * dev broker (docs/scaling.md); one that landed there (the stopped
 * process's pointers not at rest) is undone and tried again. Returns
 * once
 * every thread of it is stopped. */
static void stop_between_commits(pid_t pid, const char *name, const char *topic,
                                 const char *src, const char *inst) {
  int owns = status_of_source(name, src);
  ck_assert_int_gt(owns, 0);
  for (int tries = 0;; tries++) {
    ck_assert_int_lt(tries, 20);
    long after = completed_before_revival(name, 0), id = after;
    for (int i = 0; i < WAIT_MS &&
                    (id == after || !pointers_at_rest(topic, inst, id, owns));
         i++) {
      tk_sleep_ms(1);
      id = completed_before_revival(name, 0);
    }
    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    wait_stopped(pid);
    if (completed_before_revival(name, 0) == id &&
        status_of_source(name, src) == owns &&
        pointers_at_rest(topic, inst, id, owns))
      return;
    ck_assert_int_eq(kill(pid, SIGCONT), 0);
  }
}

/* Exactly-once across processes: three processes with an exactly_once
 * sink; once everything produced so far is in complete snapshots, c is
 * stopped (SIGSTOP, between two of its commits) until the group's session
 * timeout gave its tasks to the others, which restore them and process what is
 * produced meanwhile. Resumed, c must see that it lost its partitions before it
 * commits anything: it is fenced, aborts its transaction and writes no pointer
 * for the tasks it lost. Then (stops within group.revive.max) it
 * revives: it drops its tasks, rejoins the group as a new member, takes
 * tasks again from the others, restored from their pointers, and runs
 * on; or (one stop more, GROUP_JOB_REVIVE_MAX=1 and a second stop) it
 * fails with a fenced: message as a process that cannot revive does.
 * Either way the committed output is the one process's, every window
 * exactly once, and every process but a failed one exits 0 on SIGTERM.
 * through: the same through the repartition topic (the job keyed by
 * the value); c's input partitions move too. */
static void stop_resume(pid_t *p, const char *const *names, const char *topic,
                        int64_t *events, int stop, bool revives) {
  bool through = events != NULL;
  const char *src = through ? "count-repartition" : "in";
  ck_assert_int_gt(status_of_source("c", src), 0);
  char inst[512];
  instance_of(p[2], inst, sizeof(inst));
  /* Not inside a rebalance: in the middle of the assignor's rounds c
   * takes tasks in and out, and its tasks are never at rest. */
  wait_balanced(names, 3, PARTS, src);
  stop_between_commits(p[2], "c", topic, src, inst);
  /* What it completed before the stop took hold. */
  long before = completed_before_revival("c", 0);
  wait_assigned(names, 2, PARTS);
  if (through)
    wait_assigned_source(names, 2, PARTS, src);
  if (through) {
    *events += produce_unkeyed_phase(2);
    flush_repartitioned(*events);
    wait_repartitioned(*events + PARTS);
  } else if (stop == 1) {
    produce_phase(2);
  }
  wait_snapshotted_of(topic);
  wait_pointers_left(topic, inst);
  ck_assert_int_eq(kill(p[2], SIGCONT), 0);
  if (revives) {
    char line[64];
    snprintf(line, sizeof(line), "revived (%d of", stop);
    wait_logged("c", line);
    /* The run it was fenced in committed nothing after the stop. */
    ck_assert_int_eq(completed_before_revival("c", stop), before);
    /* It takes tasks again (and input partitions) from the others: it
     * joins as a new member, which takes the cooperative assignor
     * several rounds, and the dev broker (librdkafka's mock) ends a
     * round that a join began only after session.timeout.ms - 1 s, 5 s
     * here: 17 to 20 s in all in 50 runs, and a CI run failed as a 60 s
     * wait begun here would have. */
    wait_assigned_source_ms(names, 3, PARTS, "in", REJOIN_MS);
    if (through)
      wait_assigned_source_ms(names, 3, PARTS, src, REJOIN_MS);
    wait_snapshotted_of(topic);
  } else {
    int status = 0;
    pid_t w = 0;
    for (int i = 0; i < 600 && w == 0; i++) {
      w = waitpid(p[2], &status, WNOHANG);
      if (w == 0)
        tk_sleep_ms(50);
    }
    ck_assert_msg(w == p[2], "the resumed process did not fail");
    untrack(p[2]);
    p[2] = 0;
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 1);
    char *text = log_of("c");
    ck_assert_msg(strstr(text, "fenced, not reviving: 1 revival(s)"), "%s",
                  text);
    free(text);
  }
  /* The fenced run pointed none of its tasks back at its checkpoints. */
  ck_assert_int_eq(pointers_naming(topic, inst), 0);
  char *text = log_of("c");
  const char *fence = strstr(text, "fenced: ");
  ck_assert_msg(fence, "%s", text);
  while (fence > text && fence[-1] != '\n')
    fence--;
  fprintf(stderr, "%.*s\n", (int)strcspn(fence, "\n"), fence);
  /* Whether its sources asked the group first (what a fetcher handed
   * over before the consumer noticed the lost session is dropped). */
  for (const char *a = text; (a = strstr(a, "after a pause of")); a++) {
    const char *l = a;
    while (l > text && l[-1] != '\n')
      l--;
    fprintf(stderr, "%.*s\n", (int)strcspn(l, "\n"), l);
  }
  free(text);
}

/* Stops every process still running with SIGTERM (each exits 0) and
 * checks the committed output. */
static void stop_all_and_check(pid_t *p, const char *const *names) {
  for (int i = 0; i < 3; i++)
    if (p[i])
      stop_pid(p[i], SIGTERM, 0);
  check_committed_output(names, 3);
}

static void stopped_member_revives(const char *backend) {
  start_broker();
  exactly_once = true;
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job_ck("copartitioned", "12", names[i], backend);
  wait_assigned(names, 3, PARTS);
  produce_phase(0);
  produce_phase(1);
  wait_snapshotted();
  stop_resume(p, names, "in", NULL, 1, true);
  stop_all_and_check(p, names);
  exactly_once = false;
  stop_broker();
}

START_TEST(stopped_member_revives_hashmap) {
  stopped_member_revives("hashmap");
}
END_TEST

START_TEST(stopped_member_revives_rocksdb) {
  stopped_member_revives("rocksdb");
}
END_TEST

/* A process stopped in the one place its own questions to the group
 * cannot cover: between the last question and a task pointer it writes
 * (the fault point `point` stops it at its hit-th pass: "task.publish",
 * pointing a task at a completed checkpoint; "task.prepare", naming the
 * next one pending before its commit). It stays stopped until the
 * others took its tasks and pointed each at a checkpoint of their own.
 * Resumed, it must not write the pointer: the write is a compare-and-swap
 * that finds the pointer rewritten, so the process is fenced and revives.
 * Sampled every 2 ms from its resumption to its revival, no pointer names
 * a checkpoint of its instance (without the compare, the one it was
 * writing names one until its new owner's next checkpoint), and the
 * committed output is the one process's. */
static void stopped_before_a_pointer(const char *point, int hit) {
  start_broker();
  exactly_once = true;
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  char spec[64];
  snprintf(spec, sizeof(spec), "%s:stop:%d", point, hit);
  for (int i = 0; i < 3; i++) {
    if (i == 2)
      setenv("SLUICE_FAULT", spec, 1);
    p[i] = start_job_ck("copartitioned", "12", names[i], "hashmap");
  }
  unsetenv("SLUICE_FAULT");
  produce_phase(0);
  produce_phase(1);
  wait_stopped(p[2]);
  char inst[512];
  instance_of(p[2], inst, sizeof(inst));
  wait_assigned(names, 2, PARTS);
  produce_phase(2);
  wait_snapshotted();
  wait_pointers_left("in", inst);
  ck_assert_int_eq(kill(p[2], SIGCONT), 0);
  int samples = 0;
  for (;; samples++) {
    ck_assert_int_lt(samples, WAIT_MS / 2);
    ck_assert_msg(pointers_naming("in", inst) == 0,
                  "the resumed process pointed a task it lost at its own "
                  "checkpoint");
    char *text = log_of("c");
    bool revived = strstr(text, "revived (1 of") != NULL;
    free(text);
    if (revived)
      break;
    tk_sleep_ms(2);
  }
  char *text = log_of("c");
  const char *fence = strstr(text, "its pointer was rewritten");
  ck_assert_msg(fence, "%s", text);
  free(text);
  wait_assigned_source_ms(names, 3, PARTS, "in", REJOIN_MS);
  wait_snapshotted();
  stop_all_and_check(p, names);
  exactly_once = false;
  stop_broker();
}

START_TEST(stopped_before_a_pointer_after_completion) {
  stopped_before_a_pointer("task.publish", 20);
}
END_TEST

START_TEST(stopped_before_a_pending_pointer) {
  stopped_before_a_pointer("task.prepare", 20);
}
END_TEST

/* The bound: with group.revive.max=1 the first fence is survived and
 * the second, within group.revive.interval.ms, fails c as before. */
START_TEST(revivals_beyond_the_limit_fail) {
  start_broker();
  exactly_once = true;
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) {
    if (i == 2)
      setenv("GROUP_JOB_REVIVE_MAX", "1", 1);
    p[i] = start_job_ck("copartitioned", "12", names[i], "hashmap");
  }
  unsetenv("GROUP_JOB_REVIVE_MAX");
  wait_assigned(names, 3, PARTS);
  produce_phase(0);
  produce_phase(1);
  wait_snapshotted();
  stop_resume(p, names, "in", NULL, 1, true);
  stop_resume(p, names, "in", NULL, 2, false);
  stop_all_and_check(p, names);
  exactly_once = false;
  stop_broker();
}
END_TEST

/* stopped_member_revives through the repartition topic: c, stopped
 * with SIGSTOP once everything so far is committed and in complete
 * snapshots (its open transaction holds nothing, which the dev broker
 * would not filter), loses its input partitions and its tasks to the
 * others; resumed, it must not commit what it read of either: it is
 * fenced, and revives. No task points at the checkpoints of its fenced
 * run, nothing was committed outside a transaction, the repartition
 * topic holds every event once, and the committed output is the one
 * process's. */
START_TEST(stopped_member_through_repartition_revives) {
  start_broker_with(REPART ":12");
  exactly_once = true;
  setenv("GROUP_JOB_KEY_BY_VALUE", "1", 1);
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job_ck("repartition", "12", names[i], "hashmap");
  unsetenv("GROUP_JOB_KEY_BY_VALUE");
  wait_assigned(names, 3, PARTS);
  wait_assigned_source(names, 3, PARTS, "count-repartition");
  int64_t events = produce_unkeyed_phase(0);
  events += produce_unkeyed_phase(1);
  wait_repartitioned(events);
  wait_snapshotted_of(REPART);
  ck_assert_int_gt(status_of("c"), 0);
  stop_resume(p, names, REPART, &events, 1, true);
  stop_all_and_check(p, names);
  assert_no_plain_commits();
  ck_assert_uint_eq(repartitioned_in_transactions(), (size_t)events + PARTS);
  exactly_once = false;
  stop_broker();
}
END_TEST

/* ---- SIGKILL through an exactly-once repartition topic: a real broker ---
 * The dev broker lets a read_committed consumer read the records of a
 * transaction that never commits, so the keyed stage there counts what a
 * killed process wrote into the repartition topic after its last commit,
 * and again what its upstream partitions' new owners write. This case
 * runs only with SLUICE_TEST_KAFKA=host:port (a broker with transactions;
 * its topics, named after the time, are left behind). */

/* Creates topic with parts partitions on the broker bs names, unless it
 * exists. */
static void create_topic(const char *topic, int parts) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bs, NULL, 0);
  rd_kafka_conf_set(conf, "allow.auto.create.topics", "false", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  const struct rd_kafka_metadata *md = NULL;
  bool exists = !rd_kafka_metadata(rk, 0, rkt, &md, 10000) &&
                md->topic_cnt == 1 && !md->topics[0].err &&
                md->topics[0].partition_cnt == parts;
  if (md)
    rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  if (exists) {
    rd_kafka_destroy(rk);
    return;
  }
  rd_kafka_NewTopic_t *nt =
      rd_kafka_NewTopic_new(topic, parts, -1, err, sizeof(err));
  ck_assert_msg(nt != NULL, "%s", err);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
  ck_assert_msg(ev && !rd_kafka_event_error(ev), "creating %s: %s", topic,
                ev ? rd_kafka_event_error_string(ev) : "no answer");
  size_t n = 0;
  const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(
      rd_kafka_event_CreateTopics_result(ev), &n);
  ck_assert_msg(n == 1 && !rd_kafka_topic_result_error(tr[0]),
                "creating %s: %s", topic,
                n ? rd_kafka_topic_result_error_string(tr[0]) : "no result");
  rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  rd_kafka_destroy(rk);
}

/* The committed records of the repartition topic (a read_committed
 * reader): how often each event is there (repartition_copies), and per
 * partition the offset after its last record, which a task's pointer
 * reaches once the task processed it (commit markers come after). */
static int64_t committed_repartitioned(int copies[KEYS][SECONDS][3],
                                       int64_t ends[PARTS]) {
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  tk_reader r;
  tk_reader_open(&r, &c, repart_topic, PARTS);
  for (size_t was = (size_t)-1; was != r.n;) {
    was = r.n;
    tk_read(&r, r.n + 1, 3000);
  }
  for (int p = 0; p < PARTS; p++)
    ends[p] = 0;
  for (size_t k = 0; k < r.n; k++)
    if (r.m[k].offset + 1 > ends[r.m[k].partition])
      ends[r.m[k].partition] = r.m[k].offset + 1;
  tk_reader_close(&r);
  return repartition_copies(copies);
}

/* Waits until the committed repartition topic holds n distinct events
 * (wait_ms at most) and every task's pointer is past its records. */
static void wait_committed_and_processed(int64_t n, int wait_ms) {
  static int copies[KEYS][SECONDS][3];
  int64_t ends[PARTS], distinct = 0;
  for (int i = 0; i < wait_ms / 500 && distinct < n; i++) {
    distinct = committed_repartitioned(copies, ends);
    if (distinct < n)
      tk_sleep_ms(500);
  }
  ck_assert_int_eq(distinct, n);
  for (int i = 0; i < wait_ms / 50; i++) {
    int done = 0;
    for (int p = 0; p < PARTS; p++)
      done += pointer_offset(REPART, p) >= ends[p];
    if (done == PARTS)
      return;
    tk_sleep_ms(50);
  }
  ck_abort_msg("the tasks never processed the committed repartition topic");
}

/* Three processes with an exactly_once sink through the repartition
 * topic; once the first part of the input is committed into it and
 * processed, the second is written and c is SIGKILLed while it works on
 * it. The broker aborts c's open transaction; the survivors take c's
 * input partitions from the offsets of its last committed transaction
 * and its tasks from their pointers, reading only committed repartition
 * records. So the committed repartition topic holds every event exactly
 * once, and the committed output is the one process's, every window once
 * with its exact count. */
START_TEST(kill_through_repartition_exactly_once) {
  const char *real = getenv("SLUICE_TEST_KAFKA");
  if (!real || !*real) {
    fprintf(stderr, "kill_through_repartition_exactly_once: SKIPPED: set "
                    "SLUICE_TEST_KAFKA=host:port to run it against a real "
                    "broker\n");
    return;
  }
  char cmd[300], job[48], in[64], out[64], rep[128];
  snprintf(dir, sizeof(dir), "/tmp/sluice-group-test-%ld", (long)getpid());
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
  mkdir(dir, 0700);
  snprintf(bs, sizeof(bs), "%s", real);
  /* GROUP_TEST_STAMP: names of topics created beforehand. */
  const char *st = getenv("GROUP_TEST_STAMP");
  long stamp = st ? atol(st) : (long)time(NULL);
  snprintf(job, sizeof(job), "sluice-gj-%ld", stamp);
  snprintf(in, sizeof(in), "%s-in", job);
  snprintf(out, sizeof(out), "%s-out", job);
  snprintf(rep, sizeof(rep), "%s-count-repartition", job);
  in_topic = in;
  out_topic = out;
  repart_topic = rep;
  create_topic(in, PARTS);
  create_topic(out, 1);
  setenv("GROUP_JOB_REAL_BROKER", "1", 1);
  setenv("GROUP_JOB_NAME", job, 1);
  setenv("GROUP_JOB_IN", in, 1);
  setenv("GROUP_JOB_OUT", out, 1);
  setenv("GROUP_JOB_KEY_BY_VALUE", "1", 1);
  exactly_once = true;
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++)
    p[i] = start_job_ck("repartition", "12", names[i], "hashmap");
  wait_assigned(names, 3, PARTS);
  wait_assigned_source(names, 3, PARTS, "count-repartition");
  int64_t events = produce_unkeyed_phase(0);
  wait_committed_and_processed(events, WAIT_MS);
  ck_assert_int_gt(status_of("c"), 0);
  /* Killed once the second part is being written: c's transaction then
   * holds repartition records, and output, that must never count. */
  events += produce_unkeyed_phase(1);
  tk_sleep_ms(300);
  stop_pid(p[2], SIGKILL, -1);
  wait_assigned(names, 2, PARTS);
  wait_assigned_source(names, 2, PARTS, "count-repartition");
  events += produce_unkeyed_phase(2);
  /* Each event committed into the repartition topic once. */
  wait_committed_and_processed(events, 3 * WAIT_MS);
  static int copies[KEYS][SECONDS][3];
  int64_t ends[PARTS];
  ck_assert_int_eq(committed_repartitioned(copies, ends), events);
  int twice = 0;
  for (int i = 0; i < KEYS; i++)
    for (int s = 0; s < SECONDS; s++)
      for (int j = 0; j <= i % 3; j++)
        twice += copies[i][s][j] != 1;
  ck_assert_int_eq(twice, 0);
  /* The flush records (after every event) fire every window. */
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  rd_kafka_t *pr = tk_producer(&c);
  char value[64];
  for (int32_t part = 0; part < PARTS; part++) {
    flush_key(part, value, sizeof(value));
    tk_send(pr, in, part, "flush", value, 100000, NULL, NULL);
  }
  tk_flush(pr);
  rd_kafka_destroy(pr);
  wait_committed_and_processed(events, WAIT_MS);
  unsetenv("GROUP_JOB_KEY_BY_VALUE");
  unsetenv("GROUP_JOB_REAL_BROKER");
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  check_committed_output(names, 3);
  exactly_once = false;
  in_topic = "in";
  out_topic = "out";
  repart_topic = "group-job-count-repartition";
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- Two keyed stages: two repartition topics -------------------------
 * group_job.c with GROUP_JOB_TWO_STAGES re-keys the counts by group
 * ("user-<i>" -> "g-<i/2>") and sums them per group and second: a
 * second key_by that crosses processes through a topic of its own. Each
 * topic's partitions are tasks of their own stage. */
#define REPART2 "group-job-total-repartition"
#define GROUPS (KEYS / 2)

/* Once every window of the first stage is in the second topic (want
 * records): one record at 100 s in each of its partitions (a group key
 * whose murmur2 partition it is, the count 0), which moves every second
 * stage task's watermark past every window without firing its own. The
 * first stage's watermark does not cross the topic: its records carry
 * only their event time. */
static void flush_second_stage(int64_t want) {
  for (int i = 0; i < WAIT_MS / 50 && messages_in(REPART2) < want; i++)
    tk_sleep_ms(50);
  ck_assert_int_eq(messages_in(REPART2), want);
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  rd_kafka_t *p = tk_producer(&c);
  char key[64];
  int64_t zero = 0;
  for (int32_t part = 0; part < PARTS; part++) {
    flush_key(part, key, sizeof(key));
    ck_assert_int_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(REPART2),
                                       RD_KAFKA_V_PARTITION(part),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE(&zero, sizeof(zero)),
                                       RD_KAFKA_V_TIMESTAMP(100000),
                                       RD_KAFKA_V_END),
                     0);
  }
  tk_flush(p);
  rd_kafka_destroy(p);
}

/* Waits until the first topic holds at least events records and flushes
 * it. */
static void flush_first_stage(int64_t events) {
  for (int i = 0; i < WAIT_MS / 50 && repartitioned() < events; i++)
    tk_sleep_ms(50);
  flush_repartitioned(repartitioned());
}

/* The first stage's windows in the second topic (keyed there by group,
 * so a group's two users' windows of one second share key and time), and
 * the second stage's output.
 *
 * At least once, an event may be in the first topic more than once (a
 * dead process's input read again; a handoff whose commit met a
 * rebalance, docs/scaling.md), and a copy counts in its window when it
 * reaches the task before the window fires, which no reader of the
 * topics can tell afterwards. So each window of user u and second s must
 * be in the second topic exactly once (flush_second_stage counted them)
 * with a count between its distinct events (u % 3 + 1: every event
 * counted) and its copies in the first topic (nothing counted that was
 * not there); and the second stage's output is exact against what it
 * read: per group and second, the sum of the two windows' counts in the
 * second topic. With no event in the first topic twice, both bounds are
 * the one process's count, so the check is the one process's output. */
static void check_two_stages(void) {
  static int copies[KEYS][SECONDS][3];
  repartition_copies(copies);
  int twice = 0, n_win[GROUPS][SECONDS] = {{0}};
  int64_t win[GROUPS][SECONDS][2], sum[GROUPS][SECONDS] = {{0}};
  tk_cluster c = {0};
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  tk_reader r;
  tk_reader_open(&r, &c, REPART2, PARTS);
  tk_read(&r, KEYS * SECONDS + PARTS, WAIT_MS);
  tk_read(&r, KEYS * SECONDS + PARTS + 1, 1000);
  for (size_t k = 0; k < r.n; k++) {
    int g;
    if (sscanf(r.m[k].key, "g-%d", &g) != 1)
      continue; /* a flush record */
    int s = (int)((r.m[k].ts - T0 - 999) / 1000);
    ck_assert_msg(g >= 0 && g < GROUPS && s >= 0 && s < SECONDS &&
                      r.m[k].ts == T0 + s * 1000 + 999,
                  "unexpected window %s at %" PRId64, r.m[k].key, r.m[k].ts);
    ck_assert_msg(n_win[g][s] < 2, "window g-%d at %" PRId64 " three times", g,
                  r.m[k].ts);
    ck_assert_uint_eq(r.m[k].len, sizeof(int64_t));
    int64_t v;
    memcpy(&v, r.m[k].raw, sizeof(v));
    win[g][s][n_win[g][s]++] = v;
    sum[g][s] += v;
  }
  tk_reader_close(&r);
  for (int g = 0; g < GROUPS; g++)
    for (int s = 0; s < SECONDS; s++) {
      int64_t lo[2], hi[2];
      for (int u = 0; u < 2; u++) {
        int i = 2 * g + u;
        lo[u] = i % 3 + 1;
        hi[u] = 0;
        for (int j = 0; j <= i % 3; j++) {
          hi[u] += copies[i][s][j];
          twice += copies[i][s][j] - 1;
        }
      }
      ck_assert_msg(n_win[g][s] == 2, "group g-%d second %d: %d window(s)", g,
                    s, n_win[g][s]);
      int64_t a = win[g][s][0], b = win[g][s][1];
      bool fits = (a >= lo[0] && a <= hi[0] && b >= lo[1] && b <= hi[1]) ||
                  (b >= lo[0] && b <= hi[0] && a >= lo[1] && a <= hi[1]);
      ck_assert_msg(fits,
                    "group g-%d second %d: counts %" PRId64 " and %" PRId64
                    " against [%" PRId64 ", %" PRId64 "] and [%" PRId64
                    ", %" PRId64 "]",
                    g, s, a, b, lo[0], hi[0], lo[1], hi[1]);
    }
  fprintf(stderr, "%d event(s) in the first repartition topic twice\n", twice);
  enum { WANT = GROUPS * SECONDS };
  tk_reader_open(&r, &c, "out", 1);
  tk_read(&r, WANT, WAIT_MS);
  tk_read(&r, WANT + 1, 2000);
  char **got = calloc(r.n + 1, sizeof(char *));
  char **exp = calloc(WANT, sizeof(char *));
  for (size_t k = 0; k < r.n; k++) {
    got[k] = malloc(640);
    snprintf(got[k], 640, "%s,%" PRId64 ",%s", r.m[k].key, r.m[k].ts,
             r.m[k].value);
  }
  size_t n = 0;
  for (int s = 0; s < SECONDS; s++)
    for (int g = 0; g < GROUPS; g++) {
      exp[n] = malloc(128);
      snprintf(exp[n++], 128, "g-%d,%d,%" PRId64, g, T0 + s * 1000 + 999,
               sum[g][s]);
    }
  qsort(got, r.n, sizeof(char *), cmp_line);
  qsort(exp, n, sizeof(char *), cmp_line);
  assert_same_lines(got, r.n, exp, n);
  tk_reader_close(&r);
}

/* Lines of process name's log that hold both a and b. */
static int log_lines(const char *name, const char *a, const char *b) {
  char path[512], line[2048];
  snprintf(path, sizeof(path), "%s/%s.err", dir, name);
  FILE *f = fopen(path, "r");
  int n = 0;
  while (f && fgets(line, sizeof(line), f))
    n += strstr(line, a) && strstr(line, b);
  if (f)
    fclose(f);
  return n;
}

static void start_two_stages(pid_t *p, const char *const *names, int n,
                             const char *backend) {
  setenv("GROUP_JOB_KEY_BY_VALUE", "1", 1);
  setenv("GROUP_JOB_TWO_STAGES", "1", 1);
  for (int i = 0; i < n; i++)
    p[i] = start_job_ck("repartition", "12", names[i], backend);
  unsetenv("GROUP_JOB_KEY_BY_VALUE");
  unsetenv("GROUP_JOB_TWO_STAGES");
}

static void wait_two_stages(const char *const *names, int n) {
  wait_assigned(names, n, PARTS);
  wait_assigned_source(names, n, PARTS, "count-repartition");
  wait_assigned_source(names, n, PARTS, "total-repartition");
}

/* sluice-ckpt args on the shared store: its exit code, stdout in out. */
static int ckpt_tool(const char *args, char *out, size_t cap) {
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "%s/tools/sluice-ckpt %s 2>&1", build_root(),
           args);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* sluice-ckpt on a store of two stages: every pointer verifies, tasks
 * are named by topic and partition, and a task's state dumps (each
 * second-stage task holds the window its flush record opened). */
static void check_two_stage_store(void) {
  static char out[1 << 16];
  char args[600];
  snprintf(args, sizeof(args), "verify %s/ckpt", dir);
  ck_assert_msg(ckpt_tool(args, out, sizeof(out)) == 0, "%s", out);
  ck_assert_msg(strstr(out, "task " REPART "-0: valid") &&
                    strstr(out, "task " REPART2 "-11: valid"),
                "%s", out);
  snprintf(args, sizeof(args), "list %s/ckpt", dir);
  ck_assert_int_eq(ckpt_tool(args, out, sizeof(out)), 0);
  ck_assert_msg(strstr(out, REPART2 "-3 ") && strstr(out, REPART "-3 "), "%s",
                out);
  snprintf(args, sizeof(args), "dump %s/ckpt --task %s-5 --uid total", dir,
           REPART2);
  ck_assert_msg(ckpt_tool(args, out, sizeof(out)) == 0, "%s", out);
  ck_assert_msg(strstr(out, "flush-"), "%s", out);
}

/* One process, then three, then two (SIGTERM), with both stages'
 * state in the shared store: the first stage's windows are open when
 * tasks move to the newcomers, the second stage's when the third
 * process leaves. The output is the one process's (check_two_stages). */
static void two_stages_scale(const char *backend) {
  start_broker_with2(REPART ":12", REPART2 ":12");
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  start_two_stages(p, names, 1, backend);
  wait_two_stages(names, 1);
  int64_t events = produce_unkeyed_phase(0) + produce_unkeyed_phase(1);
  for (int i = 0; i < WAIT_MS / 50 && repartitioned() < events; i++)
    tk_sleep_ms(50);
  wait_snapshotted_of(REPART);
  start_two_stages(p + 1, names + 1, 2, backend);
  wait_two_stages(names, 3);
  events += produce_unkeyed_phase(2);
  flush_first_stage(events);
  for (int i = 0; i < WAIT_MS / 50 && messages_in(REPART2) < KEYS * SECONDS;
       i++)
    tk_sleep_ms(50);
  wait_snapshotted_of(REPART2);
  stop_pid(p[2], SIGTERM, 0);
  wait_two_stages(names, 2);
  flush_second_stage(KEYS * SECONDS);
  check_two_stages();
  /* State moved in both stages: the newcomers restored first-stage
   * tasks from a's snapshots, the survivors second-stage tasks from
   * c's, each named by its topic and partition. */
  ck_assert_int_gt(log_lines("b", "task " REPART "-", "restoring from") +
                       log_lines("c", "task " REPART "-", "restoring from"),
                   0);
  ck_assert_int_gt(log_lines("a", "task " REPART2 "-", "restoring from") +
                       log_lines("b", "task " REPART2 "-", "restoring from"),
                   0);
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  check_two_stage_store();
  stop_broker();
}

START_TEST(two_stages_scale_hashmap) {
  two_stages_scale("hashmap");
}
END_TEST

START_TEST(two_stages_scale_rocksdb) {
  two_stages_scale("rocksdb");
}
END_TEST

/* Three processes (hashmap, process b with two workers) of the two-stage
 * job; one is SIGKILLed while it works on the second part of the input.
 * The survivors take its tasks of both stages and its input partitions;
 * at least once, what it read after its last committed positions is in
 * the first topic twice and counted twice (check_two_stages). */
START_TEST(two_stages_killed_member) {
  start_broker_with2(REPART ":12", REPART2 ":12");
  pid_t p[3];
  const char *names[] = {"a", "b", "c"};
  start_two_stages(p, names, 3, "hashmap");
  wait_two_stages(names, 3);
  int64_t events = produce_unkeyed_phase(0);
  for (int i = 0; i < WAIT_MS / 50 && repartitioned() < events; i++)
    tk_sleep_ms(50);
  wait_snapshotted_of(REPART);
  events += produce_unkeyed_phase(1);
  for (int i = 0; i < WAIT_MS / 10 && repartitioned() < events; i++)
    tk_sleep_ms(10);
  stop_pid(p[2], SIGKILL, -1);
  wait_two_stages(names, 2);
  events += produce_unkeyed_phase(2);
  static int copies[KEYS][SECONDS][3];
  int64_t distinct = 0;
  for (int i = 0; i < WAIT_MS / 500 && distinct < events; i++)
    distinct = repartition_copies(copies);
  ck_assert_int_eq(distinct, events);
  flush_first_stage(events);
  flush_second_stage(KEYS * SECONDS);
  check_two_stages();
  for (int i = 0; i < 2; i++)
    stop_pid(p[i], SIGTERM, 0);
  stop_broker();
}
END_TEST

/* A store of the layout before several repartition topics: one
 * repartition topic, tasks named by partition (tasks/<n>.json without a
 * version, nor generations). Process a of the one-stage job snapshots the first
 * two parts of the input and stops; its pointers are rewritten as that layout
 * wrote them. Process b then restores every task from them (windows open across
 * the stop), replaces each with its named pointer, and the output is the one
 * process's. */
static void rewrite_as_version_1(void) {
  for (int p = 0; p < PARTS; p++) {
    sl__task_ptr ptr;
    ck_assert_msg(pointer_of(REPART, p, &ptr), "no pointer of %s-%d", REPART,
                  p);
    char from[512], to[512], path[700];
    snprintf(from, sizeof(from), "%s/ckpt/tasks/%s-%d", dir, REPART, p);
    snprintf(to, sizeof(to), "%s/ckpt/tasks/%d.json", dir, p);
    snprintf(path, sizeof(path), "%s/%llu.json", from,
             (unsigned long long)ptr.gen);
    json_t *o = json_load_file(path, 0, NULL);
    ck_assert_msg(o, "no pointer %s", path);
    ck_assert_int_eq(json_object_del(o, "version"), 0);
    ck_assert_int_eq(json_object_del(o, "generation"), 0);
    ck_assert_int_eq(json_object_set_new(o, "task", json_integer(p)), 0);
    ck_assert_int_eq(json_dump_file(o, to, JSON_COMPACT), 0);
    json_decref(o);
    /* Its generations and their marker. */
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -r %s %s.json", from, from);
    ck_assert_int_eq(system(cmd), 0);
  }
}

START_TEST(store_of_one_repartition_topic_restores) {
  start_broker_with(REPART ":12");
  setenv("GROUP_JOB_KEY_BY_VALUE", "1", 1);
  const char *names[] = {"a", "b"};
  pid_t a = start_job_ck("repartition", "12", "a", "hashmap");
  wait_assigned(names, 1, PARTS);
  wait_assigned_source(names, 1, PARTS, "count-repartition");
  int64_t events = produce_unkeyed_phase(0) + produce_unkeyed_phase(1);
  for (int i = 0; i < WAIT_MS / 50 && repartitioned() < events; i++)
    tk_sleep_ms(50);
  wait_snapshotted_of(REPART);
  stop_pid(a, SIGTERM, 0);
  rewrite_as_version_1();
  pid_t b = start_job_ck("repartition", "12", "b", "hashmap");
  unsetenv("GROUP_JOB_KEY_BY_VALUE");
  wait_assigned(names + 1, 1, PARTS);
  wait_assigned_source(names + 1, 1, PARTS, "count-repartition");
  events += produce_unkeyed_phase(2);
  flush_repartitioned(events);
  check_output();
  ck_assert_int_eq(log_lines("b", "task " REPART "-", "restoring from"), PARTS);
  for (int p = 0; p < PARTS; p++) {
    char path[512];
    snprintf(path, sizeof(path), "%s/ckpt/tasks/%d.json", dir, p);
    ck_assert_msg(access(path, F_OK) != 0, "%s is still there", path);
    sl__task_ptr ptr;
    ck_assert_msg(pointer_of(REPART, p, &ptr) && ptr.gen > 0,
                  "task %s-%d has no generation", REPART, p);
  }
  stop_pid(b, SIGTERM, 0);
  stop_broker();
}
END_TEST

/* A repartition topic that exists with another partition count than
 * group.partitions is a clear error. */
START_TEST(repartition_topic_of_another_count_is_an_error) {
  start_broker_with(REPART ":5");
  setenv("GROUP_JOB_KEY_BY_VALUE", "1", 1);
  pid_t a = start_job("repartition", "12", "a");
  unsetenv("GROUP_JOB_KEY_BY_VALUE");
  int status = 0;
  ck_assert_int_eq(waitpid(a, &status, 0), a);
  untrack(a);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 1);
  char path[512], msg[4096] = "";
  snprintf(path, sizeof(path), "%s/a.err", dir);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(msg, 1, sizeof(msg) - 1, f);
  msg[n] = '\0';
  fclose(f);
  ck_assert_msg(strstr(msg, "repartition topic " REPART " has 5 partitions "
                            "but group.partitions is 12"),
                "%s", msg);
  stop_broker();
}
END_TEST

/* After a failure: what the processes of the failed test logged (its
 * directory stays, with the store), without the line of each completed
 * checkpoint, so that a run whose only record is its output says what the
 * processes saw (rebalances, lost partitions, restores, errors). */
static void print_logs(void) {
  DIR *d = dir[0] ? opendir(dir) : NULL;
  if (!d)
    return;
  fprintf(stderr, "the processes' logs (%s):\n", dir);
  for (struct dirent *e; (e = readdir(d));) {
    size_t n = strlen(e->d_name);
    if (n < 5 || strcmp(e->d_name + n - 4, ".err"))
      continue;
    char path[700], line[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    fprintf(stderr, "--- %s\n", e->d_name);
    while (fgets(line, sizeof(line), f))
      if (!strstr(line, " completed in "))
        fputs(line, stderr);
    fclose(f);
  }
  closedir(d);
}

int main(void) {
  Suite *s = suite_create("group");
  TCase *tc = tcase_create("group");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, group_settings_are_checked);
  tcase_add_test(tc, murmur2_partition_is_kafkas);
  tcase_add_test(tc, two_key_bys_into_one_operator_is_an_error);
  tcase_add_test(tc, one_process_without_group_mode);
  tcase_add_test(tc, one_process_in_group_mode);
  tcase_add_test(tc, three_processes_share_the_partitions);
  tcase_add_test(tc, sigterm_hands_partitions_over);
  tcase_add_test(tc, killed_member_partitions_move_to_the_survivor);
  tcase_add_test(tc, wrong_partition_count_is_an_error);
  tcase_add_test(tc, repartition_topic_of_another_count_is_an_error);
  suite_add_tcase(s, tc);
  /* The key change through a repartition topic (CK_RUN_CASE=repartition). */
  TCase *rp = tcase_create("repartition");
  tcase_set_timeout(rp, 300);
  tcase_add_test(rp, key_change_through_repartition_topic);
  tcase_add_test(rp, key_change_through_repartition_topic_with_store);
  suite_add_tcase(s, rp);
  /* State moving with its tasks, one case per test (CK_RUN_CASE=<name>
   * runs one alone). */
  const struct {
    const char *name;
    const TTest *test;
  } state[] = {
      {"scale-hashmap", scale_1_3_2_hashmap},
      {"kill-hashmap", killed_member_state_moves_hashmap},
      {"scale-rocksdb", scale_1_3_2_rocksdb},
      {"kill-rocksdb", killed_member_state_moves_rocksdb},
      {"scale-eos", scale_1_3_2_exactly_once},
      {"broadcast-hashmap", broadcast_in_every_process_hashmap},
      {"broadcast-rocksdb", broadcast_in_every_process_rocksdb},
      {"fenced", stopped_member_revives_hashmap},
      {"fenced-rocksdb", stopped_member_revives_rocksdb},
      {"fenced-limit", revivals_beyond_the_limit_fail},
      {"fenced-publish", stopped_before_a_pointer_after_completion},
      {"fenced-prepare", stopped_before_a_pending_pointer},
      {"kill-eos", killed_after_commit_before_pointers},
      {"kill-repartition", killed_member_through_repartition_topic},
      {"repartition-eos", repartition_exactly_once},
      {"scale-repartition-eos", scale_through_repartition_exactly_once},
      {"kill-repartition-eos", kill_through_repartition_exactly_once},
      {"fenced-repartition", stopped_member_through_repartition_revives},
      {"lagging-hashmap", lagging_task_moves_hashmap},
      {"lagging-rocksdb", lagging_task_moves_rocksdb},
      {"lagging-window2-hashmap", lagging_window_after_window_hashmap},
      {"lagging-window2-rocksdb", lagging_window_after_window_rocksdb},
      {"lagging-process-hashmap", lagging_window_after_process_hashmap},
      {"lagging-join-hashmap", lagging_join_then_window_hashmap},
      {"lagging-join-rocksdb", lagging_join_then_window_rocksdb},
      {"lagging-custom-hashmap", lagging_custom_hashmap},
      {"lagging-custom-rocksdb", lagging_custom_rocksdb},
      {"lagging-punctuated-hashmap", lagging_punctuated_hashmap},
      {"lagging-custom-window2-hashmap", lagging_custom_window2_hashmap},
      {"silent-hashmap", silent_task_moves_hashmap},
      {"silent-rocksdb", silent_task_moves_rocksdb},
      {"silent-custom-hashmap", silent_task_moves_custom_hashmap},
      {"two-stages-hashmap", two_stages_scale_hashmap},
      {"two-stages-rocksdb", two_stages_scale_rocksdb},
      {"kill-two-stages", two_stages_killed_member},
      {"old-store", store_of_one_repartition_topic_restores}};
  for (size_t i = 0; i < sizeof(state) / sizeof(state[0]); i++) {
    TCase *st = tcase_create(state[i].name);
    tcase_set_timeout(st, 300);
    tcase_add_test(st, state[i].test);
    suite_add_tcase(s, st);
  }
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  if (failed)
    print_logs();
  for (int i = 0; i < n_kids; i++) {
    kill(kids[i], SIGKILL);
    waitpid(kids[i], NULL, 0);
  }
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
