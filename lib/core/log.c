/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: one formatted line per call, handed to the configuration's log
 * callback or written to stderr with a single fputs, so lines from
 * different threads do not interleave. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>

#include "core/conf.h"

void sl__log(const sl_conf_t *conf, const char *job, int level,
             const char *component, const char *fmt, ...) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  int max = conf ? sl__conf_enum(conf, "log.level") : SL__LOG_INFO;
  if (level > max || level < 0 || level > SL__LOG_DEBUG)
    return;
  char msg[1536];
  void *opaque = NULL;
  sl_log_fn fn = conf ? sl__conf_log_cb(conf, &opaque) : NULL;
  int n = fn ? 0
             : snprintf(msg, sizeof(msg), "sluice[%s] %s: ", job ? job : "",
                        names[level]);
  va_list ap;
  va_start(ap, fmt);
  if (n >= 0 && (size_t)n < sizeof(msg))
    vsnprintf(msg + n, sizeof(msg) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (fn) {
    fn((sl_log_level)level, component ? component : "", msg, opaque);
    return;
  }
  size_t len = 0;
  while (len < sizeof(msg) - 2 && msg[len])
    len++;
  msg[len] = '\n';
  msg[len + 1] = 0;
  fputs(msg, stderr);
}
