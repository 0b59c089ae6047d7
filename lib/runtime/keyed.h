/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers for keyed operators: make a record's key current, and fire due
 * timers with each timer's key made current. */
#ifndef SL_RUNTIME_KEYED_H
#define SL_RUNTIME_KEYED_H

#include "operator.h"
#include "sluice/process.h"
#include "state/keyed.h"

/* Sets k's current key from a record delivered by key_by (bytes from the
 * record, hash and key group from the exchange), an empty namespace and
 * the record's timestamp. */
void sl__keyed_set_key(sl__keyed *k, const sl_record_t *rec);

typedef int (*sl__keyed_timer_fn)(sl__keyed *k, sl_time_domain domain,
                                  int64_t ts);

/* Pops every timer of domain with ts <= upto in timestamp order (including
 * timers registered meanwhile), makes its key, namespace and timestamp
 * current in k, and calls fn. Stops at fn's first non-zero return. */
int sl__keyed_fire(sl__keyed *k, sl_time_domain domain, int64_t upto,
                   sl__keyed_timer_fn fn);

#endif
