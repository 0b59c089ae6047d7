/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/conf.h — job configuration: string keys and values, validated
 * against a table of known keys when set, loadable from a file. Keys that
 * start with "kafka." are not validated here; they pass to librdkafka. */
#ifndef SLUICE_CONF_H
#define SLUICE_CONF_H

#include "sluice/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_conf sl_conf_t;

/* A new, empty configuration (every key at its default). Returns NULL only
 * when out of memory. The caller owns it until it is passed to a function
 * that consumes it (sl_job_new() on success). */
SL_API sl_conf_t *sl_conf_new(void);

/* Frees conf. NULL is a no-op. */
SL_API void sl_conf_destroy(sl_conf_t *conf);

/* A deep copy of conf, or NULL when out of memory (or conf is NULL). The
 * copy and the original are independent from then on (the copy has the
 * same log callback). */
SL_API sl_conf_t *sl_conf_dup(const sl_conf_t *conf);

/* Log levels, in the order of the values of log.level. */
typedef enum sl_log_level {
  SL_LOG_ERROR = 0,
  SL_LOG_WARN,
  SL_LOG_INFO,
  SL_LOG_DEBUG,
} sl_log_level;

/* Receives one log line of the job: its level, the component that wrote it
 * ("job", "checkpoint", ...) and the message (one line, no newline, no
 * prefix). Lines above log.level are not sent. Called on the thread that
 * logs (the job's supervisor, a worker...), so it must be thread-safe; it
 * must not call back into the job. Valid during the call only. */
typedef void (*sl_log_fn)(sl_log_level level, const char *component,
                          const char *message, void *opaque);

/* Sends the log lines of jobs made with conf to fn instead of stderr (the
 * default, as "sluice[<job>] <level>: <message>"); fn NULL restores
 * stderr. Set it before sl_job_new(). NULL conf is a no-op. */
SL_API void sl_conf_set_log_cb(sl_conf_t *conf, sl_log_fn fn, void *opaque);

/* Sets key to value after validating both: the key must be known (or start
 * with "kafka."), the value must parse as the key's type and lie in its
 * range. Leading and trailing blanks of value are ignored. Integers accept
 * the suffixes documented in docs/configuration.md (none for plain counts).
 * A NULL value resets the key to its default (a "kafka." key: unsets it).
 * Values of "kafka." keys are stored unchecked (even empty ones); librdkafka
 * checks them when the job creates its clients.
 * Returns SL_OK, or SL_ERR_CONF with a message naming the key and the bad
 * value in err, e.g. `parallelism: "abc" is not an integer (allowed:
 * 1..1024)`; SL_ERR_INVAL when conf or key is NULL; SL_ERR_NOMEM. err is
 * always NUL-terminated when errlen > 0, and empty on success. conf is
 * unchanged on error. Not thread-safe against other calls on the same conf. */
SL_API int sl_conf_set(sl_conf_t *conf, const char *key, const char *value,
                       char *err, size_t errlen);

/* The value of key as a string: what was set (without surrounding blanks),
 * else the key's default, else NULL (unknown key, or a "kafka." key that was
 * not set). A NULL conf reads as one with nothing set. The pointer is valid
 * until the key is set again or conf is destroyed. */
SL_API const char *sl_conf_get(const sl_conf_t *conf, const char *key);

/* Loads every setting from a file and applies it with sl_conf_set(), on top
 * of what conf already holds. A file whose name ends in ".json" is a JSON
 * object whose members are strings, numbers or booleans (null, objects and
 * arrays are errors); any other file is "key = value" lines, where blank
 * lines and lines whose first non-blank character is '#' are ignored. A key
 * given twice takes the later value. On error nothing is applied, and err
 * names the file, the line (or member) and the problem, e.g.
 * `job.properties:4: parallelism: "0" is out of range (allowed: 1..1024)`.
 * Returns SL_OK, SL_ERR_IO (cannot read), SL_ERR_CONF, SL_ERR_INVAL (conf
 * or path NULL) or SL_ERR_NOMEM. */
SL_API int sl_conf_load_file(sl_conf_t *conf, const char *path, char *err,
                             size_t errlen);

/* Calls fn(key, value, opaque) for every key that was explicitly set, in
 * the order of first setting (a key reset with NULL and set again counts
 * as new). Stops early when fn returns non-zero and returns that value;
 * returns 0 otherwise. fn must not modify conf. */
SL_API int sl_conf_foreach(const sl_conf_t *conf,
                           int (*fn)(const char *key, const char *value,
                                     void *opaque),
                           void *opaque);

/* Non-zero when key holds a secret: a key naming a password, secret,
 * token, credential or key material (kafka.sasl.password,
 * kafka.ssl.key.password, kafka.ssl.key.pem,
 * kafka.sasl.oauthbearer.client.secret, ...; any case). The library never
 * writes such a value into a log line, an error message, _metadata, a
 * metric or sluice-ckpt output; a host program that prints its
 * configuration should skip these keys too. Any thread. */
SL_API int sl_conf_is_secret(const char *key);

#ifdef __cplusplus
}
#endif
#endif
