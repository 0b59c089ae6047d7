/* SPDX-License-Identifier: Apache-2.0 */
/* The fraud rules (see rules.h): a windowed count, a per-card amount
 * profile and a distance/speed check between consecutive transactions. */
#include "rules.h"

#include <math.h>

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
  return acc->count >= FRAUD_VELOCITY_MIN;
}

bool fraud_spike_check(fraud_profile *p, double amount, double *ratio) {
  *ratio = p->mean > 0 ? amount / p->mean : 0;
  if (p->n >= FRAUD_SPIKE_MIN_HISTORY && amount >= FRAUD_SPIKE_MIN_AMOUNT &&
      *ratio > FRAUD_SPIKE_FACTOR)
    return true;
  p->n++;
  p->mean += (amount - p->mean) / (double)p->n;
  return false;
}

double fraud_distance_km(double lat1, double lon1, double lat2, double lon2) {
  const double r = 6371.0, rad = M_PI / 180.0;
  double dlat = (lat2 - lat1) * rad, dlon = (lon2 - lon1) * rad;
  double h = sin(dlat / 2) * sin(dlat / 2) +
             cos(lat1 * rad) * cos(lat2 * rad) * sin(dlon / 2) * sin(dlon / 2);
  return 2 * r * asin(sqrt(h < 1 ? h : 1));
}

bool fraud_travel_check(const fraud_txn *a, const fraud_txn *b, double *km,
                        double *kmh) {
  *km = fraud_distance_km(a->lat, a->lon, b->lat, b->lon);
  int64_t dt = a->ts > b->ts ? a->ts - b->ts : b->ts - a->ts;
  /* Equal times: any distance is infinitely fast; report a big finite
   * number so the evidence stays valid JSON. */
  *kmh = dt > 0 ? *km / ((double)dt / 3600000.0) : 1e9;
  return *km >= FRAUD_TRAVEL_MIN_KM && *kmh > FRAUD_TRAVEL_MAX_KMH;
}
