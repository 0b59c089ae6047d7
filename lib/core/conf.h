/* SPDX-License-Identifier: Apache-2.0 */
/* Internal side of the job configuration: the key table's row type and the
 * typed getters the runtime reads settings with. Values are validated when
 * they are set, so getters cannot fail; asking for a key that is not in the
 * table, or with the wrong type, is a programming error and asserts. */
#ifndef SL_CORE_CONF_H
#define SL_CORE_CONF_H

#include "sluice/conf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sl__conf_type {
  SL__CONF_INT,    /* decimal int64 within [min, max]; "*.ms" keys are ms */
  SL__CONF_BOOL,   /* true/false/1/0/yes/no/on/off, any case */
  SL__CONF_STRING, /* any non-empty string; may be empty when the default is */
  SL__CONF_ENUM,   /* one of `values`, case-sensitive */
  SL__CONF_SIZE,   /* bytes within [min, max]; suffix k/m/g = 1024^1/2/3 */
  SL__CONF_TOPIC, /* a Kafka topic name: 1-249 of [a-zA-Z0-9._-], not . or .. */
} sl__conf_type;

/* One row of the key table. `def` is the default as the user would write
 * it and must itself pass validation (a unit test checks every row). */
typedef struct sl__conf_key {
  const char *name;
  sl__conf_type type;
  const char *def;
  int64_t min, max;   /* INT and SIZE only */
  const char *values; /* ENUM only: "a|b|c"; an index counts from 0 */
  const char *doc;    /* one-line meaning, as in docs/configuration.md */
} sl__conf_key;

/* Typed getters. conf may be NULL (every key at its default). They return
 * what was set, else the key's default.
 * sl__conf_int: INT and SIZE keys (SIZE in bytes).
 * sl__conf_bool: BOOL keys.
 * sl__conf_str: any key of the table, as a string (see sl_conf_get()).
 * sl__conf_enum: ENUM keys; the index of the value in the row's list. */
int64_t sl__conf_int(const sl_conf_t *conf, const char *key);
/* The log callback of conf (sl_conf_set_log_cb), or NULL. */
sl_log_fn sl__conf_log_cb(const sl_conf_t *conf, void **opaque);
bool sl__conf_bool(const sl_conf_t *conf, const char *key);
const char *sl__conf_str(const sl_conf_t *conf, const char *key);
int sl__conf_enum(const sl_conf_t *conf, const char *key);

/* The key table, for documentation and tests: rows 0..count-1. */
size_t sl__conf_key_count(void);
const char *sl__conf_key_name(size_t i);
const sl__conf_key *sl__conf_key_at(size_t i);

/* Validates value (already stripped of surrounding blanks) against row k:
 * the same check sl_conf_set() applies. On success stores the parsed value
 * in *num when num is not NULL (INT/SIZE: the number, BOOL: 0 or 1, ENUM:
 * the index, STRING and TOPIC: 0) and returns SL_OK; otherwise writes a message
 * naming the key, the value and what is allowed, and returns SL_ERR_CONF.
 * Exposed so that types without a key in the table yet can be tested. */
int sl__conf_check(const sl__conf_key *k, const char *value, int64_t *num,
                   char *err, size_t errlen);

#endif
