/* SPDX-License-Identifier: Apache-2.0 */
/* Restore at a worker's start: the parts of the checkpoint being restored
 * that belong to the worker's instances — source positions and operator
 * state before they open, keyed state of the key groups the worker owns
 * and timers after. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/bcast.h"
#include "checkpoint/codec.h"
#include "checkpoint/coord.h"
#include "checkpoint/layout.h"
#include "runtime/barrier.h"
#include "core/conf.h"
#include "core/hash.h"
#include "core/log.h"
#include "state/keyed.h"
#include "time/taskwm.h"

typedef struct sl_source_ctx src_t;

/* ---- Restore ------------------------------------------------------------ */

static int restore_late(sl__worker *w, const sl__restore *rs);

/* Collects the blobs of sections of type for uid from every file. */
static int collect(const sl__restore *rs, uint32_t type, const char *uid,
                   sl_blob_t **out, size_t *n) {
  *out = NULL;
  *n = 0;
  size_t cap = 0;
  for (int f = 0; f < rs->n_files; f++) {
    sl__rd body = rs->files[f].body, p;
    uint32_t t, kg;
    int r;
    while ((r = sl__snap_next(&body, &t, &kg, &p)) == 1) {
      if (t != type)
        continue;
      const void *u, *blob;
      size_t ul, bl;
      uint32_t sub;
      if (sl__snap_blob(p, type, &u, &ul, &sub, &blob, &bl))
        return SL_ERR_CORRUPT;
      if (ul != strlen(uid) || memcmp(u, uid, ul) != 0)
        continue;
      if (*n == cap) {
        cap = cap ? cap * 2 : 4;
        sl_blob_t *a = realloc(*out, cap * sizeof(*a));
        if (!a)
          return SL_ERR_NOMEM;
        *out = a;
      }
      (*out)[(*n)++] = (sl_blob_t){blob, bl};
    }
    if (r < 0)
      return r;
  }
  return 0;
}

/* The event time a source subtask continues from: that of the same
 * subtask when the number of subtasks is unchanged; otherwise (a parallel
 * source restored at another parallelism) the lowest highest-timestamp
 * of the old subtasks, which makes no record late that was not, and
 * neither idleness nor an end. Checkpoints without it leave the minimum. */
static int restore_source_time(const sl__restore *rs, src_t *s) {
  const char *uid = s->op.node->uid;
  uint32_t me = (uint32_t)sl_source_ctx_subtask(s);
  uint32_t subs = (uint32_t)sl_source_ctx_subtasks(s);
  bool any = false, same = true, is_wm = true;
  int64_t min_ts = SL_TS_MAX;
  for (int f = 0; f < rs->n_files; f++) {
    sl__rd body = rs->files[f].body, p;
    uint32_t t, kg;
    int r;
    while ((r = sl__snap_next(&body, &t, &kg, &p)) == 1) {
      const void *u, *blob;
      size_t ul, bl;
      uint32_t sub;
      sl__snap_src_time st;
      if (t != SL__SEC_SOURCE)
        continue;
      if (sl__snap_blob(p, t, &u, &ul, &sub, &blob, &bl))
        return SL_ERR_CORRUPT;
      if (ul != strlen(uid) || memcmp(u, uid, ul) != 0)
        continue;
      if ((r = sl__snap_source_time(p, &st)) < 0)
        return r;
      if (r == 0) {
        same = false; /* a subtask without event time: start from the min */
        min_ts = SL_TS_MIN;
        continue;
      }
      any = true;
      is_wm = is_wm && (st.flags & SL__SRC_WM) != 0;
      same = same && st.subtasks == subs;
      if (st.max_ts < min_ts)
        min_ts = st.max_ts;
      if (st.subtasks == subs && sub == me) {
        s->rt_max_ts = st.max_ts;
        s->rt_idle = (st.flags & SL__SRC_IDLE) != 0;
      }
    }
    if (r < 0)
      return r;
  }
  if (!any)
    return 0;
  s->rt_set = true;
  s->rt_is_wm = is_wm;
  if (!same) {
    s->rt_max_ts = min_ts;
    s->rt_idle = false;
  }
  return 0;
}

int sl__restore_early(sl__worker *w) {
  sl_job_t *job = w->job;
  const sl__restore *rs = sl__ckpt_restoring(job->ckpt);
  if (!rs)
    return 0;
  /* Native keyed state of exactly this worker's key groups, of the same
   * backend: the backend starts from it (opened by the first keyed
   * instance). */
  uint32_t lo, hi;
  sl__kg_range(w->index, job->par, job->max_par, &lo, &hi);
  const char *be_name = sl__conf_str(job->conf, "state.backend");
  for (int f = 0; f < rs->n_files && rs->format >= SL__HASH_FORMAT; f++) {
    const sl__rfile *rf = &rs->files[f];
    if (rf->native_dir && rf->head.kg_lo == lo && rf->head.kg_hi == hi &&
        strcmp(rs->backend, be_name) == 0)
      w->restore_dir = rf->native_dir;
  }
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (!c || !c->node->uid)
      continue;
    bool src = sl__is_source(c);
    const sl_source_ops_t *so = src ? c->node->src_ops : NULL;
    if (src ? !so->restore : !c->ops->restore)
      continue;
    sl_blob_t *blobs;
    size_t n;
    int rc = collect(rs, src ? SL__SEC_SOURCE : SL__SEC_OPSTATE, c->node->uid,
                     &blobs, &n);
    if (!rc && src) {
      ((src_t *)c)->rt_max_ts = SL_TS_MIN;
      rc = restore_source_time(rs, (src_t *)c);
    }
    if (!rc)
      rc = src ? so->restore((src_t *)c, blobs, n, c->node->src_opaque)
               : c->ops->restore(c, blobs, n);
    free(blobs);
    if (rc)
      return sl_op_fail(c, rc < 0 ? rc : SL_ERR_USER,
                        "restore from checkpoint %llu failed: %s",
                        (unsigned long long)rs->id, sl_strerror(rc));
  }
  return 0;
}

/* States ("<uid>/<name>") whose checkpointed data restore drops: their
 * layout changed, or the operator no longer registers them, and
 * restore.allow.dropped.state is set. */
typedef struct drops {
  char **names;
  size_t n;
  /* A task's restore with several keyed stages: the state of every
   * operator outside this stage is another task's (-1: none). */
  const sl__graph *g;
  int stage;
} drops;

/* Whether the operator of state name ("<uid>/<state>") is outside d's
 * stage. */
static bool other_stage(const drops *d, const char *name, size_t len) {
  /* The operator whose uid is the longest prefix before a '/'. */
  size_t best = 0;
  bool other = true;
  for (int i = 0; i < d->g->n_nodes; i++) {
    const sl__node *n = d->g->nodes[i];
    size_t ul = n->uid ? strlen(n->uid) : 0;
    if (ul > best && ul < len && memcmp(n->uid, name, ul) == 0 &&
        name[ul] == '/') {
      best = ul;
      other = n->stage != d->stage;
    }
  }
  return other;
}

static bool dropped(const char *name, size_t len, void *opaque) {
  const drops *d = opaque;
  if (d && d->g && d->stage >= 0 && other_stage(d, name, len))
    return true;
  for (size_t i = 0; d && i < d->n; i++)
    if (strlen(d->names[i]) == len && memcmp(d->names[i], name, len) == 0)
      return true;
  return false;
}

static void drops_free(drops *d) {
  for (size_t i = 0; i < d->n; i++)
    free(d->names[i]);
  free(d->names);
}

/* The instance of operator uid on w (keyed or not), or NULL. */
static sl_ctx_t *job_inst(sl__worker *w, const void *uid, size_t ul) {
  for (int i = 0; i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (c && c->node->uid && strlen(c->node->uid) == ul &&
        memcmp(c->node->uid, uid, ul) == 0)
      return c;
  }
  return NULL;
}

static sl_ctx_t *keyed_inst(sl__worker *w, const void *uid, size_t ul) {
  for (int i = 0; i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (c && !sl__is_source(c) && c->node->uid && strlen(c->node->uid) == ul &&
        memcmp(c->node->uid, uid, ul) == 0)
      return sl_op_keyed(c) ? c : NULL;
  }
  return NULL;
}

/* The keyed context of operator uid on this worker, NULL when the job has
 * none or it belongs to another stage than the task being loaded. */
static sl__keyed *stage_keyed(sl__worker *w, const void *uid, size_t ul,
                              const drops *drop) {
  sl_ctx_t *c = keyed_inst(w, uid, ul);
  if (c && drop->g && drop->stage >= 0 && c->node->stage != drop->stage)
    c = NULL; /* another stage's task */
  return c ? sl_op_keyed(c) : NULL;
}

static int restore_timers(sl__worker *w, sl__snap_stream *st, uint32_t lo,
                          uint32_t hi, bool repartition, const drops *drop) {
  const void *uid = NULL;
  size_t ul = 0;
  int r = sl__snap_stream_bytes(st, &uid, &ul);
  if (r != 1)
    return r < 0 ? r : SL_ERR_CORRUPT;
  sl__keyed *k = stage_keyed(w, uid, ul, drop);
  return sl__snap_stream_load_timers(st, k ? k->timers : NULL, lo, hi,
                                     repartition ? w->job->max_par : 0);
}

/* The watermarks of the tasks in [lo, hi) an instance held (group mode):
 * only a task's load (sl__restore_task) reads them; a whole restore starts
 * every watermark from the minimum, as in Flink. */
static int restore_taskwm(sl__worker *w, sl__snap_stream *st, uint32_t lo,
                          uint32_t hi, const drops *drop) {
  sl__rd p;
  const void *uid = NULL;
  size_t ul = 0;
  uint32_t kg;
  int64_t wm;
  int r = sl__snap_stream_payload(st, &p);
  if (r < 0)
    return r;
  if (!sl__rd_bytes(&p, &uid, &ul))
    return SL_ERR_CORRUPT;
  sl__keyed *k = stage_keyed(w, uid, ul, drop);
  while ((r = sl__snap_taskwm_next(&p, &kg, &wm)) == 1)
    if (k && k->tw && kg >= lo && kg < hi)
      sl__taskwm_load(k->tw, kg, wm);
  return r;
}

/* ---- State layouts (checkpoint/layout.h) -------------------------------- */

static int drop_add(drops *d, const char *name, size_t len) {
  if (dropped(name, len, d))
    return 0;
  char **a = realloc(d->names, (d->n + 1) * sizeof(*a));
  if (!a)
    return SL_ERR_NOMEM;
  d->names = a;
  if (!(a[d->n] = strndup(name, len)))
    return SL_ERR_NOMEM;
  d->n++;
  return 0;
}

/* Compares every state layout the checkpoint recorded with what the
 * job's operators registered on this worker (all of them, by now: states
 * are registered in open()). A state whose layout changed, or which its
 * operator no longer registers, fails the restore with the operator, the
 * state and what changed named, or with restore.allow.dropped.state is
 * dropped (logged). Nothing is read in the wrong layout, and nothing is
 * dropped without a word. State of operators the job no longer has is
 * the coordinator's check (check_uids). Checkpoints from before the
 * layout record have no layout section and skip this. */
/* Calls fn(arg, lr, slash) for every state layout the layout sections
 * of a snapshot file's body record; slash points at the '/' that ends
 * the state's operator uid in lr->state, NULL when there is none. *any
 * (may be NULL): whether the body has a layout section. */
typedef int (*layout_fn)(void *arg, const sl__layout_rec *lr,
                         const char *slash);
static int each_layout(sl__rd body, bool *any, layout_fn fn, void *arg) {
  sl__rd p;
  uint32_t t, kg, n;
  int r;
  while ((r = sl__snap_next(&body, &t, &kg, &p)) == 1) {
    if (t != SL__SEC_LAYOUT)
      continue;
    if (any)
      *any = true;
    if (sl__layout_count(&p, &n))
      return SL_ERR_CORRUPT;
    sl__layout_rec lr;
    while ((r = sl__layout_next(&p, &lr)) == 1) {
      int rc = fn(arg, &lr, memrchr(lr.state, '/', lr.state_len));
      if (rc)
        return rc;
    }
    if (r < 0)
      return SL_ERR_CORRUPT;
  }
  return r < 0 ? r : 0;
}

typedef struct check_ctx {
  sl__worker *w;
  const sl__restore *rs;
  drops *drop;
  bool allow;
  bool task; /* a task's load: its key group is scanned, never started from */
  bool log;  /* logs what it drops: worker 0's whole restore, a task's load */
  char what[96]; /* "restore from checkpoint N", "task K: load from ..." */
} check_ctx;

static void check_init(check_ctx *x, sl__worker *w, const sl__restore *rs,
                       drops *drop, int64_t task) {
  *x = (check_ctx){
      .w = w,
      .rs = rs,
      .drop = drop,
      .allow = sl__conf_bool(w->job->conf, "restore.allow.dropped.state"),
      .task = task >= 0,
      .log = task >= 0 || w->index == 0};
  if (task >= 0)
    snprintf(x->what, sizeof(x->what), "task %lld: load from checkpoint %llu",
             (long long)task, (unsigned long long)rs->id);
  else
    snprintf(x->what, sizeof(x->what), "restore from checkpoint %llu",
             (unsigned long long)rs->id);
}

static int check_layout(void *arg, const sl__layout_rec *lr,
                        const char *slash) {
  check_ctx *x = arg;
  sl__worker *w = x->w;
  sl_job_t *job = w->job;
  const sl__restore *rs = x->rs;
  drops *drop = x->drop;
  bool allow = x->allow;
  size_t ul = slash ? (size_t)(slash - lr->state) : 0;
  if (!slash || !job_inst(w, lr->state, ul) ||
      dropped(lr->state, lr->state_len, drop))
    return 0; /* state of an operator the job no longer has: see
                 check_uids */
  sl_ctx_t *c = keyed_inst(w, lr->state, ul);
  sl__keyed *k = c ? sl_op_keyed(c) : NULL;
  const char *name = slash + 1;
  size_t nl = lr->state_len - (size_t)(name - lr->state);
  sl_state_t *st = k && k->state ? sl__kstate_find(k->state, name, nl) : NULL;
  char now[512], why[1024];
  if (st) {
    sl__state_layout(st, now, sizeof(now));
    const char *adapts = sl__state_layout_adapts(st);
    if (!sl__layout_diff(lr->layout, lr->layout_len, now, adapts, why,
                         sizeof(why))) {
      /* The operator's restored hook adapts the state to the keys
       * that may change (sl__state_set_layout_adapts). */
      return adapts ? sl__state_set_restored(st, lr->layout, lr->layout_len)
                    : 0;
    }
  } else {
    snprintf(why, sizeof(why),
             "the operator no longer registers it (its layout was "
             "\"%.*s\")",
             (int)lr->layout_len, lr->layout);
  }
  int uid_len = (int)(slash - lr->state);
  if (!allow)
    return sl__job_fail(
        job, SL_ERR_STATE,
        "%s (%s): operator \"%.*s\", state \"%.*s\": %s; the checkpoint's "
        "values cannot be read as they are now (set "
        "restore.allow.dropped.state=true to drop this state)",
        x->what, rs->path, uid_len, lr->state, (int)nl, name, why);
  /* A native snapshot already holds the state's old bytes where
   * the operator reads them; one it no longer registers is merely
   * never read. */
  if (!x->task && w->restore_dir && st)
    return sl__job_fail(
        job, SL_ERR_STATE,
        "%s (%s): operator \"%.*s\", state \"%.*s\": %s; "
        "restore.allow.dropped.state cannot drop it from the native %s "
        "snapshot this worker starts from (restore once with another "
        "state.backend, or with the state's old layout)",
        x->what, rs->path, uid_len, lr->state, (int)nl, name, why, rs->backend);
  int rc = drop_add(drop, lr->state, lr->state_len);
  if (rc)
    return rc;
  if (x->log)
    sl__log(job->conf, job->name, SL__LOG_WARN, "checkpoint",
            "%s: operator \"%.*s\", state \"%.*s\" dropped "
            "(restore.allow.dropped.state): %s",
            x->what, uid_len, lr->state, (int)nl, name, why);
  return 0;
}

static int check_layouts(sl__worker *w, const sl__restore *rs, drops *drop) {
  check_ctx x;
  check_init(&x, w, rs, drop, -1);
  for (int f = 0; f < rs->n_files; f++) {
    int rc = each_layout(rs->files[f].body, NULL, check_layout, &x);
    if (rc)
      return rc;
  }
  return 0;
}

/* Key group kg from its chain of segment files. Unless a state was
 * dropped (the chain's files still hold it), the worker's next snapshot
 * continues the chain: the backend records changes from here on. */
static int restore_chain(sl__worker *w, sl__backend *be, const sl__restore *rs,
                         sl__rd chain, const sl__snap_ids *m, uint32_t kg,
                         const drops *drop) {
  sl__chain_io io = {0};
  char err[512];
  int rc =
      sl__chain_load(chain, rs->segs, rs->n_segs, m, kg, &io, err, sizeof(err));
  if (rc == SL_ERR_IO || rc == SL_ERR_CORRUPT)
    return sl__job_fail(w->job, rc, "restore from checkpoint %llu (%s): %s",
                        (unsigned long long)rs->id, rs->path, err);
  if (rc || drop->n || !be->ops->kg_changes)
    return rc;
  if (!w->incr && !(w->incr = sl__incr_new(be->kg_lo, be->kg_hi)))
    return SL_ERR_NOMEM;
  if ((rc = sl__incr_seed(w->incr, kg, chain, io.base, io.delta)))
    return rc;
  return be->ops->kg_clean(be, kg);
}

/* The keyed state and timers of one worker file, read from the file as
 * a stream (coord.h: sl__rfile), one entry or timer at a time. */
static int restore_file(sl__worker *w, sl__backend *be, const sl__restore *rs,
                        const sl__rfile *rf, uint32_t lo, uint32_t hi,
                        const drops *drop, bool task) {
  sl__snap_stream *st;
  sl__snap_head head;
  sl__rd p;
  uint32_t t = 0, kg = 0;
  uint64_t len;
  char err[256];
  int r, rc = sl__snap_stream_open(&st, rf->snap, rf->data, rf->len, 0, &head,
                                   err, sizeof(err));
  if (rc)
    return sl__job_fail(w->job, rc, "restore: cannot read %s: %s",
                        rf->snap ? rf->snap : "the snapshot", err);
  /* An older key hash put keys in other key groups: every file may hold
   * keys this worker owns now. */
  bool repart = rs->format < SL__HASH_FORMAT;
  sl__snap_ids m = {.to = be,
                    .drop = dropped,
                    .drop_opaque = (void *)drop,
                    .repartition = repart,
                    .lo = lo,
                    .hi = hi};
  bool overlap = repart || (rf->head.kg_lo < hi && lo < rf->head.kg_hi);
  while (!rc && (r = sl__snap_stream_next(st, &t, &kg, &len)) == 1) {
    if (t == SL__SEC_TIMERS)
      rc = restore_timers(w, st, lo, hi, repart, drop);
    else if (t == SL__SEC_TASKWM) {
      if (task)
        rc = restore_taskwm(w, st, lo, hi, drop);
    } else if (!overlap || !be)
      continue;
    else if (t == SL__SEC_STATES) {
      if (!(rc = sl__snap_stream_payload(st, &p)))
        rc = sl__snap_load_states(p, &m);
    } else if (t == SL__SEC_ENTRIES && (repart || (kg >= lo && kg < hi)))
      rc = sl__snap_stream_load_entries(st, &m, kg);
    else if (t == SL__SEC_CHAIN && kg >= lo && kg < hi) {
      /* The chain's names; each link is read from its segment file. */
      if (!(rc = sl__snap_stream_payload(st, &p)))
        rc = restore_chain(w, be, rs, p, &m, kg, drop);
    }
  }
  if (!rc && r < 0)
    rc = r;
  if (rc == SL_ERR_IO)
    rc = sl__job_fail(w->job, rc, "restore: cannot read %s: %s",
                      rf->snap ? rf->snap : "the snapshot", strerror(errno));
  sl__snap_stream_close(st);
  if (!rc && overlap && be && rf->native_dir &&
      w->restore_dir != rf->native_dir) {
    /* Native state of other key-group ranges (the parallelism changed) or
     * of another backend: read the key groups this worker owns. */
    char err[256] = "";
    bool missing;
    sl__native *n = sl__native_open(
        rf->native_dir, rs->backend, w->job->conf, rf->head.kg_lo,
        rf->head.kg_hi, rf->head.max_par, w->index, &missing, err, sizeof(err));
    if (!n) {
      sl__snap_ids_free(&m);
      return sl__job_fail(w->job, SL_ERR_CORRUPT, "restore: cannot open %s: %s",
                          rf->native_dir, err[0] ? err : "backend unavailable");
    }
    rc = sl__snap_load_native(n, &m, lo, hi);
    sl__native_close(n);
  }
  sl__snap_ids_free(&m);
  return rc;
}

/* For a task's load: checks the layouts the snapshot recorded for the
 * states of the task's stage as a whole restore does (check_layout: a
 * changed one fails the load, or with restore.allow.dropped.state is
 * dropped from it), and hands each state that adapts to layout keys
 * (sl__state_set_layout_adapts: a session window's gap) the layout
 * recorded for it, NULL when none was (a task's earlier load may have
 * handed it one). Every file of one checkpoint records the same layouts
 * (one job wrote them); the task's own file (the worker's that held kg)
 * is read. *layouts: whether the snapshot records layouts at all; one
 * written before they were recorded is not checked and hands the states
 * nothing. */
static int task_layouts(sl__worker *w, const sl__restore *rs, uint32_t kg,
                        drops *drop, bool *layouts) {
  *layouts = false;
  const sl__rfile *rf = NULL;
  for (int f = 0; f < rs->n_files && !rf; f++)
    if (rs->files[f].head.kg_lo <= kg && kg < rs->files[f].head.kg_hi)
      rf = &rs->files[f];
  for (int i = 0; i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    sl__keyed *k = c && !sl__is_source(c) &&
                           (drop->stage < 0 || c->node->stage == drop->stage)
                       ? sl_op_keyed(c)
                       : NULL;
    sl_state_t *st;
    for (size_t j = 0; k && k->state && (st = sl__kstate_state(k->state, j));
         j++) {
      int rc =
          sl__state_layout_adapts(st) ? sl__state_set_restored(st, NULL, 0) : 0;
      if (rc)
        return rc;
    }
  }
  check_ctx x;
  check_init(&x, w, rs, drop, kg);
  return rf ? each_layout(rf->body, layouts, check_layout, &x) : 0;
}

int sl__restore_task(sl__worker *w, const sl__restore *rs, int stage,
                     uint32_t kg) {
  char err[256];
  sl__backend *be = sl__worker_backend(w, err, sizeof(err));
  if (!be)
    return sl__job_fail(w->job, SL_ERR_CONF, "%s", err);
  drops drop = {.g = &w->job->g, .stage = stage};
  /* Before the state: what the layouts drop is not read. */
  bool layouts = false;
  int rc = task_layouts(w, rs, kg, &drop, &layouts);
  for (int f = 0; !rc && f < rs->n_files; f++)
    rc = restore_file(w, be, rs, &rs->files[f], kg, kg + 1, &drop, true);
  /* The operators of the task's stage: another stage's state of kg was
   * not loaded. */
  for (int i = 0; !rc && i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (c && !sl__is_source(c) && c->ops->restored &&
        (stage < 0 || c->node->stage == stage))
      rc = c->ops->restored(c, kg, kg + 1, layouts);
  }
  drops_free(&drop);
  return rc;
}

int sl__restore_late(sl__worker *w) {
  sl_job_t *job = w->job;
  const sl__restore *rs = sl__ckpt_restoring(job->ckpt);
  if (!rs)
    return 0;
  int rc = restore_late(w, rs);
  w->restore_dir = NULL; /* freed with the restore data */
  sl__ckpt_restored(job->ckpt);
  return rc;
}

/* Broadcast state of instance c: every instance of the old job wrote a
 * copy and the copies are equal (only broadcast records change them), so
 * the first one found serves every new instance, whatever the old and
 * new parallelism (Flink hands each new instance one copy too). */
static int restore_bcast(const sl__restore *rs, sl_ctx_t *c) {
  const char *uid = c->node->uid;
  for (int f = 0; f < rs->n_files; f++) {
    sl__rd body = rs->files[f].body, p;
    uint32_t t, kg;
    int r;
    while ((r = sl__snap_next(&body, &t, &kg, &p)) == 1) {
      const void *u;
      size_t ul;
      if (t != SL__SEC_BCAST)
        continue;
      if (!sl__rd_bytes(&p, &u, &ul))
        return SL_ERR_CORRUPT;
      if (ul == strlen(uid) && memcmp(u, uid, ul) == 0)
        return sl__snap_load_bcast(p, c->bcast);
    }
    if (r < 0)
      return r;
  }
  return 0;
}

static int restore_late(sl__worker *w, const sl__restore *rs) {
  sl_job_t *job = w->job;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (!c || !c->bcast || !c->node->uid)
      continue;
    int rc = restore_bcast(rs, c);
    if (rc)
      return sl_op_fail(c, rc,
                        "restore of broadcast state from checkpoint %llu "
                        "failed: %s",
                        (unsigned long long)rs->id, sl_strerror(rc));
  }
  uint32_t lo, hi;
  sl__kg_range(w->index, job->par, job->max_par, &lo, &hi);
  char err[256];
  /* Keyed state is restored into the worker's backend even before any
   * operator uses it; a job without keyed operators has no backend and
   * the restore check (setup) made sure no state is lost that way. */
  sl__backend *be = w->be;
  bool keyed = false;
  for (int i = 0; i < job->g.n_nodes; i++)
    keyed |= w->inst[i] && w->inst[i]->ops->keyed;
  if (!be && keyed && !(be = sl__worker_backend(w, err, sizeof(err))))
    return sl__job_fail(job, SL_ERR_CONF, "%s", err);
  drops drop = {0};
  int rc = check_layouts(w, rs, &drop);
  for (int f = 0; !rc && f < rs->n_files; f++)
    rc = restore_file(w, be, rs, &rs->files[f], lo, hi, &drop, false);
  drops_free(&drop);
  /* Keyed state is in place: operators adapt what the layout let change
   * (sl__state_set_layout_adapts) before any record or timer. */
  for (int i = 0; !rc && i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (c && !sl__is_source(c) && c->ops->restored &&
        (rc = c->ops->restored(c, lo, hi, true)))
      return sl_op_fail(c, rc, "restore from checkpoint %llu (%s) failed: %s",
                        (unsigned long long)rs->id, rs->path, sl_strerror(rc));
  }
  if (rc)
    return sl__job_failing(job)
               ? job->err
               : sl__job_fail(job, rc,
                              "restore from checkpoint %llu (%s) failed on "
                              "worker %d: %s",
                              (unsigned long long)rs->id, rs->path, w->index,
                              sl_strerror(rc));
  return 0;
}
