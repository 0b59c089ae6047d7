/* SPDX-License-Identifier: Apache-2.0 */
/* Job configuration: defaults, validation messages a user reads, kafka.*
 * passthrough, foreach order, copies, all-or-nothing file loading, and
 * that docs/configuration.md lists every key with its default. */
#include "core/conf.h"
#include "sluice/conf.h"

#include <check.h>

#include "check_main.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SLUICE_SOURCE_ROOT
#error "the test build defines SLUICE_SOURCE_ROOT"
#endif

#define KIB ((int64_t)1024)
#define GIB (KIB * KIB * KIB)

/* ---- helpers ------------------------------------------------------------ */

typedef struct collect {
  char buf[2048];
  int calls;
  int stop_at; /* return 7 from this call (1-based); 0 = never */
} collect;

static int collect_fn(const char *key, const char *value, void *opaque) {
  collect *c = opaque;
  size_t o = strlen(c->buf);
  snprintf(c->buf + o, sizeof c->buf - o, "%s=%s;", key, value);
  c->calls++;
  return c->calls == c->stop_at ? 7 : 0;
}

/* Every explicitly set key in foreach order, as "k=v;k=v;". */
static const char *dump(const sl_conf_t *conf, collect *c) {
  memset(c, 0, sizeof *c);
  ck_assert_int_eq(sl_conf_foreach(conf, collect_fn, c), 0);
  return c->buf;
}

static sl_conf_t *conf_new(void) {
  sl_conf_t *c = sl_conf_new();
  ck_assert_ptr_nonnull(c);
  return c;
}

static void set_ok(sl_conf_t *c, const char *key, const char *value) {
  char err[512];
  ck_assert_str_eq(
      (sl_conf_set(c, key, value, err, sizeof err) == SL_OK ? "" : err), "");
}

/* The set must fail with exactly msg and leave every setting as it was. */
static void set_bad(sl_conf_t *c, const char *key, const char *value,
                    const char *msg) {
  collect before, after;
  char err[512];
  const char *old = sl_conf_get(c, key);
  char old_copy[256] = "(null)";
  if (old)
    snprintf(old_copy, sizeof old_copy, "%s", old);
  dump(c, &before);
  ck_assert_int_eq(sl_conf_set(c, key, value, err, sizeof err), SL_ERR_CONF);
  ck_assert_str_eq(err, msg);
  ck_assert_str_eq(dump(c, &after), before.buf);
  const char *now = sl_conf_get(c, key);
  ck_assert_str_eq(now ? now : "(null)", old_copy);
}

static void check_ok(const sl__conf_key *k, const char *value, int64_t want) {
  char err[512] = "";
  int64_t got = -12345;
  ck_assert_str_eq(
      (sl__conf_check(k, value, &got, err, sizeof err) == SL_OK ? "" : err),
      "");
  ck_assert_int_eq(got, want);
}

static void check_bad(const sl__conf_key *k, const char *value,
                      const char *msg) {
  char err[512];
  int64_t got = -12345;
  ck_assert_int_eq(sl__conf_check(k, value, &got, err, sizeof err),
                   SL_ERR_CONF);
  ck_assert_str_eq(err, msg);
  ck_assert_int_eq(got, -12345);
}

/* Writes content to a fresh /tmp file whose name ends in suffix, loads it
 * into c and deletes it before returning, so a failed assertion later in
 * the test cannot leave the file behind. path receives the name. */
static int load_text(sl_conf_t *c, const char *suffix, const char *content,
                     char *path, size_t pathlen, char *err, size_t errlen) {
  snprintf(path, pathlen, "/tmp/sluice-test-conf-XXXXXX%s", suffix);
  int fd = mkstemps(path, (int)strlen(suffix));
  ck_assert_int_ge(fd, 0);
  size_t n = strlen(content);
  ssize_t w = write(fd, content, n);
  close(fd);
  int rc = w == (ssize_t)n ? sl_conf_load_file(c, path, err, errlen) : -999;
  unlink(path);
  ck_assert_int_ne(rc, -999);
  return rc;
}

/* Loading must fail with `path` + tail and leave c exactly as it was. */
static void load_bad(sl_conf_t *c, const char *suffix, const char *content,
                     const char *tail) {
  collect before, after;
  char path[64], err[1024], want[1024];
  dump(c, &before);
  ck_assert_int_eq(
      load_text(c, suffix, content, path, sizeof path, err, sizeof err),
      SL_ERR_CONF);
  snprintf(want, sizeof want, "%s%s", path, tail);
  ck_assert_str_eq(err, want);
  ck_assert_str_eq(dump(c, &after), before.buf);
}

/* ---- defaults and set/get ----------------------------------------------- */

START_TEST(test_defaults) {
  sl_conf_t *c = conf_new();
  collect col;
  ck_assert_str_eq(sl_conf_get(c, "parallelism"), "1");
  ck_assert_str_eq(sl_conf_get(c, "max.parallelism"), "128");
  ck_assert_str_eq(sl_conf_get(c, "error.policy"), "fail");
  ck_assert_str_eq(sl_conf_get(c, "batch.size"), "512");
  ck_assert_str_eq(sl_conf_get(c, "channel.capacity"), "32");
  ck_assert_str_eq(sl_conf_get(c, "source.batch.size"), "1024");
  ck_assert_str_eq(sl_conf_get(c, "log.level"), "info");
  ck_assert_str_eq(sl_conf_get(c, "state.backend"), "hashmap");

  ck_assert_int_eq(sl__conf_int(c, "parallelism"), 1);
  ck_assert_int_eq(sl__conf_int(c, "max.parallelism"), 128);
  ck_assert_int_eq(sl__conf_int(c, "batch.size"), 512);
  ck_assert_int_eq(sl__conf_int(c, "channel.capacity"), 32);
  ck_assert_int_eq(sl__conf_int(c, "source.batch.size"), 1024);
  ck_assert_int_eq(sl__conf_enum(c, "error.policy"), 0);  /* fail */
  ck_assert_int_eq(sl__conf_enum(c, "log.level"), 2);     /* info */
  ck_assert_int_eq(sl__conf_enum(c, "state.backend"), 0); /* hashmap */
  ck_assert_str_eq(sl__conf_str(c, "log.level"), "info");
  ck_assert_str_eq(sl__conf_str(c, "parallelism"), "1");

  /* Defaults are not "set": foreach sees nothing. */
  ck_assert_str_eq(dump(c, &col), "");
  ck_assert_int_eq(col.calls, 0);

  /* The runtime may ask with no conf at all. */
  ck_assert_int_eq(sl__conf_int(NULL, "max.parallelism"), 128);
  ck_assert_int_eq(sl__conf_enum(NULL, "log.level"), 2);
  ck_assert_str_eq(sl_conf_get(NULL, "batch.size"), "512");
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_table_rows_are_valid) {
  sl_conf_t *c = conf_new();
  size_t n = sl__conf_key_count();
  ck_assert_uint_ge(n, 8);
  for (size_t i = 0; i < n; i++) {
    const sl__conf_key *k = sl__conf_key_at(i);
    char err[512] = "";
    ck_assert_str_eq(sl__conf_key_name(i), k->name);
    ck_assert_ptr_nonnull(k->doc);
    ck_assert_uint_gt(strlen(k->doc), 0);
    /* A default must pass its own row's validation... */
    ck_assert_str_eq(
        (sl__conf_check(k, k->def, NULL, err, sizeof err) == SL_OK ? "" : err),
        "");
    set_ok(c, k->name, k->def);
    ck_assert_str_eq(sl_conf_get(c, k->name), k->def);
    /* ...names are unique and never shadow the kafka.* passthrough... */
    ck_assert_int_ne(strncmp(k->name, "kafka.", 6), 0);
    for (size_t j = i + 1; j < n; j++)
      ck_assert_str_ne(k->name, sl__conf_key_name(j));
    /* ...and every ".ms" key is a duration, i.e. an INT in ms. */
    size_t len = strlen(k->name);
    if (len > 3 && strcmp(k->name + len - 3, ".ms") == 0)
      ck_assert_int_eq(k->type, SL__CONF_INT);
  }
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_set_get) {
  sl_conf_t *c = conf_new();
  char err[512];
  collect col;

  strcpy(err, "stale");
  ck_assert_int_eq(sl_conf_set(c, "parallelism", "8", err, sizeof err), SL_OK);
  ck_assert_str_eq(err, ""); /* no stale message after success */
  ck_assert_str_eq(sl_conf_get(c, "parallelism"), "8");
  ck_assert_int_eq(sl__conf_int(c, "parallelism"), 8);

  set_ok(c, "parallelism", " \t16\r\n");
  ck_assert_str_eq(sl_conf_get(c, "parallelism"), "16");
  ck_assert_int_eq(sl__conf_int(c, "parallelism"), 16);

  set_ok(c, "error.policy", "skip");
  ck_assert_int_eq(sl__conf_enum(c, "error.policy"), 1);
  set_ok(c, "log.level", " debug ");
  ck_assert_str_eq(sl_conf_get(c, "log.level"), "debug");
  ck_assert_int_eq(sl__conf_enum(c, "log.level"), 3);
  set_ok(c, "log.level", "error");
  ck_assert_int_eq(sl__conf_enum(c, "log.level"), 0);
  set_ok(c, "log.level", "warn");
  ck_assert_int_eq(sl__conf_enum(c, "log.level"), 1);

  /* Range bounds are inclusive. */
  set_ok(c, "max.parallelism", "1");
  ck_assert_int_eq(sl__conf_int(c, "max.parallelism"), 1);
  set_ok(c, "max.parallelism", "32768");
  ck_assert_int_eq(sl__conf_int(c, "max.parallelism"), 32768);
  set_ok(c, "channel.capacity", "2");
  set_ok(c, "source.batch.size", "1000000");
  ck_assert_int_eq(sl__conf_int(c, "source.batch.size"), 1000000);
  set_ok(c, "batch.size", "+0065536");
  ck_assert_int_eq(sl__conf_int(c, "batch.size"), 65536);

  /* NULL resets to the default and the key no longer counts as set. */
  set_ok(c, "parallelism", NULL);
  ck_assert_str_eq(sl_conf_get(c, "parallelism"), "1");
  ck_assert_int_eq(sl__conf_int(c, "parallelism"), 1);
  ck_assert_str_eq(dump(c, &col),
                   "error.policy=skip;log.level=warn;max.parallelism=32768;"
                   "channel.capacity=2;source.batch.size=1000000;"
                   "batch.size=+0065536;");
  set_ok(c, "parallelism", NULL); /* resetting an unset key is fine */
  sl_conf_destroy(c);
}
END_TEST

/* ---- validation --------------------------------------------------------- */

START_TEST(test_int_rejects) {
  sl_conf_t *c = conf_new();
  set_ok(c, "parallelism", "8");
  /* {value, as quoted in the message}: non-ASCII bytes come out escaped. */
  const char *syntax[][2] = {
      {"abc", "abc"},
      {"12abc", "12abc"},
      {"1.5", "1.5"},
      {"0x10", "0x10"},
      {"1e3", "1e3"},
      {"1 2", "1 2"},
      {"+", "+"},
      {"-", "-"},
      {"--1", "--1"},
      {"4k", "4k"},
      {"\xd9\xa1", "\\xd9\\xa1"},
      {"99999999999999999999x", "99999999999999999999x"},
  };
  for (size_t i = 0; i < sizeof syntax / sizeof syntax[0]; i++) {
    char want[256];
    snprintf(want, sizeof want,
             "parallelism: \"%s\" is not an integer (allowed: 1..1024)",
             syntax[i][1]);
    set_bad(c, "parallelism", syntax[i][0], want);
  }
  set_bad(c, "parallelism", "",
          "parallelism: \"\" is empty (allowed: 1..1024)");
  set_bad(c, "parallelism", " \t ",
          "parallelism: \"\" is empty (allowed: 1..1024)");
  set_bad(c, "parallelism", "0",
          "parallelism: \"0\" is out of range (allowed: 1..1024)");
  set_bad(c, "parallelism", "1025",
          "parallelism: \"1025\" is out of range (allowed: 1..1024)");
  set_bad(c, "parallelism", "-1",
          "parallelism: \"-1\" is out of range (allowed: 1..1024)");
  set_bad(c, "parallelism", "9223372036854775808",
          "parallelism: \"9223372036854775808\" is out of range (allowed: "
          "1..1024)");
  set_bad(c, "parallelism", "99999999999999999999",
          "parallelism: \"99999999999999999999\" is out of range (allowed: "
          "1..1024)");
  set_bad(c, "channel.capacity", "1",
          "channel.capacity: \"1\" is out of range (allowed: 2..65536)");
  set_bad(c, "max.parallelism", "32769",
          "max.parallelism: \"32769\" is out of range (allowed: 1..32768)");
  ck_assert_int_eq(sl__conf_int(c, "parallelism"), 8);
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_int64_limits) {
  const sl__conf_key k = {.name = "t.int",
                          .type = SL__CONF_INT,
                          .def = "0",
                          .min = INT64_MIN,
                          .max = INT64_MAX,
                          .doc = "test"};
  check_ok(&k, "9223372036854775807", INT64_MAX);
  check_ok(&k, "-9223372036854775808", INT64_MIN);
  check_ok(&k, "+7", 7);
  check_ok(&k, "007", 7);
  check_ok(&k, "-0", 0);
  check_bad(&k, "9223372036854775808",
            "t.int: \"9223372036854775808\" is out of range (allowed: "
            "-9223372036854775808..9223372036854775807)");
  check_bad(&k, "-9223372036854775809",
            "t.int: \"-9223372036854775809\" is out of range (allowed: "
            "-9223372036854775808..9223372036854775807)");
}
END_TEST

START_TEST(test_size) {
  const sl__conf_key k = {.name = "t.size",
                          .type = SL__CONF_SIZE,
                          .def = "64k",
                          .min = 1,
                          .max = 4 * GIB,
                          .doc = "test"};
  check_ok(&k, "64k", 64 * KIB);
  check_ok(&k, "512", 512);
  check_ok(&k, "1k", KIB);
  check_ok(&k, "1K", KIB);
  check_ok(&k, "2m", 2 * KIB * KIB);
  check_ok(&k, "2M", 2 * KIB * KIB);
  check_ok(&k, "1g", GIB);
  check_ok(&k, "4G", 4 * GIB);
  const char *allowed = " (allowed: 1..4g bytes; suffixes k, m, g multiply by "
                        "1024)";
  const char *syntax[] = {"1t",   "k",   "1kb",  "-1k", "+1k",
                          "1.5m", "1 k", "0x10", "1kk"};
  for (size_t i = 0; i < sizeof syntax / sizeof syntax[0]; i++) {
    char want[256];
    snprintf(want, sizeof want, "t.size: \"%s\" is not a size%s", syntax[i],
             allowed);
    check_bad(&k, syntax[i], want);
  }
  char want[256];
  snprintf(want, sizeof want, "t.size: \"0\" is out of range%s", allowed);
  check_bad(&k, "0", want);
  snprintf(want, sizeof want, "t.size: \"0k\" is out of range%s", allowed);
  check_bad(&k, "0k", want);
  snprintf(want, sizeof want, "t.size: \"5g\" is out of range%s", allowed);
  check_bad(&k, "5g", want);
  snprintf(want, sizeof want, "t.size: \"4097m\" is out of range%s", allowed);
  check_bad(&k, "4097m", want);
  snprintf(want, sizeof want, "t.size: \"\" is empty%s", allowed);
  check_bad(&k, "", want);

  /* Overflow of the multiplication, not just of the digits. */
  const sl__conf_key big = {.name = "t.big",
                            .type = SL__CONF_SIZE,
                            .def = "1",
                            .min = 0,
                            .max = INT64_MAX,
                            .doc = "test"};
  check_ok(&big, "9223372036854775807", INT64_MAX);
  check_ok(&big, "8589934591g", INT64_MAX - GIB + 1);
  check_ok(&big, "0", 0);
  check_bad(&big, "8589934592g",
            "t.big: \"8589934592g\" is out of range (allowed: "
            "0..9223372036854775807 bytes; suffixes k, m, g multiply by "
            "1024)");
  check_bad(&big, "9007199254740992k",
            "t.big: \"9007199254740992k\" is out of range (allowed: "
            "0..9223372036854775807 bytes; suffixes k, m, g multiply by "
            "1024)");
  check_bad(&big, "99999999999999999999",
            "t.big: \"99999999999999999999\" is out of range (allowed: "
            "0..9223372036854775807 bytes; suffixes k, m, g multiply by "
            "1024)");
}
END_TEST

START_TEST(test_bool) {
  const sl__conf_key k = {.name = "t.flag",
                          .type = SL__CONF_BOOL,
                          .def = "false",
                          .min = 0,
                          .max = 1,
                          .doc = "test"};
  const char *yes[] = {"true", "TRUE", "True", "1", "yes", "Yes", "on", "ON"};
  const char *no[] = {"false", "FALSE", "0", "no", "NO", "off", "Off"};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
    check_ok(&k, yes[i], 1);
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
    check_ok(&k, no[i], 0);
  const char *bad[] = {"maybe", "2", "truee", "y", "t", "01", "-1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char want[256];
    snprintf(want, sizeof want,
             "t.flag: \"%s\" is not a boolean (allowed: true, false, 1, 0, "
             "yes, no, on, off)",
             bad[i]);
    check_bad(&k, bad[i], want);
  }
  check_bad(&k, "",
            "t.flag: \"\" is empty (allowed: true, false, 1, 0, yes, no, on, "
            "off)");
}
END_TEST

START_TEST(test_string) {
  const sl__conf_key k = {
      .name = "t.name", .type = SL__CONF_STRING, .def = "x", .doc = "test"};
  check_ok(&k, "hello world", 0);
  check_ok(&k, "0", 0);
  check_bad(&k, "", "t.name: \"\" is empty (allowed: any non-empty string)");
}
END_TEST

/* dlq.topic must be a name Kafka accepts; before, a bad one passed and
 * failed only when the first dead letter was written. */
START_TEST(test_topic) {
  sl_conf_t *c = conf_new();
  const char *allowed = " (allowed: 1 to 249 of a-z, A-Z, 0-9, '.', '_', "
                        "'-'; not \".\" or \"..\")";
  char msg[512], name[251], err[512];
  set_ok(c, "dlq.topic", "orders.dead-letters_V2");
  ck_assert_str_eq(sl__conf_str(c, "dlq.topic"), "orders.dead-letters_V2");
  memset(name, 'a', 249);
  name[249] = '\0';
  set_ok(c, "dlq.topic", name);
  set_ok(c, "dlq.topic", "...");
  /* Value as set, as quoted in the message. */
  const char *bad[][2] = {{"dead letters", "dead letters"},
                          {".", "."},
                          {"..", ".."},
                          {"a/b", "a/b"},
                          {"dlq:1", "dlq:1"},
                          {"t\xc3\xa9", "t\\xc3\\xa9"},
                          {"a,b", "a,b"}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    snprintf(msg, sizeof msg,
             "dlq.topic: \"%s\" is not a valid Kafka topic name%s", bad[i][1],
             allowed);
    set_bad(c, "dlq.topic", bad[i][0], msg);
  }
  snprintf(msg, sizeof msg, "dlq.topic: \"\" is empty%s", allowed);
  set_bad(c, "dlq.topic", "", msg);
  memset(name, 'a', 250);
  name[250] = '\0';
  ck_assert_int_eq(sl_conf_set(c, "dlq.topic", name, err, sizeof err),
                   SL_ERR_CONF);
  ck_assert_ptr_nonnull(strstr(err, "is longer than 249 characters"));
  ck_assert_str_eq(sl__conf_str(c, "dlq.topic"), "...");
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_enum) {
  sl_conf_t *c = conf_new();
  set_ok(c, "error.policy", " skip\n");
  ck_assert_int_eq(sl__conf_enum(c, "error.policy"), 1);
  set_bad(c, "error.policy", "Skip",
          "error.policy: \"Skip\" is not one of the allowed values (allowed: "
          "fail, skip, dlq)");
  set_bad(c, "error.policy", "fail|skip",
          "error.policy: \"fail|skip\" is not one of the allowed values "
          "(allowed: fail, skip, dlq)");
  set_bad(c, "error.policy", "fai",
          "error.policy: \"fai\" is not one of the allowed values (allowed: "
          "fail, skip, dlq)");
  set_bad(c, "error.policy", "",
          "error.policy: \"\" is empty (allowed: fail, skip, dlq)");
  set_bad(c, "log.level", "WARN",
          "log.level: \"WARN\" is not one of the allowed values (allowed: "
          "error, warn, info, debug)");
  set_bad(c, "state.backend", "RocksDB",
          "state.backend: \"RocksDB\" is not one of the allowed values "
          "(allowed: hashmap, rocksdb)");
  ck_assert_int_eq(sl__conf_enum(c, "error.policy"), 1);
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_message_quotes_safely) {
  sl_conf_t *c = conf_new();
  char err[512], big[300];
  /* Quotes and control characters are escaped, so the message stays one
   * readable line that cannot be confused with the quoting. */
  set_bad(c, "parallelism", "a\"b\x01",
          "parallelism: \"a\\x22b\\x01\" is not an integer (allowed: "
          "1..1024)");
  /* A huge value is cut short rather than filling the message. */
  memset(big, '7', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  ck_assert_int_eq(sl_conf_set(c, "parallelism", big, err, sizeof err),
                   SL_ERR_CONF);
  ck_assert_ptr_nonnull(
      strstr(err, "...\" is out of range (allowed: 1..1024)"));
  ck_assert_uint_lt(strlen(err), 160);
  /* A short buffer still gets a NUL-terminated prefix. */
  ck_assert_int_eq(sl_conf_set(c, "parallelism", "abc", err, 12), SL_ERR_CONF);
  ck_assert_str_eq(err, "parallelism");
  ck_assert_int_eq(sl_conf_set(c, "parallelism", "abc", NULL, 0), SL_ERR_CONF);
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_unknown_key) {
  sl_conf_t *c = conf_new();
  collect col;
  set_ok(c, "parallelism", "2");
  set_bad(c, "foo.bar", "1", "unknown configuration key \"foo.bar\"");
  set_bad(c, "Parallelism", "2", "unknown configuration key \"Parallelism\"");
  set_bad(c, "parallelism ", "2", "unknown configuration key \"parallelism \"");
  set_bad(c, "", "2", "unknown configuration key \"\"");
  set_bad(c, "kafka", "2", "unknown configuration key \"kafka\"");
  set_bad(c, "foo.bar", NULL, "unknown configuration key \"foo.bar\"");
  ck_assert_ptr_null(sl_conf_get(c, "foo.bar"));
  ck_assert_str_eq(dump(c, &col), "parallelism=2;");
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_bad_arguments) {
  sl_conf_t *c = conf_new();
  char err[512];
  ck_assert_int_eq(sl_conf_set(NULL, "parallelism", "1", err, sizeof err),
                   SL_ERR_INVAL);
  ck_assert_int_eq(sl_conf_set(c, NULL, "1", err, sizeof err), SL_ERR_INVAL);
  ck_assert_int_eq(sl_conf_load_file(c, NULL, err, sizeof err), SL_ERR_INVAL);
  ck_assert_int_eq(sl_conf_load_file(NULL, "/tmp/x", err, sizeof err),
                   SL_ERR_INVAL);
  ck_assert_ptr_null(sl_conf_get(c, NULL));
  ck_assert_ptr_null(sl_conf_dup(NULL));
  ck_assert_int_eq(sl_conf_foreach(NULL, collect_fn, NULL), 0);
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_destroy_null) {
  sl_conf_destroy(NULL);
}
END_TEST

/* ---- kafka.*, foreach, dup ---------------------------------------------- */

START_TEST(test_kafka_passthrough) {
  sl_conf_t *c = conf_new();
  collect col;
  ck_assert_ptr_null(sl_conf_get(c, "kafka.bootstrap.servers"));
  set_ok(c, "kafka.bootstrap.servers", " localhost:9092 ");
  ck_assert_str_eq(sl_conf_get(c, "kafka.bootstrap.servers"), "localhost:9092");
  /* Not validated here: librdkafka judges names and values. */
  set_ok(c, "kafka.no.such.property", "whatever=x # y");
  ck_assert_str_eq(sl_conf_get(c, "kafka.no.such.property"), "whatever=x # y");
  set_ok(c, "kafka.client.id", "");
  ck_assert_str_eq(sl_conf_get(c, "kafka.client.id"), "");
  ck_assert_str_eq(dump(c, &col), "kafka.bootstrap.servers=localhost:9092;"
                                  "kafka.no.such.property=whatever=x # y;"
                                  "kafka.client.id=;");
  /* NULL unsets a passthrough key. */
  set_ok(c, "kafka.no.such.property", NULL);
  ck_assert_ptr_null(sl_conf_get(c, "kafka.no.such.property"));
  set_ok(c, "kafka.never.set", NULL);
  set_bad(c, "kafka.", "x",
          "configuration key \"kafka.\" lacks the librdkafka property name "
          "after \"kafka.\"");
  ck_assert_str_eq(dump(c, &col), "kafka.bootstrap.servers=localhost:9092;"
                                  "kafka.client.id=;");
  sl_conf_destroy(c);
}
END_TEST

/* A broker list that names no broker is a configuration error here:
 * librdkafka would accept it and retry for broker.timeout.ms. */
START_TEST(test_kafka_bootstrap_not_empty) {
  sl_conf_t *c = conf_new();
  set_bad(c, "kafka.bootstrap.servers", "",
          "kafka.bootstrap.servers: \"\" names no broker (allowed: a "
          "comma-separated list of host:port)");
  set_bad(c, "kafka.bootstrap.servers", "  ,, ",
          "kafka.bootstrap.servers: \",,\" names no broker (allowed: a "
          "comma-separated list of host:port)");
  set_bad(c, "kafka.metadata.broker.list", " ",
          "kafka.metadata.broker.list: \"\" names no broker (allowed: a "
          "comma-separated list of host:port)");
  set_ok(c, "kafka.bootstrap.servers", "localhost:9092");
  set_bad(c, "kafka.bootstrap.servers", "",
          "kafka.bootstrap.servers: \"\" names no broker (allowed: a "
          "comma-separated list of host:port)");
  ck_assert_str_eq(sl_conf_get(c, "kafka.bootstrap.servers"), "localhost:9092");
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_foreach_order) {
  sl_conf_t *c = conf_new();
  collect col;
  set_ok(c, "channel.capacity", "8");
  set_ok(c, "kafka.x", "1");
  set_ok(c, "parallelism", "2");
  /* Setting again keeps the first position. */
  set_ok(c, "channel.capacity", "64");
  ck_assert_str_eq(dump(c, &col),
                   "channel.capacity=64;kafka.x=1;parallelism=2;");
  /* A reset key is no longer set; setting it again appends it. */
  set_ok(c, "kafka.x", NULL);
  set_ok(c, "kafka.x", "3");
  ck_assert_str_eq(dump(c, &col),
                   "channel.capacity=64;parallelism=2;kafka.x=3;");
  /* A non-zero return stops the walk and is passed back. */
  memset(&col, 0, sizeof col);
  col.stop_at = 2;
  ck_assert_int_eq(sl_conf_foreach(c, collect_fn, &col), 7);
  ck_assert_int_eq(col.calls, 2);
  ck_assert_str_eq(col.buf, "channel.capacity=64;parallelism=2;");
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_dup_is_independent) {
  sl_conf_t *c = conf_new();
  collect col;
  sl_conf_t *empty = sl_conf_dup(c);
  ck_assert_ptr_nonnull(empty);
  ck_assert_str_eq(dump(empty, &col), "");

  set_ok(c, "parallelism", "4");
  set_ok(c, "kafka.a", "1");
  set_ok(c, "error.policy", "skip");
  sl_conf_t *d = sl_conf_dup(c);
  ck_assert_ptr_nonnull(d);
  ck_assert_str_eq(dump(d, &col), "parallelism=4;kafka.a=1;error.policy=skip;");
  ck_assert_int_eq(sl__conf_enum(d, "error.policy"), 1);

  set_ok(d, "parallelism", "8");
  set_ok(c, "kafka.a", "2");
  set_ok(c, "error.policy", NULL);
  ck_assert_str_eq(sl_conf_get(c, "parallelism"), "4");
  ck_assert_str_eq(sl_conf_get(d, "parallelism"), "8");
  ck_assert_str_eq(sl_conf_get(d, "kafka.a"), "1");
  ck_assert_int_eq(sl__conf_enum(d, "error.policy"), 1);

  /* The copy outlives the original. */
  sl_conf_destroy(c);
  ck_assert_str_eq(dump(d, &col), "parallelism=8;kafka.a=1;error.policy=skip;");
  ck_assert_str_eq(dump(empty, &col), "");
  sl_conf_destroy(d);
  sl_conf_destroy(empty);
}
END_TEST

/* ---- files -------------------------------------------------------------- */

START_TEST(test_load_properties) {
  sl_conf_t *c = conf_new();
  collect col;
  char path[64], err[1024];
  set_ok(c, "channel.capacity", "8"); /* kept: loading adds on top */
  const char *text = "\xEF\xBB\xBF# orders job\n"
                     "   # indented comment\n"
                     "\n"
                     "parallelism = 4\n"
                     "error.policy=skip\r\n"
                     "\t kafka.bootstrap.servers = a:1,b:2  \n"
                     "kafka.sasl.jaas = x=y#z\n"
                     "batch.size =  64k_is_not_ok_so_64\n";
  /* The last line is wrong on purpose first: nothing may be applied. */
  ck_assert_int_eq(
      load_text(c, ".properties", text, path, sizeof path, err, sizeof err),
      SL_ERR_CONF);
  ck_assert_str_eq(dump(c, &col), "channel.capacity=8;");

  text = "\xEF\xBB\xBF# orders job\n"
         "   # indented comment\n"
         "\n"
         "parallelism = 4\n"
         "error.policy=skip\r\n"
         "\t kafka.bootstrap.servers = a:1,b:2  \n"
         "kafka.sasl.jaas = x=y#z\n"
         "batch.size =  64   \n"
         "parallelism = 6"; /* no final newline; the later value wins */
  ck_assert_int_eq(
      load_text(c, ".properties", text, path, sizeof path, err, sizeof err),
      SL_OK);
  ck_assert_str_eq(err, "");
  ck_assert_str_eq(dump(c, &col),
                   "channel.capacity=8;parallelism=6;error.policy=skip;"
                   "kafka.bootstrap.servers=a:1,b:2;kafka.sasl.jaas=x=y#z;"
                   "batch.size=64;");
  ck_assert_int_eq(sl__conf_int(c, "parallelism"), 6);
  ck_assert_int_eq(sl__conf_int(c, "batch.size"), 64);
  ck_assert_int_eq(sl__conf_enum(c, "error.policy"), 1);

  /* An empty or comment-only file changes nothing. */
  ck_assert_int_eq(
      load_text(c, ".conf", "", path, sizeof path, err, sizeof err), SL_OK);
  ck_assert_int_eq(load_text(c, ".conf", "# nothing\n\n", path, sizeof path,
                             err, sizeof err),
                   SL_OK);
  ck_assert_int_eq(sl__conf_int(c, "parallelism"), 6);
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_load_properties_errors) {
  sl_conf_t *c = conf_new();
  set_ok(c, "parallelism", "2");
  load_bad(c, ".properties",
           "batch.size = 64\n# comment\n\nparallelism = abc\nlog.level=debug\n",
           ":4: parallelism: \"abc\" is not an integer (allowed: 1..1024)");
  load_bad(c, ".properties", "batch.size = 64\nparallelism 4\n",
           ":2: expected \"key = value\", got \"parallelism 4\"");
  load_bad(c, ".properties", "= 4\n",
           ":1: expected \"key = value\", got \"= 4\"");
  load_bad(c, ".properties", "paralellism = 4\n",
           ":1: unknown configuration key \"paralellism\"");
  load_bad(c, ".properties", "\n\nparallelism =\n",
           ":3: parallelism: \"\" is empty (allowed: 1..1024)");
  load_bad(c, ".properties", "parallelism = 4 # four\n",
           ":1: parallelism: \"4 # four\" is not an integer (allowed: "
           "1..1024)");
  load_bad(c, ".properties", "batch.size = 64\r\nparallelism = 0",
           ":2: parallelism: \"0\" is out of range (allowed: 1..1024)");
  load_bad(c, ".properties", "kafka. = x\n",
           ":1: configuration key \"kafka.\" lacks the librdkafka property "
           "name after \"kafka.\"");
  /* A JSON body in a file not named .json is read as properties. */
  load_bad(c, ".txt", "{\"parallelism\": 4}\n",
           ":1: expected \"key = value\", got \"{\\x22parallelism\\x22: 4}\"");
  ck_assert_str_eq(sl_conf_get(c, "parallelism"), "2");
  ck_assert_str_eq(sl_conf_get(c, "batch.size"), "512");
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_load_unreadable) {
  sl_conf_t *c = conf_new();
  collect col;
  char err[1024];
  const char *missing = "/tmp/sluice-test-conf-does-not-exist.properties";
  unlink(missing);
  set_ok(c, "parallelism", "2");
  ck_assert_int_eq(sl_conf_load_file(c, missing, err, sizeof err), SL_ERR_IO);
  ck_assert_str_eq(err, "/tmp/sluice-test-conf-does-not-exist.properties: "
                        "cannot read: No such file or directory");
  ck_assert_int_eq(sl_conf_load_file(c, "/tmp", err, sizeof err), SL_ERR_IO);
  ck_assert_str_eq(err, "/tmp: cannot read: Is a directory");
  ck_assert_str_eq(dump(c, &col), "parallelism=2;");
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_load_json) {
  sl_conf_t *c = conf_new();
  collect col;
  char path[64], err[1024];
  set_ok(c, "channel.capacity", "8");
  const char *text = "{\n"
                     "  \"parallelism\": 4,\n"
                     "  \"error.policy\": \"skip\",\n"
                     "  \"kafka.enable.idempotence\": true,\n"
                     "  \"kafka.x\": false,\n"
                     "  \"kafka.ratio\": 0.1,\n"
                     "  \"kafka.r2\": 2.0,\n"
                     "  \"kafka.big\": -9223372036854775808,\n"
                     "  \"log.level\": \" debug \"\n"
                     "}\n";
  ck_assert_int_eq(
      load_text(c, ".json", text, path, sizeof path, err, sizeof err), SL_OK);
  ck_assert_str_eq(err, "");
  ck_assert_str_eq(dump(c, &col),
                   "channel.capacity=8;parallelism=4;error.policy=skip;"
                   "kafka.enable.idempotence=true;kafka.x=false;"
                   "kafka.ratio=0.1;kafka.r2=2.0;"
                   "kafka.big=-9223372036854775808;log.level=debug;");
  ck_assert_int_eq(sl__conf_int(c, "parallelism"), 4);
  ck_assert_int_eq(sl__conf_enum(c, "log.level"), 3);
  ck_assert_int_eq(
      load_text(c, ".json", "{}", path, sizeof path, err, sizeof err), SL_OK);
  ck_assert_int_eq(sl__conf_int(c, "parallelism"), 4);
  sl_conf_destroy(c);
}
END_TEST

START_TEST(test_load_json_errors) {
  sl_conf_t *c = conf_new();
  char path[64], err[1024], want[1024];
  set_ok(c, "parallelism", "2");
  load_bad(c, ".json", "{\"batch.size\": 64, \"parallelism\": [1]}",
           ": member \"parallelism\": an array is not allowed (use a string, "
           "number or boolean)");
  load_bad(c, ".json", "{\"batch.size\": 64, \"kafka\": {\"acks\": 1}}",
           ": member \"kafka\": an object is not allowed (use a string, "
           "number or boolean)");
  load_bad(c, ".json", "{\"batch.size\": 64, \"parallelism\": null}",
           ": member \"parallelism\": null is not allowed (use a string, "
           "number or boolean)");
  load_bad(c, ".json", "{\"batch.size\": 64, \"parallelism\": 2.0}",
           ": parallelism: \"2.0\" is not an integer (allowed: 1..1024)");
  load_bad(c, ".json", "{\"batch.size\": 64, \"parallelism\": true}",
           ": parallelism: \"true\" is not an integer (allowed: 1..1024)");
  load_bad(c, ".json", "{\"batch.size\": 64, \"parallelism\": \"abc\"}",
           ": parallelism: \"abc\" is not an integer (allowed: 1..1024)");
  load_bad(c, ".json", "{\"batch.size\": 64, \"parallelism\": 0}",
           ": parallelism: \"0\" is out of range (allowed: 1..1024)");
  load_bad(c, ".json", "{\"batch.size\": 64, \"nope\": 1}",
           ": unknown configuration key \"nope\"");
  load_bad(c, ".json", "[1, 2]", ": the top-level value must be a JSON object");
  load_bad(c, ".json", "\"parallelism\"",
           ": the top-level value must be a JSON object");

  /* Syntax errors carry line and column from the parser. */
  ck_assert_int_eq(load_text(c, ".json",
                             "{\"batch.size\": 64,\n \"parallelism\": }\n",
                             path, sizeof path, err, sizeof err),
                   SL_ERR_CONF);
  snprintf(want, sizeof want, "%s:2:", path);
  ck_assert_str_eq((strncmp(err, want, strlen(want)) == 0 ? want : err), want);
  ck_assert_ptr_nonnull(strstr(err, "invalid JSON"));
  ck_assert_int_eq(load_text(c, ".json",
                             "{\"parallelism\": 4, \"parallelism\": 5}", path,
                             sizeof path, err, sizeof err),
                   SL_ERR_CONF);
  ck_assert_ptr_nonnull(strstr(err, "duplicate"));
  ck_assert_int_eq(
      load_text(c, ".json", "", path, sizeof path, err, sizeof err),
      SL_ERR_CONF);

  ck_assert_str_eq(sl_conf_get(c, "parallelism"), "2");
  ck_assert_str_eq(sl_conf_get(c, "batch.size"), "512");
  sl_conf_destroy(c);
}
END_TEST

/* ---- documentation ------------------------------------------------------ */

START_TEST(test_every_key_is_documented) {
  const char *path = SLUICE_SOURCE_ROOT "/docs/configuration.md";
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  static char doc[1 << 17];
  size_t n = fread(doc, 1, sizeof doc - 1, f);
  fclose(f);
  doc[n] = '\0';
  ck_assert_uint_lt(n, sizeof doc - 1);

  for (size_t i = 0; i < sl__conf_key_count(); i++) {
    const sl__conf_key *k = sl__conf_key_at(i);
    char name[128], row[160], def[160];
    snprintf(name, sizeof name, "`%s`", sl__conf_key_name(i));
    ck_assert_msg(strstr(doc, name) != NULL, "%s does not mention %s", path,
                  name);
    /* Its table row also states the default the code uses. */
    snprintf(row, sizeof row, "\n| %s |", name);
    const char *r = strstr(doc, row);
    ck_assert_msg(r != NULL, "%s has no table row starting \"| %s |\"", path,
                  name);
    const char *eol = strchr(r + 1, '\n');
    size_t len = eol ? (size_t)(eol - r) : strlen(r);
    char line[2048];
    snprintf(line, sizeof line, "%.*s", (int)len, r + 1);
    if (k->def[0])
      snprintf(def, sizeof def, "| `%s` |", k->def);
    else
      snprintf(def, sizeof def, "| empty |");
    ck_assert_msg(strstr(line, def) != NULL,
                  "row for %s does not give default %s: %s", name, def, line);
  }
}
END_TEST

static Suite *conf_suite(void) {
  Suite *s = suite_create("conf");
  TCase *tc = tcase_create("values");
  tcase_add_test(tc, test_defaults);
  tcase_add_test(tc, test_table_rows_are_valid);
  tcase_add_test(tc, test_set_get);
  tcase_add_test(tc, test_destroy_null);
  tcase_add_test(tc, test_bad_arguments);
  suite_add_tcase(s, tc);

  tc = tcase_create("validation");
  tcase_add_test(tc, test_int_rejects);
  tcase_add_test(tc, test_int64_limits);
  tcase_add_test(tc, test_size);
  tcase_add_test(tc, test_bool);
  tcase_add_test(tc, test_string);
  tcase_add_test(tc, test_topic);
  tcase_add_test(tc, test_enum);
  tcase_add_test(tc, test_message_quotes_safely);
  tcase_add_test(tc, test_unknown_key);
  suite_add_tcase(s, tc);

  tc = tcase_create("map");
  tcase_add_test(tc, test_kafka_passthrough);
  tcase_add_test(tc, test_kafka_bootstrap_not_empty);
  tcase_add_test(tc, test_foreach_order);
  tcase_add_test(tc, test_dup_is_independent);
  suite_add_tcase(s, tc);

  tc = tcase_create("files");
  tcase_add_test(tc, test_load_properties);
  tcase_add_test(tc, test_load_properties_errors);
  tcase_add_test(tc, test_load_unreadable);
  tcase_add_test(tc, test_load_json);
  tcase_add_test(tc, test_load_json_errors);
  suite_add_tcase(s, tc);

  tc = tcase_create("docs");
  tcase_add_test(tc, test_every_key_is_documented);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(conf_suite());
}
