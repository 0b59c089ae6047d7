/* SPDX-License-Identifier: Apache-2.0 */
/* JSON text of a jansson value with reals in their shortest round-trip
 * form (sl_json_dumpb, sl_json_dumps in sluice/json.h). jansson writes
 * every real with one fixed precision (17 digits by default, so 0.1
 * becomes 0.10000000000000001); this encoder writes what jansson writes
 * for everything else, compact, and picks the digits of each real. */
#include <locale.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "sluice/json.h"

#define MAX_DEPTH 2048

typedef struct out {
  char *p;
  size_t size, n;
} out;

static void put(out *o, const char *s, size_t len) {
  if (o->n < o->size) {
    size_t room = o->size - o->n;
    memcpy(o->p + o->n, s, len < room ? len : room);
  }
  o->n += len;
}

static void put_c(out *o, char c) {
  put(o, &c, 1);
}

/* Length of the UTF-8 sequence at s (at most n bytes), or 0 if it is not
 * one: overlong forms, surrogates and code points past U+10FFFF are
 * refused, as jansson refuses them. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (len > n)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
      (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
    return 0;
  return len;
}

static bool put_string(out *o, const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t run = 0; /* bytes copied in spans, not one by one */
  put_c(o, '"');
  for (size_t i = 0; i < len;) {
    unsigned c = s[i];
    const char *esc = NULL;
    char u[8];
    if (c == '"')
      esc = "\\\"";
    else if (c == '\\')
      esc = "\\\\";
    else if (c < 0x20) {
      switch (c) {
      case '\b':
        esc = "\\b";
        break;
      case '\f':
        esc = "\\f";
        break;
      case '\n':
        esc = "\\n";
        break;
      case '\r':
        esc = "\\r";
        break;
      case '\t':
        esc = "\\t";
        break;
      default:
        snprintf(u, sizeof(u), "\\u%04X", c);
        esc = u;
      }
    }
    if (esc) {
      put(o, str + run, i - run);
      put(o, esc, strlen(esc));
      run = ++i;
      continue;
    }
    size_t l = utf8_len(s + i, len - i);
    if (!l)
      return false;
    i += l;
  }
  put(o, str + run, len - run);
  put_c(o, '"');
  return true;
}

/* Writes v into buf (32 bytes are enough); see sluice/json.h for the
 * form. Returns the length. */
static size_t fmt_real(double v, char *buf, size_t size) {
  char e[32];
  int digits = 1;
  for (; digits < 17; digits++) {
    snprintf(e, sizeof(e), "%.*e", digits - 1, v);
    if (strtod(e, NULL) == v)
      break;
  }
  if (digits == 17)
    snprintf(e, sizeof(e), "%.16e", v);
  char *ep = strchr(e, 'e');
  int exp10 = atoi(ep + 1);
  if (exp10 >= -4 && exp10 < 16) {
    /* %g in fixed notation with every significant digit: precision
     * digits, or more when the integer part is longer. */
    int prec = digits > exp10 + 1 ? digits : exp10 + 1;
    snprintf(buf, size, "%.*g", prec, v);
  } else {
    /* Mantissa as printed, exponent without "+" and leading zeros. */
    *ep = '\0';
    const char *x = ep + 1;
    bool neg = *x == '-';
    x += (*x == '-' || *x == '+');
    while (*x == '0' && x[1])
      x++;
    snprintf(buf, size, "%se%s%s", e, neg ? "-" : "", x);
  }
  /* The locale's decimal point (snprintf and strtod agree on it) is '.'
   * in JSON. */
  const char *dp = localeconv()->decimal_point;
  if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
    char *c = strchr(buf, dp[0]);
    if (c)
      *c = '.';
  }
  if (!strchr(buf, '.') && !strchr(buf, 'e')) {
    size_t l = strlen(buf);
    snprintf(buf + l, size - l, ".0");
  }
  return strlen(buf);
}

/* Numbers and literals, outside put_value so that its recursion keeps
 * small frames (2048 levels deep run on the caller's stack). */
static __attribute__((noinline)) void put_scalar(out *o, const json_t *v) {
  char num[48];
  switch (json_typeof(v)) {
  case JSON_INTEGER:
    put(o, num,
        (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                         json_integer_value(v)));
    break;
  case JSON_REAL:
    put(o, num, fmt_real(json_real_value(v), num, sizeof(num)));
    break;
  case JSON_TRUE:
    put(o, "true", 4);
    break;
  case JSON_FALSE:
    put(o, "false", 5);
    break;
  default:
    put(o, "null", 4);
  }
}

static bool put_value(out *o, const json_t *v, int depth) {
  if (!v || depth >= MAX_DEPTH)
    return false;
  if (json_is_object(v)) {
    const char *key;
    size_t key_len;
    json_t *m;
    bool first = true;
    put_c(o, '{');
    json_object_keylen_foreach((json_t *)v, key, key_len, m) {
      if (!first)
        put_c(o, ',');
      first = false;
      if (!put_string(o, key, key_len))
        return false;
      put_c(o, ':');
      if (!put_value(o, m, depth + 1))
        return false;
    }
    put_c(o, '}');
    return true;
  }
  if (json_is_array(v)) {
    size_t n = json_array_size(v);
    put_c(o, '[');
    for (size_t i = 0; i < n; i++) {
      if (i)
        put_c(o, ',');
      if (!put_value(o, json_array_get(v, i), depth + 1))
        return false;
    }
    put_c(o, ']');
    return true;
  }
  if (json_is_string(v))
    return put_string(o, json_string_value(v), json_string_length(v));
  put_scalar(o, v);
  return true;
}

size_t sl_json_dumpb(const json_t *value, char *buf, size_t size) {
  out o = {buf, buf ? size : 0, 0};
  return put_value(&o, value, 0) ? o.n : 0;
}

char *sl_json_dumps(const json_t *value, size_t *len) {
  char small[256];
  size_t n = sl_json_dumpb(value, small, sizeof(small));
  if (!n)
    return NULL;
  char *s = malloc(n + 1);
  if (!s)
    return NULL;
  if (n <= sizeof(small))
    memcpy(s, small, n);
  else
    sl_json_dumpb(value, s, n);
  s[n] = '\0';
  if (len)
    *len = n;
  return s;
}

char *sl__base64(const void *p, size_t n) {
  static const char t[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *b = p;
  char *s = malloc(4 * ((n + 2) / 3) + 1), *o = s;
  if (!s)
    return NULL;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)b[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)b[i + 1] << 8;
    if (i + 2 < n)
      v |= b[i + 2];
    *o++ = t[v >> 18];
    *o++ = t[(v >> 12) & 63];
    *o++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
    *o++ = i + 2 < n ? t[v & 63] : '=';
  }
  *o = 0;
  return s;
}

void sl__json_set_bytes(json_t *obj, const char *name, const void *p,
                        size_t n) {
  char enc[64];
  snprintf(enc, sizeof(enc), "%s_enc", name);
  const unsigned char *b = p;
  bool printable = true;
  for (size_t i = 0; i < n && printable; i++)
    printable = b[i] >= 0x20 && b[i] != 0x7f;
  /* jansson refuses invalid UTF-8, which is the rest of the test. */
  json_t *s = printable ? json_stringn(n ? p : "", n) : NULL;
  if (s) {
    json_object_set_new(obj, name, s);
    json_object_set_new(obj, enc, json_string("utf8"));
    return;
  }
  char *e = sl__base64(p, n);
  json_object_set_new(obj, name, json_string(e ? e : ""));
  json_object_set_new(obj, enc, json_string("base64"));
  free(e);
}
