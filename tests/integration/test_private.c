/* SPDX-License-Identifier: Apache-2.0 */
/* Private by default: the files and directories a job creates for its
 * checkpoints and state are the owner's alone (files.access relaxes it),
 * and secrets in the configuration appear in no output: log lines, error
 * messages, _metadata and the checkpoint's other files, metrics, and
 * sluice-ckpt's list, inspect, verify and dump. */
#define _XOPEN_SOURCE 700
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "sluice.h"

#define SECRET "Zq8-s3cr3t-VALUE"

static const char *const secret_keys[] = {
    "kafka.sasl.password",         "kafka.ssl.key.password",
    "kafka.ssl.key.pem",           "kafka.sasl.oauthbearer.client.secret",
    "kafka.ssl.keystore.password",
};
#define N_SECRET_KEYS (sizeof(secret_keys) / sizeof(secret_keys[0]))

static int gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  static __thread char key[16];
  snprintf(key, sizeof(key), "k%d", (int)(i % 7));
  *out = (sl_record_t){.key = key,
                       .key_len = strlen(key),
                       .value = "v",
                       .value_len = 1,
                       .ts = (int64_t)i};
  return 0;
}

static int p_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_t *s = sl_state_register(
      ctx, &(sl_state_desc_t){.name = "n", .kind = SL_STATE_VALUE});
  sl_ctx_set_local(ctx, s);
  return s ? 0 : SL_ERR_STATE;
}

static int p_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  return sl_value_put(ctx, sl_ctx_local(ctx), rec->value, rec->value_len);
}

static int drop(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  return 0;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  size_t cap = 1 << 16, n = 0, got;
  char *b = malloc(cap);
  while ((got = fread(b + n, 1, cap - n - 1, f)) > 0)
    if ((n += got) + 1 == cap)
      b = realloc(b, cap *= 2);
  fclose(f);
  b[n] = 0;
  if (len)
    *len = n;
  return b;
}

static bool has_secret(const char *text, size_t len) {
  return memmem(text, len, SECRET, strlen(SECRET)) != NULL;
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/sl-private-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(d));
  return d;
}

static void rmrf(const char *path) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
  ck_assert_int_eq(system(cmd), 0);
}

/* Runs the job with checkpoints in root/ck and state in root/st; its
 * stderr goes to root/stderr. Returns the Prometheus and JSON metrics. */
static char *run_job(const char *root, const char *backend, const char *access,
                     bool secrets) {
  char err[512], ck[512], st[512], log[512];
  snprintf(ck, sizeof(ck), "%s/ck", root);
  snprintf(st, sizeof(st), "%s/st", root);
  snprintf(log, sizeof(log), "%s/stderr", root);
  sl_conf_t *conf = sl_conf_new();
  const char *kv[][2] = {{"parallelism", "2"},
                         {"checkpoint.dir", ck},
                         {"state.dir", st},
                         {"state.backend", backend},
                         {"log.level", "debug"},
                         {"files.access", access},
                         {"checkpoint.retained", "5"},
                         {"checkpoint.interval.ms", "1"}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(sl_conf_set(conf, kv[i][0], kv[i][1], err, sizeof(err)) == 0,
                  "%s", err);
  for (size_t i = 0; secrets && i < N_SECRET_KEYS; i++)
    ck_assert_int_eq(
        sl_conf_set(conf, secret_keys[i], SECRET, err, sizeof(err)), 0);
  fflush(stderr);
  int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ck_assert_int_ge(fd, 0);
  dup2(fd, 2);
  close(fd);
  sl_job_t *job = sl_job_new("private", conf, err, sizeof(err));
  ck_assert_msg(job != NULL, "%s", err);
  sl_generator_opts_t g = {.count = 5000, .gen = gen, .parallel = true};
  sl_stream_t *s = sl_source_generator(job, "gen", &g);
  sl_process_ops_t ops = {.open = p_open, .on_element = p_element};
  s = sl_process(sl_key_by(s, NULL, NULL), "count", &ops, NULL);
  ck_assert_int_eq(sl_sink(s, "sink", drop, NULL), 0);
  int rc = sl_job_run(job);
  char *prom = NULL, *json = NULL, *both = NULL;
  ck_assert_int_eq(
      sl_job_metrics_format(job, SL_METRICS_PROMETHEUS, &prom, NULL), 0);
  ck_assert_int_eq(sl_job_metrics_format(job, SL_METRICS_JSON, &json, NULL), 0);
  ck_assert_msg(rc == 0, "job failed: %s", sl_job_errmsg(job));
  ck_assert_msg(!has_secret(sl_job_errmsg(job), strlen(sl_job_errmsg(job))),
                "errmsg");
  sl_job_destroy(job);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  ck_assert_int_ge(asprintf(&both, "%s\n%s", prom, json), 0);
  free(prom);
  free(json);
  return both;
}

/* ---- File modes -----------------------------------------------------------
 */

static mode_t want_file, want_dir;
static const char *walk_root;
static int n_checked;

static int check_mode(const char *path, const struct stat *sb, int type,
                      struct FTW *ftw) {
  (void)ftw;
  mode_t m = sb->st_mode & 07777;
  if (type == FTW_D || type == FTW_DP)
    ck_assert_msg(m == want_dir, "%s is %04o, expected %04o", path, m,
                  want_dir);
  else if (type == FTW_F)
    ck_assert_msg(m == want_file, "%s is %04o, expected %04o", path, m,
                  want_file);
  n_checked++;
  (void)walk_root;
  return 0;
}

static void modes(const char *backend, const char *access, mode_t file,
                  mode_t dir) {
  mode_t old = umask(022);
  char *root = tmpdir();
  free(run_job(root, backend, access, false));
  char ck[512], st[512], job_dir[600];
  snprintf(ck, sizeof(ck), "%s/ck", root);
  snprintf(st, sizeof(st), "%s/st", root);
  want_file = file;
  want_dir = dir;
  n_checked = 0;
  /* Everything in checkpoint.dir: chk-<id>, w<i>.snap, _metadata,
   * _COMMITTED, .lock, RocksDB's checkpoint directories and files. */
  ck_assert_int_eq(nftw(ck, check_mode, 16, FTW_PHYS), 0);
  ck_assert_int_gt(n_checked, 4);
  /* RocksDB: state.dir and the job's directory in it (RocksDB's own
   * files live below, unreachable through them); hashmap makes none. */
  struct stat sb;
  if (strcmp(backend, "rocksdb") == 0) {
    ck_assert_int_eq(stat(st, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, dir);
    snprintf(job_dir, sizeof(job_dir), "%s/private", st);
    ck_assert_int_eq(stat(job_dir, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, dir);
  }
  rmrf(root);
  free(root);
  umask(old);
}

START_TEST(checkpoint_files_private_by_default) {
  modes(_i ? "rocksdb" : "hashmap", "private", 0600, 0700);
}
END_TEST

START_TEST(files_access_group_relaxes_them) {
  modes(_i ? "rocksdb" : "hashmap", "group", 0640, 0750);
}
END_TEST

/* ---- Secrets --------------------------------------------------------------
 */

static char *tool(const char *args) {
  const char *build = getenv("SLUICE_BUILD_ROOT");
  char cmd[2048], out[600];
  snprintf(out, sizeof(out), "/tmp/sl-private-tool-%d", (int)getpid());
  snprintf(cmd, sizeof(cmd), "%s/tools/sluice-ckpt %s >%s 2>&1",
           build ? build : "build", args, out);
  int st = system(cmd);
  ck_assert_msg(st != -1, "cannot run %s", cmd);
  char *text = slurp(out, NULL);
  unlink(out);
  return text;
}

static const char *scan_what;
static int scan_file(const char *path, const struct stat *sb, int type,
                     struct FTW *ftw) {
  (void)sb, (void)ftw;
  if (type != FTW_F)
    return 0;
  size_t len;
  char *text = slurp(path, &len);
  ck_assert_msg(!has_secret(text, len), "%s: the secret is in %s", scan_what,
                path);
  free(text);
  return 0;
}

START_TEST(secrets_in_no_output) {
  const char *backend = _i ? "rocksdb" : "hashmap";
  char *root = tmpdir();
  char *metrics = run_job(root, backend, "private", true);
  ck_assert_msg(!has_secret(metrics, strlen(metrics)), "metrics: %s", metrics);
  free(metrics);
  char path[600];
  snprintf(path, sizeof(path), "%s/stderr", root);
  size_t len;
  char *log = slurp(path, &len);
  ck_assert_msg(len > 0, "log.level=debug wrote nothing");
  ck_assert_msg(!has_secret(log, len), "log: %s", log);
  free(log);
  snprintf(path, sizeof(path), "%s/ck", root);
  scan_what = backend;
  ck_assert_int_eq(nftw(path, scan_file, 16, FTW_PHYS), 0);
  snprintf(path, sizeof(path), "%s/st", root);
  ck_assert_int_eq(nftw(path, scan_file, 16, FTW_PHYS), _i ? 0 : -1);
  char args[1024];
  static const char *const cmds[] = {"list %s/ck",
                                     "--json list %s/ck",
                                     "inspect %s/ck/chk-*",
                                     "--json inspect %s/ck/chk-*",
                                     "verify %s/ck/chk-*",
                                     "--json verify %s/ck/chk-*",
                                     "dump %s/ck/chk-* --uid count"};
  for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
    snprintf(args, sizeof(args), cmds[i], root);
    char *out = tool(args);
    ck_assert_msg(strlen(out) > 0, "sluice-ckpt %s printed nothing", args);
    ck_assert_msg(!has_secret(out, strlen(out)), "sluice-ckpt %s: %s", args,
                  out);
    free(out);
  }
  rmrf(root);
  free(root);
}
END_TEST

/* Configuration errors name the file, line and key, never a secret's
 * value: a line without '=' is not quoted when it names a secret (it was
 * before), and jansson's "near" text is left out for such files. */
START_TEST(config_errors_hide_secrets) {
  static const struct {
    const char *name, *text, *want;
  } cases[] = {
      {"a.properties", "parallelism = 2\nkafka.sasl.password " SECRET "\n",
       "a.properties:2: expected \"key = value\""},
      {"b.properties", "kafka.ssl.key.password:" SECRET "\n",
       "b.properties:1: expected \"key = value\""},
      {"c.json", "{\"kafka.sasl.password\": " SECRET "}", "c.json:1:"},
      {"d.json", "{\"kafka.sasl.password\": \"" SECRET "\" \"x\"}",
       "d.json:1:"},
  };
  char *root = tmpdir();
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char path[600], err[1024];
    snprintf(path, sizeof(path), "%s/%s", root, cases[i].name);
    FILE *f = fopen(path, "w");
    fputs(cases[i].text, f);
    fclose(f);
    sl_conf_t *conf = sl_conf_new();
    ck_assert_int_eq(sl_conf_load_file(conf, path, err, sizeof(err)),
                     SL_ERR_CONF);
    ck_assert_msg(strstr(err, cases[i].want), "%s: %s", cases[i].name, err);
    ck_assert_msg(!strstr(err, SECRET) && !strstr(err, "Zq8"),
                  "%s: the secret is in \"%s\"", cases[i].name, err);
    sl_conf_destroy(conf);
  }
  rmrf(root);
  free(root);
}
END_TEST

START_TEST(which_keys_are_secret) {
  for (size_t i = 0; i < N_SECRET_KEYS; i++)
    ck_assert_msg(sl_conf_is_secret(secret_keys[i]), "%s", secret_keys[i]);
  static const char *const not_secret[] = {
      "kafka.bootstrap.servers", "parallelism", "kafka.group.id",
      "checkpoint.dir", "kafka.security.protocol"};
  for (size_t i = 0; i < sizeof(not_secret) / sizeof(not_secret[0]); i++)
    ck_assert_msg(!sl_conf_is_secret(not_secret[i]), "%s", not_secret[i]);
  ck_assert(sl_conf_is_secret("KAFKA.SASL.PASSWORD"));
  ck_assert(!sl_conf_is_secret(NULL));
}
END_TEST

int main(void) {
  Suite *s = suite_create("private");
  TCase *tc = tcase_create("private");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, checkpoint_files_private_by_default, 0, 2);
  tcase_add_loop_test(tc, files_access_group_relaxes_them, 0, 2);
  tcase_add_loop_test(tc, secrets_in_no_output, 0, 2);
  tcase_add_test(tc, config_errors_hide_secrets);
  tcase_add_test(tc, which_keys_are_secret);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
