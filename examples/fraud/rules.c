/* SPDX-License-Identifier: Apache-2.0 */
/* The fraud rules (see rules.h): a pair of transactions within a minute, a
 * windowed count and total, and a distance/speed check between consecutive
 * transactions. */
#include "rules.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

void fraud_params_default(fraud_params *p) {
  p->small_below = FRAUD_SMALL_BELOW;
  p->large_above = FRAUD_LARGE_ABOVE;
  p->velocity_txns = FRAUD_VELOCITY_MAX_TXNS;
  p->velocity_total = FRAUD_VELOCITY_MAX_TOTAL;
  p->travel_kmh = FRAUD_TRAVEL_MAX_KMH;
  p->travel_km = FRAUD_TRAVEL_MIN_KM;
}

int fraud_params_set(fraud_params *p, const char *name, double v) {
  static const struct {
    const char *name;
    size_t off;
  } names[] = {
      {"small_amount", offsetof(fraud_params, small_below)},
      {"large_amount", offsetof(fraud_params, large_above)},
      {"velocity_txns", offsetof(fraud_params, velocity_txns)},
      {"velocity_total", offsetof(fraud_params, velocity_total)},
      {"travel_kmh", offsetof(fraud_params, travel_kmh)},
      {"travel_km", offsetof(fraud_params, travel_km)},
  };
  if (!isfinite(v) || v < 0)
    return -1;
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (!strcmp(names[i].name, name)) {
      *(double *)((char *)p + names[i].off) = v;
      return 0;
    }
  return -1;
}

void fraud_params_at(const fraud_rule_version *versions, size_t n, int64_t ts,
                     fraud_params *out) {
  fraud_params_default(out);
  for (size_t i = 0; i < n && versions[i].ts <= ts; i++)
    fraud_params_set(out, versions[i].name, versions[i].threshold);
}

bool fraud_is_small(double amount) {
  return amount < FRAUD_SMALL_BELOW;
}

bool fraud_is_large(double amount) {
  return amount > FRAUD_LARGE_ABOVE;
}

bool fraud_small_then_large_p(const fraud_params *p, const fraud_txn *small,
                              const fraud_txn *large) {
  return small->amount < p->small_below && large->amount > p->large_above &&
         small->ts <= large->ts &&
         large->ts - small->ts <= FRAUD_SMALL_LARGE_WITHIN_MS;
}

bool fraud_small_then_large(const fraud_txn *small, const fraud_txn *large) {
  fraud_params p;
  fraud_params_default(&p);
  return fraud_small_then_large_p(&p, small, large);
}

void fraud_velocity_init(fraud_velocity_acc *acc) {
  acc->count = 0;
  acc->total = 0;
  acc->first = INT64_MAX;
  acc->last = INT64_MIN;
}

void fraud_velocity_add(fraud_velocity_acc *acc, const fraud_txn *t) {
  acc->count++;
  acc->total += t->amount;
  if (t->ts < acc->first)
    acc->first = t->ts;
  if (t->ts > acc->last)
    acc->last = t->ts;
}

void fraud_velocity_merge(fraud_velocity_acc *acc,
                          const fraud_velocity_acc *other) {
  acc->count += other->count;
  acc->total += other->total;
  if (other->first < acc->first)
    acc->first = other->first;
  if (other->last > acc->last)
    acc->last = other->last;
}

bool fraud_velocity_hit_p(const fraud_params *p,
                          const fraud_velocity_acc *acc) {
  return (double)acc->count > p->velocity_txns ||
         acc->total > p->velocity_total;
}

bool fraud_velocity_hit(const fraud_velocity_acc *acc) {
  fraud_params p;
  fraud_params_default(&p);
  return fraud_velocity_hit_p(&p, acc);
}

static const fraud_country countries[] = {
    {"GB", "London", 51.51, -0.13},       {"FR", "Paris", 48.86, 2.35},
    {"DE", "Berlin", 52.52, 13.40},       {"ES", "Madrid", 40.42, -3.70},
    {"IT", "Rome", 41.90, 12.50},         {"NL", "Amsterdam", 52.37, 4.90},
    {"US", "Washington", 38.91, -77.04},  {"CA", "Ottawa", 45.42, -75.70},
    {"MX", "Mexico City", 19.43, -99.13}, {"BR", "Brasilia", -15.79, -47.88},
    {"JP", "Tokyo", 35.68, 139.69},       {"SG", "Singapore", 1.35, 103.82},
    {"AU", "Canberra", -35.28, 149.13},   {"IN", "New Delhi", 28.61, 77.21},
    {"NG", "Abuja", 9.08, 7.40},          {"ZA", "Pretoria", -25.75, 28.19},
};

const fraud_country *fraud_country_at(int i) {
  return i >= 0 && i < (int)(sizeof(countries) / sizeof(countries[0]))
             ? &countries[i]
             : NULL;
}

const fraud_country *fraud_country_find(const char *code) {
  for (int i = 0; fraud_country_at(i); i++)
    if (!strcmp(countries[i].code, code))
      return &countries[i];
  return NULL;
}

double fraud_distance_km(double lat1, double lon1, double lat2, double lon2) {
  const double r = 6371.0, rad = M_PI / 180.0;
  double dlat = (lat2 - lat1) * rad, dlon = (lon2 - lon1) * rad;
  double h = sin(dlat / 2) * sin(dlat / 2) +
             cos(lat1 * rad) * cos(lat2 * rad) * sin(dlon / 2) * sin(dlon / 2);
  return 2 * r * asin(sqrt(h < 1 ? h : 1));
}

double fraud_country_km(const char *a, const char *b) {
  const fraud_country *x = fraud_country_find(a), *y = fraud_country_find(b);
  return x && y ? fraud_distance_km(x->lat, x->lon, y->lat, y->lon) : -1;
}

bool fraud_travel_check(const fraud_txn *a, const fraud_txn *b, double *km,
                        double *kmh) {
  fraud_params p;
  fraud_params_default(&p);
  return fraud_travel_check_p(&p, a, b, km, kmh);
}

bool fraud_travel_check_p(const fraud_params *p, const fraud_txn *a,
                          const fraud_txn *b, double *km, double *kmh) {
  *km = fraud_country_km(a->country, b->country);
  int64_t dt = a->ts > b->ts ? a->ts - b->ts : b->ts - a->ts;
  /* Equal times: any distance is infinitely fast; report a big finite
   * number so the evidence stays valid JSON. */
  *kmh = dt > 0 ? *km / ((double)dt / 3600000.0) : 1e9;
  return *km >= p->travel_km && *kmh > p->travel_kmh;
}

bool fraud_incident_opens(bool has_prev, int64_t prev_end, int64_t end,
                          int64_t suppress_ms) {
  return suppress_ms <= 0 || !has_prev || end - prev_end > suppress_ms;
}
