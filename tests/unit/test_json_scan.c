/* SPDX-License-Identifier: Apache-2.0 */
/* The JSON codec's scanner against jansson, the reference it replaces on
 * the hot path: the same texts are valid, and the values at the key and
 * timestamp pointers are the same (string bytes after unescaping,
 * integers), for hand-picked cases and for random mutations of JSON. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "kafka/kafka_int.h"

/* What jansson and sl_json_pointer() say about ptr in text, written as
 * "invalid", "none", "s:<bytes>", "i:<n>" or "other". */
static void reference(const char *text, size_t len, const char *ptr, char *out,
                      size_t cap) {
  json_t *doc = json_loadb(text, len, JSON_DECODE_ANY, NULL);
  if (!doc) {
    snprintf(out, cap, "invalid");
    return;
  }
  json_t *v = sl_json_pointer(doc, ptr);
  if (!v)
    snprintf(out, cap, "none");
  else if (json_is_string(v))
    snprintf(out, cap, "s:%.*s", (int)json_string_length(v),
             json_string_value(v));
  else if (json_is_integer(v))
    snprintf(out, cap, "i:%" JSON_INTEGER_FORMAT, json_integer_value(v));
  else
    snprintf(out, cap, "other");
  json_decref(doc);
}

static void scanned(const char *text, size_t len, const char *ptr, char *out,
                    size_t cap) {
  sl__jptr p;
  ck_assert_int_eq(sl__jptr_compile(&p, ptr), 0);
  sl__jval v;
  char err[256];
  if (sl__jscan(text, len, &p, 1, &v, err, sizeof(err))) {
    ck_assert_ptr_nonnull(strstr(err, "invalid JSON"));
    snprintf(out, cap, "invalid");
    return;
  }
  int64_t n;
  char buf[1024];
  size_t bl;
  switch (v.kind) {
  case SL__J_NONE:
    snprintf(out, cap, "none");
    break;
  case SL__J_STRING:
    ck_assert_uint_le(v.len, sizeof(buf));
    if (v.esc)
      ck_assert_int_eq(sl__junescape(v.s, v.len, buf, &bl), 0);
    else
      memcpy(buf, v.s, bl = v.len);
    snprintf(out, cap, "s:%.*s", (int)bl, buf);
    break;
  case SL__J_INTEGER:
    ck_assert_int_eq(sl__jint(v.s, v.len, &n), 0);
    snprintf(out, cap, "i:%lld", (long long)n);
    break;
  default:
    snprintf(out, cap, "other");
  }
}

static void same(const char *text, size_t len, const char *ptr) {
  char a[1100], b[1100];
  reference(text, len, ptr, a, sizeof(a));
  scanned(text, len, ptr, b, sizeof(b));
  ck_assert_msg(strcmp(a, b) == 0,
                "text [%.*s] pointer \"%s\": jansson %s, "
                "scanner %s",
                (int)len, text, ptr, a, b);
}

static const char *cases[] = {
    "{\"user\":\"u1\",\"ts\":17}",
    "  {\"user\" : \"u1\" , \"ts\" : -17 }  \n",
    "{\"user\":42,\"ts\":1.5}",
    "{\"user\":-0,\"ts\":1e3}",
    "{\"user\":\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\",\"ts\":0}",
    "{\"user\":\"\\u0000\"}",
    "{\"user\":\"\\ud83d\"}",
    "{\"user\":\"\\ude00\"}",
    "{\"user\":\"\\x\"}",
    "{\"user\":\"tab\there\"}",
    "{\"user\":\"\xc3\xa9\",\"ts\":1}",
    "{\"user\":\"\xc3\"}",
    "{\"user\":\"\xe0\x80\xaf\"}",
    "{\"user\":\"\xed\xa0\x80\"}",
    "{\"user\":\"\xf4\x90\x80\x80\"}",
    "{\"user\":\"u\",\"user\":\"v\"}",
    "{\"a\":{\"b\":1},\"a\":{\"c\":2}}",
    "{\"a\":[10,[20,21],{\"b\":\"x\"}]}",
    "{\"ts\":9223372036854775807}",
    "{\"ts\":9223372036854775808}",
    "{\"ts\":-9223372036854775808}",
    "{\"ts\":-9223372036854775809}",
    "{\"ts\":01}",
    "{\"ts\":1.}",
    "{\"ts\":.5}",
    "{\"ts\":1e}",
    "{\"ts\":1e400}",
    "{\"ts\":-}",
    "{\"ts\":+1}",
    "{\"ts\":1,}",
    "{,}",
    "[1,2,]",
    "[]",
    "{}",
    "",
    "   ",
    "\"just a string\"",
    "17",
    "true",
    "nul",
    "null x",
    "{\"a\":1}{",
    "{\"a\" 1}",
    "{a:1}",
    "{\"a~b\":1,\"a/b\":2}",
    "{\"\":\"empty key\"}",
    "[[[[[[[[[[]]]]]]]]]]",
    "{\"user\":\"u1\"",
    "\"unterminated",
};

static const char *ptrs[] = {"/user",  "/ts",   "",      "/a/b",  "/a/1/0",
                             "/a/2/b", "/a/01", "/a~0b", "/a~1b", "/",
                             "user",   "/a/-1", "/a/+1"};

START_TEST(scanner_agrees_with_jansson) {
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    for (size_t j = 0; j < sizeof(ptrs) / sizeof(ptrs[0]); j++)
      same(cases[i], strlen(cases[i]), ptrs[j]);
  /* A NUL byte inside the buffer. */
  same("{\"a\":1}\0", 8, "/a");
  same("{\"a\":\"x\0y\"}", 11, "/a");
}
END_TEST

/* Random one-byte edits, insertions and deletions of valid documents. */
START_TEST(scanner_agrees_on_mutations) {
  static const char *seeds[] = {
      "{\"user\":\"u17\",\"ts\":1700000000123,\"page\":\"/p/3\"}",
      "{\"user\":12,\"ts\":-5,\"n\":[1,2.5e-3,true,null,{\"x\":\"\\u00e9\"}]}",
      "[{\"user\":\"a\\tb\"},\"\\ud83d\\ude00\",0,-0.0]",
  };
  static const char alphabet[] = "{}[],:\"\\0123456789-+.eEtrufalsn u\xc3\xa9";
  unsigned x = 12345;
  char buf[256];
  for (int round = 0; round < 20000; round++) {
    const char *seed = seeds[round % 3];
    size_t len = strlen(seed);
    memcpy(buf, seed, len);
    int edits = 1 + round % 3;
    for (int e = 0; e < edits; e++) {
      x = x * 1103515245u + 12345u;
      size_t at = (x >> 8) % (len + 1);
      char c = alphabet[(x >> 20) % (sizeof(alphabet) - 1)];
      switch ((x >> 4) % 3) {
      case 0:
        if (at < len)
          buf[at] = c;
        break;
      case 1:
        if (len + 1 < sizeof(buf)) {
          memmove(buf + at + 1, buf + at, len - at);
          buf[at] = c;
          len++;
        }
        break;
      default:
        if (at < len) {
          memmove(buf + at, buf + at + 1, len - at - 1);
          len--;
        }
      }
    }
    same(buf, len, "/user");
    same(buf, len, "/ts");
  }
}
END_TEST

/* Found by the json_scan fuzz target: jansson skips a NUL byte right
 * after a number or a literal, so a value such as {"uses":17<NUL>} was
 * valid on the codec's jansson path and invalid on the scanner's. No raw
 * NUL is valid JSON: both paths reject it, with its position. */
START_TEST(nul_after_a_token_is_invalid_on_both_paths) {
  static const struct {
    const char *text;
    size_t len;
  } cases[] = {
      {"{\"uses\":17\0}", 12}, {"[1\0]", 4},   {"17\0", 3},
      {"[true\0]", 7},         {"\"a\0\"", 4}, {"\0", 1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    sl__jptr p;
    sl__jval v;
    char err[256];
    json_error_t je;
    ck_assert_int_eq(sl__jptr_compile(&p, "/uses"), 0);
    ck_assert_int_eq(
        sl__jscan(cases[i].text, cases[i].len, &p, 1, &v, err, sizeof(err)),
        -1);
    json_t *doc = sl__jload(cases[i].text, cases[i].len, &je);
    ck_assert_msg(doc == NULL, "case %zu: the jansson path accepts it", i);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("json_scan");
  TCase *tc = tcase_create("scan");
  tcase_add_test(tc, scanner_agrees_with_jansson);
  tcase_add_test(tc, scanner_agrees_on_mutations);
  tcase_add_test(tc, nul_after_a_token_is_invalid_on_both_paths);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
