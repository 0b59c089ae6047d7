/* SPDX-License-Identifier: Apache-2.0 */
/* sluice.h — the umbrella header: include this one. The module headers
 * under sluice/ are the reference documentation of the public API. The
 * JSON helpers, which expose jansson's json_t, are in sluice/json.h:
 * include it too when a job uses them. */
#ifndef SLUICE_H
#define SLUICE_H

#include "sluice/common.h"
#include "sluice/conf.h"
#include "sluice/time.h"
#include "sluice/job.h"
#include "sluice/state.h"
#include "sluice/query.h"
#include "sluice/process.h"
#include "sluice/broadcast.h"
#include "sluice/window.h"
#include "sluice/harness.h"
#include "sluice/checkpoint.h"
#include "sluice/metrics.h"
#include "sluice/kafka.h"

#define SLUICE_VERSION_MAJOR 0
#define SLUICE_VERSION_MINOR 1
#define SLUICE_VERSION_PATCH 0

#endif
