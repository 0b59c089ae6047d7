/* SPDX-License-Identifier: Apache-2.0 */
/* The stateless queries (q0 pass-through, q1 currency conversion, q2
 * selection), the helpers every query shares, and the table of queries
 * with the text form of each one's output. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "q_common.h"

void nx_query_conf_default(nx_query_conf *qc) {
  qc->window_ms = 10000;
  qc->slide_ms = 2000;
  qc->session_ms = 10000;
  qc->proc_window_ms = 10000;
  qc->closed_retention_ms = 60000;
}

int nx_only_bids(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)opaque;
  return nx_is_type(rec, NX_BID);
}

int nx_split_people_auctions(sl_ctx_t *ctx, const sl_record_t *rec,
                             void *opaque) {
  (void)opaque;
  if (nx_is_type(rec, NX_PERSON))
    return sl_emit(ctx, rec);
  if (nx_is_type(rec, NX_AUCTION))
    return sl_emit_to(ctx, "auction", rec);
  return 0;
}

int nx_split_auctions_bids(sl_ctx_t *ctx, const sl_record_t *rec,
                           void *opaque) {
  (void)opaque;
  if (nx_is_type(rec, NX_AUCTION))
    return sl_emit(ctx, rec);
  if (nx_is_type(rec, NX_BID))
    return sl_emit_to(ctx, "bid", rec);
  return 0;
}

#define NX_KEY_FN(fn, field)                                                   \
  int fn(const sl_record_t *rec, const void **key, size_t *len,                \
         void *opaque) {                                                       \
    (void)opaque;                                                              \
    *key = &nx_rec_event(rec)->u.field;                                        \
    *len = sizeof(int64_t);                                                    \
    return 0;                                                                  \
  }
NX_KEY_FN(nx_key_bid_auction, bid.auction)
NX_KEY_FN(nx_key_bid_bidder, bid.bidder)
NX_KEY_FN(nx_key_person_id, person.id)
NX_KEY_FN(nx_key_auction_id, auction.id)
NX_KEY_FN(nx_key_auction_seller, auction.seller)

/* ---- q0: pass-through ---------------------------------------------------- */

/* SELECT auction, bidder, price, dateTime FROM bid */
static sl_stream_t *q0(sl_stream_t *events, const nx_query_conf *qc) {
  (void)qc;
  return sl_filter(events, "q0.bids", nx_only_bids, NULL);
}

/* ---- q1: currency conversion --------------------------------------------- */

/* SELECT auction, bidder, 0.908 * price, dateTime FROM bid, in integer
 * arithmetic (price * 908 / 1000) so every run agrees to the unit. */
static int q1_convert(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                      void *opaque) {
  (void)opaque;
  nx_event *e = sl_ctx_alloc(ctx, in->value_len);
  if (!e)
    return SL_ERR_NOMEM;
  memcpy(e, in->value, in->value_len);
  e->u.bid.price = e->u.bid.price * 908 / 1000;
  out->value = e;
  return 0;
}

static sl_stream_t *q1(sl_stream_t *events, const nx_query_conf *qc) {
  (void)qc;
  sl_stream_t *bids = sl_filter(events, "q1.bids", nx_only_bids, NULL);
  return sl_map(bids, "q1.convert", q1_convert, NULL);
}

/* ---- q2: selection ------------------------------------------------------- */

/* SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0 */
static int q2_select(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)opaque;
  return nx_is_type(rec, NX_BID) && nx_rec_event(rec)->u.bid.auction % 123 == 0;
}

static sl_stream_t *q2(sl_stream_t *events, const nx_query_conf *qc) {
  (void)qc;
  return sl_filter(events, "q2.select", q2_select, NULL);
}

/* ---- Output as text ------------------------------------------------------ */

static int fmt_bid(const sl_record_t *rec, char *buf, size_t n) {
  const nx_bid *b = &nx_rec_event(rec)->u.bid;
  return snprintf(buf, n, "%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64,
                  b->auction, b->bidder, b->price, b->date_time);
}

static int fmt_q2(const sl_record_t *rec, char *buf, size_t n) {
  const nx_bid *b = &nx_rec_event(rec)->u.bid;
  return snprintf(buf, n, "%" PRId64 ",%" PRId64, b->auction, b->price);
}

static int fmt_q3(const sl_record_t *rec, char *buf, size_t n) {
  const nx_q3_out *o = rec->value;
  return snprintf(buf, n, "%s,%s,%s,%" PRId64, o->name, o->city, o->state,
                  o->auction);
}

/* q4 and q6: the running average as an exact fraction, and the time. */
static int fmt_avg(const sl_record_t *rec, char *buf, size_t n) {
  const nx_avg_out *o = rec->value;
  return snprintf(buf, n,
                  "%" PRId64 ",%" PRId64 ",%" PRId64 "/%" PRId64 "@%" PRId64,
                  o->key, o->auction, o->sum, o->count, rec->ts);
}

static int fmt_count(const sl_record_t *rec, char *buf, size_t n) {
  const nx_count_out *o = rec->value;
  return snprintf(buf, n, "%" PRId64 ",%" PRId64 ",[%" PRId64 ",%" PRId64 ")",
                  o->key, o->count, o->start, o->end);
}

static int fmt_q7(const sl_record_t *rec, char *buf, size_t n) {
  int k = fmt_bid(rec, buf, n);
  return k + snprintf(buf + k, n - (size_t)k, "@%" PRId64, rec->ts);
}

static int fmt_q8(const sl_record_t *rec, char *buf, size_t n) {
  const nx_q8_out *o = rec->value;
  return snprintf(buf, n, "%" PRId64 ",%s,%" PRId64, o->id, o->name, o->start);
}

static int fmt_q9(const sl_record_t *rec, char *buf, size_t n) {
  const nx_winner *w = rec->value;
  const nx_auction *a = &w->auction;
  return snprintf(buf, n,
                  "%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64
                  ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64,
                  a->id, a->seller, a->category, a->initial_bid, a->reserve,
                  a->date_time, a->expires, w->bid.bidder, w->bid.price,
                  w->bid.date_time);
}

sl_stream_t *nx_q3(sl_stream_t *, const nx_query_conf *);
sl_stream_t *nx_q4(sl_stream_t *, const nx_query_conf *);
sl_stream_t *nx_q5(sl_stream_t *, const nx_query_conf *);
sl_stream_t *nx_q6(sl_stream_t *, const nx_query_conf *);
sl_stream_t *nx_q7(sl_stream_t *, const nx_query_conf *);
sl_stream_t *nx_q8(sl_stream_t *, const nx_query_conf *);
sl_stream_t *nx_q9(sl_stream_t *, const nx_query_conf *);
sl_stream_t *nx_q11(sl_stream_t *, const nx_query_conf *);
sl_stream_t *nx_q12(sl_stream_t *, const nx_query_conf *);

const nx_query nx_queries[] = {
    {"q0", q0, fmt_bid, false},        {"q1", q1, fmt_bid, false},
    {"q2", q2, fmt_q2, false},         {"q3", nx_q3, fmt_q3, false},
    {"q4", nx_q4, fmt_avg, false},     {"q5", nx_q5, fmt_count, false},
    {"q6", nx_q6, fmt_avg, false},     {"q7", nx_q7, fmt_q7, false},
    {"q8", nx_q8, fmt_q8, false},      {"q9", nx_q9, fmt_q9, false},
    {"q11", nx_q11, fmt_count, false}, {"q12", nx_q12, fmt_count, true},
};
const size_t nx_n_queries = sizeof(nx_queries) / sizeof(nx_queries[0]);

const nx_query *nx_query_find(const char *name) {
  for (size_t i = 0; i < nx_n_queries; i++)
    if (strcmp(nx_queries[i].name, name) == 0)
      return &nx_queries[i];
  return NULL;
}
