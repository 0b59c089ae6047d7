/* SPDX-License-Identifier: Apache-2.0 */
/* The JSON codec's scanner (lib/kafka/json_scan.c) against jansson: it
 * must accept exactly the texts the codec's jansson path (sl__jload:
 * json_loadb with JSON_DECODE_ANY, and no NUL byte) accepts, and
 * find at each pointer what sl_json_pointer() finds in jansson's document
 * (kind, string bytes after unescaping, integer value).
 * Input: pointers separated by "\0SL|", the last part is the JSON text. */
#include <jansson.h>
#include <string.h>

#include "fuzz.h"
#include "kafka/kafka_int.h"
#include "sluice.h"

#define MAX_PTRS 4

static void compare(json_t *v, const sl__jval *j, const char *ptr) {
  if (!v) {
    FUZZ_ASSERT(j->kind == SL__J_NONE, "pointer \"%s\": scanner found kind %d",
                ptr, (int)j->kind);
  } else if (json_is_string(v)) {
    FUZZ_ASSERT(j->kind == SL__J_STRING, "pointer \"%s\": kind %d, not string",
                ptr, (int)j->kind);
    char *s = malloc(j->len + 1);
    size_t n = 0;
    FUZZ_ASSERT(s, "out of memory");
    int rc = j->esc ? sl__junescape(j->s, j->len, s, &n)
                    : (memcpy(s, j->s, j->len), n = j->len, 0);
    FUZZ_ASSERT(rc == 0, "pointer \"%s\": unescape failed", ptr);
    FUZZ_ASSERT(n == json_string_length(v) &&
                    memcmp(s, json_string_value(v), n) == 0,
                "pointer \"%s\": string differs from jansson's", ptr);
    free(s);
  } else if (json_is_integer(v)) {
    int64_t i = 0;
    FUZZ_ASSERT(j->kind == SL__J_INTEGER, "pointer \"%s\": kind %d, not int",
                ptr, (int)j->kind);
    FUZZ_ASSERT(sl__jint(j->s, j->len, &i) == 0 && i == json_integer_value(v),
                "pointer \"%s\": integer %lld, jansson %lld", ptr, (long long)i,
                (long long)json_integer_value(v));
  } else {
    FUZZ_ASSERT(j->kind == SL__J_OTHER, "pointer \"%s\": kind %d, not other",
                ptr, (int)j->kind);
  }
}

FUZZ_TARGET(json_scan) {
  const uint8_t *part[MAX_PTRS + 1];
  size_t len[MAX_PTRS + 1];
  size_t n = fuzz_split(data, size, part, len, MAX_PTRS + 1);
  size_t np = n - 1;
  char ptr[MAX_PTRS][300];
  sl__jptr *jp = calloc(MAX_PTRS, sizeof(*jp));
  FUZZ_ASSERT(jp, "out of memory");
  size_t used = 0;
  for (size_t i = 0; i < np; i++) {
    size_t l = len[i] < sizeof(ptr[0]) - 1 ? len[i] : sizeof(ptr[0]) - 1;
    memcpy(ptr[used], part[i], l);
    ptr[used][l] = 0;
    if (memchr(part[i], 0, l))
      continue; /* a C string pointer cannot hold a NUL */
    if (sl__jptr_compile(&jp[used], ptr[used]) == SL_OK)
      used++;
  }
  const uint8_t *text = part[n - 1];
  size_t tlen = len[n - 1];
  sl__jval out[MAX_PTRS];
  char err[256];
  int rc = sl__jscan(text, tlen, jp, used, out, err, sizeof(err));
  json_error_t je;
  json_t *doc = sl__jload(text, tlen, &je);
  FUZZ_ASSERT((rc == 0) == (doc != NULL), "scanner %s, jansson %s (%s)",
              rc ? "rejects" : "accepts", doc ? "accepts" : "rejects",
              rc ? err : je.text);
  for (size_t i = 0; doc && i < used; i++)
    compare(sl_json_pointer(doc, ptr[i]), &out[i], ptr[i]);
  json_decref(doc);
  free(jp);
  return 0;
}
