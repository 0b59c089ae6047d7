/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/common.h — export macro, error codes and the record type shared by
 * every public module. Error codes come from one X-macro list so that the
 * enum, sl_strerror() and sl_err_name() can never disagree. */
#ifndef SLUICE_COMMON_H
#define SLUICE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SLUICE_BUILDING) && defined(__GNUC__)
#define SL_API __attribute__((visibility("default")))
#else
#define SL_API
#endif

/* X(name, value, message). Values are negative; SL_OK is 0. */
#define SL_ERRNO_MAP(X)                                                        \
  X(INVAL, -1, "invalid argument")                                             \
  X(NOMEM, -2, "out of memory")                                                \
  X(CONF, -3, "invalid configuration")                                         \
  X(GRAPH, -4, "invalid job graph")                                            \
  X(STATE, -5, "operation not allowed in the job's current state")             \
  X(USER, -6, "user function failed")                                          \
  X(IO, -7, "input/output error")                                              \
  X(DECODE, -8, "malformed input record")                                      \
  X(NOTFOUND, -9, "not found")                                                 \
  X(CORRUPT, -10, "corrupt data")                                              \
  X(STOPPED, -11, "job was stopped")                                           \
  X(RANGE, -12, "value out of range")                                          \
  X(KAFKA, -13, "kafka error")                                                 \
  X(INTERNAL, -14, "internal error")                                           \
  X(TIMEOUT, -15, "timed out")                                                 \
  X(NOT_OWNER, -16, "key owned by another process of the job")

typedef enum sl_err {
  SL_OK = 0,
#define SL__ERR_ENUM(name, val, msg) SL_ERR_##name = (val),
  SL_ERRNO_MAP(SL__ERR_ENUM)
#undef SL__ERR_ENUM
} sl_err;

/* Human-readable message for an sl_err code; never NULL. */
SL_API const char *sl_strerror(int err);
/* Symbolic name ("SL_ERR_CONF") for an sl_err code; never NULL. */
SL_API const char *sl_err_name(int err);

/* Event time and processing time are milliseconds since the epoch. */
#define SL_TS_MIN INT64_MIN
#define SL_TS_MAX INT64_MAX

/* A record: key and value bytes plus event time in ms. Records handed to a
 * callback are borrowed for the duration of that call only; sl_emit() and
 * friends copy what they need. key may be NULL when key_len is 0. */
typedef struct sl_record {
  const void *key;
  size_t key_len;
  const void *value;
  size_t value_len;
  int64_t ts;
} sl_record_t;

#ifdef __cplusplus
}
#endif
#endif
