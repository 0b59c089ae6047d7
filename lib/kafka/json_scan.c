/* SPDX-License-Identifier: Apache-2.0 */
/* The JSON codec's fast path: one pass over a message value that checks
 * it is JSON (what jansson would accept: RFC 8259, UTF-8, no NUL, integers
 * that fit in 64 bits, depth <= 2048) and finds the values at a few RFC
 * 6901 pointers, without building a document or allocating. The document
 * is built only when a chained function asks for it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka/kafka_int.h"

#define MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

int sl__jptr_compile(sl__jptr *p, const char *ptr) {
  memset(p, 0, sizeof(*p));
  if (!ptr)
    return SL_ERR_INVAL;
  if (*ptr && *ptr != '/') {
    p->never = true; /* as sl_json_pointer(): no match */
    return SL_OK;
  }
  for (const char *s = ptr; *s == '/';) {
    if (p->n == SL__JPTR_MAX)
      return SL_ERR_INVAL;
    s++;
    sl__jtok *t = &p->tok[p->n++];
    /* Same decoding (and 255-byte cap) as sl_json_pointer(). */
    while (*s && *s != '/' && t->len + 1 < sizeof(t->s)) {
      if (s[0] == '~' && (s[1] == '0' || s[1] == '1')) {
        t->s[t->len++] = s[1] == '0' ? '~' : '/';
        s += 2;
      } else {
        t->s[t->len++] = *s++;
      }
    }
    while (*s && *s != '/')
      s++;
    char *end;
    unsigned long i = strtoul(t->s, &end, 10);
    t->index = t->len && !*end ? (uint64_t)i : UINT64_MAX;
  }
  return SL_OK;
}

typedef struct scan {
  const unsigned char *s, *end;
  const sl__jptr *ptrs;
  sl__jval *out;
  size_t n;
  const char *why;
  const unsigned char *at;
} scan;

static int fail(scan *c, const unsigned char *at, const char *why) {
  c->why = why;
  c->at = at;
  return -1;
}

static void ws(scan *c) {
  while (c->s < c->end &&
         (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r'))
    c->s++;
}

static int hex4(const unsigned char *p, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char h = p[i];
    unsigned d = h >= '0' && h <= '9'   ? h - '0'
                 : h >= 'a' && h <= 'f' ? h - 'a' + 10
                 : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                        : 16;
    if (d == 16)
      return -1;
    *v = *v << 4 | d;
  }
  return 0;
}

/* Length of the valid UTF-8 sequence at p (jansson's rules: no overlong
 * forms, no surrogates, <= U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned char b = *p;
  size_t n;
  uint32_t v;
  if (b < 0x80)
    return 1;
  if (b >= 0xC2 && b <= 0xDF)
    n = 2, v = b & 0x1F;
  else if (b >= 0xE0 && b <= 0xEF)
    n = 3, v = b & 0x0F;
  else if (b >= 0xF0 && b <= 0xF4)
    n = 4, v = b & 0x07;
  else
    return 0;
  if ((size_t)(end - p) < n)
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80)
      return 0;
    v = v << 6 | (p[i] & 0x3F);
  }
  if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10FFFF ||
      (v >= 0xD800 && v <= 0xDFFF))
    return 0;
  return n;
}

/* A string at c->s (the opening quote): validated and skipped; *esc says
 * whether it holds escapes (its bytes then differ from the raw text). */
static int string(scan *c, const unsigned char **start, size_t *len,
                  bool *esc) {
  const unsigned char *p = c->s + 1;
  *esc = false;
  *start = p;
  for (;;) {
    if (p >= c->end)
      return fail(c, p, "premature end of input in a string");
    unsigned char b = *p;
    if (b == '"')
      break;
    if (b < 0x20)
      return fail(c, p, "control character in a string");
    if (b == '\\') {
      *esc = true;
      if (p + 1 >= c->end)
        return fail(c, p, "premature end of input in a string");
      unsigned char e = p[1];
      if (e == 'u') {
        unsigned v, w;
        if (c->end - p < 6 || hex4(p + 2, &v))
          return fail(c, p, "invalid \\u escape");
        p += 6;
        if (v == 0)
          return fail(c, p, "\\u0000 is not allowed");
        if (v >= 0xDC00 && v <= 0xDFFF)
          return fail(c, p, "invalid Unicode (lone low surrogate)");
        if (v >= 0xD800 && v <= 0xDBFF) {
          if (c->end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
              hex4(p + 2, &w) || w < 0xDC00 || w > 0xDFFF)
            return fail(c, p, "invalid Unicode (lone high surrogate)");
          p += 6;
        }
        continue;
      }
      if (!strchr("\"\\/bfnrt", e) || !e)
        return fail(c, p, "invalid escape");
      p += 2;
      continue;
    }
    size_t n = utf8_len(p, c->end);
    if (!n)
      return fail(c, p, "invalid UTF-8 in a string");
    p += n;
  }
  *len = (size_t)(p - *start);
  c->s = p + 1;
  return 0;
}

/* A number at c->s; *integer when it has no fraction or exponent, and
 * then it must fit in 64 bits (jansson: "too big integer"). */
static int number(scan *c, bool *integer) {
  const unsigned char *p = c->s, *start = p;
  *integer = true;
  if (p < c->end && *p == '-')
    p++;
  if (p >= c->end || *p < '0' || *p > '9')
    return fail(c, start, "invalid token");
  if (*p == '0') {
    p++;
  } else {
    while (p < c->end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < c->end && *p == '.') {
    *integer = false;
    p++;
    if (p >= c->end || *p < '0' || *p > '9')
      return fail(c, start, "invalid number");
    while (p < c->end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < c->end && (*p == 'e' || *p == 'E')) {
    *integer = false;
    p++;
    if (p < c->end && (*p == '+' || *p == '-'))
      p++;
    if (p >= c->end || *p < '0' || *p > '9')
      return fail(c, start, "invalid number");
    while (p < c->end && *p >= '0' && *p <= '9')
      p++;
  }
  c->s = p;
  char buf[64];
  size_t n = (size_t)(p - start);
  if (*integer) {
    int64_t v;
    if (sl__jint(start, n, &v))
      return fail(c, start, "too big integer");
  } else if (n < sizeof(buf)) {
    memcpy(buf, start, n);
    buf[n] = 0;
    errno = 0;
    double d = strtod(buf, NULL);
    if (errno == ERANGE && isinf(d))
      return fail(c, start, "real number overflow");
  } else {
    char *big = malloc(n + 1); /* rare: a very long real */
    if (!big)
      return fail(c, start, "out of memory");
    memcpy(big, start, n);
    big[n] = 0;
    errno = 0;
    double d = strtod(big, NULL);
    free(big);
    if (errno == ERANGE && isinf(d))
      return fail(c, start, "real number overflow");
  }
  return 0;
}

int sl__jint(const void *text, size_t len, int64_t *out) {
  const unsigned char *p = text, *end = p + len;
  bool neg = p < end && *p == '-';
  p += neg;
  if (p >= end)
    return -1;
  uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    unsigned d = *p - '0';
    if (v > (lim - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return 0;
}

/* Does the member key (raw, maybe escaped) equal token t? */
static bool key_is(const unsigned char *k, size_t len, bool esc,
                   const sl__jtok *t) {
  if (!esc)
    return len == t->len && memcmp(k, t->s, len) == 0;
  char buf[sizeof(t->s) * 4];
  size_t n;
  if (len > sizeof(buf) || sl__junescape(k, len, buf, &n) || n != t->len)
    return false;
  return memcmp(buf, t->s, n) == 0;
}

static int value(scan *c, int depth, uint64_t mask);

static void found(scan *c, uint64_t mask, int depth, const unsigned char *at,
                  sl__jkind kind, const unsigned char *s, size_t len,
                  bool esc) {
  for (size_t j = 0; j < c->n; j++)
    if ((mask >> j & 1) && c->ptrs[j].n == (size_t)depth)
      c->out[j] = (sl__jval){kind, (const char *)s, len, esc};
  (void)at;
}

/* Pointers of mask that go deeper than depth: their results so far are
 * replaced by what this container holds (a later duplicate key wins, as
 * in jansson). */
static void reset_deeper(scan *c, uint64_t mask, int depth) {
  for (size_t j = 0; j < c->n; j++)
    if ((mask >> j & 1) && c->ptrs[j].n > (size_t)depth)
      c->out[j] = (sl__jval){SL__J_NONE, NULL, 0, false};
}

/* After a member or element: 1 at ',' (another follows), 0 at the
 * container's closing bracket, -1 (failed) at anything else. */
static int next_item(scan *c, char close) {
  ws(c);
  if (c->s < c->end && (*c->s == ',' || *c->s == close))
    return *c->s++ == ',';
  return fail(c, c->s,
              close == '}' ? "',' or '}' expected" : "',' or ']' expected");
}

static int object(scan *c, int depth, uint64_t mask) {
  c->s++; /* { */
  ws(c);
  if (c->s < c->end && *c->s == '}') {
    c->s++;
    return 0;
  }
  for (;;) {
    ws(c);
    if (c->s >= c->end || *c->s != '"')
      return fail(c, c->s, "string or '}' expected");
    const unsigned char *k;
    size_t klen;
    bool esc;
    if (string(c, &k, &klen, &esc))
      return -1;
    uint64_t sub = 0;
    for (size_t j = 0; mask && j < c->n; j++)
      if ((mask >> j & 1) && c->ptrs[j].n > (size_t)depth &&
          key_is(k, klen, esc, &c->ptrs[j].tok[depth]))
        sub |= (uint64_t)1 << j;
    ws(c);
    if (c->s >= c->end || *c->s != ':')
      return fail(c, c->s, "':' expected");
    c->s++;
    reset_deeper(c, sub, depth + 1);
    if (value(c, depth + 1, sub))
      return -1;
    int more = next_item(c, '}');
    if (more <= 0)
      return more;
  }
}

static int array(scan *c, int depth, uint64_t mask) {
  c->s++; /* [ */
  ws(c);
  if (c->s < c->end && *c->s == ']') {
    c->s++;
    return 0;
  }
  for (uint64_t i = 0;; i++) {
    uint64_t sub = 0;
    for (size_t j = 0; mask && j < c->n; j++)
      if ((mask >> j & 1) && c->ptrs[j].n > (size_t)depth &&
          c->ptrs[j].tok[depth].index == i)
        sub |= (uint64_t)1 << j;
    if (value(c, depth + 1, sub))
      return -1;
    int more = next_item(c, ']');
    if (more <= 0)
      return more;
  }
}

static int literal(scan *c, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(c->end - c->s) < n || memcmp(c->s, word, n) != 0)
    return fail(c, c->s, "invalid token");
  c->s += n;
  return 0;
}

static int value(scan *c, int depth, uint64_t mask) {
  ws(c);
  if (c->s >= c->end)
    return fail(c, c->s, "premature end of input");
  const unsigned char *at = c->s;
  switch (*c->s) {
  case '{':
  case '[':
    if (depth >= MAX_DEPTH)
      return fail(c, at, "maximum parsing depth reached");
    found(c, mask, depth, at, SL__J_OTHER, at, 0, false);
    return *c->s == '{' ? object(c, depth, mask) : array(c, depth, mask);
  case '"': {
    const unsigned char *s;
    size_t len;
    bool esc;
    if (string(c, &s, &len, &esc))
      return -1;
    found(c, mask, depth, at, SL__J_STRING, s, len, esc);
    return 0;
  }
  case 't':
  case 'f':
  case 'n':
    if (literal(c, *c->s == 't' ? "true" : *c->s == 'f' ? "false" : "null"))
      return -1;
    found(c, mask, depth, at, SL__J_OTHER, at, 0, false);
    return 0;
  default: {
    bool integer;
    if (number(c, &integer))
      return -1;
    found(c, mask, depth, at, integer ? SL__J_INTEGER : SL__J_OTHER, at,
          (size_t)(c->s - at), false);
    return 0;
  }
  }
}

int sl__jscan(const void *text, size_t len, const sl__jptr *ptrs, size_t n,
              sl__jval *out, char *err, size_t errlen) {
  scan c = {text, (const unsigned char *)text + len, ptrs, out, n, NULL, NULL};
  uint64_t mask = 0;
  for (size_t j = 0; j < n && j < 64; j++) {
    out[j] = (sl__jval){SL__J_NONE, NULL, 0, false};
    if (!ptrs[j].never)
      mask |= (uint64_t)1 << j;
  }
  int rc = value(&c, 0, mask);
  if (!rc) {
    ws(&c);
    if (c.s < c.end)
      rc = fail(&c, c.s, "end of file expected");
  }
  if (!rc)
    return 0;
  /* Line and column (1-based, bytes) like jansson's messages. */
  int line = 1, col = 1;
  for (const unsigned char *p = text; p < c.at; p++, col++)
    if (*p == '\n')
      line++, col = 0;
  snprintf(err, errlen, "invalid JSON: %s (line %d column %d)", c.why, line,
           col);
  return -1;
}

json_t *sl__jload(const void *text, size_t len, json_error_t *je) {
  const char *nul = memchr(text, 0, len);
  if (nul) {
    /* As jansson reports a position: 1-based line and column. */
    int line = 1, col = 1;
    for (const char *p = text; p < nul; p++, col++)
      if (*p == '\n')
        line++, col = 0;
    snprintf(je->text, sizeof(je->text), "NUL byte in the text");
    je->line = line;
    je->column = col;
    je->position = (int)(nul - (const char *)text);
    return NULL;
  }
  return json_loadb(text, len, JSON_DECODE_ANY, je);
}

int sl__junescape(const void *raw, size_t len, char *out, size_t *out_len) {
  const unsigned char *p = raw, *end = p + len;
  char *o = out;
  while (p < end) {
    if (*p != '\\') {
      *o++ = (char)*p++;
      continue;
    }
    unsigned char e = p[1];
    p += 2;
    if (e != 'u') {
      *o++ = e == 'b'   ? '\b'
             : e == 'f' ? '\f'
             : e == 'n' ? '\n'
             : e == 'r' ? '\r'
             : e == 't' ? '\t'
                        : (char)e;
      continue;
    }
    unsigned v, w;
    if (end - p < 4 || hex4(p, &v))
      return -1;
    p += 4;
    if (v >= 0xD800 && v <= 0xDBFF) {
      if (end - p < 6 || hex4(p + 2, &w))
        return -1;
      p += 6;
      v = 0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00);
    }
    if (v < 0x80) {
      *o++ = (char)v;
    } else if (v < 0x800) {
      *o++ = (char)(0xC0 | v >> 6);
      *o++ = (char)(0x80 | (v & 0x3F));
    } else if (v < 0x10000) {
      *o++ = (char)(0xE0 | v >> 12);
      *o++ = (char)(0x80 | (v >> 6 & 0x3F));
      *o++ = (char)(0x80 | (v & 0x3F));
    } else {
      *o++ = (char)(0xF0 | v >> 18);
      *o++ = (char)(0x80 | (v >> 12 & 0x3F));
      *o++ = (char)(0x80 | (v >> 6 & 0x3F));
      *o++ = (char)(0x80 | (v & 0x3F));
    }
  }
  *out_len = (size_t)(o - out);
  return 0;
}
