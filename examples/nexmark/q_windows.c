/* SPDX-License-Identifier: Apache-2.0 */
/* The windowed queries on bids: q5 (hot items, sliding 10 s / 2 s), q7
 * (highest bid per 10 s tumbling window), q11 (user sessions, gap 10 s)
 * and q12 (processing-time tumbling count per bidder). */
#include <stdlib.h>
#include <string.h>

#include "q_common.h"

/* A window's count as "key, count, [start, end)": the combined form of
 * sl_window (built-in COUNT + this function) sees the window bounds. */
static int emit_count(sl_ctx_t *ctx, const sl_window_t *win,
                      sl_window_elems_t *elems, void *opaque) {
  (void)opaque;
  sl_record_t agg;
  if (sl_window_elems_next(elems, &agg) != 1)
    return 0;
  nx_count_out o = {.start = win->start, .end = win->end};
  memcpy(&o.key, agg.key, sizeof(o.key));
  memcpy(&o.count, agg.value, sizeof(o.count));
  sl_record_t r = {agg.key, agg.key_len, &o, sizeof(o), agg.ts};
  return sl_emit(ctx, &r);
}

static sl_stream_t *bids_by(sl_stream_t *events, const char *uid,
                            sl_key_fn key) {
  return sl_key_by(sl_filter(events, uid, nx_only_bids, NULL), key, NULL);
}

/* ---- q5: hot items --------------------------------------------------------
 */

/* Bids per auction in sliding windows of 10 s every 2 s; per window, the
 * auctions with the most bids (all of them on a tie). Stage 2 is keyed by
 * the window's end: each count arrives with the window's max_ts, and the
 * timer at max_ts fires once every count of the window has arrived. */
static int q5_key_window(const sl_record_t *rec, const void **key, size_t *len,
                         void *opaque) {
  (void)opaque;
  *key = &((const nx_count_out *)rec->value)->end;
  *len = sizeof(int64_t);
  return 0;
}

typedef struct q5_state {
  sl_state_t *max, *top;
} q5_state;

static int q5_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  q5_state *s = calloc(1, sizeof(*s));
  sl_ctx_set_local(ctx, s);
  if (!s)
    return SL_ERR_NOMEM;
  s->max = nx_state(ctx, "max", SL_STATE_VALUE);
  s->top = nx_state(ctx, "top", SL_STATE_LIST);
  return s->max && s->top ? 0 : SL_ERR_STATE;
}

static void q5_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int q5_count(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  q5_state *s = sl_ctx_local(ctx);
  const nx_count_out *c = rec->value;
  bool created;
  int64_t *max = sl_value_ptr(ctx, s->max, sizeof(*max), &created);
  if (!max)
    return SL_ERR_NOMEM;
  if (created)
    sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
  if (c->count < *max)
    return 0;
  if (c->count > *max) {
    *max = c->count;
    int rc = sl_state_clear(ctx, s->top);
    if (rc)
      return rc;
  }
  return sl_list_add(ctx, s->top, c, sizeof(*c));
}

static int q5_fire(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d, (void)ts, (void)opaque;
  q5_state *s = sl_ctx_local(ctx);
  sl_list_iter_t it;
  const void *v;
  size_t len;
  int rc = sl_list_get(ctx, s->top, &it);
  while (rc >= 0 && sl_list_next(&it, &v, &len) == 1) {
    sl_record_t r = {NULL, 0, v, len, 0}; /* sl_emit copies */
    rc = sl_emit(ctx, &r);
  }
  if (rc < 0)
    return rc;
  sl_state_clear(ctx, s->max);
  return sl_state_clear(ctx, s->top);
}

sl_stream_t *nx_q5(sl_stream_t *events, const nx_query_conf *qc) {
  sl_stream_t *bids = bids_by(events, "q5.bids", nx_key_bid_auction);
  sl_window_spec_t w = sl_window_sliding(qc->window_ms, qc->slide_ms);
  sl_window_fn_t count = {.builtin = SL_AGG_COUNT, .process = emit_count};
  sl_stream_t *counts = sl_window(bids, "q5.count", &w, &count, NULL);
  sl_process_ops_t top = {.open = q5_open,
                          .on_element = q5_count,
                          .on_timer = q5_fire,
                          .close = q5_close};
  return sl_process(sl_key_by(counts, q5_key_window, NULL), "q5.top", &top,
                    NULL);
}

/* ---- q7: highest bid ------------------------------------------------------
 */

/* The bids with the highest price of each 10 s tumbling window, keyed by
 * the window's start; a timer at the window's max_ts emits them. */
static _Thread_local int64_t q7_start;
static int q7_key_window(const sl_record_t *rec, const void **key, size_t *len,
                         void *opaque) {
  const nx_query_conf *qc = opaque;
  q7_start = rec->ts - rec->ts % qc->window_ms;
  *key = &q7_start;
  *len = sizeof(q7_start);
  return 0;
}

static int q7_bid(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  const nx_query_conf *qc = opaque;
  q5_state *s = sl_ctx_local(ctx); /* same shape: max price, top bids */
  const nx_bid *b = &nx_rec_event(rec)->u.bid;
  bool created;
  int64_t *max = sl_value_ptr(ctx, s->max, sizeof(*max), &created);
  if (!max)
    return SL_ERR_NOMEM;
  if (created) {
    int64_t start = rec->ts - rec->ts % qc->window_ms;
    sl_timer_set(ctx, SL_EVENT_TIME, start + qc->window_ms - 1);
  }
  if (b->price < *max)
    return 0;
  if (b->price > *max) {
    *max = b->price;
    int rc = sl_state_clear(ctx, s->top);
    if (rc)
      return rc;
  }
  return sl_list_add(ctx, s->top, rec->value, rec->value_len);
}

sl_stream_t *nx_q7(sl_stream_t *events, const nx_query_conf *qc) {
  sl_stream_t *bids = sl_filter(events, "q7.bids", nx_only_bids, NULL);
  sl_process_ops_t ops = {.open = q5_open,
                          .on_element = q7_bid,
                          .on_timer = q5_fire,
                          .close = q5_close};
  return sl_process(sl_key_by(bids, q7_key_window, (void *)qc), "q7.max", &ops,
                    (void *)qc);
}

/* ---- q11: user sessions ---------------------------------------------------
 */

/* SELECT bidder, count(*), SESSION_START, SESSION_END FROM bid
 * GROUP BY bidder, SESSION(dateTime, INTERVAL '10' SECOND) */
sl_stream_t *nx_q11(sl_stream_t *events, const nx_query_conf *qc) {
  sl_stream_t *bids = bids_by(events, "q11.bids", nx_key_bid_bidder);
  sl_window_spec_t w = sl_window_session(qc->session_ms);
  sl_window_fn_t count = {.builtin = SL_AGG_COUNT, .process = emit_count};
  return sl_window(bids, "q11.sessions", &w, &count, NULL);
}

/* ---- q12: processing-time windows ---------------------------------------- */

/* SELECT bidder, count(*), window_start, window_end
 * FROM TUMBLE(bid, PROCTIME(), INTERVAL '10' SECOND) GROUP BY bidder, ... */
sl_stream_t *nx_q12(sl_stream_t *events, const nx_query_conf *qc) {
  sl_stream_t *bids = bids_by(events, "q12.bids", nx_key_bid_bidder);
  sl_window_spec_t w = sl_window_tumbling(qc->proc_window_ms);
  w.time = SL_PROC_TIME;
  sl_window_fn_t count = {.builtin = SL_AGG_COUNT, .process = emit_count};
  return sl_window(bids, "q12.count", &w, &count, NULL);
}
