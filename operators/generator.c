/* SPDX-License-Identifier: Apache-2.0 */
/* The generator source: record i is made by a user function, for i in
 * [0, count), split across workers (i = w, w+P, ...) when parallel. Used by
 * benchmarks and tests for deterministic, allocation-free input. */
#include <stdlib.h>
#include <string.h>

#include "operator.h"

typedef struct gen {
  sl_generator_opts_t o;
  sl_source_ops_t ops;
} gen;

/* A cache line each: workers on other cores poll their slots at once. */
typedef struct gen_state {
  _Alignas(64) uint64_t next, step;
  bool restored;
} gen_state;

/* Per-subtask position lives in a small array indexed by worker, owned by
 * the source's opaque block, so the source itself stays allocation-free. */
typedef struct gen_src {
  gen g;
  gen_state st[];
} gen_src;

static int gen_open(sl_source_ctx_t *ctx, void *opaque) {
  gen_src *s = opaque;
  int sub = sl_source_ctx_subtask(ctx);
  if (!s->st[sub].restored)
    s->st[sub].next = (uint64_t)sub;
  s->st[sub].step = (uint64_t)sl_source_ctx_subtasks(ctx);
  return 0;
}

/* Position: the next i, and the stride it was made with. */
static int gen_snapshot(sl_source_ctx_t *ctx, uint64_t id, sl_buf_t *out,
                        void *opaque) {
  (void)id;
  gen_src *s = opaque;
  const gen_state *st = &s->st[sl_source_ctx_subtask(ctx)];
  uint64_t v[2] = {st->next, st->step};
  return sl_buf_append(out, v, sizeof(v));
}

/* Each subtask takes the position of the old subtask it continues. The
 * interleaving i = w, w+P... cannot be re-split for another parallelism,
 * so a parallel generator refuses to restore with a different one. */
static int gen_restore(sl_source_ctx_t *ctx, const sl_blob_t *pos, size_t n,
                       void *opaque) {
  gen_src *s = opaque;
  int sub = sl_source_ctx_subtask(ctx);
  uint64_t step = (uint64_t)sl_source_ctx_subtasks(ctx);
  for (size_t i = 0; i < n; i++) {
    uint64_t v[2];
    if (pos[i].len != sizeof(v))
      return sl_source_fail(ctx, SL_ERR_CORRUPT,
                            "generator position has %zu bytes, expected %zu",
                            pos[i].len, sizeof(v));
    memcpy(v, pos[i].data, sizeof(v));
    if (v[1] != step)
      return sl_source_fail(ctx, SL_ERR_STATE,
                            "a parallel generator cannot restore with another "
                            "parallelism (was %llu, now %llu)",
                            (unsigned long long)v[1], (unsigned long long)step);
    if (v[0] % step == (uint64_t)sub) {
      s->st[sub].next = v[0];
      s->st[sub].restored = true;
    }
  }
  return 0;
}

static int gen_poll(sl_source_ctx_t *ctx, void *opaque) {
  gen_src *s = opaque;
  gen_state *st = &s->st[sl_source_ctx_subtask(ctx)];
  size_t budget = sl_source_ctx_budget(ctx);
  uint64_t count = s->g.o.count, i = st->next, step = st->step;
  int rc = 0;
  for (size_t k = 0; k < budget; k++) {
    if (count && i >= count)
      break;
    sl_record_t rec = {0};
    int grc = s->g.o.gen(i, &rec, s->g.o.opaque);
    i += step;
    if (grc) {
      if ((rc = sl_source_bad_input(ctx, "generator",
                                    "generator function failed")))
        break;
      continue;
    }
    if ((rc = sl_source_emit(ctx, &rec)))
      break;
  }
  st->next = i;
  if (rc)
    return rc;
  return count && i >= count ? SL_POLL_END : SL_POLL_MORE;
}

sl_stream_t *sl_source_generator(sl_job_t *job, const char *uid,
                                 const sl_generator_opts_t *opts) {
  if (!job)
    return NULL;
  if (!opts || !opts->gen) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "generator \"%s\": opts->gen is required",
                       uid ? uid : "");
    return NULL;
  }
  /* One position slot per possible worker. */
  gen_src *s =
      aligned_alloc(_Alignof(gen_state), sizeof(*s) + 1024 * sizeof(gen_state));
  if (!s) {
    sl_job_build_error(job, SL_ERR_NOMEM, "generator: out of memory");
    return NULL;
  }
  memset(s, 0, sizeof(*s) + 1024 * sizeof(gen_state));
  s->g.o = *opts;
  s->g.ops.open = gen_open;
  s->g.ops.poll = gen_poll;
  s->g.ops.parallel = opts->parallel;
  s->g.ops.snapshot = gen_snapshot;
  s->g.ops.restore = gen_restore;
  sl_stream_t *st = sl_source(job, uid, &s->g.ops, s);
  if (!st) {
    free(s);
    return NULL;
  }
  sl_job_adopt(job, s, free);
  return st;
}
