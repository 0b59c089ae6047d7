/* SPDX-License-Identifier: Apache-2.0 */
/* One-line log messages, filtered by the job's log.level: what an operator
 * reads at 3 a.m. (the checkpoint a job restored from, checkpoints
 * completed or skipped, why it stopped). They go to the configuration's
 * log callback (sl_conf_set_log_cb) or to stderr. */
#ifndef SL_CORE_LOG_H
#define SL_CORE_LOG_H

#include "sluice/conf.h"

/* Same order as the values of log.level. */
enum {
  SL__LOG_ERROR = SL_LOG_ERROR,
  SL__LOG_WARN = SL_LOG_WARN,
  SL__LOG_INFO = SL_LOG_INFO,
  SL__LOG_DEBUG = SL_LOG_DEBUG
};

/* Sends message to conf's log callback as (level, component, message), or
 * writes "sluice[<job>] <level>: <message>" to stderr, when level is
 * enabled by conf's log.level (conf may be NULL: info, stderr). */
void sl__log(const sl_conf_t *conf, const char *job, int level,
             const char *component, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
