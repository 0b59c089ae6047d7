/* SPDX-License-Identifier: Apache-2.0 */
/* Opening one checkpoint for reading, and `verify`: every listed file's
 * size and CRC32C (files.c, as restore checks them), then what restore
 * would only find out while loading: each .snap file's header against
 * _metadata and its sections decoded to the last byte. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/hash.h"
#include "time/timers.h"
#include "tools/sluice-ckpt/tool.h"

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* The id in a "chk-<id>" base name, 0 when the name has another form. */
static uint64_t dir_id(const char *path) {
  char *copy = strdup(path);
  if (!copy)
    return 0;
  size_t l = strlen(copy);
  while (l > 1 && copy[l - 1] == '/')
    copy[--l] = 0;
  const char *b = basename(copy);
  uint64_t id = 0;
  if (strncmp(b, "chk-", 4) == 0 && b[4]) {
    char *end;
    unsigned long long v = strtoull(b + 4, &end, 10);
    id = *end ? 0 : v;
  }
  free(copy);
  return id;
}

/* Whether dir is a directory; TOOL_USAGE with a message when not. */
static int need_dir(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    tool_err("%s: %s", path, strerror(errno));
    return TOOL_USAGE;
  }
  if (!S_ISDIR(st.st_mode)) {
    tool_err("%s is not a directory", path);
    return TOOL_USAGE;
  }
  return TOOL_OK;
}

/* Whether a directory without _metadata still looks like a checkpoint
 * (its name, or worker files in it): then it is incomplete, not a wrong
 * path. */
static bool looks_like_checkpoint(const char *path) {
  if (dir_id(path))
    return true;
  DIR *d = opendir(path);
  if (!d)
    return false;
  struct dirent *e;
  bool found = false;
  while (!found && (e = readdir(d))) {
    size_t n = strlen(e->d_name);
    found =
        e->d_name[0] == 'w' && n > 5 && strcmp(e->d_name + n - 5, ".snap") == 0;
  }
  closedir(d);
  return found;
}

/* ---- Opening for reading ------------------------------------------------ */

void tool_close(tool_ckpt *ck) {
  for (int i = 0; i < ck->n_w; i++)
    free(ck->w[i].data);
  free(ck->w);
  free(ck->path);
  json_decref(ck->meta);
  memset(ck, 0, sizeof(*ck));
}

int tool_open(const char *chk, tool_ckpt *ck) {
  memset(ck, 0, sizeof(*ck));
  int rc = need_dir(chk);
  if (rc)
    return rc;
  char err[1024];
  int r = sl__ckpt_meta_read(chk, &ck->meta, err, sizeof(err));
  if (r == SL_ERR_NOTFOUND && !looks_like_checkpoint(chk)) {
    tool_err("%s is not a checkpoint directory (no _metadata)", chk);
    return TOOL_USAGE;
  }
  if (r) {
    tool_err("%s: %s", chk, err);
    return TOOL_DAMAGED;
  }
  ck->path = strdup(chk);
  json_int_t id = 0, par = 0, max_par = 0;
  json_t *workers = NULL;
  ck->job = "";
  if (!ck->path ||
      json_unpack(ck->meta, "{s:I,s:I,s:I,s:s,s?s,s:o}", "id", &id,
                  "parallelism", &par, "max_parallelism", &max_par, "backend",
                  &ck->backend, "job", &ck->job, "workers", &workers)) {
    tool_err("%s: _metadata lacks parallelism", chk);
    tool_close(ck);
    return TOOL_DAMAGED;
  }
  ck->id = (uint64_t)id;
  ck->par = (int)par;
  ck->max_par = (uint32_t)max_par;
  char mark[4200];
  snprintf(mark, sizeof(mark), "%s/_COMMITTED", chk);
  ck->committed = exists(mark);
  ck->w = calloc(json_array_size(workers) + 1, sizeof(*ck->w));
  if (!ck->w) {
    tool_err("out of memory");
    tool_close(ck);
    return TOOL_USAGE;
  }
  size_t i;
  json_t *wj;
  json_array_foreach(workers, i, wj) {
    tool_worker *w = &ck->w[ck->n_w++];
    json_int_t idx = 0, lo = 0, hi = 0;
    json_t *native = json_object_get(wj, "native");
    if (json_unpack(wj, "{s:I,s:I,s:I,s:s}", "index", &idx, "kg_lo", &lo,
                    "kg_hi", &hi, "file", &w->file)) {
      tool_err("%s: _metadata has a malformed worker entry", chk);
      tool_close(ck);
      return TOOL_DAMAGED;
    }
    w->index = (int)idx;
    w->kg_lo = (uint32_t)lo;
    w->kg_hi = (uint32_t)hi;
    w->native = json_is_string(native) ? json_string_value(native) : NULL;
    char fp[4200];
    snprintf(fp, sizeof(fp), "%s/%s", chk, w->file);
    if (sl__ckpt_read_file(fp, &w->data, &w->len)) {
      tool_err("%s: cannot read %s: %s", chk, w->file, strerror(errno));
      tool_close(ck);
      return TOOL_DAMAGED;
    }
    if (sl__snap_check(w->data, w->len, &w->head, &w->body, err, sizeof(err))) {
      tool_err("%s: %s is damaged: %s (run sluice-ckpt verify)", chk, w->file,
               err);
      tool_close(ck);
      return TOOL_DAMAGED;
    }
    /* Readers index arrays by key group: the ranges must be sane. */
    if (w->head.kg_lo != w->kg_lo || w->head.kg_hi != w->kg_hi ||
        w->kg_lo > w->kg_hi || w->kg_hi > ck->max_par ||
        w->head.max_par != ck->max_par) {
      tool_err("%s: %s and _metadata disagree on its key groups (run "
               "sluice-ckpt verify)",
               chk, w->file);
      tool_close(ck);
      return TOOL_DAMAGED;
    }
  }
  return TOOL_OK;
}

/* ---- verify ------------------------------------------------------------- */

typedef struct report {
  json_t *problems, *notes;
} report;

__attribute__((format(printf, 3, 4))) static void
problem(report *r, const char *file, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  json_array_append_new(r->problems,
                        json_pack("{s:s,s:s}", "file", file, "error", msg));
}

/* Walks every section of one worker file; the first malformed item ends
 * the walk (what follows cannot be located reliably). */
static void check_sections(report *r, const char *file, const tool_worker *w,
                           uint32_t max_par, uint64_t *entries,
                           uint64_t *timers) {
  sl__rd body = w->body, p;
  uint32_t type, kg, n_states = 0;
  bool have_states = false;
  int sec = 0, rc;
  while ((rc = sl__snap_next(&body, &type, &kg, &p)) == 1) {
    sec++;
    const char *what = NULL;
    char why[256] = "";
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
    } else if (type == SL__SEC_ENTRIES) {
      sl__snap_entry e;
      what = "keyed state entries";
      if (!have_states)
        snprintf(why, sizeof(why), "entries before the state names");
      else if (kg < w->kg_lo || kg >= w->kg_hi)
        snprintf(why, sizeof(why), "key group %u outside the worker's [%u, %u)",
                 kg, w->kg_lo, w->kg_hi);
      while (!why[0] && (rc = sl__snap_entry_next(&p, &e)) == 1) {
        if (e.state >= n_states)
          snprintf(why, sizeof(why), "unknown state id %u", e.state);
        else if (sl__key_group(sl__hash64(e.key, e.key_len), max_par) != kg)
          snprintf(why, sizeof(why), "a key that belongs to another key group");
        (*entries)++;
      }
      if (!why[0] && rc < 0)
        snprintf(why, sizeof(why), "an entry is cut short");
    } else if (type == SL__SEC_TIMERS) {
      sl__snap_timer t;
      const void *uid;
      size_t ul;
      what = "timers";
      if (!sl__rd_bytes(&p, &uid, &ul))
        snprintf(why, sizeof(why), "no operator uid");
      while (!why[0] && (rc = sl__snap_timer_next(&p, &t)) == 1) {
        if (t.kg < w->kg_lo || t.kg >= w->kg_hi)
          snprintf(why, sizeof(why), "timer of key group %u outside [%u, %u)",
                   t.kg, w->kg_lo, w->kg_hi);
        else if (t.domain >= SL__TIMER_DOMAINS)
          snprintf(why, sizeof(why), "unknown time domain %u", t.domain);
        (*timers)++;
      }
      if (!why[0] && rc < 0)
        snprintf(why, sizeof(why), "a timer is cut short");
    } else if (type == SL__SEC_OPSTATE || type == SL__SEC_SOURCE) {
      const void *u, *b;
      size_t ul, bl;
      uint32_t sub;
      what = type == SL__SEC_SOURCE ? "source position" : "operator state";
      if (sl__snap_blob(p, type, &u, &ul, &sub, &b, &bl))
        snprintf(why, sizeof(why), "malformed");
    } else {
      snprintf(why, sizeof(why), "unknown section type %u", type);
    }
    if (why[0]) {
      problem(r, file, "%s: section %d (%s): %s", file, sec, what ? what : "?",
              why);
      return;
    }
  }
  if (rc < 0)
    problem(r, file, "%s: section %d is cut short or has a bad length", file,
            sec + 1);
}

static int count_entry(uint32_t state, const void *key, size_t key_len,
                       const void *ns, size_t ns_len, const void *mk,
                       size_t mk_len, const void *val, size_t len,
                       void *opaque) {
  (void)state, (void)key, (void)key_len, (void)ns, (void)ns_len, (void)mk;
  (void)mk_len, (void)val, (void)len;
  (*(uint64_t *)opaque)++;
  return 0;
}

/* A native state directory whose files all have their checksums: the
 * backend must also open it and read every key group of the worker. */
static void check_native(report *r, const char *chk, const char *backend,
                         const tool_worker *w, uint64_t *entries) {
  char err[512] = "";
  bool missing;
  sl__backend *be =
      tool_native_open(chk, backend, w, &missing, err, sizeof(err));
  if (missing) {
    char msg[700];
    snprintf(msg, sizeof(msg),
             "%s: files checked, contents not read (this build has no "
             "\"%s\" backend)",
             w->native, backend);
    json_array_append_new(r->notes, json_string(msg));
    return;
  }
  if (!be) {
    problem(r, w->native, "%s: the %s backend cannot open it: %s", w->native,
            backend, err);
    return;
  }
  int rc = 0;
  for (uint32_t g = w->kg_lo; !rc && g < w->kg_hi; g++)
    rc = be->ops->kg_scan(be, g, count_entry, entries);
  be->ops->close(be);
  if (rc)
    problem(r, w->native, "%s: reading its key groups failed: %s", w->native,
            sl_strerror(rc));
}

/* Files in dir (relative to chk) that _metadata does not list. */
static void unlisted(report *r, const char *chk, const char *sub,
                     json_t *files) {
  char dir[4200];
  snprintf(dir, sizeof(dir), "%s%s%s", chk, sub ? "/" : "", sub ? sub : "");
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    char rel[1024];
    snprintf(rel, sizeof(rel), "%s%s%s", sub ? sub : "", sub ? "/" : "",
             e->d_name);
    if (!sub &&
        (strcmp(rel, "_metadata") == 0 || strcmp(rel, "_COMMITTED") == 0))
      continue;
    bool listed = false, prefix = false;
    size_t i, rl = strlen(rel);
    json_t *fj;
    json_array_foreach(files, i, fj) {
      const char *p = json_string_value(json_object_get(fj, "path"));
      if (!p)
        continue;
      listed |= strcmp(p, rel) == 0;
      prefix |= strncmp(p, rel, rl) == 0 && p[rl] == '/';
    }
    if (!listed && !prefix) {
      char msg[1200];
      snprintf(msg, sizeof(msg),
               "%s is not listed in _metadata (ignored by "
               "restore)",
               rel);
      json_array_append_new(r->notes, json_string(msg));
    }
  }
  closedir(d);
}

int tool_verify_report(const char *chk, json_t **out) {
  *out = NULL;
  int rc = need_dir(chk);
  if (rc)
    return rc;
  report r = {json_array(), json_array()};
  json_t *rep = json_pack("{s:s}", "path", chk);
  const char *status = "valid";
  uint64_t n_files = 0, bytes = 0, entries = 0, timers = 0;
  char err[1024];
  json_t *meta = NULL;
  int m = sl__ckpt_meta_read(chk, &meta, err, sizeof(err));
  if (m == SL_ERR_NOTFOUND && !looks_like_checkpoint(chk)) {
    tool_err("%s is not a checkpoint directory (no _metadata)", chk);
    json_decref(rep);
    json_decref(r.problems);
    json_decref(r.notes);
    return TOOL_USAGE;
  }
  if (m == SL_ERR_NOTFOUND) {
    status = "incomplete";
    problem(&r, "_metadata",
            "_metadata is missing: the checkpoint never completed (or is "
            "being written); restore skips it");
  } else if (m) {
    status = "damaged";
    problem(&r, "_metadata", "%s", err);
  }
  if (meta) {
    json_int_t id = 0, par = 0, max_par = 0;
    json_t *files = NULL, *workers = NULL;
    const char *backend = "";
    json_unpack(meta, "{s:I,s:I,s:s,s:o,s:o}", "id", &id, "max_parallelism",
                &max_par, "backend", &backend, "files", &files, "workers",
                &workers);
    json_object_set_new(rep, "id", json_integer(id));
    uint64_t want = dir_id(chk);
    if (want && want != (uint64_t)id)
      problem(&r, "_metadata",
              "_metadata is of checkpoint %lld but the "
              "directory is chk-%" PRIu64,
              (long long)id, want);
    if (json_unpack(meta, "{s:I}", "parallelism", &par) || par < 1 ||
        (json_int_t)json_array_size(workers) != par || max_par < par)
      problem(&r, "_metadata",
              "_metadata: parallelism %lld does not match "
              "its %zu workers (max_parallelism %lld)",
              (long long)par, json_array_size(workers), (long long)max_par);
    /* Every listed file: size and checksum. */
    size_t i;
    json_t *fj;
    json_array_foreach(files, i, fj) {
      const char *rel = json_string_value(json_object_get(fj, "path"));
      if (sl__ckpt_file_check(chk, fj, true, err, sizeof(err)))
        problem(&r, rel ? rel : "_metadata", "%s", err);
      n_files++;
      bytes += (uint64_t)json_integer_value(json_object_get(fj, "bytes"));
    }
    unlisted(&r, chk, NULL, files);
    /* Every worker file: listed, its own trailer, header, sections. */
    json_t *wj;
    json_array_foreach(workers, i, wj) {
      tool_worker w = {0};
      json_int_t idx = -1, lo = 0, hi = 0;
      json_t *native = json_object_get(wj, "native");
      if (json_unpack(wj, "{s:I,s:I,s:I,s:s}", "index", &idx, "kg_lo", &lo,
                      "kg_hi", &hi, "file", &w.file)) {
        problem(&r, "_metadata", "_metadata: worker entry %zu is malformed", i);
        continue;
      }
      uint32_t elo, ehi;
      if (par >= 1 && max_par >= par) {
        sl__kg_range((int)i, (int)par, (uint32_t)max_par, &elo, &ehi);
        if (idx != (json_int_t)i || lo != elo || hi != ehi)
          problem(&r, "_metadata",
                  "_metadata: worker %zu has index %lld and "
                  "key groups [%lld, %lld), expected [%u, %u)",
                  i, (long long)idx, (long long)lo, (long long)hi, elo, ehi);
      }
      bool listed = false;
      size_t j;
      json_array_foreach(files, j, fj) {
        const char *p = json_string_value(json_object_get(fj, "path"));
        listed |= p && strcmp(p, w.file) == 0;
      }
      if (!listed)
        problem(&r, w.file, "%s is not listed in _metadata's files", w.file);
      if (json_is_string(native))
        unlisted(&r, chk, json_string_value(native), files);
      char fp[4200];
      snprintf(fp, sizeof(fp), "%s/%s", chk, w.file);
      if (strchr(w.file, '/') || sl__ckpt_read_file(fp, &w.data, &w.len)) {
        if (listed)
          continue; /* the file check above said why */
        problem(&r, w.file, "%s cannot be read: %s", w.file, strerror(errno));
        continue;
      }
      if (sl__snap_check(w.data, w.len, &w.head, &w.body, err, sizeof(err))) {
        problem(&r, w.file, "%s: %s", w.file, err);
      } else if (w.head.worker != (uint32_t)i || w.head.id != (uint64_t)id ||
                 w.head.kg_lo != (uint32_t)lo || w.head.kg_hi != (uint32_t)hi ||
                 w.head.max_par != (uint32_t)max_par) {
        problem(&r, w.file,
                "%s: its header (worker %u, checkpoint %" PRIu64
                ", key groups [%u, %u) of %u) does not match _metadata",
                w.file, w.head.worker, w.head.id, w.head.kg_lo, w.head.kg_hi,
                w.head.max_par);
      } else {
        w.kg_lo = (uint32_t)lo;
        w.kg_hi = (uint32_t)hi;
        w.index = (int)i;
        check_sections(&r, w.file, &w, (uint32_t)max_par, &entries, &timers);
        if (json_is_string(native) && !json_array_size(r.problems)) {
          w.native = json_string_value(native);
          check_native(&r, chk, backend, &w, &entries);
        }
      }
      free(w.data);
    }
    if (json_array_size(r.problems) && !strcmp(status, "valid"))
      status = "damaged";
  }
  char mark[4200];
  snprintf(mark, sizeof(mark), "%s/_COMMITTED", chk);
  json_object_set_new(rep, "status", json_string(status));
  json_object_set_new(rep, "valid", json_boolean(!strcmp(status, "valid")));
  json_object_set_new(rep, "committed", json_boolean(exists(mark)));
  json_object_set_new(rep, "files_checked", json_integer((json_int_t)n_files));
  json_object_set_new(rep, "bytes_checked", json_integer((json_int_t)bytes));
  json_object_set_new(rep, "state_entries", json_integer((json_int_t)entries));
  json_object_set_new(rep, "timers", json_integer((json_int_t)timers));
  json_object_set_new(rep, "problems", r.problems);
  json_object_set_new(rep, "notes", r.notes);
  json_decref(meta);
  *out = rep;
  return strcmp(status, "valid") ? TOOL_DAMAGED : TOOL_OK;
}

int cmd_verify(const tool_opts *o) {
  json_t *rep;
  int rc = tool_verify_report(o->path, &rep);
  if (!rep)
    return rc;
  if (o->json) {
    tool_print_json(rep);
  } else {
    const char *status = json_string_value(json_object_get(rep, "status"));
    char sz[32];
    printf("%s: %s", o->path, status);
    if (rc == TOOL_OK)
      printf(
          " (%lld files, %s checked; %lld state entries, %lld timers)",
          (long long)json_integer_value(json_object_get(rep, "files_checked")),
          tool_size((uint64_t)json_integer_value(
                        json_object_get(rep, "bytes_checked")),
                    sz, sizeof(sz)),
          (long long)json_integer_value(json_object_get(rep, "state_entries")),
          (long long)json_integer_value(json_object_get(rep, "timers")));
    printf("\n");
    size_t i;
    json_t *pj;
    /* Each message starts with the file it is about. */
    json_array_foreach(json_object_get(rep, "problems"), i, pj) {
      printf("  %s\n", json_string_value(json_object_get(pj, "error")));
    }
    json_array_foreach(json_object_get(rep, "notes"), i, pj) {
      printf("  note: %s\n", json_string_value(pj));
    }
  }
  json_decref(rep);
  return rc;
}
