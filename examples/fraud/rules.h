/* SPDX-License-Identifier: Apache-2.0 */
/* The fraud job's three rules as plain functions over plain structs, so
 * the unit tests check them without Kafka or a running job. The job calls
 * them from its window and process functions; docs/examples.md explains
 * the thresholds against the generator's model. */
#ifndef FRAUD_RULES_H
#define FRAUD_RULES_H

#include <stdbool.h>
#include <stddef.h>
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

/* ---- Thresholds that change at run time ---------------------------------
 * The job reads rule records {"rule":"<name>","threshold":X,"ts":T} from a
 * rules topic; each sets one threshold from event time T on. The names
 * and their defaults (the constants above): */
typedef struct fraud_params {
  double small_below;    /* "small_amount"   FRAUD_SMALL_BELOW */
  double large_above;    /* "large_amount"   FRAUD_LARGE_ABOVE */
  double velocity_txns;  /* "velocity_txns"  FRAUD_VELOCITY_MAX_TXNS */
  double velocity_total; /* "velocity_total" FRAUD_VELOCITY_MAX_TOTAL */
  double travel_kmh;     /* "travel_kmh"     FRAUD_TRAVEL_MAX_KMH */
  double travel_km;      /* "travel_km"      FRAUD_TRAVEL_MIN_KM */
} fraud_params;

/* The longest rule name, with its terminating NUL. */
#define FRAUD_RULE_NAME_MAX 16

void fraud_params_default(fraud_params *p);
/* Sets the threshold named `name` to v: 0, or -1 for an unknown name or a
 * value that is negative or not finite. */
int fraud_params_set(fraud_params *p, const char *name, double v);

/* One rule record. */
typedef struct fraud_rule_version {
  int64_t ts;
  char name[FRAUD_RULE_NAME_MAX];
  double threshold;
} fraud_rule_version;

/* The thresholds in force at event time ts: the defaults, then every
 * version with v->ts <= ts applied in order of ts (versions[] sorted by
 * ts; equal times in array order). */
void fraud_params_at(const fraud_rule_version *versions, size_t n, int64_t ts,
                     fraud_params *out);

/* The rules with explicit thresholds; the functions above use the
 * defaults. */
bool fraud_small_then_large_p(const fraud_params *p, const fraud_txn *small,
                              const fraud_txn *large);
bool fraud_velocity_hit_p(const fraud_params *p, const fraud_velocity_acc *acc);
bool fraud_travel_check_p(const fraud_params *p, const fraud_txn *a,
                          const fraud_txn *b, double *km, double *kmh);

/* ---- Incidents ------------------------------------------------------------
 * A burst trips a rule several times (each sliding window over it, the
 * payment that goes abroad and the one back). The job groups the alerts
 * of one account and rule into incidents: an alert whose end is at most
 * the suppression interval after the end of the previous alert of the
 * same account and rule belongs to that alert's incident and is not
 * written; any other alert opens an incident and is written. Alerts are
 * taken in order of their end (event time). */
#define FRAUD_SUPPRESS_MS (30LL * 60 * 1000)

/* Whether an alert ending at `end` opens an incident, given the end of the
 * previous alert of its account and rule (has_prev false: none). */
bool fraud_incident_opens(bool has_prev, int64_t prev_end, int64_t end,
                          int64_t suppress_ms);

#endif
