/* SPDX-License-Identifier: Apache-2.0 */
/* Winning bids and the queries built on them: q9 (the winning bid of each
 * auction), q4 (average closing price per category) and q6 (average
 * selling price of a seller's last 10 closed auctions).
 *
 * A bid is valid for its auction when A.dateTime <= B.dateTime <=
 * A.expires; the winner has the highest price, then the earliest time,
 * then the lowest bidder id (Flink's q9 orders by price DESC, dateTime
 * ASC). An auction closes when the watermark reaches its expiry: every
 * valid bid has arrived by then, since the watermark trails the largest
 * disorder of the input. */
#include <stdlib.h>
#include <string.h>

#include "q_common.h"

typedef struct wb_auction {
  nx_auction a;
  nx_bid best;
  int64_t has_best, closed;
} wb_auction;

typedef struct wb_state {
  sl_state_t *auction, *early;
} wb_state;

static int wb_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  wb_state *s = calloc(1, sizeof(*s));
  sl_ctx_set_local(ctx, s);
  if (!s)
    return SL_ERR_NOMEM;
  s->auction = nx_state(ctx, "auction", SL_STATE_VALUE);
  s->early = nx_state(ctx, "early", SL_STATE_LIST);
  return s->auction && s->early ? 0 : SL_ERR_STATE;
}

static void wb_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static void wb_offer(wb_auction *w, const nx_bid *b) {
  if (b->date_time < w->a.date_time || b->date_time > w->a.expires)
    return;
  const nx_bid *c = &w->best;
  if (!w->has_best || b->price > c->price ||
      (b->price == c->price &&
       (b->date_time < c->date_time ||
        (b->date_time == c->date_time && b->bidder < c->bidder)))) {
    w->best = *b;
    w->has_best = 1;
  }
}

/* The auction: bids that came first are judged now, then it waits for its
 * expiry. */
static int wb_on_auction(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  wb_state *s = sl_ctx_local(ctx);
  wb_auction w = {.a = nx_rec_event(rec)->u.auction};
  sl_list_iter_t it;
  const void *v;
  size_t len;
  int rc = sl_list_get(ctx, s->early, &it);
  if (rc < 0)
    return rc;
  while (rc == 1 && sl_list_next(&it, &v, &len) == 1) {
    nx_bid b;
    memcpy(&b, v, sizeof(b));
    wb_offer(&w, &b);
  }
  if (rc == 1 && (rc = sl_state_clear(ctx, s->early)))
    return rc;
  if ((rc = sl_value_put(ctx, s->auction, &w, sizeof(w))))
    return rc;
  return sl_timer_set(ctx, SL_EVENT_TIME, w.a.expires);
}

/* A bid for an auction not seen yet waits until the watermark passes its
 * time: an auction arriving later is newer than the bid, which cannot
 * be valid for it. */
static int wb_on_bid(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  wb_state *s = sl_ctx_local(ctx);
  const nx_bid *b = &nx_rec_event(rec)->u.bid;
  const void *v;
  size_t len;
  int rc = sl_value_get(ctx, s->auction, &v, &len);
  if (rc < 0)
    return rc;
  if (rc == 0) {
    if ((rc = sl_list_add(ctx, s->early, b, sizeof(*b))))
      return rc;
    return sl_timer_set(ctx, SL_EVENT_TIME, b->date_time);
  }
  wb_auction w;
  memcpy(&w, v, sizeof(w));
  if (w.closed)
    return 0; /* after the expiry: not valid */
  nx_bid best = w.best;
  wb_offer(&w, b);
  if (!memcmp(&best, &w.best, sizeof(best)))
    return 0;
  return sl_value_put(ctx, s->auction, &w, sizeof(w));
}

static int wb_prune_early(sl_ctx_t *ctx, wb_state *s, int64_t ts) {
  sl_list_iter_t it;
  const void *v;
  size_t len, n = 0, keep = 0;
  int rc = sl_list_get(ctx, s->early, &it);
  if (rc <= 0)
    return rc;
  nx_bid *bids = NULL;
  while (sl_list_next(&it, &v, &len) == 1) {
    if (n == keep && !(bids = realloc(bids, (n = n * 2 + 8) * sizeof(*bids))))
      return SL_ERR_NOMEM;
    memcpy(&bids[keep], v, sizeof(*bids));
    keep += bids[keep].date_time > ts;
  }
  const void **vals = malloc((keep + 1) * sizeof(*vals));
  size_t *lens = malloc((keep + 1) * sizeof(*lens));
  rc = vals && lens ? 0 : SL_ERR_NOMEM;
  for (size_t i = 0; !rc && i < keep; i++)
    vals[i] = &bids[i], lens[i] = sizeof(*bids);
  if (!rc)
    rc = sl_list_update(ctx, s->early, (const void *const *)vals, lens, keep);
  free(vals);
  free(lens);
  free(bids);
  return rc;
}

static int wb_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d;
  const nx_query_conf *qc = opaque;
  wb_state *s = sl_ctx_local(ctx);
  const void *v;
  size_t len;
  int rc = sl_value_get(ctx, s->auction, &v, &len);
  if (rc < 0)
    return rc;
  if (rc == 0)
    return wb_prune_early(ctx, s, ts);
  wb_auction w;
  memcpy(&w, v, sizeof(w));
  if (w.closed) { /* the retention after the expiry is over */
    return ts >= w.a.expires + qc->closed_retention_ms
               ? sl_state_clear(ctx, s->auction)
               : 0;
  }
  if (ts != w.a.expires)
    return 0;
  if (w.has_best) {
    nx_winner out = {w.a, w.best};
    sl_record_t r = {&w.a.id, sizeof(w.a.id), &out, sizeof(out), ts};
    if ((rc = sl_emit(ctx, &r)))
      return rc;
  }
  /* Keep a small tombstone for a while, so that the many bids still
   * coming for a closed (hot) auction are dropped at once. */
  w.closed = 1;
  if ((rc = sl_value_put(ctx, s->auction, &w, sizeof(w))))
    return rc;
  return sl_timer_set(ctx, SL_EVENT_TIME, ts + qc->closed_retention_ms);
}

sl_stream_t *nx_winning_bids(sl_stream_t *events, const char *uid,
                             const nx_query_conf *qc) {
  sl_stream_t *split =
      sl_flat_map(events, "winning.split", nx_split_auctions_bids, NULL);
  sl_stream_t *auctions = sl_key_by(split, nx_key_auction_id, NULL);
  sl_stream_t *bids =
      sl_key_by(sl_side_output(split, "bid"), nx_key_bid_auction, NULL);
  sl_co_process_ops_t ops = {.open = wb_open,
                             .on_element1 = wb_on_auction,
                             .on_element2 = wb_on_bid,
                             .on_timer = wb_timer,
                             .close = wb_close};
  return sl_co_process(auctions, bids, uid, &ops, (void *)qc);
}

/* ---- q9: winning bids ---------------------------------------------------- */

sl_stream_t *nx_q9(sl_stream_t *events, const nx_query_conf *qc) {
  return nx_winning_bids(events, "q9.winning", qc);
}

/* ---- q4 and q6: averages over closed auctions ---------------------------- */

/* Winners arrive from several upstream workers in any order; to emit the
 * same averages every run, each is parked under its closing time and
 * folded in by the timer at that time, when every auction that closed at
 * or before it has arrived. */
typedef struct avg_state {
  sl_state_t *pending, *total;
} avg_state;

static int avg_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  avg_state *s = calloc(1, sizeof(*s));
  sl_ctx_set_local(ctx, s);
  if (!s)
    return SL_ERR_NOMEM;
  s->pending = nx_state(ctx, "pending", SL_STATE_MAP);
  s->total = nx_state(ctx, "total", SL_STATE_VALUE);
  return s->pending && s->total ? 0 : SL_ERR_STATE;
}

static void avg_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

/* Map key of a pending winner: closing time then auction id, big-endian
 * so that they sort as numbers. */
typedef struct pend_key {
  unsigned char b[16];
} pend_key;

static pend_key pkey(int64_t ts, int64_t auction) {
  pend_key k;
  for (int i = 0; i < 8; i++) {
    k.b[i] = (unsigned char)((uint64_t)ts >> (56 - 8 * i));
    k.b[8 + i] = (unsigned char)((uint64_t)auction >> (56 - 8 * i));
  }
  return k;
}

static int park(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  avg_state *s = sl_ctx_local(ctx);
  const nx_winner *w = rec->value;
  pend_key k = pkey(rec->ts, w->auction.id);
  int rc = sl_map_put(ctx, s->pending, &k, sizeof(k), &w->bid.price,
                      sizeof(w->bid.price));
  return rc ? rc : sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
}

/* The winners parked at ts, in auction order. */
static int take_due(sl_ctx_t *ctx, avg_state *s, int64_t ts, pend_key **out,
                    int64_t **prices, size_t *n) {
  sl_map_iter_t it;
  const void *mk, *v;
  size_t mlen, vlen, cap = 0;
  pend_key lo = pkey(ts, 0);
  int rc = sl_map_iter(ctx, s->pending, &it);
  *n = 0;
  while (!rc && (rc = sl_map_next(&it, &mk, &mlen, &v, &vlen)) == 1) {
    rc = 0;
    if (memcmp(mk, lo.b, 8) != 0)
      continue;
    if (*n == cap) {
      cap = cap * 2 + 4;
      *out = realloc(*out, cap * sizeof(**out));
      *prices = realloc(*prices, cap * sizeof(**prices));
      if (!*out || !*prices)
        return SL_ERR_NOMEM;
    }
    memcpy(&(*out)[*n], mk, sizeof(pend_key));
    memcpy(&(*prices)[(*n)++], v, sizeof(int64_t));
  }
  if (rc < 0)
    return rc;
  for (size_t i = 1; i < *n; i++) /* insertion sort: a handful at a time */
    for (size_t j = i; j > 0 && memcmp(&(*out)[j - 1], &(*out)[j], 16) > 0;
         j--) {
      pend_key tk = (*out)[j];
      (*out)[j] = (*out)[j - 1], (*out)[j - 1] = tk;
      int64_t tp = (*prices)[j];
      (*prices)[j] = (*prices)[j - 1], (*prices)[j - 1] = tp;
    }
  for (size_t i = 0; i < *n && !rc; i++)
    rc = sl_map_remove(ctx, s->pending, &(*out)[i], sizeof(pend_key)) < 0;
  return rc ? SL_ERR_STATE : 0;
}

static int64_t key_i64(sl_ctx_t *ctx) {
  const void *k;
  size_t len;
  int64_t v = 0;
  if (sl_ctx_key(ctx, &k, &len) == SL_OK && len == sizeof(v))
    memcpy(&v, k, sizeof(v));
  return v;
}

/* q4: SELECT category, AVG(final) FROM (winning price per auction)
 * GROUP BY category — one update per category and closing time. Only the
 * sum and count per closing time need parking here. */
static int q4_park(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  avg_state *s = sl_ctx_local(ctx);
  const nx_winner *w = rec->value;
  const void *v;
  size_t len;
  int64_t acc[2] = {0, 0};
  int rc = sl_map_get(ctx, s->pending, &rec->ts, sizeof(rec->ts), &v, &len);
  if (rc < 0)
    return rc;
  if (rc == 1)
    memcpy(acc, v, sizeof(acc));
  acc[0] += w->bid.price;
  acc[1]++;
  rc = sl_map_put(ctx, s->pending, &rec->ts, sizeof(rec->ts), acc, sizeof(acc));
  return rc ? rc : sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
}

static int q4_fire(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d, (void)opaque;
  avg_state *s = sl_ctx_local(ctx);
  const void *v = NULL;
  size_t len;
  int64_t acc[2];
  int rc = sl_map_get(ctx, s->pending, &ts, sizeof(ts), &v, &len);
  if (rc <= 0)
    return rc;
  memcpy(acc, v, sizeof(acc));
  if ((rc = sl_map_remove(ctx, s->pending, &ts, sizeof(ts))) < 0)
    return rc;
  nx_avg_out *t = sl_value_ptr(ctx, s->total, sizeof(*t), NULL);
  if (!t)
    return SL_ERR_NOMEM;
  t->sum += acc[0];
  t->count += acc[1];
  nx_avg_out o = *t;
  o.key = key_i64(ctx);
  sl_record_t r = {&o.key, sizeof(o.key), &o, sizeof(o), ts};
  return sl_emit(ctx, &r);
}

static int key_category(const sl_record_t *rec, const void **key, size_t *len,
                        void *opaque) {
  (void)opaque;
  *key = &((const nx_winner *)rec->value)->auction.category;
  *len = sizeof(int64_t);
  return 0;
}

sl_stream_t *nx_q4(sl_stream_t *events, const nx_query_conf *qc) {
  sl_stream_t *winners = nx_winning_bids(events, "q4.winning", qc);
  sl_process_ops_t ops = {.open = avg_open,
                          .on_element = q4_park,
                          .on_timer = q4_fire,
                          .close = avg_close};
  return sl_process(sl_key_by(winners, key_category, NULL), "q4.avg", &ops,
                    NULL);
}

/* q6: per seller, the average winning price of its last 10 closed
 * auctions, updated at each close (closing time, then auction id). */
typedef struct last10 {
  int64_t n, next, price[10];
} last10;

static int q6_fire(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d, (void)opaque;
  avg_state *s = sl_ctx_local(ctx);
  pend_key *keys = NULL;
  int64_t *prices = NULL;
  size_t n;
  int rc = take_due(ctx, s, ts, &keys, &prices, &n);
  for (size_t i = 0; i < n && !rc; i++) {
    last10 *l = sl_value_ptr(ctx, s->total, sizeof(*l), NULL);
    if (!l) {
      rc = SL_ERR_NOMEM;
      break;
    }
    l->price[l->next] = prices[i];
    l->next = (l->next + 1) % 10;
    l->n += l->n < 10;
    nx_avg_out o = {.key = key_i64(ctx), .count = l->n};
    for (int j = 0; j < l->n; j++)
      o.sum += l->price[j];
    for (int j = 8; j < 16; j++)
      o.auction = (o.auction << 8) | keys[i].b[j];
    sl_record_t r = {&o.key, sizeof(o.key), &o, sizeof(o), ts};
    rc = sl_emit(ctx, &r);
  }
  free(keys);
  free(prices);
  return rc;
}

static int key_seller(const sl_record_t *rec, const void **key, size_t *len,
                      void *opaque) {
  (void)opaque;
  *key = &((const nx_winner *)rec->value)->auction.seller;
  *len = sizeof(int64_t);
  return 0;
}

sl_stream_t *nx_q6(sl_stream_t *events, const nx_query_conf *qc) {
  sl_stream_t *winners = nx_winning_bids(events, "q6.winning", qc);
  sl_process_ops_t ops = {.open = avg_open,
                          .on_element = park,
                          .on_timer = q6_fire,
                          .close = avg_close};
  return sl_process(sl_key_by(winners, key_seller, NULL), "q6.avg", &ops, NULL);
}
