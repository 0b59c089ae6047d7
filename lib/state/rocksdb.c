/* SPDX-License-Identifier: Apache-2.0 */
/* The RocksDB state backend: one DB per worker under state.dir with a
 * column family per state; the job's memory budget (one block cache for
 * every worker's DB; write buffers and write-back caches split between
 * workers); the job directory's lock; metadata; native snapshots (flush,
 * then a hard-linked checkpoint), restores and read-only snapshot handles;
 * errors that name the directory and RocksDB's reason. Data operations
 * are in rocksdb_ops.c, the write-back cache in rocksdb_cache.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/fs.h"
#include "core/conf.h"
#include "core/fault.h"
#include "core/util.h"
#include "sluice/common.h"
#include "state/rocksdb_int.h"
#include "state/snap_task.h"

#define RK_FORMAT 1
/* Metadata lives in the default column family; states are "s:<name>". */
#define META_FORMAT "sluice/format"
#define META_RANGE "sluice/range"
#define META_STATE "sluice/state/"
#define META_STATS "sluice/stats/"
#define CF_PREFIX "s:"
#define MIB ((size_t)1 << 20)

static const sl__backend_ops rk_ro_ops;

/* ---- Files -------------------------------------------------------------- */

static int copy_file(const char *from, const char *to, mode_t mode) {
  int in = open(from, O_RDONLY | O_CLOEXEC), rc = 0;
  if (in < 0)
    return errno;
  int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (out < 0) {
    rc = errno;
    close(in);
    return rc;
  }
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(in, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      rc = n < 0 ? errno : 0;
      break;
    }
    for (ssize_t o = 0; o < n;) {
      ssize_t w = write(out, buf + o, (size_t)(n - o));
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0) {
        rc = errno;
        goto done;
      }
      o += w;
    }
  }
done:
  if (close(out) && !rc)
    rc = errno;
  close(in);
  return rc;
}

static int path_join(char *buf, size_t n, const char *dir, const char *name) {
  int l = snprintf(buf, n, "%s/%s", dir, name);
  return l < 0 || (size_t)l >= n ? -1 : 0;
}

/* A working copy of a snapshot: immutable table files hard-linked (copied
 * across filesystems), the rest (MANIFEST, CURRENT, OPTIONS) copied, since
 * RocksDB may write to those and the snapshot must stay intact. */
static int clone_dir(const char *from, const char *to, sl__fmode fm, char *what,
                     size_t whatlen) {
  DIR *d = opendir(from);
  if (!d) {
    sl__errf(what, whatlen, "cannot read \"%s\": %s", from, strerror(errno));
    return -1;
  }
  int rc = mkdir(to, fm.dir) ? errno : 0;
  struct dirent *de;
  while (!rc && (de = readdir(d))) {
    const char *n = de->d_name;
    if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "LOCK") ||
        !strncmp(n, "LOG", 3))
      continue;
    char src[PATH_MAX], dst[PATH_MAX];
    if (path_join(src, sizeof(src), from, n) ||
        path_join(dst, sizeof(dst), to, n)) {
      rc = ENAMETOOLONG;
      sl__errf(what, whatlen, "\"%s/%s\": %s", to, n, strerror(rc));
      break;
    }
    size_t l = strlen(n);
    bool immutable = (l > 4 && !strcmp(n + l - 4, ".sst")) ||
                     (l > 5 && !strcmp(n + l - 5, ".blob"));
    if (immutable && link(src, dst) == 0)
      continue;
    if ((rc = copy_file(src, dst, fm.file)))
      sl__errf(what, whatlen, "cannot copy \"%s\" to \"%s\": %s", src, dst,
               strerror(rc));
  }
  closedir(d);
  if (rc && !*what)
    sl__errf(what, whatlen, "cannot create \"%s\": %s", to, strerror(rc));
  return rc ? -1 : 0;
}

/* ---- Job-wide resources ------------------------------------------------- */

#ifdef __GLIBC__
#include <malloc.h>
/* glibc raises its mmap threshold to the size of each large block freed
 * (up to 32 MiB): after the first memtable is freed, the next ones come
 * from the heap, and when they are freed in turn the holes they leave,
 * filled in part by small blocks, keep tens of megabytes resident beyond
 * the budget. A fixed threshold keeps large blocks in mmap, returned when
 * freed. Process-wide, so once, and not over the user's own setting. */
static void malloc_tune(void) {
  if (!getenv("MALLOC_MMAP_THRESHOLD_"))
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
}
#endif

/* A flush or a compaction allocates megabytes for as long as it runs (the
 * filter and index partitions of the table file it builds, the blocks it
 * reads) on RocksDB's background threads, each with its own glibc arena.
 * Freed, that memory stays resident: an arena only shrinks from its top,
 * and blocks the same threads put in the block cache meanwhile sit above
 * it. malloc_trim() returns the free pages of every arena, wherever they
 * are; called after about a memtable's worth of writes, it follows the
 * flushes and compactions those writes cause. */
void sl__rk_written(rk *b, size_t n) {
  b->written += n;
  if (!b->trim_every || b->written < b->trim_every)
    return;
  b->written = 0;
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

static void env_free(void *p) {
  rk_env *e = p;
  if (!e)
    return;
  if (e->cache)
    rocksdb_cache_destroy(e->cache);
  if (e->private_dir && e->dir)
    (void)sl__rmtree(e->dir);
  /* The lock file stays (unlinking it would let a process that opened the
   * old one hold a lock nobody else sees); the directory goes if empty. */
  if (e->lock_fd >= 0)
    close(e->lock_fd);
  free(e->dir);
  free(e->state_dir);
  free(e);
}

/* Job names become directory names: anything but [A-Za-z0-9._-] is '_'. */
static char *dir_name(const char *job) {
  size_t n = job && *job ? strlen(job) : 3;
  char *s = malloc(n + 1);
  if (!s)
    return NULL;
  if (!job || !*job)
    job = "job";
  for (size_t i = 0; i < n; i++) {
    char c = job[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    s[i] = ok ? c : '_';
  }
  s[n] = '\0';
  if (s[0] == '.')
    s[0] = '_'; /* never ".", ".." or hidden */
  return s;
}

/* Sizes from the configuration; the directory: the job's (locked), a
 * private one (no job), or none (read-only snapshot handles). */
enum { ENV_JOB, ENV_PRIVATE, ENV_NODIR };

static rk_env *env_new(const sl__backend_conf *bc, int kind, char *err,
                       size_t errlen) {
  const sl_conf_t *conf = bc->conf;
  rk_env *e = calloc(1, sizeof(*e));
  if (!e) {
    sl__errf(err, errlen, "RocksDB state: out of memory");
    return NULL;
  }
  e->lock_fd = -1;
  e->state_dir = sl__strdup(sl__conf_str(conf, "state.dir"));
  e->fmode = sl__fs_mode(conf);
  e->budget = (size_t)sl__conf_int(conf, "state.rocksdb.memory");
  int wbp = (int)sl__conf_int(conf, "state.rocksdb.write_buffer.percent");
  int wkp = (int)sl__conf_int(conf, "state.rocksdb.write_back.percent");
  e->wb_count = (int)sl__conf_int(conf, "state.rocksdb.write_buffer.count");
  e->par = bc->par > 0 ? bc->par : 1;
  if (!e->state_dir)
    goto nomem;
#ifdef __GLIBC__
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  if (sl__conf_bool(conf, "state.rocksdb.malloc.tune")) {
    pthread_once(&once, malloc_tune);
    e->malloc_trim = true;
  }
#endif
  if (wbp + wkp > 90) {
    sl__errf(err, errlen,
             "RocksDB state: state.rocksdb.write_buffer.percent (%d) + "
             "state.rocksdb.write_back.percent (%d) must leave at least 10%% "
             "of state.rocksdb.memory for the block cache",
             wbp, wkp);
    env_free(e);
    return NULL;
  }
  e->write_buffer = e->budget * (size_t)wbp / 100; /* < 2^47: no overflow */
  e->write_back = e->budget * (size_t)wkp / 100;
  e->block_cache = e->budget - e->write_buffer - e->write_back;
  /* The block cache charges each block its usable size, but a cache of
   * ~4 KiB blocks of varying sizes, freed in LRU order and interleaved
   * with their handles, leaves holes in the heap that small requests
   * split and larger ones cannot use: about 1/8 more stays resident
   * (15.5 MiB of free ~4 KiB chunks behind a full 128 MiB cache). Those
   * holes come out of the block cache's share. */
  e->block_cache -= e->block_cache / 8;
  if (kind == ENV_NODIR) {
    /* A reader of snapshots: a small cache is enough. */
    e->block_cache = e->block_cache < 32 * MIB ? e->block_cache : 32 * MIB;
  } else {
    int rc = sl__mkdirs(e->state_dir, e->fmode.dir) ? errno : 0;
    if (rc) {
      sl__errf(err, errlen,
               "RocksDB state: state.dir \"%s\": cannot create it: %s",
               e->state_dir, strerror(rc));
      env_free(e);
      return NULL;
    }
    if (kind == ENV_PRIVATE) {
      size_t n = strlen(e->state_dir) + 32;
      if (!(e->dir = malloc(n)))
        goto nomem;
      snprintf(e->dir, n, "%s/private-XXXXXX", e->state_dir);
      if (!mkdtemp(e->dir)) {
        sl__errf(err, errlen,
                 "RocksDB state: state.dir \"%s\": cannot create a directory "
                 "in it: %s",
                 e->state_dir, strerror(errno));
        env_free(e);
        return NULL;
      }
      e->private_dir = true;
    } else {
      char *name = dir_name(bc->job);
      size_t n = strlen(e->state_dir) + (name ? strlen(name) : 0) + 16;
      if (!name || !(e->dir = malloc(n))) {
        free(name);
        goto nomem;
      }
      snprintf(e->dir, n, "%s/%s", e->state_dir, name);
      free(name);
      char lock[PATH_MAX];
      errno = ENAMETOOLONG;
      if (path_join(lock, sizeof(lock), e->dir, ".lock") ||
          (mkdir(e->dir, e->fmode.dir) && errno != EEXIST) ||
          (e->lock_fd =
               open(lock, O_RDWR | O_CREAT | O_CLOEXEC, e->fmode.file)) < 0) {
        sl__errf(err, errlen,
                 "RocksDB state: state.dir \"%s\": cannot create \"%s\": %s",
                 e->state_dir, lock, strerror(errno));
        env_free(e);
        return NULL;
      }
      if (flock(e->lock_fd, LOCK_EX | LOCK_NB)) {
        int en = errno;
        sl__errf(err, errlen,
                 "RocksDB state: state.dir \"%s\" is in use: job \"%s\" is "
                 "already running with it (\"%s\" is locked by another "
                 "process or job: %s); give each running job its own "
                 "state.dir or job name",
                 e->state_dir, bc->job ? bc->job : "", lock,
                 en == EWOULDBLOCK ? "held" : strerror(en));
        env_free(e);
        return NULL;
      }
    }
  }
  /* Shards of at least 8 MiB: a block bigger than its shard is evicted
   * as soon as it is inserted, and read again on every access. */
  int bits = 0;
  while (bits < 6 && (e->block_cache >> (bits + 1)) >= 8 * MIB)
    bits++;
  rocksdb_lru_cache_options_t *lo = rocksdb_lru_cache_options_create();
  if (lo) {
    rocksdb_lru_cache_options_set_capacity(lo, e->block_cache);
    rocksdb_lru_cache_options_set_num_shard_bits(lo, bits);
    e->cache = rocksdb_cache_create_lru_opts(lo);
    rocksdb_lru_cache_options_destroy(lo);
  }
  if (!e->cache)
    goto nomem;
  return e;
nomem:
  sl__errf(err, errlen, "RocksDB state: out of memory");
  env_free(e);
  return NULL;
}

/* The job's env, made by whichever worker comes first. */
static rk_env *env_get(const sl__backend_conf *bc, int kind, bool *own,
                       char *err, size_t errlen) {
  *own = !bc->shared;
  if (!bc->shared)
    return env_new(bc, kind == ENV_JOB ? ENV_PRIVATE : kind, err, errlen);
  pthread_mutex_lock(&bc->shared->lock);
  rk_env *e = bc->shared->p;
  if (!e && (e = env_new(bc, ENV_JOB, err, errlen))) {
    bc->shared->p = e;
    bc->shared->free_fn = env_free;
  }
  pthread_mutex_unlock(&bc->shared->lock);
  return e;
}

/* ---- Errors ------------------------------------------------------------- */

int sl__rk_fail(rk *b, const char *what, char *rerr) {
  int rc = rerr && !strncmp(rerr, "Corruption", 10) ? SL_ERR_CORRUPT
           : rerr                                   ? SL_ERR_IO
                                                    : SL_ERR_CORRUPT;
  if (b->failed >= 0) { /* 0 or RK_BG_RUNNING */
    b->failed = rc;
    sl__errf(b->errbuf, sizeof(b->errbuf),
             "RocksDB state of worker %d in \"%s\" (state.dir \"%s\"): %s "
             "failed: %s",
             b->worker, b->dir ? b->dir : "", b->env->state_dir, what,
             rerr ? rerr : "a key that this backend did not write");
    b->base.errmsg = b->errbuf;
  }
  rocksdb_free(rerr);
  return rc;
}

/* ---- States and metadata ------------------------------------------------ */

static void be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}
static uint32_t get_le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static void le32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++, v >>= 8)
    p[i] = (unsigned char)v;
}
static void le64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++, v >>= 8)
    p[i] = (unsigned char)v;
}
static uint64_t get_le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static size_t meta_key(char *buf, const char *prefix, uint32_t id) {
  size_t n = strlen(prefix);
  memcpy(buf, prefix, n);
  be32((unsigned char *)buf + n, id);
  return n + 4;
}

static int meta_put(rk *b, const char *key, size_t kl, const void *val,
                    size_t vl) {
  int rc = sl__rk_settle(b);
  if (rc)
    return rc;
  char *err = NULL;
  rocksdb_put_cf(b->db, b->wo, b->cf_meta, key, kl, val, vl, &err);
  b->wseq++;
  return err ? sl__rk_fail(b, "writing metadata", err) : 0;
}

/* A metadata value (malloc'd, rocksdb_free), NULL when absent. */
static char *meta_get(rk *b, const char *key, size_t kl, size_t *vl,
                      char **err) {
  return rocksdb_get_cf(b->db, b->ro, b->cf_meta, key, kl, vl, err);
}

static rk_state *state_new(rk *b, const char *name, sl__btype type) {
  rk_state *st = calloc(1, sizeof(*st));
  if (!st)
    return NULL;
  st->b = b;
  st->type = type;
  atomic_init(&st->ttl_ms, 0);
  atomic_init(&st->ttl_domain, 0);
  atomic_init(&st->dropped_entries, 0);
  atomic_init(&st->dropped_bytes, 0);
  st->name = sl__strdup(name);
  st->opts = rocksdb_options_create_copy(b->opts);
  st->filter = sl__rk_filter(st);
  if (!st->name || !st->opts || !st->filter) {
    if (st->opts)
      rocksdb_options_destroy(st->opts);
    if (st->filter)
      rocksdb_compactionfilter_destroy(st->filter);
    free(st->name);
    free(st);
    return NULL;
  }
  rocksdb_options_set_compaction_filter(st->opts, st->filter);
  return st;
}

/* After the DB is closed: the filter may run until then. */
static void state_free(rk_state *st) {
  if (!st)
    return;
  rocksdb_options_destroy(st->opts);
  rocksdb_compactionfilter_destroy(st->filter);
  free(st->name);
  free(st);
}

static int states_reserve(rk *b, uint32_t n) {
  if (n <= b->cap_states)
    return 0;
  uint32_t cap = b->cap_states ? b->cap_states * 2 : 8;
  while (cap < n)
    cap *= 2;
  rk_state **s = realloc(b->states, cap * sizeof(*s));
  if (!s)
    return SL_ERR_NOMEM;
  memset(s + b->cap_states, 0, (cap - b->cap_states) * sizeof(*s));
  b->states = s;
  b->cap_states = cap;
  return 0;
}

static int rk_register(sl__backend *be, const char *name, sl__btype type,
                       uint32_t *id) {
  rk *b = (rk *)be;
  for (uint32_t i = 0; i < b->n_states; i++) {
    if (strcmp(b->states[i]->name, name) == 0) {
      if (b->states[i]->type != type)
        return SL_ERR_INVAL;
      *id = i;
      return 0;
    }
  }
  if (b->readonly)
    return SL_ERR_NOTFOUND;
  /* A column family made now would be in the checkpoint in flight. */
  int src = sl__rk_settle(b);
  if (src)
    return src;
  int rc = rk_failed(b);
  if (!rc && b->n_states >= RK_MAX_STATES) /* entries hold 16-bit ids */
    rc = SL_ERR_RANGE;
  if (rc || (rc = states_reserve(b, b->n_states + 1)))
    return rc;
  rk_state *st = state_new(b, name, type);
  size_t nl = strlen(name);
  char *cfname = malloc(nl + sizeof(CF_PREFIX));
  unsigned char *val = malloc(nl + 1);
  if (!st || !cfname || !val) {
    state_free(st);
    free(cfname);
    free(val);
    return SL_ERR_NOMEM;
  }
  snprintf(cfname, nl + sizeof(CF_PREFIX), "%s%s", CF_PREFIX, name);
  char *err = NULL;
  st->cf = rocksdb_create_column_family(b->db, st->opts, cfname, &err);
  free(cfname);
  if (err) {
    state_free(st);
    free(val);
    return sl__rk_fail(b, "creating a column family", err);
  }
  st->id = b->n_states;
  b->states[b->n_states++] = st;
  char key[32];
  val[0] = (unsigned char)type;
  memcpy(val + 1, name, nl);
  rc = meta_put(b, key, meta_key(key, META_STATE, st->id), val, nl + 1);
  free(val);
  if (rc)
    return rc;
  *id = st->id;
  return 0;
}

static uint32_t rk_state_count(const sl__backend *be) {
  return ((const rk *)be)->n_states;
}

static int rk_state_info(const sl__backend *be, uint32_t id, const char **name,
                         sl__btype *type) {
  const rk *b = (const rk *)be;
  if (id >= b->n_states)
    return SL_ERR_NOTFOUND;
  *name = b->states[id]->name;
  *type = b->states[id]->type;
  return 0;
}

static void rk_stats(const sl__backend *be, uint32_t state,
                     sl__state_stats *out) {
  const rk *b = (const rk *)be;
  memset(out, 0, sizeof(*out));
  if (state >= b->n_states)
    return;
  rk_state *st = b->states[state];
  uint64_t de =
      atomic_load_explicit(&st->dropped_entries, memory_order_relaxed);
  uint64_t db = atomic_load_explicit(&st->dropped_bytes, memory_order_relaxed);
  out->entries = st->stats.entries > de ? st->stats.entries - de : 0;
  out->bytes = st->stats.bytes > db ? st->stats.bytes - db : 0;
}

static void rk_set_ttl(sl__backend *be, uint32_t state, int64_t ttl_ms,
                       int domain) {
  rk *b = (rk *)be;
  if (state >= b->n_states)
    return;
  rk_state *st = b->states[state];
  atomic_store_explicit(&st->ttl_domain, domain != 0, memory_order_relaxed);
  atomic_store_explicit(&st->ttl_ms, ttl_ms > 0 ? ttl_ms : 0,
                        memory_order_release);
}

/* Reads what open needs from the metadata of an existing DB: its format,
 * key groups, states (in id order) and their stats. */
static int meta_load(rk *b, uint32_t range[3], char *what, size_t whatlen) {
  char *err = NULL;
  size_t vl;
  char *v = meta_get(b, META_FORMAT, strlen(META_FORMAT), &vl, &err);
  if (err || !v || vl != 4 || get_le32((unsigned char *)v) != RK_FORMAT) {
    sl__errf(what, whatlen, "not a sluice RocksDB state: %s",
             err ? err : "no or unknown format marker");
    rocksdb_free(err);
    rocksdb_free(v);
    return SL_ERR_CORRUPT;
  }
  rocksdb_free(v);
  v = meta_get(b, META_RANGE, strlen(META_RANGE), &vl, &err);
  if (err || !v || vl != 12) {
    sl__errf(what, whatlen, "no key-group range: %s", err ? err : "missing");
    rocksdb_free(err);
    rocksdb_free(v);
    return SL_ERR_CORRUPT;
  }
  for (int i = 0; i < 3; i++)
    range[i] = get_le32((unsigned char *)v + 4 * i);
  rocksdb_free(v);
  /* Every column family but the default is a state with metadata. */
  uint32_t n = 0;
  for (uint32_t i = 0; i < b->cap_states && b->states[i]; i++)
    n++;
  rk_state **byid = calloc(n ? n : 1, sizeof(*byid));
  if (!byid)
    return SL_ERR_NOMEM;
  int rc = 0;
  for (uint32_t id = 0; id < n && !rc; id++) {
    char key[32];
    v = meta_get(b, key, meta_key(key, META_STATE, id), &vl, &err);
    if (err || !v || vl < 1) {
      sl__errf(what, whatlen, "state %u has no metadata: %s", id,
               err ? err : "missing");
      rc = SL_ERR_CORRUPT;
    } else {
      for (uint32_t i = 0; i < n; i++) {
        rk_state *st = b->states[i];
        if (strlen(st->name) == vl - 1 && !memcmp(st->name, v + 1, vl - 1)) {
          st->type = (sl__btype)(unsigned char)v[0];
          st->id = id;
          byid[id] = st;
        }
      }
      if (!byid[id] || (unsigned char)v[0] > SL__BT_MAP) {
        sl__errf(what, whatlen, "state %u (\"%.*s\") has no column family", id,
                 (int)(vl - 1), v + 1);
        rc = SL_ERR_CORRUPT;
      }
    }
    rocksdb_free(err);
    err = NULL;
    rocksdb_free(v);
    if (rc)
      break;
    v = meta_get(b, key, meta_key(key, META_STATS, id), &vl, &err);
    if (v && vl == 16) {
      byid[id]->stats.entries = get_le64((unsigned char *)v);
      byid[id]->stats.bytes = get_le64((unsigned char *)v + 8);
    }
    rocksdb_free(err);
    err = NULL;
    rocksdb_free(v);
  }
  if (!rc) {
    memcpy(b->states, byid, n * sizeof(*byid));
    b->n_states = n;
  }
  free(byid);
  return rc;
}

/* ---- Open and close ----------------------------------------------------- */

static int make_options(rk *b) {
  rk_env *e = b->env;
  size_t wb = e->write_buffer / (size_t)e->par;
  if (wb < 2 * MIB)
    wb = 2 * MIB;
  rocksdb_options_t *o = b->opts = rocksdb_options_create();
  b->topts = rocksdb_block_based_options_create();
  b->ro = rocksdb_readoptions_create();
  b->wo = rocksdb_writeoptions_create();
  if (!o || !b->topts || !b->ro || !b->wo)
    return SL_ERR_NOMEM;
  rocksdb_options_set_create_if_missing(o, 1);
  rocksdb_options_set_max_background_jobs(o, 2);
  /* All memtables of this worker's DB; per column family, room for
   * write_buffer.count of them within that. */
  size_t memtable = wb / (size_t)e->wb_count;
  rocksdb_options_set_db_write_buffer_size(o, wb);
  rocksdb_options_set_write_buffer_size(o, memtable);
  rocksdb_options_set_max_write_buffer_number(o, e->wb_count);
  /* A table file being built holds its filter and index partitions in
   * memory until it is finished: up to a fifth of the file for small
   * entries, on a background thread, outside the budget. Files of 1/16 of
   * the worker's budget (8 to 64 MiB; RocksDB's default is 64) keep that
   * near 1%. */
  size_t target = e->budget / (size_t)e->par / 16;
  target = target < 8 * MIB ? 8 * MIB : target > 64 * MIB ? 64 * MIB : target;
  rocksdb_options_set_target_file_size_base(o, target);
  if (e->malloc_trim)
    b->trim_every = memtable;
  /* A bloom filter over each memtable's keys too: most lookups that miss
   * the write-back cache are for new keys, and a big memtable's skiplist
   * walk is the costliest part of such a miss. */
  rocksdb_options_set_memtable_prefix_bloom_size_ratio(o, 0.05);
  rocksdb_options_set_memtable_whole_key_filtering(o, 1);
  rocksdb_options_set_level_compaction_dynamic_level_bytes(o, 1);
  rocksdb_options_set_info_log_level(o, 2); /* warnings and errors */
  rocksdb_options_set_keep_log_file_num(o, 2);
  rocksdb_options_set_max_log_file_size(o, MIB);
  rocksdb_options_set_merge_operator(o, sl__rk_merge_operator());
  /* Index and filter blocks live in the block cache, so the budget bounds
   * them too; bloom filters make a miss for a new key cheap. Both are
   * partitioned (a small top level, pinned, over 4 KiB partitions): a
   * whole-file filter of a large table is megabytes, and one that does
   * not stay cached is read from disk on every lookup. */
  rocksdb_block_based_options_set_block_cache(b->topts, e->cache);
  rocksdb_block_based_options_set_filter_policy(
      b->topts, rocksdb_filterpolicy_create_bloom_full(10));
  rocksdb_block_based_options_set_index_type(
      b->topts, rocksdb_block_based_table_index_type_two_level_index_search);
  rocksdb_block_based_options_set_partition_filters(b->topts, 1);
  rocksdb_block_based_options_set_metadata_block_size(b->topts, 4096);
  rocksdb_block_based_options_set_cache_index_and_filter_blocks(b->topts, 1);
  rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(
      b->topts, 1);
  rocksdb_block_based_options_set_pin_top_level_index_and_filter(b->topts, 1);
  rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(
      b->topts, 1);
  rocksdb_block_based_options_set_format_version(b->topts, 5);
  rocksdb_options_set_block_based_table_factory(o, b->topts);
  /* Checkpoints make the state durable; a WAL would only cost. */
  rocksdb_writeoptions_disable_WAL(b->wo, 1);
  return 0;
}

/* Opens b->dir (or dir, read-only) as it exists: every column family. */
static int open_existing(rk *b, const char *dir, char *what, size_t whatlen) {
  char *err = NULL;
  size_t n = 0;
  char **names = rocksdb_list_column_families(b->opts, dir, &n, &err);
  if (err) {
    sl__errf(what, whatlen, "cannot open \"%s\": %s", dir, err);
    rocksdb_free(err);
    rocksdb_list_column_families_destroy(names, n); /* allocated anyway */
    return SL_ERR_IO;
  }
  const rocksdb_options_t **copts = calloc(n, sizeof(*copts));
  rocksdb_column_family_handle_t **h = calloc(n, sizeof(*h));
  int rc = copts && h ? states_reserve(b, (uint32_t)n) : SL_ERR_NOMEM;
  uint32_t ns = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    if (!strcmp(names[i], "default")) {
      copts[i] = b->opts;
      continue;
    }
    if (strncmp(names[i], CF_PREFIX, strlen(CF_PREFIX))) {
      sl__errf(what, whatlen,
               "\"%s\" has a column family \"%s\" we did not make", dir,
               names[i]);
      rc = SL_ERR_CORRUPT;
      break;
    }
    rk_state *st = state_new(b, names[i] + strlen(CF_PREFIX), SL__BT_VALUE);
    if (!st) {
      rc = SL_ERR_NOMEM;
      break;
    }
    b->states[ns++] = st;
    copts[i] = st->opts;
  }
  if (!rc) {
    if (b->readonly)
      b->db = rocksdb_open_for_read_only_column_families(
          b->opts, dir, (int)n, (const char *const *)names, copts, h, 0, &err);
    else
      b->db = rocksdb_open_column_families(
          b->opts, dir, (int)n, (const char *const *)names, copts, h, &err);
    if (err) {
      sl__errf(what, whatlen, "cannot open \"%s\": %s", dir, err);
      rc = !strncmp(err, "Corruption", 10) ? SL_ERR_CORRUPT : SL_ERR_IO;
      rocksdb_free(err);
    }
  }
  for (size_t i = 0, s = 0; !rc && i < n; i++) {
    if (!strcmp(names[i], "default"))
      b->cf_meta = h[i];
    else
      b->states[s++]->cf = h[i];
  }
  if (!rc && !b->cf_meta) {
    sl__errf(what, whatlen, "\"%s\" has no default column family", dir);
    rc = SL_ERR_CORRUPT;
  }
  rocksdb_list_column_families_destroy(names, n);
  free(copts);
  free(h);
  return rc;
}

static void rk_close(sl__backend *be) {
  rk *b = (rk *)be;
  if (!b)
    return;
  sl__rk_settle(b); /* the coordinator may still wait for its directory */
  sl__rk_mapit_reset(b);
  if (b->mit.ro)
    rocksdb_readoptions_destroy(b->mit.ro);
  free(b->mit.prefix);
  free(b->mit.upper);
  free(b->mit_buf);
  if (b->db) {
    /* The state is discarded (checkpoints hold what must last): stop the
     * background work instead of finishing it. */
    rocksdb_cancel_all_background_work(b->db, 1);
    if (b->cf_meta)
      rocksdb_column_family_handle_destroy(b->cf_meta);
    for (uint32_t i = 0; i < b->cap_states && b->states[i]; i++)
      if (b->states[i]->cf)
        rocksdb_column_family_handle_destroy(b->states[i]->cf);
    rocksdb_close(b->db);
  }
  sl__rk_cache_free(b); /* its entries name their states */
  for (uint32_t i = 0; i < b->cap_states && b->states[i]; i++)
    state_free(b->states[i]);
  free(b->states);
  if (b->opts)
    rocksdb_options_destroy(b->opts);
  if (b->topts)
    rocksdb_block_based_options_destroy(b->topts);
  if (b->ro)
    rocksdb_readoptions_destroy(b->ro);
  if (b->wo)
    rocksdb_writeoptions_destroy(b->wo);
  free(b->kbuf);
  if (b->dir && !b->readonly)
    (void)sl__rmtree(b->dir);
  if (b->logdir)
    (void)sl__rmtree(b->logdir);
  free(b->logdir);
  free(b->dir);
  if (b->own_env)
    env_free(b->env);
  free(b);
}

static bool range_ok(const sl__backend_conf *bc, char *err, size_t errlen) {
  /* Key groups are 2 bytes in keys; a key group's end must be too. */
  if (!bc->max_par || bc->max_par > 32768 || bc->kg_lo >= bc->kg_hi ||
      bc->kg_hi > bc->max_par) {
    sl__errf(err, errlen,
             "RocksDB state backend: bad key-group range %u..%u of %u",
             bc->kg_lo, bc->kg_hi, bc->max_par);
    return false;
  }
  return true;
}

static rk *rk_new(const sl__backend_conf *bc, int env_kind, char *err,
                  size_t errlen) {
  rk *b = calloc(1, sizeof(*b));
  if (!b) {
    sl__errf(err, errlen, "RocksDB state: out of memory");
    return NULL;
  }
  b->worker = bc->worker;
  atomic_init(&b->base.ttl_now[0], INT64_MIN);
  atomic_init(&b->base.ttl_now[1], INT64_MIN);
  if (!(b->env = env_get(bc, env_kind, &b->own_env, err, errlen))) {
    free(b);
    return NULL;
  }
  size_t wbc = b->env->write_back / (size_t)b->env->par;
  if (env_kind == ENV_NODIR)
    wbc = 8 * MIB; /* reads only */
  if (make_options(b) || sl__rk_cache_init(b, wbc < MIB ? MIB : wbc)) {
    sl__errf(err, errlen, "RocksDB state: out of memory");
    rk_close(&b->base);
    return NULL;
  }
  return b;
}

static sl__backend *rk_open(const sl__backend_conf *bc, char *err,
                            size_t errlen) {
  if (!range_ok(bc, err, errlen))
    return NULL;
  rk *b = rk_new(bc, ENV_JOB, err, errlen);
  if (!b)
    return NULL;
  b->base.ops = &sl__rocksdb_ops;
  b->base.kg_lo = bc->kg_lo;
  b->base.kg_hi = bc->kg_hi;
  b->base.max_par = bc->max_par;
  rk_env *e = b->env;
  size_t n = strlen(e->dir) + 32;
  char what[1024] = "";
  int rc = 0;
  if (!(b->dir = malloc(n))) {
    rk_close(&b->base);
    sl__errf(err, errlen, "RocksDB state: out of memory");
    return NULL;
  }
  if (e->private_dir)
    snprintf(b->dir, n, "%s/db", e->dir);
  else
    snprintf(b->dir, n, "%s/w%d", e->dir, bc->worker);
  /* Left over from a run that did not end cleanly: the job's lock says
   * nobody uses it. */
  (void)sl__rmtree(b->dir);
  if (bc->restore_dir) {
    if (clone_dir(bc->restore_dir, b->dir, e->fmode, what, sizeof(what)))
      rc = SL_ERR_IO;
    else if (!(rc = open_existing(b, b->dir, what, sizeof(what)))) {
      uint32_t range[3];
      if (!(rc = meta_load(b, range, what, sizeof(what))) &&
          (range[0] != bc->max_par || range[1] != bc->kg_lo ||
           range[2] != bc->kg_hi)) {
        sl__errf(what, sizeof(what),
                 "it holds key groups %u..%u of %u, this worker owns %u..%u "
                 "of %u",
                 range[1], range[2], range[0], bc->kg_lo, bc->kg_hi,
                 bc->max_par);
        rc = SL_ERR_INVAL;
      }
    }
    if (rc) {
      sl__errf(err, errlen,
               "RocksDB state of worker %d: cannot restore from \"%s\": %s",
               bc->worker, bc->restore_dir, what);
      rk_close(&b->base);
      return NULL;
    }
    return &b->base;
  }
  const char *names[] = {"default"};
  const rocksdb_options_t *copts[] = {b->opts};
  rocksdb_column_family_handle_t *h[1] = {NULL};
  char *rerr = NULL;
  b->db =
      rocksdb_open_column_families(b->opts, b->dir, 1, names, copts, h, &rerr);
  b->cf_meta = h[0];
  if (!rerr) {
    unsigned char v[12];
    le32(v, RK_FORMAT);
    if (!(rc = meta_put(b, META_FORMAT, strlen(META_FORMAT), v, 4))) {
      le32(v, bc->max_par), le32(v + 4, bc->kg_lo), le32(v + 8, bc->kg_hi);
      rc = meta_put(b, META_RANGE, strlen(META_RANGE), v, 12);
    }
  }
  if (rerr || rc) {
    sl__errf(
        err, errlen,
        "RocksDB state of worker %d: state.dir \"%s\": cannot open \"%s\": "
        "%s",
        bc->worker, e->state_dir, b->dir, rerr ? rerr : b->errbuf);
    rocksdb_free(rerr);
    rk_close(&b->base);
    return NULL;
  }
  return &b->base;
}

static sl__backend *rk_open_snapshot(const char *dir,
                                     const sl__backend_conf *bc, char *err,
                                     size_t errlen) {
  rk *b = rk_new(bc, ENV_NODIR, err, errlen);
  if (!b)
    return NULL;
  b->base.ops = &rk_ro_ops;
  b->readonly = true;
  char what[1024] = "";
  uint32_t range[3] = {0, 0, 0};
  int rc = (b->dir = sl__strdup(dir)) ? 0 : SL_ERR_NOMEM;
  /* Even read-only, RocksDB writes a LOG file where the database is: not
   * in a snapshot, which must stay as the checkpoint wrote it. */
  const char *tmp = getenv("TMPDIR");
  size_t n = strlen(tmp && *tmp ? tmp : "/tmp") + 32;
  if (!rc && (b->logdir = malloc(n))) {
    snprintf(b->logdir, n, "%s/sluice-reader-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(b->logdir))
      rocksdb_options_set_db_log_dir(b->opts, b->logdir);
    else
      free(b->logdir), b->logdir = NULL; /* the LOG goes beside it */
  }
  if (!rc && !(rc = open_existing(b, dir, what, sizeof(what))) &&
      !(rc = meta_load(b, range, what, sizeof(what))) && bc->max_par &&
      range[0] != bc->max_par) {
    sl__errf(what, sizeof(what),
             "it has %u key groups (max.parallelism), the job %u: that cannot "
             "change",
             range[0], bc->max_par);
    rc = SL_ERR_INVAL;
  }
  if (rc) {
    sl__errf(err, errlen, "RocksDB snapshot \"%s\": %s", dir,
             *what ? what : sl_strerror(rc));
    rk_close(&b->base);
    return NULL;
  }
  b->base.max_par = range[0];
  b->base.kg_lo = range[1];
  b->base.kg_hi = range[2];
  return &b->base;
}

/* ---- Snapshots ---------------------------------------------------------- *
 * A snapshot's pause on the worker is O(1) in the state: the cache's dirty
 * list becomes the snapshot's frozen set (sl__rk_freeze) and the state
 * counters a small write batch, and the worker goes on while a thread of
 * the snapshot copies the frozen entries into records, sorts them and
 * writes them into RocksDB, flushes the memtables and makes the
 * hard-linked checkpoint. The checkpoint holds exactly the state at the
 * barrier because the thread sees every frozen entry as it was then (the
 * worker changes a copy of one the thread has not copied yet,
 * sl__rk_own) and the worker writes nothing into RocksDB until the thread
 * is done: writes made after the barrier stay in the cache (they are
 * dirty in the next generation, and the next flush writes them), and what
 * would make the cache write or read past it (iterators, whole-list
 * reads, key group drops) first waits for the thread (sl__rk_settle).
 * Eviction meanwhile drops clean entries only, and the frozen ones only
 * once the thread has copied them into its records and sorted those,
 * which then answer the point reads that miss the cache before RocksDB
 * does. Copies and, once sorted, the records count in the cache's bytes
 * until RocksDB holds the records, so an eviction waits for the thread
 * only when what is left is dirty since the barrier.                     */

typedef struct rk_job {
  rocksdb_t *db;
  rocksdb_writeoptions_t *wo;
  rocksdb_column_family_handle_t **cfs; /* meta, then every state */
  uint32_t n_cfs;
  rocksdb_writebatch_t *meta; /* the state counters at the barrier */
  rk_frozen fz;               /* empty when nothing was dirty */
  char *dir;                  /* NULL: write and flush only */
  sl__fmode fmode;
  int worker;
  const char *state_dir; /* the env's (closing waits for this thread) */
  /* Where it failed (set by the thread, read after the join): a copy, a
   * write or a flush fails the backend, the checkpoint alone fails the
   * snapshot. */
  const char *failed_at;
  char rerr[512];
} rk_job;

static int restrict_modes(const char *dir, sl__fmode fm);

static void job_free(void *p) {
  rk_job *j = p;
  if (!j)
    return;
  if (j->meta)
    rocksdb_writebatch_destroy(j->meta);
  sl__rk_frozen_free(&j->fz);
  free(j->cfs);
  free(j->dir);
  free(j);
}

static void job_fail(rk_job *j, const char *at, const char *why) {
  j->failed_at = at;
  snprintf(j->rerr, sizeof(j->rerr), "%s", why);
}

static void flush_cfs(rk_job *j, bool wait, char **rerr) {
  rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
  rocksdb_flushoptions_set_wait(fo, wait);
  for (uint32_t i = 0; i < j->n_cfs && !*rerr; i++)
    rocksdb_flush_cf(j->db, fo, j->cfs[i], rerr);
  rocksdb_flushoptions_destroy(fo);
}

static int job_run(sl__snap_task *t, void *p, char *err, size_t errlen) {
  rk_job *j = p;
  char *rerr = NULL;
  /* Test points: 1 before the copy, 5 half-way through it, 2 before the
   * writes, 3 before the flush, 4 before the checkpoint. */
  sl__snap_task_point(t, 1);
  if (sl__rk_frozen_copy(&j->fz, j->fz.n / 2)) {
    job_fail(j, "copy", strerror(ENOMEM));
    goto out;
  }
  sl__snap_task_point(t, 5);
  if (sl__rk_frozen_copy(&j->fz, j->fz.n)) {
    job_fail(j, "copy", strerror(ENOMEM));
    goto out;
  }
  /* The memtables hold what evictions wrote before the barrier: their
   * flush starts now, beside the sort, so that the ingest below, which
   * must flush a memtable its file overlaps, finds it under way. */
  flush_cfs(j, false, &rerr);
  if (rerr) {
    job_fail(j, "flush", rerr);
    goto out;
  }
  sl__rk_frozen_sort(&j->fz);
  sl__snap_task_signal(t); /* an eviction may wait for the sort */
  sl__snap_task_point(t, 2);
  rocksdb_write(j->db, j->wo, j->meta, &rerr);
  if (!rerr && sl__rk_frozen_write(&j->fz, j->db, j->wo, &rerr)) {
    job_fail(j, "write", strerror(ENOMEM));
    goto out;
  }
  if (rerr) {
    job_fail(j, "write", rerr);
    goto out;
  }
  atomic_store_explicit(&j->fz.written, true, memory_order_release);
  sl__snap_task_signal(t);
  sl__snap_task_point(t, 3);
  int fault = sl__fault_hit("rocksdb.flush");
  if (fault) {
    job_fail(j, "flush", strerror(fault));
    goto out;
  }
  flush_cfs(j, true, &rerr);
  if (rerr) {
    job_fail(j, "flush", rerr);
    goto out;
  }
  sl__snap_task_point(t, 4);
  if (!j->dir)
    goto out;
  /* RocksDB builds it in "<dir>.tmp" and renames it when complete, so a
   * failure leaves nothing that could pass for a snapshot. */
  rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(j->db, &rerr);
  if (!rerr)
    rocksdb_checkpoint_create(cp, j->dir, 0, &rerr);
  if (cp)
    rocksdb_checkpoint_object_destroy(cp);
  if (rerr) {
    sl__errf(err, errlen,
             "RocksDB state of worker %d (state.dir \"%s\"): snapshot into "
             "\"%s\" failed: %s",
             j->worker, j->state_dir, j->dir, rerr);
    rocksdb_free(rerr);
    return SL_ERR_IO;
  }
  if (restrict_modes(j->dir, j->fmode)) {
    sl__errf(err, errlen,
             "RocksDB state of worker %d: snapshot \"%s\": cannot set the "
             "modes files.access asks for: %s",
             j->worker, j->dir, strerror(errno));
    return SL_ERR_IO;
  }
out:
  rocksdb_free(rerr);
  if (j->failed_at) {
    sl__errf(err, errlen,
             "RocksDB state of worker %d (state.dir \"%s\"): snapshot into "
             "\"%s\": %s failed: %s",
             j->worker, j->state_dir, j->dir ? j->dir : "", j->failed_at,
             j->rerr);
    return SL_ERR_IO;
  }
  return 0;
}

int sl__rk_settle(rk *b) {
  if (!b->bg)
    return b->failed < 0 ? b->failed : 0;
  int64_t t0 = sl__mono_ns();
  sl__snap_task_join(b->bg, NULL, 0);
  b->base.snap_wait_ns += sl__mono_ns() - t0;
  if (b->failed == RK_BG_RUNNING)
    b->failed = 0;
  sl__rk_thaw(b);       /* the thread reads no frozen entry any more */
  b->cache.snap = NULL; /* RocksDB holds what its records did */
  b->cache.early_spent = false;
  rk_job *j = b->bg_job;
  /* RocksDB takes no more writes after a failed write or flush (its
   * background error), and the cache holds entries as clean that RocksDB
   * may not have: the backend fails for good. */
  if (j->failed_at)
    sl__rk_fail(b, j->failed_at, strdup(j->rerr));
  b->cache.bytes -= b->bg_bytes;
  b->bg_bytes = 0;
  sl__snap_task_drop(b->bg);
  b->bg = NULL;
  b->bg_job = NULL;
  return b->failed;
}

/* Whether the thread has sorted the frozen set's records (written
 * false) or written them (true); also when there is none. */
static bool bg_reached(rk *b, bool written) {
  rk_frozen *f = written ? b->cache.snap : b->cache.fz;
  return !f || atomic_load_explicit(written ? &f->written : &f->sorted,
                                    memory_order_acquire);
}
static bool is_sorted(void *b) {
  return bg_reached(b, false);
}
static bool is_written(void *b) {
  return bg_reached(b, true);
}

void sl__rk_wait_bg(rk *b, bool written) {
  if (!b->bg)
    return;
  int64_t t0 = sl__mono_ns();
  sl__snap_task_await(b->bg, written ? is_written : is_sorted, b);
  b->base.snap_wait_ns += sl__mono_ns() - t0;
  sl__rk_poll(b);
}

void sl__rk_poll(rk *b) {
  if (!b->bg)
    return;
  if (bg_reached(b, false))
    sl__rk_thaw(b);
  if (sl__snap_task_done(b->bg))
    sl__rk_settle(b);
  else if (b->cache.snap && bg_reached(b, true))
    sl__rk_release(b);
}

/* The worker's part: the dirty list frozen and the state counters in a
 * write batch, handed to a new thread with the rest (dir NULL: no
 * checkpoint, the memtables are flushed only). */
static int snap_begin(rk *b, const char *dir, sl__snap_task **out) {
  *out = NULL;
  int64_t waited = b->base.snap_wait_ns; /* this wait is in the pause */
  int rc = sl__rk_settle(b);
  b->base.snap_wait_ns = waited;
  if (rc)
    return rc;
  rk_job *j = calloc(1, sizeof(*j));
  if (!j || (dir && !(j->dir = strdup(dir))) ||
      !(j->cfs = calloc(b->n_states + 1, sizeof(*j->cfs))) ||
      !(j->meta = rocksdb_writebatch_create())) {
    job_free(j);
    return SL_ERR_NOMEM;
  }
  j->db = b->db;
  j->wo = b->wo;
  j->fmode = b->env->fmode;
  j->worker = b->worker;
  j->state_dir = b->env->state_dir;
  j->cfs[j->n_cfs++] = b->cf_meta;
  for (uint32_t id = 0; id < b->n_states; id++)
    j->cfs[j->n_cfs++] = b->states[id]->cf;
  for (uint32_t id = 0; id < b->n_states; id++) {
    sl__state_stats s;
    rk_stats(&b->base, id, &s);
    unsigned char v[16];
    char key[32];
    le64(v, s.entries);
    le64(v + 8, s.bytes);
    rocksdb_writebatch_put_cf(j->meta, b->cf_meta, key,
                              meta_key(key, META_STATS, b->states[id]->id),
                              (const char *)v, 16);
  }
  if (b->cache.n_dirty && (rc = sl__rk_freeze(b, &j->fz))) {
    job_free(j);
    return rc;
  }
  bool frozen = j->fz.n > 0;
  sl__snap_task *t = sl__snap_task_start(job_run, job_free, j);
  if (!t) {
    /* Nothing happened since the freeze: the dirty list is the cache's
     * again, and the checkpoint fails with nothing lost. */
    if (frozen)
      sl__rk_unfreeze(b, &j->fz);
    job_free(j);
    return SL_ERR_NOMEM;
  }
  b->wseq++; /* a kept iterator predates the snapshot's writes */
  b->bg = t;
  b->bg_job = j;
  if (!b->failed)
    b->failed = RK_BG_RUNNING;
  b->bg_bytes = 0;
  *out = t;
  return 0;
}

/* Makes RocksDB's files hold everything: the write-back cache, then the
 * memtables. */
static int flush_all(rk *b) {
  sl__snap_task *t;
  int rc = rk_failed(b);
  if (rc || (rc = snap_begin(b, NULL, &t)))
    return rc;
  sl__snap_task_drop(t);
  return sl__rk_settle(b);
}

/* RocksDB creates its files 0644 and directories 0755 (less the umask):
 * a snapshot leaves the checkpoint directory with files.access's modes.
 * Its table files are hard links to the live database's, whose directory
 * is already private. files.access=umask keeps what RocksDB made. */
static int restrict_modes(const char *dir, sl__fmode fm) {
  if (fm.file == 0666)
    return 0;
  DIR *d = opendir(dir);
  if (!d)
    return SL_ERR_IO;
  int rc = chmod(dir, fm.dir) ? SL_ERR_IO : 0;
  struct dirent *de;
  while (!rc && (de = readdir(d))) {
    char p[PATH_MAX];
    if (de->d_name[0] == '.' || path_join(p, sizeof(p), dir, de->d_name))
      continue;
    if (chmod(p, fm.file))
      rc = SL_ERR_IO;
  }
  closedir(d);
  return rc;
}

static int rk_snapshot_begin(sl__backend *be, const char *dir,
                             sl__snap_task **task, char *err, size_t errlen) {
  rk *b = (rk *)be;
  int rc = rk_failed(b);
  if (rc || (rc = snap_begin(b, dir, task))) {
    sl__errf(err, errlen, "snapshot into \"%s\": %s", dir,
             b->base.errmsg ? b->base.errmsg : sl_strerror(rc));
    return rc;
  }
  return 0;
}

static int rk_snapshot(sl__backend *be, const char *dir, char *err,
                       size_t errlen) {
  sl__snap_task *t;
  int rc = rk_snapshot_begin(be, dir, &t, err, errlen);
  if (!rc)
    rc = sl__snap_task_wait(t, err, errlen);
  int src = sl__rk_settle((rk *)be);
  if (!rc && src) {
    sl__errf(err, errlen, "snapshot into \"%s\": %s", dir,
             be->errmsg ? be->errmsg : sl_strerror(src));
    rc = src;
  }
  return rc;
}

void sl__rocksdb_compact(sl__backend *be) {
  rk *b = (rk *)be;
  if (b->readonly || flush_all(b))
    return;
  for (uint32_t id = 0; id < b->n_states; id++)
    rocksdb_compact_range_cf(b->db, b->states[id]->cf, NULL, 0, NULL, 0);
  b->wseq++;
  /* What the filter dropped may still be cached: read it all anew. */
  sl__rk_cache_drop_kg(b, UINT32_MAX);
}

/* ---- Ops tables --------------------------------------------------------- */

const sl__backend_ops sl__rocksdb_ops = {
    .name = "rocksdb",
    .open = rk_open,
    .close = rk_close,
    .register_state = rk_register,
    .state_count = rk_state_count,
    .state_info = rk_state_info,
    .get = sl__rk_get,
    .slot = sl__rk_slot,
    .del = sl__rk_del,
    .list_append = sl__rk_list_append,
    .map_get = sl__rk_map_get,
    .map_slot = sl__rk_map_slot,
    .map_remove = sl__rk_map_remove,
    .map_iter = sl__rk_map_iter,
    .map_next = sl__rk_map_next,
    .kg_scan = sl__rk_kg_scan,
    .insert = sl__rk_insert,
    .kg_load = sl__rk_kg_load,
    .kg_drop = sl__rk_kg_drop,
    .stats = rk_stats,
    .cleanup = NULL, /* the compaction filter (set_ttl) */
    .set_ttl = rk_set_ttl,
    .prefetch = sl__rk_prefetch,
    .snapshot = rk_snapshot,
    .snapshot_begin = rk_snapshot_begin,
    .open_snapshot = rk_open_snapshot,
};

/* A snapshot opened read-only: reads work, writes fail. */
static int ro_get(sl__backend *be, const sl__skey *k, void **val, size_t *len,
                  bool for_write) {
  return for_write ? SL_ERR_STATE : sl__rk_get(be, k, val, len, false);
}
static int ro_slot(sl__backend *be, const sl__skey *k, size_t len, void **s) {
  (void)be, (void)k, (void)len, (void)s;
  return SL_ERR_STATE;
}
static int ro_del(sl__backend *be, const sl__skey *k) {
  (void)be, (void)k;
  return SL_ERR_STATE;
}
static int ro_map_get(sl__backend *be, const sl__skey *k, const void *mk,
                      size_t ml, uint64_t mh, void **val, size_t *len,
                      bool for_write) {
  return for_write ? SL_ERR_STATE
                   : sl__rk_map_get(be, k, mk, ml, mh, val, len, false);
}
static int ro_map_slot(sl__backend *be, const sl__skey *k, const void *mk,
                       size_t ml, uint64_t mh, size_t len, void **s) {
  (void)be, (void)k, (void)mk, (void)ml, (void)mh, (void)len, (void)s;
  return SL_ERR_STATE;
}
static int ro_map_remove(sl__backend *be, const sl__skey *k, const void *mk,
                         size_t ml, uint64_t mh) {
  (void)be, (void)k, (void)mk, (void)ml, (void)mh;
  return SL_ERR_STATE;
}
static int ro_map_next(sl__backend *be, sl__map_cursor *c, const void **mk,
                       size_t *ml, void **val, size_t *len, bool for_write) {
  return for_write ? SL_ERR_STATE
                   : sl__rk_map_next(be, c, mk, ml, val, len, false);
}
static int ro_insert(sl__backend *be, uint32_t state, uint32_t kg,
                     const void *key, size_t kl, const void *ns, size_t nl,
                     const void *mk, size_t ml, const void *val, size_t len) {
  (void)be, (void)state, (void)kg, (void)key, (void)kl, (void)ns, (void)nl;
  (void)mk, (void)ml, (void)val, (void)len;
  return SL_ERR_STATE;
}
static void ro_kg_drop(sl__backend *be, uint32_t kg, const bool *states) {
  (void)be, (void)kg, (void)states;
}
static int ro_snapshot(sl__backend *be, const char *dir, char *err,
                       size_t errlen) {
  (void)be;
  sl__errf(err, errlen,
           "snapshot into \"%s\": the source is a read-only "
           "snapshot",
           dir);
  return SL_ERR_STATE;
}

static const sl__backend_ops rk_ro_ops = {
    .name = "rocksdb",
    .open = rk_open,
    .close = rk_close,
    .register_state = rk_register,
    .state_count = rk_state_count,
    .state_info = rk_state_info,
    .get = ro_get,
    .slot = ro_slot,
    .del = ro_del,
    .list_append = ro_slot,
    .map_get = ro_map_get,
    .map_slot = ro_map_slot,
    .map_remove = ro_map_remove,
    .map_iter = sl__rk_map_iter,
    .map_next = ro_map_next,
    .kg_scan = sl__rk_kg_scan,
    .insert = ro_insert,
    .kg_drop = ro_kg_drop,
    .stats = rk_stats,
    .cleanup = NULL,
    .set_ttl = NULL,
    .prefetch = sl__rk_prefetch,
    .snapshot = ro_snapshot,
    .open_snapshot = rk_open_snapshot,
};
