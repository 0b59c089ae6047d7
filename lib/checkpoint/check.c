/* SPDX-License-Identifier: Apache-2.0 */
/* The checkpoint check shared by restore and sluice-ckpt (check.h):
 * _metadata parsed and validated field by field, the listed files, and
 * every worker file decoded to its last byte. Restore stops at the first
 * problem; the tool's verify collects them all. */
#include "checkpoint/check.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint/codec.h"
#include "checkpoint/files.h"
#include "checkpoint/layout.h"
#include "core/buf.h"
#include "core/fault.h"
#include "core/hash.h"
#include "core/util.h"
#include "state/backend.h"

/* Largest max.parallelism a job accepts (lib/core/conf.c). */
#define MAX_KEY_GROUPS 32768

typedef struct ctx {
  sl__ckpt_check *c;
  char *err;
  size_t errlen;
} ctx;

/* Whether to stop: a problem was found and nobody collects them. */
static bool stop(const ctx *x) {
  return x->c->n_problems && !x->c->problem;
}

__attribute__((format(printf, 3, 4))) static void bad(ctx *x, const char *file,
                                                      const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (!x->c->n_problems)
    sl__errf(x->err, x->errlen, "%s", msg);
  x->c->n_problems++;
  if (x->c->problem)
    x->c->problem(file, msg, x->c->opaque);
}

/* ---- _metadata ---------------------------------------------------------- */

/* Member key of obj (described as `where`) as an integer in [lo, hi].
 * Absent: false, a problem only when required. */
static bool get_int(ctx *x, json_t *obj, const char *where, const char *key,
                    bool required, json_int_t lo, json_int_t hi,
                    json_int_t *out) {
  json_t *v = json_object_get(obj, key);
  if (!v) {
    if (required)
      bad(x, "_metadata", "%s: no \"%s\"", where, key);
    return false;
  }
  if (!json_is_integer(v)) {
    bad(x, "_metadata", "%s: \"%s\" is not an integer", where, key);
    return false;
  }
  json_int_t i = json_integer_value(v);
  if (i < lo || i > hi) {
    bad(x, "_metadata", "%s: \"%s\" is %lld, outside [%lld, %lld]", where, key,
        (long long)i, (long long)lo, (long long)hi);
    return false;
  }
  *out = i;
  return true;
}

static bool get_str(ctx *x, json_t *obj, const char *where, const char *key,
                    bool required, const char **out) {
  json_t *v = json_object_get(obj, key);
  if (!v) {
    if (required)
      bad(x, "_metadata", "%s: no \"%s\"", where, key);
    return false;
  }
  if (!json_is_string(v)) {
    bad(x, "_metadata", "%s: \"%s\" is not a string", where, key);
    return false;
  }
  *out = json_string_value(v);
  return true;
}

static void opt_bool(ctx *x, json_t *obj, const char *where, const char *key) {
  json_t *v = json_object_get(obj, key);
  if (v && !json_is_boolean(v))
    bad(x, "_metadata", "%s: \"%s\" is not true or false", where, key);
}

static bool is_crc_hex(const char *s) {
  for (int i = 0; i < 8; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return s[8] == 0;
}

/* The id in a "chk-<id>" base name, 0 when the name has another form (a
 * copy being made, or a checkpoint kept under another name). */
static uint64_t dir_id(const char *path) {
  char *copy = strdup(path);
  if (!copy)
    return 0;
  size_t l = strlen(copy);
  while (l > 1 && copy[l - 1] == '/')
    copy[--l] = 0;
  const char *b = basename(copy);
  uint64_t id = 0;
  if (strncmp(b, "chk-", 4) == 0 && b[4] >= '0' && b[4] <= '9') {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(b + 4, &end, 10);
    id = *end || errno ? 0 : v;
  }
  free(copy);
  return id;
}

static json_t *listed(json_t *files, const char *rel) {
  size_t i;
  json_t *f;
  json_array_foreach(files, i, f) {
    const char *p = json_string_value(json_object_get(f, "path"));
    if (p && strcmp(p, rel) == 0)
      return f;
  }
  return NULL;
}

/* The "files" array: well-formed entries, no path twice. Sets m->files
 * when it is an array at all. */
static void parse_files(ctx *x, sl__ckpt_meta *m) {
  json_t *files = json_object_get(m->json, "files");
  if (!json_is_array(files)) {
    bad(x, "_metadata", "_metadata: %s",
        files ? "\"files\" is not an array" : "no \"files\"");
    return;
  }
  m->files = files;
  size_t i;
  json_t *f;
  json_array_foreach(files, i, f) {
    char where[64];
    snprintf(where, sizeof(where), "_metadata: files[%zu]", i);
    const char *path = NULL, *hex = NULL;
    json_int_t bytes;
    if (!json_is_object(f)) {
      bad(x, "_metadata", "%s is not an object", where);
    } else {
      get_int(x, f, where, "bytes", true, 0, INT64_MAX, &bytes);
      opt_bool(x, f, where, "shared");
      if (get_str(x, f, where, "crc32c", true, &hex) && !is_crc_hex(hex))
        bad(x, "_metadata", "%s: \"crc32c\" \"%s\" is not 8 hex digits", where,
            hex);
      if (get_str(x, f, where, "path", true, &path)) {
        if (!sl__ckpt_safe_rel(path))
          bad(x, "_metadata", "%s: \"%s\" is not a file inside the checkpoint",
              where, path);
        else if (listed(files, path) != f)
          bad(x, "_metadata", "%s: \"%s\" is listed twice", where, path);
      }
    }
    if (stop(x))
      return;
  }
}

/* The "workers" array against parallelism, max_parallelism and files:
 * worker i has index i, Flink's key-group range for i and a worker file
 * listed in files. Malformed entries stay !ok. */
static int parse_workers(ctx *x, sl__ckpt_meta *m, bool par_ok) {
  json_t *workers = json_object_get(m->json, "workers");
  if (!json_is_array(workers)) {
    bad(x, "_metadata", "_metadata: %s",
        workers ? "\"workers\" is not an array" : "no \"workers\"");
    return SL_OK;
  }
  size_t n = json_array_size(workers);
  if (par_ok && n != (size_t)m->par) {
    bad(x, "_metadata", "_metadata: parallelism is %d but it lists %zu workers",
        m->par, n);
    if (stop(x))
      return SL_OK;
  }
  m->workers = calloc(n + 1, sizeof(*m->workers));
  if (!m->workers)
    return SL_ERR_NOMEM;
  m->n_workers = (int)n;
  size_t i;
  json_t *wj;
  json_array_foreach(workers, i, wj) {
    sl__ckpt_worker *w = &m->workers[i];
    char where[64];
    snprintf(where, sizeof(where), "_metadata: workers[%zu]", i);
    int before = x->c->n_problems;
    json_int_t idx = -1, lo = -1, hi = -1;
    if (!json_is_object(wj)) {
      bad(x, "_metadata", "%s is not an object", where);
      if (stop(x))
        return SL_OK;
      continue;
    }
    get_int(x, wj, where, "index", true, 0, INT32_MAX, &idx);
    get_int(x, wj, where, "kg_lo", true, 0, MAX_KEY_GROUPS, &lo);
    get_int(x, wj, where, "kg_hi", true, 0, MAX_KEY_GROUPS, &hi);
    json_int_t ignored;
    get_int(x, wj, where, "state_entries", false, 0, INT64_MAX, &ignored);
    get_int(x, wj, where, "timers", false, 0, INT64_MAX, &ignored);
    if (get_str(x, wj, where, "file", true, &w->file)) {
      if (!sl__ckpt_safe_rel(w->file) || strchr(w->file, '/'))
        bad(x, "_metadata", "%s: \"file\" \"%s\" is not a file name", where,
            w->file);
      else if (m->files && !listed(m->files, w->file))
        bad(x, w->file,
            "%s is not listed in _metadata's files (its size and checksum "
            "are recorded nowhere)",
            w->file);
      for (size_t j = 0; j < i; j++)
        if (m->workers[j].file && strcmp(m->workers[j].file, w->file) == 0)
          bad(x, "_metadata", "%s: \"file\" \"%s\" is also workers[%zu]'s",
              where, w->file, j);
    }
    json_t *native = json_object_get(wj, "native");
    if (json_is_string(native)) {
      w->native = json_string_value(native);
      if (!sl__ckpt_safe_rel(w->native))
        bad(x, "_metadata",
            "%s: \"native\" \"%s\" is not a directory inside the checkpoint",
            where, w->native);
    } else if (native && !json_is_null(native)) {
      bad(x, "_metadata", "%s: \"native\" is not a string or null", where);
    }
    if (x->c->n_problems == before && idx != (json_int_t)i)
      bad(x, "_metadata", "%s: \"index\" is %lld", where, (long long)idx);
    if (x->c->n_problems == before && par_ok) {
      uint32_t elo, ehi;
      sl__kg_range((int)i, m->par, m->max_par, &elo, &ehi);
      if (lo != elo || hi != ehi)
        bad(x, "_metadata",
            "%s: key groups [%lld, %lld), expected [%u, %u) for worker %zu "
            "of %d with max_parallelism %u",
            where, (long long)lo, (long long)hi, elo, ehi, i, m->par,
            m->max_par);
    }
    if (x->c->n_problems == before && par_ok) {
      w->ok = true;
      w->index = (int)i;
      w->kg_lo = (uint32_t)lo;
      w->kg_hi = (uint32_t)hi;
    }
    if (stop(x))
      return SL_OK;
  }
  return SL_OK;
}

/* "operators": {uid, kind, keyed} per operator, for inspect. */
static void parse_operators(ctx *x, sl__ckpt_meta *m) {
  json_t *ops = json_object_get(m->json, "operators");
  if (!ops)
    return;
  if (!json_is_array(ops)) {
    bad(x, "_metadata", "_metadata: \"operators\" is not an array");
    return;
  }
  size_t i;
  json_t *o;
  json_array_foreach(ops, i, o) {
    char where[64];
    const char *s;
    snprintf(where, sizeof(where), "_metadata: operators[%zu]", i);
    if (!json_is_object(o)) {
      bad(x, "_metadata", "%s is not an object", where);
    } else {
      get_str(x, o, where, "uid", true, &s);
      get_str(x, o, where, "kind", false, &s);
      opt_bool(x, o, where, "keyed");
    }
    if (stop(x))
      return;
  }
}

static int parse_meta(ctx *x, const char *chk, sl__ckpt_meta *m) {
  memset(m, 0, sizeof(*m));
  m->job = "";
  m->backend = "";
  char path[4200];
  snprintf(path, sizeof(path), "%s/_metadata", chk);
  struct stat st;
  if (stat(path, &st) != 0) {
    sl__errf(x->err, x->errlen, "no _metadata (incomplete)");
    return SL_ERR_NOTFOUND;
  }
  json_error_t je;
  m->json = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  if (!m->json || !json_is_object(m->json)) {
    if (m->json)
      bad(x, "_metadata", "_metadata is not a JSON object");
    else
      bad(x, "_metadata", "_metadata is not valid JSON: %s (line %d)", je.text,
          je.line);
    json_decref(m->json);
    m->json = NULL;
    return SL_ERR_CORRUPT;
  }
  const char *where = "_metadata";
  json_int_t v;
  if (get_int(x, m->json, where, "format", true, INT64_MIN, INT64_MAX, &v)) {
    if (v < SL__CKPT_FORMAT_MIN || v > SL__CKPT_FORMAT)
      bad(x, "_metadata", "_metadata: unsupported checkpoint format %lld",
          (long long)v);
    else
      m->format = (int)v;
  }
  if (stop(x))
    return SL_ERR_CORRUPT;
  if (get_int(x, m->json, where, "id", true, 1, INT64_MAX, &v)) {
    m->id = (uint64_t)v;
    uint64_t want = dir_id(chk);
    if (want && want != m->id)
      bad(x, "_metadata",
          "_metadata is of checkpoint %" PRIu64 " but the directory is "
          "chk-%" PRIu64,
          m->id, want);
  }
  get_str(x, m->json, where, "job", false, &m->job);
  if (get_str(x, m->json, where, "backend", true, &m->backend) &&
      !m->backend[0])
    bad(x, "_metadata", "_metadata: \"backend\" is empty");
  if (get_int(x, m->json, where, "created_ms", false, 0, INT64_MAX, &v))
    m->created_ms = v;
  if (get_int(x, m->json, where, "duration_ms", false, 0, INT64_MAX, &v))
    m->duration_ms = v;
  if (get_int(x, m->json, where, "restarts", false, 0, INT64_MAX, &v))
    m->restarts = (uint64_t)v;
  const char *kgs = NULL;
  if (get_str(x, m->json, where, "key_groups", false, &kgs)) {
    if (strcmp(kgs, "murmur2") == 0)
      m->kg_murmur2 = true;
    else if (strcmp(kgs, "hash") != 0)
      bad(x, "_metadata", "_metadata: unknown \"key_groups\" \"%s\"", kgs);
  }
  get_int(x, m->json, where, "bytes", false, 0, INT64_MAX, &v);
  get_int(x, m->json, where, "bytes_new", false, 0, INT64_MAX, &v);
  bool kp = get_int(x, m->json, where, "max_parallelism", true, 1,
                    MAX_KEY_GROUPS, &v);
  m->max_par = kp ? (uint32_t)v : 0;
  bool pp = get_int(x, m->json, where, "parallelism", true, 1, INT32_MAX, &v);
  m->par = pp ? (int)v : 0;
  if (kp && pp && (uint32_t)m->par > m->max_par) {
    bad(x, "_metadata", "_metadata: parallelism %d is above max_parallelism %u",
        m->par, m->max_par);
    pp = false;
  }
  if (stop(x))
    return SL_ERR_CORRUPT;
  parse_operators(x, m);
  if (stop(x))
    return SL_ERR_CORRUPT;
  parse_files(x, m);
  if (stop(x))
    return SL_ERR_CORRUPT;
  if (parse_workers(x, m, kp && pp))
    return SL_ERR_NOMEM;
  return x->c->n_problems ? SL_ERR_CORRUPT : SL_OK;
}

void sl__ckpt_meta_free(sl__ckpt_meta *m) {
  json_decref(m->json);
  free(m->workers);
  memset(m, 0, sizeof(*m));
}

int sl__ckpt_meta_read(const char *chk, sl__ckpt_meta *m, char *err,
                       size_t errlen) {
  sl__ckpt_check c = {0};
  ctx x = {&c, err, errlen};
  int rc = parse_meta(&x, chk, m);
  if (rc)
    sl__ckpt_meta_free(m);
  return rc;
}

/* ---- Worker files ------------------------------------------------------- */

/* A section kept for restore (check.h, keep_small): its header and
 * payload. */
static int keep_section(sl_buf_t *b, uint32_t type, uint32_t kg,
                        const void *payload, size_t len) {
  int rc = sl__buf_u32(b, type);
  if (!rc)
    rc = sl__buf_u32(b, kg);
  if (!rc)
    rc = sl__buf_u64(b, len);
  return rc ? rc : sl_buf_append(b, payload, len);
}

/* A timer section kept as its uid alone (restore checks the uids; it
 * reads the timers from the file). */
static int keep_uid(sl_buf_t *b, uint32_t kg, const void *uid, size_t len) {
  int rc = sl__buf_u32(b, SL__SEC_TIMERS);
  if (!rc)
    rc = sl__buf_u32(b, kg);
  if (!rc)
    rc = sl__buf_u64(b, 4 + (uint64_t)len);
  return rc ? rc : sl__buf_bytes(b, uid, len);
}

/* How check_sections reads one file: a worker file (seg false) or a
 * segment file of incremental keyed state (seg true). */
typedef struct walk {
  uint32_t kg_lo, kg_hi;
  bool seg;
  /* With keep, the sections other than keyed-state entries and timers
   * are appended to it, and each timer section as its uid alone. */
  sl_buf_t *keep;
  /* Segment files: where each section is, recorded on the way. */
  sl__seg *index;
  /* Worker files: the first chain of segments that does not match the
   * segments read (c->segs) is described here, reported by the caller
   * when nothing else is wrong. */
  char chain[256];
  /* The first problem found, which ends the walk (reported by the
   * caller, unless the file's checksum explains it). */
  char problem[1024];
} walk;

/* What is wrong with entry e of key group kg (why left empty when
 * nothing is): a state id not in the states section, or a key the writer
 * would have put in another key group. */
static void entry_why(const sl__snap_entry *e, uint32_t n_states, uint32_t kg,
                      uint32_t max_par, int format, bool murmur2, char *why,
                      size_t len) {
  if (e->state >= n_states)
    snprintf(why, len, "unknown state id %u", e->state);
  else if ((murmur2 ? sl__murmur2_partition(e->key, e->key_len, max_par)
                    : sl__key_group(sl__hash64_of(format, e->key, e->key_len),
                                    max_par)) != kg)
    snprintf(why, len, "a key that belongs to another key group");
}

/* Walks every section of one worker or segment file, streaming (codec.h);
 * the first malformed item ends the walk (what follows cannot be located
 * reliably) and is described in wk->problem. Counts the entries of
 * worker files (a segment's records count as the chains that use them
 * give them: sluice-ckpt verify) and the timers. */
static void check_sections(ctx *x, const char *file, sl__snap_stream *st,
                           walk *wk, uint32_t max_par, int format, bool murmur2,
                           uint64_t *entries, uint64_t *timers) {
  sl__rd p = {0}, whole = {0};
  uint32_t kg_lo = wk->kg_lo, kg_hi = wk->kg_hi;
  bool seg = wk->seg;
  sl_buf_t *keep = wk->keep;
  uint32_t type = 0, kg = 0, n_states = 0;
  uint64_t len = 0;
  bool have_states = false;
  int sec = 0, rc;
  while ((rc = sl__snap_stream_next(st, &type, &kg, &len)) == 1) {
    sec++;
    const char *what = NULL;
    char why[256] = "";
    if (wk->index &&
        sl__seg_note(wk->index, type, kg, sl__snap_stream_offset(st), len)) {
      snprintf(wk->problem, sizeof(wk->problem), "%s: out of memory", file);
      return;
    }
    bool small = type != SL__SEC_ENTRIES && type != SL__SEC_TIMERS &&
                 type != SL__SEC_DELTA;
    bool refused = type == SL__SEC_DELTA ? !seg
                                         : seg && type != SL__SEC_STATES &&
                                               type != SL__SEC_ENTRIES;
    if (small && !refused) {
      if ((rc = sl__snap_stream_payload(st, &p)) < 0) {
        if (rc == SL_ERR_IO)
          snprintf(wk->problem, sizeof(wk->problem), "%s cannot be read: %s",
                   file, strerror(errno));
        else
          snprintf(wk->problem, sizeof(wk->problem), "%s: out of memory", file);
        return;
      }
      whole = p; /* p is read on below */
    }
    if (type == SL__SEC_STATES) {
      sl__snap_state s;
      uint32_t n = 0, got = 0;
      what = "state names";
      if (have_states)
        snprintf(why, sizeof(why), "a second state-name section");
      else if (sl__snap_states_count(&p, &n))
        snprintf(why, sizeof(why), "bad state count");
      while (!why[0] && (rc = sl__snap_state_next(&p, &s)) == 1) {
        if (s.id >= n || s.type > SL__BT_MAP)
          snprintf(why, sizeof(why), "state id %u or type %u out of range",
                   s.id, s.type);
        got++;
      }
      if (!why[0] && (rc < 0 || got != n))
        snprintf(why, sizeof(why), "%u of %u state names readable", got, n);
      have_states = true;
      n_states = n;
    } else if (seg && type != SL__SEC_ENTRIES && type != SL__SEC_DELTA) {
      snprintf(why, sizeof(why), "section type %u in a segment file", type);
    } else if (type == SL__SEC_DELTA && !seg) {
      snprintf(why, sizeof(why), "keyed state changes in a worker file");
    } else if (type == SL__SEC_DELTA) {
      sl__snap_entry e;
      bool clear;
      what = "keyed state changes";
      if (!have_states)
        snprintf(why, sizeof(why), "changes before the state names");
      else if (kg < kg_lo || kg >= kg_hi)
        snprintf(why, sizeof(why), "key group %u outside the file's [%u, %u)",
                 kg, kg_lo, kg_hi);
      while (!why[0] && (rc = sl__snap_stream_delta(st, &e, &clear)) == 1)
        entry_why(&e, n_states, kg, max_par, format, murmur2, why, sizeof(why));
      if (!why[0] && rc < 0)
        snprintf(why, sizeof(why), "%s",
                 rc == SL_ERR_IO ? strerror(errno) : "a record is cut short");
    } else if (type == SL__SEC_CHAIN) {
      uint32_t n = 0, got = 0;
      const void *name;
      size_t nl;
      what = "segment chain";
      if (kg < kg_lo || kg >= kg_hi)
        snprintf(why, sizeof(why), "key group %u outside the worker's [%u, %u)",
                 kg, kg_lo, kg_hi);
      else if (sl__chain_count(&p, &n))
        snprintf(why, sizeof(why), "bad count");
      while (!why[0] && (rc = sl__chain_next(&p, &name, &nl)) == 1) {
        if (!sl__seg_name_ok(name, nl))
          snprintf(why, sizeof(why), "\"%.*s\" is not a segment file name",
                   (int)(nl > 64 ? 64 : nl), (const char *)name);
        got++;
      }
      if (!why[0] && (rc < 0 || got != n || !n))
        snprintf(why, sizeof(why), "%u of %u names readable", got, n);
      if (!why[0] && !wk->chain[0])
        (void)sl__chain_check(whole, x->c->segs, x->c->n_segs, kg, wk->chain,
                              sizeof(wk->chain));
    } else if (type == SL__SEC_ENTRIES) {
      sl__snap_entry e;
      what = "keyed state entries";
      if (!have_states)
        snprintf(why, sizeof(why), "entries before the state names");
      else if (kg < kg_lo || kg >= kg_hi)
        snprintf(why, sizeof(why), "key group %u outside the worker's [%u, %u)",
                 kg, kg_lo, kg_hi);
      while (!why[0] && (rc = sl__snap_stream_entry(st, &e)) == 1) {
        entry_why(&e, n_states, kg, max_par, format, murmur2, why, sizeof(why));
        *entries += !seg;
      }
      if (!why[0] && rc < 0)
        snprintf(why, sizeof(why), "%s",
                 rc == SL_ERR_IO ? strerror(errno) : "an entry is cut short");
    } else if (type == SL__SEC_TIMERS) {
      sl__snap_timer t;
      const void *uid = NULL;
      size_t ul = 0;
      what = "timers";
      if ((rc = sl__snap_stream_bytes(st, &uid, &ul)) != 1)
        snprintf(why, sizeof(why), "%s",
                 rc == SL_ERR_IO ? strerror(errno) : "no operator uid");
      else if (keep && keep_uid(keep, kg, uid, ul))
        snprintf(why, sizeof(why), "out of memory");
      while (!why[0] && (rc = sl__snap_stream_timer(st, &t)) == 1) {
        if (t.kg < kg_lo || t.kg >= kg_hi)
          snprintf(why, sizeof(why), "timer of key group %u outside [%u, %u)",
                   t.kg, kg_lo, kg_hi);
        (*timers)++;
      }
      if (!why[0] && rc < 0)
        snprintf(why, sizeof(why), "%s",
                 rc == SL_ERR_IO
                     ? strerror(errno)
                     : "a timer is cut short or of an unknown time domain");
    } else if (type == SL__SEC_OPSTATE || type == SL__SEC_SOURCE) {
      const void *u, *b;
      size_t ul, bl;
      uint32_t sub;
      what = type == SL__SEC_SOURCE ? "source position" : "operator state";
      if (sl__snap_blob(p, type, &u, &ul, &sub, &b, &bl))
        snprintf(why, sizeof(why), "malformed");
    } else if (type == SL__SEC_BCAST) {
      sl__snap_bentry e;
      const void *uid = NULL;
      size_t ul = 0;
      what = "broadcast state";
      if (!sl__rd_bytes(&p, &uid, &ul))
        snprintf(why, sizeof(why), "no operator uid");
      while (!why[0] && (rc = sl__snap_bcast_next(&p, &e)) == 1)
        ;
      if (!why[0] && rc < 0)
        snprintf(why, sizeof(why), "an entry is cut short");
    } else if (type == SL__SEC_TASKWM) {
      const void *uid = NULL;
      size_t ul = 0;
      uint32_t tkg;
      int64_t twm;
      what = "task watermarks";
      if (!sl__rd_bytes(&p, &uid, &ul))
        snprintf(why, sizeof(why), "no operator uid");
      while (!why[0] && (rc = sl__snap_taskwm_next(&p, &tkg, &twm)) == 1)
        if (tkg < kg_lo || tkg >= kg_hi)
          snprintf(why, sizeof(why), "task %u outside [%u, %u)", tkg, kg_lo,
                   kg_hi);
      if (!why[0] && rc < 0)
        snprintf(why, sizeof(why), "a task's watermark is cut short");
    } else if (type == SL__SEC_LAYOUT) {
      sl__layout_rec r;
      uint32_t n = 0, got = 0;
      what = "state layouts";
      if (sl__layout_count(&p, &n))
        snprintf(why, sizeof(why), "bad version or count");
      while (!why[0] && (rc = sl__layout_next(&p, &r)) == 1)
        got++;
      if (!why[0] && (rc < 0 || got != n))
        snprintf(why, sizeof(why), "%u of %u layouts readable", got, n);
    } else {
      snprintf(why, sizeof(why), "unknown section type %u", type);
    }
    if (!why[0] && small && keep &&
        keep_section(keep, type, kg, whole.p, (size_t)(whole.end - whole.p)))
      snprintf(why, sizeof(why), "out of memory");
    if (why[0]) {
      snprintf(wk->problem, sizeof(wk->problem), "%s: section %d (%s): %s",
               file, sec, what ? what : "?", why);
      return;
    }
  }
  if (rc == SL_ERR_IO)
    snprintf(wk->problem, sizeof(wk->problem), "%s cannot be read: %s", file,
             strerror(errno));
  else if (rc < 0)
    snprintf(wk->problem, sizeof(wk->problem),
             "%s: section %d is cut short or has a bad length", file, sec + 1);
}

/* The CRC32C _metadata records for rel (its "files" entry), false when
 * it lists none. */
static bool listed_crc(const sl__ckpt_meta *m, const char *rel, uint32_t *crc) {
  json_t *f = m->files ? listed(m->files, rel) : NULL;
  const char *hex = json_string_value(json_object_get(f, "crc32c"));
  if (!hex || !is_crc_hex(hex))
    return false;
  *crc = (uint32_t)strtoul(hex, NULL, 16);
  return true;
}

/* After a walk of file (rel) over st, read with SL__STREAM_CRC_LAST:
 * its checksums, then the walk's problem. A file whose checksum is wrong
 * is reported as damaged (as the files check would), and what the walk
 * found in it is not reported: it is what the damage did. */
static void finish_file(ctx *x, const sl__ckpt_meta *m, const char *rel,
                        sl__snap_stream *st, const walk *wk) {
  uint32_t got = 0, want = 0;
  char why[256];
  int rc = sl__snap_stream_finish(st, &got, why, sizeof(why));
  x->c->bytes_read += sl__snap_stream_read_bytes(st);
  if (rc == SL_ERR_IO) {
    bad(x, rel, "%s cannot be read: %s", rel, why);
    return;
  }
  bool damaged = listed_crc(m, rel, &want) && got != want;
  if (damaged) {
    json_t *f = listed(m->files, rel);
    bad(x, rel,
        "%s is damaged (%" PRIu64 " bytes, crc32c %08x; expected %lld bytes, "
        "crc32c %s)",
        rel, (uint64_t)json_integer_value(json_object_get(f, "bytes")), got,
        (long long)json_integer_value(json_object_get(f, "bytes")),
        json_string_value(json_object_get(f, "crc32c")));
  }
  if (rc)
    bad(x, rel, "%s: %s", rel, why);
  else if (!damaged && wk->problem[0])
    bad(x, rel, "%s", wk->problem);
}

/* Worker w's file, read once as a stream: its sections decoded, its
 * checksums (trailer and _metadata) computed on the way, its header
 * against _metadata. With keep, its image goes to *im (read whole
 * besides); with keep_small, once it passed, the sections restore reads
 * whole (check.h). Freed by the caller. */
static void check_worker(ctx *x, const char *chk, const sl__ckpt_meta *m,
                         const sl__ckpt_worker *w, sl__ckpt_image *im,
                         bool file_listed_ok) {
  char fp[4200], why[256];
  snprintf(fp, sizeof(fp), "%s/%s", chk, w->file);
  sl__snap_stream *st = NULL;
  int fault = sl__fault_hit("restore.read");
  if (!fault && x->c->keep && !sl__read_file(fp, &im->data, &im->len)) {
    /* The tool's image, its body set when its trailer is right (what
     * it shows of a damaged file); the verdict is the stream's. */
    sl__snap_head h;
    (void)sl__snap_check(im->data, im->len, &h, &im->body, why, sizeof(why));
  }
  int rc = fault ? SL_ERR_IO
                 : sl__snap_stream_open(&st, fp, NULL, 0, SL__STREAM_CRC_LAST,
                                        &im->head, why, sizeof(why));
  if (rc == SL_ERR_IO) {
    if (fault)
      errno = fault;
    if (!file_listed_ok)
      return; /* the file check said why */
    bad(x, w->file, "%s cannot be read: %s", w->file, strerror(errno));
    return;
  }
  if (rc) {
    bad(x, w->file, "%s: %s", w->file, why);
    return;
  }
  sl_buf_t keep;
  sl__buf_init(&keep);
  bool small = x->c->keep_small && !x->c->keep;
  walk wk = {.kg_lo = w->kg_lo,
             .kg_hi = w->kg_hi,
             .seg = false,
             .keep = small ? &keep : NULL};
  const sl__snap_head *h = &im->head;
  if (h->worker != (uint32_t)w->index || h->id != m->id ||
      h->kg_lo != w->kg_lo || h->kg_hi != w->kg_hi || h->max_par != m->max_par)
    snprintf(wk.problem, sizeof(wk.problem),
             "%s: its header (worker %u, checkpoint %" PRIu64
             ", key groups [%u, %u) of %u) does not match _metadata",
             w->file, h->worker, h->id, h->kg_lo, h->kg_hi, h->max_par);
  else if (small && sl__buf_reserve(&keep, SL__SNAP_HEADER))
    snprintf(wk.problem, sizeof(wk.problem), "%s: out of memory", w->file);
  keep.len = small && keep.data ? SL__SNAP_HEADER : 0; /* in im->head */
  int before = x->c->n_problems;
  if (!wk.problem[0])
    check_sections(x, w->file, st, &wk, m->max_par, m->format, m->kg_murmur2,
                   &x->c->entries, &x->c->timers);
  finish_file(x, m, w->file, st, &wk);
  sl__snap_stream_close(st);
  /* Each key group's chain against the segments read: the first broken
   * one is reported (a missing segment would break them all). */
  if (x->c->n_problems == before && wk.chain[0])
    bad(x, w->file, "%s: %s", w->file, wk.chain);
  if (x->c->n_problems != before) {
    sl__buf_free(&keep);
    return;
  }
  if (small) {
    memset(keep.data, 0, SL__SNAP_HEADER);
    im->data = keep.data;
    im->len = keep.len;
    im->body =
        (sl__rd){keep.data + SL__SNAP_HEADER, keep.data + keep.len, false};
  }
}

/* Every segment file _metadata lists, read once as a stream as a worker
 * file is: its checksums, its header, its sections. Where its sections
 * are is kept in c->segs, for the chains' check and for restore, which
 * reads each chain from the files (incr.h). */
static int check_segments(ctx *x, const char *chk, const sl__ckpt_meta *m) {
  size_t i;
  json_t *fj;
  json_array_foreach(m->files, i, fj) {
    const char *rel = json_string_value(json_object_get(fj, "path"));
    if (!rel || !sl__seg_name_ok(rel, strlen(rel)))
      continue;
    char fp[4200], why[256];
    snprintf(fp, sizeof(fp), "%s/%s", chk, rel);
    sl__seg sg = {0};
    struct stat sb;
    if (stat(fp, &sb) != 0)
      continue; /* missing: the file check said so */
    sl__snap_stream *ss;
    int rc = sl__snap_stream_open(&ss, fp, NULL, 0, SL__STREAM_CRC_LAST,
                                  &sg.head, why, sizeof(why));
    if (rc == SL_ERR_NOMEM)
      return rc;
    int before = x->c->n_problems;
    if (rc == SL_ERR_IO) {
      bad(x, rel, "%s cannot be read: %s", rel, why);
    } else if (rc) {
      bad(x, rel, "%s: %s", rel, why);
    } else {
      walk wk = {.kg_lo = sg.head.kg_lo,
                 .kg_hi = sg.head.kg_hi,
                 .seg = true,
                 .index = &sg};
      if (sg.head.max_par != m->max_par || sg.head.id > m->id ||
          sg.head.kg_lo >= sg.head.kg_hi || sg.head.kg_hi > m->max_par)
        snprintf(wk.problem, sizeof(wk.problem),
                 "%s: its header (checkpoint %" PRIu64 ", key groups [%u, "
                 "%u) of %u) does not fit checkpoint %" PRIu64
                 " of max_parallelism %u",
                 rel, sg.head.id, sg.head.kg_lo, sg.head.kg_hi, sg.head.max_par,
                 m->id, m->max_par);
      else
        check_sections(x, rel, ss, &wk, m->max_par, m->format, m->kg_murmur2,
                       &x->c->entries, &x->c->timers);
      finish_file(x, m, rel, ss, &wk);
      sl__snap_stream_close(ss);
    }
    if (x->c->n_problems == before) {
      sl__seg *a =
          realloc(x->c->segs, (x->c->n_segs + 1) * sizeof(*x->c->segs));
      if (a)
        x->c->segs = a;
      if (!a || !(sg.name = strdup(rel)) || !(sg.path = strdup(fp))) {
        sl__seg_free(&sg);
        return SL_ERR_NOMEM;
      }
      a[x->c->n_segs++] = sg;
      continue;
    }
    sl__seg_free(&sg);
    if (stop(x))
      return SL_ERR_CORRUPT;
  }
  return 0;
}

/* Whether rel is a file whose contents a stream pass reads through (a
 * segment file, or the file of a well-formed worker entry): its CRC32C is
 * checked there, in the same pass that decodes it. */
static bool read_through(const sl__ckpt_meta *m, const char *rel) {
  if (!m->workers)
    return false; /* no stream pass */
  if (sl__seg_name_ok(rel, strlen(rel)))
    return true;
  for (int w = 0; m->workers && w < m->n_workers; w++)
    if (m->workers[w].ok && strcmp(m->workers[w].file, rel) == 0)
      return true;
  return false;
}

int sl__ckpt_check_run(const char *chk, sl__ckpt_check *c, char *err,
                       size_t errlen) {
  c->n_problems = 0;
  c->images = NULL;
  c->segs = NULL;
  c->n_segs = 0;
  c->n_files = c->bytes = c->entries = c->timers = c->bytes_read = 0;
  ctx x = {c, err, errlen};
  int rc = parse_meta(&x, chk, &c->meta);
  if (rc == SL_ERR_NOTFOUND || rc == SL_ERR_NOMEM || !c->meta.json || stop(&x))
    return rc;
  sl__ckpt_meta *m = &c->meta;
  /* Every listed file: size, and checksum unless quick. */
  size_t i;
  json_t *fj;
  json_array_foreach(m->files, i, fj) {
    const char *rel = json_string_value(json_object_get(fj, "path"));
    char why[1024];
    uint64_t bytes = (uint64_t)json_integer_value(json_object_get(fj, "bytes"));
    c->n_files++;
    c->bytes += bytes;
    bool full = !c->quick && !(rel && read_through(m, rel));
    if (full)
      c->bytes_read += bytes; /* read once if it has them */
    int bad_file = sl__ckpt_file_check(chk, fj, full, why, sizeof(why));
    if (bad_file && !full && !c->quick) /* its size is wrong: say how */
      bad_file = sl__ckpt_file_check(chk, fj, true, why, sizeof(why));
    if (bad_file) {
      bad(&x, rel ? rel : "_metadata", "%s", why);
      if (stop(&x))
        return SL_ERR_CORRUPT;
    }
  }
  if (c->quick || !m->workers)
    return c->n_problems ? SL_ERR_CORRUPT : SL_OK;
  if ((rc = check_segments(&x, chk, m)))
    return rc;
  c->images = calloc((size_t)m->n_workers + 1, sizeof(*c->images));
  if (!c->images)
    return SL_ERR_NOMEM;
  for (int w = 0; w < m->n_workers; w++) {
    const sl__ckpt_worker *mw = &m->workers[w];
    if (!mw->ok)
      continue;
    json_t *entry = listed(m->files, mw->file);
    char why[1024];
    bool ok = entry &&
              sl__ckpt_file_check(chk, entry, false, why, sizeof(why)) == SL_OK;
    check_worker(&x, chk, m, mw, &c->images[w], !entry || ok);
    if (!c->keep && !c->keep_small) {
      free(c->images[w].data);
      memset(&c->images[w], 0, sizeof(c->images[w]));
    }
    if (stop(&x))
      return SL_ERR_CORRUPT;
  }
  return c->n_problems ? SL_ERR_CORRUPT : SL_OK;
}

void sl__ckpt_check_free(sl__ckpt_check *c) {
  for (int i = 0; c->images && i < c->meta.n_workers; i++)
    free(c->images[i].data);
  free(c->images);
  c->images = NULL;
  sl__segs_free(c->segs, c->n_segs);
  c->segs = NULL;
  c->n_segs = 0;
  sl__ckpt_meta_free(&c->meta);
}
