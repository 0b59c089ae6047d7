/* SPDX-License-Identifier: Apache-2.0 */
/* The scoring example's events and per-user features: what one user did
 * over three sliding horizons (1 min, 10 min, 1 h, kept as panes), in its
 * current session and since the previous event. The job and the evaluator
 * both fold a user's events through sc_user_add(), in event-time order,
 * so the evaluator's reference features are the job's to the bit. */
#ifndef SC_FEATURES_H
#define SC_FEATURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { SC_VIEW, SC_PURCHASE, SC_LOGIN, SC_KINDS };
#define SC_PAGES 64
#define SC_SESSION_GAP_MS (30 * 60 * 1000)

typedef struct sc_event {
  char id[24];
  char user[16];
  int64_t ts;
  int32_t kind; /* SC_VIEW .. SC_LOGIN */
  int32_t page; /* 0 .. SC_PAGES - 1 */
  double amount;
  int64_t in_ms; /* wall time the job parsed it (latency), not a feature */
} sc_event;

/* One pane of a horizon: the events whose ts falls in it. */
typedef struct sc_pane {
  int64_t idx; /* ts / pane width; -1 = empty */
  uint32_t n, purchases, logins, pad_;
  double amount;
  uint64_t pages; /* bit per page */
} sc_pane;

#define SC_HORIZONS 3
#define SC_MAX_PANES 12

/* A user's state: a value state of the job, plain bytes. */
typedef struct sc_user {
  int64_t last_ts; /* previous event; 0 = none */
  int64_t sess_start;
  int64_t n_events, n_sessions, sess_events;
  sc_pane panes[SC_HORIZONS][SC_MAX_PANES];
} sc_user;

enum {
  SC_F_N_1M,
  SC_F_N_10M,
  SC_F_N_1H,
  SC_F_PURCHASES_1H,
  SC_F_AMOUNT_1H,
  SC_F_LOGINS_10M,
  SC_F_DISTINCT_PAGES_10M,
  SC_F_GAP_S,
  SC_F_SESSION_EVENTS,
  SC_F_SESSION_MIN,
  SC_F_SESSIONS,
  SC_N_FEATURES
};

/* The feature's name, as models and the feature store name it. */
const char *sc_feature_name(int f);
/* Index of a feature name, or -1. */
int sc_feature_index(const char *name);

void sc_user_init(sc_user *u);
/* Folds e into u (events of a user in increasing (ts, id) order) and sets
 * f[SC_N_FEATURES] to the features as of e, e included. */
void sc_user_add(sc_user *u, const sc_event *e, double *f);

/* The features as JSON ({"ts":..,"n_1m":..,...}) into buf; the length
 * written (snprintf's). */
int sc_features_json(const double *f, int64_t ts, char *buf, size_t cap);

/* Event kinds by name ("view", "purchase", "login"); -1 when unknown. */
int sc_kind_of(const char *name);
const char *sc_kind_name(int kind);

/* Parses an event's JSON text into *e (in_ms 0); false when it is not a
 * valid event. */
bool sc_event_parse(const char *json, size_t len, sc_event *e);

#endif
