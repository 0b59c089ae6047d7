/* SPDX-License-Identifier: Apache-2.0 */
/* The joins of persons and auctions: q3 (local item suggestion, an
 * incremental join kept in keyed state) and q8 (new users, a tumbling
 * window join). */
#include <stdlib.h>
#include <string.h>

#include "q_common.h"

/* ---- q3: local item suggestion ----------------------------------------- */

/* SELECT P.name, P.city, P.state, A.id FROM auction A JOIN person P
 *   ON A.seller = P.id
 * WHERE A.category = 10 AND P.state IN ('OR', 'ID', 'CA')
 * A regular (unwindowed) join: keyed by person id, the person is kept in
 * value state and auctions that arrive before their seller wait in list
 * state (Flink keeps both sides the same way). */
static int q3_filter(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)opaque;
  const nx_event *e = nx_rec_event(rec);
  if (e->type == NX_AUCTION)
    return e->u.auction.category == 10;
  if (e->type != NX_PERSON)
    return 0;
  const char *s = e->u.person.state;
  return !strcmp(s, "OR") || !strcmp(s, "ID") || !strcmp(s, "CA");
}

typedef struct q3_state {
  sl_state_t *person, *waiting;
} q3_state;

static int q3_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  q3_state *s = calloc(1, sizeof(*s));
  sl_ctx_set_local(ctx, s);
  if (!s)
    return SL_ERR_NOMEM;
  s->person = nx_state(ctx, "person", SL_STATE_VALUE);
  s->waiting = nx_state(ctx, "auctions", SL_STATE_LIST);
  return s->person && s->waiting ? 0 : SL_ERR_STATE;
}

static void q3_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int q3_emit(sl_ctx_t *ctx, const nx_person *p, int64_t auction,
                   int64_t ts) {
  nx_q3_out o = {.auction = auction};
  memcpy(o.name, p->name, sizeof(o.name));
  memcpy(o.city, p->city, sizeof(o.city));
  memcpy(o.state, p->state, sizeof(o.state));
  sl_record_t r = {&p->id, sizeof(p->id), &o, sizeof(o), ts};
  return sl_emit(ctx, &r);
}

static int q3_person(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  q3_state *s = sl_ctx_local(ctx);
  const nx_person *p = &nx_rec_event(rec)->u.person;
  int rc = sl_value_put(ctx, s->person, p, sizeof(*p));
  sl_list_iter_t it;
  const void *v;
  size_t len;
  if (rc || (rc = sl_list_get(ctx, s->waiting, &it)) <= 0)
    return rc;
  while (sl_list_next(&it, &v, &len) == 1) {
    int64_t auction;
    memcpy(&auction, v, sizeof(auction));
    if ((rc = q3_emit(ctx, p, auction, rec->ts)))
      return rc;
  }
  return sl_state_clear(ctx, s->waiting);
}

static int q3_auction(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  q3_state *s = sl_ctx_local(ctx);
  const nx_auction *a = &nx_rec_event(rec)->u.auction;
  const void *v;
  size_t len;
  int rc = sl_value_get(ctx, s->person, &v, &len);
  if (rc < 0)
    return rc;
  if (rc == 1) {
    nx_person p;
    memcpy(&p, v, sizeof(p));
    return q3_emit(ctx, &p, a->id, rec->ts);
  }
  return sl_list_add(ctx, s->waiting, &a->id, sizeof(a->id));
}

sl_stream_t *nx_q3(sl_stream_t *events, const nx_query_conf *qc) {
  (void)qc;
  sl_stream_t *f = sl_filter(events, "q3.filter", q3_filter, NULL);
  sl_stream_t *split =
      sl_flat_map(f, "q3.split", nx_split_people_auctions, NULL);
  sl_stream_t *people = sl_key_by(split, nx_key_person_id, NULL);
  sl_stream_t *auctions =
      sl_key_by(sl_side_output(split, "auction"), nx_key_auction_seller, NULL);
  sl_co_process_ops_t ops = {.open = q3_open,
                             .on_element1 = q3_person,
                             .on_element2 = q3_auction,
                             .close = q3_close};
  return sl_co_process(people, auctions, "q3.join", &ops, NULL);
}

/* ---- q8: new users ------------------------------------------------------- */

/* SELECT P.id, P.name, P.starttime
 * FROM (persons per 10 s tumbling window) P
 * JOIN (distinct sellers per 10 s tumbling window) A
 *   ON P.id = A.seller AND P.starttime = A.starttime
 * The window join calls q8_join once per (person, auction) pair of a
 * window. The sellers are made distinct (the GROUP BY on auctions)
 * downstream, keyed by person id: value state holds the window start
 * already emitted for the id, and a timer at the window's end (the pairs'
 * timestamp) clears it. Every pair of a window reaches the dedup before
 * the watermark that fires that timer: the join emits a window's output
 * before it forwards the watermark that fired it. */
static int q8_join(sl_ctx_t *ctx, const sl_record_t *left,
                   const sl_record_t *right, void *opaque) {
  (void)right;
  const nx_query_conf *qc = opaque;
  const nx_person *p = &nx_rec_event(left)->u.person;
  nx_q8_out o = {.id = p->id,
                 .start = p->date_time - p->date_time % qc->window_ms};
  memcpy(o.name, p->name, sizeof(o.name));
  sl_record_t r = {&p->id, sizeof(p->id), &o, sizeof(o), 0};
  return sl_emit(ctx, &r);
}

static int q8_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_t *emitted = nx_state(ctx, "emitted", SL_STATE_VALUE);
  sl_ctx_set_local(ctx, emitted);
  return emitted ? 0 : SL_ERR_STATE;
}

static int q8_first(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  const nx_q8_out *o = rec->value;
  bool created;
  int64_t *start =
      sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(*start), &created);
  if (!start)
    return SL_ERR_NOMEM;
  if (!created && *start == o->start)
    return 0;
  *start = o->start;
  int rc = sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
  return rc ? rc : sl_emit(ctx, rec);
}

static int q8_window_end(sl_ctx_t *ctx, sl_time_domain d, int64_t ts,
                         void *opaque) {
  (void)d, (void)ts, (void)opaque;
  return sl_state_clear(ctx, sl_ctx_local(ctx));
}

sl_stream_t *nx_q8(sl_stream_t *events, const nx_query_conf *qc) {
  sl_stream_t *split =
      sl_flat_map(events, "q8.split", nx_split_people_auctions, NULL);
  sl_stream_t *people = sl_key_by(split, nx_key_person_id, NULL);
  sl_stream_t *auctions =
      sl_key_by(sl_side_output(split, "auction"), nx_key_auction_seller, NULL);
  sl_window_spec_t w = sl_window_tumbling(qc->window_ms);
  sl_stream_t *pairs =
      sl_window_join(people, auctions, "q8.join", &w, q8_join, (void *)qc);
  sl_process_ops_t dedup = {
      .open = q8_open, .on_element = q8_first, .on_timer = q8_window_end};
  /* NULL key function: the record's key, the person id. */
  return sl_process(sl_key_by(pairs, NULL, NULL), "q8.distinct", &dedup, NULL);
}
