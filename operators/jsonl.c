/* SPDX-License-Identifier: Apache-2.0 */
/* JSON-lines I/O: a file source (one reader) that can take the key and the
 * event time from JSON fields, and file / stdout sinks that write whole
 * lines with one write() per buffer so workers' lines never interleave. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "operator.h"
#include "sluice/json.h"

/* ---- Source ------------------------------------------------------------- */

typedef struct jsrc {
  sl_source_ops_t ops;
  char *path, *key_field, *ts_field;
  FILE *f;
  char *line;
  size_t line_cap;
  uint64_t lineno;
} jsrc;

static void jsrc_free(void *p) {
  jsrc *s = p;
  free(s->path);
  free(s->key_field);
  free(s->ts_field);
  free(s->line);
  free(s);
}

/* A top-level member name, or an RFC 6901 JSON pointer ("/a/0/b"). */
static json_t *json_field(json_t *root, const char *field) {
  if (field[0] != '/')
    return json_object_get(root, field);
  json_t *cur = root;
  char tok[256];
  const char *p = field;
  while (cur && *p == '/') {
    p++;
    size_t n = 0;
    while (*p && *p != '/' && n + 1 < sizeof(tok)) {
      if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
        tok[n++] = p[1] == '0' ? '~' : '/';
        p += 2;
      } else {
        tok[n++] = *p++;
      }
    }
    tok[n] = '\0';
    if (json_is_object(cur)) {
      cur = json_object_get(cur, tok);
    } else if (json_is_array(cur)) {
      char *end;
      unsigned long i = strtoul(tok, &end, 10);
      cur = (*tok && !*end) ? json_array_get(cur, i) : NULL;
    } else {
      cur = NULL;
    }
  }
  return cur;
}

static int jsrc_open(sl_source_ctx_t *ctx, void *opaque) {
  jsrc *s = opaque;
  s->f = fopen(s->path, "r");
  s->lineno = 0;
  if (!s->f)
    return sl_source_fail(ctx, SL_ERR_IO, "cannot open %s: %s", s->path,
                          strerror(errno));
  return 0;
}

static void jsrc_close(sl_source_ctx_t *ctx, void *opaque) {
  (void)ctx;
  jsrc *s = opaque;
  if (s->f)
    fclose(s->f);
  s->f = NULL;
}

/* The location is formatted only for a bad line, not for every line. */
static int jsrc_bad(sl_source_ctx_t *ctx, const jsrc *s, const char *why) {
  char where[512];
  snprintf(where, sizeof(where), "%s:%" PRIu64, s->path, s->lineno);
  return sl_source_bad_input(ctx, where, why);
}

static int jsrc_line(sl_source_ctx_t *ctx, jsrc *s, char *line, size_t len) {
  sl_record_t rec = {NULL, 0, line, len, 0};
  if (!s->key_field && !s->ts_field)
    return sl_source_emit(ctx, &rec);
  json_error_t jerr;
  json_t *root = json_loadb(line, len, 0, &jerr);
  if (!root || !json_is_object(root)) {
    bool parsed = root != NULL;
    json_decref(root);
    return jsrc_bad(ctx, s, parsed ? "not a JSON object" : jerr.text);
  }
  char num[32];
  int rc = 0;
  if (s->key_field) {
    json_t *k = json_field(root, s->key_field);
    if (json_is_string(k)) {
      rec.key = json_string_value(k);
      rec.key_len = json_string_length(k);
    } else if (json_is_integer(k)) {
      rec.key_len = (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                                     json_integer_value(k));
      rec.key = num;
    } else {
      rc = jsrc_bad(ctx, s, "key field missing or not a string/integer");
      goto out;
    }
  }
  if (s->ts_field) {
    json_t *t = json_field(root, s->ts_field);
    if (!json_is_integer(t)) {
      rc = jsrc_bad(ctx, s, "timestamp field missing or not an integer (ms)");
      goto out;
    }
    rec.ts = json_integer_value(t);
  }
  rc = sl_source_emit(ctx, &rec);
out:
  json_decref(root);
  return rc;
}

static int jsrc_poll(sl_source_ctx_t *ctx, void *opaque) {
  jsrc *s = opaque;
  size_t budget = sl_source_ctx_budget(ctx);
  for (size_t k = 0; k < budget; k++) {
    errno = 0;
    ssize_t n = getline(&s->line, &s->line_cap, s->f);
    if (n < 0)
      return ferror(s->f) ? sl_source_fail(ctx, SL_ERR_IO, "reading %s: %s",
                                           s->path, strerror(errno))
                          : SL_POLL_END;
    s->lineno++;
    while (n > 0 && (s->line[n - 1] == '\n' || s->line[n - 1] == '\r'))
      n--;
    size_t i = 0;
    while (i < (size_t)n && (s->line[i] == ' ' || s->line[i] == '\t'))
      i++;
    if (i == (size_t)n)
      continue; /* blank line */
    int rc = jsrc_line(ctx, s, s->line, (size_t)n);
    if (rc)
      return rc;
  }
  return SL_POLL_MORE;
}

sl_stream_t *sl_source_jsonl(sl_job_t *job, const char *uid, const char *path,
                             const sl_jsonl_source_opts_t *opts) {
  if (!job)
    return NULL;
  if (!path || !*path) {
    sl_job_build_error(job, SL_ERR_INVAL, "jsonl source \"%s\": no path",
                       uid ? uid : "");
    return NULL;
  }
  jsrc *s = calloc(1, sizeof(*s));
  if (!s || !(s->path = strdup(path)) ||
      (opts && opts->key_field && !(s->key_field = strdup(opts->key_field))) ||
      (opts && opts->ts_field && !(s->ts_field = strdup(opts->ts_field)))) {
    if (s)
      jsrc_free(s);
    sl_job_build_error(job, SL_ERR_NOMEM, "jsonl source: out of memory");
    return NULL;
  }
  s->ops.open = jsrc_open;
  s->ops.poll = jsrc_poll;
  s->ops.close = jsrc_close;
  sl_stream_t *st = sl_source(job, uid, &s->ops, s);
  if (!st) {
    jsrc_free(s);
    return NULL;
  }
  sl_job_adopt(job, s, jsrc_free);
  return st;
}

/* ---- Sinks -------------------------------------------------------------- */

typedef struct jsink {
  char *path; /* NULL: stdout */
  sl_line_format format;
  pthread_mutex_t lock;
  int fd;
  int opens;
  bool truncated;
} jsink;

typedef struct jsink_inst {
  char *buf;
  size_t len, cap;
} jsink_inst;

#define SL__SINK_FLUSH (64 * 1024)

static void jsink_free(void *p) {
  jsink *s = p;
  pthread_mutex_destroy(&s->lock);
  free(s->path);
  free(s);
}

static int jsink_open(sl_ctx_t *op) {
  jsink *s = sl_op_arg(op);
  jsink_inst *in = calloc(1, sizeof(*in));
  if (!in)
    return SL_ERR_NOMEM;
  sl_op_set_data(op, in);
  pthread_mutex_lock(&s->lock);
  /* Truncate only once per job: a worker may open after another one has
   * already written everything and closed. */
  if (s->opens++ == 0 && s->path) {
    s->fd = open(s->path,
                 O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC |
                     (s->truncated ? 0 : O_TRUNC),
                 0644);
    s->truncated = true;
  }
  int fd = s->fd;
  pthread_mutex_unlock(&s->lock);
  if (fd < 0)
    return sl_op_fail(op, SL_ERR_IO, "cannot open %s: %s", s->path,
                      strerror(errno));
  return 0;
}

static int jsink_flush(sl_ctx_t *op) {
  jsink *s = sl_op_arg(op);
  jsink_inst *in = sl_op_data(op);
  if (!in || in->len == 0)
    return 0;
  pthread_mutex_lock(&s->lock);
  size_t off = 0;
  int err = 0;
  while (off < in->len) {
    ssize_t n = write(s->fd, in->buf + off, in->len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      err = errno ? errno : EIO;
      break;
    }
    off += (size_t)n;
  }
  pthread_mutex_unlock(&s->lock);
  in->len = 0;
  if (err)
    return sl_op_fail(op, SL_ERR_IO, "write to %s failed: %s",
                      s->path ? s->path : "stdout", strerror(err));
  return 0;
}

static int buf_append(jsink_inst *in, const void *p, size_t n) {
  if (in->cap - in->len < n) {
    size_t cap = in->cap ? in->cap : 4096;
    while (cap - in->len < n)
      cap *= 2;
    char *b = realloc(in->buf, cap);
    if (!b)
      return SL_ERR_NOMEM;
    in->buf = b;
    in->cap = cap;
  }
  memcpy(in->buf + in->len, p, n);
  in->len += n;
  return 0;
}

/* Bytes as embedded JSON when they parse as JSON, else as a string. */
static json_t *as_json(const void *p, size_t n) {
  if (!p || n == 0)
    return json_null();
  json_t *j = json_loadb(p, n, JSON_DECODE_ANY, NULL);
  return j ? j : json_stringn_nocheck(p, n);
}

static int jsink_process(sl_ctx_t *op, int port, const sl_record_t *rec) {
  (void)port;
  jsink *s = sl_op_arg(op);
  jsink_inst *in = sl_op_data(op);
  int rc;
  if (s->format == SL_LINE_VALUE) {
    rc = buf_append(in, rec->value, rec->value_len);
  } else {
    json_t *o = json_object();
    json_object_set_new(o, "key", as_json(rec->key, rec->key_len));
    json_object_set_new(o, "ts", json_integer(rec->ts));
    json_object_set_new(o, "value", as_json(rec->value, rec->value_len));
    char *txt = sl_json_dumps(o, NULL);
    json_decref(o);
    rc = txt ? buf_append(in, txt, strlen(txt)) : SL_ERR_NOMEM;
    free(txt);
  }
  if (!rc)
    rc = buf_append(in, "\n", 1);
  if (rc)
    return sl_op_fail(op, rc, "out of memory");
  /* stdout is for people watching: every record shows at once. */
  if (!s->path || in->len >= SL__SINK_FLUSH)
    return jsink_flush(op);
  return 0;
}

static int jsink_watermark(sl_ctx_t *op, int64_t wm) {
  (void)wm;
  return jsink_flush(op);
}

static void jsink_close(sl_ctx_t *op) {
  jsink *s = sl_op_arg(op);
  jsink_inst *in = sl_op_data(op);
  if (!in)
    return;
  jsink_flush(op);
  pthread_mutex_lock(&s->lock);
  if (--s->opens == 0 && s->path && s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  pthread_mutex_unlock(&s->lock);
  free(in->buf);
  free(in);
  sl_op_set_data(op, NULL);
}

static const sl_operator_ops_t jsink_ops = {
    .kind = "jsonl_sink",
    .open = jsink_open,
    .process = jsink_process,
    .on_watermark = jsink_watermark,
    .on_end = jsink_flush,
    .close = jsink_close,
    .free_arg = jsink_free,
};

static int add_jsink(sl_stream_t *in, const char *uid, const char *path,
                     sl_line_format format) {
  if (!in)
    return SL_ERR_INVAL;
  jsink *s = calloc(1, sizeof(*s));
  if (!s || (path && !(s->path = strdup(path)))) {
    free(s);
    sl_job_build_error(sl_stream_job(in), SL_ERR_NOMEM, "sink: out of memory");
    return SL_ERR_NOMEM;
  }
  pthread_mutex_init(&s->lock, NULL);
  s->format = format;
  s->fd = path ? -1 : STDOUT_FILENO;
  return sl_op_add(&in, 1, uid, &jsink_ops, s, true)
             ? SL_OK
             : sl_job_build_err(sl_stream_job(in));
}

int sl_sink_jsonl(sl_stream_t *in, const char *uid, const char *path,
                  sl_line_format format) {
  if (in && (!path || !*path)) {
    sl_job_build_error(sl_stream_job(in), SL_ERR_INVAL,
                       "jsonl sink \"%s\": no path", uid ? uid : "");
    return SL_ERR_INVAL;
  }
  return add_jsink(in, uid, path, format);
}

int sl_sink_stdout(sl_stream_t *in, const char *uid, sl_line_format format) {
  return add_jsink(in, uid, NULL, format);
}
