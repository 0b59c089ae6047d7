/* SPDX-License-Identifier: Apache-2.0 */
/* The fraud rules (see rules.h): a pair of transactions within a minute, a
 * windowed count and total, and a distance/speed check between consecutive
 * transactions. */
#include "rules.h"

#include <math.h>
#include <string.h>

bool fraud_is_small(double amount) {
  return amount < FRAUD_SMALL_BELOW;
}

bool fraud_is_large(double amount) {
  return amount > FRAUD_LARGE_ABOVE;
}

bool fraud_small_then_large(const fraud_txn *small, const fraud_txn *large) {
  return fraud_is_small(small->amount) && fraud_is_large(large->amount) &&
         small->ts <= large->ts &&
         large->ts - small->ts <= FRAUD_SMALL_LARGE_WITHIN_MS;
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

bool fraud_velocity_hit(const fraud_velocity_acc *acc) {
  return acc->count > FRAUD_VELOCITY_MAX_TXNS ||
         acc->total > FRAUD_VELOCITY_MAX_TOTAL;
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
  *km = fraud_country_km(a->country, b->country);
  int64_t dt = a->ts > b->ts ? a->ts - b->ts : b->ts - a->ts;
  /* Equal times: any distance is infinitely fast; report a big finite
   * number so the evidence stays valid JSON. */
  *kmh = dt > 0 ? *km / ((double)dt / 3600000.0) : 1e9;
  return *km >= FRAUD_TRAVEL_MIN_KM && *kmh > FRAUD_TRAVEL_MAX_KMH;
}
