/* SPDX-License-Identifier: Apache-2.0 */
/* `inspect` and `dump`: one walk over a checkpoint's keyed state that
 * reads both layouts, entries serialized in w<i>.snap (hashmap) and a
 * backend's native directory w<i>.state (through open_snapshot and
 * kg_scan), plus the decoders of source positions. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/layout.h"
#include "core/hash.h"
#include "tools/sluice-ckpt/tool.h"

/* ---- Source positions --------------------------------------------------- */

/* A decoder recognizes a position blob and describes it as fields. The
 * files do not say which kind of source wrote a position, so decoders
 * match on the blob's shape; add one per source kind here (the Kafka
 * source's, once its layout is fixed, should start with a magic so it
 * cannot be mistaken for another). */
typedef struct pos_decoder {
  const char *name;
  bool (*decode)(const char *uid, uint32_t subtask, const void *blob,
                 size_t len, json_t *out);
} pos_decoder;

/* operators/generator.c: {u64 next, u64 step} in host byte order; a
 * subtask's next i is congruent to the subtask modulo the step. */
static bool gen_decode(const char *uid, uint32_t subtask, const void *blob,
                       size_t len, json_t *out) {
  (void)uid;
  uint64_t v[2];
  if (len != sizeof(v))
    return false;
  memcpy(v, blob, sizeof(v));
  if (v[1] == 0 || v[1] > 32768 || v[0] % v[1] != subtask % v[1])
    return false;
  json_object_set_new(out, "next", json_integer((json_int_t)v[0]));
  json_object_set_new(out, "step", json_integer((json_int_t)v[1]));
  return true;
}

/* The Kafka source (lib/kafka, sl__kpos_encode_time): u32 magic "SLK1",
 * bytes consumer group, u32 n, n x (bytes topic, u32 partition, u64 next
 * offset), then optionally u32 magic "SLKT" and n x (u64 max_ts, u8 flags,
 * bit 0 idle, bit 1 finished); little-endian like the snapshot files. Keep
 * in step with the source; a blob that does not parse exactly is hex. */
static bool kafka_decode(const char *uid, uint32_t subtask, const void *blob,
                         size_t len, json_t *out) {
  (void)uid, (void)subtask;
  sl__rd r = {blob, (const unsigned char *)blob + len, false};
  uint32_t magic, n;
  const void *group;
  size_t gl;
  if (!sl__rd_u32(&r, &magic) || magic != 0x314b4c53u ||
      !sl__rd_bytes(&r, &group, &gl) || !sl__rd_u32(&r, &n) ||
      n > (size_t)(r.end - r.p) / 16)
    return false;
  json_t *parts = json_array();
  for (uint32_t i = 0; i < n; i++) {
    const void *topic;
    size_t tl;
    uint32_t part;
    uint64_t off;
    if (!sl__rd_bytes(&r, &topic, &tl) || !sl__rd_u32(&r, &part) ||
        !sl__rd_u64(&r, &off))
      break;
    json_array_append_new(parts, json_pack("{s:s%,s:i,s:I}", "topic", topic, tl,
                                           "partition", (int)part, "offset",
                                           (json_int_t)off));
  }
  uint32_t tmagic;
  if (!r.bad && !sl__rd_done(&r) && json_array_size(parts) == n &&
      sl__rd_u32(&r, &tmagic) && tmagic == 0x544b4c53u) {
    for (uint32_t i = 0; i < n; i++) {
      uint64_t ts;
      uint8_t flags;
      if (!sl__rd_u64(&r, &ts) || !sl__rd_u8(&r, &flags))
        break;
      json_t *e = json_array_get(parts, i);
      json_object_set_new(e, "max_ts", json_integer((json_int_t)ts));
      json_object_set_new(e, "idle", json_boolean(flags & 1));
      json_object_set_new(e, "finished", json_boolean(flags & 2));
    }
  }
  if (r.bad || !sl__rd_done(&r) || json_array_size(parts) != n) {
    json_decref(parts);
    return false;
  }
  json_object_set_new(out, "group", json_stringn(group, gl));
  json_object_set_new(out, "partitions", parts);
  return true;
}

/* Tried in order; the first that recognizes a blob describes it. */
static const pos_decoder decoders[] = {
    {"kafka", kafka_decode},
    {"generator", gen_decode},
};

const char *tool_decode_position(const char *uid, uint32_t subtask,
                                 const void *blob, size_t len, json_t *out) {
  for (size_t i = 0; i < sizeof(decoders) / sizeof(decoders[0]); i++)
    if (decoders[i].decode(uid, subtask, blob, len, out))
      return decoders[i].name;
  return NULL;
}

/* ---- One walk over keyed state ------------------------------------------ */

/* Called per entry with the state's full name ("<uid>/<name>"). */
typedef int (*visit_fn)(const tool_worker *w, const char *state, uint32_t type,
                        uint32_t kg, const sl__snap_entry *e, void *opaque);

typedef struct walk {
  const tool_ckpt *ck;
  const tool_worker *w;
  visit_fn fn;
  void *opaque;
  const sl__native *snap; /* native: names from the backend */
  char **names;           /* serialized: names of the file's state ids */
  uint32_t *types;
  uint32_t n;
  uint32_t kg;
} walk;

static int native_cb(const sl__snap_entry *e, void *opaque) {
  walk *wk = opaque;
  const char *name;
  uint32_t type;
  if (sl__native_state_info(wk->snap, e->state, &name, &type))
    return SL_ERR_CORRUPT;
  return wk->fn(wk->w, name, type, wk->kg, e, wk->opaque);
}

/* An entry of a key group whose state is a chain of segments. */
static int chain_cb(const char *state, uint32_t type, const sl__snap_entry *e,
                    void *opaque) {
  walk *wk = opaque;
  return wk->fn(wk->w, state, type, wk->kg, e, wk->opaque);
}

static void free_names(walk *wk) {
  for (uint32_t i = 0; i < wk->n; i++)
    free(wk->names[i]);
  free(wk->names);
  free(wk->types);
  wk->names = NULL;
  wk->types = NULL;
  wk->n = 0;
}

sl__native *tool_native_open(const char *chk, const char *backend,
                             const tool_worker *w, bool *missing, char *err,
                             size_t errlen) {
  char dir[4200];
  snprintf(dir, sizeof(dir), "%s/%s", chk, w->native);
  return sl__native_open(dir, backend, NULL, w->kg_lo, w->kg_hi,
                         w->head.max_par, w->index, missing, err, errlen);
}

/* The worker's entries of key groups [lo, hi). Returns TOOL_OK, or an
 * exit code with the reason printed; *native_missing is set (and nothing
 * visited) when the state is in a native directory whose backend this
 * build does not have. */
static int walk_worker(const tool_ckpt *ck, const tool_worker *w, uint32_t lo,
                       uint32_t hi, visit_fn fn, void *opaque,
                       bool *native_missing) {
  walk wk = {.ck = ck, .w = w, .fn = fn, .opaque = opaque};
  if (lo < w->kg_lo)
    lo = w->kg_lo;
  if (hi > w->kg_hi)
    hi = w->kg_hi;
  if (w->native) {
    char err[512] = "";
    sl__native *be = tool_native_open(ck->path, ck->backend, w, native_missing,
                                      err, sizeof(err));
    if (*native_missing)
      return TOOL_OK;
    if (!be) {
      tool_err("%s: cannot open the %s state in %s: %s", ck->path, ck->backend,
               w->native, err);
      return TOOL_DAMAGED;
    }
    wk.snap = be;
    int rc = 0;
    for (uint32_t g = lo; !rc && g < hi; g++) {
      wk.kg = g;
      rc = sl__native_scan(be, g, native_cb, &wk);
    }
    sl__native_close(be);
    if (rc < 0) {
      tool_err("%s: reading %s failed: %s", ck->path, w->native,
               sl_strerror(rc));
      return TOOL_DAMAGED;
    }
    return rc ? TOOL_USAGE : TOOL_OK;
  }
  sl__rd body = w->body, p;
  uint32_t type, kg;
  int r, rc = 0;
  while (!rc && (r = sl__snap_next(&body, &type, &kg, &p)) == 1) {
    if (type == SL__SEC_STATES) {
      uint32_t n;
      sl__snap_state s;
      free_names(&wk);
      if (sl__snap_states_count(&p, &n)) {
        rc = SL_ERR_CORRUPT;
        break;
      }
      if (!(wk.names = calloc(n + 1, sizeof(*wk.names))) ||
          !(wk.types = calloc(n + 1, sizeof(*wk.types)))) {
        rc = SL_ERR_NOMEM;
        break;
      }
      wk.n = n;
      while (!rc && (r = sl__snap_state_next(&p, &s)) == 1) {
        if (s.id >= n || wk.names[s.id])
          rc = SL_ERR_CORRUPT;
        else if (!(wk.names[s.id] = strndup(s.name, s.name_len)))
          rc = SL_ERR_NOMEM;
        else
          wk.types[s.id] = s.type;
      }
      if (!rc && r < 0)
        rc = r;
    } else if (type == SL__SEC_CHAIN && kg >= lo && kg < hi) {
      wk.kg = kg;
      rc = sl__chain_scan(p, ck->segs, ck->n_segs, ck->max_par, kg, chain_cb,
                          &wk);
    } else if (type == SL__SEC_ENTRIES && kg >= lo && kg < hi) {
      sl__snap_entry e;
      while (!rc && (r = sl__snap_entry_next(&p, &e)) == 1) {
        if (e.state >= wk.n || !wk.names[e.state]) {
          r = SL_ERR_CORRUPT;
          break;
        }
        rc = fn(w, wk.names[e.state], wk.types[e.state], kg, &e, opaque);
      }
      if (r < 0)
        rc = r;
    }
  }
  if (!rc && r < 0)
    rc = r;
  free_names(&wk);
  if (rc == SL_ERR_NOMEM) {
    tool_err("out of memory reading %s/%s", ck->path, w->file);
    return TOOL_USAGE;
  }
  if (rc < 0) {
    tool_err("%s: %s is damaged (%s); run sluice-ckpt verify", ck->path,
             w->file, sl_strerror(rc));
    return TOOL_DAMAGED;
  }
  return rc ? TOOL_USAGE : TOOL_OK;
}

/* ---- inspect ------------------------------------------------------------ */

typedef struct st_row {
  char *name;
  uint32_t type;
  uint64_t entries, bytes;
  char *layout; /* from the layout record; NULL in older checkpoints */
} st_row;

typedef struct kg_row {
  uint64_t entries, bytes;
} kg_row;

typedef struct stats {
  st_row *st;
  size_t n_st;
  kg_row *kg; /* per key group, max_par of them */
} stats;

/* The recorded layout of each state (checkpoint/layout.h), once per state
 * however many workers recorded it; a state without entries still gets
 * its row, its type from the layout's kind. */
static int add_layouts(const tool_ckpt *ck, stats *s) {
  for (int w = 0; w < ck->n_w; w++) {
    sl__rd body = ck->w[w].body, p;
    uint32_t type, kg, n;
    int r;
    while ((r = sl__snap_next(&body, &type, &kg, &p)) == 1) {
      sl__layout_rec lr;
      if (type != SL__SEC_LAYOUT || sl__layout_count(&p, &n))
        continue;
      while ((r = sl__layout_next(&p, &lr)) == 1) {
        size_t i = 0;
        while (i < s->n_st && (strlen(s->st[i].name) != lr.state_len ||
                               memcmp(s->st[i].name, lr.state, lr.state_len)))
          i++;
        if (i < s->n_st && s->st[i].layout)
          continue;
        if (i == s->n_st) {
          st_row *a = realloc(s->st, (s->n_st + 1) * sizeof(*a));
          if (!a)
            return SL_ERR_NOMEM;
          s->st = a;
          bool list = memmem(lr.layout, lr.layout_len, "kind=list", 9);
          bool map = memmem(lr.layout, lr.layout_len, "kind=map", 8);
          a[i] = (st_row){strndup(lr.state, lr.state_len),
                          list  ? SL__SNAP_LIST
                          : map ? SL__SNAP_MAP
                                : SL__SNAP_VALUE,
                          0, 0, NULL};
          s->n_st++;
        }
        s->st[i].layout = strndup(lr.layout, lr.layout_len);
        if (!s->st[i].name || !s->st[i].layout)
          return SL_ERR_NOMEM;
      }
    }
  }
  return 0;
}

static int count_cb(const tool_worker *w, const char *state, uint32_t type,
                    uint32_t kg, const sl__snap_entry *e, void *opaque) {
  (void)w;
  stats *s = opaque;
  uint64_t bytes = e->key_len + e->ns_len + e->mk_len + e->val_len;
  size_t i = 0;
  while (i < s->n_st && strcmp(s->st[i].name, state) != 0)
    i++;
  if (i == s->n_st) {
    st_row *a = realloc(s->st, (s->n_st + 1) * sizeof(*a));
    if (!a)
      return SL_ERR_NOMEM;
    s->st = a;
    a[i] = (st_row){strdup(state), type, 0, 0, NULL};
    if (!a[i].name)
      return SL_ERR_NOMEM;
    s->n_st++;
  }
  s->st[i].entries++;
  s->st[i].bytes += bytes;
  s->kg[kg].entries++;
  s->kg[kg].bytes += bytes;
  return 0;
}

/* Broadcast state: every instance wrote a copy (equal by contract), so
 * each (uid, state) is reported once, from the first copy in worker
 * order, with the number of copies. fn gets every entry of the first copy
 * of each uid (uid NULL: every uid); copies(uid) is counted meanwhile. */
typedef int (*bcast_fn)(const char *uid, const sl__snap_bentry *e,
                        int copies_so_far, void *opaque);
static int bcast_walk(const tool_ckpt *ck, const char *only_uid, bcast_fn fn,
                      void *opaque, json_t *copies) {
  for (int i = 0; i < ck->n_w; i++) {
    sl__rd body = ck->w[i].body, p;
    uint32_t type, kg;
    while (sl__snap_next(&body, &type, &kg, &p) == 1) {
      const void *u;
      size_t ul;
      if (type != SL__SEC_BCAST || !sl__rd_bytes(&p, &u, &ul))
        continue;
      char *uid = strndup(u, ul);
      if (!uid)
        return TOOL_USAGE;
      if (only_uid && strcmp(uid, only_uid) != 0) {
        free(uid);
        continue;
      }
      json_t *c = json_object_get(copies, uid);
      json_int_t n = c ? json_integer_value(c) : 0;
      json_object_set_new(copies, uid, json_integer(n + 1));
      sl__snap_bentry e;
      int rc = 0;
      while (!n && !rc && sl__snap_bcast_next(&p, &e) == 1)
        rc = fn(uid, &e, (int)n, opaque);
      free(uid);
      if (rc)
        return rc;
    }
  }
  return 0;
}

/* inspect: one row per (uid, state) with its entries and bytes. */
static int bcast_count(const char *uid, const sl__snap_bentry *e, int copies,
                       void *opaque) {
  (void)copies;
  json_t *rows = opaque, *row = NULL, *r;
  size_t i;
  json_array_foreach(rows, i, r) {
    const char *ru = json_string_value(json_object_get(r, "uid"));
    const char *rs = json_string_value(json_object_get(r, "state"));
    if (!strcmp(ru, uid) && strlen(rs) == e->name_len &&
        !memcmp(rs, e->name, e->name_len))
      row = r;
  }
  if (!row) {
    char *nm = strndup(e->name, e->name_len);
    row = json_pack("{s:s,s:s,s:I,s:I}", "uid", uid, "state", nm ? nm : "",
                    "entries", (json_int_t)0, "bytes", (json_int_t)0);
    free(nm);
    json_array_append_new(rows, row);
  }
#define ADD(k, v)                                                              \
  json_object_set_new(                                                         \
      row, k, json_integer(json_integer_value(json_object_get(row, k)) + (v)))
  ADD("entries", 1);
  ADD("bytes", (json_int_t)(e->mk_len + e->val_len));
#undef ADD
  return 0;
}

static json_t *bcast_rows(const tool_ckpt *ck) {
  json_t *rows = json_array(), *copies = json_object(), *r;
  bcast_walk(ck, NULL, bcast_count, rows, copies);
  size_t i;
  json_array_foreach(rows, i, r) {
    json_t *c =
        json_object_get(copies, json_string_value(json_object_get(r, "uid")));
    json_object_set_new(r, "copies", json_integer(json_integer_value(c)));
  }
  json_decref(copies);
  return rows;
}

/* Positions, operator state and timers: the non-keyed sections. */
static void other_sections(const tool_ckpt *ck, json_t *positions,
                           json_t *opstate, json_t *timers) {
  for (int i = 0; i < ck->n_w; i++) {
    sl__rd body = ck->w[i].body, p;
    uint32_t type, kg;
    while (sl__snap_next(&body, &type, &kg, &p) == 1) {
      const void *u, *b;
      size_t ul, bl;
      uint32_t sub;
      if ((type == SL__SEC_SOURCE || type == SL__SEC_OPSTATE) &&
          !sl__snap_blob(p, type, &u, &ul, &sub, &b, &bl)) {
        char *uid = strndup(u, ul);
        if (type == SL__SEC_OPSTATE) {
          json_array_append_new(opstate,
                                json_pack("{s:s,s:i,s:I}", "uid", uid, "worker",
                                          i, "bytes", (json_int_t)bl));
        } else {
          json_t *f = json_object();
          const char *dec = tool_decode_position(uid, sub, b, bl, f);
          char *hex = tool_hex(b, bl);
          json_array_append_new(positions,
                                json_pack("{s:s,s:i,s:I,s:s?,s:o,s:s}", "uid",
                                          uid, "subtask", (int)sub, "bytes",
                                          (json_int_t)bl, "decoder", dec,
                                          "fields", f, "hex", hex ? hex : ""));
          free(hex);
        }
        free(uid);
      } else if (type == SL__SEC_TIMERS) {
        const void *uid;
        size_t ul;
        uint64_t n[SL__SNAP_TIMER_DOMAINS] = {0};
        sl__snap_timer t;
        if (!sl__rd_bytes(&p, &uid, &ul))
          continue;
        while (sl__snap_timer_next(&p, &t) == 1)
          n[t.domain]++;
        /* One row per (uid, domain), summed over workers. */
        for (int d = 0; d < SL__SNAP_TIMER_DOMAINS; d++) {
          const char *dn = d == 0 ? "event" : "processing";
          json_t *row = NULL, *rj;
          size_t k;
          json_array_foreach(timers, k, rj) {
            const char *ru = json_string_value(json_object_get(rj, "uid"));
            if (strlen(ru) == ul && !memcmp(ru, uid, ul) &&
                !strcmp(json_string_value(json_object_get(rj, "domain")), dn))
              row = rj;
          }
          if (!row) {
            char *us = strndup(uid, ul);
            row = json_pack("{s:s,s:s,s:I}", "uid", us, "domain", dn, "count",
                            (json_int_t)0);
            json_array_append_new(timers, row);
            free(us);
          }
          json_object_set_new(
              row, "count",
              json_integer(json_integer_value(json_object_get(row, "count")) +
                           (json_int_t)n[d]));
        }
      }
    }
  }
}

static void print_inspect(const json_t *doc) {
  char a[48], b[48], c[48];
  json_t *sz = json_object_get(doc, "size");
#define I(o, k) ((long long)json_integer_value(json_object_get(o, k)))
#define S(o, k) (json_string_value(json_object_get(o, k)))
  printf("checkpoint %lld of job \"%s\" (%s)\n", I(doc, "id"), S(doc, "job"),
         S(doc, "path"));
  printf("  created      %s, took %lld ms\n", S(doc, "created"),
         I(doc, "duration_ms"));
  printf("  committed    %s\n", json_is_true(json_object_get(doc, "committed"))
                                    ? "yes (_COMMITTED)"
                                    : "no");
  printf("  backend      %s, parallelism %lld, max.parallelism %lld\n",
         S(doc, "backend"), I(doc, "parallelism"), I(doc, "max_parallelism"));
  printf("  size         %s in %lld files: %s new, %s shared with earlier "
         "checkpoints\n",
         tool_size((uint64_t)I(sz, "bytes"), a, sizeof(a)), I(sz, "files"),
         tool_size((uint64_t)I(sz, "new_bytes"), b, sizeof(b)),
         tool_size((uint64_t)I(sz, "shared_bytes"), c, sizeof(c)));
  size_t i;
  json_t *r;
  printf("\npositions (source uid, subtask)\n");
  json_array_foreach(json_object_get(doc, "positions"), i, r) {
    printf("  %-20s %3lld  ", S(r, "uid"), I(r, "subtask"));
    if (S(r, "decoder")) {
      printf("%s", S(r, "decoder"));
      const char *k;
      json_t *v;
      json_object_foreach(json_object_get(r, "fields"), k, v) {
        if (json_is_integer(v)) {
          printf(" %s=%lld", k, (long long)json_integer_value(v));
        } else if (json_is_string(v)) {
          printf(" %s=%s", k, json_string_value(v));
        } else {
          char *t = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
          printf(" %s=%s", k, t ? t : "?");
          free(t);
        }
      }
      printf("\n");
    } else {
      printf("%lld bytes: %s\n", I(r, "bytes"), S(r, "hex"));
    }
  }
  printf("\noperators\n  %-24s %-16s %s\n", "UID", "KIND", "KEYED");
  json_array_foreach(json_object_get(doc, "operators"), i, r) {
    printf("  %-24s %-16s %s\n", S(r, "uid"), S(r, "kind"),
           json_is_true(json_object_get(r, "keyed")) ? "yes" : "no");
  }
  printf("\nstates\n  %-32s %-6s %10s %12s\n", "NAME (uid/state)", "TYPE",
         "ENTRIES", "BYTES");
  json_array_foreach(json_object_get(doc, "states"), i, r) {
    printf("  %-32s %-6s %10lld %12lld", S(r, "name"), S(r, "type"),
           I(r, "entries"), I(r, "bytes"));
    if (json_is_string(json_object_get(r, "layout")))
      printf("  %s", S(r, "layout"));
    putchar('\n');
  }
  if (json_is_string(json_object_get(doc, "states_note")))
    printf("  (%s)\n", S(doc, "states_note"));
  printf("\ntimers\n  %-24s %-11s %10s\n", "UID", "DOMAIN", "COUNT");
  json_array_foreach(json_object_get(doc, "timers"), i, r) {
    printf("  %-24s %-11s %10lld\n", S(r, "uid"), S(r, "domain"),
           I(r, "count"));
  }
  json_t *ops = json_object_get(doc, "operator_state");
  if (json_array_size(ops)) {
    printf("\noperator state\n");
    json_array_foreach(ops, i, r) {
      printf("  %-24s worker %lld: %lld bytes\n", S(r, "uid"), I(r, "worker"),
             I(r, "bytes"));
    }
  }
  json_t *bst = json_object_get(doc, "broadcast_state");
  if (json_array_size(bst)) {
    printf("\nbroadcast state (one copy per worker, equal by contract)\n"
           "  %-24s %-16s %10s %12s %6s\n",
           "UID", "STATE", "ENTRIES", "BYTES", "COPIES");
    json_array_foreach(bst, i, r) {
      printf("  %-24s %-16s %10lld %12lld %6lld\n", S(r, "uid"), S(r, "state"),
             I(r, "entries"), I(r, "bytes"), I(r, "copies"));
    }
  }
  printf("\nkey groups (non-empty ones listed)\n");
  json_array_foreach(json_object_get(doc, "key_groups"), i, r) {
    printf("  worker %lld [%lld, %lld) in %s: ", I(r, "worker"), I(r, "kg_lo"),
           I(r, "kg_hi"), S(r, "location"));
    if (!json_is_integer(json_object_get(r, "entries"))) {
      printf("not readable: %s\n", S(r, "note"));
      continue;
    }
    printf("%lld entries, %s\n", I(r, "entries"),
           tool_size((uint64_t)I(r, "bytes"), a, sizeof(a)));
    size_t k;
    json_t *g;
    json_array_foreach(json_object_get(r, "groups"), k, g) {
      printf("    kg %5lld: %8lld entries %12lld bytes\n", I(g, "kg"),
             I(g, "entries"), I(g, "bytes"));
    }
  }
#undef I
#undef S
}

int cmd_inspect(const tool_opts *o) {
  if (o->task >= 0)
    return store_inspect(o);
  tool_ckpt ck;
  int rc = tool_open(o->path, &ck);
  if (rc)
    return rc;
  json_t *m = ck.meta;
  char when[64];
  json_int_t created = json_integer_value(json_object_get(m, "created_ms"));
  json_t *doc = json_pack(
      "{s:s,s:I,s:s,s:I,s:s,s:I,s:s,s:i,s:i,s:b}", "path", ck.path, "id",
      (json_int_t)ck.id, "job", ck.job, "created_ms", created, "created",
      tool_time(created, when, sizeof(when)), "duration_ms",
      json_integer_value(json_object_get(m, "duration_ms")), "backend",
      ck.backend, "parallelism", ck.par, "max_parallelism", (int)ck.max_par,
      "committed", ck.committed);
  /* Sizes from the file list: "shared" files are hard links to files of
   * an earlier checkpoint (native state), the rest is new. */
  uint64_t bytes = 0, shared = 0, n = 0;
  size_t i;
  json_t *fj;
  json_array_foreach(json_object_get(m, "files"), i, fj) {
    uint64_t b = (uint64_t)json_integer_value(json_object_get(fj, "bytes"));
    bytes += b;
    shared += json_is_true(json_object_get(fj, "shared")) ? b : 0;
    n++;
  }
  json_object_set_new(doc, "size",
                      json_pack("{s:I,s:I,s:I,s:I}", "bytes", (json_int_t)bytes,
                                "files", (json_int_t)n, "new_bytes",
                                (json_int_t)(bytes - shared), "shared_bytes",
                                (json_int_t)shared));
  json_t *pos = json_array(), *opst = json_array(), *tim = json_array();
  other_sections(&ck, pos, opst, tim);
  json_object_set_new(doc, "positions", pos);
  json_t *ops = json_object_get(m, "operators");
  /* A new empty array is ours to hand over; the metadata's is shared. */
  json_object_set_new(doc, "operators",
                      json_is_array(ops) ? json_incref(ops) : json_array());
  stats s = {.kg = calloc(ck.max_par + 1, sizeof(kg_row))};
  json_t *kgs = json_array();
  char missing[512] = "";
  for (int w = 0; rc == TOOL_OK && w < ck.n_w; w++) {
    const tool_worker *tw = &ck.w[w];
    bool nat_missing = false;
    rc = s.kg ? walk_worker(&ck, tw, 0, UINT32_MAX, count_cb, &s, &nat_missing)
              : TOOL_USAGE;
    json_t *row = json_pack("{s:i,s:i,s:i,s:s}", "worker", tw->index, "kg_lo",
                            (int)tw->kg_lo, "kg_hi", (int)tw->kg_hi, "location",
                            tw->native ? tw->native : tw->file);
    if (nat_missing) {
      snprintf(missing, sizeof(missing),
               "state of backend \"%s\" in native directories; this build of "
               "sluice-ckpt cannot read that backend",
               ck.backend);
      json_object_set_new(row, "note", json_string(missing));
    } else if (s.kg) {
      uint64_t te = 0, tb = 0;
      json_t *groups = json_array();
      for (uint32_t g = tw->kg_lo; g < tw->kg_hi && g < ck.max_par; g++) {
        te += s.kg[g].entries;
        tb += s.kg[g].bytes;
        if (s.kg[g].entries)
          json_array_append_new(
              groups, json_pack("{s:i,s:I,s:I}", "kg", (int)g, "entries",
                                (json_int_t)s.kg[g].entries, "bytes",
                                (json_int_t)s.kg[g].bytes));
      }
      json_object_set_new(row, "entries", json_integer((json_int_t)te));
      json_object_set_new(row, "bytes", json_integer((json_int_t)tb));
      json_object_set_new(row, "groups", groups);
    }
    json_array_append_new(kgs, row);
  }
  json_t *states = json_array();
  if (add_layouts(&ck, &s))
    rc = TOOL_USAGE;
  for (size_t k = 0; k < s.n_st; k++) {
    json_t *row = json_pack("{s:s,s:s,s:I,s:I}", "name", s.st[k].name, "type",
                            tool_btype(s.st[k].type), "entries",
                            (json_int_t)s.st[k].entries, "bytes",
                            (json_int_t)s.st[k].bytes);
    if (s.st[k].layout)
      json_object_set_new(row, "layout", json_string(s.st[k].layout));
    json_array_append_new(states, row);
    free(s.st[k].name);
    free(s.st[k].layout);
  }
  free(s.st);
  free(s.kg);
  json_object_set_new(doc, "states", states);
  if (missing[0])
    json_object_set_new(doc, "states_note", json_string(missing));
  json_object_set_new(doc, "key_groups", kgs);
  json_object_set_new(doc, "timers", tim);
  json_object_set_new(doc, "operator_state", opst);
  json_object_set_new(doc, "broadcast_state", bcast_rows(&ck));
  if (rc == TOOL_OK) {
    if (o->json)
      tool_print_json(doc);
    else
      print_inspect(doc);
  }
  json_decref(doc);
  tool_close(&ck);
  return rc;
}

/* ---- One task of a group store ------------------------------------------ */

const tool_worker *tool_task_worker(const tool_ckpt *ck, uint32_t task) {
  for (int i = 0; i < ck->n_w; i++)
    if (task >= ck->w[i].kg_lo && task < ck->w[i].kg_hi && task < ck->max_par)
      return &ck->w[i];
  return NULL;
}

int64_t tool_task_position(const tool_ckpt *ck, const sl__task_ptr *ptr) {
  for (int i = 0; i < ck->n_w; i++) {
    sl__rd body = ck->w[i].body, p;
    uint32_t type, kg;
    while (sl__snap_next(&body, &type, &kg, &p) == 1) {
      const void *u, *b;
      size_t ul, bl;
      uint32_t sub;
      if (type != SL__SEC_SOURCE ||
          sl__snap_blob(p, type, &u, &ul, &sub, &b, &bl) ||
          ul != strlen(ptr->source) || memcmp(u, ptr->source, ul))
        continue;
      json_t *f = json_object(), *e;
      int64_t off = -1;
      size_t k;
      if (kafka_decode(ptr->source, sub, b, bl, f))
        json_array_foreach(json_object_get(f, "partitions"), k, e) {
          const char *t = json_string_value(json_object_get(e, "topic"));
          if (off < 0 && t && !strcmp(t, ptr->topic) &&
              json_integer_value(json_object_get(e, "partition")) ==
                  ptr->partition)
            off = (int64_t)json_integer_value(json_object_get(e, "offset"));
        }
      json_decref(f);
      if (off >= 0)
        return off;
    }
  }
  return -1;
}

/* Timers of key group kg in w, one row per (uid, domain). */
static json_t *task_timers(const tool_worker *w, uint32_t kg) {
  json_t *rows = json_array();
  sl__rd body = w->body, p;
  uint32_t type, skg;
  while (sl__snap_next(&body, &type, &skg, &p) == 1) {
    const void *uid;
    size_t ul;
    uint64_t n[SL__SNAP_TIMER_DOMAINS] = {0};
    sl__snap_timer t;
    if (type != SL__SEC_TIMERS || !sl__rd_bytes(&p, &uid, &ul))
      continue;
    while (sl__snap_timer_next(&p, &t) == 1)
      n[t.domain] += t.kg == kg;
    for (int d = 0; d < SL__SNAP_TIMER_DOMAINS; d++)
      if (n[d])
        json_array_append_new(rows, json_pack("{s:s%,s:s,s:I}", "uid", uid, ul,
                                              "domain",
                                              d == 0 ? "event" : "processing",
                                              "count", (json_int_t)n[d]));
  }
  return rows;
}

static void print_task(const json_t *doc) {
#define I(o, k) ((long long)json_integer_value(json_object_get(o, k)))
#define S(o, k) (json_string_value(json_object_get(o, k)))
  const json_t *p = json_object_get(doc, "target"),
               *c = json_object_get(doc, "checkpoint"),
               *w = json_object_get(doc, "worker");
  printf("task %lld of group store %s\n", I(doc, "task"), S(doc, "dir"));
  printf("  pointer      %s: source %s, %s[%lld], next offset %lld\n",
         S(doc, "pointer"), S(p, "source"), S(p, "topic"), I(p, "partition"),
         I(p, "offset"));
  printf("  checkpoint   %s: id %lld of job \"%s\", created %s, backend %s\n",
         S(p, "checkpoint"), I(c, "id"), S(c, "job"), S(c, "created"),
         S(c, "backend"));
  if (json_is_string(json_object_get(doc, "pending")))
    printf("  pending      %s\n", S(doc, "pending"));
  printf("  instance     %s (%s)\n", S(doc, "instance"),
         json_is_true(json_object_get(doc, "alive")) ? "alive" : "gone");
  printf("  key group    %lld of %lld, worker %lld [%lld, %lld) in %s\n",
         I(doc, "task"), I(c, "max_parallelism"), I(w, "index"), I(w, "kg_lo"),
         I(w, "kg_hi"), S(w, "location"));
  if (json_is_integer(json_object_get(doc, "position")))
    printf("  position     next offset %lld in the checkpoint\n",
           I(doc, "position"));
  else
    printf("  position     not recorded in the checkpoint\n");
  size_t i;
  json_t *r;
  printf("\nstates (key group %lld)\n  %-32s %-6s %10s %12s\n", I(doc, "task"),
         "NAME (uid/state)", "TYPE", "ENTRIES", "BYTES");
  json_array_foreach(json_object_get(doc, "states"), i, r) {
    printf("  %-32s %-6s %10lld %12lld\n", S(r, "name"), S(r, "type"),
           I(r, "entries"), I(r, "bytes"));
  }
  if (json_is_string(json_object_get(doc, "states_note")))
    printf("  (%s)\n", S(doc, "states_note"));
  printf("\ntimers (key group %lld)\n  %-24s %-11s %10s\n", I(doc, "task"),
         "UID", "DOMAIN", "COUNT");
  json_array_foreach(json_object_get(doc, "timers"), i, r) {
    printf("  %-24s %-11s %10lld\n", S(r, "uid"), S(r, "domain"),
           I(r, "count"));
  }
#undef I
#undef S
}

int store_inspect(const tool_opts *o) {
  sl__task_ptr ptr;
  char chk[4800];
  int rc = store_task_checkpoint(o, &ptr, chk, sizeof(chk));
  if (rc)
    return rc;
  tool_ckpt ck;
  if ((rc = tool_open(chk, &ck)))
    return rc;
  uint32_t task = (uint32_t)o->task;
  const tool_worker *w = tool_task_worker(&ck, task);
  if (!ck.m.kg_murmur2 || !w) {
    tool_err("task %" PRIu32 ": %s does not hold its key group (verify "
             "--task says why)",
             task, ptr.checkpoint);
    tool_close(&ck);
    return TOOL_DAMAGED;
  }
  char file[600], when[64];
  sl__task_ptr_file(o->task_name, ptr.gen, file, sizeof(file));
  char inst[256] = "-";
  const char *a = ptr.checkpoint + 10, *b;
  if (!strncmp(ptr.checkpoint, "instances/", 10) && (b = strchr(a, '/')))
    snprintf(inst, sizeof(inst), "%.*s", (int)(b - a), a);
  char idir[4200];
  snprintf(idir, sizeof(idir), "%s/instances/%s", o->path, inst);
  json_int_t created =
      json_integer_value(json_object_get(ck.meta, "created_ms"));
  json_t *doc = json_pack(
      "{s:I,s:s,s:s,s:{s:s,s:s,s:s,s:i,s:I},s:s,s:b,s:{s:s,s:I,s:s,s:I,s:s,"
      "s:s,s:i},s:{s:i,s:i,s:i,s:s}}",
      "task", (json_int_t)task, "dir", o->path, "pointer", file, "target",
      "checkpoint", ptr.checkpoint, "source", ptr.source, "topic", ptr.topic,
      "partition", (int)ptr.partition, "offset", (json_int_t)ptr.offset,
      "instance", inst, "alive", sl__task_inst_alive(idir), "checkpoint",
      "path", ck.path, "id", (json_int_t)ck.id, "job", ck.job, "created_ms",
      created, "created", tool_time(created, when, sizeof(when)), "backend",
      ck.backend, "max_parallelism", (int)ck.max_par, "worker", "index",
      w->index, "kg_lo", (int)w->kg_lo, "kg_hi", (int)w->kg_hi, "location",
      w->native ? w->native : w->file);
  if (ptr.pending[0]) {
    char pend[1400];
    tool_pending_text(o->path, &ptr, pend, sizeof(pend));
    tool_pending_json(o->path, &ptr, json_object_get(doc, "target"));
    json_object_set_new(doc, "pending", json_string(pend));
  }
  int64_t off = tool_task_position(&ck, &ptr);
  json_object_set_new(doc, "position",
                      off < 0 ? json_null() : json_integer((json_int_t)off));
  stats st = {.kg = calloc(ck.max_par + 1, sizeof(kg_row))};
  bool missing = false;
  rc = st.kg ? walk_worker(&ck, w, task, task + 1, count_cb, &st, &missing)
             : TOOL_USAGE;
  json_t *states = json_array();
  for (size_t k = 0; k < st.n_st; k++) {
    json_array_append_new(states,
                          json_pack("{s:s,s:s,s:I,s:I}", "name", st.st[k].name,
                                    "type", tool_btype(st.st[k].type),
                                    "entries", (json_int_t)st.st[k].entries,
                                    "bytes", (json_int_t)st.st[k].bytes));
    free(st.st[k].name);
    free(st.st[k].layout);
  }
  free(st.st);
  free(st.kg);
  json_object_set_new(doc, "states", states);
  if (missing)
    json_object_set_new(
        doc, "states_note",
        json_sprintf("state of backend \"%s\" in native directories; this "
                     "build of sluice-ckpt cannot read that backend",
                     ck.backend));
  json_object_set_new(doc, "timers", task_timers(w, task));
  if (rc == TOOL_OK) {
    if (o->json)
      tool_print_json(doc);
    else
      print_task(doc);
  }
  json_decref(doc);
  tool_close(&ck);
  return rc;
}

/* ---- dump --------------------------------------------------------------- */

typedef struct dump_ctx {
  const tool_opts *o;
  size_t uid_len;
} dump_ctx;

/* With --ttl, the first 8 bytes of a stored item are the TTL layer's
 * timestamp (host byte order; docs/state.md). */
static void set_item(json_t *obj, const tool_opts *o, const void *p, size_t n) {
  if (o->ttl && n >= 8) {
    int64_t ts;
    memcpy(&ts, p, 8);
    json_object_set_new(obj, "ttl_ts", json_integer(ts));
    p = (const char *)p + 8;
    n -= 8;
  } else if (o->ttl) {
    json_object_set_new(obj, "ttl_ts", json_null());
  }
  sl__json_set_bytes(obj, "value", p, n);
}

static int dump_cb(const tool_worker *w, const char *state, uint32_t type,
                   uint32_t kg, const sl__snap_entry *e, void *opaque) {
  dump_ctx *d = opaque;
  const tool_opts *o = d->o;
  if (strncmp(state, o->uid, d->uid_len) != 0 || state[d->uid_len] != '/')
    return 0;
  const char *name = state + d->uid_len + 1;
  if (o->state && strcmp(name, o->state) != 0)
    return 0;
  if (o->have_key &&
      (e->key_len != o->key_len || memcmp(e->key, o->key, o->key_len) != 0))
    return 0;
  json_t *j =
      json_pack("{s:s,s:s,s:s,s:i,s:i}", "uid", o->uid, "state", name, "type",
                tool_btype(type), "worker", w->index, "kg", (int)kg);
  sl__json_set_bytes(j, "key", e->key, e->key_len);
  sl__json_set_bytes(j, "ns", e->ns, e->ns_len);
  if (e->mk)
    sl__json_set_bytes(j, "mk", e->mk, e->mk_len);
  /* A list is stored as framed elements: split it, or print it whole if
   * the framing does not add up. */
  json_t *elems = type == SL__SNAP_LIST ? json_array() : NULL;
  size_t off = 0;
  const void *el_p;
  size_t el_len;
  int r;
  while (elems && (r = sl__snap_list_next(e, &off, &el_p, &el_len)) != 0) {
    if (r < 0) {
      json_decref(elems);
      elems = NULL;
      break;
    }
    json_t *el = json_object();
    set_item(el, o, el_p, el_len);
    json_array_append_new(elems, el);
  }
  if (elems)
    json_object_set_new(j, "elements", elems);
  else
    set_item(j, o, e->val, e->val_len);
  tool_print_line(j);
  json_decref(j);
  return 0;
}

/* dump: a broadcast entry, from the first copy. */
static int bcast_dump(const char *uid, const sl__snap_bentry *e, int copies,
                      void *opaque) {
  (void)copies;
  dump_ctx *d = opaque;
  const tool_opts *o = d->o;
  char *nm = strndup(e->name, e->name_len);
  if (!nm)
    return TOOL_USAGE;
  if (!o->state || !strcmp(nm, o->state)) {
    json_t *j = json_pack("{s:s,s:s,s:s}", "uid", uid, "state", nm, "type",
                          "broadcast");
    sl__json_set_bytes(j, "mk", e->mk, e->mk_len);
    sl__json_set_bytes(j, "value", e->val, e->val_len);
    tool_print_line(j);
    json_decref(j);
  }
  free(nm);
  return 0;
}

/* Names of the broadcast states of uid, as check_names lists them. */
static int bcast_names(const char *uid, const sl__snap_bentry *e, int copies,
                       void *opaque) {
  (void)uid, (void)copies;
  json_t *names = opaque;
  char *nm = strndup(e->name, e->name_len);
  if (!nm)
    return TOOL_USAGE;
  json_object_set_new(names, nm, json_true());
  free(nm);
  return 0;
}

/* The uid (and --state) must name registered state: a typo should not
 * look like an empty state. Every .snap file lists the names, also when
 * the entries are in a native directory. */
static int check_names(const tool_ckpt *ck, const tool_opts *o) {
  size_t ul = strlen(o->uid);
  bool uid_found = false, state_found = false;
  char avail[1024] = "";
  for (int i = 0; i < ck->n_w; i++) {
    sl__rd body = ck->w[i].body, p;
    uint32_t type, kg, n;
    sl__snap_state s;
    while (sl__snap_next(&body, &type, &kg, &p) == 1) {
      if (type != SL__SEC_STATES || sl__snap_states_count(&p, &n))
        continue;
      while (sl__snap_state_next(&p, &s) == 1) {
        const char *nm = s.name;
        if (s.name_len <= ul + 1 || memcmp(nm, o->uid, ul) || nm[ul] != '/')
          continue;
        uid_found = true;
        size_t sl = s.name_len - ul - 1;
        state_found |= o->state && strlen(o->state) == sl &&
                       !memcmp(nm + ul + 1, o->state, sl);
        size_t al = strlen(avail);
        if (!strstr(avail, nm + ul + 1) && al + sl + 3 < sizeof(avail))
          snprintf(avail + al, sizeof(avail) - al, "%s%.*s", al ? ", " : "",
                   (int)sl, nm + ul + 1);
      }
    }
  }
  /* Broadcast state counts too; its states may be empty (no section
   * entry names them), so a bare section is enough for the uid. */
  json_t *bnames = json_object(), *copies = json_object();
  bcast_walk(ck, o->uid, bcast_names, bnames, copies);
  uid_found |= json_object_get(copies, o->uid) != NULL;
  const char *bn;
  json_t *bv;
  json_object_foreach(bnames, bn, bv) {
    (void)bv;
    state_found |= o->state && !strcmp(bn, o->state);
    size_t al = strlen(avail), sl = strlen(bn);
    if (al + sl + 3 < sizeof(avail))
      snprintf(avail + al, sizeof(avail) - al, "%s%s", al ? ", " : "", bn);
  }
  json_decref(bnames);
  json_decref(copies);
  if (!uid_found) {
    tool_err("%s: operator uid \"%s\" has no keyed state in this checkpoint "
             "(sluice-ckpt inspect lists the states)",
             o->path, o->uid);
    return TOOL_USAGE;
  }
  if (o->state && !state_found) {
    tool_err("%s: operator \"%s\" has no state \"%s\" (it has: %s)", o->path,
             o->uid, o->state, avail);
    return TOOL_USAGE;
  }
  return TOOL_OK;
}

/* The key group of a key: in a checkpoint of group mode its Kafka
 * partition (docs/scaling.md), else the key hash's. */
static uint32_t key_group_of(const tool_ckpt *ck, const void *key, size_t len) {
  if (ck->m.kg_murmur2)
    return sl__murmur2_partition(key, len, ck->max_par);
  return sl__snap_key_group(ck->m.format, key, len, ck->max_par);
}

int cmd_dump(const tool_opts *o) {
  if (!o->uid) {
    tool_err("dump needs --uid U (the operator whose keyed state to print)");
    return TOOL_USAGE;
  }
  /* --task: the checkpoint the task's pointer names, only its key group. */
  tool_opts to = *o;
  sl__task_ptr ptr;
  char chk[4800];
  int rc;
  if (o->task >= 0) {
    if ((rc = store_task_checkpoint(o, &ptr, chk, sizeof(chk))))
      return rc;
    to.path = chk;
    o = &to;
  }
  tool_ckpt ck;
  if ((rc = tool_open(o->path, &ck)))
    return rc;
  dump_ctx d = {.o = o, .uid_len = strlen(o->uid)};
  if ((rc = check_names(&ck, o))) {
    tool_close(&ck);
    return rc;
  }
  if (o->task >= 0 &&
      (!ck.m.kg_murmur2 || !tool_task_worker(&ck, (uint32_t)o->task))) {
    tool_err("task %ld: %s does not hold its key group (verify --task says "
             "why)",
             o->task, ptr.checkpoint);
    tool_close(&ck);
    return TOOL_DAMAGED;
  }
  if (o->task >= 0 && o->have_key &&
      key_group_of(&ck, o->key, o->key_len) != (uint32_t)o->task) {
    tool_err("key \"%.*s\" belongs to task %" PRIu32 ", not %ld",
             (int)o->key_len, o->key, key_group_of(&ck, o->key, o->key_len),
             o->task);
    tool_close(&ck);
    return TOOL_USAGE;
  }
  /* Broadcast state first (it has no key; a task has none of its own). */
  if (!o->have_key && o->task < 0) {
    json_t *copies = json_object();
    rc = bcast_walk(&ck, o->uid, bcast_dump, &d, copies);
    json_decref(copies);
  }
  /* A key lives in one key group: only that one is read. */
  uint32_t lo = 0, hi = UINT32_MAX;
  if (o->have_key) {
    lo = key_group_of(&ck, o->key, o->key_len);
    hi = lo + 1;
  } else if (o->task >= 0) {
    lo = (uint32_t)o->task;
    hi = lo + 1;
  }
  for (int w = 0; rc == TOOL_OK && w < ck.n_w; w++) {
    bool missing = false;
    if (ck.w[w].kg_hi <= lo || ck.w[w].kg_lo >= hi)
      continue;
    rc = walk_worker(&ck, &ck.w[w], lo, hi, dump_cb, &d, &missing);
    if (missing) {
      tool_err("%s: keyed state is in %s, a native directory of the \"%s\" "
               "backend, which this build of sluice-ckpt does not include",
               o->path, ck.w[w].native, ck.backend);
      rc = TOOL_USAGE;
    }
  }
  fflush(stdout);
  tool_close(&ck);
  return rc;
}
