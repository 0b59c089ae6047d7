/* SPDX-License-Identifier: Apache-2.0 */
/* The worker side of checkpoints: barriers from the worker's sources, the
 * worker's snapshot once every instance on it is aligned (source
 * positions, operator state, keyed state of the worker's backend, timers),
 * completion hooks, parking after the loop, and restore at start. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/internal.h"
#include "core/conf.h"
#include "core/hash.h"
#include "state/keyed.h"
#include "state/state.h"
#include "time/timers.h"

typedef struct sl_source_ctx src_t;

static int n_inst(const sl_job_t *job) {
  return job->g.n_nodes + job->g.n_xchg;
}

static bool is_source(const sl_ctx_t *c) {
  return c->node->kind == SL__NODE_SOURCE && c->ops == &sl__source_ops;
}

/* ---- Alignment ---------------------------------------------------------- */

static bool inst_aligned(const sl__worker *w, const sl_ctx_t *c) {
  if (is_source(c))
    return ((const src_t *)c)->done || w->ckpt_injected == w->ckpt_id;
  if (c->bar_done == w->ckpt_id || c->ended)
    return true;
  for (int i = 0; i < c->n_ports; i++)
    if (!c->ports[i].ended)
      return false;
  return true;
}

static bool worker_aligned(const sl__worker *w) {
  for (int i = 0; i < n_inst(w->job); i++)
    if (w->inst[i] && !inst_aligned(w, w->inst[i]))
      return false;
  return true;
}

/* ---- Snapshot ----------------------------------------------------------- */

typedef struct scan_ctx {
  sl_buf_t *b;
  uint64_t n;
  int rc;
} scan_ctx;

static int put_entry(uint32_t state, const void *key, size_t key_len,
                     const void *ns, size_t ns_len, const void *mk,
                     size_t mk_len, const void *val, size_t len, void *opaque) {
  scan_ctx *s = opaque;
  sl_buf_t *b = s->b;
  uint8_t has_mk = mk != NULL;
  int rc = sl__buf_u32(b, state);
  if (!rc)
    rc = sl__buf_bytes(b, key, key_len);
  if (!rc)
    rc = sl__buf_bytes(b, ns, ns_len);
  if (!rc)
    rc = sl_buf_append(b, &has_mk, 1);
  if (!rc && has_mk)
    rc = sl__buf_bytes(b, mk, mk_len);
  if (!rc)
    rc = sl__buf_bytes(b, val, len);
  s->n++;
  return rc;
}

static int put_timer(const sl__timer_view *v, int domain, void *opaque) {
  scan_ctx *s = opaque;
  sl_buf_t *b = s->b;
  uint8_t d = (uint8_t)domain;
  int rc = sl__buf_u32(b, v->kg);
  if (!rc)
    rc = sl_buf_append(b, &d, 1);
  if (!rc)
    rc = sl__buf_u64(b, (uint64_t)v->ts);
  if (!rc)
    rc = sl__buf_bytes(b, v->key, v->key_len);
  if (!rc)
    rc = sl__buf_bytes(b, v->ns, v->ns_len);
  s->n++;
  return rc;
}

/* src: a source subtask, whose event time follows its blob. */
static int snap_blob(sl_buf_t *b, uint32_t type, const char *uid,
                     const src_t *src, const sl_buf_t *blob) {
  size_t mark;
  int rc = sl__snap_begin_section(b, type, SL__SNAP_NO_KG, &mark);
  if (!rc)
    rc = sl__buf_bytes(b, uid, strlen(uid));
  if (!rc && src)
    rc = sl__buf_u32(b, (uint32_t)sl_source_ctx_subtask((src_t *)src));
  if (!rc)
    rc = sl__buf_bytes(b, blob->data, blob->len);
  if (!rc && src) {
    uint8_t flags = (uint8_t)((src->wmgen.idle ? SL__SRC_IDLE : 0) |
                              (src->finished ? SL__SRC_FINISHED : 0));
    rc = sl__buf_u32(b, SL__SRC_TIME_MAGIC);
    if (!rc)
      rc = sl__buf_u32(b, (uint32_t)sl_source_ctx_subtasks((src_t *)src));
    if (!rc)
      rc = sl__buf_u64(b, (uint64_t)src->wmgen.max_ts);
    if (!rc)
      rc = sl_buf_append(b, &flags, 1);
  }
  if (!rc)
    sl__snap_end_section(b, mark);
  return rc;
}

static int snap_hooks(sl__worker *w, sl__wsnap *s) {
  sl_job_t *job = w->job;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (!c)
      continue;
    sl_buf_t blob;
    sl__buf_init(&blob);
    int rc = 0;
    if (is_source(c)) {
      const sl_source_ops_t *o = c->node->src_ops;
      if (!o->snapshot)
        continue;
      rc = o->snapshot((src_t *)c, s->id, &blob, c->node->src_opaque);
      if (!rc)
        rc = snap_blob(&s->file, SL__SEC_SOURCE, c->node->uid, (src_t *)c,
                       &blob);
    } else if (c->ops->snapshot && c->node->uid) {
      rc = c->ops->snapshot(c, s->id, &blob);
      if (!rc)
        rc = snap_blob(&s->file, SL__SEC_OPSTATE, c->node->uid, NULL, &blob);
    }
    sl__buf_free(&blob);
    if (rc) {
      snprintf(s->err, sizeof(s->err), "operator \"%s\": snapshot failed: %s",
               c->node->uid ? c->node->uid : "?", sl_strerror(rc));
      return rc < 0 ? rc : SL_ERR_USER;
    }
  }
  return 0;
}

static int snap_keyed(sl__worker *w, sl__wsnap *s, bool native_ok) {
  sl__backend *be = w->be;
  /* Expired entries are not worth writing (Flink's cleanup on snapshot). */
  for (int i = 0; be && i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    sl__keyed *k = c && !is_source(c) ? sl_op_keyed(c) : NULL;
    if (k && k->state)
      sl__kstate_cleanup_full(k->state, c->wm);
  }
  sl_buf_t *b = &s->file;
  size_t mark;
  int rc = 0;
  if (be) {
    uint32_t n = be->ops->state_count(be);
    if ((rc = sl__snap_begin_section(b, SL__SEC_STATES, SL__SNAP_NO_KG,
                                     &mark)) ||
        (rc = sl__buf_u32(b, n)))
      return rc;
    for (uint32_t id = 0; id < n; id++) {
      const char *name;
      sl__btype type;
      if ((rc = be->ops->state_info(be, id, &name, &type)) ||
          (rc = sl__buf_u32(b, id)) || (rc = sl__buf_u32(b, (uint32_t)type)) ||
          (rc = sl__buf_bytes(b, name, strlen(name))))
        return rc;
    }
    sl__snap_end_section(b, mark);
    if (be->ops->snapshot && native_ok) {
      char dir[4096];
      sl__ckpt_path(w->job->ckpt, s->id, dir, sizeof(dir));
      size_t l = strlen(dir);
      snprintf(dir + l, sizeof(dir) - l, "/w%d.state", w->index);
      if ((rc = be->ops->snapshot(be, dir, s->err, sizeof(s->err))))
        return rc;
      s->native = true;
    } else {
      for (uint32_t kg = be->kg_lo; kg < be->kg_hi; kg++) {
        if ((rc = sl__snap_begin_section(b, SL__SEC_ENTRIES, kg, &mark)))
          return rc;
        scan_ctx sc = {b, 0, 0};
        if ((rc = be->ops->kg_scan(be, kg, put_entry, &sc)))
          return rc;
        if (sc.n == 0) {
          b->len = mark - 8; /* drop an empty section */
          continue;
        }
        sl__snap_end_section(b, mark);
        s->state_entries += sc.n;
      }
    }
  }
  sl_job_t *job = w->job;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    sl__keyed *k = c && !is_source(c) ? sl_op_keyed(c) : NULL;
    if (!k || !k->timers || !c->node->uid)
      continue;
    const char *uid = c->node->uid;
    if ((rc = sl__snap_begin_section(b, SL__SEC_TIMERS, SL__SNAP_NO_KG,
                                     &mark)) ||
        (rc = sl__buf_bytes(b, uid, strlen(uid))))
      return rc;
    scan_ctx sc = {b, 0, 0};
    if ((rc = sl__timers_foreach(k->timers, put_timer, &sc)))
      return rc;
    sl__snap_end_section(b, mark);
    s->timers += sc.n;
  }
  return 0;
}

/* Builds the worker's snapshot of checkpoint id; NULL when out of
 * memory. Other failures are in s->rc and s->err. With native_ok, a
 * backend with native snapshots writes its state directory into the
 * checkpoint; otherwise every entry goes into the file. */
static sl__wsnap *build_snapshot(sl__worker *w, uint64_t id, bool native_ok) {
  sl_job_t *job = w->job;
  sl__wsnap *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->id = id;
  s->worker = w->index;
  sl__kg_range(w->index, job->par, job->max_par, &s->kg_lo, &s->kg_hi);
  sl__buf_init(&s->file);
  sl__snap_head h = {.worker = (uint32_t)w->index,
                     .id = id,
                     .kg_lo = s->kg_lo,
                     .kg_hi = s->kg_hi,
                     .max_par = job->max_par};
  int rc = sl__snap_begin_file(&s->file, &h);
  if (!rc)
    rc = snap_hooks(w, s);
  if (!rc)
    rc = snap_keyed(w, s, native_ok);
  if (!rc)
    rc = sl__snap_finish_file(&s->file);
  if (rc && !s->err[0])
    snprintf(s->err, sizeof(s->err), "worker %d: snapshot failed: %s", w->index,
             sl_strerror(rc));
  s->rc = rc;
  return s;
}

/* Takes the worker's snapshot of checkpoint id and hands it to the
 * coordinator. Failures fail the checkpoint, not the job. */
static void take_snapshot(sl__worker *w, uint64_t id) {
  sl__wsnap *s = build_snapshot(w, id, true);
  if (!s) {
    sl__job_fail(w->job, SL_ERR_NOMEM, "out of memory for a checkpoint");
    return;
  }
  sl__ckpt_ack(w->job->ckpt, s);
}

int sl__ckpt_snapshot_image(sl__worker *w, void **data, size_t *len, char *err,
                            size_t errlen) {
  sl__wsnap *s = build_snapshot(w, 1, false);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  int rc = s->rc;
  if (rc) {
    snprintf(err, errlen, "%s", s->err);
  } else {
    *data = s->file.data;
    *len = s->file.len;
    sl__buf_init(&s->file);
  }
  sl__wsnap_free(s);
  return rc;
}

static int notify(sl__worker *w, uint64_t done) {
  sl_job_t *job = w->job;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (!c || !c->opened)
      continue;
    if (is_source(c)) {
      const sl_source_ops_t *o = c->node->src_ops;
      if (o->checkpoint_complete)
        o->checkpoint_complete((src_t *)c, done, c->node->src_opaque);
    } else if (c->ops->checkpoint_complete) {
      int rc = c->ops->checkpoint_complete(c, done);
      if (rc)
        return rc;
    }
  }
  return 0;
}

static void abandon(sl__worker *w, uint64_t id) {
  sl_job_t *job = w->job;
  w->ckpt_done = id;
  w->ckpt_id = 0;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (c && c->opened && !is_source(c) && c->ops->checkpoint_abort)
      c->ops->checkpoint_abort(c, id);
  }
}

int sl__ckpt_round(sl__worker *w) {
  sl_job_t *job = w->job;
  if (!job->ckpt)
    return 0;
  uint64_t t = atomic_load_explicit(&job->ckpt_trigger, memory_order_acquire);
  if (t > w->ckpt_done && t > w->ckpt_id)
    w->ckpt_id = t;
  if (w->ckpt_id && w->ckpt_id < t) {
    /* The coordinator gave this one up and moved on. */
    abandon(w, w->ckpt_id);
    w->ckpt_id = t;
  }
  uint64_t id = w->ckpt_id;
  if (id && w->ckpt_injected != id) {
    w->ckpt_injected = id;
    for (int i = 0; i < job->g.n_nodes; i++) {
      sl_ctx_t *c = w->inst[i];
      if (!c || !is_source(c) || ((src_t *)c)->done)
        continue;
      int rc = sl__forward_barrier(c, id);
      if (rc)
        return rc;
    }
  }
  if (id && worker_aligned(w)) {
    take_snapshot(w, id);
    w->ckpt_done = id;
    w->ckpt_id = 0;
  }
  uint64_t done =
      atomic_load_explicit(&job->ckpt_complete, memory_order_acquire);
  if (done > w->ckpt_notified) {
    w->ckpt_notified = done;
    return notify(w, done);
  }
  return 0;
}

void sl__ckpt_park(sl__worker *w, bool clean) {
  sl_job_t *job = w->job;
  struct sl__ckpt *ck = job->ckpt;
  if (!ck)
    return;
  pthread_mutex_lock(&ck->mu);
  if (!clean) {
    ck->exited++;
    pthread_cond_broadcast(&ck->cv);
    pthread_mutex_unlock(&ck->mu);
    return;
  }
  ck->parked++;
  pthread_cond_broadcast(&ck->cv);
  while (!ck->release) {
    uint64_t t = atomic_load(&job->ckpt_trigger);
    uint64_t done = atomic_load(&job->ckpt_complete);
    if (t > w->ckpt_done || done > w->ckpt_notified) {
      pthread_mutex_unlock(&ck->mu);
      if (t > w->ckpt_done) {
        /* Nothing moves on a finished worker: its state is consistent
         * with any barrier, so it snapshots without aligning. */
        w->ckpt_id = w->ckpt_injected = t;
        take_snapshot(w, t);
        w->ckpt_done = t;
        w->ckpt_id = 0;
      }
      if (done > w->ckpt_notified) {
        w->ckpt_notified = done;
        int rc = notify(w, done);
        if (rc && !sl__job_failing(job))
          sl__job_fail(job, rc, "worker %d: checkpoint completion failed: %s",
                       w->index, sl_strerror(rc));
      }
      pthread_mutex_lock(&ck->mu);
      continue;
    }
    pthread_cond_wait(&ck->cv, &ck->mu);
  }
  pthread_mutex_unlock(&ck->mu);
}

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
  bool any = false, same = true;
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
  if (!same) {
    s->rt_max_ts = min_ts;
    s->rt_idle = false;
  }
  return 0;
}

int sl__ckpt_restore_early(sl__worker *w) {
  sl_job_t *job = w->job;
  const sl__restore *rs = job->ckpt ? job->ckpt->rs : NULL;
  if (!rs)
    return 0;
  /* Native keyed state of exactly this worker's key groups, of the same
   * backend: the backend starts from it (opened by the first keyed
   * instance). */
  uint32_t lo, hi;
  sl__kg_range(w->index, job->par, job->max_par, &lo, &hi);
  const char *be_name = sl__conf_str(job->conf, "state.backend");
  for (int f = 0; f < rs->n_files; f++) {
    const sl__rfile *rf = &rs->files[f];
    if (rf->native_dir && rf->head.kg_lo == lo && rf->head.kg_hi == hi &&
        strcmp(rs->backend, be_name) == 0)
      w->restore_dir = rf->native_dir;
  }
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (!c || !c->node->uid)
      continue;
    bool src = is_source(c);
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

/* Maps a snapshot's state ids to the worker backend's, registering the
 * names (restore registers states before operators ask for them). */
typedef struct id_map {
  sl__backend *to;
  uint32_t *ids;
  uint32_t n;
  uint32_t kg; /* of the entries being inserted (the backend checks it) */
} id_map;

static int insert_cb(uint32_t state, const void *key, size_t key_len,
                     const void *ns, size_t ns_len, const void *mk,
                     size_t mk_len, const void *val, size_t len, void *opaque) {
  id_map *m = opaque;
  if (state >= m->n)
    return SL_ERR_CORRUPT;
  return m->to->ops->insert(m->to, m->ids[state], m->kg, key, key_len, ns,
                            ns_len, mk, mk_len, val, len);
}

static int read_states(sl__backend *be, sl__rd p, id_map *m) {
  uint32_t n;
  if (sl__snap_states_count(&p, &n))
    return SL_ERR_CORRUPT;
  m->ids = calloc(n ? n : 1, sizeof(*m->ids));
  if (!m->ids)
    return SL_ERR_NOMEM;
  m->n = n;
  for (uint32_t i = 0; i < n; i++) {
    sl__snap_state st;
    if (sl__snap_state_next(&p, &st) != 1 || st.id >= n || st.type > SL__BT_MAP)
      return SL_ERR_CORRUPT;
    char *s = strndup(st.name, st.name_len);
    if (!s)
      return SL_ERR_NOMEM;
    int rc = be->ops->register_state(be, s, (sl__btype)st.type, &m->ids[st.id]);
    free(s);
    if (rc)
      return rc;
  }
  return 0;
}

static int restore_entries(sl__backend *be, sl__rd p, id_map *m) {
  sl__snap_entry e;
  int r;
  if (be->ops->reserve && m->n) {
    /* Count per state first: see the reserve hint in backend.h. */
    size_t *cnt = calloc(m->n, sizeof(*cnt));
    if (!cnt)
      return SL_ERR_NOMEM;
    sl__rd q = p;
    while ((r = sl__snap_entry_next(&q, &e)) == 1)
      if (e.state < m->n)
        cnt[e.state]++;
    for (uint32_t i = 0; i < m->n; i++)
      if (cnt[i])
        be->ops->reserve(be, m->ids[i], m->kg, cnt[i]);
    free(cnt);
  }
  while ((r = sl__snap_entry_next(&p, &e)) == 1) {
    int rc = insert_cb(e.state, e.key, e.key_len, e.ns, e.ns_len, e.mk,
                       e.mk_len, e.val, e.val_len, m);
    if (rc)
      return rc;
  }
  return r;
}

static sl_ctx_t *keyed_inst(sl__worker *w, const void *uid, size_t ul) {
  for (int i = 0; i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (c && !is_source(c) && c->node->uid && strlen(c->node->uid) == ul &&
        memcmp(c->node->uid, uid, ul) == 0)
      return sl_op_keyed(c) ? c : NULL;
  }
  return NULL;
}

static int restore_timers(sl__worker *w, sl__rd p, uint32_t lo, uint32_t hi) {
  const void *uid;
  size_t ul;
  if (!sl__rd_bytes(&p, &uid, &ul))
    return SL_ERR_CORRUPT;
  sl_ctx_t *c = keyed_inst(w, uid, ul);
  sl__keyed *k = c ? sl_op_keyed(c) : NULL;
  sl__snap_timer t;
  int r;
  while ((r = sl__snap_timer_next(&p, &t)) == 1) {
    if (t.domain >= SL__TIMER_DOMAINS)
      return SL_ERR_CORRUPT;
    if (!k || !k->timers || t.kg < lo || t.kg >= hi)
      continue; /* another worker's, or of a dropped operator */
    int rc =
        sl__timers_add(k->timers, t.domain, t.ts, sl__hash64(t.key, t.key_len),
                       t.kg, t.key, t.key_len, t.ns, t.ns_len);
    if (rc)
      return rc;
  }
  return r;
}

static int restore_file(sl__worker *w, sl__backend *be, const sl__restore *rs,
                        const sl__rfile *rf, uint32_t lo, uint32_t hi) {
  sl__rd body = rf->body, p;
  uint32_t t, kg;
  int r, rc = 0;
  id_map m = {.to = be};
  bool overlap = rf->head.kg_lo < hi && lo < rf->head.kg_hi;
  while (!rc && (r = sl__snap_next(&body, &t, &kg, &p)) == 1) {
    if (t == SL__SEC_TIMERS)
      rc = restore_timers(w, p, lo, hi);
    else if (!overlap || !be)
      continue;
    else if (t == SL__SEC_STATES)
      rc = read_states(be, p, &m);
    else if (t == SL__SEC_ENTRIES && kg >= lo && kg < hi) {
      m.kg = kg;
      rc = m.ids ? restore_entries(be, p, &m) : SL_ERR_CORRUPT;
    }
  }
  if (!rc && r < 0)
    rc = r;
  if (!rc && overlap && be && rf->native_dir &&
      w->restore_dir != rf->native_dir) {
    /* Native state of other key-group ranges (the parallelism changed) or
     * of another backend: read the key groups this worker owns. */
    const sl__backend_ops *ops = sl__backend_find(rs->backend);
    char err[256] = "";
    sl__backend_conf bc = {.conf = w->job->conf,
                           .kg_lo = rf->head.kg_lo,
                           .kg_hi = rf->head.kg_hi,
                           .max_par = rf->head.max_par,
                           .worker = w->index};
    sl__backend *snap =
        ops && ops->open_snapshot
            ? ops->open_snapshot(rf->native_dir, &bc, err, sizeof(err))
            : NULL;
    if (!snap) {
      free(m.ids);
      return sl__job_fail(w->job, SL_ERR_CORRUPT, "restore: cannot open %s: %s",
                          rf->native_dir, err[0] ? err : "backend unavailable");
    }
    uint32_t n = snap->ops->state_count(snap);
    free(m.ids);
    m.ids = calloc(n ? n : 1, sizeof(*m.ids));
    m.n = n;
    rc = m.ids ? 0 : SL_ERR_NOMEM;
    for (uint32_t i = 0; !rc && i < n; i++) {
      const char *name;
      sl__btype type;
      rc = snap->ops->state_info(snap, i, &name, &type);
      if (!rc)
        rc = be->ops->register_state(be, name, type, &m.ids[i]);
    }
    uint32_t a = lo > rf->head.kg_lo ? lo : rf->head.kg_lo;
    uint32_t b = hi < rf->head.kg_hi ? hi : rf->head.kg_hi;
    for (uint32_t g = a; !rc && g < b; g++) {
      m.kg = g;
      rc = snap->ops->kg_scan(snap, g, insert_cb, &m);
    }
    snap->ops->close(snap);
  }
  free(m.ids);
  return rc;
}

int sl__ckpt_restore_late(sl__worker *w) {
  sl_job_t *job = w->job;
  const sl__restore *rs = job->ckpt ? job->ckpt->rs : NULL;
  if (!rs)
    return 0;
  int rc = restore_late(w, rs);
  w->restore_dir = NULL; /* freed with the restore data */
  sl__ckpt_restored(job->ckpt);
  return rc;
}

static int restore_late(sl__worker *w, const sl__restore *rs) {
  sl_job_t *job = w->job;
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
  for (int f = 0; f < rs->n_files; f++) {
    int rc = restore_file(w, be, rs, &rs->files[f], lo, hi);
    if (rc)
      return sl__job_failing(job)
                 ? job->err
                 : sl__job_fail(job, rc,
                                "restore from checkpoint %llu (%s) failed on "
                                "worker %d: %s",
                                (unsigned long long)rs->id, rs->path, w->index,
                                sl_strerror(rc));
  }
  return 0;
}
