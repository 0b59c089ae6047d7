/* SPDX-License-Identifier: Apache-2.0 */
/* One-line log messages on stderr, filtered by the job's log.level: what
 * an operator reads at 3 a.m. (checkpoints skipped on restore, ...). */
#ifndef SL_CORE_LOG_H
#define SL_CORE_LOG_H

#include "sluice/conf.h"

/* Same order as the values of log.level. */
enum { SL__LOG_ERROR = 0, SL__LOG_WARN, SL__LOG_INFO, SL__LOG_DEBUG };

/* Writes "sluice[<job>] <level>: <message>" when level is enabled by
 * conf's log.level (conf may be NULL: info). */
void sl__log(const sl_conf_t *conf, const char *job, int level, const char *fmt,
             ...) __attribute__((format(printf, 4, 5)));

#endif
