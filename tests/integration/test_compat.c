/* SPDX-License-Identifier: Apache-2.0 */
/* State compatibility on restore: a job restored from a checkpoint taken
 * by another version of itself either finds each state in the layout it
 * now registers (and continues from it), or fails with the operator, the
 * state and what changed named, or, with restore.allow.dropped.state,
 * drops that state and says so. Never is a state read in the wrong
 * layout, zeroed or dropped silently. One test per kind of change, plus
 * a checkpoint written before the layout record existed. */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "sluice.h"

#define KEYS 5

/* How a job version registers the state "n" of its operator "count", and
 * the aggregate of its window "win". */
typedef struct variant {
  bool no_state; /* "n" is not registered at all */
  sl_state_kind kind;
  uint32_t version;
  size_t value_size; /* SL_STATE_REDUCING */
  bool ttl;
  bool window, merge; /* a sliding window "win"; its aggregate has merge */
  bool tumbling;      /* the window is tumbling instead */
} variant;

static const variant base = {.kind = SL_STATE_VALUE};

static int gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  static __thread char key[16];
  snprintf(key, sizeof(key), "k%d", (int)(i % KEYS));
  *out = (sl_record_t){.key = key,
                       .key_len = strlen(key),
                       .value = "x",
                       .value_len = 1,
                       .ts = (int64_t)i * 10};
  return 0;
}

static int sum(void *acc, const void *in, size_t len, void *opaque) {
  (void)opaque;
  uint64_t a, b;
  memcpy(&a, acc, 8);
  memcpy(&b, in, 8);
  a += b;
  (void)len;
  memcpy(acc, &a, 8);
  return 0;
}

static int p_open(sl_ctx_t *ctx, void *opaque) {
  const variant *v = opaque;
  if (v->no_state)
    return 0;
  sl_state_desc_t d = {.name = "n",
                       .kind = v->kind,
                       .version = v->version,
                       .value_size = v->value_size,
                       .reduce = sum};
  if (v->ttl)
    d.ttl = (sl_state_ttl_t){.ttl_ms = INT64_MAX, .time = SL_TTL_EVENT_TIME};
  sl_state_t *st = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, st);
  return st ? 0 : SL_ERR_STATE;
}

/* Emits the key's count of elements so far, as the state holds it. */
static int p_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  const variant *v = opaque;
  sl_state_t *st = sl_ctx_local(ctx);
  uint64_t n = 1;
  const void *val;
  size_t len;
  int rc = 0;
  if (!st) {
    n = 0;
  } else if (v->kind == SL_STATE_VALUE) {
    if (sl_value_get(ctx, st, &val, &len) == 1 && len == 8)
      memcpy(&n, val, 8), n++;
    rc = sl_value_put(ctx, st, &n, 8);
  } else if (v->kind == SL_STATE_LIST) {
    rc = sl_list_add(ctx, st, "x", 1);
    n = 0;
  } else {
    unsigned char one[16] = {1};
    rc = sl_reducing_add(ctx, st, one, v->value_size);
    if (!rc && sl_reducing_get(ctx, st, &val, &len) == 1)
      memcpy(&n, val, 8);
  }
  char out[24];
  snprintf(out, sizeof(out), "%llu", (unsigned long long)n);
  sl_record_t o = *rec;
  o.value = out;
  o.value_len = strlen(out);
  return rc ? rc : sl_emit(ctx, &o);
}

static int w_add(void *acc, const sl_record_t *rec, void *opaque) {
  (void)rec, (void)opaque;
  (*(uint64_t *)acc)++;
  return 0;
}
static void w_merge(void *acc, const void *other, void *opaque) {
  (void)opaque;
  *(uint64_t *)acc += *(const uint64_t *)other;
}

typedef struct result {
  pthread_mutex_t mu;
  uint64_t max[KEYS];
} result;

static int sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  result *r = opaque;
  char k[16] = "", v[24] = "";
  memcpy(k, rec->key, rec->key_len < 15 ? rec->key_len : 15);
  memcpy(v, rec->value, rec->value_len < 23 ? rec->value_len : 23);
  int i = atoi(k + 1);
  uint64_t n = strtoull(v, NULL, 10);
  pthread_mutex_lock(&r->mu);
  if (i >= 0 && i < KEYS && n > r->max[i])
    r->max[i] = n;
  pthread_mutex_unlock(&r->mu);
  return 0;
}

typedef struct run {
  int rc;
  char msg[2048];
  uint64_t max[KEYS];
} run;

/* Runs version v over records [0, count) (continuing from the checkpoint
 * when restoring). */
static void run_job(const char *dir, const char *backend, bool restore,
                    bool allow, const variant *v, uint64_t count, run *out) {
  char err[512], state_dir[600];
  /* A state directory of its own: RocksDB locks the job's directory, and
   * another run of this suite may hold the shared default's. */
  snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
  sl_conf_t *conf = sl_conf_new();
  const char *kv[][2] = {
      {"parallelism", "2"},
      {"checkpoint.dir", dir},
      {"state.dir", state_dir},
      {"state.backend", backend},
      {"log.level", "error"},
      {"restore.from", restore ? "latest" : ""},
      {"restore.allow.dropped.state", allow ? "true" : "false"}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(sl_conf_set(conf, kv[i][0], kv[i][1], err, sizeof(err)) == 0,
                  "%s", err);
  sl_job_t *job = sl_job_new("compat", conf, err, sizeof(err));
  ck_assert_msg(job != NULL, "%s", err);
  result r = {.mu = PTHREAD_MUTEX_INITIALIZER};
  result wr = {.mu = PTHREAD_MUTEX_INITIALIZER}; /* the window's output */
  sl_generator_opts_t g = {.count = count, .gen = gen, .parallel = true};
  sl_stream_t *s = sl_source_generator(job, "gen", &g);
  sl_process_ops_t ops = {.open = p_open, .on_element = p_element};
  s = sl_process(sl_key_by(s, NULL, NULL), "count", &ops, (void *)v);
  ck_assert_int_eq(sl_sink(s, "sink", sink, &r), 0);
  if (v->window) {
    sl_window_spec_t ws = {.assigner = v->tumbling ? SL_WINDOW_TUMBLING
                                                   : SL_WINDOW_SLIDING,
                           .size = 400,
                           .slide = v->tumbling ? 0 : 100};
    sl_window_fn_t fn = {
        .acc_size = 8, .add = w_add, .merge = v->merge ? w_merge : NULL};
    sl_stream_t *w = sl_window(sl_key_by(s, NULL, NULL), "win", &ws, &fn, NULL);
    ck_assert_int_eq(sl_sink(w, "wsink", sink, &wr), 0);
  }
  out->rc = sl_job_run(job);
  snprintf(out->msg, sizeof(out->msg), "%s", sl_job_errmsg(job));
  memcpy(out->max, r.max, sizeof(r.max));
  sl_job_destroy(job);
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/sl-compat-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(d));
  return d;
}

static void rmrf(const char *path) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
  ck_assert_int_eq(system(cmd), 0);
}

/* Takes a checkpoint with version a (100 records), then restores version
 * b over records up to 200. */
static void upgrade(const char *backend, const variant *a, const variant *b,
                    bool allow, run *out) {
  char *dir = tmpdir();
  run first;
  run_job(dir, backend, false, false, a, 100, &first);
  ck_assert_msg(first.rc == 0, "first run: %s", first.msg);
  run_job(dir, backend, true, allow, b, 200, out);
  rmrf(dir);
  free(dir);
}

static const char *backend_of(int i) {
  return i ? "rocksdb" : "hashmap";
}

static void fails_with(const variant *a, const variant *b, const char *what) {
  for (int be = 0; be < 2; be++) {
    run r;
    upgrade(backend_of(be), a, b, false, &r);
    ck_assert_msg(r.rc == SL_ERR_STATE, "%s: restore returned %d: %s",
                  backend_of(be), r.rc, r.msg);
    ck_assert_msg(strstr(r.msg, what), "%s: \"%s\" not in: %s", backend_of(be),
                  what, r.msg);
    ck_assert_msg(strstr(r.msg, "restore.allow.dropped.state"), "%s", r.msg);
  }
}

START_TEST(same_layout_restores_as_is) {
  run r;
  upgrade(backend_of(_i), &base, &base, false, &r);
  ck_assert_msg(r.rc == 0, "%s", r.msg);
  for (int k = 0; k < KEYS; k++)
    ck_assert_uint_eq(r.max[k], 200 / KEYS); /* continued from 100/KEYS */
}
END_TEST

START_TEST(version_change_fails) {
  variant b = base;
  b.version = 1;
  fails_with(&base, &b,
             "operator \"count\", state \"n\": version changed "
             "from 0 to 1");
}
END_TEST

/* On a native RocksDB snapshot the backend itself finds the kind
 * changed when the operator registers the state, before any comparison. */
START_TEST(kind_change_fails) {
  variant b = base;
  b.kind = SL_STATE_LIST;
  run r;
  upgrade("hashmap", &base, &b, false, &r);
  ck_assert_msg(r.rc == SL_ERR_STATE, "%d: %s", r.rc, r.msg);
  ck_assert_msg(strstr(r.msg, "operator \"count\", state \"n\": kind "
                              "changed from value to list"),
                "%s", r.msg);
  upgrade("rocksdb", &base, &b, false, &r);
  ck_assert_msg(r.rc == SL_ERR_INVAL, "%d: %s", r.rc, r.msg);
  ck_assert_msg(strstr(r.msg, "operator \"count\" (process) on worker "), "%s",
                r.msg);
  ck_assert_msg(strstr(r.msg, "state \"count/n\" is stored as another kind "
                              "than list (its kind changed"),
                "%s", r.msg);
}
END_TEST

START_TEST(value_size_change_fails) {
  variant a = base, b = base;
  a.kind = b.kind = SL_STATE_REDUCING;
  a.value_size = 8;
  b.value_size = 16;
  fails_with(&a, &b, "state \"n\": size changed from 8 to 16");
}
END_TEST

START_TEST(ttl_change_fails) {
  variant b = base;
  b.ttl = true;
  fails_with(&base, &b, "state \"n\": ttl changed from off to on");
  fails_with(&b, &base, "state \"n\": ttl changed from on to off");
}
END_TEST

START_TEST(dropped_state_fails) {
  variant b = base;
  b.no_state = true;
  fails_with(&base, &b,
             "operator \"count\", state \"n\": the operator no longer "
             "registers it");
}
END_TEST

/* A sliding window's aggregate that gained merge: the job now keeps one
 * accumulator per slice ("slices") instead of one per window
 * ("contents"). Per-window accumulators cannot be split into slices, so
 * the restore fails, naming the old layout; and back (merge removed). */
START_TEST(window_aggregate_gained_merge_fails) {
  variant a = base, b = base;
  a.window = b.window = true;
  b.merge = true;
  fails_with(&a, &b,
             "operator \"win\", state \"contents\": the operator no longer "
             "registers it (its layout was \"kind=value version=0 ttl=off "
             "window=sliding fn=aggregate acc=8 path=per-window");
  fails_with(&b, &a,
             "operator \"win\", state \"slices\": the operator no "
             "longer registers it");
}
END_TEST

/* A tumbling window's aggregate keeps one accumulator per window with or
 * without merge: gaining it changes nothing stored, and restores. */
START_TEST(tumbling_aggregate_gained_merge_restores) {
  variant a = base, b = base;
  a.window = b.window = a.tumbling = b.tumbling = true;
  b.merge = true;
  for (int be = 0; be < 2; be++) {
    run r;
    upgrade(backend_of(be), &a, &b, false, &r);
    ck_assert_msg(r.rc == 0, "%s: %s", backend_of(be), r.msg);
  }
}
END_TEST

/* With restore.allow.dropped.state the changed state starts empty (the
 * counts restart from 1 at record 100) and the rest restores; on a
 * native RocksDB snapshot a changed state cannot be dropped in place,
 * which is said. */
START_TEST(allow_dropped_state_drops_changed_state) {
  variant b = base;
  b.version = 7;
  run r;
  upgrade("hashmap", &base, &b, true, &r);
  ck_assert_msg(r.rc == 0, "%s", r.msg);
  for (int k = 0; k < KEYS; k++)
    ck_assert_uint_eq(r.max[k], 100 / KEYS);
  upgrade("rocksdb", &base, &b, true, &r);
  ck_assert_msg(r.rc == SL_ERR_STATE, "%s", r.msg);
  ck_assert_msg(strstr(r.msg, "cannot drop it from the native rocksdb "
                              "snapshot"),
                "%s", r.msg);
  /* A state the operator no longer registers is dropped on both: a
   * native snapshot keeps its bytes where nothing reads them. */
  variant gone = base;
  gone.no_state = true;
  for (int be = 0; be < 2; be++) {
    upgrade(backend_of(be), &base, &gone, true, &r);
    ck_assert_msg(r.rc == 0, "%s: %s", backend_of(be), r.msg);
  }
}
END_TEST

/* sluice-ckpt inspect lists each state once (P=2: both workers record
 * every state), with its recorded layout, states without entries too. */
START_TEST(inspect_lists_each_state_once_with_its_layout) {
  char *dir = tmpdir();
  variant a = base;
  a.window = true;
  run r;
  run_job(dir, "hashmap", false, false, &a, 100, &r);
  ck_assert_msg(r.rc == 0, "%s", r.msg);
  const char *build = getenv("SLUICE_BUILD_ROOT");
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "%s/tools/sluice-ckpt --json inspect %s/chk-*",
           build ? build : "build", dir);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  json_error_t je;
  json_t *doc = json_loadf(p, 0, &je);
  ck_assert_int_eq(pclose(p), 0);
  ck_assert_msg(doc != NULL, "%s", je.text);
  json_t *states = json_object_get(doc, "states");
  static const char *const want[][2] = {
      {"count/n", "kind=value version=0 ttl=off"},
      {"win/contents", "kind=value version=0 ttl=off window=sliding "
                       "fn=aggregate acc=8 path=per-window slice=0"}};
  ck_assert_uint_eq(json_array_size(states), 2);
  for (size_t i = 0; i < 2; i++) {
    json_t *row = json_array_get(states, i);
    ck_assert_str_eq(json_string_value(json_object_get(row, "name")),
                     want[i][0]);
    ck_assert_str_eq(json_string_value(json_object_get(row, "layout")),
                     want[i][1]);
  }
  json_decref(doc);
  rmrf(dir);
  free(dir);
}
END_TEST

/* ---- A checkpoint from before the layout record ------------------------- */

#define SEEDS_NO_MAIN
#include "../fuzz/make_seeds.c"

/* The fuzz corpus keeps a checkpoint of make_seeds' job written by a
 * build without the layout record (its files joined by "\0SL|"). */
START_TEST(checkpoint_without_layout_restores) {
  char path[1024];
  snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/ckpt_tool/seed-v1-chk",
           SLUICE_SOURCE_ROOT);
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  /* chk-1: the id its _metadata names. */
  static unsigned char buf[1 << 16];
  size_t len = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  char *dir = tmpdir(), chk[600], msg[1024];
  snprintf(chk, sizeof(chk), "%s/chk-1", dir);
  ck_assert_int_eq(mkdir(chk, 0700), 0);
  static const char *const names[] = {"_metadata", "w0.snap", "w1.snap",
                                      "_COMMITTED"};
  size_t start = 0, part = 0;
  for (size_t i = 0; i <= len && part < 4; i++) {
    if (i < len && (i + 4 > len || memcmp(buf + i, "\0SL|", 4) != 0))
      continue;
    char fp[700];
    snprintf(fp, sizeof(fp), "%s/%s", chk, names[part++]);
    FILE *o = fopen(fp, "wb");
    fwrite(buf + start, 1, i - start, o);
    fclose(o);
    start = i + 4;
    i += 3;
  }
  ck_assert_uint_ge(part, 3);
  run r = {0};
  r.rc = seeds_run(NULL, chk, 80, msg, sizeof(msg));
  ck_assert_msg(r.rc == 0, "%s", msg);
  rmrf(dir);
  free(dir);
}
END_TEST

int main(void) {
  Suite *s = suite_create("compat");
  TCase *tc = tcase_create("compat");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, same_layout_restores_as_is, 0, 2);
  tcase_add_test(tc, version_change_fails);
  tcase_add_test(tc, kind_change_fails);
  tcase_add_test(tc, value_size_change_fails);
  tcase_add_test(tc, ttl_change_fails);
  tcase_add_test(tc, dropped_state_fails);
  tcase_add_test(tc, window_aggregate_gained_merge_fails);
  tcase_add_test(tc, tumbling_aggregate_gained_merge_restores);
  tcase_add_test(tc, allow_dropped_state_drops_changed_state);
  tcase_add_test(tc, checkpoint_without_layout_restores);
  tcase_add_test(tc, inspect_lists_each_state_once_with_its_layout);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
