/* SPDX-License-Identifier: Apache-2.0 */
/* The keyed context of one keyed operator instance: the current key (and
 * its hash and key group, computed once by the exchange), the current
 * namespace, the keyed state and the timer service. The public state and
 * timer functions find it from an sl_ctx_t through sl_op_keyed(). */
#ifndef SL_STATE_KEYED_H
#define SL_STATE_KEYED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

struct sl__kstate; /* lib/state: registered states + backend */
struct sl__timers; /* lib/time/timers.h */
struct sl__taskwm; /* lib/time/taskwm.h */

typedef struct sl__keyed {
  sl_ctx_t *op;
  /* Current key: set before each record or timer callback. key, key_len,
   * ts, hash and kg lie as in a keyed batch's record (sl_keyed_rec_t:
   * key and length, then timestamp, hash and key group), so that making
   * a record's key current is three 16-byte copies (runtime/keyed.h). */
  const void *key;
  size_t key_len;
  /* Timestamp of the element being processed (record ts, or the timer's
   * timestamp in on_timer): sl_ctx_timestamp(). */
  int64_t ts;
  uint64_t hash;
  uint32_t kg;
  /* Current namespace: empty for process functions, the window for
   * window operators. */
  const void *ns;
  size_t ns_len;
  /* The operator's input watermark (set with sl_op_set_keyed; NULL when
   * there is none, as for a bare state in tests): expiry of other keys'
   * entries never runs ahead of it (kstate_int.h, sl__ttl_access). */
  const int64_t *wm;
  struct sl__kstate *state;
  struct sl__timers *timers;
  /* Group mode's keyed stage only (else NULL): per-task watermarks, set
   * by the runtime when the operator attaches this context; and the
   * operator's event-time timer callback, noted at its first
   * sl__keyed_fire(), which a lagging task's records fire timers with. */
  struct sl__taskwm *tw;
  int (*tw_fire)(struct sl__keyed *k, sl_time_domain domain, int64_t ts);
  /* Set by an operator whose timer callback reads the timer key's state
   * (else NULL): called by sl__keyed_fire with the key hashes and key
   * groups of timers about to fire (laid out as for a backend's
   * prefetch), so that their state loads while the timers before them
   * are handled, as the records' state does in sl__keyed_batch. */
  void (*timer_prefetch)(struct sl__keyed *k, const uint64_t *hash,
                         const uint32_t *kg, size_t stride, size_t n);
  /* Set while processing-time timers fire (sl__keyed_fire): see
   * sl__keyed_event_now. */
  bool in_proc_timer;
} sl__keyed;

/* The clock of event-time TTL for the current key's own entries: the
 * element's timestamp (a record's, an event-time timer's), and in a
 * processing-time timer, which has no event time of its own, the
 * watermark. Derived rather than stored, so that nothing more is stored
 * per record. */
static inline int64_t sl__keyed_event_now(const sl__keyed *k) {
  return k->in_proc_timer && k->wm ? *k->wm : k->ts;
}

#endif
