/* SPDX-License-Identifier: Apache-2.0 */
/* Nexmark events through Kafka: the dev broker as a child process, a
 * producer that writes the generated events as JSON, and the decode
 * function of the Kafka source. */
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nx_kafka.h"

static void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

int nx_kafka_dev_start(const char *tool, const char *topic, int partitions,
                       nx_kafka_dev *dev, char *err, size_t errlen) {
  memset(dev, 0, sizeof(*dev));
  snprintf(dev->file, sizeof(dev->file), "/tmp/sluice-nexmark-broker-%d",
           (int)getpid());
  unlink(dev->file);
  char spec[160];
  snprintf(spec, sizeof(spec), "%s:%d", topic, partitions);
  fflush(NULL);
  pid_t parent = getpid(), pid = fork();
  if (pid < 0) {
    snprintf(err, errlen, "fork: %s", strerror(errno));
    return -1;
  }
  if (pid == 0) {
    /* The broker must not outlive us when we fail or are killed (Linux). */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
      _exit(127);
    /* The broker prints its address on stdout; ours is the results'. */
    if (!freopen("/dev/null", "w", stdout))
      _exit(127);
    execl(tool, tool, "--topic", spec, "--bootstrap-file", dev->file,
          (char *)NULL);
    _exit(127);
  }
  dev->pid = pid;
  for (int i = 0; i < 400 && !dev->bootstrap[0]; i++) {
    FILE *f = fopen(dev->file, "r");
    if (f) {
      if (!fgets(dev->bootstrap, sizeof(dev->bootstrap), f))
        dev->bootstrap[0] = '\0';
      fclose(f);
    }
    int status;
    if (!dev->bootstrap[0] && waitpid(pid, &status, WNOHANG) == pid) {
      dev->pid = 0;
      snprintf(err, errlen, "%s exited before it served (status %d)", tool,
               status);
      return -1;
    }
    if (!dev->bootstrap[0])
      sleep_ms(25);
  }
  dev->bootstrap[strcspn(dev->bootstrap, "\n")] = '\0';
  if (!dev->bootstrap[0]) {
    nx_kafka_dev_stop(dev);
    snprintf(err, errlen, "%s wrote no bootstrap address in 10 s", tool);
    return -1;
  }
  return 0;
}

void nx_kafka_dev_stop(nx_kafka_dev *dev) {
  if (dev->pid <= 0)
    return;
  kill(dev->pid, SIGTERM);
  waitpid(dev->pid, NULL, 0);
  dev->pid = 0;
  unlink(dev->file);
}

static rd_kafka_t *producer(const char *bootstrap, char *err, size_t errlen) {
  /* Large compressed batches: the dev broker keeps ~5 MiB (counted
   * compressed) or 100k batches per partition, and JSON compresses well. */
  static const char *const kv[] = {"bootstrap.servers",
                                   NULL,
                                   "log_level",
                                   "2",
                                   "linger.ms",
                                   "50",
                                   "batch.size",
                                   "1000000",
                                   "batch.num.messages",
                                   "10000",
                                   "compression.codec",
                                   "lz4",
                                   "queue.buffering.max.kbytes",
                                   "262144",
                                   NULL};
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  for (int i = 0; kv[i]; i += 2)
    if (rd_kafka_conf_set(conf, kv[i], kv[i + 1] ? kv[i + 1] : bootstrap, err,
                          errlen) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return NULL;
    }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);
  if (!rk)
    rd_kafka_conf_destroy(conf);
  return rk;
}

static int send_one(rd_kafka_t *rk, const char *topic, int32_t part,
                    const char *value, size_t len, char *err, size_t errlen) {
  for (;;) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(part),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
      return 0;
    if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      snprintf(err, errlen, "produce to %s: %s", topic, rd_kafka_err2str(e));
      return -1;
    }
    rd_kafka_poll(rk, 10);
  }
}

/* Every message is still there: offsets start at 0 and end at what was
 * written. */
static int check_kept(rd_kafka_t *rk, const char *topic, int partitions,
                      uint64_t n, char *err, size_t errlen) {
  for (int p = 0; p < partitions; p++) {
    int64_t lo = -1, hi = -1;
    uint64_t want =
        n / (uint64_t)partitions + ((uint64_t)p < n % (uint64_t)partitions);
    rd_kafka_resp_err_t e =
        rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
    if (e) {
      snprintf(err, errlen, "offsets of %s [%d]: %s", topic, p,
               rd_kafka_err2str(e));
      return -1;
    }
    if (lo != 0 || hi != (int64_t)want) {
      snprintf(err, errlen,
               "%s [%d] holds offsets %" PRId64 "..%" PRId64 ", not 0..%" PRIu64
               ": the broker dropped the oldest data (the dev broker keeps "
               "~5 MiB per partition); use fewer events or more partitions",
               topic, p, lo, hi, want);
      return -1;
    }
  }
  return 0;
}

int nx_kafka_produce(const char *bootstrap, const char *topic, int partitions,
                     const nx_config *c, uint64_t n, char *err, size_t errlen) {
  rd_kafka_t *rk = producer(bootstrap, err, errlen);
  if (!rk)
    return -1;
  int rc = 0;
  char buf[512];
  nx_event e;
  for (uint64_t i = 0; i < n && !rc; i++) {
    nx_generate(c, i, &e);
    int len = nx_event_to_json(&e, buf, sizeof(buf));
    rc = send_one(rk, topic, (int32_t)(i % (uint64_t)partitions), buf,
                  (size_t)len, err, errlen);
  }
  if (!rc && rd_kafka_flush(rk, 120000)) {
    snprintf(err, errlen, "producing to %s did not finish in 120 s", topic);
    rc = -1;
  }
  if (!rc)
    rc = check_kept(rk, topic, partitions, n, err, errlen);
  rd_kafka_destroy(rk);
  return rc;
}

/* The decoded event lives until the next call on the same source subtask,
 * which runs on one worker thread. */
static _Thread_local nx_event decoded;

int nx_kafka_decode(const sl_kafka_msg_t *msg, sl_record_t *out, char *err,
                    size_t errlen, void *opaque) {
  (void)opaque;
  const void *v;
  size_t len;
  sl_kafka_msg_value(msg, &v, &len);
  if (nx_event_from_json(v, len, &decoded)) {
    snprintf(err, errlen, "not a Nexmark event");
    return SL_ERR_DECODE;
  }
  int64_t ts = decoded.type == NX_PERSON    ? decoded.u.person.date_time
               : decoded.type == NX_AUCTION ? decoded.u.auction.date_time
                                            : decoded.u.bid.date_time;
  *out = (sl_record_t){NULL, 0, &decoded, nx_event_size(&decoded), ts};
  return 0;
}
