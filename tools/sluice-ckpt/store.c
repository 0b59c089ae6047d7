/* SPDX-License-Identifier: Apache-2.0 */
/* The commands on a group store (docs/scaling.md): a checkpoint.dir with
 * instances/<instance>/chk-<id> and tasks/<task>/<generation>.json. `list`
 * shows the instances and the task pointers, `verify` follows pointers into the
 * checkpoints they name, `prune` is the running processes' retention by
 * hand (checkpoint/tasks.h decides what a pointer keeps). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tools/sluice-ckpt/tool.h"

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool tool_is_store(const char *dir) {
  char p[4200];
  snprintf(p, sizeof(p), "%s/instances", dir);
  if (is_dir(p))
    return true;
  snprintf(p, sizeof(p), "%s/tasks", dir);
  return is_dir(p);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of root's tasks with a pointer (checkpoint/tasks.h: "<n>" or
 * "<topic>-<n>"). */
static int store_open(const char *root, tool_store *s) {
  memset(s, 0, sizeof(*s));
  s->root = root;
  if (sl__task_ptr_list(root, &s->tasks, &s->n)) {
    tool_err("cannot list %s/tasks: %s", root, strerror(errno));
    return TOOL_USAGE;
  }
  return TOOL_OK;
}

static void store_close(tool_store *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->tasks[i]);
  free(s->tasks);
  memset(s, 0, sizeof(*s));
}

/* Names of root/instances/ (sorted; dot names skipped). */
static char **instances(const char *root, size_t *n) {
  *n = 0;
  char dir[4200];
  snprintf(dir, sizeof(dir), "%s/instances", root);
  char **names = calloc(1, sizeof(*names));
  DIR *d = opendir(dir);
  if (!d || !names) {
    if (d)
      closedir(d);
    return names;
  }
  struct dirent *e;
  while (names && (e = readdir(d))) {
    char p[4500];
    snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
    if (e->d_name[0] == '.' || !is_dir(p))
      continue;
    char **a = realloc(names, (*n + 2) * sizeof(*a));
    if (!a)
      break;
    names = a;
    if (!(names[*n] = strdup(e->d_name)))
      break;
    (*n)++;
  }
  closedir(d);
  qsort(names, *n, sizeof(*names), cmp_str);
  return names;
}

static void free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

/* The instance a pointer's checkpoint ("instances/<inst>/chk-<id>")
 * belongs to, and whether its process runs. */
static void owner_of(const char *root, const char *rel, char *inst, size_t len,
                     bool *alive) {
  const char *a, *b;
  *alive = false;
  if (strncmp(rel, "instances/", 10) || !(b = strchr(a = rel + 10, '/'))) {
    snprintf(inst, len, "-");
    return;
  }
  snprintf(inst, len, "%.*s", (int)(b - a), a);
  char dir[4200];
  snprintf(dir, sizeof(dir), "%s/instances/%s", root, inst);
  *alive = sl__task_inst_alive(dir);
}

/* A pending checkpoint (exactly-once: named before its transaction
 * commits, docs/scaling.md) as far as the store tells: "committed"
 * (_COMMITTED), "durable" (_metadata only: the next owner resolves
 * whether its transaction committed) or "not durable" (it never began
 * to commit). */
static const char *pending_state(const char *root, const char *rel) {
  int st = sl__task_ckpt_state(root, rel);
  return st == SL__TASK_CKPT_COMMITTED ? "committed"
         : st == SL__TASK_CKPT_DURABLE ? "durable"
                                       : "not durable";
}

void tool_pending_text(const char *root, const sl__task_ptr *p, char *out,
                       size_t len) {
  const char *st = pending_state(root, p->pending);
  snprintf(out, len, "checkpoint %s is pending (offset %" PRId64 "): %s",
           p->pending, p->pending_offset,
           !strcmp(st, "committed")
               ? "its transaction committed (_COMMITTED); the next owner "
                 "restores from it"
           : !strcmp(st, "durable")
               ? "its metadata is durable, whether its transaction "
                 "committed the next owner resolves"
           : p->checkpoint[0]
               ? "not durable, its transaction did not commit; the next "
                 "owner restores from the pointer's checkpoint"
               : "not durable, its transaction did not commit; the task "
                 "starts empty when assigned");
}

void tool_pending_json(const char *root, const sl__task_ptr *p, json_t *j) {
  if (!p->pending[0])
    return;
  json_object_set_new(j, "pending", json_string(p->pending));
  json_object_set_new(j, "pending_offset",
                      json_integer((json_int_t)p->pending_offset));
  json_object_set_new(j, "pending_state",
                      json_string(pending_state(root, p->pending)));
}

/* A task in JSON: its number when named by partition (as before several
 * keyed stages), else its name. */
static json_t *task_json(const char *name) {
  char *end;
  long long n = strtoll(name, &end, 10);
  return *name >= '0' && *name <= '9' && !*end ? json_integer(n)
                                               : json_string(name);
}

static json_t *ptr_json(const char *root, const sl__task_ptr *p) {
  json_t *j = json_pack(
      "{s:s,s:s,s:s,s:i,s:I,s:I}", "checkpoint", p->checkpoint, "source",
      p->source, "topic", p->topic, "partition", (int)p->partition, "offset",
      (json_int_t)p->offset, "generation", (json_int_t)p->gen);
  tool_pending_json(root, p, j);
  return j;
}

/* ---- list --------------------------------------------------------------- */

int store_list(const tool_opts *o) {
  tool_store s;
  int rc = store_open(o->path, &s);
  if (rc)
    return rc;
  size_t n_inst;
  char **inst = instances(o->path, &n_inst);
  json_t *ji = json_array(), *jt = json_array();
  if (!o->json)
    printf("group store %s: %zu instance%s, %zu task pointer%s\n", o->path,
           n_inst, n_inst == 1 ? "" : "s", s.n, s.n == 1 ? "" : "s");
  for (size_t i = 0; inst && i < n_inst; i++) {
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/instances/%s", o->path, inst[i]);
    bool alive = sl__task_inst_alive(dir);
    uint64_t *ids = NULL;
    size_t n = 0;
    if (tool_list_ids(dir, &ids, &n)) {
      rc = TOOL_USAGE;
      continue;
    }
    json_t *chks = json_array();
    if (!o->json)
      printf("\ninstance %s (%s)\n", inst[i],
             alive ? "alive: its process holds the lock"
                   : "gone: nobody holds its lock");
    tool_list_rows(dir, ids, n, o->json, chks);
    if (!o->json && !n)
      printf("no checkpoints\n");
    json_array_append_new(ji, json_pack("{s:s,s:s,s:b,s:o}", "name", inst[i],
                                        "path", dir, "alive", alive,
                                        "checkpoints", chks));
    free(ids);
  }
  /* Tasks are named by partition (one keyed stage) or by topic and
   * partition (repartition topics): the column fits the longest. */
  int width = 5;
  for (size_t i = 0; i < s.n; i++)
    if ((int)strlen(s.tasks[i]) > width)
      width = (int)strlen(s.tasks[i]);
  if (!o->json && s.n)
    printf("\n%-*s %-24s %10s %-10s %-5s  %s\n", width, "TASK",
           "TOPIC[PARTITION]", "OFFSET", "STATUS", "ALIVE", "CHECKPOINT");
  for (size_t i = 0; i < s.n; i++) {
    sl__task_ptr p;
    char err[1024], why[512], tp[300];
    const char *t = s.tasks[i];
    int r = sl__task_ptr_read_file(o->path, t, &p, err, sizeof(err));
    if (r != 1) {
      /* A pointer that went away since the listing reads as none. */
      const char *e = r == 0 ? "its pointer went away while listing" : err;
      json_array_append_new(jt, json_pack("{s:o,s:s,s:s}", "task", task_json(t),
                                          "status", "damaged", "reason", e));
      if (!o->json)
        printf("%-*s damaged: %s\n", width, t, e);
      continue;
    }
    char inst_name[256], chk[4800];
    bool alive;
    /* Nothing but a pending checkpoint: the task's first snapshot is
     * being committed (or its owner died in that commit). */
    const char *named = p.checkpoint[0] ? p.checkpoint : p.pending;
    owner_of(o->path, named, inst_name, sizeof(inst_name), &alive);
    snprintf(chk, sizeof(chk), "%s/%s", o->path, p.checkpoint);
    const char *st = !p.checkpoint[0] && p.pending[0] ? "pending"
                     : p.checkpoint[0] && is_dir(chk)
                         ? tool_quick_status(chk, why, sizeof(why))
                         : "missing";
    json_t *j = ptr_json(o->path, &p);
    json_object_set_new(j, "task", task_json(t));
    json_object_set_new(j, "status", json_string(st));
    json_object_set_new(j, "instance", json_string(inst_name));
    json_object_set_new(j, "alive", json_boolean(alive));
    json_array_append_new(jt, j);
    if (o->json)
      continue;
    snprintf(tp, sizeof(tp), "%s[%" PRId32 "]", p.topic, p.partition);
    printf("%-*s %-24s %10" PRId64 " %-10s %-5s  %s\n", width, t, tp, p.offset,
           st, alive ? "yes" : "no", p.checkpoint[0] ? p.checkpoint : "-");
    if (p.pending[0]) {
      char pend[1400];
      tool_pending_text(o->path, &p, pend, sizeof(pend));
      printf("%*s %s\n", width, "", pend);
    }
  }
  if (o->json) {
    json_t *doc = json_pack("{s:s,s:o,s:o}", "dir", o->path, "instances", ji,
                            "tasks", jt);
    tool_print_json(doc);
    json_decref(doc);
  } else {
    if (!s.n)
      printf("\nno task pointers yet\n");
    json_decref(ji);
    json_decref(jt);
  }
  free_names(inst, n_inst);
  store_close(&s);
  return rc;
}

/* ---- verify ------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void
problem(json_t *rep, const char *file, const char *fmt, ...) {
  char msg[1500];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  json_array_append_new(json_object_get(rep, "problems"),
                        json_pack("{s:s,s:s}", "file", file, "error", msg));
}

/* One task: its pointer, the checkpoint it names (the whole check), and
 * that the checkpoint holds the task: a checkpoint of group mode, with
 * the task's key group, and its partition at the pointer's offset in
 * the source's position. Returns the exit code; *out is the report. */
static int verify_task(const char *root, const char *name, json_t **out) {
  char file[700], err[1024];
  /* The task's pointer, whichever file holds it, until it is read. */
  snprintf(file, sizeof(file), "tasks/%s", name);
  json_t *rep = json_pack("{s:o,s:s,s:[],s:[]}", "task", task_json(name),
                          "pointer", file, "problems", "notes");
  *out = rep;
  sl__task_ptr p;
  int r = sl__task_ptr_read_file(root, name, &p, err, sizeof(err));
  if (r == 1) {
    sl__task_ptr_file(name, p.gen, file, sizeof(file));
    json_object_set_new(rep, "pointer", json_string(file));
  }
  if (r == 0) {
    tool_err("task %s has no pointer in %s/tasks (it has no "
             "snapshot yet: it starts empty when assigned)",
             name, root);
    json_decref(rep);
    *out = NULL;
    return TOOL_USAGE;
  }
  if (r < 0) {
    json_object_set_new(rep, "status", json_string("damaged"));
    problem(rep, file, "%s", err);
    return TOOL_DAMAGED;
  }
  json_object_set_new(rep, "target", ptr_json(root, &p));
  /* Its key group: the partition (a named pointer's name says it). */
  uint32_t task = p.named ? (uint32_t)p.partition : p.task;
  if (p.partition < 0 || (uint32_t)p.partition != task) {
    json_object_set_new(rep, "status", json_string("damaged"));
    problem(rep, file,
            "%s names %s[%" PRId32 "]: task %" PRIu32 " is partition %" PRIu32
            " of its topic",
            file, p.topic, p.partition, task, task);
    return TOOL_DAMAGED;
  }
  char pend[1400];
  if (p.pending[0]) {
    tool_pending_text(root, &p, pend, sizeof(pend));
    json_array_append_new(json_object_get(rep, "notes"), json_string(pend));
  }
  if (!p.checkpoint[0] && p.pending[0]) {
    /* Its first snapshot's commit is under way: nothing else to check
     * until a checkpoint completes or the next owner resolves it. */
    json_object_set_new(rep, "status", json_string("pending"));
    return TOOL_OK;
  }
  char chk[4800];
  snprintf(chk, sizeof(chk), "%s/%s", root, p.checkpoint);
  if (!is_dir(chk)) {
    json_object_set_new(rep, "status", json_string("damaged"));
    problem(rep, file, "%s names %s, which does not exist", file, p.checkpoint);
    return TOOL_DAMAGED;
  }
  json_t *crep;
  int rc = tool_verify_report(chk, &crep);
  if (!crep) {
    json_object_set_new(rep, "status", json_string("damaged"));
    problem(rep, file, "%s names %s, which is not a checkpoint", file,
            p.checkpoint);
    return TOOL_DAMAGED;
  }
  json_object_set_new(rep, "status",
                      json_incref(json_object_get(crep, "status")));
  size_t i;
  json_t *pj;
  json_array_foreach(json_object_get(crep, "problems"), i, pj) {
    char f[1200];
    snprintf(f, sizeof(f), "%s/%s", p.checkpoint,
             json_string_value(json_object_get(pj, "file")));
    problem(rep, f, "%s: %s", p.checkpoint,
            json_string_value(json_object_get(pj, "error")));
  }
  json_array_extend(json_object_get(rep, "notes"),
                    json_object_get(crep, "notes"));
  json_object_set_new(rep, "checkpoint", crep);
  if (rc)
    return rc;
  tool_ckpt ck;
  if ((rc = tool_open(chk, &ck)))
    return rc;
  const tool_worker *w = tool_task_worker(&ck, task);
  int64_t off = tool_task_position(&ck, &p);
  if (!ck.m.kg_murmur2)
    problem(rep, p.checkpoint,
            "%s is not a checkpoint of group mode (no \"key_groups\": "
            "\"murmur2\" in _metadata): its key groups are not tasks",
            p.checkpoint);
  else if (!w)
    problem(rep, p.checkpoint,
            "%s has %" PRIu32 " key groups: none of them is task %" PRIu32,
            p.checkpoint, ck.max_par, task);
  else if (off != p.offset)
    problem(rep, p.checkpoint,
            "%s: source %s's position of %s[%" PRId32 "] is %s%" PRId64
            ", the pointer's offset %" PRId64,
            p.checkpoint, p.source, p.topic, p.partition,
            off < 0 ? "not recorded" : "", off < 0 ? (int64_t)0 : off,
            p.offset);
  if (w)
    json_object_set_new(rep, "worker", json_integer(w->index));
  tool_close(&ck);
  if (json_array_size(json_object_get(rep, "problems"))) {
    json_object_set_new(rep, "status", json_string("damaged"));
    return TOOL_DAMAGED;
  }
  return TOOL_OK;
}

static void print_task_report(json_t *rep) {
#define I(o, k) ((long long)json_integer_value(json_object_get(o, k)))
#define S(o, k) (json_string_value(json_object_get(o, k)))
  json_t *t = json_object_get(rep, "target"),
         *c = json_object_get(rep, "checkpoint");
  json_t *tj = json_object_get(rep, "task");
  if (json_is_string(tj))
    printf("task %s: %s", json_string_value(tj), S(rep, "status"));
  else
    printf("task %lld: %s", I(rep, "task"), S(rep, "status"));
  if (!strcmp(S(rep, "status"), "valid")) {
    char sz[32];
    printf(" (%s -> %s, %s[%lld] from offset %lld; checkpoint: %lld files, "
           "%s checked, %lld state entries, %lld timers)",
           S(rep, "pointer"), S(t, "checkpoint"), S(t, "topic"),
           I(t, "partition"), I(t, "offset"), I(c, "files_checked"),
           tool_size((uint64_t)I(c, "bytes_checked"), sz, sizeof(sz)),
           I(c, "state_entries"), I(c, "timers"));
  }
  printf("\n");
  size_t i;
  json_t *pj;
  json_array_foreach(json_object_get(rep, "problems"), i, pj) {
    printf("  %s\n", S(pj, "error"));
  }
  json_array_foreach(json_object_get(rep, "notes"), i, pj) {
    printf("  note: %s\n", json_string_value(pj));
  }
#undef I
#undef S
}

int store_verify(const tool_opts *o) {
  if (o->task >= 0) {
    json_t *rep;
    int rc = verify_task(o->path, o->task_name, &rep);
    if (!rep)
      return rc;
    if (o->json)
      tool_print_json(rep);
    else
      print_task_report(rep);
    json_decref(rep);
    return rc;
  }
  tool_store s;
  int rc = store_open(o->path, &s);
  if (rc)
    return rc;
  json_t *all = json_array();
  for (size_t i = 0; i < s.n; i++) {
    json_t *rep;
    int r = verify_task(o->path, s.tasks[i], &rep);
    if (r > rc)
      rc = r;
    if (!rep)
      continue;
    if (!o->json)
      print_task_report(rep);
    json_array_append_new(all, rep);
  }
  if (o->json) {
    json_t *doc = json_pack("{s:s,s:o}", "dir", o->path, "tasks", all);
    tool_print_json(doc);
    json_decref(doc);
  } else {
    if (!s.n)
      printf("no task pointers in %s\n", o->path);
    json_decref(all);
  }
  store_close(&s);
  return rc;
}

/* ---- The checkpoint of one task ----------------------------------------- */

int store_task_checkpoint(const tool_opts *o, sl__task_ptr *p, char *chk,
                          size_t len) {
  char err[1024];
  if (!tool_is_store(o->path)) {
    tool_err("--task: %s is not a group store (no instances/ or tasks/)",
             o->path);
    return TOOL_USAGE;
  }
  int r = sl__task_ptr_read_file(o->path, o->task_name, p, err, sizeof(err));
  if (r == 0) {
    tool_err("task %s has no pointer in %s/tasks (it has no snapshot yet: "
             "it starts empty when assigned)",
             o->task_name, o->path);
    return TOOL_USAGE;
  }
  if (r < 0) {
    tool_err("%s", err);
    return TOOL_DAMAGED;
  }
  if (!p->checkpoint[0] && p->pending[0]) {
    char pend[1400];
    tool_pending_text(o->path, p, pend, sizeof(pend));
    tool_err("task %ld has no complete snapshot yet: %s", o->task, pend);
    return TOOL_USAGE;
  }
  snprintf(chk, len, "%s/%s", o->path, p->checkpoint);
  if (!is_dir(chk)) {
    char file[700];
    sl__task_ptr_file(o->task_name, p->gen, file, sizeof(file));
    tool_err("task %s: %s names %s, which does not exist", o->task_name, file,
             p->checkpoint);
    return TOOL_DAMAGED;
  }
  return TOOL_OK;
}

/* ---- prune -------------------------------------------------------------- */

typedef struct gone {
  const tool_opts *o;
  json_t *arr;
} gone;

static void on_gone(const char *name, void *opaque) {
  gone *g = opaque;
  json_array_append_new(g->arr, json_string(name));
  if (!g->o->json)
    printf("%s %s/instances/%s (its process is gone and no pointer names its "
           "checkpoints)\n",
           g->o->dry_run ? "would remove" : "removed", g->o->path, name);
}

int store_prune(const tool_opts *o) {
  tool_store s;
  int rc = store_open(o->path, &s);
  if (rc)
    return rc;
  size_t n_inst;
  char **inst = instances(o->path, &n_inst);
  json_t *removed = json_array(), *kept = json_array();
  /* Retention per instance, as each process runs it on its own; then the
   * directories of gone instances that no pointer needs, as every
   * process removes them after its checkpoints. */
  for (size_t i = 0; inst && i < n_inst; i++) {
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/instances/%s", o->path, inst[i]);
    int r = tool_prune_dir(dir, o, &s, inst[i], removed, kept);
    if (r > rc)
      rc = r;
  }
  gone g = {o, json_array()};
  sl__task_gc(o->path, NULL, o->dry_run, on_gone, &g);
  if (o->json) {
    json_t *doc =
        json_pack("{s:s,s:I,s:b,s:o,s:o,s:o}", "dir", o->path, "keep",
                  (json_int_t)o->keep, "dry_run", o->dry_run, "removed",
                  removed, "kept", kept, "removed_instances", g.arr);
    tool_print_json(doc);
    json_decref(doc);
  } else {
    printf("kept %zu checkpoint director%s, %s %zu and %zu instance "
           "director%s\n",
           json_array_size(kept), json_array_size(kept) == 1 ? "y" : "ies",
           o->dry_run ? "would remove" : "removed", json_array_size(removed),
           json_array_size(g.arr), json_array_size(g.arr) == 1 ? "y" : "ies");
    json_decref(removed);
    json_decref(kept);
    json_decref(g.arr);
  }
  free_names(inst, n_inst);
  store_close(&s);
  return rc;
}
