/* SPDX-License-Identifier: Apache-2.0 */
/* Broadcast state in a checkpoint (section SL__SEC_BCAST of format.h):
 * writing one broadcast process instance's states, and loading them back
 * into an instance. */
#ifndef SL_CHECKPOINT_BCAST_H
#define SL_CHECKPOINT_BCAST_H

#include "checkpoint/format.h"
#include "state/state.h"

/* Appends the section of the broadcast states bs of operator uid to a
 * snapshot file being written. SL_OK or SL_ERR_NOMEM. */
int sl__snap_put_bcast(sl_buf_t *b, const char *uid, const sl__bstates *bs);

/* Replaces the content of bs with that of one SL__SEC_BCAST payload (the
 * uid already read from p): states not in it end up empty, states only in
 * it are created. SL_OK, SL_ERR_CORRUPT, SL_ERR_NOMEM. */
int sl__snap_load_bcast(sl__rd p, sl__bstates *bs);

#endif
