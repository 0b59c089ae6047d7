/* SPDX-License-Identifier: Apache-2.0 */
/* Incremental snapshots of keyed state (incr.h): per key group a chain of
 * segment files, written by the worker that owns it and read back by
 * restore, verify and sluice-ckpt. */
#include "checkpoint/incr.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint/codec.h"
#include "core/hash.h"
#include "state/backend.h"

/* A key group is written whole again when its chain reaches CHAIN_MAX +
 * kg % CHAIN_MAX links (staggered, so that key groups changing at the
 * same pace are not all rewritten by the same checkpoint), or when its
 * changes take more bytes than its base (plus some slack for small key
 * groups): restore reads at most about twice the state, from a bounded
 * number of files. */
#define CHAIN_MAX 8
#define DELTA_SLACK 4096

bool sl__seg_name_ok(const char *name, size_t len) {
  /* kv-<digits>-w<digits>.seg */
  size_t i = 3;
  if (len < 11 || memcmp(name, "kv-", 3) != 0 ||
      memcmp(name + len - 4, ".seg", 4) != 0)
    return false;
  size_t d = i;
  while (i < len && name[i] >= '0' && name[i] <= '9')
    i++;
  if (i == d || i + 2 > len || name[i] != '-' || name[i + 1] != 'w')
    return false;
  i += 2;
  d = i;
  while (i < len && name[i] >= '0' && name[i] <= '9')
    i++;
  return i > d && i == len - 4;
}

/* ---- Writing ------------------------------------------------------------ */

typedef struct kgc {
  char **segs; /* names, base first */
  size_t n;
  uint64_t base, delta; /* bytes of the base section and of the changes */
  bool valid;           /* else: written whole next time */
} kgc;

struct sl__incr {
  uint32_t lo, hi;
  kgc *kg;
  uint64_t last_id;  /* this worker's previous snapshot */
  sl__incr_job *job; /* its key groups written whole, when it had any */
};

/* What one snapshot does with a key group. */
enum { KG_KEEP = 0, KG_DELTA, KG_WHOLE };
typedef struct kgj {
  uint8_t kind;
  size_t d_off, d_len; /* KG_DELTA: its section in job->pre */
  size_t c_off, c_len; /* not KG_WHOLE: its chain section in job->chains */
  uint64_t n, bytes;   /* KG_WHOLE, once written: entries, section bytes */
} kgj;

enum { JOB_PENDING = 0, JOB_RUNNING, JOB_DONE, JOB_CANCELLED };

struct sl__incr_job {
  _Atomic int refs; /* the worker's sl__incr and the snapshot's holder */
  _Atomic int state;
  bool ok; /* JOB_DONE: every key group written */
  uint32_t lo, hi;
  struct sl__backend *be; /* no freeze: written on the worker, at once */
  const sl__backend_ops *ops;
  struct sl__frozen *fz;
  sl_buf_t pre, chains;
  kgj *kg;
  char seg_name[64];
};

static void kgc_clear(kgc *c) {
  for (size_t i = 0; i < c->n; i++)
    free(c->segs[i]);
  free(c->segs);
  memset(c, 0, sizeof(*c));
}

/* A copy of name[0, len) appended to the n names of *v. */
static int names_push(char ***v, size_t *n, const void *name, size_t len) {
  char **a = realloc(*v, (*n + 1) * sizeof(*a));
  if (!a)
    return SL_ERR_NOMEM;
  *v = a;
  if (!(a[*n] = strndup(name, len)))
    return SL_ERR_NOMEM;
  (*n)++;
  return 0;
}

static int kgc_push(kgc *c, const void *name, size_t len) {
  return names_push(&c->segs, &c->n, name, len);
}

static void job_unref(sl__incr_job *j) {
  if (!j || atomic_fetch_sub_explicit(&j->refs, 1, memory_order_acq_rel) != 1)
    return;
  sl__buf_free(&j->pre);
  sl__buf_free(&j->chains);
  free(j->kg);
  free(j);
}

/* Ends a job nobody ran: its frozen key groups go back unrecorded.
 * Returns whether it was still pending. */
static bool job_cancel(sl__incr_job *j) {
  int st = JOB_PENDING;
  if (!atomic_compare_exchange_strong_explicit(&j->state, &st, JOB_CANCELLED,
                                               memory_order_acq_rel,
                                               memory_order_acquire))
    return false;
  if (j->fz)
    j->ops->frozen_release(j->fz);
  j->fz = NULL;
  return true;
}

void sl__incr_job_drop(sl__incr_job *j) {
  if (!j)
    return;
  job_cancel(j);
  job_unref(j);
}

/* The previous snapshot's key groups written whole: their chains start
 * over at its segment when it wrote them all, else they are written whole
 * again. A job still running is waited for (the coordinator runs it
 * before the next checkpoint starts, so this does not wait in practice). */
static void harvest(sl__incr *in) {
  sl__incr_job *j = in->job;
  if (!j)
    return;
  in->job = NULL;
  bool ok = false;
  if (!job_cancel(j)) {
    struct timespec ts = {0, 100000};
    while (atomic_load_explicit(&j->state, memory_order_acquire) == JOB_RUNNING)
      nanosleep(&ts, NULL);
    ok = atomic_load_explicit(&j->state, memory_order_acquire) == JOB_DONE &&
         j->ok;
  }
  for (uint32_t g = in->lo; g < in->hi; g++) {
    kgj *k = &j->kg[g - in->lo];
    kgc *c = &in->kg[g - in->lo];
    if (k->kind != KG_WHOLE)
      continue;
    kgc_clear(c);
    if (ok && k->n && kgc_push(c, j->seg_name, strlen(j->seg_name)))
      kgc_clear(c); /* out of memory: written whole next time */
    else if (ok) {
      c->base = k->bytes;
      c->valid = true;
    }
  }
  job_unref(j);
}

sl__incr *sl__incr_new(uint32_t kg_lo, uint32_t kg_hi) {
  sl__incr *in = calloc(1, sizeof(*in));
  if (!in || !(in->kg = calloc(kg_hi - kg_lo + 1, sizeof(*in->kg)))) {
    free(in);
    return NULL;
  }
  in->lo = kg_lo;
  in->hi = kg_hi;
  return in;
}

void sl__incr_free(sl__incr *in) {
  if (!in)
    return;
  /* A job the coordinator still holds finishes without this worker: its
   * backend copied what the job needs before it closed. */
  job_unref(in->job);
  for (uint32_t g = in->lo; g < in->hi; g++)
    kgc_clear(&in->kg[g - in->lo]);
  free(in->kg);
  free(in);
}

void sl__incr_out_free(sl__incr_out *o) {
  sl__buf_free(&o->seg);
  for (size_t i = 0; i < o->n_links; i++)
    free(o->links[i]);
  free(o->links);
  o->links = NULL;
  o->n_links = 0;
}

static int add_link(sl__incr_out *o, const char *name) {
  if (strcmp(name, o->seg_name) == 0)
    return 0;
  for (size_t i = 0; i < o->n_links; i++)
    if (strcmp(o->links[i], name) == 0)
      return 0;
  return names_push(&o->links, &o->n_links, name, strlen(name));
}

/* Key group kg on the worker: its changes into job->pre when its chain
 * allows (and its chain section, with this segment when it changed, into
 * job->chains), else marked to be written whole. */
static int begin_kg(sl__incr *in, sl__incr_job *j, sl__backend *be, uint32_t kg,
                    sl__incr_out *o) {
  kgc *c = &in->kg[kg - in->lo];
  kgj *k = &j->kg[kg - in->lo];
  size_t mark;
  int rc;
  bool whole = !c->valid || c->n >= CHAIN_MAX + kg % CHAIN_MAX ||
               c->delta > c->base + DELTA_SLACK;
  if (!whole) {
    sl_buf_t *pre = &j->pre;
    if ((rc = sl__snap_begin_section(pre, SL__SEC_DELTA, kg, &mark)))
      return rc;
    size_t start = mark - 8;
    sl__snap_recs w = {pre, 0};
    if ((rc = be->ops->kg_changes(be, kg, sl__snap_put_rec, &w)) < 0)
      return rc;
    if (rc == 1 || !w.n) { /* not known, or unchanged */
      pre->len = start;
      whole = rc == 1;
    } else {
      sl__snap_end_section(pre, mark);
      k->kind = KG_DELTA;
      k->d_off = start;
      k->d_len = pre->len - start;
      c->delta += k->d_len;
      o->entries += w.n;
      o->kg_delta++;
      if ((rc = kgc_push(c, o->seg_name, strlen(o->seg_name))))
        return rc;
    }
  }
  if (whole) {
    k->kind = KG_WHOLE;
    o->kg_full++;
    return 0;
  }
  if (!c->n)
    return 0;
  sl_buf_t *ch = &j->chains;
  k->c_off = ch->len;
  rc = sl__snap_begin_section(ch, SL__SEC_CHAIN, kg, &mark);
  if (!rc)
    rc = sl__buf_u32(ch, (uint32_t)c->n);
  for (size_t i = 0; !rc && i < c->n; i++)
    if (!(rc = sl__buf_bytes(ch, c->segs[i], strlen(c->segs[i]))))
      rc = add_link(o, c->segs[i]);
  if (!rc) {
    sl__snap_end_section(ch, mark);
    k->c_len = ch->len - k->c_off;
  }
  return rc;
}

/* Entries of a key group written whole, from the frozen view, or from
 * the backend itself on its worker. */
static int whole_entries(sl__incr_job *j, uint32_t kg, sl__snap_recs *w) {
  if (j->fz)
    return j->ops->frozen_scan(j->fz, kg, sl__snap_put_rec, w);
  int rc = j->ops->kg_scan(j->be, kg, sl__snap_put_rec, w);
  return rc ? rc : j->ops->kg_clean(j->be, kg);
}

int sl__incr_finish(sl__incr_job *j, sl_buf_t *snap, sl__incr_out *o) {
  int st = JOB_PENDING;
  if (!atomic_compare_exchange_strong_explicit(&j->state, &st, JOB_RUNNING,
                                               memory_order_acq_rel,
                                               memory_order_acquire))
    return SL_ERR_INVAL; /* given up */
  sl_buf_t *seg = &o->seg;
  size_t empty = seg->len, mark;
  int rc = 0;
  for (uint32_t kg = j->lo; !rc && kg < j->hi; kg++) {
    kgj *k = &j->kg[kg - j->lo];
    if (k->kind == KG_DELTA) {
      rc = sl_buf_append(seg, j->pre.data + k->d_off, k->d_len);
    } else if (k->kind == KG_WHOLE) {
      if ((rc = sl__snap_begin_section(seg, SL__SEC_ENTRIES, kg, &mark)))
        break;
      size_t start = mark - 8;
      sl__snap_recs w = {seg, 0};
      if ((rc = whole_entries(j, kg, &w)))
        break;
      if (!w.n) { /* empty: no section, no chain */
        seg->len = start;
      } else {
        sl__snap_end_section(seg, mark);
        k->bytes = seg->len - start;
      }
      k->n = w.n;
      o->entries += w.n;
    }
  }
  for (uint32_t kg = j->lo; !rc && kg < j->hi; kg++) {
    kgj *k = &j->kg[kg - j->lo];
    if (k->kind != KG_WHOLE) {
      if (k->c_len)
        rc = sl_buf_append(snap, j->chains.data + k->c_off, k->c_len);
      continue;
    }
    if (!k->n)
      continue;
    rc = sl__snap_begin_section(snap, SL__SEC_CHAIN, kg, &mark);
    if (!rc)
      rc = sl__buf_u32(snap, 1);
    if (!rc)
      rc = sl__buf_bytes(snap, j->seg_name, strlen(j->seg_name));
    if (!rc)
      sl__snap_end_section(snap, mark);
  }
  if (!rc && seg->len == empty) {
    sl__buf_free(seg); /* nothing new: no segment file */
    sl__buf_init(seg);
  } else if (!rc) {
    rc = sl__snap_finish_file(seg);
  }
  if (j->fz)
    j->ops->frozen_release(j->fz);
  j->fz = NULL;
  j->ok = rc == 0;
  atomic_store_explicit(&j->state, JOB_DONE, memory_order_release);
  return rc;
}

int sl__incr_begin(sl__incr *in, sl__backend *be, sl_buf_t *snap, uint64_t id,
                   uint64_t completed, int worker, uint32_t max_par,
                   sl__incr_out *o, sl__incr_job **job) {
  *job = NULL;
  memset(o, 0, sizeof(*o));
  sl__buf_init(&o->seg);
  harvest(in);
  /* The previous snapshot's segment is durable only if its checkpoint
   * completed (checkpoints complete in order, one at a time). If not,
   * the changes it consumed are in no file: start over. */
  if (in->last_id && completed < in->last_id)
    for (uint32_t g = in->lo; g < in->hi; g++)
      kgc_clear(&in->kg[g - in->lo]);
  in->last_id = id; /* a failure from here on has the same effect */
  sl__incr_job *j = calloc(1, sizeof(*j));
  if (!j || !(j->kg = calloc(in->hi - in->lo + 1, sizeof(*j->kg)))) {
    free(j);
    return SL_ERR_NOMEM;
  }
  atomic_init(&j->refs, 1);
  atomic_init(&j->state, JOB_PENDING);
  j->lo = in->lo;
  j->hi = in->hi;
  j->ops = be->ops;
  sl__buf_init(&j->pre);
  sl__buf_init(&j->chains);
  snprintf(o->seg_name, sizeof(o->seg_name), "kv-%" PRIu64 "-w%d.seg", id,
           worker);
  memcpy(j->seg_name, o->seg_name, sizeof(j->seg_name));
  sl__snap_head h = {.worker = (uint32_t)worker,
                     .id = id,
                     .kg_lo = in->lo,
                     .kg_hi = in->hi,
                     .max_par = max_par};
  int rc = sl__snap_begin_file(&o->seg, &h);
  if (!rc)
    rc = sl__snap_put_states(&o->seg, be);
  uint32_t *whole = NULL;
  size_t n_whole = 0;
  for (uint32_t kg = in->lo; !rc && kg < in->hi; kg++)
    rc = begin_kg(in, j, be, kg, o);
  if (!rc && o->kg_full && be->ops->freeze) {
    if (!(whole = malloc(o->kg_full * sizeof(*whole))))
      rc = SL_ERR_NOMEM;
    for (uint32_t kg = in->lo; !rc && kg < in->hi; kg++)
      if (j->kg[kg - in->lo].kind == KG_WHOLE)
        whole[n_whole++] = kg;
    if (!rc && !(j->fz = be->ops->freeze(be, whole, n_whole)))
      rc = SL_ERR_NOMEM;
  }
  free(whole);
  if (!rc && !j->fz) {
    /* Nothing frozen: everything is written here and now. */
    j->be = be;
    rc = sl__incr_finish(j, snap, o);
  }
  if (rc) {
    sl__incr_job_drop(j);
    return rc;
  }
  in->job = j; /* until the next snapshot harvests what it wrote */
  if (j->fz) {
    atomic_fetch_add_explicit(&j->refs, 1, memory_order_relaxed);
    *job = j;
  }
  return 0;
}

int sl__incr_put(sl__incr *in, sl__backend *be, sl_buf_t *snap, uint64_t id,
                 uint64_t completed, int worker, uint32_t max_par,
                 sl__incr_out *o) {
  sl__incr_job *j;
  int rc = sl__incr_begin(in, be, snap, id, completed, worker, max_par, o, &j);
  if (!rc && j)
    rc = sl__incr_finish(j, snap, o);
  sl__incr_job_drop(j);
  return rc;
}

int sl__incr_seed(sl__incr *in, uint32_t kg, sl__rd chain, uint64_t base,
                  uint64_t delta) {
  if (kg < in->lo || kg >= in->hi)
    return SL_ERR_RANGE;
  kgc *c = &in->kg[kg - in->lo];
  kgc_clear(c);
  uint32_t n;
  const void *name;
  size_t len;
  int r, rc = sl__chain_count(&chain, &n);
  while (!rc && (r = sl__chain_next(&chain, &name, &len)) == 1)
    rc = kgc_push(c, name, len);
  if (!rc && r < 0)
    rc = r;
  if (rc) {
    kgc_clear(c);
    return rc;
  }
  c->base = base;
  c->delta = delta;
  c->valid = true;
  return 0;
}

/* ---- Reading ------------------------------------------------------------ */

void sl__seg_free(sl__seg *sg) {
  free(sg->name);
  free(sg->path);
  free(sg->secs);
  memset(sg, 0, sizeof(*sg));
}

void sl__segs_free(sl__seg *segs, size_t n) {
  for (size_t i = 0; segs && i < n; i++)
    sl__seg_free(&segs[i]);
  free(segs);
}

int sl__seg_note(sl__seg *sg, uint32_t type, uint32_t kg, uint64_t off,
                 uint64_t len) {
  if (type == SL__SEC_STATES) {
    sg->have_states = true;
    sg->states_off = off;
    sg->states_len = len;
    return 0;
  }
  if (type != SL__SEC_ENTRIES && type != SL__SEC_DELTA)
    return 0;
  sl__seg_sec *a = realloc(sg->secs, (sg->n_secs + 1) * sizeof(*a));
  if (!a)
    return SL_ERR_NOMEM;
  sg->secs = a;
  a[sg->n_secs++] = (sl__seg_sec){type, kg, off, len};
  return 0;
}

int sl__seg_read(sl__seg *sg, const char *path, const char *name, char *err,
                 size_t errlen) {
  memset(sg, 0, sizeof(*sg));
  sl__snap_stream *st;
  int r, rc = sl__snap_stream_open(&st, path, NULL, 0, SL__STREAM_CRC_LAST,
                                   &sg->head, err, errlen);
  if (rc)
    return rc;
  uint32_t type, kg, crc;
  uint64_t len;
  while (!rc && (r = sl__snap_stream_next(st, &type, &kg, &len)) == 1)
    rc = sl__seg_note(sg, type, kg, sl__snap_stream_offset(st), len);
  if (!rc && r < 0) {
    rc = r;
    snprintf(err, errlen, "%s",
             r == SL_ERR_IO ? strerror(errno) : "a section is cut short");
  }
  if (!rc)
    rc = sl__snap_stream_finish(st, &crc, err, errlen);
  sl__snap_stream_close(st);
  if (!rc && (!(sg->name = strdup(name)) || !(sg->path = strdup(path))))
    rc = SL_ERR_NOMEM;
  if (rc)
    sl__seg_free(sg);
  return rc;
}

const sl__seg *sl__seg_find(const sl__seg *segs, size_t n, const void *name,
                            size_t len) {
  for (size_t i = 0; i < n; i++)
    if (strlen(segs[i].name) == len && memcmp(segs[i].name, name, len) == 0)
      return &segs[i];
  return NULL;
}

int sl__chain_count(sl__rd *p, uint32_t *n) {
  /* Each name takes at least 4 bytes. */
  if (!sl__rd_u32(p, n) || *n > (uint32_t)((p->end - p->p) / 4))
    return SL_ERR_CORRUPT;
  return 0;
}

int sl__chain_next(sl__rd *p, const void **name, size_t *len) {
  if (sl__rd_done(p))
    return 0;
  return sl__rd_bytes(p, name, len) ? 1 : SL_ERR_CORRUPT;
}

/* The section of seg for key group kg (the last, if several) and how
 * many there are. */
static const sl__seg_sec *seg_kg(const sl__seg *seg, uint32_t kg, int *count) {
  const sl__seg_sec *found = NULL;
  *count = 0;
  for (size_t i = 0; i < seg->n_secs; i++)
    if (seg->secs[i].kg == kg) {
      found = &seg->secs[i];
      (*count)++;
    }
  return found;
}

int sl__chain_check(sl__rd p, const sl__seg *segs, size_t n_segs, uint32_t kg,
                    char *err, size_t errlen) {
  uint32_t n, i = 0;
  const void *name;
  size_t len;
  int r;
  if (sl__chain_count(&p, &n)) {
    snprintf(err, errlen, "key group %u: malformed chain", kg);
    return SL_ERR_CORRUPT;
  }
  while ((r = sl__chain_next(&p, &name, &len)) == 1) {
    const sl__seg *s = sl__seg_find(segs, n_segs, name, len);
    int count;
    if (!s) {
      snprintf(err, errlen,
               "key group %u uses %.*s, which is missing, damaged or not "
               "listed in _metadata",
               kg, (int)len, (const char *)name);
      return SL_ERR_CORRUPT;
    }
    const sl__seg_sec *sec = seg_kg(s, kg, &count);
    if (!s->have_states || count != 1) {
      snprintf(err, errlen,
               "key group %u uses %s, which holds %d sections "
               "for it (expected 1)",
               kg, s->name, count);
      return SL_ERR_CORRUPT;
    }
    if (sec->type == SL__SEC_ENTRIES && i > 0) {
      snprintf(err, errlen,
               "key group %u: %s holds whole entries but is link %u of its "
               "chain",
               kg, s->name, i + 1);
      return SL_ERR_CORRUPT;
    }
    i++;
  }
  if (r < 0 || i != n) {
    snprintf(err, errlen, "key group %u: malformed chain", kg);
    return SL_ERR_CORRUPT;
  }
  return 0;
}

/* The changes of key group kg (the current section of st) into m->to. */
static int load_delta(sl__snap_stream *st, sl__snap_ids *m, uint32_t kg) {
  sl__backend *be = m->to;
  sl__snap_entry e;
  bool clear;
  int r;
  while ((r = sl__snap_stream_delta(st, &e, &clear)) == 1) {
    if (e.state >= m->n)
      return SL_ERR_CORRUPT;
    uint32_t id = m->ids[e.state];
    if (id == SL__SNAP_NO_STATE)
      continue;
    int rc;
    if (clear) {
      /* The key group of the job's keys, as insert checks it: in group
       * mode a Kafka partition (murmur2), else the key hash's. */
      uint64_t kh = sl__hash64(e.key, e.key_len);
      if (sl__backend_key_group(be, e.key, e.key_len, kh) != kg)
        return SL_ERR_CORRUPT;
      sl__skey k = {id,      kg,        sl__state_hash(kh, e.ns, e.ns_len),
                    e.key,   e.key_len, e.ns,
                    e.ns_len};
      rc = be->ops->del(be, &k);
    } else {
      rc = be->ops->insert(be, id, kg, e.key, e.key_len, e.ns, e.ns_len, e.mk,
                           e.mk_len, e.val, e.val_len);
    }
    if (rc < 0)
      return rc;
  }
  return r;
}

/* One link of a chain: seg's state names and its section for kg. */
static int load_link(const sl__seg *seg, const sl__seg_sec *sec,
                     const sl__snap_ids *m, uint32_t kg, sl__chain_io *io,
                     char *err, size_t errlen) {
  sl__snap_stream *st;
  sl__snap_head h;
  char why[256];
  int rc =
      sl__snap_stream_open(&st, seg->path, NULL, 0, 0, &h, why, sizeof(why));
  if (rc) {
    snprintf(err, errlen, "%s: %s", seg->name, why);
    return rc;
  }
  if (h.id != seg->head.id || h.kg_lo != seg->head.kg_lo ||
      h.kg_hi != seg->head.kg_hi || h.max_par != seg->head.max_par) {
    sl__snap_stream_close(st);
    snprintf(err, errlen, "%s changed since it was checked", seg->name);
    return SL_ERR_CORRUPT;
  }
  sl__snap_ids sm = {
      .to = m->to, .drop = m->drop, .drop_opaque = m->drop_opaque};
  sl__rd p;
  if (!(rc = sl__snap_stream_section(st, seg->states_off, seg->states_len)) &&
      !(rc = sl__snap_stream_payload(st, &p)))
    rc = sl__snap_load_states(p, &sm);
  if (!rc)
    rc = sl__snap_stream_section(st, sec->off, sec->len);
  if (!rc)
    rc = sec->type == SL__SEC_ENTRIES
             ? sl__snap_stream_load_entries(st, &sm, kg)
             : load_delta(st, &sm, kg);
  sl__snap_ids_free(&sm);
  if (io) {
    /* Section bytes as the writer counted them: header included. */
    if (sec->type == SL__SEC_ENTRIES)
      io->base += sec->len + 16;
    else
      io->delta += sec->len + 16;
    if (sl__snap_stream_peak(st) > io->peak)
      io->peak = sl__snap_stream_peak(st);
  }
  if (rc == SL_ERR_IO)
    snprintf(err, errlen, "%s cannot be read: %s", seg->name, strerror(errno));
  else if (rc == SL_ERR_CORRUPT)
    snprintf(err, errlen,
             "%s: key group %u: a record is cut short or malformed", seg->name,
             kg);
  sl__snap_stream_close(st);
  return rc;
}

int sl__chain_load(sl__rd p, const sl__seg *segs, size_t n_segs,
                   const sl__snap_ids *m, uint32_t kg, sl__chain_io *io,
                   char *err, size_t errlen) {
  uint32_t n;
  const void *name;
  size_t len;
  int r = 0, rc = sl__chain_count(&p, &n);
  if (rc)
    snprintf(err, errlen, "key group %u: malformed chain", kg);
  while (!rc && (r = sl__chain_next(&p, &name, &len)) == 1) {
    const sl__seg *s = sl__seg_find(segs, n_segs, name, len);
    int count = 0;
    const sl__seg_sec *sec = s ? seg_kg(s, kg, &count) : NULL;
    if (!s || !s->have_states || count != 1) {
      snprintf(err, errlen, "key group %u: %.*s is not a segment it can use",
               kg, (int)len, (const char *)name);
      return SL_ERR_CORRUPT;
    }
    rc = load_link(s, sec, m, kg, io, err, errlen);
  }
  if (!rc && r < 0) {
    snprintf(err, errlen, "key group %u: malformed chain", kg);
    rc = r;
  }
  return rc;
}

typedef struct scan_ctx {
  sl__backend *be;
  sl__chain_fn fn;
  void *opaque;
} scan_ctx;

static int scan_cb(uint32_t state, const void *key, size_t key_len,
                   const void *ns, size_t ns_len, const void *mk, size_t mk_len,
                   const void *val, size_t len, void *opaque) {
  scan_ctx *x = opaque;
  const char *name;
  sl__btype type;
  if (x->be->ops->state_info(x->be, state, &name, &type))
    return SL_ERR_CORRUPT;
  sl__snap_entry e = {state, key, ns, mk, val, key_len, ns_len, mk_len, len};
  return x->fn(name, (uint32_t)type, &e, x->opaque);
}

int sl__chain_scan(sl__rd p, const sl__seg *segs, size_t n_segs,
                   uint32_t max_par, uint32_t kg, sl__chain_fn fn,
                   void *opaque) {
  const sl__backend_ops *ops = sl__backend_find("hashmap");
  char err[256];
  sl__backend_conf bc = {.kg_lo = kg, .kg_hi = kg + 1, .max_par = max_par};
  sl__backend *be = ops ? ops->open(&bc, err, sizeof(err)) : NULL;
  if (!be)
    return SL_ERR_NOMEM;
  sl__snap_ids m = {.to = be};
  int rc = sl__chain_load(p, segs, n_segs, &m, kg, NULL, err, sizeof(err));
  scan_ctx x = {be, fn, opaque};
  if (!rc)
    rc = be->ops->kg_scan(be, kg, scan_cb, &x);
  be->ops->close(be);
  return rc;
}
