/* SPDX-License-Identifier: Apache-2.0 */
/* Exactly-once Kafka output, by direct calls of the sink writers and the
 * job-wide participant (what the checkpoint coordinator calls): the
 * transactional calls in order, epochs on records, output held after a
 * barrier until its transaction commits, abort on failure, and restart
 * resolution through an injected committed-offsets lookup. On the mock
 * (which neither filters aborted transactions nor keeps transactional
 * offsets) the outputs are checked per epoch header; with
 * SLUICE_TEST_KAFKA=host:port a real broker also checks read_committed. */
#include <check.h>

#include "core/buf.h"
#include "kafka/group_int.h"
#include "kafka/kafka_int.h"
#include "test_kafka_util.h"

static void write_n(sl__kwriter *w, int n, const char *tag) {
  char v[64], err[256];
  for (int i = 0; i < n; i++) {
    snprintf(v, sizeof(v), "%s-%d", tag, i);
    sl_record_t r = {"k", 1, v, strlen(v), 1000 + i};
    ck_assert_msg(sl__kwriter_write(w, &r, NULL, err, sizeof(err)) == 0, "%s",
                  err);
  }
}

static int count_epoch(const tk_reader *r, const char *epoch) {
  char buf[32];
  int n = 0;
  for (size_t i = 0; i < r->n; i++)
    n += strcmp(tk_header(&r->m[i], "sluice.epoch", buf, sizeof(buf)), epoch) ==
         0;
  return n;
}

/* Builds the job-level objects the sinks would; the job never runs. */
static sl__kjob *eos_job(const char *bootstrap, sl_job_t **job) {
  char err[256];
  sl_conf_t *conf = sl_conf_new();
  ck_assert_int_eq(
      sl_conf_set(conf, "kafka.bootstrap.servers", bootstrap, err, sizeof(err)),
      0);
  sl_conf_set(conf, "kafka.log_level", "2", err, sizeof(err));
  sl_conf_set(conf, "broker.timeout.ms", "10000", err, sizeof(err));
  *job = sl_job_new("eos", conf, err, sizeof(err));
  ck_assert_ptr_nonnull(*job);
  sl__kjob *kj = sl__kjob_get(*job);
  ck_assert_ptr_nonnull(kj);
  return kj;
}

START_TEST(eos_protocol_epochs_and_holding) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "out", 1);
  sl_job_t *job;
  sl__kjob *kj = eos_job(c.bootstrap, &job);
  char err[256];
  /* Two sink instances (two workers) share the one producer. */
  sl__kprod *p = sl__kprod_acquire(kj, true, kj->conf, err, sizeof(err));
  ck_assert_msg(p != NULL, "%s", err);
  sl__kprod *p2 = sl__kprod_acquire(kj, true, kj->conf, err, sizeof(err));
  ck_assert_ptr_eq(p, p2);
  sl__kwriter *a = sl__kwriter_new(p, "out", true);
  sl__kwriter *b = sl__kwriter_new(p, "out", true);

  /* Epoch 0: before the first barrier, straight into transaction 1. */
  write_n(a, 3, "a0");
  write_n(b, 2, "b0");
  /* Barrier 1 reaches a first: a's later output waits for the commit
   * while b, not yet at the barrier, still writes into the transaction. */
  ck_assert_int_eq(sl__kwriter_barrier(a, 1, false, err, sizeof(err)), 0);
  write_n(a, 2, "a1");
  ck_assert_uint_eq(sl__kwriter_held(a), 2);
  write_n(b, 1, "b0x");
  ck_assert_uint_eq(sl__kwriter_held(b), 0);
  ck_assert_int_eq(sl__kwriter_barrier(b, 1, false, err, sizeof(err)), 0);
  write_n(b, 1, "b1");
  ck_assert_uint_eq(sl__kwriter_held(b), 1);

  /* The sources' positions at barrier 1 travel with the transaction. */
  ck_assert_int_eq(sl__kpos_add(kj, 1, "grp", "in", 0, 42, -1, false), 0);
  ck_assert_int_eq(sl__kpos_add(kj, 1, "grp", "in", 1, 7, -1, false), 0);
  ck_assert_int_eq(sl__ktxn_commit(1, kj), 0);
  ck_assert_uint_eq(sl__ktxn_released(p), 1);
  ck_assert_int_eq(sl__kwriter_drain(a, err, sizeof(err)), 0);
  ck_assert_int_eq(sl__kwriter_drain(b, err, sizeof(err)), 0);
  ck_assert_uint_eq(sl__kwriter_held(a) + sl__kwriter_held(b), 0);

  /* Checkpoint 2 is given up (e.g. timeout): its records stay in the open
   * transaction, which checkpoint 3 commits. */
  ck_assert_int_eq(sl__kwriter_barrier(a, 2, false, err, sizeof(err)), 0);
  ck_assert_int_eq(sl__kwriter_barrier(b, 2, false, err, sizeof(err)), 0);
  write_n(a, 1, "a2");
  ck_assert_uint_eq(sl__kwriter_held(a), 1);
  sl__ktxn_abort(2, kj);
  ck_assert_int_eq(sl__kwriter_drain(a, err, sizeof(err)), 0);
  ck_assert_uint_eq(sl__kwriter_held(a), 0);
  ck_assert_int_eq(sl__kwriter_barrier(a, 3, false, err, sizeof(err)), 0);
  ck_assert_int_eq(sl__kwriter_barrier(b, 3, false, err, sizeof(err)), 0);
  ck_assert_int_eq(sl__ktxn_commit(3, kj), 0);

  /* Epoch 3's output is open when the job ends without another
   * checkpoint: the last instance's release aborts it. */
  write_n(a, 2, "a3");
  sl__kwriter_free(a);
  sl__kwriter_free(b);
  sl__kprod_release(p);
  sl__kprod_release(p);

  sl__ktxn_event ev[32];
  uint64_t ids[32];
  size_t n = sl__ktxn_log(p, ev, ids, 32);
  const sl__ktxn_event want[] = {
      SL__KTXN_INIT,  SL__KTXN_BEGIN,  SL__KTXN_SEND_OFFSETS, SL__KTXN_COMMIT,
      SL__KTXN_BEGIN, SL__KTXN_COMMIT, SL__KTXN_BEGIN,        SL__KTXN_ABORT};
  ck_assert_uint_eq(n, sizeof(want) / sizeof(want[0]));
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(ev[i] == want[i], "event %zu: %d, expected %d", i, ev[i],
                  want[i]);
  ck_assert_uint_eq(ids[2], 1); /* offsets of checkpoint 1 */
  ck_assert_uint_eq(ids[3], 1);
  ck_assert_uint_eq(ids[5], 3);

  /* Every record carries its epoch (the barrier it came after). */
  tk_reader r;
  tk_reader_open(&r, &c, "out", 1);
  tk_read(&r, 10, 10000);
  tk_read(&r, 12, 500);
  ck_assert_int_eq(count_epoch(&r, "0"), 6);
  ck_assert_int_eq(count_epoch(&r, "1"), 3);
  ck_assert_int_eq(count_epoch(&r, "2"), 1);
  /* Aborted: librdkafka purges what it had not sent yet, and the mock
   * would show what it had (it does not filter aborted records). */
  ck_assert_int_le(count_epoch(&r, "3"), 2);
  /* Held output is written after the commit, so in the log each epoch's
   * records follow every record of the epochs before it. */
  char buf[32];
  long prev = 0;
  for (size_t i = 0; i < r.n; i++) {
    long e = atol(tk_header(&r.m[i], "sluice.epoch", buf, sizeof(buf)));
    ck_assert_int_ge(e, prev);
    prev = e;
  }
  tk_reader_close(&r);
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

START_TEST(eos_commit_after_delivery_failure_aborts) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "out", 1);
  sl_job_t *job;
  sl__kjob *kj = eos_job(c.bootstrap, &job);
  char err[256];
  sl__kprod *p = sl__kprod_acquire(kj, true, kj->conf, err, sizeof(err));
  ck_assert_msg(p != NULL, "%s", err);
  sl__kwriter *a = sl__kwriter_new(p, "out", true);
  write_n(a, 2, "x");
  ck_assert_int_eq(sl__kprod_flush(p, err, sizeof(err)), 0);
  /* The broker refuses the next produce request for good: delivery
   * fails, and so must the commit. */
  rd_kafka_mock_push_request_errors(
      c.mc, 0 /* Produce */, 1, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  sl__kwriter *bad = sl__kwriter_new(p, "out", true);
  write_n(bad, 1, "y");
  for (int i = 0; i < 100 && !sl__kprod_error(p); i++)
    tk_sleep_ms(20);
  ck_assert_int_ne(sl__ktxn_commit(1, kj), 0);
  ck_assert_ptr_nonnull(sl__kprod_error(p));
  sl__ktxn_event ev[16];
  uint64_t ids[16];
  size_t n = sl__ktxn_log(p, ev, ids, 16);
  ck_assert_uint_ge(n, 3);
  ck_assert_int_eq(ev[n - 1], SL__KTXN_ABORT);
  /* Later writes report the failure instead of losing records. */
  sl_record_t rec = {"k", 1, "v", 1, 0};
  ck_assert_int_ne(sl__kwriter_write(a, &rec, NULL, err, sizeof(err)), 0);
  sl__kwriter_free(a);
  sl__kwriter_free(bad);
  sl__kprod_release(p);
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

/* ---- Restart resolution ---------------------------------------------------
 */

typedef struct lookup {
  int64_t answer[2];
  int calls;
} lookup;

static int fake_committed(const char *group, const char *topic, int32_t part,
                          int64_t *offset, char *metadata, size_t metadata_size,
                          void *opaque) {
  lookup *l = opaque;
  (void)metadata, (void)metadata_size;
  ck_assert_str_eq(group, "grp");
  ck_assert_str_eq(topic, "in");
  *offset = l->answer[part];
  l->calls++;
  return 0;
}

START_TEST(eos_restart_resolution_injected) {
  char err[256];
  /* A Kafka source needs a broker list; the job never runs, and the
   * lookup is injected, so nothing is contacted. */
  sl_conf_t *conf = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(conf, "kafka.bootstrap.servers",
                               "localhost:9092", err, sizeof(err)),
                   0);
  sl_job_t *job = sl_job_new("resolve", conf, err, sizeof(err));
  sl__kjob *kj = sl__kjob_get(job);
  lookup l = {{42, 7}, 0};
  ck_assert_int_eq(sl_kafka_set_committed_lookup(job, fake_committed, &l), 0);
  /* The job's Kafka source uid, as sl_source_kafka registers it. */
  ck_assert_ptr_nonnull(sl_source_kafka(job, "src", "in", NULL));
  /* Checkpoint 5's positions as two old subtasks wrote them. */
  sl_buf_t b1, b2;
  sl__buf_init(&b1);
  sl__buf_init(&b2);
  const char *t[] = {"in"};
  int32_t p0[] = {0}, p1[] = {1};
  int64_t o0[] = {42}, o1[] = {7};
  ck_assert_int_eq(sl__kpos_encode(&b1, "grp", t, p0, o0, 1), 0);
  ck_assert_int_eq(sl__kpos_encode(&b2, "grp", t, p1, o1, 1), 0);
  sl_blob_t blobs[2] = {{b1.data, b1.len}, {b2.data, b2.len}};
  const sl_blob_t *pos[2] = {blobs, NULL};
  const char *uids[2] = {"src", "not-kafka"};
  size_t n[2] = {2, 0};
  /* Committed offsets equal the positions: the transaction committed. */
  ck_assert_int_eq(sl__ktxn_resolve(5, uids, pos, n, 2, kj), 1);
  ck_assert_int_eq(l.calls, 2);
  /* One partition behind: it did not; fall back to checkpoint 4. */
  l.answer[1] = 6;
  ck_assert_int_eq(sl__ktxn_resolve(5, uids, pos, n, 2, kj), 0);
  /* Nothing committed at all. */
  l.answer[0] = l.answer[1] = -1;
  ck_assert_int_eq(sl__ktxn_resolve(5, uids, pos, n, 2, kj), 0);
  /* A corrupt blob is an error, not a guess. */
  sl_blob_t junk = {"xx", 2};
  const sl_blob_t *jp[2] = {&junk, NULL};
  size_t jn[2] = {1, 0};
  ck_assert_int_lt(sl__ktxn_resolve(5, uids, jp, jn, 2, kj), 0);
  sl__buf_free(&b1);
  sl__buf_free(&b2);
  sl_job_destroy(job);
}
END_TEST

/* A task's pending checkpoint (docs/scaling.md, restart resolution per
 * task): the group's committed offset and the metadata committed with
 * it, as a broker would answer. */
typedef struct meta_lookup {
  int64_t offset;
  const char *meta; /* NULL: none committed */
  int rc;
} meta_lookup;

static int fake_committed_meta(const char *group, const char *topic,
                               int32_t part, int64_t *offset, char *metadata,
                               size_t metadata_size, void *opaque) {
  meta_lookup *l = opaque;
  ck_assert_str_eq(group, "grp");
  ck_assert_str_eq(topic, "in");
  ck_assert_int_eq(part, 3);
  ck_assert_str_eq(metadata, "");
  *offset = l->offset;
  if (l->meta)
    snprintf(metadata, metadata_size, "%s", l->meta);
  return l->rc;
}

START_TEST(eos_pending_resolution_by_metadata) {
  char err[256];
  sl_conf_t *conf = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(conf, "kafka.bootstrap.servers",
                               "localhost:9092", err, sizeof(err)),
                   0);
  sl_job_t *job = sl_job_new("resolve-task", conf, err, sizeof(err));
  sl__kjob *kj = sl__kjob_get(job);
  meta_lookup l = {0};
  ck_assert_int_eq(sl_kafka_set_committed_lookup(job, fake_committed_meta, &l),
                   0);
  const char *chk17 = "instances/h-7-1/chk-17";
  /* Pending: checkpoint 17 of instance h-7-1 at pending_offset. When the
   * task's partition read nothing in epoch 17, that is the pointer's
   * offset (1200), and only the metadata tells commit from abort. */
  struct {
    int64_t offset;   /* the group's committed offset */
    const char *meta; /* committed with it; NULL: none */
    int64_t pending_offset;
    int want;
  } cases[] = {
      {1200, "instances/h-7-1/chk-17", 1200, 1}, /* 17 committed */
      {1200, "instances/h-7-1/chk-16", 1200, 0}, /* aborted: 16 the last */
      {1234, "instances/h-7-1/chk-17", 1234, 1}, /* read in 17, committed */
      {1200, "instances/h-7-1/chk-16", 1234, 0}, /* read in 17, aborted */
      {1200, "instances/h-9-4/chk-17", 1200, 0}, /* another instance's 17 */
      {1200, NULL, 1200, 1}, /* no metadata (an older build): offsets */
      {1200, NULL, 1234, 0},
      {-1, NULL, 1200, 0}, /* the group committed nothing */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    l = (meta_lookup){cases[i].offset, cases[i].meta, 0};
    int got = sl__ktxn_pending_committed(kj, "grp", "in", 3, chk17,
                                         cases[i].pending_offset);
    ck_assert_msg(got == cases[i].want,
                  "case %zu: committed %" PRId64 " metadata %s, pending %s "
                  "at %" PRId64 ": got %d, want %d",
                  i, cases[i].offset, cases[i].meta ? cases[i].meta : "(none)",
                  chk17, cases[i].pending_offset, got, cases[i].want);
  }
  /* The lookup's error is the answer, not a guess. */
  l = (meta_lookup){1200, chk17, SL_ERR_KAFKA};
  ck_assert_int_eq(sl__ktxn_pending_committed(kj, "grp", "in", 3, chk17, 1200),
                   SL_ERR_KAFKA);
  /* Metadata cut to the caller's buffer stays a string. */
  int64_t off;
  char small[8];
  l = (meta_lookup){1200, chk17, 0};
  ck_assert_int_eq(
      sl__ktxn_committed(kj, "grp", "in", 3, &off, small, sizeof(small)), 0);
  ck_assert_int_eq(off, 1200);
  ck_assert_str_eq(small, "instanc");
  sl_job_destroy(job);
}
END_TEST

/* ---- A real broker: read_committed ------------------------------------------
 */

START_TEST(eos_read_committed_real_broker) {
  const char *bs = getenv("SLUICE_TEST_KAFKA");
  if (!bs || !*bs) {
    fprintf(stderr, "eos_read_committed_real_broker: SKIPPED: set "
                    "SLUICE_TEST_KAFKA=host:port to run it against a real "
                    "broker\n");
    return;
  }
  char topic[64], err[256];
  snprintf(topic, sizeof(topic), "sluice-eos-%ld", (long)time(NULL));
  sl_job_t *job;
  sl__kjob *kj = eos_job(bs, &job);
  /* Auto-created topic on first produce (broker default). */
  sl__kprod *p = sl__kprod_acquire(kj, true, kj->conf, err, sizeof(err));
  ck_assert_msg(p != NULL, "%s", err);
  sl__kwriter *a = sl__kwriter_new(p, topic, true);
  write_n(a, 5, "committed");
  ck_assert_int_eq(sl__kwriter_barrier(a, 1, false, err, sizeof(err)), 0);
  ck_assert_int_eq(
      sl__kpos_add(kj, 1, "sluice-eos-grp", topic, 0, 5, -1, false), 0);
  ck_assert_int_eq(sl__ktxn_commit(1, kj), 0);
  ck_assert_int_eq(sl__kwriter_drain(a, err, sizeof(err)), 0);
  write_n(a, 3, "aborted");
  sl__kwriter_free(a);
  sl__kprod_release(p); /* aborts epoch 1 */

  /* read_committed sees epoch 0 only. */
  tk_cluster c;
  snprintf(c.bootstrap, sizeof(c.bootstrap), "%s", bs);
  tk_reader r;
  tk_reader_open(&r, &c, topic, 1);
  rd_kafka_destroy(r.rk);
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bs, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", "tk-reader", NULL, 0);
  rd_kafka_conf_set(conf, "isolation.level", "read_committed", NULL, 0);
  r.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  rd_kafka_poll_set_consumer(r.rk);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, 0)->offset =
      RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(r.rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  tk_read(&r, 100, 5000);
  ck_assert_int_eq(count_epoch(&r, "0"), 5);
  ck_assert_int_eq(count_epoch(&r, "1"), 0);
  tk_reader_close(&r);
  /* The transaction carried the offsets: the real lookup resolves. */
  sl_buf_t b;
  sl__buf_init(&b);
  const char *t[] = {topic};
  int32_t p0[] = {0};
  int64_t o0[] = {5};
  sl__kpos_encode(&b, "sluice-eos-grp", t, p0, o0, 1);
  sl_blob_t blob = {b.data, b.len};
  const sl_blob_t *pos[1] = {&blob};
  size_t n[1] = {1};
  ck_assert_ptr_nonnull(sl_source_kafka(job, "src", topic, NULL));
  const char *uids[1] = {"src"};
  ck_assert_int_eq(sl__ktxn_resolve(1, uids, pos, n, 1, kj), 1);
  sl__buf_free(&b);
  sl_job_destroy(job);
}
END_TEST

/* A full job with an exactly_once sink and no checkpoint: its output goes
 * into the open transaction with epoch 0, and stopping the job aborts it
 * (a restart would replay those records). */
START_TEST(eos_sink_in_job_aborts_uncheckpointed_tail) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 2);
  tk_topic(&c, "out", 1);
  rd_kafka_t *p = tk_producer(&c);
  for (int i = 0; i < 6; i++)
    tk_send(p, "in", i % 2, "k", "v", 0, NULL, NULL);
  tk_flush(p);
  rd_kafka_destroy(p);
  const char *kv[] = {"sink.delivery.guarantee", "exactly_once", NULL};
  sl_job_t *job = tk_job("eosjob", tk_conf(&c, 2, kv));
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  ck_assert_int_eq(
      sl_sink_kafka(sl_source_kafka(job, "in", "in", &so), "out", "out", NULL),
      0);
  tk_run r;
  tk_run_start(&r, job);
  tk_reader rd;
  tk_reader_open(&rd, &c, "out", 1);
  tk_read(&rd, 6, 15000);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  ck_assert_int_eq(count_epoch(&rd, "0"), 6);
  tk_reader_close(&rd);
  sl__kjob *kj = sl__kjob_get(job);
  sl__ktxn_event ev[8];
  uint64_t ids[8];
  size_t n = sl__ktxn_log(kj->txn, ev, ids, 8);
  ck_assert_uint_eq(n, 3);
  ck_assert_int_eq(ev[0], SL__KTXN_INIT);
  ck_assert_int_eq(ev[1], SL__KTXN_BEGIN);
  ck_assert_int_eq(ev[2], SL__KTXN_ABORT);
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

/* at_least_once: a barrier returns only once everything before it is
 * acknowledged by the broker. */
START_TEST(at_least_once_barrier_flushes) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "out", 1);
  sl_job_t *job;
  sl__kjob *kj = eos_job(c.bootstrap, &job);
  char err[256];
  sl__kprod *p = sl__kprod_acquire(kj, false, kj->conf, err, sizeof(err));
  ck_assert_msg(p != NULL, "%s", err);
  sl__kwriter *w = sl__kwriter_new(p, "out", false);
  write_n(w, 50, "alo");
  ck_assert_int_eq(sl__kwriter_barrier(w, 1, true, err, sizeof(err)), 0);
  ck_assert_int_eq(rd_kafka_outq_len(sl__kprod_handle(p)), 0);
  tk_reader r;
  tk_reader_open(&r, &c, "out", 1);
  ck_assert_uint_eq(tk_read(&r, 50, 5000), 50);
  ck_assert_int_eq(count_epoch(&r, "0"), 0); /* no epoch header */
  tk_reader_close(&r);
  sl__kwriter_free(w);
  sl__kprod_release(p);
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

/* ---- Fencing in group mode ------------------------------------------------
 */

static void fence_assigned(void *sub, rd_kafka_topic_partition_list_t *l) {
  (void)sub;
  (void)l;
}

static bool fence_revoked(void *sub, const rd_kafka_topic_partition_list_t *l,
                          bool now) {
  (void)sub;
  (void)l;
  (void)now;
  return false;
}

/* A member of group "fence" reading "in" through the source's rebalance
 * callback (group.c), with a session timeout longer than the mock's 3 s
 * wait for a new group's members. After its assignment it is polled
 * only when the test says so: what a worker that is stopped, or not
 * scheduled yet, does. */
static rd_kafka_t *fence_member(const tk_cluster *c, sl__kjob *kj,
                                sl__kgroup *g) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  const char *kv[] = {"bootstrap.servers",
                      c->bootstrap,
                      "group.id",
                      "fence",
                      "session.timeout.ms",
                      "4000",
                      "heartbeat.interval.ms",
                      "100",
                      "log_level",
                      "2",
                      NULL};
  for (int i = 0; kv[i]; i += 2)
    ck_assert_int_eq(
        rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err)),
        RD_KAFKA_CONF_OK);
  *g = (sl__kgroup){.assigned = fence_assigned,
                    .revoked = fence_revoked,
                    .conf = kj->conf,
                    .job = "eos",
                    .uid = "in"};
  ck_assert_int_eq(sl__kgroup_conf(conf, kj->conf, g, err, sizeof(err)), 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  g->rk = rk;
  rd_kafka_poll_set_consumer(rk);
  char *topics[] = {"in"};
  ck_assert_int_eq(sl__kgroup_join(rk, topics, 1, err, sizeof(err)), 0);
  rd_kafka_topic_partition_list_t *now = NULL;
  for (int i = 0; i < 300; i++) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
    if (m)
      rd_kafka_message_destroy(m);
    ck_assert_int_eq(rd_kafka_assignment(rk, &now), 0);
    int cnt = now->cnt;
    rd_kafka_topic_partition_list_destroy(now);
    if (cnt == 2)
      return rk;
  }
  ck_abort_msg("the member was never assigned its partitions");
  return NULL;
}

/* The commit of a process whose group member lost its assignment is
 * refused and aborted, also when the member's own thread has not polled
 * since (so no rebalance callback told the source): the heartbeats go
 * unanswered for longer than the session timeout, librdkafka's lease
 * runs out, and the commit's check of the member sees it. A commit while
 * it holds its assignment goes through. */
static void commit_fenced(bool session_runs_out) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 2);
  tk_topic(&c, "out", 1);
  sl_job_t *job;
  sl__kjob *kj = eos_job(c.bootstrap, &job);
  char err[256];
  sl__kprod *p = sl__kprod_acquire(kj, true, kj->conf, err, sizeof(err));
  ck_assert_msg(p != NULL, "%s", err);
  sl__kwriter *w = sl__kwriter_new(p, "out", true);
  sl__kgroup g;
  rd_kafka_t *rk = fence_member(&c, kj, &g);
  ck_assert_int_eq(sl__kgroup_register(kj, &g), 0);

  write_n(w, 2, "held");
  ck_assert_int_eq(sl__kpos_add(kj, 1, "fence", "in", 0, 5, g.member, false),
                   0);
  ck_assert_int_eq(sl__ktxn_commit(1, kj), 0);
  ck_assert_uint_eq(sl__ktxn_released(p), 1);

  if (session_runs_out) {
    /* The coordinator answers the next heartbeat only after 6 s. */
    ck_assert_int_eq(
        rd_kafka_mock_broker_push_request_error_rtts(
            c.mc, 1, 12 /* Heartbeat */, 1, RD_KAFKA_RESP_ERR_NO_ERROR, 6000),
        0);
  } else {
    /* The coordinator no longer knows the member. */
    rd_kafka_mock_push_request_errors(c.mc, 12 /* Heartbeat */, 1,
                                      RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID);
  }
  /* librdkafka's main thread notices on its own; nobody polls the
   * member, so no rebalance callback runs. */
  for (int i = 0; i < 400 && !rd_kafka_assignment_lost(rk); i++)
    tk_sleep_ms(50);
  ck_assert_msg(rd_kafka_assignment_lost(rk), "the member never lost it");
  ck_assert_int_eq(atomic_load(&g.lost), 0);
  write_n(w, 2, "zombie");
  ck_assert_int_eq(sl__kpos_add(kj, 2, "fence", "in", 0, 7, g.member, false),
                   0);
  ck_assert_int_eq(sl__ktxn_commit(2, kj), SL_ERR_KAFKA);
  ck_assert_int_eq(atomic_load(&g.lost), 1);
  ck_assert_uint_eq(sl__ktxn_released(p), 1);
  const char *why = sl__kprod_error(p);
  ck_assert_msg(why && strstr(why, "fenced: source in[0] lost its partitions"),
                "%s", why ? why : "(none)");
  sl__ktxn_event ev[16];
  uint64_t ids[16];
  size_t n = sl__ktxn_log(p, ev, ids, 16);
  const sl__ktxn_event want[] = {SL__KTXN_INIT,         SL__KTXN_BEGIN,
                                 SL__KTXN_SEND_OFFSETS, SL__KTXN_COMMIT,
                                 SL__KTXN_BEGIN,        SL__KTXN_ABORT};
  ck_assert_uint_eq(n, sizeof(want) / sizeof(want[0]));
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(ev[i] == want[i], "event %zu: %d, expected %d", i, ev[i],
                  want[i]);
  ck_assert_uint_eq(ids[5], 2);

  sl__kgroup_unregister(kj, &g);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  sl__kwriter_free(w);
  sl__kprod_release(p);
  sl_job_destroy(job);
  tk_stop(&c);
}

START_TEST(eos_commit_fenced_when_session_ran_out) {
  commit_fenced(true);
}
END_TEST

START_TEST(eos_commit_fenced_when_member_unknown) {
  commit_fenced(false);
}
END_TEST

static Suite *eos_suite(void) {
  Suite *s = suite_create("kafka_eos");
  TCase *tc = tcase_create("eos");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, eos_protocol_epochs_and_holding);
  tcase_add_test(tc, eos_commit_after_delivery_failure_aborts);
  tcase_add_test(tc, eos_restart_resolution_injected);
  tcase_add_test(tc, eos_pending_resolution_by_metadata);
  tcase_add_test(tc, at_least_once_barrier_flushes);
  tcase_add_test(tc, eos_sink_in_job_aborts_uncheckpointed_tail);
  tcase_add_test(tc, eos_read_committed_real_broker);
  tcase_add_test(tc, eos_commit_fenced_when_session_ran_out);
  tcase_add_test(tc, eos_commit_fenced_when_member_unknown);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(eos_suite());
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
