/* SPDX-License-Identifier: Apache-2.0 */
/* Interop with independent Kafka clients on the mock cluster: what
 * python3-confluent-kafka produces a job consumes, what the job produces
 * kcat and python read back, with keys, timestamps and headers intact and
 * keyed records in the partition the Java client's murmur2 partitioner
 * picks. Skips with a message when a client is not installed. */
#include <check.h>
#include <unistd.h>

#include "test_kafka_util.h"

#define PY "/usr/bin/python3"
#define N 12
#define TS0 1700000000000LL

static bool have(const char *cmd) {
  char buf[512];
  snprintf(buf, sizeof(buf), "%s >/dev/null 2>&1", cmd);
  return system(buf) == 0;
}

/* Kafka's murmur2 (Utils.murmur2) and partition choice for a key. */
static int32_t java_partition(const char *key, size_t len, int parts) {
  const uint32_t m = 0x5bd1e995, seed = 0x9747b28c;
  const int r = 24;
  uint32_t h = seed ^ (uint32_t)len;
  const unsigned char *d = (const unsigned char *)key;
  size_t i = 0;
  for (; i + 4 <= len; i += 4) {
    uint32_t k = (uint32_t)d[i] | (uint32_t)d[i + 1] << 8 |
                 (uint32_t)d[i + 2] << 16 | (uint32_t)d[i + 3] << 24;
    k *= m;
    k ^= k >> r;
    k *= m;
    h *= m;
    h ^= k;
  }
  switch (len - i) {
  case 3:
    h ^= (uint32_t)d[i + 2] << 16;
    /* fall through */
  case 2:
    h ^= (uint32_t)d[i + 1] << 8;
    /* fall through */
  case 1:
    h ^= d[i];
    h *= m;
  }
  h ^= h >> 13;
  h *= m;
  h ^= h >> 15;
  return (int32_t)((h & 0x7fffffff) % (uint32_t)parts);
}

static int add_via(sl_ctx_t *ctx, const sl_record_t *rec, sl_kafka_headers_t *h,
                   void *opaque) {
  (void)ctx;
  (void)rec;
  (void)opaque;
  return sl_kafka_headers_add(h, "via", "sluice", 6);
}

START_TEST(python_produces_kcat_and_python_read) {
  if (!have(PY " -c 'import confluent_kafka'")) {
    fprintf(stderr, "interop: SKIPPED: python3-confluent-kafka is not "
                    "installed (apt-get install python3-confluent-kafka)\n");
    return;
  }
  bool kcat = have("kcat -V");
  if (!kcat)
    fprintf(stderr, "interop: kcat not installed, reading with python only "
                    "(apt-get install kcat)\n");
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "ext-in", 2);
  tk_topic(&c, "ext-out", 3);

  /* An independent producer: keys, CreateTime timestamps, headers. */
  char cmd[4096];
  snprintf(cmd, sizeof(cmd),
           PY
           " -c '\n"
           "import sys\n"
           "from confluent_kafka import Producer\n"
           "p = Producer({\"bootstrap.servers\": sys.argv[1]})\n"
           "for i in range(%d):\n"
           "    p.produce(\"ext-in\", key=\"key-%%d\" %% i, value=\"val-%%d\" "
           "%% i,\n"
           "              timestamp=%lld + i, headers=[(\"h\", \"x%%d\" %% "
           "i), (\"trace\", \"t\")])\n"
           "assert p.flush(10) == 0\n"
           "' %s",
           N, TS0, c.bootstrap);
  ck_assert_int_eq(system(cmd), 0);

  sl_job_t *job = tk_job("interop", tk_conf(&c, 2, NULL));
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "ext-in", &so);
  sl_kafka_sink_opts_t ko = {.copy_headers = true, .headers = add_via};
  ck_assert_int_eq(sl_sink_kafka(src, "out", "ext-out", &ko), 0);
  tk_run r;
  tk_run_start(&r, job);
  tk_reader rd;
  tk_reader_open(&rd, &c, "ext-out", 3);
  tk_read(&rd, N, 15000);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  ck_assert_uint_eq(rd.n, N);
  tk_reader_close(&rd);
  sl_job_destroy(job);

  /* python reads what the job wrote. */
  char line[1024];
  snprintf(cmd, sizeof(cmd),
           "timeout 30 " PY " -c '\n"
           "import sys\n"
           "from confluent_kafka import Consumer, TopicPartition\n"
           "c = Consumer({\"bootstrap.servers\": sys.argv[1], \"group.id\": "
           "\"py\"})\n"
           "c.assign([TopicPartition(\"ext-out\", i, 0) for i in range(3)])\n"
           "n = 0\n"
           "while n < %d:\n"
           "    m = c.poll(1.0)\n"
           "    if m is None or m.error(): continue\n"
           "    n += 1\n"
           "    h = \",\".join(\"%%s=%%s\" %% (k, v.decode()) for k, v in "
           "m.headers())\n"
           "    print(\"%%s|%%s|%%d|%%d|%%s\" %% (m.key().decode(), "
           "m.value().decode(), m.timestamp()[1], m.partition(), h))\n"
           "c.close()\n"
           "' %s",
           N, c.bootstrap);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  int seen[N] = {0};
  while (fgets(line, sizeof(line), p)) {
    char key[64], val[64], hdr[256];
    long long ts;
    int part;
    ck_assert_msg(sscanf(line, "%63[^|]|%63[^|]|%lld|%d|%255s", key, val, &ts,
                         &part, hdr) == 5,
                  "bad line %s", line);
    int i = atoi(key + 4);
    ck_assert(i >= 0 && i < N);
    seen[i]++;
    char want[64];
    snprintf(want, sizeof(want), "val-%d", i);
    ck_assert_str_eq(val, want);
    ck_assert_int_eq(ts, TS0 + i);
    snprintf(want, sizeof(want), "h=x%d,trace=t,via=sluice", i);
    ck_assert_str_eq(hdr, want);
    ck_assert_int_eq(part, java_partition(key, strlen(key), 3));
  }
  ck_assert_int_eq(pclose(p), 0);
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(seen[i], 1);

  /* kcat reads it too. */
  if (kcat) {
    snprintf(cmd, sizeof(cmd),
             "timeout 30 kcat -b %s -C -t ext-out -o beginning -c %d -e -q "
             "-f '%%k|%%s|%%T|%%p|%%h\\n'",
             c.bootstrap, N);
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    int n = 0;
    while (fgets(line, sizeof(line), p)) {
      char key[64], val[64], hdr[256];
      long long ts;
      int part;
      ck_assert_msg(sscanf(line, "%63[^|]|%63[^|]|%lld|%d|%255s", key, val, &ts,
                           &part, hdr) == 5,
                    "bad kcat line %s", line);
      int i = atoi(key + 4);
      ck_assert_int_eq(ts, TS0 + i);
      ck_assert_ptr_nonnull(strstr(hdr, "via=sluice"));
      n++;
    }
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_int_eq(n, N);
  }
  tk_stop(&c);
}
END_TEST

/* The records a kcat producer writes (key:value with a header) arrive
 * with their key, and the header is visible to chained functions. */
typedef struct seen {
  pthread_mutex_t lock;
  int n, with_header;
} seen;

static int check_kcat(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  seen *s = opaque;
  const sl_kafka_msg_t *m = sl_kafka_current(ctx);
  const void *v;
  size_t len;
  bool h = m && sl_kafka_msg_header(m, "src", &v, &len) == SL_OK && len == 4 &&
           memcmp(v, "kcat", 4) == 0;
  bool key = rec->key_len == 2 && memcmp(rec->key, "k", 1) == 0;
  pthread_mutex_lock(&s->lock);
  s->n += key;
  s->with_header += h;
  pthread_mutex_unlock(&s->lock);
  return 0;
}

START_TEST(kcat_produces_job_consumes) {
  if (!have("kcat -V")) {
    fprintf(stderr, "interop: SKIPPED: kcat is not installed (apt-get "
                    "install kcat)\n");
    return;
  }
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "kc", 1);
  char cmd[512];
  snprintf(cmd, sizeof(cmd),
           "printf 'k1:v1\\nk2:v2\\nk3:v3\\n' | timeout 30 kcat -b %s -P -t kc "
           "-K: -H src=kcat -q",
           c.bootstrap);
  ck_assert_int_eq(system(cmd), 0);
  sl_job_t *job = tk_job("kcat", tk_conf(&c, 1, NULL));
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  seen s = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
  ck_assert_int_eq(
      sl_sink(sl_source_kafka(job, "in", "kc", &so), "s", check_kcat, &s), 0);
  tk_run r;
  tk_run_start(&r, job);
  for (int i = 0; i < 400; i++) {
    pthread_mutex_lock(&s.lock);
    int n = s.n;
    pthread_mutex_unlock(&s.lock);
    if (n >= 3)
      break;
    tk_sleep_ms(25);
  }
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  ck_assert_int_eq(s.n, 3);
  ck_assert_int_eq(s.with_header, 3);
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("kafka_interop");
  TCase *tc = tcase_create("interop");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, python_produces_kcat_and_python_read);
  tcase_add_test(tc, kcat_produces_job_consumes);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
