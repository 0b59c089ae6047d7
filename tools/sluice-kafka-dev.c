/* SPDX-License-Identifier: Apache-2.0 */
/* sluice-kafka-dev: librdkafka's mock cluster as a standalone local broker
 * for examples, demos and tests. Prints its bootstrap address, optionally
 * writes it atomically to a file once topics exist, and runs until SIGINT
 * or SIGTERM. Data lives in memory only (the mock keeps ~5 MiB per
 * partition). */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static void usage(FILE *f) {
  fprintf(f, "usage: sluice-kafka-dev [--brokers N] [--topic name:partitions "
             "...] [--bootstrap-file F]\n"
             "Runs librdkafka's mock Kafka cluster on localhost until SIGINT "
             "or SIGTERM.\n");
}

/* Writes text to path through a temporary name and rename(), so a reader
 * polling for the file never sees it half written. */
static int write_atomic(const char *path, const char *text) {
  size_t n = strlen(path) + 32;
  char *tmp = malloc(n);
  if (!tmp)
    return -1;
  snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "w");
  int rc = -1;
  if (f) {
    int ok = fprintf(f, "%s\n", text) > 0;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
      rc = 0;
    else
      unlink(tmp);
  }
  free(tmp);
  return rc;
}

int main(int argc, char **argv) {
  int brokers = 1;
  const char *bootstrap_file = NULL;
  const char **topics = calloc((size_t)argc, sizeof(char *));
  int n_topics = 0;
  if (!topics)
    return 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--brokers") && i + 1 < argc) {
      brokers = atoi(argv[++i]);
      if (brokers < 1 || brokers > 64) {
        fprintf(stderr, "sluice-kafka-dev: --brokers must be 1..64\n");
        return 2;
      }
    } else if (!strcmp(argv[i], "--topic") && i + 1 < argc) {
      topics[n_topics++] = argv[++i];
    } else if (!strcmp(argv[i], "--bootstrap-file") && i + 1 < argc) {
      bootstrap_file = argv[++i];
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  /* The mock cluster needs a client handle to live in; a producer that
   * never produces is the cheapest one. */
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
  rd_kafka_t *rk =
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (!rk) {
    fprintf(stderr, "sluice-kafka-dev: %s\n", errstr);
    rd_kafka_conf_destroy(conf);
    return 1;
  }
  rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
  if (!mc) {
    fprintf(stderr, "sluice-kafka-dev: cannot start the mock cluster\n");
    rd_kafka_destroy(rk);
    return 1;
  }
  int rc = 0;
  for (int i = 0; i < n_topics && !rc; i++) {
    char name[256];
    const char *colon = strrchr(topics[i], ':');
    int parts = colon ? atoi(colon + 1) : 1;
    size_t len = colon ? (size_t)(colon - topics[i]) : strlen(topics[i]);
    if (len == 0 || len >= sizeof(name) || parts < 1) {
      fprintf(stderr,
              "sluice-kafka-dev: bad --topic \"%s\" (name:partitions)\n",
              topics[i]);
      rc = 2;
      break;
    }
    memcpy(name, topics[i], len);
    name[len] = '\0';
    rd_kafka_resp_err_t e =
        rd_kafka_mock_topic_create(mc, name, parts, brokers < 3 ? brokers : 3);
    if (e) {
      fprintf(stderr, "sluice-kafka-dev: creating %s: %s\n", name,
              rd_kafka_err2str(e));
      rc = 1;
    }
  }
  const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
  if (!rc) {
    printf("%s\n", bootstraps);
    fflush(stdout);
    if (bootstrap_file && write_atomic(bootstrap_file, bootstraps)) {
      fprintf(stderr, "sluice-kafka-dev: cannot write %s: %s\n", bootstrap_file,
              strerror(errno));
      rc = 1;
    }
  }
  /* The mock serves from its own thread; this one only waits for a
   * signal. sleep() returns early when one arrives. */
  while (!rc && !stop)
    sleep(1);
  if (bootstrap_file && !rc)
    unlink(bootstrap_file);
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  free(topics);
  return rc;
}
