/* SPDX-License-Identifier: Apache-2.0 */
/* Small pieces every Nexmark query uses: filters by event type and key
 * extractors that point into the event. */
#ifndef NX_Q_COMMON_H
#define NX_Q_COMMON_H

#include "nexmark.h"

static inline int nx_is_type(const sl_record_t *rec, int64_t type) {
  const nx_event *e = nx_rec_event(rec);
  return e && e->type == type;
}

/* sl_filter functions. */
int nx_only_bids(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque);
/* sl_flat_map: persons to the main output, auctions to side output
 * "auction"; bids are dropped. */
int nx_split_people_auctions(sl_ctx_t *ctx, const sl_record_t *rec,
                             void *opaque);
/* sl_flat_map: auctions to the main output, bids to side output "bid". */
int nx_split_auctions_bids(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque);

/* sl_key_fn extractors (8-byte native ids, so both sides of a join hash
 * and compare alike). */
int nx_key_bid_auction(const sl_record_t *rec, const void **key, size_t *len,
                       void *opaque);
int nx_key_bid_bidder(const sl_record_t *rec, const void **key, size_t *len,
                      void *opaque);
int nx_key_person_id(const sl_record_t *rec, const void **key, size_t *len,
                     void *opaque);
int nx_key_auction_id(const sl_record_t *rec, const void **key, size_t *len,
                      void *opaque);
int nx_key_auction_seller(const sl_record_t *rec, const void **key, size_t *len,
                          void *opaque);

/* Registers a state in open(); NULL fails the job. */
static inline sl_state_t *nx_state(sl_ctx_t *ctx, const char *name,
                                   sl_state_kind kind) {
  sl_state_desc_t d = {.name = name, .kind = kind};
  return sl_state_register(ctx, &d);
}

#endif
