/* SPDX-License-Identifier: Apache-2.0 */
/* Nexmark: the online-auction benchmark (persons, auctions, bids). The
 * event model and generator (generator.c), the queries q0..q12 written
 * with the public API (q_*.c) and the table the driver and the tests run
 * them from. Events travel in-process as C structs (record value =
 * nx_event bytes, event time = the event's date_time). */
#ifndef NEXMARK_H
#define NEXMARK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sluice.h>

/* ---- Events ------------------------------------------------------------- */

enum { NX_PERSON = 0, NX_AUCTION = 1, NX_BID = 2 };

typedef struct nx_person {
  int64_t id;
  int64_t date_time;
  char name[24];
  char email[24];
  char credit_card[20];
  char city[16];
  char state[4];
} nx_person;

typedef struct nx_auction {
  int64_t id;
  int64_t initial_bid;
  int64_t reserve;
  int64_t date_time;
  int64_t expires;
  int64_t seller;
  int64_t category;
  char item_name[24];
} nx_auction;

typedef struct nx_bid {
  int64_t auction;
  int64_t bidder;
  int64_t price;
  int64_t date_time;
  char channel[16];
} nx_bid;

/* A record's value: the type, then the one struct it names. Records carry
 * only the bytes of their type (nx_event_size), so a bid is 56 bytes. */
typedef struct nx_event {
  int64_t type;
  union {
    nx_person person;
    nx_auction auction;
    nx_bid bid;
  } u;
} nx_event;

size_t nx_event_size(const nx_event *e);
/* The event in a record's value; NULL when the bytes are not one. */
static inline const nx_event *nx_rec_event(const sl_record_t *rec) {
  const nx_event *e = rec->value;
  return rec->value_len >= sizeof(int64_t) ? e : NULL;
}

/* ---- Generator ---------------------------------------------------------- */

/* The knobs of Flink's nexmark GeneratorConfig that shape the data. */
typedef struct nx_config {
  uint64_t seed;
  int64_t first_event_time_ms;  /* event time of event 0 */
  int64_t inter_event_delay_us; /* event time between two events, in us */
  /* Events are emitted in groups of this many, shuffled within the group
   * (their timestamps with them): the event-time disorder is below
   * group * delay; 1 = in order. */
  uint32_t out_of_order_group;
  uint32_t hot_auction_ratio; /* 1 in ratio bids goes to any auction */
  uint32_t hot_seller_ratio;
  uint32_t hot_bidder_ratio;
  uint32_t active_people;      /* bidders/sellers drawn from the newest ones */
  uint32_t in_flight_auctions; /* auctions open at a time (sets expiry) */
} nx_config;

/* Flink's defaults: seed 0, hot ratios 2/4/4, 1000 active people, 100
 * auctions in flight, 10 us between events, in order. */
void nx_config_default(nx_config *c);

/* The largest event-time disorder the config produces, in ms: a watermark
 * bound at least this large sees no late event. */
int64_t nx_max_disorder_ms(const nx_config *c);

/* Event number i (0-based position in the stream). Deterministic: a pure
 * function of (config, i), so any subset of the stream can be generated
 * independently (a parallel source makes i = w, w+P, ...). */
void nx_generate(const nx_config *c, uint64_t i, nx_event *out);

/* JSON of an event (Flink's nexmark field names, one object with "type"
 * and one of "person", "auction", "bid"); returns the length written
 * (snprintf rules). */
int nx_event_to_json(const nx_event *e, char *buf, size_t n);
/* Parses nx_event_to_json's output; 0 or -1. */
int nx_event_from_json(const char *json, size_t len, nx_event *out);

/* ---- Queries ------------------------------------------------------------ */

/* Settings shared by the queries. */
typedef struct nx_query_conf {
  int64_t window_ms;  /* q5 size, q7/q8 tumble: 10 s */
  int64_t slide_ms;   /* q5 slide: 2 s */
  int64_t session_ms; /* q11 gap: 10 s */
  /* q12's processing-time tumble: 10 s (the benchmark shortens it so
   * that windows fire during a run of a few seconds). */
  int64_t proc_window_ms;
  /* q4/q6/q9: how long after an auction closed its bids are still
   * recognised as too late and dropped at once (event time). */
  int64_t closed_retention_ms;
} nx_query_conf;

void nx_query_conf_default(nx_query_conf *qc);

/* Builds the query on the event stream (event time and watermarks already
 * set); returns its output stream, or NULL (see sl_job_errmsg()). */
typedef sl_stream_t *(*nx_build_fn)(sl_stream_t *events,
                                    const nx_query_conf *qc);
/* Formats one output record of the query as a canonical text line (the
 * tests compare these with the reference model's). */
typedef int (*nx_format_fn)(const sl_record_t *rec, char *buf, size_t n);

typedef struct nx_query {
  const char *name;
  nx_build_fn build;
  nx_format_fn format;
  bool proc_time; /* uses processing time (q12) */
} nx_query;

extern const nx_query nx_queries[];
extern const size_t nx_n_queries;
const nx_query *nx_query_find(const char *name);

/* Query outputs (record values). */
typedef struct nx_q3_out {
  int64_t auction;
  char name[24];
  char city[16];
  char state[4];
} nx_q3_out;

typedef struct nx_avg_out { /* q4 (key: category), q6 (key: seller) */
  int64_t key;
  int64_t auction; /* q6: the auction that closed; q4: 0 */
  int64_t sum;
  int64_t count;
} nx_avg_out;

typedef struct nx_count_out { /* q5 (auction), q11 (bidder), q12 (bidder) */
  int64_t key;
  int64_t count;
  int64_t start;
  int64_t end;
} nx_count_out;

typedef struct nx_q8_out {
  int64_t id;
  int64_t start;
  char name[24];
} nx_q8_out;

typedef struct nx_winner { /* q9, and the input of q4 and q6 */
  nx_auction auction;
  nx_bid bid;
} nx_winner;

/* Shared by q4, q6 and q9: the winning bid of each auction, emitted when
 * the auction expires (event time) with the auction's expiry as its
 * timestamp. Input: the event stream. */
sl_stream_t *nx_winning_bids(sl_stream_t *events, const char *uid,
                             const nx_query_conf *qc);

#endif
