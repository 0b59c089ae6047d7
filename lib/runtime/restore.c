/* SPDX-License-Identifier: Apache-2.0 */
/* Restore at a worker's start: the parts of the checkpoint being restored
 * that belong to the worker's instances — source positions and operator
 * state before they open, keyed state of the key groups the worker owns
 * and timers after. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/coord.h"
#include "runtime/barrier.h"
#include "core/conf.h"
#include "core/hash.h"
#include "state/keyed.h"
#include "state/state.h"
#include "time/timers.h"

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

/* Maps a snapshot's state ids to the worker backend's, registering the
 * names (restore registers states before operators ask for them). */
typedef struct id_map {
  sl__backend *to;
  uint32_t *ids;
  uint32_t n;
  uint32_t kg; /* of the entries being inserted (the backend checks it) */
  /* A checkpoint of an older key hash: each entry's key group is today's
   * hash's, and only those in [lo, hi) are this worker's. */
  bool repartition;
  uint32_t lo, hi;
} id_map;

static int insert_cb(uint32_t state, const void *key, size_t key_len,
                     const void *ns, size_t ns_len, const void *mk,
                     size_t mk_len, const void *val, size_t len, void *opaque) {
  id_map *m = opaque;
  if (state >= m->n)
    return SL_ERR_CORRUPT;
  uint32_t kg = m->kg;
  if (m->repartition) {
    kg = sl__key_group(sl__hash64(key, key_len), m->to->max_par);
    if (kg < m->lo || kg >= m->hi)
      return 0;
  }
  return m->to->ops->insert(m->to, m->ids[state], kg, key, key_len, ns, ns_len,
                            mk, mk_len, val, len);
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
  /* Re-partitioned entries land in other key groups than counted. */
  if (be->ops->reserve && m->n && !m->repartition) {
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
    if (c && !sl__is_source(c) && c->node->uid && strlen(c->node->uid) == ul &&
        memcmp(c->node->uid, uid, ul) == 0)
      return sl_op_keyed(c) ? c : NULL;
  }
  return NULL;
}

static int restore_timers(sl__worker *w, sl__rd p, uint32_t lo, uint32_t hi,
                          bool repartition) {
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
    uint64_t h = sl__hash64(t.key, t.key_len);
    if (repartition)
      t.kg = sl__key_group(h, w->job->max_par);
    if (!k || !k->timers || t.kg < lo || t.kg >= hi)
      continue; /* another worker's, or of a dropped operator */
    int rc = sl__timers_add(k->timers, t.domain, t.ts, h, t.kg, t.key,
                            t.key_len, t.ns, t.ns_len);
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
  /* An older key hash put keys in other key groups: every file may hold
   * keys this worker owns now. */
  bool repart = rs->format < SL__HASH_FORMAT;
  id_map m = {.to = be, .repartition = repart, .lo = lo, .hi = hi};
  bool overlap = repart || (rf->head.kg_lo < hi && lo < rf->head.kg_hi);
  while (!rc && (r = sl__snap_next(&body, &t, &kg, &p)) == 1) {
    if (t == SL__SEC_TIMERS)
      rc = restore_timers(w, p, lo, hi, repart);
    else if (!overlap || !be)
      continue;
    else if (t == SL__SEC_STATES)
      rc = read_states(be, p, &m);
    else if (t == SL__SEC_ENTRIES && (repart || (kg >= lo && kg < hi))) {
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
    uint32_t a = lo > rf->head.kg_lo && !repart ? lo : rf->head.kg_lo;
    uint32_t b = hi < rf->head.kg_hi && !repart ? hi : rf->head.kg_hi;
    for (uint32_t g = a; !rc && g < b; g++) {
      m.kg = g;
      rc = snap->ops->kg_scan(snap, g, insert_cb, &m);
    }
    snap->ops->close(snap);
  }
  free(m.ids);
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
