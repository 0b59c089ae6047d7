/* SPDX-License-Identifier: Apache-2.0 */
/* Per-user features (userfeatures.h): each horizon is a ring of panes, like a
 * sliding window's; a pane is reused once it has slid out of its horizon,
 * which is why events must come in event-time order. */
#include "userfeatures.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const char *const names[SC_N_FEATURES] = {"n_1m",
                                                 "n_10m",
                                                 "n_1h",
                                                 "purchases_1h",
                                                 "amount_1h",
                                                 "logins_10m",
                                                 "distinct_pages_10m",
                                                 "gap_s",
                                                 "session_events",
                                                 "session_min",
                                                 "sessions"};

/* Horizon h: panes[h] panes of width[h] ms. */
static const int64_t width[SC_HORIZONS] = {10000, 60000, 300000};
static const int n_panes[SC_HORIZONS] = {6, 10, 12};

static const char *const kinds[SC_KINDS] = {"view", "purchase", "login"};

const char *sc_feature_name(int f) {
  return f >= 0 && f < SC_N_FEATURES ? names[f] : NULL;
}

int sc_feature_index(const char *name) {
  for (int f = 0; f < SC_N_FEATURES; f++)
    if (!strcmp(names[f], name))
      return f;
  return -1;
}

int sc_kind_of(const char *name) {
  for (int k = 0; k < SC_KINDS; k++)
    if (!strcmp(kinds[k], name))
      return k;
  return -1;
}

const char *sc_kind_name(int kind) {
  return kind >= 0 && kind < SC_KINDS ? kinds[kind] : "?";
}

void sc_user_init(sc_user *u) {
  memset(u, 0, sizeof(*u));
  for (int h = 0; h < SC_HORIZONS; h++)
    for (int p = 0; p < SC_MAX_PANES; p++)
      u->panes[h][p].idx = -1;
}

typedef struct sums {
  double n, purchases, logins, amount;
  uint64_t pages;
} sums;

/* The horizon's totals over the panes still inside it at ts. */
static sums horizon(const sc_user *u, int h, int64_t ts) {
  sums s = {0};
  int64_t cur = ts / width[h];
  for (int p = 0; p < n_panes[h]; p++) {
    const sc_pane *pn = &u->panes[h][p];
    if (pn->idx < 0 || pn->idx <= cur - n_panes[h] || pn->idx > cur)
      continue;
    s.n += pn->n;
    s.purchases += pn->purchases;
    s.logins += pn->logins;
    s.amount += pn->amount;
    s.pages |= pn->pages;
  }
  return s;
}

void sc_user_add(sc_user *u, const sc_event *e, double *f) {
  double gap_s = 3600.0;
  if (u->n_events > 0) {
    gap_s = (double)(e->ts - u->last_ts) / 1000.0;
    if (gap_s > 3600.0)
      gap_s = 3600.0;
  }
  if (u->n_events == 0 || e->ts - u->last_ts > SC_SESSION_GAP_MS) {
    u->sess_start = e->ts;
    u->sess_events = 0;
    u->n_sessions++;
  }
  u->sess_events++;
  u->n_events++;
  u->last_ts = e->ts;
  for (int h = 0; h < SC_HORIZONS; h++) {
    int64_t idx = e->ts / width[h];
    sc_pane *pn = &u->panes[h][idx % n_panes[h]];
    if (pn->idx != idx) {
      memset(pn, 0, sizeof(*pn));
      pn->idx = idx;
    }
    pn->n++;
    pn->purchases += e->kind == SC_PURCHASE;
    pn->logins += e->kind == SC_LOGIN;
    if (e->kind == SC_PURCHASE)
      pn->amount += e->amount;
    pn->pages |= 1ULL << (e->page & (SC_PAGES - 1));
  }
  sums m1 = horizon(u, 0, e->ts), m10 = horizon(u, 1, e->ts),
       h1 = horizon(u, 2, e->ts);
  f[SC_F_N_1M] = m1.n;
  f[SC_F_N_10M] = m10.n;
  f[SC_F_N_1H] = h1.n;
  f[SC_F_PURCHASES_1H] = h1.purchases;
  f[SC_F_AMOUNT_1H] = h1.amount;
  f[SC_F_LOGINS_10M] = m10.logins;
  f[SC_F_DISTINCT_PAGES_10M] = __builtin_popcountll(m10.pages);
  f[SC_F_GAP_S] = gap_s;
  f[SC_F_SESSION_EVENTS] = (double)u->sess_events;
  f[SC_F_SESSION_MIN] = (double)(e->ts - u->sess_start) / 60000.0;
  f[SC_F_SESSIONS] = (double)u->n_sessions;
}

int sc_features_json(const double *f, int64_t ts, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "{\"ts\":%lld", (long long)ts);
  /* Most features are counts: integers print in a fraction of a double's
   * time, and this runs for every event. */
  for (int i = 0; i < SC_N_FEATURES && n > 0 && (size_t)n < cap; i++)
    n += f[i] == (double)(long long)f[i]
             ? snprintf(buf + n, cap - (size_t)n, ",\"%s\":%lld", names[i],
                        (long long)f[i])
             : snprintf(buf + n, cap - (size_t)n, ",\"%s\":%.10g", names[i],
                        f[i]);
  if (n > 0 && (size_t)n < cap)
    n += snprintf(buf + n, cap - (size_t)n, "}");
  return n;
}

bool sc_event_parse(const char *json, size_t len, sc_event *e) {
  json_t *j = json_loadb(json, len, 0, NULL);
  bool ok = false;
  memset(e, 0, sizeof(*e));
  const char *type = json_string_value(json_object_get(j, "type"));
  const char *id = json_string_value(json_object_get(j, "id"));
  const char *user = json_string_value(json_object_get(j, "user"));
  const char *kind = json_string_value(json_object_get(j, "kind"));
  json_t *page = json_object_get(j, "page"),
         *amount = json_object_get(j, "amount"), *ts = json_object_get(j, "ts");
  if (type && !strcmp(type, "event") && id && user && kind &&
      strlen(id) < sizeof(e->id) && strlen(user) < sizeof(e->user) &&
      json_is_integer(page) && json_is_number(amount) && json_is_integer(ts) &&
      (e->kind = sc_kind_of(kind)) >= 0 && json_integer_value(page) >= 0 &&
      json_integer_value(page) < SC_PAGES) {
    strcpy(e->id, id);
    strcpy(e->user, user);
    e->page = (int32_t)json_integer_value(page);
    e->amount = json_number_value(amount);
    e->ts = json_integer_value(ts);
    ok = true;
  }
  json_decref(j);
  return ok;
}
