/* SPDX-License-Identifier: Apache-2.0 */
/* The fraud job's three rules as plain functions over plain structs, so
 * the unit tests check them without Kafka or a running job. The job calls
 * them from its window and process functions; docs/examples.md explains
 * the thresholds against the generator's model. */
#ifndef FRAUD_RULES_H
#define FRAUD_RULES_H

#include <stdbool.h>
#include <stdint.h>

/* A card transaction as the job carries it between operators: fixed size,
 * so records need no parsing after the first map. */
typedef struct fraud_txn {
  int64_t ts;
  double amount;
  double lat, lon;
  char id[24];
  char card[24];
} fraud_txn;

/* velocity: at least VELOCITY_MIN transactions of one card in a sliding
 * 60 s window (slide 10 s, so any burst shorter than 50 s lies whole in
 * one window). */
#define FRAUD_VELOCITY_SIZE_MS 60000
#define FRAUD_VELOCITY_SLIDE_MS 10000
#define FRAUD_VELOCITY_MIN 8

typedef struct fraud_velocity_acc {
  int64_t count;
  double total;
  int64_t first, last; /* event times of the earliest and latest txn */
} fraud_velocity_acc;

void fraud_velocity_init(fraud_velocity_acc *acc);
void fraud_velocity_add(fraud_velocity_acc *acc, const fraud_txn *t);
void fraud_velocity_merge(fraud_velocity_acc *acc,
                          const fraud_velocity_acc *other);
bool fraud_velocity_hit(const fraud_velocity_acc *acc);

/* amount_spike: an amount over SPIKE_FACTOR times the card's mean of
 * earlier (unflagged) amounts and over SPIKE_MIN_AMOUNT, once the card has
 * SPIKE_MIN_HISTORY earlier transactions. Flagged amounts stay out of the
 * mean, so one fraud does not hide the next. */
#define FRAUD_SPIKE_FACTOR 10.0
#define FRAUD_SPIKE_MIN_AMOUNT 500.0
#define FRAUD_SPIKE_MIN_HISTORY 10

typedef struct fraud_profile {
  int64_t n;
  double mean;
} fraud_profile;

/* Checks amount against the profile and, when it is not a spike, adds it
 * to the profile. Returns true for a spike and sets *ratio (amount/mean). */
bool fraud_spike_check(fraud_profile *p, double amount, double *ratio);

/* impossible_travel: two transactions of one card whose distance needs
 * more than TRAVEL_MAX_KMH, and at least TRAVEL_MIN_KM apart (a city's
 * own spread never counts, however close in time). */
#define FRAUD_TRAVEL_MAX_KMH 900.0
#define FRAUD_TRAVEL_MIN_KM 500.0

double fraud_distance_km(double lat1, double lon1, double lat2, double lon2);
/* True when going from a to b (in either time order) is impossible; sets
 * *km and *kmh (kmh is a large number when the times are equal). */
bool fraud_travel_check(const fraud_txn *a, const fraud_txn *b, double *km,
                        double *kmh);

#endif
