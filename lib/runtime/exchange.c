/* SPDX-License-Identifier: Apache-2.0 */
/* The key_by exchange: a bounded single-producer/single-consumer channel
 * per (producer worker, consumer worker) carrying batches of records plus
 * in-band control elements (watermark, idleness, end of input). Records
 * for the producer's own worker skip the channel: they are batched in
 * place for keyed readers (which take whole batches), else delivered
 * directly; so is everything at parallelism 1.
 *
 * Backpressure without deadlock: a producer that finds a channel full does
 * not sleep; it drains its own worker's inputs of exchanges downstream of
 * the full one (their operators are never on its call stack), so by
 * induction over the topological order some worker always makes progress. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/hash.h"
#include "runtime/runtime.h"

enum {
  EL_BATCH,
  EL_WATERMARK = SL__CTL_WATERMARK,
  EL_IDLE = SL__CTL_IDLE,
  EL_END = SL__CTL_END,
  EL_BARRIER = SL__CTL_BARRIER,
  EL_TASKWM, /* a task's watermark (sl__xchg_task_wm): kg, arg */
};

/* Records in the form their consumer takes them, their key and value
 * bytes copied into `bytes`, so a consumer gets the batch as it is,
 * without a conversion pass: for keyed readers sl_keyed_rec_t (the
 * record with its hash and key group), for any other (plain) the
 * sl_record_t alone, 40 bytes a record instead of 56 to cross between
 * the cores. recs has room for cap sl_keyed_rec_t either way. */
typedef struct batch {
  uint32_t n, cap;
  bool plain; /* recs holds sl_record_t */
  size_t used, bytes_cap;
  sl_keyed_rec_t *recs;
  char *bytes;
} batch;

static inline sl_record_t *batch_rec(const batch *b, uint32_t i) {
  return b->plain ? &((sl_record_t *)(void *)b->recs)[i] : &b->recs[i].rec;
}

typedef struct elem {
  uint32_t kind;
  uint32_t kg; /* EL_TASKWM */
  int64_t arg;
  batch *b;
} elem;

/* Lamport SPSC ring. head is written only by the consumer, tail only by
 * the producer; each sits on its own cache line, and each side caches the
 * other's index to touch the shared line only when it must. */
typedef struct ring {
  _Alignas(SL__CACHELINE) _Atomic uint32_t head;
  uint32_t tail_cache;
  _Alignas(SL__CACHELINE) _Atomic uint32_t tail;
  uint32_t head_cache;
  _Alignas(SL__CACHELINE) uint32_t mask;
  void *slots;
} ring;

/* The producer's fields and the consumer's on cache lines of their own:
 * the consumer tests `ended` in every round, the producer writes `open`
 * for every batch. */
typedef struct chan {
  ring data;   /* elem: producer -> consumer */
  ring spare;  /* batch *: empty batches back to the producer */
  batch *open; /* producer's batch being filled */
  /* Producer: ns spent waiting for room (backpressure), for metrics. */
  sl__counter full_ns;
  _Alignas(SL__CACHELINE) bool ended; /* consumer side: END received */
} chan;

struct sl__xchg {
  sl__node *node;
  int par;
  size_t batch_size;
  size_t batch_bytes;
  chan *ch; /* ch[producer * par + consumer]; diagonal unused */
  /* Per worker: records for the producing worker itself, held back only
   * when a keyed operator reads them (it takes batches), else delivered
   * at once without a copy. */
  batch **self;
  /* Per worker: a batch's records for the worker itself when no keyed
   * operator reads them, delivered as one batch (prod_process_batch). */
  struct direct {
    /* Written per record by its worker alone: a cache line of its own. */
    _Alignas(SL__CACHELINE) sl_record_t *recs; /* batch_size */
    size_t n;
    char *keys; /* copies of a key function's keys, SL__DIRECT_KEYS */
    size_t keys_used;
    /* prod_route_loop's next free record of each worker's batch. */
    char **next;
  } * direct;
};

#define SL__BATCH_BYTES (256 * 1024)
#define SL__DIRECT_KEYS (64 * 1024)

static uint32_t pow2_at_least(size_t n) {
  uint32_t c = 2;
  while (c < n)
    c <<= 1;
  return c;
}

static int ring_init(ring *r, size_t cap, size_t slot) {
  uint32_t c = pow2_at_least(cap);
  r->slots = calloc(c, slot);
  if (!r->slots)
    return SL_ERR_NOMEM;
  r->mask = c - 1;
  atomic_init(&r->head, 0);
  atomic_init(&r->tail, 0);
  r->head_cache = r->tail_cache = 0;
  return 0;
}

static bool ring_full(ring *r) {
  uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
  if (t - r->head_cache <= r->mask)
    return false;
  r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
  return t - r->head_cache > r->mask;
}

/* Producer: slot to fill, or NULL when full; publish with ring_push. */
static void *ring_slot(ring *r, size_t slot) {
  if (ring_full(r))
    return NULL;
  uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
  return (char *)r->slots + (size_t)(t & r->mask) * slot;
}
static void ring_push(ring *r) {
  uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
  atomic_store_explicit(&r->tail, t + 1, memory_order_release);
}

/* Consumer: next slot, or NULL when empty; retire with ring_pop. */
static void *ring_peek(ring *r, size_t slot) {
  uint32_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
  if (h == r->tail_cache) {
    r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (h == r->tail_cache)
      return NULL;
  }
  return (char *)r->slots + (size_t)(h & r->mask) * slot;
}
static void ring_pop(ring *r) {
  uint32_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
  atomic_store_explicit(&r->head, h + 1, memory_order_release);
}

static batch *batch_new(size_t cap, size_t bytes) {
  batch *b = calloc(1, sizeof(*b));
  if (!b)
    return NULL;
  b->recs = malloc(cap * sizeof(sl_keyed_rec_t));
  b->bytes = malloc(bytes);
  if (!b->recs || !b->bytes) {
    free(b->recs);
    free(b->bytes);
    free(b);
    return NULL;
  }
  b->cap = (uint32_t)cap;
  b->bytes_cap = bytes;
  return b;
}

static void batch_free(batch *b) {
  if (!b)
    return;
  free(b->recs);
  free(b->bytes);
  free(b);
}

/* On failure *out still holds the partial exchange, for
 * sl__xchg_destroy(). */
int sl__xchg_create(sl_job_t *job, sl__node *n, sl__xchg **out) {
  sl__xchg *x = *out = calloc(1, sizeof(*x));
  if (!x)
    return SL_ERR_NOMEM;
  x->node = n;
  x->par = job->par;
  x->batch_size = job->batch_size;
  x->batch_bytes = SL__BATCH_BYTES;
  if (!(x->self = calloc((size_t)job->par, sizeof(*x->self))) ||
      !(x->direct = aligned_alloc(SL__CACHELINE,
                                  (size_t)job->par * sizeof(*x->direct))))
    return SL_ERR_NOMEM;
  memset(x->direct, 0, (size_t)job->par * sizeof(*x->direct));
  /* Each worker's next[] on cache lines of its own: written per record. */
  size_t next_size = ((size_t)job->par * sizeof(char *) + SL__CACHELINE - 1) /
                     SL__CACHELINE * SL__CACHELINE;
  for (int w = 0; w < job->par; w++)
    if (!(x->direct[w].recs = malloc(x->batch_size * sizeof(sl_record_t))) ||
        (n->key_fn && !(x->direct[w].keys = malloc(SL__DIRECT_KEYS))) ||
        (job->par > 1 &&
         !(x->direct[w].next = aligned_alloc(SL__CACHELINE, next_size))))
      return SL_ERR_NOMEM;
  if (job->par == 1)
    return 0;
  size_t ch_size = (size_t)job->par * job->par * sizeof(chan);
  if (!(x->ch = aligned_alloc(SL__CACHELINE, ch_size)))
    return SL_ERR_NOMEM;
  memset(x->ch, 0, ch_size);
  for (int p = 0; p < job->par; p++) {
    for (int c = 0; c < job->par; c++) {
      if (p == c)
        continue;
      chan *ch = &x->ch[p * job->par + c];
      /* The spare ring holds every batch that can exist: those in the
       * data ring, the open one and the one being consumed. */
      if (ring_init(&ch->data, job->chan_cap, sizeof(elem)) ||
          ring_init(&ch->spare, (size_t)ch->data.mask + 3, sizeof(batch *)))
        return SL_ERR_NOMEM;
    }
  }
  return 0;
}

void sl__xchg_destroy(sl__xchg *x) {
  if (!x)
    return;
  if (x->ch) {
    for (int i = 0; i < x->par * x->par; i++) {
      chan *ch = &x->ch[i];
      elem *e;
      batch **bp;
      while (ch->data.slots && (e = ring_peek(&ch->data, sizeof(elem)))) {
        if (e->kind == EL_BATCH)
          batch_free(e->b);
        ring_pop(&ch->data);
      }
      while (ch->spare.slots && (bp = ring_peek(&ch->spare, sizeof(batch *)))) {
        batch_free(*bp);
        ring_pop(&ch->spare);
      }
      batch_free(ch->open);
      free(ch->data.slots);
      free(ch->spare.slots);
    }
    free(x->ch);
  }
  for (int w = 0; x->self && w < x->par; w++)
    batch_free(x->self[w]);
  free(x->self);
  for (int w = 0; x->direct && w < x->par; w++)
    free(x->direct[w].recs), free(x->direct[w].keys), free(x->direct[w].next);
  free(x->direct);
  free(x);
}

/* Both sides' cached indices made current: after a reset popped what the
 * consumer had not, its cached tail would be behind the head. */
static void ring_sync(ring *r) {
  r->tail_cache = atomic_load_explicit(&r->tail, memory_order_relaxed);
  r->head_cache = atomic_load_explicit(&r->head, memory_order_relaxed);
}

/* Batches in flight go back to their channel's spare ring (or are freed
 * when it is full), partly filled ones are emptied, and no channel has
 * ended. The ring indices are atomics: the metrics may read their fill
 * meanwhile. */
void sl__xchg_reset(sl__xchg *x) {
  for (int i = 0; x->ch && i < x->par * x->par; i++) {
    chan *ch = &x->ch[i];
    elem *e;
    while (ch->data.slots && (e = ring_peek(&ch->data, sizeof(elem)))) {
      batch *b = e->kind == EL_BATCH ? e->b : NULL;
      ring_pop(&ch->data);
      batch **slot = b ? ring_slot(&ch->spare, sizeof(batch *)) : NULL;
      if (slot) {
        *slot = b;
        ring_push(&ch->spare);
      } else {
        batch_free(b);
      }
    }
    if (ch->data.slots) {
      ring_sync(&ch->data);
      ring_sync(&ch->spare);
    }
    if (ch->open)
      ch->open->n = 0, ch->open->used = 0;
    ch->ended = false;
  }
  for (int w = 0; w < x->par; w++) {
    if (x->self[w])
      x->self[w]->n = 0, x->self[w]->used = 0;
    x->direct[w].n = 0;
    x->direct[w].keys_used = 0;
  }
}

/* ---- Producer side ------------------------------------------------------ */

void sl__backoff(unsigned *spins) {
  unsigned s = (*spins)++;
  if (s < 64) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else if (s < 128) {
    sched_yield();
  } else {
    long us = 10L << ((s - 128) / 16 > 6 ? 6 : (s - 128) / 16);
    struct timespec ts = {0, (us > 1000 ? 1000 : us) * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Pushes an element, helping downstream while the channel is full. */
static int chan_push(sl__worker *w, sl__xchg *x, chan *ch, const elem *e) {
  unsigned spins = 0;
  elem *slot;
  int64_t full_since = 0; /* the clock is read only when the ring is full */
  while (!(slot = ring_slot(&ch->data, sizeof(elem)))) {
    if (!full_since)
      full_since = sl__mono_ns();
    if (sl__job_failing(w->job))
      return w->job->err ? w->job->err : SL_ERR_STOPPED;
    int n = sl__xchg_drain(w, x->node->xidx);
    if (n < 0)
      return n;
    if (n == 0)
      sl__backoff(&spins);
    else
      spins = 0;
  }
  if (SL__UNLIKELY(full_since))
    sl__counter_add(&ch->full_ns, (uint64_t)(sl__mono_ns() - full_since));
  *slot = *e;
  ring_push(&ch->data);
  return 0;
}

static int chan_flush(sl__worker *w, sl__xchg *x, chan *ch) {
  if (!ch->open || ch->open->n == 0)
    return 0;
  elem e = {EL_BATCH, 0, 0, ch->open};
  ch->open = NULL;
  return chan_push(w, x, ch, &e);
}

static inline bool in_buf(const batch *b, const void *p) {
  uintptr_t a = (uintptr_t)p, lo = (uintptr_t)b->bytes;
  return p && a >= lo && a < lo + b->used;
}

/* Grows b's byte buffer to hold `need` more bytes. Records already in
 * the batch point into the old buffer, except those a batch of the
 * producer lent it (prod_process_batch) and those whose bytes are still
 * to be copied (batch_take_bytes): only the former move. */
static __attribute__((noinline)) int batch_grow(batch *b, size_t need) {
  size_t cap = b->bytes_cap * 2;
  while (cap - b->used < need)
    cap *= 2;
  char *nb = realloc(b->bytes, cap);
  if (!nb)
    return SL_ERR_NOMEM;
  for (uint32_t i = 0; i < b->n; i++) {
    sl_record_t *r = batch_rec(b, i);
    if (in_buf(b, r->key))
      r->key = nb + ((const char *)r->key - b->bytes);
    if (in_buf(b, r->value))
      r->value = nb + ((const char *)r->value - b->bytes);
  }
  b->bytes = nb;
  b->bytes_cap = cap;
  return 0;
}

/* An empty batch's buffer that large records grew back to the usual
 * size (a chunk of the routing pass may take up to ROUTE of them), so
 * that the spare batches keep `bytes` each, whatever passed. */
static __attribute__((noinline, cold)) void batch_shrink(batch *b,
                                                         size_t bytes) {
  char *nb = realloc(b->bytes, bytes);
  if (nb) {
    b->bytes = nb;
    b->bytes_cap = bytes;
  }
}

/* Makes room for `need` more bytes in *slot's batch, taking an empty
 * batch from spare (may be NULL) or allocating one; a batch taken holds
 * plain records or keyed ones as `plain` says. */
static batch *batch_room_slow(sl__xchg *x, batch **slot, ring *spare,
                              size_t need, bool plain) {
  batch *b = *slot;
  if (!b) {
    batch **bp = spare ? ring_peek(spare, sizeof(batch *)) : NULL;
    if (bp) {
      b = *bp;
      ring_pop(spare);
    } else if (!(b = batch_new(x->batch_size, x->batch_bytes))) {
      return NULL;
    }
    b->n = 0;
    b->used = 0;
    b->plain = plain;
    *slot = b;
  }
  if (b->bytes_cap - b->used < need && batch_grow(b, need))
    return NULL;
  return b;
}

static inline batch *batch_room(sl__xchg *x, batch **slot, ring *spare,
                                size_t need, bool plain) {
  batch *b = *slot;
  if (SL__LIKELY(b && b->bytes_cap - b->used >= need))
    return b;
  return batch_room_slow(x, slot, spare, need, plain);
}

/* Copies a key or value (usually a few bytes) into the batch; NULL for
 * an empty one, as the producer's record may have. */
static inline const void *batch_copy(batch *b, const void *p, size_t len) {
  if (!len)
    return NULL;
  char *d = b->bytes + b->used;
  if (len == 8) /* the common 8-byte key, without a libc call */
    memcpy(d, p, 8);
  else
    memcpy(d, p, len);
  b->used += len;
  return d;
}

static inline void batch_add(batch *b, uint64_t hash, uint32_t kg,
                             const sl_record_t *rec) {
  sl_record_t *r;
  if (b->plain) {
    r = batch_rec(b, b->n++);
  } else {
    sl_keyed_rec_t *k = &b->recs[b->n++];
    k->hash = hash;
    k->kg = kg;
    r = &k->rec;
  }
  r->ts = rec->ts;
  r->key_len = rec->key_len;
  r->key = batch_copy(b, rec->key, rec->key_len);
  r->value_len = rec->value_len;
  r->value = batch_copy(b, rec->value, rec->value_len);
}

/* memcpy for a value of 8 to 32 bytes (the usual size of a small
 * record's value) in two overlapping moves instead of a libc call. */
static inline void *copy_short(void *d, const void *s, size_t n) {
  char *dc = d;
  const char *sc = s;
  if (n >= 16 && n <= 32) {
    memcpy(dc, sc, 16);
    memcpy(dc + n - 16, sc + n - 16, 16);
  } else if (n >= 8 && n < 16) {
    memcpy(dc, sc, 8);
    memcpy(dc + n - 8, sc + n - 8, 8);
  } else {
    memcpy(dc, sc, n);
  }
  return d;
}

/* Copies the bytes of b's records from k on (appended with their
 * producer's pointers, prod_route_loop) into b's buffer, which the batch
 * then owns; keys of 8 bytes without a libc call. plain: b->plain, a
 * constant at each call. */
static inline __attribute__((always_inline)) int
batch_take_bytes(batch *b, uint32_t k, bool plain) {
  char *bytes = b->bytes;
  size_t used = b->used, cap = b->bytes_cap;
  const size_t stride = plain ? sizeof(sl_record_t) : sizeof(sl_keyed_rec_t);
  char *p = (char *)b->recs + (size_t)k * stride;
  char *end = (char *)b->recs + (size_t)b->n * stride;
  for (; p != end; p += stride) {
    sl_record_t *r = (sl_record_t *)(void *)p;
    size_t kl = r->key_len, vl = r->value_len;
    char *d = bytes + used;
    used += kl + vl;
    if (SL__UNLIKELY(used > cap)) {
      b->used = used - kl - vl;
      if (batch_grow(b, kl + vl))
        return SL_ERR_NOMEM;
      bytes = b->bytes;
      cap = b->bytes_cap;
      d = bytes + b->used;
    }
    if (SL__LIKELY(kl == 8)) {
      memcpy(d, r->key, 8);
      r->key = d;
    } else {
      r->key = kl ? memcpy(d, r->key, kl) : NULL;
    }
    r->value = vl ? copy_short(d + kl, r->value, vl) : NULL;
  }
  b->used = used;
  return 0;
}

/* Delivers a batch on the consumer instance of the exchange: keyed
 * records whole to every keyed operator reading it, record by record to
 * any other beside one; plain records (no keyed operator reads it) as
 * one batch. */
static int deliver_batch(sl_ctx_t *cons, const batch *b) {
  /* Between two batches no keyed operator of this worker is inside a
   * record: a waiting state query is answered here too, so its latency is
   * one batch, not one worker round (runtime/query.c). */
  sl__query_poll(cons->w);
  uint32_t n = b->n;
  sl__counter_add(&cons->in, n);
  sl__counter_add(&cons->out, n);
  if (b->plain) /* no keyed reader: handed on as one batch, as the
                 * producer's own records are (direct_flush) */
    return sl__emit_outs_batch(&cons->main, batch_rec(b, 0), n);
  for (int e = 0; e < cons->main.n; e++) {
    sl_ctx_t *to = cons->main.e[e].to;
    int port = cons->main.e[e].port, rc;
    if (to->ops->process_keyed) {
      sl__counter_add(&to->in, n);
      rc = to->ops->process_keyed(to, port, b->recs, n);
    } else {
      rc = 0;
      for (uint32_t i = 0; i < n && !rc; i++)
        rc = sl__deliver(to, port, &b->recs[i].rec);
    }
    if (rc)
      return rc;
  }
  return 0;
}

/* Delivers the records a worker held back for itself. Delivering may emit
 * into other exchanges, never into this one (the graph is acyclic), so the
 * batch is not appended to while it is read. */
static int self_flush(sl__xchg *x, sl__worker *w) {
  batch *b = x->self[w->index];
  if (!b || b->n == 0)
    return 0;
  int rc = deliver_batch(w->inst[x->node->id], b);
  b->n = 0;
  b->used = 0;
  return rc;
}

/* Adds a record for worker `target` of x: into the worker's own batch
 * (delivered at once when no keyed operator reads it), or the open batch
 * of the channel to target. */
static inline __attribute__((always_inline)) int
prod_add(sl_ctx_t *op, sl__xchg *x, int target, uint64_t hash, uint32_t kg,
         const sl_record_t *rec) {
  sl__worker *w = op->w;
  size_t need = rec->key_len + rec->value_len;
  if (target == w->index) {
    sl_ctx_t *cons = w->inst[op->node->id];
    if (!cons->keyed_outs) { /* no keyed reader: nothing to batch for */
      sl__counter_add(&cons->in, 1);
      sl__counter_add(&cons->out, 1);
      return sl__emit_outs(cons, &cons->main, rec);
    }
    batch *b = batch_room(x, &x->self[w->index], NULL, need, false);
    if (SL__UNLIKELY(!b))
      return sl_op_fail(op, SL_ERR_NOMEM,
                        "out of memory for an exchange batch");
    batch_add(b, hash, kg, rec);
    if (b->n == b->cap || b->used >= x->batch_bytes)
      return self_flush(x, w);
    return 0;
  }
  /* Plain records for a consumer without keyed readers: every worker's
   * instance of it has the same readers. */
  chan *ch = &x->ch[w->index * x->par + target];
  batch *b = batch_room(x, &ch->open, &ch->spare, need,
                        !w->inst[op->node->id]->keyed_outs);
  if (SL__UNLIKELY(!b))
    return sl_op_fail(op, SL_ERR_NOMEM, "out of memory for an exchange batch");
  batch_add(b, hash, kg, rec);
  if (b->n == b->cap || b->used >= x->batch_bytes)
    return chan_flush(w, x, ch);
  return 0;
}

/* sl_broadcast(): a copy for every worker, with no key (hash and key
 * group 0; the broadcast process operator ignores them). */
static int prod_broadcast(sl_ctx_t *op, const sl_record_t *in) {
  sl__counter_add(&op->out, 1);
  for (int c = 0; c < op->xchg->par; c++) {
    int rc = prod_add(op, op->xchg, c, 0, 0, in);
    if (rc)
      return rc;
  }
  return 0;
}

/* How a key's key group is computed: in group mode Kafka's partition of
 * the key (murmur2), else hash % K, by a mask for a power-of-two K and by
 * the job's precomputed divisor otherwise; never by a division, which
 * would cost more than the rest of the record's routing. */
enum { KG_MASK, KG_DIV, KG_MURMUR2 };

static inline int kg_mode(const sl_job_t *job) {
  if (job->kg_murmur2)
    return KG_MURMUR2;
  return (job->max_par & (job->max_par - 1)) == 0 ? KG_MASK : KG_DIV;
}

static inline __attribute__((always_inline)) uint32_t
key_group(const sl_job_t *job, int mode, const void *key, size_t len,
          uint64_t hash) {
  if (mode == KG_MASK)
    return (uint32_t)(hash & (job->max_par - 1));
  if (mode == KG_DIV)
    return sl__divisor_mod(hash, &job->kg_div);
  return sl__murmur2_partition_div(key, len, &job->kg_div);
}

static int prod_process(sl_ctx_t *op, int port, const sl_record_t *in) {
  (void)port;
  sl__node *n = op->node;
  if (n->broadcast)
    return prod_broadcast(op, in);
  sl__worker *w = op->w;
  sl_job_t *job = w->job;
  sl_record_t rec = *in;
  if (n->key_fn) {
    int rc = n->key_fn(in, &rec.key, &rec.key_len, n->key_opaque);
    if (SL__UNLIKELY(rc))
      return sl_op_user_error(op, in, rc);
  }
  sl__counter_add(&op->out, 1);
  uint64_t hash = sl__hash64(rec.key, rec.key_len);
  uint32_t kg = key_group(job, kg_mode(job), rec.key, rec.key_len, hash);
  return prod_add(op, op->xchg, job->kg_worker[kg], hash, kg, &rec);
}

/* Hands on the records a batch had for the worker itself when no keyed
 * operator reads the exchange, as one batch. */
static int direct_flush(sl_ctx_t *cons, struct direct *d) {
  size_t n = d->n;
  d->n = 0;
  d->keys_used = 0;
  if (!n)
    return 0;
  sl__counter_add(&cons->in, n);
  sl__counter_add(&cons->out, n);
  return sl__emit_outs_batch(&cons->main, d->recs, n);
}

/* direct_add for a key that no longer fits the key buffer: the records
 * before it go on first; a key larger than the whole buffer goes on with
 * its record alone, while it is still valid. */
static __attribute__((noinline)) int direct_add_big(sl__xchg *x, sl_ctx_t *cons,
                                                    struct direct *d,
                                                    const sl_record_t *r) {
  int rc = direct_flush(cons, d);
  if (rc)
    return rc;
  if (r->key_len > SL__DIRECT_KEYS) {
    sl__counter_add(&cons->in, 1);
    sl__counter_add(&cons->out, 1);
    return sl__emit_outs_batch(&cons->main, r, 1);
  }
  d->recs[0] = *r;
  d->recs[0].key = memcpy(d->keys, r->key, r->key_len);
  d->keys_used = r->key_len;
  d->n = 1;
  return d->n == x->batch_size ? direct_flush(cons, d) : 0;
}

/* A record of a batch for the worker itself when no keyed operator reads
 * the exchange. Its bytes are the upstream batch's, delivered before
 * that batch's call returns, except a key function's key (valid only
 * until the function's next call), which is copied when copy_key. */
static inline __attribute__((always_inline)) int
direct_add(sl__xchg *x, sl_ctx_t *cons, struct direct *d, const sl_record_t *r,
           bool copy_key) {
  sl_record_t *o = &d->recs[d->n];
  if (copy_key && r->key_len) {
    if (SL__UNLIKELY(SL__DIRECT_KEYS - d->keys_used < r->key_len))
      return direct_add_big(x, cons, d, r);
    *o = *r;
    o->key = memcpy(d->keys + d->keys_used, r->key, r->key_len);
    d->keys_used += r->key_len;
  } else {
    *o = *r;
  }
  if (++d->n == x->batch_size)
    return direct_flush(cons, d);
  return 0;
}

/* A record of a batch for the worker itself, for its keyed readers: into
 * its own batch with the upstream batch's bytes lent (that batch is
 * delivered before the upstream call returns), a key function's key
 * copied when copy_key. */
static inline __attribute__((always_inline)) int
self_add(sl_ctx_t *op, sl__xchg *x, sl__worker *w, uint64_t hash, uint32_t kg,
         const sl_record_t *r, bool copy_key) {
  batch *b =
      batch_room(x, &x->self[w->index], NULL, copy_key ? r->key_len : 0, false);
  if (SL__UNLIKELY(!b))
    return sl_op_fail(op, SL_ERR_NOMEM, "out of memory for an exchange batch");
  sl_keyed_rec_t *o = &b->recs[b->n++];
  o->rec = *r;
  o->hash = hash;
  o->kg = kg;
  if (copy_key)
    o->rec.key = batch_copy(b, r->key, r->key_len);
  if (b->n == b->cap || b->used >= x->batch_bytes)
    return self_flush(x, w);
  return 0;
}

/* A record for another worker when its channel's open batch must be
 * taken, made room in or flushed. Out of line so that the loops' values
 * stay in registers. */
static __attribute__((noinline)) int prod_other(sl_ctx_t *op, sl__xchg *x,
                                                int target, uint64_t hash,
                                                uint32_t kg,
                                                const sl_record_t *r) {
  return prod_add(op, x, target, hash, kg, r);
}

/* A record of a batch for another worker, its hash and key group known:
 * copied into the open batch of its channel, inline unless the batch
 * must be taken, grown or flushed (prod_other). An open batch is never
 * full (prod_add flushes it when it fills), and its byte buffer holds at
 * least batch_bytes. */
static inline __attribute__((always_inline)) int
prod_chan(sl_ctx_t *op, sl__xchg *x, int me, int target, uint64_t hash,
          uint32_t kg, const sl_record_t *r) {
  batch *b = x->ch[me * x->par + target].open;
  if (SL__LIKELY(b && b->n + 1 < b->cap &&
                 b->used + r->key_len + r->value_len < x->batch_bytes)) {
    batch_add(b, hash, kg, r);
    return 0;
  }
  return prod_other(op, x, target, hash, kg, r);
}

/* prod_process_batch's loop for a keyed reader, no key function and one
 * worker, the keyed operators' usual input at parallelism 1: hashes each
 * key and appends the record with its hash and key group to the worker's
 * own batch, lending its bytes. pow2 is a constant at each call (see the
 * caller). */
static inline __attribute__((always_inline)) int
prod_self_loop(sl_ctx_t *op, const sl_record_t *in, size_t n, bool pow2) {
  sl__worker *w = op->w;
  sl__xchg *x = op->xchg;
  const sl_job_t *job = w->job;
  const uint32_t kg_mask = job->max_par - 1;
  size_t i = 0;
  while (i < n) {
    batch *b = batch_room(x, &x->self[w->index], NULL, 0, false);
    if (SL__UNLIKELY(!b))
      return sl_op_fail(op, SL_ERR_NOMEM,
                        "out of memory for an exchange batch");
    uint32_t k = b->n;
    size_t lim = n - i < (size_t)(b->cap - k) ? n - i : (size_t)(b->cap - k);
    sl_keyed_rec_t *o = b->recs + k;
    for (const sl_record_t *r = in + i, *end = r + lim; r < end; r++, o++) {
      uint64_t hash = sl__hash64(r->key, r->key_len);
      o->rec = *r;
      o->hash = hash;
      o->kg = pow2 ? (uint32_t)(hash & kg_mask)
                   : sl__divisor_mod(hash, &job->kg_div);
    }
    i += lim;
    b->n = (uint32_t)(k + lim);
    int rc;
    if (b->n == b->cap && (rc = self_flush(x, w)))
      return rc;
  }
  return 0;
}

/* The same with several workers, in chunks of at most ROUTE records
 * that fit in every worker's batch. One pass appends each record to the
 * batch of its worker, through a pointer to that batch's next free slot
 * picked by the worker's index rather than by a branch (with keys spread
 * evenly a branch on the destination is a coin toss, mispredicted every
 * other record), the record still pointing at the producer's bytes; then
 * the records for other workers take their bytes into their batches, in
 * one predictable loop per batch. The worker's own records keep the
 * upstream batch's bytes (lent: delivered before the upstream call
 * returns). Records for one worker keep their order. keyed: the
 * exchange's readers take keyed batches (the worker's own records go
 * into its keyed batch), else plain records (its own go on directly). */
enum { ROUTE = 64 };

/* The memory a chunk of the routing pass writes into another worker's
 * batch was last read by that worker's core: each line of it must be
 * taken back from there before it can be written, and the writes stall
 * on those round trips one after the other unless asked for ahead. So
 * while a chunk is routed, the lines of b the next chunk will write are
 * requested for writing: b's share of a chunk, `share` records (the
 * chunk over the workers, as keys spread evenly), and their bytes at
 * this batch's bytes per record so far. Each line is requested once,
 * one chunk ahead; requesting a whole chunk's worth (every record of it
 * for b) asked for most lines twice and held the line fill buffers,
 * where the requests waited. Past the end of b's buffers a request is
 * harmless (a prefetch never faults) and wasted. */
static inline void prefetch_next_chunk(const batch *b, const char *next,
                                       size_t share, size_t stride) {
  const char *p = next + share * stride;
  for (size_t o = 0; o < share * stride; o += SL__CACHELINE)
    sl__prefetchw(p + o);
  size_t per = b->n ? b->used / b->n : 8;
  per = per < 64 ? per : 64;
  p = b->bytes + b->used + share * per;
  for (size_t o = 0; o < share * per; o += SL__CACHELINE)
    sl__prefetchw(p + o);
}
static inline __attribute__((always_inline)) int
prod_route_loop(sl_ctx_t *op, const sl_record_t *in, size_t n, bool pow2,
                bool keyed) {
  sl__worker *w = op->w;
  sl__xchg *x = op->xchg;
  const int me = w->index, par = x->par;
  const sl_job_t *job = w->job;
  const uint16_t *kg_worker = job->kg_worker;
  const uint32_t kg_mask = job->max_par - 1;
  sl_ctx_t *cons = w->inst[op->node->id];
  struct direct *d = &x->direct[me];
  char **next = d->next;
  const size_t stride = keyed ? sizeof(sl_keyed_rec_t) : sizeof(sl_record_t);
  int rc;
  for (size_t base = 0, m; base < n; base += m) {
    const sl_record_t *r = in + base;
    m = n - base < ROUTE ? n - base : ROUTE;
    /* Every worker's batch, a full one delivered or sent first; the
     * chunk is as long as the batch with the least room allows, so that
     * batches go full. A full channel makes chan_flush drain this
     * worker's later exchanges, never this exchange's producer side, so
     * the batches found before it stay. */
    for (int t = 0; t < par; t++) {
      if (t == me)
        continue;
      chan *ch = &x->ch[me * par + t];
      if (ch->open && ch->open->n == ch->open->cap &&
          (rc = chan_flush(w, x, ch)))
        return rc;
      batch *b = batch_room(x, &ch->open, &ch->spare, 0, !keyed);
      if (SL__UNLIKELY(!b))
        return sl_op_fail(op, SL_ERR_NOMEM,
                          "out of memory for an exchange batch");
      m = b->cap - b->n < m ? b->cap - b->n : m;
      next[t] = (char *)b->recs + b->n * stride;
    }
    if (keyed) {
      batch *b = x->self[me];
      if (b && b->n == b->cap && (rc = self_flush(x, w)))
        return rc;
      if (SL__UNLIKELY(!(b = batch_room(x, &x->self[me], NULL, 0, false))))
        return sl_op_fail(op, SL_ERR_NOMEM,
                          "out of memory for an exchange batch");
      m = b->cap - b->n < m ? b->cap - b->n : m;
      next[me] = (char *)(b->recs + b->n);
    } else {
      if (d->n == x->batch_size && (rc = direct_flush(cons, d)))
        return rc;
      m = x->batch_size - d->n < m ? x->batch_size - d->n : m;
      next[me] = (char *)(d->recs + d->n);
    }
    for (int t = 0; t < par; t++)
      if (t != me)
        prefetch_next_chunk(x->ch[me * par + t].open, next[t],
                            m / (size_t)par + 1, stride);
    for (size_t j = 0; j < m; j++) {
      uint64_t h = sl__hash64(r[j].key, r[j].key_len);
      uint32_t g =
          pow2 ? (uint32_t)(h & kg_mask) : sl__divisor_mod(h, &job->kg_div);
      int t = kg_worker[g];
      if (keyed) {
        sl_keyed_rec_t *o = (sl_keyed_rec_t *)(void *)next[t];
        next[t] = (char *)(o + 1);
        o->rec = r[j];
        o->hash = h;
        o->kg = g;
      } else {
        sl_record_t *o = (sl_record_t *)(void *)next[t];
        next[t] = (char *)(o + 1);
        *o = r[j];
      }
    }
    if (keyed)
      x->self[me]->n =
          (uint32_t)((sl_keyed_rec_t *)(void *)next[me] - x->self[me]->recs);
    else
      d->n = (size_t)((sl_record_t *)(void *)next[me] - d->recs);
    for (int t = 0; t < par; t++) {
      if (t == me)
        continue;
      chan *ch = &x->ch[me * par + t];
      batch *b = ch->open;
      uint32_t k = b->n;
      b->n = (uint32_t)((size_t)(next[t] - (char *)b->recs) / stride);
      if (b->n > k && batch_take_bytes(b, k, !keyed))
        return sl_op_fail(op, SL_ERR_NOMEM,
                          "out of memory for an exchange batch");
      if (b->n == b->cap || b->used >= x->batch_bytes) {
        if ((rc = chan_flush(w, x, ch)))
          return rc;
      }
    }
  }
  return 0;
}

/* prod_process_batch's loop for every other case, one pass over the
 * batch: the key function (when there is one), hash, key group and
 * destination of each record. The flags are constants where the caller
 * has a copy for its case. */
static inline __attribute__((always_inline)) int
prod_loop(sl_ctx_t *op, const sl_record_t *in, size_t n, bool key_fn,
          bool keyed, int mode) {
  sl__node *nd = op->node;
  sl__worker *w = op->w;
  const sl_job_t *job = w->job;
  sl__xchg *x = op->xchg;
  const int me = w->index;
  const bool one_worker = x->par == 1;
  const uint16_t *kg_worker = job->kg_worker;
  sl_ctx_t *cons = w->inst[nd->id];
  struct direct *d = &x->direct[me];
  uint64_t n_keyed = 0;
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    const sl_record_t *r = &in[i];
    sl_record_t kr;
    if (key_fn) {
      kr = *r;
      int urc = nd->key_fn(r, &kr.key, &kr.key_len, nd->key_opaque);
      if (SL__UNLIKELY(urc)) {
        rc = sl_op_user_error(op, r, urc);
        continue;
      }
      n_keyed++;
      r = &kr;
    }
    uint64_t hash = sl__hash64(r->key, r->key_len);
    uint32_t kg = key_group(job, mode, r->key, r->key_len, hash);
    int target = one_worker ? me : kg_worker[kg];
    if (target != me)
      rc = prod_chan(op, x, me, target, hash, kg, r);
    else if (keyed)
      rc = self_add(op, x, w, hash, kg, r, key_fn);
    else
      rc = direct_add(x, cons, d, r, key_fn);
  }
  if (key_fn) /* records whose key function failed are not passed on */
    sl__counter_add(&op->out, n_keyed);
  return rc;
}

/* A batch from upstream in one loop: key, hash, key group and worker of
 * every record. Records for this worker go into its own batch without a
 * copy (their bytes are borrowed until this returns, and that batch is
 * delivered before it returns) or, when no keyed operator reads the
 * exchange, downstream as one batch; those for other workers are copied
 * into their channels' batches. A key function's key may live only until
 * its next call, so with one the key is copied. */
static int prod_process_batch(sl_ctx_t *op, int port, const sl_record_t *in,
                              size_t n) {
  (void)port;
  sl__node *nd = op->node;
  if (nd->broadcast) {
    for (size_t i = 0; i < n; i++) {
      int rc = prod_broadcast(op, &in[i]);
      if (rc)
        return rc;
    }
    return 0;
  }
  sl__worker *w = op->w;
  sl__xchg *x = op->xchg;
  const int me = w->index;
  sl_ctx_t *cons = w->inst[nd->id];
  const bool keyed = cons->keyed_outs;
  const bool key_fn = nd->key_fn != NULL;
  const int mode = kg_mode(w->job);
  int rc = 0;
  if (!key_fn) /* with one, prod_loop counts the records it keyed */
    sl__counter_add(&op->out, n);
  if (keyed && !key_fn && mode != KG_MURMUR2 && x->par == 1) {
    /* Copies of the loops, so that none tests per record what holds for
     * the whole exchange: one worker (every record is its own), a
     * power-of-two max.parallelism (a mask, not a multiply), a keyed
     * reader. */
    rc = mode == KG_MASK ? prod_self_loop(op, in, n, 1)
                         : prod_self_loop(op, in, n, 0);
  } else if (!key_fn && mode != KG_MURMUR2 && x->par > 1) {
    if (keyed)
      rc = mode == KG_MASK ? prod_route_loop(op, in, n, 1, 1)
                           : prod_route_loop(op, in, n, 0, 1);
    else
      rc = mode == KG_MASK ? prod_route_loop(op, in, n, 1, 0)
                           : prod_route_loop(op, in, n, 0, 0);
  } else if (!keyed && !key_fn && mode == KG_MASK) {
    rc = prod_loop(op, in, n, false, false, KG_MASK);
  } else {
    rc = prod_loop(op, in, n, key_fn, keyed, mode);
  }
  if (!rc && !keyed)
    rc = direct_flush(cons, &x->direct[me]);
  /* Records lent by this batch must be delivered before it returns; on
   * an error (the job is failing) they are dropped with it. */
  if (!rc && keyed)
    rc = self_flush(x, w);
  if (rc) {
    x->direct[me].n = x->direct[me].keys_used = 0;
    if (x->self[me])
      x->self[me]->n = 0, x->self[me]->used = 0;
  }
  return rc;
}

/* Control elements go to every consumer, after the records before them. */
int sl__xchg_broadcast(sl_ctx_t *op, int kind, int64_t arg) {
  sl__worker *w = op->w;
  sl__xchg *x = op->xchg;
  sl_ctx_t *self = w->inst[op->node->id];
  for (int c = 0; c < x->par; c++) {
    int rc;
    if (c == w->index) {
      if ((rc = self_flush(x, w)))
        return rc;
      rc = kind == EL_WATERMARK ? sl__port_watermark(self, c, arg)
           : kind == EL_IDLE    ? sl__port_idle(self, c, arg != 0)
           : kind == EL_BARRIER ? sl__port_barrier(self, c, (uint64_t)arg)
                                : sl__port_end(self, c);
    } else {
      chan *ch = &x->ch[w->index * x->par + c];
      elem e = {kind, 0, arg, NULL};
      if (!(rc = chan_flush(w, x, ch)))
        rc = chan_push(w, x, ch, &e);
    }
    if (rc)
      return rc;
  }
  return 0;
}

/* Whether the key_by n reads, through operators of one input that are
 * not keyed, a source: its records are a source partition's, and with
 * group mode's tasks that partition is the task whatever the key
 * function computes. */
static bool reads_source(const sl__node *n) {
  for (const sl__node *u = n->inputs[0].from;; u = u->inputs[0].from) {
    if (u->kind == SL__NODE_SOURCE)
      return true;
    if (u->kind != SL__NODE_OP || !u->ops || u->ops->keyed || u->n_inputs != 1)
      return false;
  }
}

int sl__xchg_task_wm(sl_ctx_t *op, uint32_t kg, int64_t wm) {
  sl__worker *w = op->w;
  const sl__node *n = op->node;
  const sl_job_t *job = w->job;
  sl__xchg *x = op->xchg;
  /* A key function after a keyed operator may give the task's records
   * another key, and so another task. */
  if (n->broadcast || kg >= job->max_par || (n->key_fn && !reads_source(n)))
    return 0;
  int c = job->kg_worker[kg], rc;
  if (c == w->index) {
    rc = self_flush(x, w);
    return rc ? rc : sl__port_task_wm(w->inst[n->id], w->index, kg, wm);
  }
  /* A source's partition may be read on another worker than its task's
   * (a keyed operator's task is on its own). */
  chan *ch = &x->ch[w->index * x->par + c];
  elem e = {EL_TASKWM, kg, wm, NULL};
  if (!(rc = chan_flush(w, x, ch)))
    rc = chan_push(w, x, ch, &e);
  return rc;
}

/* Watermarks, idleness and end reach the consumers through
 * sl__xchg_broadcast(), which the runtime's forwarding calls for a
 * producer. */
const sl_operator_ops_t sl__keyby_prod_ops = {
    .kind = "key_by",
    .process = prod_process,
    .process_batch = prod_process_batch,
};

static int cons_process(sl_ctx_t *op, int port, const sl_record_t *rec) {
  (void)op;
  (void)port;
  (void)rec;
  return SL_ERR_INTERNAL; /* records reach the consumer via deliver_batch */
}

const sl_operator_ops_t sl__keyby_cons_ops = {
    .kind = "key_by",
    .process = cons_process,
};

/* ---- Consumer side ------------------------------------------------------ */

/* Whether a channel is held back because it delivered the barrier of the
 * checkpoint its consumer's worker is aligning: what follows the barrier
 * must wait until the worker's snapshot is taken. */
static inline bool chan_blocked(const sl__worker *w, const sl_ctx_t *cons,
                                int producer) {
  return w->ckpt_id && cons->ports[producer].bar == w->ckpt_id;
}

static int drain_chan(sl__worker *w, sl__xchg *x, int producer, chan *ch) {
  sl_ctx_t *cons = w->inst[x->node->id];
  int handled = 0;
  elem *e;
  /* A bounded number of elements per call keeps every input served. */
  while (handled < 8 && !chan_blocked(w, cons, producer) &&
         (e = ring_peek(&ch->data, sizeof(elem)))) {
    elem el = *e;
    ring_pop(&ch->data);
    handled++;
    int rc = 0;
    switch (el.kind) {
    case EL_BATCH: {
      batch *b = el.b;
      rc = deliver_batch(cons, b);
      if (SL__UNLIKELY(b->bytes_cap > 2 * x->batch_bytes))
        batch_shrink(b, x->batch_bytes);
      batch **slot = ring_slot(&ch->spare, sizeof(batch *));
      if (slot) {
        *slot = b;
        ring_push(&ch->spare);
      } else {
        batch_free(b);
      }
      break;
    }
    case EL_WATERMARK:
      rc = sl__port_watermark(cons, producer, el.arg);
      break;
    case EL_IDLE:
      rc = sl__port_idle(cons, producer, el.arg != 0);
      break;
    case EL_END:
      ch->ended = true;
      rc = sl__port_end(cons, producer);
      break;
    case EL_BARRIER:
      rc = sl__port_barrier(cons, producer, (uint64_t)el.arg);
      break;
    case EL_TASKWM:
      rc = sl__port_task_wm(cons, producer, el.kg, el.arg);
      break;
    }
    if (rc)
      return rc;
  }
  return handled;
}

int sl__xchg_drain(sl__worker *w, int min_xidx) {
  sl_job_t *job = w->job;
  if (job->par == 1)
    return 0;
  int total = 0;
  for (int xi = job->g.n_xchg - 1; xi >= min_xidx; xi--) {
    sl__xchg *x = job->xchgs[xi];
    for (int p = 0; p < x->par; p++) {
      if (p == w->index)
        continue;
      chan *ch = &x->ch[p * x->par + w->index];
      if (ch->ended)
        continue;
      int n = drain_chan(w, x, p, ch);
      if (n < 0)
        return n;
      total += n;
    }
  }
  return total;
}

int sl__xchg_flush(sl__worker *w) {
  sl_job_t *job = w->job;
  /* In topological order: delivering one exchange's records may fill the
   * batches of exchanges after it, which are flushed next. */
  for (int xi = 0; xi < job->g.n_xchg; xi++) {
    sl__xchg *x = job->xchgs[xi];
    int rc = self_flush(x, w);
    if (rc)
      return rc;
    for (int c = 0; c < x->par; c++) {
      if (c == w->index)
        continue;
      int rc = chan_flush(w, x, &x->ch[w->index * x->par + c]);
      if (rc)
        return rc;
    }
  }
  return 0;
}

bool sl__xchg_inputs_ended(sl__worker *w) {
  sl_job_t *job = w->job;
  for (int xi = 0; xi < job->g.n_xchg; xi++) {
    sl_ctx_t *cons = w->inst[job->xchgs[xi]->node->id];
    if (!cons->ended)
      return false;
  }
  return true;
}

bool sl__xchg_chan_fill(const sl__xchg *x, int from, int to, uint32_t *queued,
                        uint32_t *capacity, uint64_t *full_ns) {
  if (!x->ch || from == to || from < 0 || to < 0 || from >= x->par ||
      to >= x->par)
    return false;
  const chan *ch = &x->ch[from * x->par + to];
  *full_ns = sl__counter_get(&ch->full_ns);
  ring *r = (ring *)&ch->data;
  /* head first: tail read after it is at least as new, so the difference
   * never underflows. */
  uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);
  uint32_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
  *queued = t - h;
  *capacity = r->mask + 1;
  return true;
}
