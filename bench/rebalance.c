/* SPDX-License-Identifier: Apache-2.0 */
/* The pause of a rebalance in group mode (docs/scaling.md): two processes
 * of bench/rebalance_job.c share a dev broker's two-partition input and
 * one checkpoint store, one task each, each task holding `keys` keys of
 * state. One member leaves (SIGTERM: final snapshot, then it leaves the
 * group) or dies (SIGKILL: the session timeout notices); a probe record
 * then goes to each partition, and the pause is the time from the
 * signal to the survivor's first output for the moved task. It is split
 * into detection (signal -> the survivor logs the task's assignment)
 * and restore (assignment -> first output: the task's state loaded from
 * its snapshot, the partition read again from the pointer's offset).
 * The baseline, in the same run, is the same move of a task with one
 * key of state. One line per backend, exit and size:
 *   bench=rebalance_pause backend=B exit=sigterm|sigkill keys=N
 *     pause_ms detect_ms restore_ms baseline_pause_ms baseline_restore_ms
 *     ratio (pause over the baseline's) restore_ratio
 * Environment (CI runs it small): REBALANCE_KEYS (comma-separated, default
 * 100000,1000000), REBALANCE_BACKENDS (hashmap,rocksdb), REBALANCE_EXITS
 * (sigterm,sigkill); REBALANCE_VERBOSE=1 shows the members' logs with
 * the time each line arrived. */
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "checkpoint/tasks.h"
#include "core/hash.h"

#define PARTS 2
#define WAIT_S 120

static char build[1024], dir[200], bootstrap[256];

static int64_t wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Processes started and not yet stopped: a failure stops them. */
static pid_t started[3];

static void track(pid_t pid) {
  for (int i = 0; i < 3; i++)
    if (!started[i]) {
      started[i] = pid;
      return;
    }
}

static void untrack(pid_t pid) {
  for (int i = 0; i < 3; i++)
    if (started[i] == pid)
      started[i] = 0;
}

static void die(const char *what) {
  fprintf(stderr, "bench rebalance: %s\n", what);
  for (int i = 0; i < 3; i++)
    if (started[i] > 0) {
      kill(started[i], SIGKILL);
      waitpid(started[i], NULL, 0);
    }
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (dir[0] && system(cmd))
    fprintf(stderr, "bench rebalance: cannot remove %s\n", dir);
  exit(1);
}

/* ---- Processes ----------------------------------------------------------- */

/* A member: its stderr comes through a pipe that a thread reads, noting
 * when the member logs a task's assignment and how many it holds. */
typedef struct member {
  pid_t pid;
  char name[16];
  int fd;
  pthread_t reader;
  pthread_mutex_t mu;
  int64_t assigned_us[PARTS]; /* last "task N: ..." line, 0: none */
  int reads;                  /* partitions after its last rebalance */
} member;

static void *read_log(void *arg) {
  member *m = arg;
  FILE *f = fdopen(m->fd, "r");
  char line[2048];
  while (f && fgets(line, sizeof(line), f)) {
    int64_t now = wall_us();
    const char *t = strstr(line, "source in: task "), *r;
    pthread_mutex_lock(&m->mu);
    if (t) {
      int task = atoi(t + 16);
      if (task >= 0 && task < PARTS)
        m->assigned_us[task] = now;
    }
    if ((r = strstr(line, "group rebalance:")) && (r = strstr(r, "; reads ")))
      m->reads = atoi(r + 8);
    pthread_mutex_unlock(&m->mu);
    if (getenv("REBALANCE_VERBOSE")) /* wall-clock ms, for the pieces */
      fprintf(stderr, "%lld [%s] %s", (long long)(now / 1000) % 100000, m->name,
              line);
  }
  if (f)
    fclose(f);
  return NULL;
}

static void start_member(member *m, const char *name, const char *backend) {
  memset(m, 0, sizeof(*m));
  snprintf(m->name, sizeof(m->name), "%s", name);
  pthread_mutex_init(&m->mu, NULL);
  int p[2];
  if (pipe(p))
    die("pipe");
  char bin[1100], parts[8], ck[300], st[300];
  snprintf(bin, sizeof(bin), "%s/bench/rebalance-job", build);
  snprintf(parts, sizeof(parts), "%d", PARTS);
  snprintf(ck, sizeof(ck), "%s/ckpt", dir);
  snprintf(st, sizeof(st), "%s/state-%s", dir, name);
  m->pid = fork();
  if (m->pid < 0)
    die("fork");
  if (m->pid == 0) {
    close(p[0]);
    dup2(p[1], 2);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    execl(bin, bin, bootstrap, parts, ck, st, backend, name, (char *)NULL);
    _exit(127);
  }
  track(m->pid);
  close(p[1]);
  m->fd = p[0];
  pthread_create(&m->reader, NULL, read_log, m);
}

static void end_member(member *m, int sig) {
  if (m->pid > 0) {
    kill(m->pid, sig);
    waitpid(m->pid, NULL, 0);
    untrack(m->pid);
    m->pid = 0;
  }
  pthread_join(m->reader, NULL);
  pthread_mutex_destroy(&m->mu);
}

static pid_t broker;

static void start_broker(void) {
  char bin[1100], file[300];
  snprintf(bin, sizeof(bin), "%s/tools/sluice-kafka-dev", build);
  snprintf(file, sizeof(file), "%s/bootstrap", dir);
  unlink(file);
  broker = fork();
  if (broker < 0)
    die("fork");
  if (broker == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execl(bin, bin, "--topic", "in:2", "--topic", "out:1", "--bootstrap-file",
          file, (char *)NULL);
    _exit(127);
  }
  track(broker);
  bootstrap[0] = 0;
  for (int i = 0; i < 400 && !bootstrap[0]; i++) {
    FILE *f = fopen(file, "r");
    if (f) {
      if (!fgets(bootstrap, sizeof(bootstrap), f))
        bootstrap[0] = 0;
      fclose(f);
    }
    if (!bootstrap[0])
      usleep(25000);
  }
  if (!bootstrap[0])
    die("the dev broker did not start");
  bootstrap[strcspn(bootstrap, "\n")] = 0;
}

static void stop_broker(void) {
  kill(broker, SIGTERM);
  waitpid(broker, NULL, 0);
  untrack(broker);
}

/* ---- Kafka --------------------------------------------------------------- */

static rd_kafka_t *client(rd_kafka_type_t type) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, NULL, 0);
  rd_kafka_conf_set(c, "log_level", "2", NULL, 0);
  if (type == RD_KAFKA_PRODUCER)
    rd_kafka_conf_set(c, "linger.ms", "0", NULL, 0);
  else
    rd_kafka_conf_set(c, "group.id", "bench-rebalance-reader", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof(err));
  if (!rk)
    die(err);
  if (type == RD_KAFKA_CONSUMER)
    rd_kafka_poll_set_consumer(rk);
  return rk;
}

/* A key of partition part, the n-th one. */
static void key_of(int part, int n, char *buf, size_t cap) {
  for (int i = 0;; i++) {
    snprintf(buf, cap, "t%d-%d", part, i);
    if ((int)sl__murmur2_partition(buf, strlen(buf), PARTS) == part && !n--)
      return;
  }
}

static void produce(rd_kafka_t *p, int part, const char *key, const char *val) {
  if (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("in"), RD_KAFKA_V_PARTITION(part),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                        RD_KAFKA_V_KEY(key, strlen(key)),
                        RD_KAFKA_V_VALUE((void *)val, strlen(val)),
                        RD_KAFKA_V_TIMESTAMP(1000), RD_KAFKA_V_END))
    die("produce");
}

/* The offset of a task's pointer, -1 without one. */
static long pointer_offset(int task) {
  char root[400], err[1024];
  snprintf(root, sizeof(root), "%s/ckpt", dir);
  sl__task_ptr p;
  return sl__task_ptr_read(root, (uint32_t)task, &p, err, sizeof(err)) == 1
             ? (long)p.offset
             : -1;
}

/* ---- One move ------------------------------------------------------------ */

typedef struct result {
  double pause_ms, detect_ms, restore_ms;
} result;

/* Fill records per task: each expands into at most this many keys. */
#define FILL_CHUNK 50000

static result one_move(const char *backend, long keys, int sig) {
  char cmd[600];
  snprintf(dir, sizeof(dir), "/tmp/sluice-bench-rebalance-%ld", (long)getpid());
  snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s", dir, dir);
  if (system(cmd))
    die("cannot make the work directory");
  start_broker();
  member m[2];
  start_member(&m[0], "a", backend);
  start_member(&m[1], "b", backend);
  /* One task each before any input. */
  for (int i = 0;; i++) {
    pthread_mutex_lock(&m[0].mu);
    pthread_mutex_lock(&m[1].mu);
    bool ok = m[0].reads == 1 && m[1].reads == 1;
    pthread_mutex_unlock(&m[1].mu);
    pthread_mutex_unlock(&m[0].mu);
    if (ok)
      break;
    if (i > WAIT_S * 20)
      die("the group did not settle on one task per member");
    usleep(50000);
  }
  rd_kafka_t *p = client(RD_KAFKA_PRODUCER);
  long sent[PARTS] = {0};
  for (int part = 0; part < PARTS; part++) {
    for (long done = 0, j = 0; done < keys; j++) {
      long n = keys - done < FILL_CHUNK ? keys - done : FILL_CHUNK;
      char key[32], val[32];
      key_of(part, (int)j, key, sizeof(key));
      snprintf(val, sizeof(val), "fill:%ld", n);
      produce(p, part, key, val);
      sent[part]++;
      done += n;
    }
  }
  rd_kafka_flush(p, 30000);
  /* Every task's state in a complete snapshot. */
  for (int i = 0;; i++) {
    bool ok = true;
    for (int part = 0; part < PARTS; part++)
      ok = ok && pointer_offset(part) == sent[part];
    if (ok)
      break;
    if (i > WAIT_S * 20)
      die("the tasks' snapshots never held their state");
    usleep(50000);
  }
  /* Which task the victim (a) holds: the one it was assigned. */
  pthread_mutex_lock(&m[0].mu);
  int task = m[0].assigned_us[0] ? 0 : 1;
  int64_t before = m[1].assigned_us[task];
  pthread_mutex_unlock(&m[0].mu);
  rd_kafka_t *c = client(RD_KAFKA_CONSUMER);
  rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(1);
  /* Only probes are answered: "out" holds nothing else. */
  rd_kafka_topic_partition_list_add(tl, "out", 0)->offset =
      RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(c, tl);
  rd_kafka_topic_partition_list_destroy(tl);

  int64_t t0 = wall_us();
  if (getenv("REBALANCE_VERBOSE"))
    fprintf(stderr, "%lld signal\n", (long long)(t0 / 1000) % 100000);
  kill(m[0].pid, sig);
  /* Probes go out at once: the survivor answers each after the task is
   * restored. Read until the moved task's answer comes from "b". */
  char pkey[32];
  key_of(task, 1000000, pkey, sizeof(pkey));
  produce(p, task, pkey, "probe");
  rd_kafka_flush(p, 30000);
  int64_t out_us = 0;
  while (!out_us) {
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(c, 100);
    if (msg && !msg->err && msg->len < 128) {
      char v[128], who[16];
      int t;
      long long us;
      memcpy(v, msg->payload, msg->len);
      v[msg->len] = 0;
      if (sscanf(v, "%15s %d %lld", who, &t, &us) == 3 && !strcmp(who, "b") &&
          t == task && us >= t0)
        out_us = us;
    }
    if (msg)
      rd_kafka_message_destroy(msg);
    if (wall_us() - t0 > (int64_t)WAIT_S * 1000000)
      die("no output of the moved task from the survivor");
  }
  pthread_mutex_lock(&m[1].mu);
  int64_t assigned = m[1].assigned_us[task];
  pthread_mutex_unlock(&m[1].mu);
  if (assigned == before || assigned < t0)
    die("the survivor did not log the task's assignment");
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  rd_kafka_destroy(p);
  end_member(&m[0], SIGKILL);
  end_member(&m[1], SIGTERM);
  stop_broker();
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd))
    fprintf(stderr, "bench rebalance: cannot remove %s\n", dir);
  return (result){(double)(out_us - t0) / 1000.0,
                  (double)(assigned - t0) / 1000.0,
                  (double)(out_us - assigned) / 1000.0};
}

/* ---- Main ---------------------------------------------------------------- */

/* Comma-separated items of env var name (default def), each through fn. */
static int items(const char *name, const char *def, char out[][32], int max) {
  const char *v = getenv(name);
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", v && *v ? v : def);
  int n = 0;
  for (char *s = strtok(buf, ","); s && n < max; s = strtok(NULL, ","))
    snprintf(out[n++], 32, "%s", s);
  return n;
}

int main(int argc, char **argv) {
  (void)argc;
  char self[1024];
  snprintf(self, sizeof(self), "%s", argv[0]);
  /* bench_rebalance lives in <build>/bench. */
  snprintf(build, sizeof(build), "%s/..", dirname(self));
  char sizes[8][32], backends[4][32], exits[4][32];
  int ns = items("REBALANCE_KEYS", "100000,1000000", sizes, 8);
  int nb = items("REBALANCE_BACKENDS", "hashmap,rocksdb", backends, 4);
  int ne = items("REBALANCE_EXITS", "sigterm,sigkill", exits, 4);
  for (int b = 0; b < nb; b++)
    for (int e = 0; e < ne; e++) {
      int sig = strcmp(exits[e], "sigkill") ? SIGTERM : SIGKILL;
      result base = one_move(backends[b], 1, sig);
      for (int s = 0; s < ns; s++) {
        long keys = atol(sizes[s]);
        result r = one_move(backends[b], keys, sig);
        printf("bench=rebalance_pause backend=%s exit=%s keys=%ld "
               "pause_ms=%.0f detect_ms=%.0f restore_ms=%.0f "
               "baseline_pause_ms=%.0f baseline_restore_ms=%.0f ratio=%.2f "
               "restore_ratio=%.2f\n",
               backends[b], exits[e], keys, r.pause_ms, r.detect_ms,
               r.restore_ms, base.pause_ms, base.restore_ms,
               r.pause_ms / base.pause_ms, r.restore_ms / base.restore_ms);
        fflush(stdout);
      }
    }
  return 0;
}
