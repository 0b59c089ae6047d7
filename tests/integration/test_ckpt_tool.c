/* SPDX-License-Identifier: Apache-2.0 */
/* sluice-ckpt end to end: a real keyed job (generator, process function
 * with value, list and map state and timers) leaves checkpoints; the built
 * tool lists, inspects, verifies, dumps, prunes and copies them, finds
 * damage (a flipped byte, a truncated file, no _metadata), and a copy made
 * by restore --to restarts the job exactly as the original does. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>

#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "core/crc32c.h"
#include "core/hash.h"
#include "sluice.h"
#include "test_kafka_util.h"

#define KEYS 10

/* ---- The job ------------------------------------------------------------ */

static int gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  static __thread char key[32], val[32];
  snprintf(key, sizeof(key), "user-%d", (int)(i % KEYS));
  snprintf(val, sizeof(val), "v%llu", (unsigned long long)i);
  out->key = key;
  out->key_len = strlen(key);
  out->value = val;
  out->value_len = strlen(val);
  out->ts = (int64_t)i;
  return 0;
}

typedef struct states {
  sl_state_t *count, *last, *firsts, *seen, *ttl;
} states;

static int p_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  states *s = calloc(1, sizeof(*s));
  sl_state_desc_t d = {.name = "count", .kind = SL_STATE_VALUE};
  s->count = sl_state_register(ctx, &d);
  d.name = "last";
  s->last = sl_state_register(ctx, &d);
  d.name = "firsts";
  d.kind = SL_STATE_LIST;
  s->firsts = sl_state_register(ctx, &d);
  d.name = "seen";
  d.kind = SL_STATE_MAP;
  s->seen = sl_state_register(ctx, &d);
  /* With TTL: each value starts with the TTL layer's 8-byte timestamp. */
  sl_state_desc_t t = {.name = "ttl",
                       .kind = SL_STATE_VALUE,
                       .ttl = {.ttl_ms = INT64_MAX, .time = SL_TTL_EVENT_TIME}};
  s->ttl = sl_state_register(ctx, &t);
  sl_ctx_set_local(ctx, s);
  return s->count && s->last && s->firsts && s->seen && s->ttl ? 0
                                                               : SL_ERR_STATE;
}

static void p_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int p_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  states *s = sl_ctx_local(ctx);
  uint64_t n = 0;
  const void *v;
  size_t len;
  if (sl_value_get(ctx, s->count, &v, &len) == 1 && len == sizeof(n))
    memcpy(&n, v, sizeof(n));
  n++;
  int rc = sl_value_put(ctx, s->count, &n, sizeof(n));
  if (!rc)
    rc = sl_value_put(ctx, s->last, rec->value, rec->value_len);
  if (!rc && n <= 2)
    rc = sl_list_add(ctx, s->firsts, rec->value, rec->value_len);
  char mk[8];
  snprintf(mk, sizeof(mk), "m%d", (int)(n % 3));
  if (!rc)
    rc = sl_map_put(ctx, s->seen, mk, strlen(mk), "1", 1);
  if (!rc)
    rc = sl_value_put(ctx, s->ttl, "t", 1);
  /* Far in the future: still pending in the final checkpoint. */
  if (!rc && n == 1)
    rc = sl_timer_set(ctx, SL_PROC_TIME, sl_ctx_now(ctx) + 3600 * 1000);
  char out[32];
  snprintf(out, sizeof(out), "%llu", (unsigned long long)n);
  sl_record_t o = *rec;
  o.value = out;
  o.value_len = strlen(out);
  return rc ? rc : sl_emit(ctx, &o);
}

static int p_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *op) {
  (void)ctx;
  (void)d;
  (void)ts;
  (void)op;
  return 0;
}

/* Highest count emitted per key. */
typedef struct result {
  pthread_mutex_t mu;
  long max[KEYS];
} result;

static int sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  result *r = opaque;
  char k[32] = "", v[32] = "";
  memcpy(k, rec->key, rec->key_len < 31 ? rec->key_len : 31);
  memcpy(v, rec->value, rec->value_len < 31 ? rec->value_len : 31);
  int i = atoi(k + 5);
  long n = atol(v);
  pthread_mutex_lock(&r->mu);
  if (i >= 0 && i < KEYS && n > r->max[i])
    r->max[i] = n;
  pthread_mutex_unlock(&r->mu);
  return 0;
}

/* A run of the job: its return code, message and the checkpoint it
 * restored. */
typedef struct run {
  int rc;
  char msg[1024];
  uint64_t restored_from;
} run;

/* Runs the job over records [0, count) at P=2 with checkpoints in dir,
 * restoring from `from` when set; fills r and *out. */
/* checkpoint.retained of the runs. */
static const char *retained = "10";

static void run_job_as(const char *dir, const char *from, uint64_t count,
                       result *r, run *out) {
  char err[256];
  sl_conf_t *conf = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(conf, "parallelism", "2", err, sizeof(err)), 0);
  ck_assert_int_eq(sl_conf_set(conf, "checkpoint.dir", dir, err, sizeof(err)),
                   0);
  ck_assert_int_eq(
      sl_conf_set(conf, "checkpoint.retained", retained, err, sizeof(err)), 0);
  ck_assert_int_eq(sl_conf_set(conf, "log.level", "error", err, sizeof(err)),
                   0);
  if (from)
    ck_assert_int_eq(sl_conf_set(conf, "restore.from", from, err, sizeof(err)),
                     0);
  sl_job_t *job = sl_job_new("ckpt-tool", conf, err, sizeof(err));
  ck_assert_msg(job != NULL, "%s", err);
  memset(r, 0, sizeof(*r));
  pthread_mutex_init(&r->mu, NULL);
  sl_generator_opts_t g = {.count = count, .gen = gen, .parallel = true};
  sl_stream_t *s = sl_source_generator(job, "gen", &g);
  sl_process_ops_t ops = {.open = p_open,
                          .on_element = p_element,
                          .on_timer = p_timer,
                          .close = p_close};
  s = sl_process(sl_key_by(s, NULL, NULL), "counter", &ops, NULL);
  ck_assert_int_eq(sl_sink(s, "sink", sink, r), 0);
  out->rc = sl_job_run(job);
  snprintf(out->msg, sizeof(out->msg), "%s", sl_job_errmsg(job));
  sl_checkpoint_info_t info;
  ck_assert_int_eq(sl_job_checkpoint_info(job, &info), 0);
  out->restored_from = info.restored_from;
  sl_job_destroy(job);
  pthread_mutex_destroy(&r->mu);
}

static void run_job(const char *dir, const char *from, uint64_t count,
                    result *r) {
  run x;
  run_job_as(dir, from, count, r, &x);
  ck_assert_msg(x.rc == 0, "job failed: %s", x.msg);
}

/* ---- Running the tool --------------------------------------------------- */

typedef struct out {
  char *text;
  int code;
} out;

/* Runs sluice-ckpt with args (a shell fragment); stdout in o->text (with
 * stderr too when merge). */
static void tool(out *o, bool merge, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void tool(out *o, bool merge, const char *fmt, ...) {
  const char *build = getenv("SLUICE_BUILD_ROOT");
  char args[2048], cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof(args), fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof(cmd), "%s/tools/sluice-ckpt %s %s",
           build ? build : "build", args, merge ? "2>&1" : "2>/dev/null");
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  size_t cap = 1 << 16, n = 0;
  o->text = malloc(cap);
  for (size_t got; (got = fread(o->text + n, 1, cap - n - 1, p)) > 0;) {
    n += got;
    if (n + 1 == cap)
      o->text = realloc(o->text, cap *= 2);
  }
  o->text[n] = 0;
  int st = pclose(p);
  o->code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_t *tool_json(int want_code, const char *fmt, const char *a,
                         const char *b) {
  out o;
  tool(&o, false, fmt, a, b);
  ck_assert_msg(o.code == want_code, "exit %d, expected %d: %s", o.code,
                want_code, o.text);
  json_error_t je;
  json_t *j = json_loads(o.text, 0, &je);
  ck_assert_msg(j != NULL, "not JSON (%s): %s", je.text, o.text);
  free(o.text);
  return j;
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/sl-ckpt-tool-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(d));
  return d;
}

static void rmrf(const char *path) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
  ck_assert_int_eq(system(cmd), 0);
}

/* The newest checkpoint's path in dir. */
static char *newest(const char *dir) {
  json_t *l = tool_json(0, "--json list %s%s", dir, "");
  json_t *c = json_array_get(json_object_get(l, "checkpoints"), 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_str_eq(json_string_value(json_object_get(c, "status")), "complete");
  char *p = strdup(json_string_value(json_object_get(c, "path")));
  json_decref(l);
  return p;
}

static void flip_byte(const char *path, long off) {
  FILE *f = fopen(path, "r+b");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
  int c = fgetc(f);
  ck_assert_int_ne(c, EOF);
  ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
  fputc(c ^ 0x40, f);
  ck_assert_int_eq(fclose(f), 0);
}

/* ---- Tests -------------------------------------------------------------- */

START_TEST(list_inspect_verify_dump) {
  char *dir = tmpdir();
  result r;
  run_job(dir, NULL, 1000, &r);
  char *chk = newest(dir);

  out o;
  tool(&o, true, "list %s", dir);
  ck_assert_int_eq(o.code, 0);
  ck_assert_msg(strstr(o.text, "complete") && strstr(o.text, "yes"), "%s",
                o.text);
  free(o.text);

  json_t *in = tool_json(0, "--json inspect %s%s", chk, "");
  ck_assert_int_eq(json_integer_value(json_object_get(in, "parallelism")), 2);
  ck_assert_str_eq(json_string_value(json_object_get(in, "backend")),
                   "hashmap");
  /* Two generator subtasks, together at the end of the input. */
  json_t *pos = json_object_get(in, "positions");
  ck_assert_uint_eq(json_array_size(pos), 2);
  long next_sum = 0;
  for (size_t i = 0; i < 2; i++) {
    json_t *p = json_array_get(pos, i);
    ck_assert_str_eq(json_string_value(json_object_get(p, "decoder")),
                     "generator");
    json_t *f = json_object_get(p, "fields");
    ck_assert_int_eq(json_integer_value(json_object_get(f, "step")), 2);
    next_sum += (long)json_integer_value(json_object_get(f, "next"));
  }
  ck_assert_int_eq(next_sum, 1000 + 1001);
  /* One entry per key in each value state; states named uid/name. */
  json_t *st, *count = NULL;
  size_t i;
  json_array_foreach(json_object_get(in, "states"), i, st) {
    if (!strcmp(json_string_value(json_object_get(st, "name")),
                "counter/count"))
      count = st;
  }
  ck_assert_ptr_nonnull(count);
  ck_assert_int_eq(json_integer_value(json_object_get(count, "entries")), KEYS);
  ck_assert_str_eq(json_string_value(json_object_get(count, "type")), "value");
  long kg_entries = 0;
  json_t *kg;
  json_array_foreach(json_object_get(in, "key_groups"), i, kg) {
    kg_entries += (long)json_integer_value(json_object_get(kg, "entries"));
  }
  /* values count, last, ttl; list firsts; map seen (3 keys) */
  ck_assert_int_eq(kg_entries, KEYS * (3 + 1 + 3));
  json_t *t;
  long timers = 0;
  json_array_foreach(json_object_get(in, "timers"), i, t) {
    if (!strcmp(json_string_value(json_object_get(t, "domain")), "processing"))
      timers += (long)json_integer_value(json_object_get(t, "count"));
  }
  ck_assert_int_eq(timers, KEYS);
  json_decref(in);

  tool(&o, true, "inspect %s", chk);
  ck_assert_int_eq(o.code, 0);
  ck_assert_msg(strstr(o.text, "generator next=") &&
                    strstr(o.text, "counter/firsts"),
                "%s", o.text);
  free(o.text);

  tool(&o, true, "verify %s", chk);
  ck_assert_msg(o.code == 0 && strstr(o.text, "valid"), "%s", o.text);
  free(o.text);

  /* One key: its last value as text, its count as binary (base64). */
  tool(&o, false, "dump %s --uid counter --key user-3", chk);
  ck_assert_int_eq(o.code, 0);
  int lines = 0;
  bool saw_last = false, saw_list = false;
  for (char *save, *l = strtok_r(o.text, "\n", &save); l;
       l = strtok_r(NULL, "\n", &save), lines++) {
    json_t *j = json_loads(l, 0, NULL);
    ck_assert_msg(j != NULL, "not JSON: %s", l);
    ck_assert_str_eq(json_string_value(json_object_get(j, "key")), "user-3");
    const char *s = json_string_value(json_object_get(j, "state"));
    if (!strcmp(s, "last")) {
      ck_assert_str_eq(json_string_value(json_object_get(j, "value")), "v993");
      ck_assert_str_eq(json_string_value(json_object_get(j, "value_enc")),
                       "utf8");
      saw_last = true;
    } else if (!strcmp(s, "count")) {
      /* 100 as a little-endian u64 */
      ck_assert_str_eq(json_string_value(json_object_get(j, "value")),
                       "ZAAAAAAAAAA=");
      ck_assert_str_eq(json_string_value(json_object_get(j, "value_enc")),
                       "base64");
    } else if (!strcmp(s, "firsts")) {
      json_t *e = json_object_get(j, "elements");
      ck_assert_uint_eq(json_array_size(e), 2);
      ck_assert_str_eq(
          json_string_value(json_object_get(json_array_get(e, 0), "value")),
          "v3");
      saw_list = true;
    }
    json_decref(j);
  }
  ck_assert_int_eq(lines, 3 + 1 + 3);
  ck_assert(saw_last && saw_list);
  free(o.text);

  /* The same key given as base64 ("user-3"), as dump prints binary keys. */
  tool(&o, false, "dump %s --uid counter --state last --key-base64 dXNlci0z",
       chk);
  ck_assert_msg(o.code == 0 && strstr(o.text, "\"value\":\"v993\"") &&
                    !strchr(strchr(o.text, '\n') + 1, '\n'),
                "%s", o.text);
  free(o.text);

  tool(&o, false, "dump %s --uid counter --state seen", chk);
  ck_assert_int_eq(o.code, 0);
  ck_assert_msg(strstr(o.text, "\"mk\":\"m0\""), "%s", o.text);
  free(o.text);

  /* TTL: raw bytes by default (8-byte timestamp + "t"), split by --ttl;
   * event-time TTL stamps the record's timestamp, 993 for user-3. */
  tool(&o, false, "dump %s --uid counter --state ttl --key user-3", chk);
  ck_assert_msg(o.code == 0 && strstr(o.text, "\"value_enc\":\"base64\""), "%s",
                o.text);
  free(o.text);
  tool(&o, false, "dump %s --uid counter --state ttl --key user-3 --ttl", chk);
  ck_assert_msg(o.code == 0 && strstr(o.text, "\"ttl_ts\":993") &&
                    strstr(o.text, "\"value\":\"t\""),
                "%s", o.text);
  free(o.text);

  tool(&o, true, "dump %s --uid counter --state nosuch", chk);
  ck_assert_msg(o.code == 2 && strstr(o.text, "firsts"), "%s", o.text);
  free(o.text);

  tool(&o, true, "dump %s --uid nosuch", chk);
  ck_assert_msg(o.code == 2 && strstr(o.text, "nosuch"), "%s", o.text);
  free(o.text);

  free(chk);
  rmrf(dir);
  free(dir);
}
END_TEST

START_TEST(damage_is_found) {
  char *dir = tmpdir();
  result r;
  run_job(dir, NULL, 1000, &r);
  char *chk = newest(dir);
  char path[1024];

  /* A flipped byte in the middle of a worker file. */
  snprintf(path, sizeof(path), "%s/w1.snap", chk);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  flip_byte(path, st.st_size / 2);
  out o;
  tool(&o, true, "verify %s", chk);
  ck_assert_msg(o.code == 1 && strstr(o.text, "w1.snap") &&
                    strstr(o.text, "damaged") && !strstr(o.text, "w0.snap"),
                "%s", o.text);
  free(o.text);
  json_t *v = tool_json(1, "--json verify %s%s", chk, "");
  json_t *p0 = json_array_get(json_object_get(v, "problems"), 0);
  ck_assert_str_eq(json_string_value(json_object_get(p0, "file")), "w1.snap");
  ck_assert(json_is_false(json_object_get(v, "valid")));
  json_decref(v);
  tool(&o, true, "inspect %s", chk);
  ck_assert_msg(o.code == 1 && strstr(o.text, "w1.snap"), "%s", o.text);
  free(o.text);
  flip_byte(path, st.st_size / 2); /* repaired */
  tool(&o, true, "verify %s", chk);
  ck_assert_msg(o.code == 0, "%s", o.text);
  free(o.text);

  /* A truncated file. */
  snprintf(path, sizeof(path), "%s/w0.snap", chk);
  ck_assert_int_eq(truncate(path, 50), 0);
  tool(&o, true, "verify %s", chk);
  ck_assert_msg(o.code == 1 && strstr(o.text, "w0.snap") &&
                    strstr(o.text, "truncated"),
                "%s", o.text);
  free(o.text);
  tool(&o, false, "list %s", dir);
  ck_assert_msg(strstr(o.text, "damaged"), "%s", o.text);
  free(o.text);

  /* No _metadata: incomplete, in verify and in list. */
  snprintf(path, sizeof(path), "%s/_metadata", chk);
  ck_assert_int_eq(unlink(path), 0);
  tool(&o, true, "verify %s", chk);
  ck_assert_msg(o.code == 1 && strstr(o.text, "incomplete") &&
                    strstr(o.text, "_metadata"),
                "%s", o.text);
  free(o.text);
  tool(&o, false, "list %s", dir);
  ck_assert_msg(strstr(o.text, "incomplete"), "%s", o.text);
  free(o.text);

  /* Not a checkpoint at all, and bad usage: 2. */
  char *empty = tmpdir();
  tool(&o, true, "verify %s", empty);
  ck_assert_msg(o.code == 2 && strstr(o.text, "not a checkpoint"), "%s",
                o.text);
  free(o.text);
  tool(&o, true, "verify %s/nonexistent", empty);
  ck_assert_int_eq(o.code, 2);
  free(o.text);
  tool(&o, true, "frobnicate %s", empty);
  ck_assert_int_eq(o.code, 2);
  free(o.text);
  rmrf(empty);
  free(empty);
  free(chk);
  rmrf(dir);
  free(dir);
}
END_TEST

static bool present(const char *dir, const char *name) {
  char p[1024];
  snprintf(p, sizeof(p), "%s/%s", dir, name);
  struct stat st;
  return stat(p, &st) == 0;
}

START_TEST(prune_keeps_n) {
  char *dir = tmpdir();
  result r;
  for (int i = 0; i < 4; i++)
    run_job(dir, NULL, 200, &r); /* chk-1 .. chk-4, one final each */
  char p[1024];
  snprintf(p, sizeof(p), "%s/chk-2/_metadata", dir);
  ck_assert_int_eq(unlink(p), 0); /* an old incomplete one */
  snprintf(p, sizeof(p), "%s/chk-9", dir);
  ck_assert_int_eq(mkdir(p, 0755), 0); /* a newer one being written */
  snprintf(p, sizeof(p), "%s/other", dir);
  ck_assert_int_eq(mkdir(p, 0755), 0);
  snprintf(p, sizeof(p), "%s/chk-x", dir);
  ck_assert_int_eq(mkdir(p, 0755), 0);

  /* Newest first, each with its status; other names are not listed. */
  json_t *l = tool_json(0, "--json list %s%s", dir, "");
  json_t *cs = json_object_get(l, "checkpoints");
  static const char *const want[][2] = {{"9", "incomplete"},
                                        {"4", "complete"},
                                        {"3", "complete"},
                                        {"2", "incomplete"},
                                        {"1", "complete"}};
  ck_assert_uint_eq(json_array_size(cs), 5);
  for (size_t i = 0; i < 5; i++) {
    json_t *c = json_array_get(cs, i);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "id")),
                     atoi(want[i][0]));
    ck_assert_str_eq(json_string_value(json_object_get(c, "status")),
                     want[i][1]);
  }
  json_decref(l);

  out o;
  tool(&o, true, "prune %s --keep 2 --dry-run", dir);
  ck_assert_int_eq(o.code, 0);
  ck_assert(present(dir, "chk-1"));
  free(o.text);

  json_t *j = tool_json(0, "--json prune %s --keep 2%s", dir, "");
  ck_assert_uint_eq(json_array_size(json_object_get(j, "removed")), 2);
  json_decref(j);
  ck_assert(!present(dir, "chk-1") && !present(dir, "chk-2"));
  ck_assert(present(dir, "chk-3") && present(dir, "chk-4"));
  ck_assert(present(dir, "chk-9") && present(dir, "other") &&
            present(dir, "chk-x"));

  tool(&o, true, "prune %s --keep 1", dir);
  ck_assert_msg(o.code == 0 && strstr(o.text, "chk-3"), "%s", o.text);
  free(o.text);
  ck_assert(!present(dir, "chk-3") && present(dir, "chk-4"));
  tool(&o, true, "prune %s", dir);
  ck_assert_int_eq(o.code, 2);
  free(o.text);
  rmrf(dir);
  free(dir);
}
END_TEST

/* Sources with their own position layouts: one laid out as the Kafka
 * source's, one the tool cannot know. */
static int src_end(sl_source_ctx_t *ctx, void *opaque) {
  (void)ctx, (void)opaque;
  return SL_POLL_END;
}

static void put32(sl_buf_t *b, uint32_t v) {
  unsigned char x[4] = {v & 255, (v >> 8) & 255, (v >> 16) & 255, v >> 24};
  sl_buf_append(b, x, 4);
}

static void put_str(sl_buf_t *b, const char *s) {
  put32(b, (uint32_t)strlen(s));
  sl_buf_append(b, s, strlen(s));
}

static int kafkaish_snapshot(sl_source_ctx_t *ctx, uint64_t id, sl_buf_t *out,
                             void *opaque) {
  (void)ctx, (void)id, (void)opaque;
  put32(out, 0x314b4c53u); /* "SLK1" */
  put_str(out, "grp");
  put32(out, 2);
  for (uint32_t p = 0; p < 2; p++) {
    put_str(out, "orders");
    put32(out, p);
    put32(out, p ? 7 : 42); /* u64 offset, little-endian */
    put32(out, 0);
  }
  /* Event time: partition 0 finished at 5000, partition 1 idle at 900. */
  put32(out, 0x544b4c53u); /* "SLKT" */
  for (uint32_t p = 0; p < 2; p++) {
    put32(out, p ? 900 : 5000); /* u64 max_ts */
    put32(out, 0);
    unsigned char flags = p ? 1 : 2; /* bit 0 idle, bit 1 finished */
    sl_buf_append(out, &flags, 1);
  }
  return 0;
}

static int opaque_snapshot(sl_source_ctx_t *ctx, uint64_t id, sl_buf_t *out,
                           void *opaque) {
  (void)ctx, (void)id, (void)opaque;
  return sl_buf_append(out, "abc", 3);
}

static int drop(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  return 0;
}

START_TEST(positions_decoded_or_hex) {
  char *dir = tmpdir(), err[256];
  sl_conf_t *conf = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(conf, "checkpoint.dir", dir, err, sizeof(err)),
                   0);
  sl_job_t *job = sl_job_new("positions", conf, err, sizeof(err));
  ck_assert_ptr_nonnull(job);
  sl_source_ops_t k = {.poll = src_end, .snapshot = kafkaish_snapshot};
  sl_source_ops_t x = {.poll = src_end, .snapshot = opaque_snapshot};
  ck_assert_int_eq(
      sl_sink(sl_source(job, "orders", &k, NULL), "s1", drop, NULL), 0);
  ck_assert_int_eq(
      sl_sink(sl_source(job, "custom", &x, NULL), "s2", drop, NULL), 0);
  ck_assert_msg(sl_job_run(job) == 0, "%s", sl_job_errmsg(job));
  sl_job_destroy(job);
  char *chk = newest(dir);
  json_t *in = tool_json(0, "--json inspect %s%s", chk, "");
  json_t *p;
  size_t i;
  int seen = 0;
  json_array_foreach(json_object_get(in, "positions"), i, p) {
    const char *uid = json_string_value(json_object_get(p, "uid"));
    json_t *f = json_object_get(p, "fields");
    if (!strcmp(uid, "orders")) {
      ck_assert_str_eq(json_string_value(json_object_get(p, "decoder")),
                       "kafka");
      ck_assert_str_eq(json_string_value(json_object_get(f, "group")), "grp");
      json_t *p1 = json_array_get(json_object_get(f, "partitions"), 1);
      ck_assert_str_eq(json_string_value(json_object_get(p1, "topic")),
                       "orders");
      ck_assert_int_eq(json_integer_value(json_object_get(p1, "offset")), 7);
      json_t *p0 = json_array_get(json_object_get(f, "partitions"), 0);
      ck_assert_int_eq(json_integer_value(json_object_get(p0, "max_ts")), 5000);
      ck_assert(json_is_true(json_object_get(p0, "finished")));
      ck_assert(json_is_false(json_object_get(p0, "idle")));
      ck_assert_int_eq(json_integer_value(json_object_get(p1, "max_ts")), 900);
      ck_assert(json_is_false(json_object_get(p1, "finished")));
      ck_assert(json_is_true(json_object_get(p1, "idle")));
      seen++;
    } else if (!strcmp(uid, "custom")) {
      ck_assert(json_is_null(json_object_get(p, "decoder")) ||
                !json_object_get(p, "decoder"));
      ck_assert_str_eq(json_string_value(json_object_get(p, "hex")), "616263");
      ck_assert_int_eq(json_integer_value(json_object_get(p, "bytes")), 3);
      seen++;
    }
  }
  ck_assert_int_eq(seen, 2);
  json_decref(in);
  out o;
  tool(&o, true, "inspect %s", chk);
  ck_assert_msg(strstr(o.text, "kafka group=grp") &&
                    strstr(o.text, "\"idle\":false,\"finished\":true") &&
                    strstr(o.text, "3 bytes: 616263"),
                "%s", o.text);
  free(o.text);
  free(chk);
  rmrf(dir);
  free(dir);
}
END_TEST

/* A checkpoint whose worker 0 keeps its keyed state in a native directory
 * of a backend this build lacks: verify still checks the files, inspect
 * says what it cannot read, dump refuses clearly. */
START_TEST(native_backend_unavailable) {
  char *dir = tmpdir();
  result r;
  run_job(dir, NULL, 200, &r);
  char *chk = newest(dir);
  char p[1024];
  snprintf(p, sizeof(p), "%s/w0.state", chk);
  ck_assert_int_eq(mkdir(p, 0755), 0);
  snprintf(p, sizeof(p), "%s/w0.state/000001.sst", chk);
  FILE *f = fopen(p, "w");
  ck_assert_ptr_nonnull(f);
  fputs("native", f);
  ck_assert_int_eq(fclose(f), 0);
  char crc[9];
  snprintf(crc, sizeof(crc), "%08x", sl__crc32c(0, "native", 6));
  snprintf(p, sizeof(p), "%s/_metadata", chk);
  json_t *m = json_load_file(p, 0, NULL);
  ck_assert_ptr_nonnull(m);
  json_object_set_new(m, "backend", json_string("nosuchdb"));
  json_object_set_new(json_array_get(json_object_get(m, "workers"), 0),
                      "native", json_string("w0.state"));
  json_array_append_new(json_object_get(m, "files"),
                        json_pack("{s:s,s:i,s:s,s:b}", "path",
                                  "w0.state/000001.sst", "bytes", 6, "crc32c",
                                  crc, "shared", 1));
  ck_assert_int_eq(json_dump_file(m, p, JSON_INDENT(1)), 0);
  json_decref(m);

  out o;
  tool(&o, true, "verify %s", chk);
  ck_assert_msg(o.code == 0 && strstr(o.text, "contents not read"), "%s",
                o.text);
  free(o.text);
  json_t *in = tool_json(0, "--json inspect %s%s", chk, "");
  json_t *w0 = json_array_get(json_object_get(in, "key_groups"), 0);
  ck_assert_str_eq(json_string_value(json_object_get(w0, "location")),
                   "w0.state");
  ck_assert_ptr_nonnull(
      strstr(json_string_value(json_object_get(w0, "note")), "cannot read"));
  json_t *sz = json_object_get(in, "size");
  ck_assert_int_eq(json_integer_value(json_object_get(sz, "shared_bytes")), 6);
  json_decref(in);
  tool(&o, true, "dump %s --uid counter", chk);
  ck_assert_msg(o.code == 2 && strstr(o.text, "w0.state") &&
                    strstr(o.text, "nosuchdb"),
                "%s", o.text);
  free(o.text);
  /* restore copies the native directory too, as real files. */
  char *to = tmpdir();
  json_t *j = tool_json(0, "--json restore %s --to %s", chk, to);
  char cp[1024];
  snprintf(cp, sizeof(cp), "%s/w0.state/000001.sst",
           json_string_value(json_object_get(j, "to")));
  struct stat st;
  ck_assert_int_eq(stat(cp, &st), 0);
  ck_assert(st.st_size == 6 && st.st_nlink == 1);
  /* w0.snap, w1.snap, their keyed-state segments, the native file. */
  ck_assert_int_eq(json_integer_value(json_object_get(j, "files")), 5);
  json_decref(j);
  rmrf(to);
  free(to);
  /* A damaged native file is named like any other. */
  flip_byte(strcat(strcpy(p, chk), "/w0.state/000001.sst"), 2);
  tool(&o, true, "verify %s", chk);
  ck_assert_msg(o.code == 1 && strstr(o.text, "w0.state/000001.sst"), "%s",
                o.text);
  free(o.text);
  free(chk);
  rmrf(dir);
  free(dir);
}
END_TEST

START_TEST(restore_copy_restarts_the_same) {
  char *dir = tmpdir(), *dir2 = tmpdir(), *dir3 = tmpdir();
  result r1, ra, rb;
  run_job(dir, NULL, 1000, &r1);
  for (int k = 0; k < KEYS; k++)
    ck_assert_int_eq(r1.max[k], 100);
  char *chk = newest(dir);
  char copies[1024];
  snprintf(copies, sizeof(copies), "%s/copies", dir2);
  json_t *j = tool_json(0, "--json restore %s --to %s", chk, copies);
  char *copy = strdup(json_string_value(json_object_get(j, "to")));
  json_decref(j);

  /* Copied, not linked. */
  char a[1024], b[1024];
  struct stat sa, sb;
  snprintf(a, sizeof(a), "%s/w0.snap", chk);
  snprintf(b, sizeof(b), "%s/w0.snap", copy);
  ck_assert_int_eq(stat(a, &sa), 0);
  ck_assert_int_eq(stat(b, &sb), 0);
  ck_assert(sa.st_ino != sb.st_ino && sb.st_nlink == 1);
  out o;
  tool(&o, true, "verify %s", copy);
  ck_assert_msg(o.code == 0, "%s", o.text);
  free(o.text);
  tool(&o, true, "restore %s --to %s", chk, copies);
  ck_assert_msg(o.code == 2 && strstr(o.text, "exists"), "%s", o.text);
  free(o.text);
  tool(&o, true, "restore %s --to %s/sub", chk, chk);
  ck_assert_msg(o.code == 2 && strstr(o.text, "inside"), "%s", o.text);
  free(o.text);
  ck_assert(!present(chk, "sub"));

  /* The original and the copy continue the job alike; the copy stands
   * alone once the original is gone. */
  run_job(dir3, chk, 2000, &ra);
  rmrf(dir);
  run_job(dir3, copy, 2000, &rb);
  for (int k = 0; k < KEYS; k++) {
    ck_assert_int_eq(ra.max[k], 200);
    ck_assert_int_eq(rb.max[k], ra.max[k]);
  }
  free(copy);
  free(chk);
  rmrf(dir2);
  rmrf(dir3);
  free(dir);
  free(dir2);
  free(dir3);
}
END_TEST

/* ---- Restore and verify agree ------------------------------------------ */

/* The member at path ("workers/1/kg_lo": objects by key, arrays by index)
 * and its parent, for a mutation. */
static json_t *at(json_t *root, const char *path, json_t **parent, char *last,
                  size_t last_len) {
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", path);
  json_t *cur = root, *par = NULL;
  for (char *save, *seg = strtok_r(buf, "/", &save); seg;
       seg = strtok_r(NULL, "/", &save)) {
    par = cur;
    snprintf(last, last_len, "%s", seg);
    cur = json_is_array(cur) ? json_array_get(cur, (size_t)atoi(seg))
                             : json_object_get(cur, seg);
  }
  *parent = par;
  return cur;
}

/* Sets path to v (NULL: removes it); v is stolen. */
static void mutate(json_t *root, const char *path, json_t *v) {
  json_t *parent;
  char last[64];
  at(root, path, &parent, last, sizeof(last));
  ck_assert_ptr_nonnull(parent);
  if (json_is_array(parent)) {
    if (v)
      json_array_set_new(parent, (size_t)atoi(last), v);
    else
      json_array_remove(parent, (size_t)atoi(last));
  } else if (v) {
    json_object_set_new(parent, last, v);
  } else {
    ck_assert_int_eq(json_object_del(parent, last), 0);
  }
}

/* The files entry of w1.snap, removed: the worker file would be read
 * without any recorded checksum. */
static void unlist_w1(json_t *m) {
  json_t *files = json_object_get(m, "files");
  size_t i;
  json_t *f;
  json_array_foreach(files, i, f) {
    if (!strcmp(json_string_value(json_object_get(f, "path")), "w1.snap")) {
      json_array_remove(files, i);
      return;
    }
  }
  ck_abort_msg("no w1.snap in files");
}

static void workers_swapped(json_t *m) {
  json_t *w = json_object_get(m, "workers");
  json_t *w0 = json_incref(json_array_get(w, 0));
  json_array_remove(w, 0);
  json_array_append_new(w, w0);
}

static void file_twice(json_t *m) {
  json_t *files = json_object_get(m, "files");
  json_array_append(files, json_array_get(files, 0));
}

typedef struct mutation {
  const char *path; /* member to change, or NULL for fn */
  const char *json; /* its new value as JSON; NULL removes it */
  void (*fn)(json_t *m);
  const char *why; /* in both verify's report and the job's error */
} mutation;

static const mutation mutations[] = {
    /* The ones restore used to take. */
    {"parallelism", NULL, NULL, "parallelism"},
    {"workers/1/index", NULL, NULL, "index"},
    {"workers/0/kg_lo", NULL, NULL, "kg_lo"},
    {"workers/1/kg_hi", NULL, NULL, "kg_hi"},
    {"workers/0/kg_lo", "-1", NULL, "kg_lo"},
    {NULL, NULL, unlist_w1, "w1.snap is not listed"},
    /* Verify passed it, inspect and dump did not. */
    {"job", "true", NULL, "\"job\" is not a string"},
    /* Wrong types. */
    {"parallelism", "\"2\"", NULL, "\"parallelism\" is not an integer"},
    {"max_parallelism", "128.0", NULL, "\"max_parallelism\" is not an integer"},
    {"id", "\"1\"", NULL, "\"id\" is not an integer"},
    {"backend", "1", NULL, "\"backend\" is not a string"},
    {"workers", "{}", NULL, "\"workers\" is not an array"},
    {"files", "null", NULL, "\"files\" is not an array"},
    {"workers/0", "[]", NULL, "workers[0] is not an object"},
    {"workers/1/file", "1", NULL, "\"file\" is not a string"},
    {"workers/0/native", "7", NULL, "\"native\" is not a string or null"},
    {"files/0/bytes", "\"12\"", NULL, "\"bytes\" is not an integer"},
    {"files/0/crc32c", "305419896", NULL, "\"crc32c\" is not a string"},
    {"files/0/shared", "0", NULL, "\"shared\" is not true or false"},
    {"operators", "\"gen\"", NULL, "\"operators\" is not an array"},
    {"restarts", "\"0\"", NULL, "\"restarts\" is not an integer"},
    {"created_ms", "-5", NULL, "\"created_ms\" is -5"},
    /* Values out of range or disagreeing. */
    {"format", "4", NULL, "unsupported checkpoint format 4"},
    {"format", "0", NULL, "unsupported checkpoint format 0"},
    {"parallelism", "3", NULL, "parallelism is 3 but it lists 2 workers"},
    {"parallelism", "0", NULL, "\"parallelism\" is 0"},
    {"max_parallelism", "1", NULL, "above max_parallelism 1"},
    {"max_parallelism", "64", NULL, "expected [0, 32)"},
    {"workers/1/index", "0", NULL, "\"index\" is 0"},
    {"workers/0/kg_hi", "65", NULL, "key groups [0, 65)"},
    {NULL, NULL, workers_swapped, "\"index\" is 1"},
    {"workers/1/file", "\"w0.snap\"", NULL, "also workers[0]'s"},
    {"workers/0/file", "\"../w0.snap\"", NULL, "is not a file name"},
    {"files/0/path", "\"/etc/passwd\"", NULL, "not a file inside"},
    {NULL, NULL, file_twice, "listed twice"},
    {"files/0/crc32c", "\"xyz\"", NULL, "is not 8 hex digits"},
    {"files/0/bytes", "-1", NULL, "\"bytes\" is -1"},
    {"backend", "\"\"", NULL, "\"backend\" is empty"},
    {"id", "0", NULL, "\"id\" is 0"},
    {"id", "99", NULL, "_metadata is of checkpoint 99"},
};

/* verify (the tool) and restore.from=<chk> (a job) over the same mutated
 * _metadata: both refuse each mutation, naming the problem, and both take
 * the checkpoint as written and with members they do not know. */
START_TEST(restore_refuses_what_verify_refuses) {
  char *dir = tmpdir(), *dir2 = tmpdir();
  result r;
  run_job(dir, NULL, 1000, &r);
  char *chk = newest(dir);
  char meta_path[1024];
  snprintf(meta_path, sizeof(meta_path), "%s/_metadata", chk);
  json_error_t je;
  json_t *orig = json_load_file(meta_path, 0, &je);
  ck_assert_ptr_nonnull(orig);
  ck_assert_int_eq(json_integer_value(json_object_get(orig, "max_parallelism")),
                   128);

  for (size_t i = 0; i < sizeof(mutations) / sizeof(mutations[0]); i++) {
    const mutation *mu = &mutations[i];
    json_t *m = json_deep_copy(orig);
    if (mu->fn) {
      mu->fn(m);
    } else {
      json_t *v = mu->json ? json_loads(mu->json, JSON_DECODE_ANY, &je) : NULL;
      ck_assert_msg(!mu->json || v, "case %zu: bad JSON", i);
      mutate(m, mu->path, v);
    }
    ck_assert_int_eq(json_dump_file(m, meta_path, JSON_INDENT(1)), 0);
    json_decref(m);
    out o;
    tool(&o, true, "verify %s", chk);
    ck_assert_msg(o.code == 1 && strstr(o.text, mu->why),
                  "case %zu (%s): verify exit %d, expected 1 naming \"%s\": "
                  "%s",
                  i, mu->path ? mu->path : "fn", o.code, mu->why, o.text);
    free(o.text);
    tool(&o, true, "inspect %s", chk);
    ck_assert_msg(o.code == 1, "case %zu: inspect exit %d: %s", i, o.code,
                  o.text);
    free(o.text);
    run x;
    run_job_as(dir2, chk, 1000, &r, &x);
    ck_assert_msg(x.rc == SL_ERR_CORRUPT && strstr(x.msg, mu->why) &&
                      strstr(x.msg, "cannot restore from checkpoint"),
                  "case %zu (%s): restore returned %d (%s), expected "
                  "SL_ERR_CORRUPT naming \"%s\"",
                  i, mu->path ? mu->path : "fn", x.rc, x.msg, mu->why);
  }

  /* Members this build does not know are not damage (newer writers add
   * some): both take it, as they take the original. */
  for (int pass = 0; pass < 2; pass++) {
    json_t *m = json_deep_copy(orig);
    if (pass == 1) {
      json_object_set_new(m, "future", json_pack("{s:i}", "x", 1));
      json_object_set_new(json_array_get(json_object_get(m, "workers"), 1),
                          "future", json_true());
      json_object_set_new(json_array_get(json_object_get(m, "files"), 0),
                          "future", json_string("x"));
    }
    ck_assert_int_eq(json_dump_file(m, meta_path, JSON_INDENT(1)), 0);
    json_decref(m);
    out o;
    tool(&o, true, "verify %s", chk);
    ck_assert_msg(o.code == 0, "pass %d: %s", pass, o.text);
    free(o.text);
    tool(&o, true, "inspect %s", chk);
    ck_assert_msg(o.code == 0, "pass %d: %s", pass, o.text);
    free(o.text);
    run x;
    run_job_as(dir2, chk, 1000, &r, &x);
    ck_assert_msg(x.rc == 0, "pass %d: %s", pass, x.msg);
    ck_assert_uint_eq(x.restored_from, strtoull(strrchr(chk, '-') + 1, 0, 10));
  }
  json_decref(orig);
  free(chk);
  rmrf(dir);
  rmrf(dir2);
  free(dir);
  free(dir2);
}
END_TEST

/* restore.from=latest skips a newest checkpoint that verify refuses, in
 * favour of the previous one. */
START_TEST(latest_skips_what_verify_refuses) {
  char *dir = tmpdir();
  result r;
  run_job(dir, NULL, 500, &r);      /* chk-1 */
  run_job(dir, "latest", 1000, &r); /* chk-2, restored from chk-1 */
  char chk2[1024], meta_path[1100];
  snprintf(chk2, sizeof(chk2), "%s/chk-2", dir);
  snprintf(meta_path, sizeof(meta_path), "%s/_metadata", chk2);
  json_error_t je;
  json_t *m = json_load_file(meta_path, 0, &je);
  ck_assert_ptr_nonnull(m);
  json_object_del(json_array_get(json_object_get(m, "workers"), 1), "kg_lo");
  ck_assert_int_eq(json_dump_file(m, meta_path, JSON_INDENT(1)), 0);
  json_decref(m);
  out o;
  tool(&o, true, "verify %s", chk2);
  ck_assert_msg(o.code == 1 && strstr(o.text, "kg_lo"), "%s", o.text);
  free(o.text);
  /* chk-1 holds the state of records [0, 500): the rerun over [0, 1000)
   * continues from there, so every key's count reaches 100 again. */
  run x;
  run_job_as(dir, "latest", 1000, &r, &x);
  ck_assert_msg(x.rc == 0, "%s", x.msg);
  ck_assert_uint_eq(x.restored_from, 1);
  for (int k = 0; k < KEYS; k++)
    ck_assert_int_eq(r.max[k], 100);
  rmrf(dir);
  free(dir);
}
END_TEST

/* The lines of text, sorted (dump's order follows the hash tables). */
static void sort_lines(char *text) {
  char *v[4096];
  size_t n = 0, total = strlen(text);
  for (char *t = strtok(text, "\n"); t && n < 4096; t = strtok(NULL, "\n"))
    v[n++] = t;
  ck_assert_uint_lt(n, 4096);
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
      char *x = v[j];
      v[j] = v[j - 1];
      v[j - 1] = x;
    }
  char *out = malloc(total + 2), *p = out;
  for (size_t i = 0; i < n; i++)
    p += sprintf(p, "%s\n", v[i]);
  *p = 0;
  strcpy(text, out);
  free(out);
}

/* Keyed state of the hashmap backend is incremental: each checkpoint
 * writes what changed into a segment file and hard-links the segments it
 * still uses from the previous one. Retention removes the checkpoints
 * that wrote them, never data a retained checkpoint uses; the chain
 * restores to exactly what one run over the same input checkpoints
 * whole; a missing segment is named by verify and refused by restore. */
START_TEST(segments_outlive_their_checkpoint) {
  char *dir = tmpdir(), *whole = tmpdir(), p[1024];
  result r;
  retained = "2";
  run_job(dir, NULL, 200, &r);
  for (int i = 1; i <= 4; i++) {
    run x;
    run_job_as(dir, "latest", 200 + 40 * (uint64_t)i, &r, &x);
    ck_assert_msg(x.rc == 0 && x.restored_from == (uint64_t)i, "%d: %s", i,
                  x.msg);
  }
  retained = "10";
  struct stat st;
  for (int id = 1; id <= 3; id++) {
    snprintf(p, sizeof(p), "%s/chk-%d", dir, id);
    ck_assert_msg(stat(p, &st) != 0, "%s was retained", p);
  }
  char *chk = newest(dir);
  ck_assert_ptr_nonnull(strstr(chk, "chk-5"));
  /* Checkpoint 1 wrote the base of every key group; it is gone, its
   * segments are not: checkpoints 4 and 5 link them. */
  for (int w = 0; w < 2; w++) {
    snprintf(p, sizeof(p), "%s/kv-1-w%d.seg", chk, w);
    ck_assert_msg(stat(p, &st) == 0, "%s: %s", p, strerror(errno));
    ck_assert_uint_eq(st.st_nlink, 2);
  }
  json_t *in = tool_json(0, "--json inspect %s%s", chk, "");
  json_t *sz = json_object_get(in, "size");
  ck_assert_int_gt(json_integer_value(json_object_get(sz, "shared_bytes")), 0);
  json_decref(in);
  out o, a, b;
  tool(&o, true, "verify %s", chk);
  ck_assert_msg(o.code == 0, "%s", o.text);
  free(o.text);
  /* The same 360 events in one run, checkpointed whole. */
  run_job(whole, NULL, 360, &r);
  char *wchk = newest(whole);
  ck_assert_ptr_nonnull(strstr(wchk, "chk-1"));
  tool(&a, false, "dump %s --uid counter", chk);
  tool(&b, false, "dump %s --uid counter", wchk);
  ck_assert_int_eq(a.code, 0);
  ck_assert_int_eq(b.code, 0);
  ck_assert_int_gt(strlen(a.text), 100);
  sort_lines(a.text);
  sort_lines(b.text);
  ck_assert_str_eq(a.text, b.text);
  /* verify counts entries, those of the chains as they load, not the
   * change records of their segments: one per dump line. */
  long lines = 0;
  for (const char *c = a.text; *c; c++)
    lines += *c == '\n';
  json_t *va = tool_json(0, "--json verify %s%s", chk, "");
  json_t *vb = tool_json(0, "--json verify %s%s", wchk, "");
  ck_assert_int_eq(json_integer_value(json_object_get(va, "state_entries")),
                   lines);
  ck_assert_int_eq(json_integer_value(json_object_get(vb, "state_entries")),
                   lines);
  json_decref(va);
  json_decref(vb);
  free(a.text);
  free(b.text);
  /* A segment goes missing: verify names it, restoring exactly this
   * checkpoint fails, and latest falls back to the one before. */
  snprintf(p, sizeof(p), "%s/kv-1-w0.seg", chk);
  ck_assert_int_eq(unlink(p), 0);
  tool(&o, true, "verify %s", chk);
  ck_assert_msg(o.code == 1 && strstr(o.text, "kv-1-w0.seg is missing") &&
                    strstr(o.text, "uses kv-1-w0.seg"),
                "%s", o.text);
  free(o.text);
  run x;
  run_job_as(dir, chk, 360, &r, &x);
  ck_assert_msg(x.rc == SL_ERR_CORRUPT && strstr(x.msg, "kv-1-w0.seg"), "%s",
                x.msg);
  run_job_as(dir, "latest", 360, &r, &x);
  ck_assert_msg(x.rc == 0 && x.restored_from == 4, "%s", x.msg);
  free(chk);
  free(wchk);
  rmrf(dir);
  rmrf(whole);
  free(dir);
  free(whole);
}
END_TEST

/* ---- A group store ------------------------------------------------------
 * A dev broker and two processes of tests/integration/group_job.c (Kafka
 * "in", 4 partitions -> key_by -> tumbling 1 s count) sharing one
 * checkpoint.dir; the input stays inside one window, so every task's
 * state is its keys' open windows when both stop. */

#define G_PARTS 4
#define G_KEYS 20
#define G_T0 10000

static pid_t spawn(char *const argv[], const char *errf) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int null = open("/dev/null", O_WRONLY);
    dup2(fd, 2);
    dup2(null, 1);
    execv(argv[0], argv);
    _exit(127);
  }
  return pid;
}

static void stop_wait(pid_t pid) {
  ck_assert_int_eq(kill(pid, SIGTERM), 0);
  int st = 0;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process exit %d", st);
}

/* Partitions a job's log says it reads after its last rebalance. */
static int reads_of(const char *errf) {
  FILE *f = fopen(errf, "r");
  char line[1024];
  int n = 0;
  if (!f)
    return 0;
  while (fgets(line, sizeof(line), f)) {
    const char *r = strstr(line, "group rebalance:");
    if (r && (r = strstr(r, "; reads ")))
      n = atoi(r + 8);
  }
  fclose(f);
  return n;
}

static void g_key(int i, char *buf, size_t cap) {
  snprintf(buf, cap, "user-%d", i);
}

static uint32_t g_task(int i) {
  char k[32];
  g_key(i, k, sizeof(k));
  return sl__murmur2_partition(k, strlen(k), G_PARTS);
}

/* Events of key i: i % 3 + 1, all in the window [G_T0, G_T0 + 1000). */
static int64_t g_records(uint32_t task) {
  int64_t n = 0;
  for (int i = 0; i < G_KEYS; i++)
    n += g_task(i) == task ? i % 3 + 1 : 0;
  return n;
}

/* The newest generation of task t's pointer (tasks/<t>/<gen>.json), 0
 * without one. */
static unsigned g_gen(const char *store, uint32_t t) {
  char path[600];
  snprintf(path, sizeof(path), "%s/tasks/%u", store, t);
  DIR *d = opendir(path);
  unsigned g = 0;
  for (struct dirent *e; d && (e = readdir(d));) {
    char *end;
    unsigned long x = strtoul(e->d_name, &end, 10);
    if (e->d_name[0] != '.' && strcmp(end, ".json") == 0 && x > g)
      g = (unsigned)x;
  }
  if (d)
    closedir(d);
  return g;
}

static json_t *g_pointer(const char *store, uint32_t t) {
  char path[600];
  snprintf(path, sizeof(path), "%s/tasks/%u/%u.json", store, t,
           g_gen(store, t));
  return json_load_file(path, 0, NULL);
}

/* Replaces the newest generation of task t's pointer (the first if it
 * has none) with text, given that generation when text is an object. */
static void g_put(const char *store, uint32_t t, const char *text) {
  char path[600];
  unsigned g = g_gen(store, t);
  snprintf(path, sizeof(path), "%s/tasks/%u", store, t);
  if (!g) {
    g = 1;
    ck_assert_int_eq(mkdir(path, 0700), 0);
  }
  snprintf(path, sizeof(path), "%s/tasks/%u/%u.json", store, t, g);
  json_t *o = json_loads(text, 0, NULL);
  char *with = NULL;
  if (o) {
    json_object_set_new(o, "generation", json_integer(g));
    with = json_dumps(o, JSON_COMPACT);
    json_decref(o);
  }
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(with ? with : text, f);
  free(with);
  ck_assert_int_eq(fclose(f), 0);
}

/* Runs the two processes over the input; returns the store's path. */
static char *g_run(const char *dir) {
  const char *b = getenv("SLUICE_BUILD_ROOT");
  char dev[600], job[600], bfile[600], bs[256] = "", errs[2][600];
  snprintf(dev, sizeof(dev), "%s/tools/sluice-kafka-dev", b ? b : "build");
  snprintf(job, sizeof(job), "%s/tests/integration/test-group-job",
           b ? b : "build");
  snprintf(bfile, sizeof(bfile), "%s/bootstrap", dir);
  char *store = malloc(600), berr[600];
  snprintf(store, 600, "%s/ckpt", dir);
  snprintf(berr, sizeof(berr), "%s/broker.err", dir);
  char *bargv[] = {dev,     "--topic",          "in:4", "--topic",
                   "out:1", "--bootstrap-file", bfile,  NULL};
  pid_t broker = spawn(bargv, berr);
  for (int i = 0; i < 400 && !bs[0]; i++) {
    FILE *f = fopen(bfile, "r");
    if (f) {
      if (!fgets(bs, sizeof(bs), f))
        bs[0] = 0;
      fclose(f);
    }
    if (!bs[0])
      tk_sleep_ms(25);
  }
  ck_assert_msg(bs[0], "the dev broker did not start");
  bs[strcspn(bs, "\n")] = 0;
  pid_t jobs[2];
  for (int j = 0; j < 2; j++) {
    snprintf(errs[j], sizeof(errs[j]), "%s/job%d.err", dir, j);
    char *jargv[] = {job, bs,  "copartitioned", "4", store, "hashmap",
                     "1", NULL};
    jobs[j] = spawn(jargv, errs[j]);
  }
  /* Both members hold tasks before any input arrives. */
  int a = 0, c = 0;
  for (int i = 0; i < 1200 && !(a && c && a + c == G_PARTS); i++) {
    tk_sleep_ms(50);
    a = reads_of(errs[0]);
    c = reads_of(errs[1]);
  }
  ck_assert_msg(a && c && a + c == G_PARTS, "reads %d and %d", a, c);
  tk_cluster cl = {0};
  snprintf(cl.bootstrap, sizeof(cl.bootstrap), "%s", bs);
  rd_kafka_t *p = tk_producer(&cl);
  for (int i = 0; i < G_KEYS; i++)
    for (int j = 0; j <= i % 3; j++) {
      char key[32];
      g_key(i, key, sizeof(key));
      tk_send(p, "in", (int32_t)g_task(i), key, "x", G_T0 + i * 10 + j, NULL,
              NULL);
    }
  tk_flush(p);
  rd_kafka_destroy(p);
  /* Every task's pointer at its partition's end. */
  bool done = false;
  for (int i = 0; i < 1200 && !done; i++) {
    done = true;
    for (uint32_t t = 0; t < G_PARTS && done; t++) {
      json_t *j = g_pointer(store, t);
      done =
          j && json_integer_value(json_object_get(j, "offset")) == g_records(t);
      json_decref(j);
    }
    if (!done)
      tk_sleep_ms(50);
  }
  ck_assert_msg(done, "the pointers never reached the partitions' ends");
  stop_wait(jobs[0]);
  stop_wait(jobs[1]);
  stop_wait(broker);
  return store;
}

/* The text of the sluice-ckpt run, which must exit with code. */
static char *tool_text(int code, bool merge, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *tool_text(int code, bool merge, const char *fmt, ...) {
  char args[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof(args), fmt, ap);
  va_end(ap);
  out o;
  tool(&o, merge, "%s", args);
  ck_assert_msg(o.code == code, "%s: exit %d, expected %d: %s", args, o.code,
                code, o.text);
  return o.text;
}

START_TEST(group_store_tasks) {
  char *dir = tmpdir();
  char *store = g_run(dir);
  char want[16384], line[2048];

  /* list: every instance with its checkpoints, then every task. One
   * instance's lock is held, as its running process would. */
  json_t *p0 = g_pointer(store, 0);
  const char *c0 = json_string_value(json_object_get(p0, "checkpoint"));
  char held[600], lock[700];
  snprintf(held, sizeof(held), "%.*s", (int)(strrchr(c0, '/') - c0), c0);
  snprintf(lock, sizeof(lock), "%s/%s/.lock", store, held);
  int fd = open(lock, O_RDWR);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
  DIR *d;
  struct dirent *e;
  char *names[8];
  int n_inst = 0;
  snprintf(line, sizeof(line), "%s/instances", store);
  ck_assert_ptr_nonnull(d = opendir(line));
  while ((e = readdir(d)))
    if (e->d_name[0] != '.' && n_inst < 8)
      names[n_inst++] = strdup(e->d_name);
  closedir(d);
  ck_assert_int_ge(n_inst, 1);
  for (int i = 0; i < n_inst; i++)
    for (int j = i + 1; j < n_inst; j++)
      if (strcmp(names[i], names[j]) > 0) {
        char *t = names[i];
        names[i] = names[j];
        names[j] = t;
      }
  snprintf(want, sizeof(want),
           "group store %s: %d instance%s, 4 task pointers\n", store, n_inst,
           n_inst == 1 ? "" : "s");
  for (int i = 0; i < n_inst; i++) {
    char rel[300];
    snprintf(rel, sizeof(rel), "instances/%s", names[i]);
    char *rows = tool_text(0, false, "list %s/%s", store, rel);
    size_t l = strlen(want);
    snprintf(want + l, sizeof(want) - l, "\ninstance %s (%s)\n%s", names[i],
             strcmp(rel, held) ? "gone: nobody holds its lock"
                               : "alive: its process holds the lock",
             rows);
    free(rows);
  }
  size_t l = strlen(want);
  snprintf(want + l, sizeof(want) - l, "\n%-5s %-24s %10s %-10s %-5s  %s\n",
           "TASK", "TOPIC[PARTITION]", "OFFSET", "STATUS", "ALIVE",
           "CHECKPOINT");
  for (uint32_t t = 0; t < G_PARTS; t++) {
    json_t *p = g_pointer(store, t);
    const char *c = json_string_value(json_object_get(p, "checkpoint"));
    char tp[32];
    snprintf(tp, sizeof(tp), "in[%u]", t);
    l = strlen(want);
    snprintf(want + l, sizeof(want) - l, "%-5u %-24s %10lld %-10s %-5s  %s\n",
             t, tp, (long long)g_records(t), "complete",
             strncmp(c, held, strlen(held)) ? "no" : "yes", c);
    json_decref(p);
  }
  char *text = tool_text(0, false, "list %s", store);
  ck_assert_str_eq(text, want);
  free(text);
  close(fd);

  for (uint32_t t = 0; t < G_PARTS; t++) {
    json_t *p = g_pointer(store, t);
    const char *c = json_string_value(json_object_get(p, "checkpoint"));
    char chk[700];
    snprintf(chk, sizeof(chk), "%s/%s", store, c);
    /* verify: the pointer, then the checkpoint as verify CHK judges it. */
    text = tool_text(0, false, "verify %s --task %u", store, t);
    snprintf(want, sizeof(want),
             "task %u: valid (tasks/%u/%u.json -> %s, in[%u] from offset "
             "%lld; checkpoint: ",
             t, t, g_gen(store, t), c, t, (long long)g_records(t));
    ck_assert_msg(strncmp(text, want, strlen(want)) == 0, "%s\nwanted %s", text,
                  want);
    free(text);
    json_t *v = tool_json(0, "--json verify %s --task %s", store,
                          t == 0   ? "0"
                          : t == 1 ? "1"
                          : t == 2 ? "2"
                                   : "3");
    json_t *cv = tool_json(0, "--json verify %s%s", chk, "");
    ck_assert(json_equal(json_object_get(v, "checkpoint"), cv));
    ck_assert_str_eq(json_string_value(json_object_get(v, "status")), "valid");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(v, "target"), "generation")),
                     g_gen(store, t));
    json_decref(v);
    json_decref(cv);

    /* inspect: the task's keys, one open window each, and its timer. */
    int keys = 0;
    for (int i = 0; i < G_KEYS; i++)
      keys += g_task(i) == t;
    char ts[4];
    snprintf(ts, sizeof(ts), "%u", t);
    json_t *in = tool_json(0, "--json inspect %s --task %s", store, ts);
    ck_assert_int_eq(json_integer_value(json_object_get(in, "position")),
                     g_records(t));
    long entries = 0;
    size_t k;
    json_t *r;
    json_array_foreach(json_object_get(in, "states"), k, r) {
      entries += (long)json_integer_value(json_object_get(r, "entries"));
    }
    ck_assert_int_eq(entries, keys);
    json_t *tm = json_object_get(in, "timers");
    ck_assert_uint_eq(json_array_size(tm), 1);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(tm, 0), "domain")),
        "event");
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_array_get(tm, 0), "count")),
        keys);
    json_decref(in);

    /* dump: exactly the task's keys, each in key group t. */
    text = tool_text(0, false, "dump %s --task %u --uid count", store, t);
    want[0] = 0;
    for (int i = 0; i < G_KEYS; i++) {
      if (g_task(i) != t)
        continue;
      l = strlen(want);
      snprintf(want + l, sizeof(want) - l, "user-%d,%u\n", i, t);
    }
    char got[4096] = "";
    for (char *ln = strtok(text, "\n"); ln; ln = strtok(NULL, "\n")) {
      json_t *j = json_loads(ln, 0, NULL);
      ck_assert_ptr_nonnull(j);
      l = strlen(got);
      snprintf(got + l, sizeof(got) - l, "%s,%lld\n",
               json_string_value(json_object_get(j, "key")),
               (long long)json_integer_value(json_object_get(j, "kg")));
      json_decref(j);
    }
    free(text);
    /* Keys print in the order the snapshot holds them. */
    sort_lines(want);
    sort_lines(got);
    ck_assert_str_eq(got, want);

    /* A key of the checkpoint by itself: its key group is its partition. */
    for (int i = 0; i < G_KEYS; i++) {
      if (g_task(i) != t)
        continue;
      char key[32];
      g_key(i, key, sizeof(key));
      text = tool_text(0, false, "dump %s --uid count --key %s", chk, key);
      ck_assert_msg(strstr(text, key), "%s: no entry for %s", chk, key);
      free(text);
      break;
    }
    json_decref(p);
  }
  /* A key of another task. */
  int other = 0;
  while (g_task(other) == 0)
    other++;
  text = tool_text(2, true, "dump %s --task 0 --uid count --key user-%d", store,
                   other);
  snprintf(want, sizeof(want),
           "sluice-ckpt: key \"user-%d\" belongs to task %u, not 0\n", other,
           g_task(other));
  ck_assert_str_eq(text, want);
  free(text);

  /* Damaged pointers: a clear message and exit 1. */
  json_t *p1 = g_pointer(store, 1);
  char *good = json_dumps(p1, JSON_COMPACT);
  const char *c1 = json_string_value(json_object_get(p1, "checkpoint"));
  char *moved;
  unsigned g1 = g_gen(store, 1);
  g_put(store, 1, "{\"task\":1}");
  text = tool_text(1, false, "verify %s --task 1", store);
  snprintf(want, sizeof(want),
           "task 1: damaged\n  %s/tasks/1/%u.json: not a task pointer of task "
           "1\n",
           store, g1);
  ck_assert_str_eq(text, want);
  free(text);
  text = tool_text(1, true, "inspect %s --task 1", store);
  snprintf(want, sizeof(want),
           "sluice-ckpt: %s/tasks/1/%u.json: not a task pointer of task 1\n",
           store, g1);
  ck_assert_str_eq(text, want);
  free(text);
  text = tool_text(1, true, "dump %s --task 1 --uid count", store);
  ck_assert_str_eq(text, want);
  free(text);
  text = tool_text(0, false, "list %s", store);
  snprintf(want, sizeof(want),
           "\n1     damaged: %s/tasks/1/%u.json: not a task pointer of task "
           "1\n",
           store, g1);
  ck_assert_msg(strstr(text, want), "%s", text);
  free(text);
  text = tool_text(1, false, "verify %s", store);
  ck_assert_msg(strstr(text, "task 0: valid") &&
                    strstr(text, "task 1: damaged"),
                "%s", text);
  free(text);
  g_put(store, 1,
        "{\"task\":1,\"checkpoint\":\"instances/nobody/chk-9\","
        "\"source\":\"in\",\"topic\":\"in\",\"partition\":1,"
        "\"offset\":3}");
  text = tool_text(1, false, "verify %s --task 1", store);
  snprintf(want, sizeof(want),
           "task 1: damaged\n  tasks/1/%u.json names "
           "instances/nobody/chk-9, which does not exist\n",
           g1);
  ck_assert_str_eq(text, want);
  free(text);
  /* A pointer of another partition. */
  json_t *p2 = json_deep_copy(p1);
  json_object_set_new(p2, "partition", json_integer(0));
  moved = json_dumps(p2, JSON_COMPACT);
  g_put(store, 1, moved);
  free(moved);
  json_decref(p2);
  text = tool_text(1, false, "verify %s --task 1", store);
  snprintf(want, sizeof(want),
           "task 1: damaged\n  tasks/1/%u.json names in[0]: task 1 is "
           "partition 1 of its topic\n",
           g1);
  ck_assert_str_eq(text, want);
  free(text);
  /* A pointer whose offset is not its checkpoint's. */
  json_object_set_new(p1, "offset", json_integer(g_records(1) + 5));
  moved = json_dumps(p1, JSON_COMPACT);
  g_put(store, 1, moved);
  free(moved);
  text = tool_text(1, false, "verify %s --task 1", store);
  snprintf(want, sizeof(want),
           "task 1: damaged\n  %s: source in's position of in[1] is %lld, "
           "the pointer's offset %lld\n",
           c1, (long long)g_records(1), (long long)g_records(1) + 5);
  ck_assert_str_eq(text, want);
  free(text);
  /* No pointer: nothing to verify. */
  snprintf(line, sizeof(line), "rm -r %s/tasks/1 %s/tasks/1.json", store,
           store);
  ck_assert_int_eq(system(line), 0);
  text = tool_text(2, true, "verify %s --task 1", store);
  snprintf(want, sizeof(want),
           "sluice-ckpt: task 1 has no pointer in %s/tasks (it has no "
           "snapshot yet: it starts empty when assigned)\n",
           store);
  ck_assert_str_eq(text, want);
  free(text);

  /* A pending checkpoint (exactly-once: named before its transaction
   * commits) beside the pointer's: verify checks the pointer's and notes
   * the pending one, list and inspect show it. It is c1 itself here,
   * which has _COMMITTED. */
  json_t *pp = json_loads(good, 0, NULL);
  json_object_set_new(pp, "pending", json_string(c1));
  json_object_set_new(pp, "pending_offset", json_integer(g_records(1)));
  moved = json_dumps(pp, JSON_COMPACT);
  g_put(store, 1, moved);
  free(moved);
  char pend[2048];
  snprintf(pend, sizeof(pend),
           "checkpoint %s is pending (offset %lld): its transaction "
           "committed (_COMMITTED); the next owner restores from it",
           c1, (long long)g_records(1));
  text = tool_text(0, false, "verify %s --task 1", store);
  snprintf(want, sizeof(want), "  note: %s\n", pend);
  ck_assert_msg(!strncmp(text, "task 1: valid", 13) && strstr(text, want), "%s",
                text);
  free(text);
  text = tool_text(0, false, "list %s", store);
  snprintf(want, sizeof(want), "  %s\n      %s\n", c1, pend);
  ck_assert_msg(strstr(text, want), "%s", text);
  free(text);
  text = tool_text(0, false, "inspect %s --task 1", store);
  snprintf(want, sizeof(want), "\n  pending      %s\n", pend);
  ck_assert_msg(strstr(text, want), "%s", text);
  free(text);
  json_t *vj = tool_json(0, "--json verify %s --task %s", store, "1");
  json_t *tg = json_object_get(vj, "target");
  ck_assert_str_eq(json_string_value(json_object_get(tg, "pending")), c1);
  ck_assert_str_eq(json_string_value(json_object_get(tg, "pending_state")),
                   "committed");
  ck_assert_int_eq(json_integer_value(json_object_get(tg, "pending_offset")),
                   g_records(1));
  json_decref(vj);
  json_decref(pp);
  /* Nothing but a pending checkpoint (the task's first snapshot, whose
   * commit is under way or whose owner died in it): pending, not
   * damaged; nothing to inspect yet. */
  g_put(store, 1,
        "{\"task\":1,\"checkpoint\":\"\",\"source\":\"in\","
        "\"topic\":\"in\",\"partition\":1,\"offset\":-1,"
        "\"pending\":\"instances/nobody/chk-9\",\"pending_offset\":5}");
  snprintf(pend, sizeof(pend),
           "checkpoint instances/nobody/chk-9 is pending (offset 5): not "
           "durable, its transaction did not commit; the task starts empty "
           "when assigned");
  text = tool_text(0, false, "verify %s --task 1", store);
  snprintf(want, sizeof(want), "task 1: pending\n  note: %s\n", pend);
  ck_assert_str_eq(text, want);
  free(text);
  text = tool_text(0, false, "list %s", store);
  snprintf(want, sizeof(want), "\n1     %-24s %10d %-10s %-5s  -\n      %s\n",
           "in[1]", -1, "pending", "no", pend);
  ck_assert_msg(strstr(text, want), "%s", text);
  free(text);
  text = tool_text(2, true, "inspect %s --task 1", store);
  snprintf(want, sizeof(want),
           "sluice-ckpt: task 1 has no complete snapshot yet: %s\n", pend);
  ck_assert_str_eq(text, want);
  free(text);
  g_put(store, 1, good);
  free(good);
  json_decref(p1);

  /* restore --task: a verified copy of the task's checkpoint. */
  snprintf(line, sizeof(line), "%s/copy", dir);
  text = tool_text(0, false, "restore %s --task 0 --to %s", store, line);
  ck_assert_msg(strstr(text, "verified"), "%s", text);
  free(text);

  /* prune: per instance the newest complete checkpoint and what a
   * pointer names stay; an instance nobody needs goes. Every task now
   * points at task 0's checkpoint: the other instances are gone. */
  for (uint32_t t = 1; t < G_PARTS; t++) {
    json_object_set_new(p0, "task", json_integer(t));
    char *tx = json_dumps(p0, JSON_COMPACT);
    g_put(store, t, tx);
    free(tx);
  }
  want[0] = 0;
  int kept = 0, removed = 0, gone = 0, kept_held = 0;
  for (int i = 0; i < n_inst; i++) {
    char idir[700], rel[300];
    snprintf(idir, sizeof(idir), "%s/instances/%s", store, names[i]);
    snprintf(rel, sizeof(rel), "instances/%s", names[i]);
    json_t *ls = tool_json(0, "--json list %s%s", idir, "");
    size_t k;
    json_t *r;
    json_array_foreach(json_object_get(ls, "checkpoints"), k, r) {
      char me[400];
      snprintf(me, sizeof(me), "%s/chk-%lld", rel,
               (long long)json_integer_value(json_object_get(r, "id")));
      ck_assert_str_eq(json_string_value(json_object_get(r, "status")),
                       "complete");
      if (k == 0 || strcmp(me, c0) == 0) {
        kept++;
        kept_held += strcmp(rel, held) == 0;
        continue;
      }
      removed++;
      l = strlen(want);
      snprintf(want + l, sizeof(want) - l,
               "would remove %s (older than the newest kept)\n",
               json_string_value(json_object_get(r, "path")));
    }
    json_decref(ls);
    if (strcmp(rel, held) != 0) {
      gone++;
      l = strlen(want);
      snprintf(want + l, sizeof(want) - l,
               "would remove %s (its process is gone and no pointer names "
               "its checkpoints)\n",
               idir);
    }
  }
  l = strlen(want);
  snprintf(want + l, sizeof(want) - l,
           "kept %d checkpoint director%s, would remove %d and %d instance "
           "director%s\n",
           kept, kept == 1 ? "y" : "ies", removed, gone,
           gone == 1 ? "y" : "ies");
  text = tool_text(0, false, "prune %s --keep 1 --dry-run", store);
  sort_lines(text);
  sort_lines(want);
  ck_assert_str_eq(text, want);
  free(text);
  free(tool_text(0, false, "prune %s --keep 1", store));
  json_t *ls = tool_json(0, "--json list %s%s", store, "");
  json_t *insts = json_object_get(ls, "instances");
  ck_assert_uint_eq(json_array_size(insts), 1);
  json_t *only = json_array_get(insts, 0);
  ck_assert_str_eq(json_string_value(json_object_get(only, "name")),
                   held + strlen("instances/"));
  ck_assert_int_eq((int)json_array_size(json_object_get(only, "checkpoints")),
                   kept_held);
  json_decref(ls);
  json_decref(p0);
  for (int i = 0; i < n_inst; i++)
    free(names[i]);
  free(store);
  rmrf(dir);
  free(dir);
}
END_TEST

int main(void) {
  Suite *s = suite_create("ckpt_tool");
  TCase *tc = tcase_create("sluice-ckpt");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, list_inspect_verify_dump);
  tcase_add_test(tc, damage_is_found);
  tcase_add_test(tc, prune_keeps_n);
  tcase_add_test(tc, positions_decoded_or_hex);
  tcase_add_test(tc, native_backend_unavailable);
  tcase_add_test(tc, restore_copy_restarts_the_same);
  tcase_add_test(tc, restore_refuses_what_verify_refuses);
  tcase_add_test(tc, latest_skips_what_verify_refuses);
  tcase_add_test(tc, segments_outlive_their_checkpoint);
  tcase_add_test(tc, group_store_tasks);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
