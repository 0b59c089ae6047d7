/* SPDX-License-Identifier: Apache-2.0 */
/* The layout record of a checkpoint (layout.h): encoding, decoding and
 * the comparison restore runs. */
#include "checkpoint/layout.h"

#include <stdio.h>
#include <string.h>

#include "sluice/common.h"

int sl__layout_begin(sl_buf_t *b, size_t *mark, size_t *count_at) {
  int rc = sl__snap_begin_section(b, SL__SEC_LAYOUT, SL__SNAP_NO_KG, mark);
  if (!rc)
    rc = sl__buf_u32(b, SL__LAYOUT_VERSION);
  *count_at = b->len;
  return rc ? rc : sl__buf_u32(b, 0);
}

int sl__layout_add(sl_buf_t *b, const char *state, const char *layout) {
  int rc = sl__buf_bytes(b, state, strlen(state));
  return rc ? rc : sl__buf_bytes(b, layout, strlen(layout));
}

void sl__layout_end(sl_buf_t *b, size_t mark, size_t count_at, uint32_t n) {
  for (int i = 0; i < 4; i++)
    b->data[count_at + i] = (unsigned char)(n >> (8 * i));
  sl__snap_end_section(b, mark);
}

int sl__layout_count(sl__rd *p, uint32_t *n) {
  uint32_t v;
  /* Each record takes at least 8 bytes (two lengths). */
  if (!sl__rd_u32(p, &v) || v != SL__LAYOUT_VERSION || !sl__rd_u32(p, n) ||
      *n > (uint32_t)((p->end - p->p) / 8))
    return SL_ERR_CORRUPT;
  return 0;
}

int sl__layout_next(sl__rd *p, sl__layout_rec *r) {
  if (sl__rd_done(p))
    return 0;
  const void *s, *l;
  if (!sl__rd_bytes(p, &s, &r->state_len) ||
      !sl__rd_bytes(p, &l, &r->layout_len))
    return SL_ERR_CORRUPT;
  r->state = s;
  r->layout = l;
  return 1;
}

/* The value of key in a layout text ("" when absent), into out. */
static void value_of(const char *text, size_t len, const char *key, size_t kl,
                     char *out, size_t outlen) {
  const char *p = text, *end = text + len;
  out[0] = 0;
  while (p < end) {
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    const char *e = sp ? sp : end;
    const char *eq = memchr(p, '=', (size_t)(e - p));
    if (eq && (size_t)(eq - p) == kl && memcmp(p, key, kl) == 0) {
      snprintf(out, outlen, "%.*s", (int)(e - eq - 1), eq + 1);
      return;
    }
    p = e + 1;
  }
}

/* Whether key is one of the space-separated names in adapts. */
static bool adapted(const char *key, size_t kl, const char *adapts) {
  for (const char *p = adapts; p && *p;) {
    size_t n = strcspn(p, " ");
    if (n == kl && memcmp(p, key, kl) == 0)
      return true;
    p += n + (p[n] == ' ');
  }
  return false;
}

/* Appends "key changed from a to b" when key's values differ; with
 * only_new, only for a key old does not have (the first pass over old's
 * keys reported the others). */
static void one(const char *key, size_t kl, const char *old, size_t old_len,
                const char *now, bool only_new, const char *adapts, char *why,
                size_t whylen) {
  if (adapted(key, kl, adapts))
    return;
  char a[128], b[128];
  value_of(old, old_len, key, kl, a, sizeof(a));
  value_of(now, strlen(now), key, kl, b, sizeof(b));
  if (strcmp(a, b) == 0 || (only_new && a[0]))
    return;
  size_t l = strlen(why);
  snprintf(why + l, whylen - l, "%s%.*s changed from %s to %s", l ? ", " : "",
           (int)kl, key, a[0] ? a : "(none)", b[0] ? b : "(none)");
}

static void each_key(const char *text, size_t len, const char *old,
                     size_t old_len, const char *now, bool only_new,
                     const char *adapts, char *why, size_t whylen) {
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    const char *e = sp ? sp : end;
    const char *eq = memchr(p, '=', (size_t)(e - p));
    if (eq && eq > p)
      one(p, (size_t)(eq - p), old, old_len, now, only_new, adapts, why,
          whylen);
    p = e + 1;
  }
}

bool sl__layout_diff(const char *old, size_t old_len, const char *now,
                     const char *adapts, char *why, size_t whylen) {
  why[0] = 0;
  if (strlen(now) == old_len && memcmp(old, now, old_len) == 0)
    return false;
  each_key(old, old_len, old, old_len, now, false, adapts, why, whylen);
  each_key(now, strlen(now), old, old_len, now, true, adapts, why, whylen);
  if (!why[0] && adapts)
    return false; /* only adapted keys changed */
  if (!why[0])
    snprintf(why, whylen, "layout changed from \"%.*s\" to \"%s\"",
             (int)old_len, old, now);
  return true;
}
