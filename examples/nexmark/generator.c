/* SPDX-License-Identifier: Apache-2.0 */
/* The Nexmark event model as Flink's nexmark generator defines it: of every
 * 50 events 1 is a person, 3 are auctions and 46 are bids; ids grow with
 * the event number; sellers and bidders are mostly "hot" (a few recent
 * ids), the rest drawn from the active people; auctions expire within
 * about twice the time it takes for `in_flight_auctions` new ones to
 * appear. Each event draws from its own random stream seeded by (seed,
 * event id), so event i never depends on events before it. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "nexmark.h"

enum {
  PERSON_PROPORTION = 1,
  AUCTION_PROPORTION = 3,
  BID_PROPORTION = 46,
  TOTAL_PROPORTION = 50,
  FIRST_PERSON_ID = 1000,
  FIRST_AUCTION_ID = 1000,
  FIRST_CATEGORY_ID = 10,
  NUM_CATEGORIES = 5,
  PERSON_ID_LEAD = 10, /* a bid or auction may name a person not yet seen */
  AUCTION_ID_LEAD = 10,
  HOT_AUCTION_RATIO = 100, /* the hot auction is the newest multiple of 100 */
  HOT_SELLER_RATIO = 100,
  HOT_BIDDER_RATIO = 100,
};

static const char *const first_names[] = {"Peter", "Paul",   "Luke",  "John",
                                          "Saul",  "Vicky",  "Kate",  "Julie",
                                          "Sarah", "Deiter", "Walter"};
static const char *const last_names[] = {"Shultz", "Abrams",  "Spencer",
                                         "White",  "Bartels", "Walton",
                                         "Smith",  "Jones",   "Noris"};
static const char *const us_states[] = {"AZ", "CA", "ID", "OR", "WA", "WY"};
static const char *const us_cities[] = {
    "Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland",
    "Bend",    "Redmond",     "Seattle",       "Kent",  "Cheyenne"};
static const char *const channels[] = {"Google", "Facebook", "Baidu", "Apple"};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

void nx_config_default(nx_config *c) {
  memset(c, 0, sizeof(*c));
  c->first_event_time_ms = 1600000000000LL;
  c->inter_event_delay_us = 10;
  c->out_of_order_group = 1;
  c->hot_auction_ratio = 2;
  c->hot_seller_ratio = 4;
  c->hot_bidder_ratio = 4;
  c->active_people = 1000;
  c->in_flight_auctions = 100;
}

/* splitmix64: a fast, well-mixed stream from any seed. */
typedef struct rng {
  uint64_t s;
} rng;

static uint64_t next64(rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0 (the modulo bias is below 2^-40 here). */
static int64_t next_long(rng *r, int64_t n) {
  return n <= 1 ? 0 : (int64_t)(next64(r) % (uint64_t)n);
}

static double next_double(rng *r) {
  return (double)(next64(r) >> 11) * 0x1.0p-53;
}

/* Prices spread over six decades, as Flink's nextPrice. */
static int64_t next_price(rng *r) {
  return (int64_t)llround(pow(10.0, next_double(r) * 6.0) * 100.0);
}

static void next_string(rng *r, char *out, size_t cap, size_t maxlen) {
  size_t len = 3 + (size_t)next_long(r, (int64_t)(maxlen - 2));
  if (len >= cap)
    len = cap - 1;
  for (size_t i = 0; i < len; i++)
    out[i] = (char)('a' + next_long(r, 26));
  out[len] = '\0';
}

/* Every listed string fits the fields it goes to (no snprintf: this runs
 * for every bid). */
static void pick(rng *r, char *out, size_t cap, const char *const *v,
                 size_t n) {
  const char *s = v[next_long(r, (int64_t)n)];
  size_t len = strlen(s);
  if (len >= cap)
    len = cap - 1;
  memcpy(out, s, len);
  out[len] = '\0';
}

/* Shuffles event numbers within groups of g (953 is prime, so this is a
 * permutation of each group unless g is a multiple of it). */
static uint64_t adjusted(const nx_config *c, uint64_t n) {
  uint64_t g = c->out_of_order_group ? c->out_of_order_group : 1;
  return n / g * g + (n * 953) % g;
}

static int64_t timestamp_for(const nx_config *c, uint64_t n) {
  return c->first_event_time_ms +
         (int64_t)(n * (uint64_t)c->inter_event_delay_us / 1000);
}

int64_t nx_max_disorder_ms(const nx_config *c) {
  uint64_t g = c->out_of_order_group ? c->out_of_order_group : 1;
  return (int64_t)((g * (uint64_t)c->inter_event_delay_us + 999) / 1000);
}

/* The newest person / auction id as of event id (base 0). */
static int64_t last_person(uint64_t id) {
  return (int64_t)(id / TOTAL_PROPORTION);
}

static int64_t last_auction(uint64_t id) {
  int64_t epoch = (int64_t)(id / TOTAL_PROPORTION);
  int64_t off = (int64_t)(id % TOTAL_PROPORTION);
  if (off < PERSON_PROPORTION) {
    epoch--;
    off = AUCTION_PROPORTION - 1;
  } else if (off >= PERSON_PROPORTION + AUCTION_PROPORTION) {
    off = AUCTION_PROPORTION - 1;
  } else {
    off -= PERSON_PROPORTION;
  }
  return epoch * AUCTION_PROPORTION + off;
}

/* A person among the active ones, or a little ahead of the newest. */
static int64_t next_person(const nx_config *c, uint64_t id, rng *r) {
  int64_t n = last_person(id) + 1;
  int64_t active = n < (int64_t)c->active_people ? n : c->active_people;
  return n - active + next_long(r, active + PERSON_ID_LEAD);
}

static int64_t next_auction(const nx_config *c, uint64_t id, rng *r) {
  int64_t max = last_auction(id);
  int64_t min = max - (int64_t)c->in_flight_auctions;
  if (min < 0)
    min = 0;
  return min + next_long(r, max - min + 1 + AUCTION_ID_LEAD);
}

static void gen_person(uint64_t id, int64_t ts, rng *r, nx_person *p) {
  memset(p, 0, sizeof(*p));
  p->id = last_person(id) + FIRST_PERSON_ID;
  p->date_time = ts;
  snprintf(p->name, sizeof(p->name), "%s %s",
           first_names[next_long(r, NELEM(first_names))],
           last_names[next_long(r, NELEM(last_names))]);
  char user[10], host[10];
  next_string(r, user, sizeof(user), 7);
  next_string(r, host, sizeof(host), 7);
  snprintf(p->email, sizeof(p->email), "%s@%s.com", user, host);
  snprintf(p->credit_card, sizeof(p->credit_card), "%04d %04d %04d %04d",
           (int)next_long(r, 10000), (int)next_long(r, 10000),
           (int)next_long(r, 10000), (int)next_long(r, 10000));
  pick(r, p->city, sizeof(p->city), us_cities, NELEM(us_cities));
  pick(r, p->state, sizeof(p->state), us_states, NELEM(us_states));
}

static void gen_auction(const nx_config *c, uint64_t n, uint64_t id, int64_t ts,
                        rng *r, nx_auction *a) {
  memset(a, 0, sizeof(*a));
  a->id = last_auction(id) + FIRST_AUCTION_ID;
  a->date_time = ts;
  next_string(r, a->item_name, sizeof(a->item_name), 20);
  a->initial_bid = next_price(r);
  a->reserve = a->initial_bid + next_price(r);
  if (next_long(r, c->hot_seller_ratio) > 0)
    a->seller = last_person(id) / HOT_SELLER_RATIO * HOT_SELLER_RATIO;
  else
    a->seller = next_person(c, id, r);
  a->seller += FIRST_PERSON_ID;
  a->category = FIRST_CATEGORY_ID + next_long(r, NUM_CATEGORIES);
  /* Open for up to twice the time in which in_flight_auctions more
   * auctions appear, so about that many are open at once. */
  uint64_t ahead =
      (uint64_t)c->in_flight_auctions * TOTAL_PROPORTION / AUCTION_PROPORTION;
  int64_t horizon = timestamp_for(c, n + ahead) - ts;
  a->expires = ts + 1 + next_long(r, horizon * 2 > 1 ? horizon * 2 : 1);
}

static void gen_bid(const nx_config *c, uint64_t id, int64_t ts, rng *r,
                    nx_bid *b) {
  memset(b, 0, sizeof(*b));
  if (next_long(r, c->hot_auction_ratio) > 0)
    b->auction = last_auction(id) / HOT_AUCTION_RATIO * HOT_AUCTION_RATIO;
  else
    b->auction = next_auction(c, id, r);
  b->auction += FIRST_AUCTION_ID;
  if (next_long(r, c->hot_bidder_ratio) > 0)
    b->bidder = last_person(id) / HOT_BIDDER_RATIO * HOT_BIDDER_RATIO + 1;
  else
    b->bidder = next_person(c, id, r);
  b->bidder += FIRST_PERSON_ID;
  b->price = next_price(r);
  b->date_time = ts;
  pick(r, b->channel, sizeof(b->channel), channels, NELEM(channels));
}

void nx_generate(const nx_config *c, uint64_t i, nx_event *out) {
  uint64_t n = adjusted(c, i); /* the event number this position carries */
  int64_t ts = timestamp_for(c, n);
  rng r = {c->seed * 0xd1342543de82ef95ULL + n};
  uint64_t rem = n % TOTAL_PROPORTION;
  if (rem < PERSON_PROPORTION) {
    out->type = NX_PERSON;
    gen_person(n, ts, &r, &out->u.person);
  } else if (rem < PERSON_PROPORTION + AUCTION_PROPORTION) {
    out->type = NX_AUCTION;
    gen_auction(c, n, n, ts, &r, &out->u.auction);
  } else {
    out->type = NX_BID;
    gen_bid(c, n, ts, &r, &out->u.bid);
  }
}

size_t nx_event_size(const nx_event *e) {
  size_t body = e->type == NX_PERSON    ? sizeof(nx_person)
                : e->type == NX_AUCTION ? sizeof(nx_auction)
                                        : sizeof(nx_bid);
  return offsetof(nx_event, u) + body;
}

int nx_event_to_json(const nx_event *e, char *buf, size_t n) {
  switch (e->type) {
  case NX_PERSON: {
    const nx_person *p = &e->u.person;
    return snprintf(buf, n,
                    "{\"type\":0,\"person\":{\"id\":%" PRId64
                    ",\"name\":\"%s\",\"emailAddress\":\"%s\","
                    "\"creditCard\":\"%s\",\"city\":\"%s\",\"state\":\"%s\","
                    "\"dateTime\":%" PRId64 "}}",
                    p->id, p->name, p->email, p->credit_card, p->city, p->state,
                    p->date_time);
  }
  case NX_AUCTION: {
    const nx_auction *a = &e->u.auction;
    return snprintf(buf, n,
                    "{\"type\":1,\"auction\":{\"id\":%" PRId64
                    ",\"itemName\":\"%s\",\"initialBid\":%" PRId64
                    ",\"reserve\":%" PRId64 ",\"dateTime\":%" PRId64
                    ",\"expires\":%" PRId64 ",\"seller\":%" PRId64
                    ",\"category\":%" PRId64 "}}",
                    a->id, a->item_name, a->initial_bid, a->reserve,
                    a->date_time, a->expires, a->seller, a->category);
  }
  default: {
    const nx_bid *b = &e->u.bid;
    return snprintf(buf, n,
                    "{\"type\":2,\"bid\":{\"auction\":%" PRId64
                    ",\"bidder\":%" PRId64 ",\"price\":%" PRId64
                    ",\"channel\":\"%s\",\"dateTime\":%" PRId64 "}}",
                    b->auction, b->bidder, b->price, b->channel, b->date_time);
  }
  }
}

static int64_t jint(json_t *o, const char *k) {
  return (int64_t)json_integer_value(json_object_get(o, k));
}

static void jstr(json_t *o, const char *k, char *out, size_t cap) {
  const char *s = json_string_value(json_object_get(o, k));
  snprintf(out, cap, "%s", s ? s : "");
}

int nx_event_from_json(const char *json, size_t len, nx_event *out) {
  json_t *root = json_loadb(json, len, 0, NULL);
  if (!root)
    return -1;
  int rc = 0;
  memset(out, 0, sizeof(*out));
  out->type = jint(root, "type");
  json_t *o;
  if (out->type == NX_PERSON && (o = json_object_get(root, "person"))) {
    nx_person *p = &out->u.person;
    p->id = jint(o, "id");
    p->date_time = jint(o, "dateTime");
    jstr(o, "name", p->name, sizeof(p->name));
    jstr(o, "emailAddress", p->email, sizeof(p->email));
    jstr(o, "creditCard", p->credit_card, sizeof(p->credit_card));
    jstr(o, "city", p->city, sizeof(p->city));
    jstr(o, "state", p->state, sizeof(p->state));
  } else if (out->type == NX_AUCTION &&
             (o = json_object_get(root, "auction"))) {
    nx_auction *a = &out->u.auction;
    a->id = jint(o, "id");
    a->initial_bid = jint(o, "initialBid");
    a->reserve = jint(o, "reserve");
    a->date_time = jint(o, "dateTime");
    a->expires = jint(o, "expires");
    a->seller = jint(o, "seller");
    a->category = jint(o, "category");
    jstr(o, "itemName", a->item_name, sizeof(a->item_name));
  } else if (out->type == NX_BID && (o = json_object_get(root, "bid"))) {
    nx_bid *b = &out->u.bid;
    b->auction = jint(o, "auction");
    b->bidder = jint(o, "bidder");
    b->price = jint(o, "price");
    b->date_time = jint(o, "dateTime");
    jstr(o, "channel", b->channel, sizeof(b->channel));
  } else {
    rc = -1;
  }
  json_decref(root);
  return rc;
}
