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
 * window; a person id occurs once, so the pairs of one person are
 * consecutive and keeping the last (id, window) emitted per worker makes
 * the sellers distinct, as the GROUP BY on auctions does. */
typedef struct q8_last {
  int64_t id, start;
  char pad[48]; /* one cache line per worker */
} q8_last;

static q8_last q8_seen[256];

static int q8_join(sl_ctx_t *ctx, const sl_record_t *left,
                   const sl_record_t *right, void *opaque) {
  (void)right;
  const nx_query_conf *qc = opaque;
  const nx_person *p = &nx_rec_event(left)->u.person;
  int64_t start = p->date_time - p->date_time % qc->window_ms;
  q8_last *seen = &q8_seen[sl_ctx_worker(ctx) & 255];
  if (seen->id == p->id && seen->start == start)
    return 0;
  seen->id = p->id;
  seen->start = start;
  nx_q8_out o = {.id = p->id, .start = start};
  memcpy(o.name, p->name, sizeof(o.name));
  sl_record_t r = {&p->id, sizeof(p->id), &o, sizeof(o), 0};
  return sl_emit(ctx, &r);
}

sl_stream_t *nx_q8(sl_stream_t *events, const nx_query_conf *qc) {
  memset(q8_seen, 0, sizeof(q8_seen));
  sl_stream_t *split =
      sl_flat_map(events, "q8.split", nx_split_people_auctions, NULL);
  sl_stream_t *people = sl_key_by(split, nx_key_person_id, NULL);
  sl_stream_t *auctions =
      sl_key_by(sl_side_output(split, "auction"), nx_key_auction_seller, NULL);
  sl_window_spec_t w = sl_window_tumbling(qc->window_ms);
  return sl_window_join(people, auctions, "q8.join", &w, q8_join, (void *)qc);
}
