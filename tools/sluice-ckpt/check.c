/* SPDX-License-Identifier: Apache-2.0 */
/* Opening one checkpoint for reading, and `verify`: both run the
 * checkpoint check restore runs (lib/checkpoint/check.h); verify collects
 * every problem, adds notes on unlisted files and lets the backend read
 * native state directories. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tools/sluice-ckpt/tool.h"

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
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
  const char *b = strrchr(path, '/');
  b = b && b[1] ? b + 1 : path;
  if (strncmp(b, "chk-", 4) == 0 && b[4] >= '0' && b[4] <= '9')
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
  sl__segs_free(ck->segs, ck->n_segs);
  sl__ckpt_meta_free(&ck->m);
  memset(ck, 0, sizeof(*ck));
}

int tool_open(const char *chk, tool_ckpt *ck) {
  memset(ck, 0, sizeof(*ck));
  int rc = need_dir(chk);
  if (rc)
    return rc;
  char err[1024];
  sl__ckpt_check c = {.keep = true};
  int r = sl__ckpt_check_run(chk, &c, err, sizeof(err));
  if (r == SL_ERR_NOTFOUND && !looks_like_checkpoint(chk)) {
    sl__ckpt_check_free(&c);
    tool_err("%s is not a checkpoint directory (no _metadata)%s", chk,
             tool_is_store(chk) ? "; it is a group store: name a task with "
                                  "--task N"
                                : "");
    return TOOL_USAGE;
  }
  if (r) {
    sl__ckpt_check_free(&c);
    tool_err("%s: %s%s", chk, err,
             r == SL_ERR_CORRUPT ? " (run sluice-ckpt verify)" : "");
    return r == SL_ERR_NOMEM ? TOOL_USAGE : TOOL_DAMAGED;
  }
  /* Everything below was validated by the check. */
  ck->m = c.meta;
  ck->meta = c.meta.json;
  ck->id = ck->m.id;
  ck->par = ck->m.par;
  ck->max_par = ck->m.max_par;
  ck->backend = ck->m.backend;
  ck->job = ck->m.job;
  ck->path = strdup(chk);
  char mark[4200];
  snprintf(mark, sizeof(mark), "%s/_COMMITTED", chk);
  ck->committed = exists(mark);
  ck->segs = c.segs;
  ck->n_segs = c.n_segs;
  ck->w = calloc((size_t)ck->m.n_workers + 1, sizeof(*ck->w));
  if (!ck->w || !ck->path) {
    for (int i = 0; i < ck->m.n_workers; i++)
      free(c.images[i].data);
    free(c.images);
    tool_err("out of memory");
    tool_close(ck);
    return TOOL_USAGE;
  }
  for (int i = 0; i < ck->m.n_workers; i++) {
    tool_worker *w = &ck->w[ck->n_w++];
    const sl__ckpt_worker *mw = &ck->m.workers[i];
    w->index = mw->index;
    w->file = mw->file;
    w->native = mw->native;
    w->kg_lo = mw->kg_lo;
    w->kg_hi = mw->kg_hi;
    w->data = c.images[i].data;
    w->len = c.images[i].len;
    w->head = c.images[i].head;
    w->body = c.images[i].body;
  }
  free(c.images);
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

static int count_entry(const sl__snap_entry *e, void *opaque) {
  (void)e;
  (*(uint64_t *)opaque)++;
  return 0;
}

/* A native state directory whose files all have their checksums: the
 * backend must also open it and read every key group of the worker. */
static void check_native(report *r, const char *chk, const char *backend,
                         const tool_worker *w, uint64_t *entries) {
  char err[512] = "";
  bool missing;
  sl__native *be =
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
    rc = sl__native_scan(be, g, count_entry, entries);
  sl__native_close(be);
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

static int count_chain_entry(const char *state, uint32_t type,
                             const sl__snap_entry *e, void *opaque) {
  (void)state;
  (void)type;
  (void)e;
  (*(uint64_t *)opaque)++;
  return 0;
}

/* The entries the chains of worker w give (the check counted those of
 * its file): each key group loaded from its segments, one at a time. */
static void chain_entries(report *r, sl__ckpt_check *c,
                          const sl__ckpt_worker *w, const sl__ckpt_image *im) {
  sl__rd body = im->body, p;
  uint32_t type, kg;
  int rc = 0;
  while (!rc && sl__snap_next(&body, &type, &kg, &p) == 1)
    if (type == SL__SEC_CHAIN)
      rc = sl__chain_scan(p, c->segs, c->n_segs, c->meta.max_par, kg,
                          count_chain_entry, &c->entries);
  if (rc)
    problem(r, w->file, "%s: loading its key groups' chains failed: %s",
            w->file, sl_strerror(rc));
}

static void add_problem(const char *file, const char *msg, void *opaque) {
  report *r = opaque;
  json_array_append_new(r->problems,
                        json_pack("{s:s,s:s}", "file", file, "error", msg));
}

int tool_verify_report(const char *chk, json_t **out) {
  *out = NULL;
  int rc = need_dir(chk);
  if (rc)
    return rc;
  report r = {json_array(), json_array()};
  char err[1024];
  /* The check restore runs, collecting every problem instead of stopping
   * at the first. */
  sl__ckpt_check c = {.keep_small = true, .problem = add_problem, .opaque = &r};
  int m = sl__ckpt_check_run(chk, &c, err, sizeof(err));
  if (m == SL_ERR_NOTFOUND && !looks_like_checkpoint(chk)) {
    tool_err("%s is not a checkpoint directory (no _metadata)", chk);
    sl__ckpt_check_free(&c);
    json_decref(r.problems);
    json_decref(r.notes);
    return TOOL_USAGE;
  }
  if (m == SL_ERR_NOMEM) {
    tool_err("out of memory");
    sl__ckpt_check_free(&c);
    json_decref(r.problems);
    json_decref(r.notes);
    return TOOL_USAGE;
  }
  json_t *rep = json_pack("{s:s}", "path", chk);
  const char *status = "valid";
  if (m == SL_ERR_NOTFOUND) {
    status = "incomplete";
    problem(&r, "_metadata",
            "_metadata is missing: the checkpoint never completed (or is "
            "being written); restore skips it");
  } else if (m) {
    status = "damaged";
  }
  const sl__ckpt_meta *meta = &c.meta;
  if (meta->json) {
    json_object_set_new(rep, "id", json_integer((json_int_t)meta->id));
    if (meta->files) {
      unlisted(&r, chk, NULL, meta->files);
      for (int i = 0; i < meta->n_workers; i++)
        if (meta->workers[i].native)
          unlisted(&r, chk, meta->workers[i].native, meta->files);
    }
    /* What only a backend can tell about native state directories, once
     * everything else holds. */
    for (int i = 0; !m && i < meta->n_workers; i++) {
      const sl__ckpt_worker *mw = &meta->workers[i];
      if (!mw->native) {
        chain_entries(&r, &c, mw, &c.images[i]);
        continue;
      }
      tool_worker w = {.index = mw->index,
                       .file = mw->file,
                       .native = mw->native,
                       .kg_lo = mw->kg_lo,
                       .kg_hi = mw->kg_hi,
                       .head = {.max_par = meta->max_par}};
      check_native(&r, chk, meta->backend, &w, &c.entries);
    }
    if (json_array_size(r.problems) && !strcmp(status, "valid"))
      status = "damaged";
  }
  char mark[4200];
  snprintf(mark, sizeof(mark), "%s/_COMMITTED", chk);
  json_object_set_new(rep, "status", json_string(status));
  json_object_set_new(rep, "valid", json_boolean(!strcmp(status, "valid")));
  json_object_set_new(rep, "committed", json_boolean(exists(mark)));
  json_object_set_new(rep, "files_checked",
                      json_integer((json_int_t)c.n_files));
  json_object_set_new(rep, "bytes_checked", json_integer((json_int_t)c.bytes));
  json_object_set_new(rep, "state_entries",
                      json_integer((json_int_t)c.entries));
  json_object_set_new(rep, "timers", json_integer((json_int_t)c.timers));
  json_object_set_new(rep, "problems", r.problems);
  json_object_set_new(rep, "notes", r.notes);
  sl__ckpt_check_free(&c);
  *out = rep;
  return strcmp(status, "valid") ? TOOL_DAMAGED : TOOL_OK;
}

int cmd_verify(const tool_opts *o) {
  if (o->task >= 0 || tool_is_store(o->path))
    return store_verify(o);
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
