/* SPDX-License-Identifier: Apache-2.0 */
/* sluice-kafka-dev as `make demo` uses it: it writes the bootstrap file
 * once its topics exist, serves clients, and on SIGTERM/SIGINT exits 0
 * and removes the file. */
#include <check.h>
#include <librdkafka/rdkafka.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

static void run_dev(int sig) {
  const char *build = getenv("SLUICE_BUILD_ROOT");
  char tool[1024], file[256];
  snprintf(tool, sizeof(tool), "%s/tools/sluice-kafka-dev",
           build ? build : "build");
  snprintf(file, sizeof(file), "/tmp/sluice-kafka-dev-test-%ld.%d",
           (long)getpid(), sig);
  unlink(file);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int null = open("/dev/null", 1);
    dup2(null, 1);
    execl(tool, tool, "--brokers", "2", "--topic", "orders:3", "--topic",
          "dlq:1", "--bootstrap-file", file, (char *)NULL);
    _exit(127);
  }
  char bs[256] = "";
  for (int i = 0; i < 400 && !bs[0]; i++) {
    FILE *f = fopen(file, "r");
    if (f) {
      if (!fgets(bs, sizeof(bs), f))
        bs[0] = '\0';
      fclose(f);
    }
    if (!bs[0])
      sleep_ms(25);
  }
  ck_assert_msg(bs[0], "no bootstrap file %s", file);
  bs[strcspn(bs, "\n")] = '\0';

  /* A client sees the topics with their partitions. */
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bs, NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  ck_assert_ptr_nonnull(rk);
  rd_kafka_topic_t *t = rd_kafka_topic_new(rk, "orders", NULL);
  const struct rd_kafka_metadata *md = NULL;
  ck_assert_int_eq(rd_kafka_metadata(rk, 0, t, &md, 5000), 0);
  ck_assert_int_eq(md->topics[0].partition_cnt, 3);
  ck_assert_int_eq(md->broker_cnt, 2);
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(t);
  rd_kafka_destroy(rk);

  ck_assert_int_eq(kill(pid, sig), 0);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  ck_assert_int_ne(access(file, F_OK), 0); /* removed on exit */
}

START_TEST(dev_broker_sigterm) {
  run_dev(SIGTERM);
}
END_TEST

START_TEST(dev_broker_sigint) {
  run_dev(SIGINT);
}
END_TEST

int main(void) {
  Suite *s = suite_create("kafka_dev");
  TCase *tc = tcase_create("dev");
  tcase_add_test(tc, dev_broker_sigterm);
  tcase_add_test(tc, dev_broker_sigint);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
