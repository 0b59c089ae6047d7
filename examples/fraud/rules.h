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
 * so records need no parsing after the first operator. */
typedef struct fraud_txn {
  int64_t ts;
  double amount;
  char id[24];
  char account[24];
  char merchant[16];
  char country[4]; /* ISO 3166-1 alpha-2 */
} fraud_txn;

/* small_then_large: a transaction under SMALL_BELOW followed, on the same
 * account within SMALL_LARGE_WITHIN_MS of event time, by one over
 * LARGE_ABOVE (a stolen card tested with a tiny payment, then used). */
#define FRAUD_SMALL_BELOW 1.00
#define FRAUD_LARGE_ABOVE 500.00
#define FRAUD_SMALL_LARGE_WITHIN_MS 60000

bool fraud_is_small(double amount);
bool fraud_is_large(double amount);
/* True when large follows small (by event time, inclusive) within the
 * limit; the two may have arrived in either order. */
bool fraud_small_then_large(const fraud_txn *small, const fraud_txn *large);

/* velocity: more than VELOCITY_MAX_TXNS transactions, or more than
 * VELOCITY_MAX_TOTAL in total, on one account in a sliding 10-minute window
 * (slide 2 minutes: any burst of up to 8 minutes lies whole in a window). */
#define FRAUD_VELOCITY_SIZE_MS 600000
#define FRAUD_VELOCITY_SLIDE_MS 120000
#define FRAUD_VELOCITY_MAX_TXNS 10
#define FRAUD_VELOCITY_MAX_TOTAL 3000.0

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

/* impossible_travel: two transactions of one account in countries at
 * least TRAVEL_MIN_KM apart (between their capitals) that would need more
 * than TRAVEL_MAX_KMH. */
#define FRAUD_TRAVEL_MAX_KMH 900.0
#define FRAUD_TRAVEL_MIN_KM 500.0

typedef struct fraud_country {
  const char *code;
  const char *capital;
  double lat, lon;
} fraud_country;

/* The countries the rule knows (the generator draws from the same table);
 * NULL past the end. */
const fraud_country *fraud_country_at(int i);
const fraud_country *fraud_country_find(const char *code);
double fraud_distance_km(double lat1, double lon1, double lat2, double lon2);
/* Distance between two countries' capitals; -1 when one is unknown. */
double fraud_country_km(const char *a, const char *b);
/* True when going from a to b (in either time order) is impossible; sets
 * *km and *kmh (kmh is a large number when the times are equal). Unknown
 * countries never match. */
bool fraud_travel_check(const fraud_txn *a, const fraud_txn *b, double *km,
                        double *kmh);

#endif
