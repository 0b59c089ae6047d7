/* SPDX-License-Identifier: Apache-2.0 */
/* GET /state/<uid>/<state>?key=... on the metrics endpoint: a state query
 * (sl_job_query) answered as JSON, for online services that read the
 * features a job keeps. Bytes are sent as UTF-8 text when they are
 * printable, else as base64, each with an "_enc" field saying which (as
 * sluice-ckpt dump does). With query.http.token set, a request must carry
 * "Authorization: Bearer <token>", compared in constant time. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/json.h"
#include "core/util.h"
#include "metrics/metrics_int.h"
#include "sluice.h"

static int b64_digit(char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+' || c == '-' || c == ' ') /* ' ': a '+' decoded from a URL */
    return 62;
  if (c == '/' || c == '_')
    return 63;
  return -1;
}

/* Standard or URL-safe base64, padding optional. The decoded length, or
 * -1 when s is not base64. out has room for 3 * (n / 4 + 1) bytes. */
static long b64_decode(const char *s, size_t n, unsigned char *out) {
  while (n && s[n - 1] == '=')
    n--;
  if (n % 4 == 1)
    return -1;
  size_t o = 0;
  uint32_t v = 0;
  for (size_t i = 0; i < n; i++) {
    int d = b64_digit(s[i]);
    if (d < 0)
      return -1;
    v = v << 6 | (uint32_t)d;
    if (i % 4 == 3) {
      out[o++] = (unsigned char)(v >> 16);
      out[o++] = (unsigned char)(v >> 8);
      out[o++] = (unsigned char)v;
      v = 0;
    }
  }
  if (n % 4 == 2)
    out[o++] = (unsigned char)(v >> 4);
  else if (n % 4 == 3) {
    out[o++] = (unsigned char)(v >> 10);
    out[o++] = (unsigned char)(v >> 2);
  }
  return (long)o;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static long hex_decode(const char *s, size_t n, unsigned char *out) {
  if (n % 2)
    return -1;
  for (size_t i = 0; i < n; i += 2) {
    int a = hex_digit(s[i]), b = hex_digit(s[i + 1]);
    if (a < 0 || b < 0)
      return -1;
    out[i / 2] = (unsigned char)(a << 4 | b);
  }
  return (long)(n / 2);
}

/* Bytes from the argument name (text), name_hex or name_b64: exactly one
 * of them when required, at most one otherwise. Returns 1 with *out
 * (malloc'ed, caller frees) and *len, 0 when absent and not required, or
 * -1 with a message in why. */
static int arg_bytes(const sl__http_req *req, const char *name, bool required,
                     unsigned char **out, size_t *len, char *why,
                     size_t whylen) {
  char hn[32], bn[32];
  snprintf(hn, sizeof(hn), "%s_hex", name);
  snprintf(bn, sizeof(bn), "%s_b64", name);
  size_t tl = 0, hl = 0, bl = 0; /* set with their pointers */
  const char *t = sl__http_arg(req, name, &tl);
  const char *h = sl__http_arg(req, hn, &hl);
  const char *b = sl__http_arg(req, bn, &bl);
  int given = (t != NULL) + (h != NULL) + (b != NULL);
  if (given > 1 || (required && !given)) {
    snprintf(why, whylen, "give %s one of %s (UTF-8 text), %s or %s",
             required ? "exactly" : "at most", name, hn, bn);
    return -1;
  }
  if (!given)
    return 0;
  size_t n = t ? tl : h ? hl : bl;
  unsigned char *p = malloc(n + 4);
  if (!p) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  long l;
  if (t) {
    memcpy(p, t, tl);
    l = (long)tl;
  } else if (h) {
    if ((l = hex_decode(h, hl, p)) < 0)
      snprintf(why, whylen, "%s is not hexadecimal", hn);
  } else if ((l = b64_decode(b, bl, p)) < 0) {
    snprintf(why, whylen, "%s is not base64", bn);
  }
  if (l < 0) {
    free(p);
    return -1;
  }
  *out = p;
  *len = (size_t)l;
  return 1;
}

/* Constant time in the token's content: every byte of the longer of the
 * two is looked at whatever differs. */
static bool token_ok(const char *want, const char *auth) {
  if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
    return false;
  const char *got = auth + 7;
  size_t wl = strlen(want), gl = strlen(got), n = wl > gl ? wl : gl;
  unsigned diff = (unsigned)(wl != gl);
  for (size_t i = 0; i < n; i++) {
    unsigned char a = i < wl ? (unsigned char)want[i] : 0;
    unsigned char b = i < gl ? (unsigned char)got[i] : 0;
    diff |= (unsigned)(a ^ b);
  }
  return diff == 0;
}

static const char *kind_name(sl_state_kind k) {
  switch (k) {
  case SL_STATE_VALUE:
    return "value";
  case SL_STATE_LIST:
    return "list";
  case SL_STATE_MAP:
    return "map";
  case SL_STATE_REDUCING:
    return "reducing";
  case SL_STATE_AGGREGATING:
    return "aggregating";
  }
  return "unknown";
}

/* The body of o, compact, with a final newline; NULL when out of memory. */
static char *dump(json_t *o) {
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(o);
  if (!s)
    return NULL;
  size_t n = strlen(s);
  char *nl = realloc(s, n + 2);
  if (!nl) {
    free(s);
    return NULL;
  }
  nl[n] = '\n';
  nl[n + 1] = '\0';
  return nl;
}

static void reply_error(sl__http_reply *r, int status, const char *msg) {
  r->status = status;
  r->content_type = "application/json";
  r->body = dump(json_pack("{s:s}", "error", msg));
}

static json_t *answer_json(const char *uid, const char *state,
                           const unsigned char *key, size_t key_len,
                           const sl_query_result_t *res) {
  json_t *o = json_object();
  if (!o)
    return NULL;
  json_object_set_new(o, "uid", json_string(uid));
  json_object_set_new(o, "state", json_string(state));
  sl__json_set_bytes(o, "key", key, key_len);
  json_object_set_new(o, "kind", json_string(kind_name(res->kind)));
  if (res->kind != SL_STATE_LIST && res->kind != SL_STATE_MAP) {
    sl__json_set_bytes(o, "value", res->items[0].value,
                       res->items[0].value_len);
    return o;
  }
  json_t *a = json_array();
  for (size_t i = 0; a && i < res->n; i++) {
    const sl_query_item_t *it = &res->items[i];
    json_t *e = json_object();
    if (!e)
      break;
    if (res->kind == SL_STATE_MAP)
      sl__json_set_bytes(e, "map_key", it->map_key, it->map_key_len);
    sl__json_set_bytes(e, "value", it->value, it->value_len);
    json_array_append_new(a, e);
  }
  json_object_set_new(o, res->kind == SL_STATE_MAP ? "entries" : "items", a);
  return o;
}

/* Appends s (n bytes) to *p percent-encoded for a URL: unreserved bytes
 * (and '/' in a path) as they are, the rest %XX. At most 3n bytes. */
static void url_put(char **p, const void *s, size_t n, bool path) {
  static const char hex[] = "0123456789ABCDEF";
  const unsigned char *c = s;
  for (size_t i = 0; i < n; i++) {
    bool plain = (c[i] >= 'A' && c[i] <= 'Z') || (c[i] >= 'a' && c[i] <= 'z') ||
                 (c[i] >= '0' && c[i] <= '9') || c[i] == '-' || c[i] == '_' ||
                 c[i] == '.' || c[i] == '~' || (path && c[i] == '/');
    if (plain) {
      *(*p)++ = (char)c[i];
    } else {
      *(*p)++ = '%';
      *(*p)++ = hex[c[i] >> 4];
      *(*p)++ = hex[c[i] & 15];
    }
  }
}

/* Appends n bytes as hex (2n bytes). */
static void hex_put(char **p, const unsigned char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    *(*p)++ = hex[s[i] >> 4];
    *(*p)++ = hex[s[i] & 15];
  }
}

/* A key another process owns (group mode): 307 to the same query at the
 * owner's endpoint, with the owner in the body; 503 while its task moves
 * (or when the owner advertises no endpoint). */
static void reply_not_owner(sl__http_reply *r, const sl_query_owner_t *o,
                            const char *uid, const char *state,
                            const unsigned char *key, size_t key_len,
                            const unsigned char *mk, size_t mk_len, int has_mk,
                            const char *err) {
  json_t *owner = json_pack("{s:I,s:s,s:s}", "task", (json_int_t)o->task,
                            "instance", o->instance, "endpoint", o->endpoint);
  json_t *body =
      owner ? json_pack("{s:s,s:o}", "error", err, "owner", owner) : NULL;
  r->content_type = "application/json";
  r->body = dump(body);
  if (!r->body) {
    reply_error(r, 500, "out of memory");
    return;
  }
  if (o->where != SL_QUERY_REMOTE || !o->endpoint[0]) {
    r->status = 503;
    r->retry_after = "1";
    return;
  }
  size_t cap = strlen(o->endpoint) + 3 * (strlen(uid) + strlen(state)) +
               2 * (key_len + mk_len) + 64;
  char *loc = malloc(cap), *p = loc;
  if (!loc) {
    free(r->body);
    reply_error(r, 500, "out of memory");
    return;
  }
  p += sprintf(p, "%s/state/", o->endpoint);
  url_put(&p, uid, strlen(uid), true);
  *p++ = '/';
  url_put(&p, state, strlen(state), false);
  p += sprintf(p, "?key_hex=");
  hex_put(&p, key, key_len);
  if (has_mk) {
    p += sprintf(p, "&map_key_hex=");
    hex_put(&p, mk, mk_len);
  }
  *p = '\0';
  r->status = 307;
  r->location = loc;
}

void sl__jm_state_http(sl__jmetrics *jm, const sl__http_req *req,
                       sl__http_reply *r) {
  if (jm->query_token &&
      !token_ok(jm->query_token, sl__http_header(req, "Authorization"))) {
    r->challenge = "Bearer realm=\"sluice\"";
    reply_error(r, 401,
                "unauthorized: this endpoint needs the bearer token "
                "of query.http.token");
    return;
  }
  const char *p = req->path + strlen("/state/");
  const char *slash = strrchr(p, '/');
  if (!slash || slash == p || !slash[1]) {
    reply_error(r, 400, "expected /state/<uid>/<state>?key=...");
    return;
  }
  char *uid = strndup(p, (size_t)(slash - p));
  const char *state = slash + 1;
  unsigned char *key = NULL, *mk = NULL;
  size_t key_len = 0, mk_len = 0;
  char why[256];
  sl_query_result_t *res = NULL;
  int has_mk = 0;
  if (!uid) {
    reply_error(r, 500, "out of memory");
    return;
  }
  if (arg_bytes(req, "key", true, &key, &key_len, why, sizeof(why)) < 0 ||
      (has_mk = arg_bytes(req, "map_key", false, &mk, &mk_len, why,
                          sizeof(why))) < 0) {
    reply_error(r, 400, why);
    goto out;
  }
  sl_query_owner_t owner;
  sl_query_opts_t o = {
      .map_key = has_mk ? mk : NULL, .map_key_len = mk_len, .owner = &owner};
  char err[512];
  int rc = sl_job_query(jm->job, uid, state, key, key_len, &o, &res, err,
                        sizeof(err));
  if (rc == 1) {
    r->content_type = "application/json";
    r->body = dump(answer_json(uid, state, key, key_len, res));
    if (!r->body)
      reply_error(r, 500, "out of memory");
  } else if (rc == 0) {
    reply_error(r, 404, "no entry for this key");
  } else if (rc == SL_ERR_NOT_OWNER) {
    reply_not_owner(r, &owner, uid, state, key, key_len, mk, mk_len, has_mk,
                    err);
  } else {
    /* The handler checked its own arguments: an invalid query is a state
     * that did not opt in. */
    int status = rc == SL_ERR_NOTFOUND  ? 404
                 : rc == SL_ERR_INVAL   ? 403
                 : rc == SL_ERR_STATE   ? 503
                 : rc == SL_ERR_TIMEOUT ? 504
                                        : 500;
    reply_error(r, status, err);
  }
out:
  sl_query_result_free(res);
  free(uid);
  free(key);
  free(mk);
}
