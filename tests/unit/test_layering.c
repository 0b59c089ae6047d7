/* SPDX-License-Identifier: Apache-2.0 */
/* Lower layers never call higher ones: every `#include "..."` line under
 * include/, lib/, operators/ and tools/ and every undefined symbol of the
 * build's object files (nm) is mapped to the folder it comes from and
 * checked against the layer table in docs/architecture.md (the one copy of
 * the rule). Uses the rule forbids but the code still has are listed in
 * layering_known.txt; anything else fails, and so does a listed use that
 * is gone, so the list only shrinks. */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"

#ifndef SLUICE_SOURCE_ROOT
#error "the test build defines SLUICE_SOURCE_ROOT"
#endif

#define TABLE_BEGIN "<!-- layers: begin"
#define TABLE_END "<!-- layers: end"
#define MAX_FOLDERS 64

/* ---- small helpers ------------------------------------------------------ */

static char *xstrdup(const char *s) {
  char *d = strdup(s);
  ck_assert_ptr_nonnull(d);
  return d;
}

static char *xasprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  ck_assert_int_ge(n, 0);
  return s;
}

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  ck_assert_ptr_nonnull(buf);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (cap - n - 1 == 0) {
      cap *= 2;
      buf = realloc(buf, cap);
      ck_assert_ptr_nonnull(buf);
    }
  }
  fclose(f);
  buf[n] = '\0';
  return buf;
}

typedef struct strv {
  char **v;
  size_t n, cap;
} strv;

static void strv_push(strv *a, char *s) {
  if (a->n == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 16;
    a->v = realloc(a->v, a->cap * sizeof(*a->v));
    ck_assert_ptr_nonnull(a->v);
  }
  a->v[a->n++] = s;
}

static void strv_free(strv *a) {
  for (size_t i = 0; i < a->n; i++)
    free(a->v[i]);
  free(a->v);
  memset(a, 0, sizeof(*a));
}

/* ---- the layer table ---------------------------------------------------- */

typedef struct layers {
  char *name[MAX_FOLDERS];
  bool calls[MAX_FOLDERS][MAX_FOLDERS];    /* [from][to] */
  bool includes[MAX_FOLDERS][MAX_FOLDERS]; /* [from][to] */
  size_t n;
} layers;

static int folder_index(const layers *l, const char *name) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->name[i], name) == 0)
      return (int)i;
  return -1;
}

/* The table row a repository path belongs to: the longest folder name that
 * is the path itself or a prefix of it followed by '/'. */
static int folder_of(const layers *l, const char *path) {
  int best = -1;
  size_t best_len = 0;
  for (size_t i = 0; i < l->n; i++) {
    size_t len = strlen(l->name[i]);
    if (strncmp(path, l->name[i], len) == 0 &&
        (path[len] == '\0' || path[len] == '/') && len > best_len) {
      best = (int)i;
      best_len = len;
    }
  }
  return best;
}

/* Calls fn for every `...` token of a table cell [s, end). */
static void backticked(const char *s, const char *end,
                       void (*fn)(const char *tok, size_t len, void *opaque),
                       void *opaque) {
  while (s < end) {
    const char *a = memchr(s, '`', (size_t)(end - s));
    if (!a)
      return;
    const char *b = memchr(a + 1, '`', (size_t)(end - a - 1));
    if (!b)
      return;
    fn(a + 1, (size_t)(b - a - 1), opaque);
    s = b + 1;
  }
}

static void collect_tok(const char *tok, size_t len, void *opaque) {
  strv_push(opaque, strndup(tok, len));
}

/* Parses the table between the markers: columns folder | holds | may call
 * into | may include headers of. Returns NULL or an error message. */
static char *parse_layers(const char *md, layers *l) {
  memset(l, 0, sizeof(*l));
  const char *b = strstr(md, TABLE_BEGIN);
  const char *e = b ? strstr(b, TABLE_END) : NULL;
  if (!b || !e)
    return xasprintf("no '%s' ... '%s' table", TABLE_BEGIN, TABLE_END);
  /* Rows first (names), then the columns that refer to them. */
  strv rows = {0};
  for (const char *p = b; p < e;) {
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    const char *eol = nl ? nl : e;
    if (*p == '|') {
      const char *c[6] = {p};
      size_t nc = 1;
      for (const char *q = p + 1; q < eol && nc < 6; q++)
        if (*q == '|')
          c[nc++] = q;
      strv first = {0};
      if (nc == 5)
        backticked(c[0] + 1, c[1], collect_tok, &first);
      if (nc != 5) {
        strv_free(&first);
        strv_free(&rows);
        return xasprintf("row with %zu columns, want 4: %.*s", nc - 1,
                         (int)(eol - p), p);
      }
      if (first.n == 1) {
        if (l->n == MAX_FOLDERS || folder_index(l, first.v[0]) >= 0) {
          char *m = xasprintf("folder `%s` twice or too many", first.v[0]);
          strv_free(&first);
          strv_free(&rows);
          return m;
        }
        l->name[l->n++] = xstrdup(first.v[0]);
        strv_push(&rows, strndup(p, (size_t)(eol - p)));
      }
      strv_free(&first);
    }
    p = nl ? nl + 1 : e;
  }
  char *err = NULL;
  for (size_t r = 0; r < rows.n && !err; r++) {
    const char *p = rows.v[r], *c[5] = {p};
    size_t nc = 1;
    for (const char *q = p + 1; *q && nc < 5; q++)
      if (*q == '|')
        c[nc++] = q;
    for (int col = 0; col < 2 && !err; col++) {
      strv toks = {0};
      backticked(c[2 + col] + 1, c[3 + col], collect_tok, &toks);
      for (size_t t = 0; t < toks.n && !err; t++) {
        int to = folder_index(l, toks.v[t]);
        if (to < 0)
          err = xasprintf("row `%s` names `%s`, which has no row", l->name[r],
                          toks.v[t]);
        else if (col == 0)
          l->calls[r][to] = true;
        else
          l->includes[r][to] = true;
      }
      strv_free(&toks);
    }
  }
  strv_free(&rows);
  if (!err && l->n == 0)
    err = xasprintf("the layer table has no rows");
  return err;
}

static void free_layers(layers *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->name[i]);
  l->n = 0;
}

/* Depth-first search for a cycle through edges[from][to] other than
 * self-loops; on one, writes "a -> b -> a" into path and returns true. */
static bool cycle_from(const layers *l, bool (*edges)[MAX_FOLDERS], size_t u,
                       int *state, size_t *stack, size_t depth, char *path,
                       size_t pathlen) {
  state[u] = 1;
  stack[depth] = u;
  for (size_t v = 0; v < l->n; v++) {
    if (v == u || !edges[u][v])
      continue;
    if (state[v] == 1) {
      size_t k = 0;
      while (stack[k] != v)
        k++;
      size_t off = 0;
      for (; k <= depth; k++)
        off += (size_t)snprintf(path + off, pathlen - off, "%s -> ",
                                l->name[stack[k]]);
      snprintf(path + off, pathlen - off, "%s", l->name[v]);
      return true;
    }
    if (state[v] == 0 &&
        cycle_from(l, edges, v, state, stack, depth + 1, path, pathlen))
      return true;
  }
  state[u] = 2;
  return false;
}

static bool find_cycle(const layers *l, bool (*edges)[MAX_FOLDERS], char *path,
                       size_t pathlen) {
  int state[MAX_FOLDERS] = {0};
  size_t stack[MAX_FOLDERS];
  for (size_t u = 0; u < l->n; u++)
    if (state[u] == 0 &&
        cycle_from(l, edges, u, state, stack, 0, path, pathlen))
      return true;
  return false;
}

/* ---- uses: what the tree does ------------------------------------------ */

typedef enum { USE_INCLUDE, USE_CALL } use_kind;

/* One violation key (folder pair + header or symbol) and the files that
 * make it. */
typedef struct violation {
  int from, to;
  use_kind kind;
  char *what; /* header path (repository-relative) or symbol */
  strv where; /* "file" or "file (defined in file)" */
  bool listed;
} violation;

typedef struct checker {
  const char *root; /* source root, absolute */
  layers l;
  violation *v;
  size_t nv, capv;
  bool used[MAX_FOLDERS][MAX_FOLDERS]; /* every cross-folder use */
  size_t files, objects, uses;
  strv errors; /* anything that fails the check outright */
} checker;

static void add_error(checker *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  ck_assert_int_ge(vasprintf(&s, fmt, ap), 0);
  va_end(ap);
  strv_push(&c->errors, s);
}

static void add_use(checker *c, const char *file, int to, use_kind kind,
                    const char *what, const char *detail) {
  int from = folder_of(&c->l, file);
  if (from < 0 || to < 0 || from == to)
    return;
  c->uses++;
  c->used[from][to] = true;
  bool ok =
      kind == USE_INCLUDE ? c->l.includes[from][to] : c->l.calls[from][to];
  if (ok)
    return;
  violation *x = NULL;
  for (size_t i = 0; i < c->nv && !x; i++)
    if (c->v[i].from == from && c->v[i].to == to && c->v[i].kind == kind &&
        strcmp(c->v[i].what, what) == 0)
      x = &c->v[i];
  if (!x) {
    if (c->nv == c->capv) {
      c->capv = c->capv ? c->capv * 2 : 32;
      c->v = realloc(c->v, c->capv * sizeof(*c->v));
      ck_assert_ptr_nonnull(c->v);
    }
    x = &c->v[c->nv++];
    memset(x, 0, sizeof(*x));
    x->from = from;
    x->to = to;
    x->kind = kind;
    x->what = xstrdup(what);
  }
  strv_push(&x->where,
            detail ? xasprintf("%s (%s)", file, detail) : xstrdup(file));
}

/* Resolves `#include "name"` from file the way the build does: the file's
 * own folder, then include/, lib/ and the root (meson.build's
 * include_directories). Returns a repository-relative path or NULL (a
 * header outside the tree). */
static char *resolve_include(const checker *c, const char *file,
                             const char *name) {
  char *dir = xstrdup(file);
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  else
    dir[0] = '\0';
  const char *bases[] = {dir, "include", "lib", ""};
  char *found = NULL;
  for (size_t i = 0; i < 4 && !found; i++) {
    char *rel =
        bases[i][0] ? xasprintf("%s/%s", bases[i], name) : xstrdup(name);
    char *abs = xasprintf("%s/%s", c->root, rel);
    char real[PATH_MAX];
    if (access(abs, F_OK) == 0 && realpath(abs, real)) {
      size_t rl = strlen(c->root);
      if (strncmp(real, c->root, rl) == 0 && real[rl] == '/')
        found = xstrdup(real + rl + 1);
    }
    free(abs);
    free(rel);
  }
  free(dir);
  return found;
}

/* Whether hdr is a private header (name ending in _int.h) of a folder
 * other than file's: those are for the files beside them only. */
static bool private_elsewhere(const char *file, const char *hdr) {
  size_t hl = strlen(hdr);
  if (hl < 6 || strcmp(hdr + hl - 6, "_int.h") != 0)
    return false;
  const char *hs = strrchr(hdr, '/'), *fs = strrchr(file, '/');
  size_t hd = hs ? (size_t)(hs - hdr) : 0, fd = fs ? (size_t)(fs - file) : 0;
  return hd != fd || strncmp(hdr, file, hd) != 0;
}

static void scan_includes(checker *c, const char *file) {
  char *abs = xasprintf("%s/%s", c->root, file);
  char *text = read_all(abs);
  free(abs);
  if (!text) {
    add_error(c, "%s: cannot read: %s", file, strerror(errno));
    return;
  }
  c->files++;
  for (char *line = text; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl)
      *nl = '\0';
    const char *p = line;
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p == '#') {
      p++;
      while (*p == ' ' || *p == '\t')
        p++;
      if (strncmp(p, "include", 7) == 0) {
        p += 7;
        while (*p == ' ' || *p == '\t')
          p++;
        const char *q = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (q) {
          char *name = strndup(p + 1, (size_t)(q - p - 1));
          char *hdr = resolve_include(c, file, name);
          if (hdr) {
            int to = folder_of(&c->l, hdr);
            if (to < 0)
              add_error(c,
                        "%s includes %s, which is in no folder of the "
                        "layer table",
                        file, hdr);
            add_use(c, file, to, USE_INCLUDE, hdr, NULL);
            if (private_elsewhere(file, hdr))
              add_error(c,
                        "%s includes %s, a header private to its own "
                        "folder (_int.h)",
                        file, hdr);
          }
          free(hdr);
          free(name);
        }
      }
    }
    line = nl ? nl + 1 : NULL;
  }
  free(text);
}

static checker *walking; /* nftw has no opaque pointer */
static strv walked;

static int walk_fn(const char *path, const struct stat *st, int type,
                   struct FTW *ftw) {
  (void)st;
  (void)ftw;
  size_t n = strlen(path);
  if (type == FTW_F && n > 2 &&
      (strcmp(path + n - 2, ".c") == 0 || strcmp(path + n - 2, ".h") == 0))
    strv_push(&walked, xstrdup(path + strlen(walking->root) + 1));
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void scan_tree(checker *c) {
  static const char *const tops[] = {"include", "lib", "operators", "tools"};
  walking = c;
  memset(&walked, 0, sizeof(walked));
  for (size_t i = 0; i < 4; i++) {
    char *top = xasprintf("%s/%s", c->root, tops[i]);
    if (access(top, F_OK) == 0 && nftw(top, walk_fn, 16, FTW_PHYS) != 0)
      add_error(c, "cannot walk %s", top);
    free(top);
  }
  qsort(walked.v, walked.n, sizeof(*walked.v), cmp_str);
  for (size_t i = 0; i < walked.n; i++) {
    if (folder_of(&c->l, walked.v[i]) < 0)
      add_error(c, "%s: its folder has no row in the layer table", walked.v[i]);
    scan_includes(c, walked.v[i]);
  }
  strv_free(&walked);
}

/* ---- symbols of the object files --------------------------------------- */

typedef struct sym {
  char *name;
  char *file;  /* source of the object that defines or needs it */
  int defined; /* 1 defined, 0 undefined */
} sym;

static int cmp_sym(const void *a, const void *b) {
  const sym *x = a, *y = b;
  int r = strcmp(x->name, y->name);
  return r ? r : y->defined - x->defined; /* definitions first */
}

/* The object files of sources under lib/, operators/ and tools/, from the
 * build's compile_commands.json, with their sources (repository-relative). */
static void list_objects(checker *c, const char *build_root, strv *objs,
                         strv *srcs) {
  char *path = xasprintf("%s/compile_commands.json", build_root);
  json_error_t jerr;
  json_t *db = json_load_file(path, 0, &jerr);
  if (!json_is_array(db)) {
    add_error(c, "%s: %s", path, jerr.text);
    json_decref(db);
    free(path);
    return;
  }
  size_t i;
  json_t *e;
  json_array_foreach(db, i, e) {
    const char *dir = json_string_value(json_object_get(e, "directory"));
    const char *file = json_string_value(json_object_get(e, "file"));
    const char *out = json_string_value(json_object_get(e, "output"));
    if (!dir || !file || !out)
      continue;
    char *abs = file[0] == '/' ? xstrdup(file) : xasprintf("%s/%s", dir, file);
    char real[PATH_MAX];
    size_t rl = strlen(c->root);
    if (realpath(abs, real) && strncmp(real, c->root, rl) == 0 &&
        real[rl] == '/') {
      const char *rel = real + rl + 1;
      if (strncmp(rel, "lib/", 4) == 0 || strncmp(rel, "operators/", 10) == 0 ||
          strncmp(rel, "tools/", 6) == 0) {
        char *obj = out[0] == '/' ? xstrdup(out) : xasprintf("%s/%s", dir, out);
        bool dup = false;
        for (size_t k = 0; k < objs->n && !dup; k++)
          dup = strcmp(objs->v[k], obj) == 0;
        if (dup) {
          free(obj);
        } else {
          strv_push(objs, obj);
          strv_push(srcs, xstrdup(rel));
        }
      }
    }
    free(abs);
  }
  json_decref(db);
  free(path);
  if (objs->n == 0)
    add_error(c,
              "compile_commands.json in %s names no object of lib/, "
              "operators/ or tools/",
              build_root);
}

static void scan_symbols(checker *c, const char *build_root) {
  strv objs = {0}, srcs = {0};
  list_objects(c, build_root, &objs, &srcs);
  if (objs.n == 0)
    return;
  const char *nm = getenv("NM") ? getenv("NM") : "nm";
  size_t cap = strlen(nm) + 32;
  for (size_t i = 0; i < objs.n; i++) {
    if (strchr(objs.v[i], '\'')) {
      add_error(c, "object path with a quote: %s", objs.v[i]);
      goto out;
    }
    cap += strlen(objs.v[i]) + 3;
  }
  char *cmd = malloc(cap);
  ck_assert_ptr_nonnull(cmd);
  size_t off = (size_t)snprintf(cmd, cap, "%s -A -P -g", nm);
  for (size_t i = 0; i < objs.n; i++)
    off += (size_t)snprintf(cmd + off, cap - off, " '%s'", objs.v[i]);
  /* Every object must exist: a missing one means the build is stale. */
  for (size_t i = 0; i < objs.n; i++)
    if (access(objs.v[i], R_OK) != 0)
      add_error(c, "%s (object of %s) is missing; build first", objs.v[i],
                srcs.v[i]);
  FILE *p = popen(cmd, "r");
  ck_assert_msg(p != NULL, "cannot run %s", nm);
  sym *syms = NULL;
  size_t ns = 0, caps = 0;
  char line[4096];
  while (fgets(line, sizeof(line), p)) {
    /* POSIX format with -A: "object: name type [value size]". */
    char *colon = strstr(line, ": ");
    if (!colon)
      continue;
    *colon = '\0';
    char name[1024], type[8];
    if (sscanf(colon + 2, "%1023s %7s", name, type) != 2)
      continue;
    size_t k = 0;
    while (k < objs.n && strcmp(objs.v[k], line) != 0)
      k++;
    if (k == objs.n)
      continue;
    if (ns == caps) {
      caps = caps ? caps * 2 : 1024;
      syms = realloc(syms, caps * sizeof(*syms));
      ck_assert_ptr_nonnull(syms);
    }
    syms[ns++] = (sym){xstrdup(name), srcs.v[k], type[0] != 'U'};
  }
  int rc = pclose(p);
  if (rc != 0)
    add_error(c, "'%s' exited with status %d", cmd, rc);
  free(cmd);
  c->objects = objs.n;
  qsort(syms, ns, sizeof(*syms), cmp_sym);
  /* Runs of one name: the definitions come first; a name defined in two
   * folders (main of two tools) is left alone. */
  for (size_t i = 0; i < ns;) {
    size_t j = i;
    while (j < ns && strcmp(syms[j].name, syms[i].name) == 0)
      j++;
    size_t ndef = 0;
    while (i + ndef < j && syms[i + ndef].defined)
      ndef++;
    bool one_folder = ndef > 0;
    for (size_t k = i + 1; k < i + ndef; k++)
      one_folder = one_folder && folder_of(&c->l, syms[k].file) ==
                                     folder_of(&c->l, syms[i].file);
    if (one_folder) {
      int to = folder_of(&c->l, syms[i].file);
      for (size_t k = i + ndef; k < j; k++) {
        char *detail = xasprintf("defined in %s", syms[i].file);
        add_use(c, syms[k].file, to, USE_CALL, syms[k].name, detail);
        free(detail);
      }
    }
    i = j;
  }
  for (size_t i = 0; i < ns; i++)
    free(syms[i].name);
  free(syms);
out:
  strv_free(&objs);
  strv_free(&srcs);
}

/* ---- the known list ----------------------------------------------------- */

/* Lines "from to what  # issue N: why"; '#' lines and blank ones are
 * comments. Marks the violations it names; anything it names that is not
 * a violation is stale. Returns the number of entries. */
static size_t apply_known(checker *c, const char *path) {
  char *text = read_all(path);
  if (!text) {
    add_error(c, "%s: %s", path, strerror(errno));
    return 0;
  }
  size_t n = 0, lineno = 0;
  for (char *line = text; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl)
      *nl = '\0';
    lineno++;
    char from[256], to[256], what[512];
    const char *p = line;
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p && *p != '#') {
      const char *hash = strchr(p, '#');
      if (sscanf(p, "%255s %255s %511s", from, to, what) != 3 || !hash ||
          strstr(hash, "issue ") == NULL) {
        add_error(c,
                  "%s:%zu: want \"from to header-or-symbol  # issue N: "
                  "why\", got: %s",
                  path, lineno, line);
      } else {
        n++;
        int f = folder_index(&c->l, from), t = folder_index(&c->l, to);
        bool found = false;
        for (size_t i = 0; i < c->nv; i++)
          if (c->v[i].from == f && c->v[i].to == t &&
              strcmp(c->v[i].what, what) == 0) {
            if (c->v[i].listed)
              add_error(c, "%s:%zu: listed twice: %s %s %s", path, lineno, from,
                        to, what);
            c->v[i].listed = found = true;
          }
        if (!found)
          add_error(c,
                    "%s:%zu: %s -> %s %s is listed as a known violation "
                    "but the tree no longer has it: remove the line",
                    path, lineno, from, to, what);
      }
    }
    line = nl ? nl + 1 : NULL;
  }
  free(text);
  return n;
}

/* ---- the whole check ---------------------------------------------------- */

typedef struct result {
  size_t unlisted, stale_or_errors, listed;
} result;

/* Checks the tree at root (absolute) against the table in md_path, using
 * the objects of build_root and the known list; prints every finding to
 * out and returns the counts. */
static result check_tree(const char *root, const char *md_path,
                         const char *build_root, const char *known_path,
                         FILE *out) {
  checker c = {0};
  char real_root[PATH_MAX];
  ck_assert_msg(realpath(root, real_root), "%s: %s", root, strerror(errno));
  c.root = real_root;
  result res = {0};
  char *md = read_all(md_path);
  ck_assert_msg(md != NULL, "%s: %s", md_path, strerror(errno));
  char *err = parse_layers(md, &c.l);
  free(md);
  if (err) {
    fprintf(out, "layering: %s: %s\n", md_path, err);
    free(err);
    res.stale_or_errors = 1;
    free_layers(&c.l);
    return res;
  }
  char cyc[4096];
  bool either[MAX_FOLDERS][MAX_FOLDERS];
  for (size_t i = 0; i < c.l.n; i++)
    for (size_t j = 0; j < c.l.n; j++)
      either[i][j] = c.l.calls[i][j] || c.l.includes[i][j];
  if (find_cycle(&c.l, either, cyc, sizeof(cyc)))
    add_error(&c, "the layer table has a cycle: %s", cyc);

  scan_tree(&c);
  scan_symbols(&c, build_root);
  res.listed = apply_known(&c, known_path);

  for (size_t i = 0; i < c.nv; i++) {
    violation *x = &c.v[i];
    if (x->listed)
      continue;
    res.unlisted++;
    for (size_t k = 0; k < x->where.n; k++)
      fprintf(out, "layering: %s %s %s %s, of %s, which %s may not use\n",
              x->where.v[k], x->kind == USE_INCLUDE ? "includes" : "uses",
              x->kind == USE_INCLUDE ? "header" : "symbol", x->what,
              c.l.name[x->to], c.l.name[x->from]);
    fprintf(out,
            "  (to allow it for now, list \"%s %s %s  # issue N: why\" "
            "in %s)\n",
            c.l.name[x->from], c.l.name[x->to], x->what, known_path);
  }
  for (size_t i = 0; i < c.errors.n; i++)
    fprintf(out, "layering: %s\n", c.errors.v[i]);
  res.stale_or_errors = c.errors.n;

  /* Cycles of folders in the tree as it is. The table has none, so each
   * runs through a forbidden use (reported above, or listed): a cycle can
   * only stay while its uses are listed, and goes when they go. */
  bool used[MAX_FOLDERS][MAX_FOLDERS];
  memcpy(used, c.used, sizeof(used));
  size_t ncycles = 0;
  while (find_cycle(&c.l, used, cyc, sizeof(cyc)) && ncycles < 32) {
    fprintf(out, "layering: folder cycle: %s\n", cyc);
    ncycles++;
    /* Break it at its first edge that the table forbids, and look again. */
    char *a = cyc, *arrow;
    bool broken = false;
    while (!broken && (arrow = strstr(a, " -> "))) {
      *arrow = '\0';
      char *b = arrow + 4, *next = strstr(b, " -> ");
      if (next)
        *next = '\0';
      int f = folder_index(&c.l, a), t = folder_index(&c.l, b);
      if (f >= 0 && t >= 0 && !either[f][t]) {
        used[f][t] = false;
        broken = true;
      }
      if (next)
        *next = ' ';
      a = b;
    }
    if (!broken)
      break;
  }
  fprintf(out,
          "layering: %zu files, %zu objects, %zu uses across folders; %zu "
          "known violations listed, %zu not listed, %zu other problems, "
          "%zu folder cycles\n",
          c.files, c.objects, c.uses, res.listed, res.unlisted,
          res.stale_or_errors, ncycles);

  for (size_t i = 0; i < c.nv; i++) {
    free(c.v[i].what);
    strv_free(&c.v[i].where);
  }
  free(c.v);
  strv_free(&c.errors);
  free_layers(&c.l);
  return res;
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(tree_follows_the_layer_table) {
  const char *build = getenv("SLUICE_BUILD_ROOT");
  ck_assert_msg(build != NULL, "SLUICE_BUILD_ROOT is not set (run me with "
                               "meson test)");
  result r = check_tree(
      SLUICE_SOURCE_ROOT, SLUICE_SOURCE_ROOT "/docs/architecture.md", build,
      SLUICE_SOURCE_ROOT "/tests/unit/layering_known.txt", stdout);
  fflush(stdout);
  ck_assert_msg(r.unlisted == 0 && r.stale_or_errors == 0,
                "%zu uses break the layer table, %zu other problems (listed "
                "above)",
                r.unlisted, r.stale_or_errors);
}
END_TEST

/* The checker itself, on a tree made for it: a.c in the lower folder
 * includes a header of the higher one and calls its function; the known
 * list names one of the two and one use that does not exist. */
static void put(const char *dir, const char *rel, const char *text) {
  char *path = xasprintf("%s/%s", dir, rel);
  for (char *s = strchr(path + strlen(dir) + 1, '/'); s;
       s = strchr(s + 1, '/')) {
    *s = '\0';
    mkdir(path, 0755);
    *s = '/';
  }
  FILE *f = fopen(path, "w");
  ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
  fputs(text, f);
  fclose(f);
  free(path);
}

static char *make_tree(void) {
  char tmpl[] = "/tmp/sl_layering_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(tmpl));
  char *dir = xstrdup(tmpl);
  put(dir, "docs/arch.md",
      "<!-- layers: begin -->\n"
      "| folder | holds | may call into | may include headers of |\n"
      "|---|---|---|---|\n"
      "| `lib/low` | below | — | — |\n"
      "| `lib/high` | above | `lib/low` | `lib/low` |\n"
      "<!-- layers: end -->\n");
  put(dir, "lib/low/a.c",
      "#include \"high/h.h\"\nint low_fn(void) { return high_fn(); }\n");
  put(dir, "lib/high/h.h", "int high_fn(void);\n");
  put(dir, "lib/high/h.c",
      "#include \"low/l.h\"\nint low_fn(void);\n"
      "int high_fn(void) { return 1; }\nint g(void) { return low_fn(); }\n");
  put(dir, "lib/low/l.h", "int low_fn(void);\n");
  char *cmd = xasprintf("cd '%s' && mkdir -p build && "
                        "cc -c lib/low/a.c -Ilib -o build/a.o && "
                        "cc -c lib/high/h.c -Ilib -o build/h.o",
                        dir);
  ck_assert_int_eq(system(cmd), 0);
  free(cmd);
  char *json =
      xasprintf("[{\"directory\": \"%s/build\", \"file\": \"../lib/low/a.c\", "
                "\"output\": \"a.o\"},\n"
                " {\"directory\": \"%s/build\", \"file\": \"../lib/high/h.c\", "
                "\"output\": \"h.o\"}]\n",
                dir, dir);
  put(dir, "build/compile_commands.json", json);
  free(json);
  return dir;
}

static void rm_tree(char *dir) {
  char *cmd = xasprintf("rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
  free(cmd);
  free(dir);
}

static result check_made_tree(const char *dir, const char *known,
                              char **output) {
  put(dir, "known.txt", known);
  char *md = xasprintf("%s/docs/arch.md", dir);
  char *build = xasprintf("%s/build", dir);
  char *kp = xasprintf("%s/known.txt", dir);
  size_t len = 0;
  FILE *out = open_memstream(output, &len);
  ck_assert_ptr_nonnull(out);
  result r = check_tree(dir, md, build, kp, out);
  fclose(out);
  free(md);
  free(build);
  free(kp);
  return r;
}

START_TEST(checker_reports_unlisted_and_stale_uses) {
  char *dir = make_tree();
  char *text = NULL;
  result r =
      check_made_tree(dir,
                      "# known\n"
                      "lib/low lib/high lib/high/h.h  # issue 1: moving\n"
                      "lib/low lib/high gone_fn  # issue 1: already gone\n",
                      &text);
  ck_assert_msg(r.unlisted == 1 && r.stale_or_errors == 1 && r.listed == 2,
                "unlisted %zu, stale %zu, listed %zu; output:\n%s", r.unlisted,
                r.stale_or_errors, r.listed, text);
  ck_assert_msg(strstr(text, "layering: lib/low/a.c (defined in "
                             "lib/high/h.c) uses symbol high_fn, of "
                             "lib/high, which lib/low may not use\n"),
                "%s", text);
  ck_assert_msg(strstr(text, "lib/low -> lib/high gone_fn is listed as a "
                             "known violation but the tree no longer has "
                             "it"),
                "%s", text);
  ck_assert_msg(strstr(text, "folder cycle: lib/low -> "
                             "lib/high -> lib/low"),
                "%s", text);
  free(text);

  /* Both listed, nothing stale: clean. */
  r = check_made_tree(dir,
                      "lib/low lib/high lib/high/h.h  # issue 1: moving\n"
                      "lib/low lib/high high_fn  # issue 1: moving\n",
                      &text);
  ck_assert_msg(r.unlisted == 0 && r.stale_or_errors == 0 && r.listed == 2,
                "%s", text);
  free(text);

  /* An entry without its issue is refused. */
  r = check_made_tree(dir,
                      "lib/low lib/high lib/high/h.h\n"
                      "lib/low lib/high high_fn  # issue 1: moving\n",
                      &text);
  ck_assert_msg(r.stale_or_errors == 1 && strstr(text, "# issue N: why"), "%s",
                text);
  free(text);
  rm_tree(dir);
}
END_TEST

START_TEST(table_with_a_cycle_fails) {
  char *dir = make_tree();
  put(dir, "docs/arch.md",
      "<!-- layers: begin -->\n"
      "| folder | holds | may call into | may include headers of |\n"
      "|---|---|---|---|\n"
      "| `lib/low` | below | `lib/high` | — |\n"
      "| `lib/high` | above | `lib/low` | `lib/low` |\n"
      "<!-- layers: end -->\n");
  char *text = NULL;
  result r = check_made_tree(
      dir, "lib/low lib/high lib/high/h.h  # issue 1: moving\n", &text);
  ck_assert_msg(r.unlisted == 0 && r.stale_or_errors == 1 &&
                    strstr(text, "the layer table has a cycle: lib/low -> "
                                 "lib/high -> lib/low"),
                "%s", text);
  free(text);
  rm_tree(dir);
}
END_TEST

/* A header ending in _int.h is for its own folder: another folder that
 * includes it fails even where the table lets it include that folder. */
START_TEST(private_header_of_another_folder_fails) {
  char *dir = make_tree();
  put(dir, "lib/low/q_int.h", "int q;\n");
  put(dir, "lib/low/b.h", "#include \"q_int.h\"\n");
  put(dir, "lib/high/x.h", "#include \"low/q_int.h\"\n");
  char *text = NULL;
  result r =
      check_made_tree(dir,
                      "lib/low lib/high lib/high/h.h  # issue 1: moving\n"
                      "lib/low lib/high high_fn  # issue 1: moving\n",
                      &text);
  ck_assert_msg(r.unlisted == 0 && r.stale_or_errors == 1 &&
                    strstr(text, "lib/high/x.h includes lib/low/q_int.h, a "
                                 "header private to its own folder"),
                "%s", text);
  free(text);
  rm_tree(dir);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("layering");
  TCase *tc = tcase_create("layering");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, tree_follows_the_layer_table);
  tcase_add_test(tc, checker_reports_unlisted_and_stale_uses);
  tcase_add_test(tc, table_with_a_cycle_fails);
  tcase_add_test(tc, private_header_of_another_folder_fails);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
