/* SPDX-License-Identifier: Apache-2.0 */
/* The built-in JSON-lines source and the JSON-lines / stdout sinks: keys
 * and timestamps from fields and JSON pointers, malformed lines under both
 * error policies, a missing file, and the two line formats, at P=1 and 2. */
#include <fcntl.h>
#include <jansson.h>
#include <unistd.h>

#include "check_main.h"
#include "testutil.h"

static char *write_tmp(const char *text) {
  char *path = strdup("/tmp/sluice-jsonl-XXXXXX");
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

static char *tmp_name(void) {
  char *path = strdup("/tmp/sluice-out-XXXXXX");
  int fd = mkstemp(path);
  close(fd);
  return path;
}

/* Reads a file's lines into an array (caller frees each and the array). */
static size_t read_lines(const char *path, char ***out) {
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  char *line = NULL;
  size_t cap = 0, n = 0;
  char **lines = NULL;
  ssize_t len;
  while ((len = getline(&line, &cap, f)) > 0) {
    if (line[len - 1] == '\n')
      line[len - 1] = '\0';
    lines = realloc(lines, (n + 1) * sizeof(*lines));
    lines[n++] = strdup(line);
  }
  free(line);
  fclose(f);
  *out = lines;
  return n;
}

static void free_lines(char **l, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(l[i]);
  free(l);
}

static const char *INPUT =
    "{\"user\":\"a\",\"n\":1,\"ts\":100,\"meta\":{\"geo\":\"de\"}}\n"
    "\n"
    "{\"user\":\"b\",\"n\":2,\"ts\":200,\"meta\":{\"geo\":\"fr\"}}\n"
    "{\"user\":\"a\",\"n\":3,\"ts\":300,\"meta\":{\"geo\":\"de\"}}\n"
    "{\"user\":7,\"n\":4,\"ts\":400,\"meta\":{\"geo\":\"it\"}}\n";

START_TEST(source_keys_and_timestamps_from_fields) {
  char *in = write_tmp(INPUT);
  tu_sink sink;
  tu_sink_init(&sink);
  sl_job_t *job = tu_job(_i + 1, NULL);
  sl_jsonl_source_opts_t o = {.key_field = "user", .ts_field = "/ts"};
  sl_stream_t *s = sl_key_by(sl_source_jsonl(job, "in", in, &o), NULL, NULL);
  sl_sink(s, "sink", tu_sink_fn, &sink);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_uint_eq(sink.n, 4);
  int64_t ts_sum = 0;
  for (size_t i = 0; i < sink.n; i++) {
    ts_sum += sink.recs[i].ts;
    json_t *j = json_loads(sink.recs[i].value, 0, NULL);
    ck_assert_ptr_nonnull(j);
    json_t *u = json_object_get(j, "user");
    if (json_is_string(u))
      ck_assert_str_eq(sink.recs[i].key, json_string_value(u));
    else
      ck_assert_str_eq(sink.recs[i].key, "7"); /* numbers in decimal */
    json_decref(j);
  }
  ck_assert_int_eq(ts_sum, 1000);
  sl_job_destroy(job);
  tu_sink_free(&sink);
  unlink(in);
  free(in);
}
END_TEST

START_TEST(source_json_pointer_key) {
  char *in = write_tmp(INPUT);
  tu_sink sink;
  tu_sink_init(&sink);
  sl_job_t *job = tu_job(1, NULL);
  sl_jsonl_source_opts_t o = {.key_field = "/meta/geo"};
  sl_sink(sl_source_jsonl(job, "in", in, &o), "sink", tu_sink_fn, &sink);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_uint_eq(sink.n, 4);
  ck_assert_str_eq(sink.recs[0].key, "de");
  ck_assert_str_eq(sink.recs[1].key, "fr");
  ck_assert_str_eq(sink.recs[3].key, "it");
  sl_job_destroy(job);
  tu_sink_free(&sink);
  unlink(in);
  free(in);
}
END_TEST

static const char *BAD =
    "{\"user\":\"a\",\"ts\":1}\n"
    "{\"user\":\"b\",\"ts\":2}\n"
    "{\"user\":\"c\",\"ts\":\n"       /* line 3: not JSON */
    "{\"user\":\"d\"}\n"              /* line 4: no ts */
    "[1,2]\n"                         /* line 5: not an object */
    "{\"user\":\"e\",\"ts\":\"x\"}\n" /* line 6: ts not an integer */
    "{\"user\":\"f\",\"ts\":6}\n";

START_TEST(malformed_lines_fail_with_location) {
  char *in = write_tmp(BAD);
  sl_job_t *job = tu_job(1, "fail");
  sl_jsonl_source_opts_t o = {.key_field = "user", .ts_field = "ts"};
  sl_sink(sl_source_jsonl(job, "in", in, &o), "sink", tu_discard, NULL);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_DECODE);
  char where[64];
  snprintf(where, sizeof(where), "%s:3", in);
  ck_assert_msg(strstr(sl_job_errmsg(job), where) &&
                    strstr(sl_job_errmsg(job), "\"in\""),
                "message: %s", sl_job_errmsg(job));
  sl_job_destroy(job);
  unlink(in);
  free(in);
}
END_TEST

START_TEST(malformed_lines_skipped_and_counted) {
  char *in = write_tmp(BAD);
  tu_sink sink;
  tu_sink_init(&sink);
  sl_job_t *job = tu_job(2, "skip");
  sl_jsonl_source_opts_t o = {.key_field = "user", .ts_field = "ts"};
  sl_sink(sl_source_jsonl(job, "in", in, &o), "sink", tu_sink_fn, &sink);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_uint_eq(sink.n, 3);
  sl_op_stats_t st;
  sl_job_op_stats(job, "in", &st);
  ck_assert_uint_eq(st.errors, 4);
  ck_assert_uint_eq(st.records_out, 3);
  sl_job_destroy(job);
  tu_sink_free(&sink);
  unlink(in);
  free(in);
}
END_TEST

START_TEST(missing_file_is_a_clear_error) {
  sl_job_t *job = tu_job(1, NULL);
  sl_sink(sl_source_jsonl(job, "in", "/nonexistent/clicks.jsonl", NULL), "sink",
          tu_discard, NULL);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_IO);
  ck_assert_ptr_nonnull(
      strstr(sl_job_errmsg(job), "cannot open /nonexistent/clicks.jsonl"));
  sl_job_destroy(job);
}
END_TEST

static int to_text(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                   void *opaque) {
  (void)ctx;
  (void)opaque;
  /* value "not json" for odd n, to show the string fallback */
  if (memmem(in->value, in->value_len, "\"n\":3", 5)) {
    out->value = "not json";
    out->value_len = 8;
  }
  return 0;
}

START_TEST(jsonl_sink_formats) {
  char *in = write_tmp(INPUT);
  char *value_out = tmp_name(), *env_out = tmp_name();
  sl_job_t *job = tu_job(2, NULL);
  sl_jsonl_source_opts_t o = {.key_field = "user", .ts_field = "ts"};
  sl_stream_t *s =
      sl_map(sl_key_by(sl_source_jsonl(job, "in", in, &o), NULL, NULL), "text",
             to_text, NULL);
  ck_assert_int_eq(sl_sink_jsonl(s, "values", value_out, SL_LINE_VALUE), SL_OK);
  ck_assert_int_eq(sl_sink_jsonl(s, "envelopes", env_out, SL_LINE_ENVELOPE),
                   SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  char **lines;
  size_t n = read_lines(value_out, &lines);
  ck_assert_uint_eq(n, 4);
  free_lines(lines, n);
  n = read_lines(env_out, &lines);
  ck_assert_uint_eq(n, 4);
  int strings = 0, objects = 0;
  for (size_t i = 0; i < n; i++) {
    json_error_t je;
    json_t *j = json_loads(lines[i], 0, &je);
    ck_assert_msg(j != NULL, "line %zu not JSON: %s", i, lines[i]);
    ck_assert(json_is_integer(json_object_get(j, "ts")));
    ck_assert_ptr_nonnull(json_object_get(j, "key"));
    json_t *v = json_object_get(j, "value");
    strings += json_is_string(v);
    objects += json_is_object(v);
    json_decref(j);
  }
  ck_assert_int_eq(strings, 1);
  ck_assert_int_eq(objects, 3);
  free_lines(lines, n);
  sl_job_destroy(job);
  unlink(in);
  unlink(value_out);
  unlink(env_out);
  free(in);
  free(value_out);
  free(env_out);
}
END_TEST

START_TEST(stdout_sink_writes_lines) {
  char *in = write_tmp(INPUT), *cap = tmp_name();
  fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  int fd = open(cap, O_WRONLY | O_TRUNC);
  dup2(fd, STDOUT_FILENO);
  close(fd);
  sl_job_t *job = tu_job(1, NULL);
  sl_sink_stdout(sl_source_jsonl(job, "in", in, NULL), "out", SL_LINE_VALUE);
  int rc = sl_job_run(job);
  fflush(stdout);
  dup2(saved, STDOUT_FILENO);
  close(saved);
  ck_assert_int_eq(rc, SL_OK);
  char **lines;
  size_t n = read_lines(cap, &lines);
  ck_assert_uint_eq(n, 4);
  ck_assert_str_eq(lines[0],
                   "{\"user\":\"a\",\"n\":1,\"ts\":100,\"meta\":{\"geo\":"
                   "\"de\"}}");
  free_lines(lines, n);
  sl_job_destroy(job);
  unlink(in);
  unlink(cap);
  free(in);
  free(cap);
}
END_TEST

START_TEST(sink_to_unwritable_path_fails_clearly) {
  char *in = write_tmp(INPUT);
  sl_job_t *job = tu_job(1, NULL);
  sl_sink_jsonl(sl_source_jsonl(job, "in", in, NULL), "out",
                "/nonexistent/dir/out.jsonl", SL_LINE_VALUE);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_IO);
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "/nonexistent/dir"));
  sl_job_destroy(job);
  unlink(in);
  free(in);
}
END_TEST

int main(void) {
  Suite *s = suite_create("jsonl");
  TCase *tc = tcase_create("io");
  tcase_add_loop_test(tc, source_keys_and_timestamps_from_fields, 0, 2);
  tcase_add_test(tc, source_json_pointer_key);
  tcase_add_test(tc, malformed_lines_fail_with_location);
  tcase_add_test(tc, malformed_lines_skipped_and_counted);
  tcase_add_test(tc, missing_file_is_a_clear_error);
  tcase_add_test(tc, jsonl_sink_formats);
  tcase_add_test(tc, stdout_sink_writes_lines);
  tcase_add_test(tc, sink_to_unwritable_path_fails_clearly);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
