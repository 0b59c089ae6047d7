/* SPDX-License-Identifier: Apache-2.0 */
/* Snapshots of keyed state over an explicit backend, timer service and
 * buffer, and the streaming reader restore uses on worker files
 * (codec.h). */
#include "checkpoint/codec.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/hash.h"
#include "core/util.h"
#include "state/backend.h"
#include "time/taskwm.h"
#include "time/timers.h"

_Static_assert(SL__SNAP_TIMER_DOMAINS == SL__TIMER_DOMAINS,
               "the snapshot format names every timer domain");
_Static_assert(SL__SNAP_VALUE == (int)SL__BT_VALUE &&
                   SL__SNAP_LIST == (int)SL__BT_LIST &&
                   SL__SNAP_MAP == (int)SL__BT_MAP,
               "the snapshot format's state types are the backend's");

/* ---- Writing ------------------------------------------------------------ */

int sl__snap_put_states(sl_buf_t *b, sl__backend *be) {
  size_t mark;
  uint32_t n = be->ops->state_count(be);
  int rc = sl__snap_begin_section(b, SL__SEC_STATES, SL__SNAP_NO_KG, &mark);
  if (!rc)
    rc = sl__buf_u32(b, n);
  for (uint32_t id = 0; !rc && id < n; id++) {
    const char *name;
    sl__btype type;
    if (!(rc = be->ops->state_info(be, id, &name, &type)) &&
        !(rc = sl__buf_u32(b, id)) && !(rc = sl__buf_u32(b, (uint32_t)type)))
      rc = sl__buf_bytes(b, name, strlen(name));
  }
  if (!rc)
    sl__snap_end_section(b, mark);
  return rc;
}

int sl__snap_put_rec(uint32_t state, const void *key, size_t key_len,
                     const void *ns, size_t ns_len, const void *mk,
                     size_t mk_len, const void *val, size_t len, void *opaque) {
  sl__snap_recs *w = opaque;
  sl_buf_t *b = w->b;
  uint8_t has = !val ? 2 : mk != NULL;
  int rc = sl__buf_u32(b, state);
  if (!rc)
    rc = sl__buf_bytes(b, key, key_len);
  if (!rc)
    rc = sl__buf_bytes(b, ns, ns_len);
  if (!rc)
    rc = sl_buf_append(b, &has, 1);
  if (!rc && has == 1)
    rc = sl__buf_bytes(b, mk, mk_len);
  if (!rc && has != 2)
    rc = sl__buf_bytes(b, val, len);
  w->n++;
  return rc;
}

int sl__snap_put_entries(sl_buf_t *b, sl__backend *be, uint64_t *entries) {
  for (uint32_t kg = be->kg_lo; kg < be->kg_hi; kg++) {
    size_t mark;
    int rc = sl__snap_begin_section(b, SL__SEC_ENTRIES, kg, &mark);
    sl__snap_recs pc = {b, 0};
    if (!rc)
      rc = be->ops->kg_scan(be, kg, sl__snap_put_rec, &pc);
    if (rc)
      return rc;
    if (pc.n == 0) {
      b->len = mark - 8; /* drop an empty section */
      continue;
    }
    sl__snap_end_section(b, mark);
    *entries += pc.n;
  }
  return 0;
}

static int put_timer(const sl__timer_view *v, int domain, void *opaque) {
  sl__snap_recs *s = opaque;
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

int sl__snap_put_timers(sl_buf_t *b, const char *uid, struct sl__timers *t,
                        uint64_t *timers) {
  size_t mark;
  sl__snap_recs pc = {b, 0};
  int rc = sl__snap_begin_section(b, SL__SEC_TIMERS, SL__SNAP_NO_KG, &mark);
  if (!rc)
    rc = sl__buf_bytes(b, uid, strlen(uid));
  if (!rc)
    rc = sl__timers_foreach(t, put_timer, &pc);
  if (rc)
    return rc;
  sl__snap_end_section(b, mark);
  *timers += pc.n;
  return 0;
}

int sl__snap_put_taskwm(sl_buf_t *b, const char *uid, const sl__taskwm *tw,
                        uint32_t lo, uint32_t hi) {
  size_t mark;
  uint32_t n = 0;
  for (uint32_t kg = lo; kg < hi && kg < tw->n; kg++)
    n += tw->st[kg] != SL__TASKWM_NONE;
  if (!n)
    return 0;
  int rc = sl__snap_begin_section(b, SL__SEC_TASKWM, SL__SNAP_NO_KG, &mark);
  if (!rc)
    rc = sl__buf_bytes(b, uid, strlen(uid));
  for (uint32_t kg = lo; !rc && kg < hi && kg < tw->n; kg++)
    if (tw->st[kg] != SL__TASKWM_NONE && !(rc = sl__buf_u32(b, kg)))
      rc = sl__buf_u64(b, (uint64_t)sl__taskwm_get(tw, kg));
  if (!rc)
    sl__snap_end_section(b, mark);
  return rc;
}

int sl__snap_put_blob(sl_buf_t *b, uint32_t type, const char *uid,
                      const sl__snap_src *src, const void *blob, size_t len) {
  size_t mark;
  int rc = sl__snap_begin_section(b, type, SL__SNAP_NO_KG, &mark);
  if (!rc)
    rc = sl__buf_bytes(b, uid, strlen(uid));
  if (!rc && src)
    rc = sl__buf_u32(b, src->subtask);
  if (!rc)
    rc = sl__buf_bytes(b, blob, len);
  if (!rc && src) {
    rc = sl__buf_u32(b, SL__SRC_TIME_MAGIC);
    if (!rc)
      rc = sl__buf_u32(b, src->time.subtasks);
    if (!rc)
      rc = sl__buf_u64(b, (uint64_t)src->time.max_ts);
    if (!rc)
      rc = sl_buf_append(b, &src->time.flags, 1);
  }
  if (!rc)
    sl__snap_end_section(b, mark);
  return rc;
}

int sl__snap_list_next(const sl__snap_entry *e, size_t *off, const void **elem,
                       size_t *len) {
  const unsigned char *v = e->val;
  size_t rest = e->val_len - *off, l;
  if (*off >= e->val_len)
    return 0;
  if (rest < SL__LIST_HDR ||
      (l = sl__list_elem_len(v + *off)) > rest - SL__LIST_HDR)
    return SL_ERR_CORRUPT;
  *elem = v + *off + SL__LIST_HDR;
  *len = l;
  /* The last element's padding may be cut short. */
  *off += sl__list_frame(l) < rest ? sl__list_frame(l) : rest;
  return 1;
}

/* ---- Reading into a backend and timers ---------------------------------- */

void sl__snap_ids_free(sl__snap_ids *m) {
  free(m->ids);
  m->ids = NULL;
  m->n = 0;
}

static int ids_alloc(sl__snap_ids *m, uint32_t n) {
  sl__snap_ids_free(m);
  m->ids = calloc(n ? n : 1, sizeof(*m->ids));
  if (!m->ids)
    return SL_ERR_NOMEM;
  m->n = n;
  return 0;
}

static bool dropped(const sl__snap_ids *m, const char *name, size_t len) {
  return m->drop && m->drop(name, len, m->drop_opaque);
}

static int insert(const sl__snap_entry *e, void *opaque) {
  sl__snap_ids *m = opaque;
  if (e->state >= m->n)
    return SL_ERR_CORRUPT;
  if (m->ids[e->state] == SL__SNAP_NO_STATE)
    return 0;
  uint32_t kg = m->kg;
  if (m->repartition) {
    kg = sl__key_group(sl__hash64(e->key, e->key_len), m->to->max_par);
    if (kg < m->lo || kg >= m->hi)
      return 0;
  }
  return m->to->ops->insert(m->to, m->ids[e->state], kg, e->key, e->key_len,
                            e->ns, e->ns_len, e->mk, e->mk_len, e->val,
                            e->val_len);
}

int sl__snap_load_states(sl__rd p, sl__snap_ids *m) {
  uint32_t n;
  if (sl__snap_states_count(&p, &n))
    return SL_ERR_CORRUPT;
  int rc = ids_alloc(m, n);
  for (uint32_t i = 0; !rc && i < n; i++) {
    sl__snap_state st;
    if (sl__snap_state_next(&p, &st) != 1 || st.id >= n || st.type > SL__BT_MAP)
      return SL_ERR_CORRUPT;
    if (dropped(m, st.name, st.name_len)) {
      m->ids[st.id] = SL__SNAP_NO_STATE;
      continue;
    }
    char *s = strndup(st.name, st.name_len);
    if (!s)
      return SL_ERR_NOMEM;
    rc = m->to->ops->register_state(m->to, s, (sl__btype)st.type,
                                    &m->ids[st.id]);
    free(s);
  }
  return rc;
}

static int add_timer(struct sl__timers *t, sl__snap_timer *tm, uint32_t lo,
                     uint32_t hi, uint32_t rekey) {
  uint64_t h = sl__hash64(tm->key, tm->key_len);
  if (rekey)
    tm->kg = sl__key_group(h, rekey);
  if (!t || tm->kg < lo || tm->kg >= hi)
    return 0; /* another worker's, or of a dropped operator */
  return sl__timers_add(t, tm->domain, tm->ts, h, tm->kg, tm->key, tm->key_len,
                        tm->ns, tm->ns_len);
}

/* ---- Reading a worker file as a stream ---------------------------------- */

#define STREAM_BUF (1 << 16)

struct sl__snap_stream {
  int fd; /* -1: reading mem */
  const unsigned char *mem;
  unsigned flags;              /* SL__STREAM_* */
  uint64_t size;               /* of the file */
  uint64_t pos;                /* offset of the next byte to read */
  uint64_t body_end;           /* offset of the trailer */
  uint64_t sec_start, sec_end; /* the current section's payload */
  sl_buf_t item;               /* the current item */
  unsigned char *io;           /* read buffer (files): the file's bytes */
  uint64_t io_at;              /* [io_at, io_at + io_len) */
  size_t io_len;
  unsigned char tr[SL__SNAP_TRAILER_LEN];
  uint32_t crc;    /* SL__STREAM_CRC_LAST: the CRC32C of [0, crc_at) */
  uint64_t crc_at; /* of the file */
  uint64_t read;   /* bytes read from the file */
};

/* n bytes of the file at off into dst. With SL__STREAM_CRC_LAST, bytes
 * that continue what the running CRC covers are added to it. */
static int read_at(sl__snap_stream *s, unsigned char *dst, size_t n,
                   uint64_t off) {
  for (size_t done = 0; done < n;) {
    ssize_t r = pread(s->fd, dst + done, n - done, (off_t)(off + done));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return SL_ERR_IO;
    if (r == 0) {
      errno = EIO; /* shorter than when it was opened */
      return SL_ERR_IO;
    }
    done += (size_t)r;
  }
  s->read += n;
  if ((s->flags & SL__STREAM_CRC_LAST) && off == s->crc_at &&
      off + n <= s->body_end) {
    s->crc = sl__crc32c(s->crc, dst, n);
    s->crc_at += n;
  }
  return 0;
}

/* Refills the read buffer at pos with at least want bytes (at most
 * STREAM_BUF). Reading the file through (SL__STREAM_CRC_LAST), it reads
 * ahead to the trailer; otherwise no further than the current section
 * (or, at a section header, than want), so that a section skipped is
 * never read. */
static int fill(sl__snap_stream *s, uint64_t want) {
  uint64_t lim = (s->flags & SL__STREAM_CRC_LAST) ? s->body_end
                 : s->pos < s->sec_end            ? s->sec_end
                                                  : s->pos + want;
  uint64_t n = lim - s->pos < STREAM_BUF ? lim - s->pos : STREAM_BUF;
  if (n < want)
    n = want;
  s->io_len = 0;
  int rc = read_at(s, s->io, (size_t)n, s->pos);
  if (!rc) {
    s->io_at = s->pos;
    s->io_len = (size_t)n;
  }
  return rc;
}

/* The next n bytes into dst (NULL: skipped, which reads nothing unless
 * the stream reads the file through). */
static int get(sl__snap_stream *s, void *dst, uint64_t n) {
  unsigned char *d = dst;
  if (s->fd < 0) {
    if (d && n)
      memcpy(d, s->mem + s->pos, (size_t)n);
    s->pos += n;
    return 0;
  }
  while (n > 0) {
    if (s->pos >= s->io_at && s->pos < s->io_at + s->io_len) {
      size_t off = (size_t)(s->pos - s->io_at), k = s->io_len - off;
      if (k > n)
        k = (size_t)n;
      if (d) {
        memcpy(d, s->io + off, k);
        d += k;
      }
      s->pos += k;
      n -= k;
      continue;
    }
    int rc;
    if (!d && !(s->flags & SL__STREAM_CRC_LAST)) {
      s->pos += n; /* a seek */
      return 0;
    }
    if (d && n >= STREAM_BUF) { /* a large item: straight into it */
      if (!(rc = read_at(s, d, (size_t)n, s->pos)))
        s->pos += n;
      return rc;
    }
    if ((rc = fill(s, n < STREAM_BUF ? n : STREAM_BUF)))
      return rc;
  }
  return 0;
}

/* The CRC32C of the file before its trailer, read in one pass. */
static int stream_crc(sl__snap_stream *s, uint32_t *crc) {
  if (s->fd < 0) {
    *crc = sl__crc32c(0, s->mem, (size_t)s->body_end);
    return 0;
  }
  uint32_t c = 0;
  for (uint64_t at = 0; at < s->body_end;) {
    size_t k =
        s->body_end - at < STREAM_BUF ? (size_t)(s->body_end - at) : STREAM_BUF;
    s->io_len = 0;
    int rc = read_at(s, s->io, k, at);
    if (rc)
      return rc;
    s->io_at = at;
    s->io_len = k;
    c = sl__crc32c(c, s->io, k);
    at += k;
  }
  *crc = c;
  return 0;
}

/* n bytes at off: from memory, or read. */
static int get_at(sl__snap_stream *s, void *dst, size_t n, uint64_t off) {
  if (s->fd < 0) {
    memcpy(dst, s->mem + off, n);
    return 0;
  }
  return read_at(s, dst, n, off);
}

int sl__snap_stream_open(sl__snap_stream **out, const char *path,
                         const void *data, size_t len, unsigned flags,
                         sl__snap_head *h, char *err, size_t errlen) {
  *out = NULL;
  sl__snap_stream *s = calloc(1, sizeof(*s));
  if (!s || (path && !(s->io = malloc(STREAM_BUF)))) {
    free(s);
    sl__errf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  s->fd = -1;
  s->mem = data;
  s->size = len;
  s->flags = flags;
  int rc = 0;
  struct stat st;
  if (path) {
    if ((s->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(s->fd, &st))
      rc = SL_ERR_IO;
    else
      s->size = (uint64_t)st.st_size;
  }
  unsigned char hd[SL__SNAP_HEADER];
  if (!rc && s->size < SL__SNAP_HEADER + SL__SNAP_TRAILER_LEN) {
    sl__errf(err, errlen, "file too short (%" PRIu64 " bytes): truncated",
             s->size);
    rc = SL_ERR_CORRUPT;
  }
  s->body_end = s->size - SL__SNAP_TRAILER_LEN;
  if (!rc && !(rc = get_at(s, hd, sizeof(hd), 0)) &&
      memcmp(hd, SL__SNAP_MAGIC, 8) != 0) {
    sl__errf(err, errlen, "not a sluice snapshot file (bad magic)");
    rc = SL_ERR_CORRUPT;
  }
  if (!rc && !(rc = get_at(s, s->tr, sizeof(s->tr), s->body_end)) &&
      (memcmp(s->tr + 12, SL__SNAP_TRAILER, 8) != 0 ||
       sl__le64(s->tr) != s->body_end)) {
    sl__errf(err, errlen, "incomplete file (no valid trailer): truncated");
    rc = SL_ERR_CORRUPT;
  }
  uint32_t got;
  if (!rc && (flags & SL__STREAM_CRC) && !(rc = stream_crc(s, &got)) &&
      got != sl__le32(s->tr + 8)) {
    sl__errf(err, errlen, "checksum mismatch (crc32c %08x, expected %08x)", got,
             sl__le32(s->tr + 8));
    rc = SL_ERR_CORRUPT;
  }
  if (!rc) {
    h->version = sl__le32(hd + 8);
    h->worker = sl__le32(hd + 12);
    h->id = sl__le64(hd + 16);
    h->kg_lo = sl__le32(hd + 24);
    h->kg_hi = sl__le32(hd + 28);
    h->max_par = sl__le32(hd + 32);
    if (h->version != SL__SNAP_VERSION) {
      sl__errf(err, errlen, "unsupported snapshot version %u", h->version);
      rc = SL_ERR_CORRUPT;
    }
  }
  s->pos = s->sec_start = s->sec_end = SL__SNAP_HEADER;
  if (rc == SL_ERR_IO)
    sl__errf(err, errlen, "%s", strerror(errno));
  if (rc) {
    int e = errno;
    sl__snap_stream_close(s);
    errno = e;
    return rc;
  }
  *out = s;
  return SL_OK;
}

int sl__snap_stream_finish(sl__snap_stream *s, uint32_t *file_crc, char *err,
                           size_t errlen) {
  if (s->fd < 0) {
    s->crc = sl__crc32c(0, s->mem, (size_t)s->body_end);
  } else {
    if (!(s->flags & SL__STREAM_CRC_LAST))
      return SL_ERR_RANGE;
    while (s->crc_at < s->body_end) {
      uint64_t k = s->body_end - s->crc_at;
      s->io_len = 0;
      int rc =
          read_at(s, s->io, k < STREAM_BUF ? (size_t)k : STREAM_BUF, s->crc_at);
      if (rc) {
        sl__errf(err, errlen, "%s", strerror(errno));
        return rc;
      }
    }
  }
  *file_crc = sl__crc32c(s->crc, s->tr, sizeof(s->tr));
  if (s->crc != sl__le32(s->tr + 8)) {
    sl__errf(err, errlen, "checksum mismatch (crc32c %08x, expected %08x)",
             s->crc, sl__le32(s->tr + 8));
    return SL_ERR_CORRUPT;
  }
  return SL_OK;
}

void sl__snap_stream_close(sl__snap_stream *s) {
  if (!s)
    return;
  if (s->fd >= 0)
    close(s->fd);
  free(s->io);
  sl__buf_free(&s->item);
  free(s);
}

uint64_t sl__snap_stream_read_bytes(const sl__snap_stream *s) {
  return s->read;
}

uint64_t sl__snap_stream_offset(const sl__snap_stream *s) {
  return s->sec_start;
}

int sl__snap_stream_section(sl__snap_stream *s, uint64_t off, uint64_t len) {
  if (off < SL__SNAP_HEADER + 16 || off > s->body_end ||
      len > s->body_end - off)
    return SL_ERR_CORRUPT;
  s->pos = s->sec_start = off;
  s->sec_end = off + len;
  return 0;
}

int sl__snap_stream_next(sl__snap_stream *s, uint32_t *type, uint32_t *kg,
                         uint64_t *len) {
  int rc = get(s, NULL, s->sec_end - s->pos); /* the rest of the last one */
  if (rc)
    return rc;
  if (s->pos == s->body_end)
    return 0;
  unsigned char hd[16];
  if (s->body_end - s->pos < sizeof(hd))
    return SL_ERR_CORRUPT;
  if ((rc = get(s, hd, sizeof(hd))))
    return rc;
  *type = sl__le32(hd);
  *kg = sl__le32(hd + 4);
  *len = sl__le64(hd + 8);
  if (*len > s->body_end - s->pos)
    return SL_ERR_CORRUPT;
  s->sec_start = s->pos;
  s->sec_end = s->pos + *len;
  return 1;
}

int sl__snap_stream_rewind(sl__snap_stream *s) {
  s->pos = s->sec_start; /* the read buffer may still hold it */
  return 0;
}

size_t sl__snap_stream_peak(const sl__snap_stream *s) {
  return s->item.cap; /* the item buffer only grows */
}

/* Appends the next n bytes of the section to the item. */
static int need(sl__snap_stream *s, uint64_t n) {
  if (n > s->sec_end - s->pos)
    return SL_ERR_CORRUPT;
  if (n == 0)
    return 0;
  int rc = sl__buf_reserve(&s->item, (size_t)n);
  if (!rc)
    rc = get(s, s->item.data + s->item.len, n);
  if (!rc)
    s->item.len += (size_t)n;
  return rc;
}

/* Appends a byte string (u32 length, bytes). */
static int need_bytes(sl__snap_stream *s) {
  int rc = need(s, 4);
  return rc ? rc : need(s, sl__le32(s->item.data + s->item.len - 4));
}

static sl__rd item_rd(const sl__snap_stream *s) {
  if (!s->item.data)
    return (sl__rd){NULL, NULL, false}; /* nothing read yet */
  return (sl__rd){s->item.data, s->item.data + s->item.len, false};
}

int sl__snap_stream_payload(sl__snap_stream *s, sl__rd *p) {
  s->item.len = 0;
  int rc = need(s, s->sec_end - s->pos);
  *p = item_rd(s);
  return rc;
}

int sl__snap_stream_bytes(sl__snap_stream *s, const void **p, size_t *n) {
  s->item.len = 0;
  if (s->pos == s->sec_end)
    return 0;
  int rc = need_bytes(s);
  if (rc)
    return rc;
  sl__rd r = item_rd(s);
  return sl__rd_bytes(&r, p, n) ? 1 : SL_ERR_CORRUPT;
}

/* Buffers the next keyed-state record of the section: key group, key,
 * namespace, the map-key flag (2: a removal, only in change records),
 * the map key and the value. 1, 0 at the section's end, or an error. */
static int need_record(sl__snap_stream *s, bool delta) {
  s->item.len = 0;
  if (s->pos == s->sec_end)
    return 0;
  int rc = need(s, 4);
  for (int i = 0; !rc && i < 2; i++) /* key, namespace */
    rc = need_bytes(s);
  if (!rc)
    rc = need(s, 1);
  uint8_t has = rc ? 0 : s->item.data[s->item.len - 1];
  if (!rc && has > (delta ? 2 : 1))
    return SL_ERR_CORRUPT;
  if (!rc && has == 1)
    rc = need_bytes(s); /* map key */
  if (!rc && has != 2)
    rc = need_bytes(s); /* value; a removal has none */
  return rc ? rc : 1;
}

int sl__snap_stream_entry(sl__snap_stream *s, sl__snap_entry *e) {
  int rc = need_record(s, false);
  if (rc != 1)
    return rc;
  sl__rd r = item_rd(s);
  return sl__snap_entry_next(&r, e) == 1 && sl__rd_done(&r) ? 1
                                                            : SL_ERR_CORRUPT;
}

int sl__snap_stream_timer(sl__snap_stream *s, sl__snap_timer *t) {
  s->item.len = 0;
  if (s->pos == s->sec_end)
    return 0;
  int rc = need(s, 4 + 1 + 8);       /* key group, domain, time */
  for (int i = 0; !rc && i < 2; i++) /* key, namespace */
    rc = need_bytes(s);
  if (rc)
    return rc;
  sl__rd r = item_rd(s);
  return sl__snap_timer_next(&r, t) == 1 && sl__rd_done(&r) ? 1
                                                            : SL_ERR_CORRUPT;
}

int sl__snap_stream_delta(sl__snap_stream *s, sl__snap_entry *e, bool *clear) {
  int rc = need_record(s, true);
  if (rc != 1)
    return rc;
  sl__rd r = item_rd(s);
  return sl__snap_delta_next(&r, e, clear) == 1 && sl__rd_done(&r)
             ? 1
             : SL_ERR_CORRUPT;
}

/* ---- Loading from memory or from a stream ------------------------------- */

/* The entries or timers of one section: a payload in memory, or the
 * current section of a stream. */
typedef struct src {
  sl__snap_stream *st; /* NULL: p */
  sl__rd p, start;
} src;

static int src_entry(src *s, sl__snap_entry *e) {
  return s->st ? sl__snap_stream_entry(s->st, e)
               : sl__snap_entry_next(&s->p, e);
}

static int src_timer(src *s, sl__snap_timer *t) {
  return s->st ? sl__snap_stream_timer(s->st, t)
               : sl__snap_timer_next(&s->p, t);
}

static int src_rewind(src *s) {
  if (s->st)
    return sl__snap_stream_rewind(s->st);
  s->p = s->start;
  return 0;
}

static int load_entries(src *s, sl__snap_ids *m, uint32_t kg) {
  sl__backend *be = m->to;
  sl__snap_entry e;
  int r;
  if (!m->ids)
    return SL_ERR_CORRUPT; /* entries before the states section */
  m->kg = kg;
  /* Re-partitioned entries land in other key groups than counted. */
  if (be->ops->reserve && m->n && !m->repartition) {
    /* Count per state first (see the reserve hint in backend.h), then
     * read the section again. */
    size_t *cnt = calloc(m->n, sizeof(*cnt));
    if (!cnt)
      return SL_ERR_NOMEM;
    while ((r = src_entry(s, &e)) == 1)
      if (e.state < m->n)
        cnt[e.state]++;
    for (uint32_t i = 0; r == 0 && i < m->n; i++)
      if (cnt[i] && m->ids[i] != SL__SNAP_NO_STATE)
        be->ops->reserve(be, m->ids[i], kg, cnt[i]);
    free(cnt);
    if (r < 0 || (r = src_rewind(s)))
      return r;
  }
  while ((r = src_entry(s, &e)) == 1) {
    int rc = insert(&e, m);
    if (rc)
      return rc;
  }
  return r;
}

static int load_timers(src *s, struct sl__timers *t, uint32_t lo, uint32_t hi,
                       uint32_t rekey) {
  sl__snap_timer tm;
  int r;
  while ((r = src_timer(s, &tm)) == 1) {
    int rc = add_timer(t, &tm, lo, hi, rekey);
    if (rc)
      return rc;
  }
  return r;
}

int sl__snap_load_entries(sl__rd p, sl__snap_ids *m, uint32_t kg) {
  src s = {.p = p, .start = p};
  return load_entries(&s, m, kg);
}

int sl__snap_load_timers(sl__rd p, struct sl__timers *t, uint32_t lo,
                         uint32_t hi, uint32_t rekey) {
  src s = {.p = p, .start = p};
  return load_timers(&s, t, lo, hi, rekey);
}

int sl__snap_stream_load_entries(sl__snap_stream *st, sl__snap_ids *m,
                                 uint32_t kg) {
  src s = {.st = st};
  return load_entries(&s, m, kg);
}

int sl__snap_stream_load_timers(sl__snap_stream *st, struct sl__timers *t,
                                uint32_t lo, uint32_t hi, uint32_t rekey) {
  src s = {.st = st};
  return load_timers(&s, t, lo, hi, rekey);
}

/* ---- Native state directories ------------------------------------------- */

struct sl__native {
  sl__backend *be;
  sl__snap_entry_fn fn;
  void *opaque;
};

sl__native *sl__native_open(const char *dir, const char *backend,
                            const sl_conf_t *conf, uint32_t kg_lo,
                            uint32_t kg_hi, uint32_t max_par, int worker,
                            bool *missing, char *err, size_t errlen) {
  const sl__backend_ops *ops = sl__backend_find(backend);
  *missing = !ops || !ops->open_snapshot;
  if (*missing)
    return NULL;
  sl__native *n = calloc(1, sizeof(*n));
  if (!n) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  sl__backend_conf bc = {.conf = conf,
                         .kg_lo = kg_lo,
                         .kg_hi = kg_hi,
                         .max_par = max_par,
                         .worker = worker};
  if (!(n->be = ops->open_snapshot(dir, &bc, err, errlen))) {
    free(n);
    return NULL;
  }
  return n;
}

uint32_t sl__native_state_count(const sl__native *n) {
  return n->be->ops->state_count(n->be);
}

int sl__native_state_info(const sl__native *n, uint32_t id, const char **name,
                          uint32_t *type) {
  sl__btype t;
  int rc = n->be->ops->state_info(n->be, id, name, &t);
  if (!rc)
    *type = (uint32_t)t;
  return rc;
}

static int native_entry(uint32_t state, const void *key, size_t key_len,
                        const void *ns, size_t ns_len, const void *mk,
                        size_t mk_len, const void *val, size_t len,
                        void *opaque) {
  sl__native *n = opaque;
  sl__snap_entry e = {state, key, ns, mk, val, key_len, ns_len, mk_len, len};
  return n->fn(&e, n->opaque);
}

int sl__native_scan(sl__native *n, uint32_t kg, sl__snap_entry_fn fn,
                    void *opaque) {
  n->fn = fn;
  n->opaque = opaque;
  return n->be->ops->kg_scan(n->be, kg, native_entry, n);
}

void sl__native_close(sl__native *n) {
  if (!n)
    return;
  n->be->ops->close(n->be);
  free(n);
}

int sl__snap_load_native(sl__native *n, sl__snap_ids *m, uint32_t lo,
                         uint32_t hi) {
  uint32_t count = sl__native_state_count(n);
  int rc = ids_alloc(m, count);
  for (uint32_t i = 0; !rc && i < count; i++) {
    const char *name;
    sl__btype type;
    rc = n->be->ops->state_info(n->be, i, &name, &type);
    if (!rc && dropped(m, name, strlen(name)))
      m->ids[i] = SL__SNAP_NO_STATE;
    else if (!rc)
      rc = m->to->ops->register_state(m->to, name, type, &m->ids[i]);
  }
  if (lo < n->be->kg_lo || m->repartition)
    lo = n->be->kg_lo;
  if (hi > n->be->kg_hi || m->repartition)
    hi = n->be->kg_hi;
  /* The same backend copies a key group as it stores it; another one
   * gets the entries one by one. */
  sl__backend *to = m->to;
  for (uint32_t g = lo; !rc && g < hi; g++) {
    m->kg = g;
    rc = !m->repartition && to->ops->kg_load
             ? to->ops->kg_load(to, n->be, g, m->ids, count)
             : 1;
    if (rc == 1)
      rc = sl__native_scan(n, g, insert, m);
  }
  return rc;
}

uint32_t sl__snap_key_group(int format, const void *key, size_t len,
                            uint32_t max_par) {
  return sl__key_group(sl__hash64_of(format, key, len), max_par);
}
