/* SPDX-License-Identifier: Apache-2.0 */
/* The configuration parser (lib/core/conf.c): keys and values through
 * sl_conf_set(), "key=value" strings as the examples' --set reads them,
 * and files (properties and JSON) through sl_conf_load_file(). The first
 * byte picks the way; the rest is split at "\0SL|". Whatever the input,
 * every value the configuration then holds passes its key's validation
 * with the number the typed getters return, and a failed file load
 * changes nothing. */
#include <string.h>

#include "core/conf.h"
#include "fuzz.h"
#include "sluice.h"

#define MAX_PARTS 16

static char *cstr(const uint8_t *p, size_t n) {
  char *s = malloc(n + 1);
  FUZZ_ASSERT(s, "out of memory");
  memcpy(s, p, n);
  s[n] = 0;
  return s;
}

typedef struct dump {
  char text[8192];
  size_t len;
} dump;

static int dump_kv(const char *key, const char *value, void *opaque) {
  dump *d = opaque;
  int n = snprintf(d->text + d->len, sizeof(d->text) - d->len, "%s\n%s\n", key,
                   value);
  if (n > 0 && (size_t)n < sizeof(d->text) - d->len)
    d->len += (size_t)n;
  return 0;
}

/* One key's value against its check and its typed getter. */
static void check_key(const sl_conf_t *conf, const sl__conf_key *k,
                      const char *v) {
  char err[1024];
  int64_t num = 0;
  FUZZ_ASSERT(v && sl__conf_check(k, v, &num, err, sizeof(err)) == SL_OK,
              "%s holds \"%s\" which its check refuses: %s", k->name,
              v ? v : "(null)", err);
  if (k->type == SL__CONF_INT || k->type == SL__CONF_SIZE)
    FUZZ_ASSERT(sl__conf_int(conf, k->name) == num, "%s: getter differs",
                k->name);
  else if (k->type == SL__CONF_BOOL)
    FUZZ_ASSERT(sl__conf_bool(conf, k->name) == (num != 0),
                "%s: getter differs", k->name);
  else if (k->type == SL__CONF_ENUM)
    FUZZ_ASSERT(sl__conf_enum(conf, k->name) == num, "%s: getter differs",
                k->name);
}

/* Every key. A key the input did not set reads its default (the table's
 * own string: sl_conf_get returns that pointer), whose check and getter
 * give the same on every execution, so they are checked once, on a fresh
 * configuration; each execution checks every key whose value is another
 * string, which is every key an input set or disturbed. */
static void check_all(const sl_conf_t *conf) {
  static bool defaults_checked;
  if (!defaults_checked) {
    sl_conf_t *fresh = sl_conf_new();
    FUZZ_ASSERT(fresh, "out of memory");
    for (size_t i = 0; i < sl__conf_key_count(); i++) {
      const sl__conf_key *k = sl__conf_key_at(i);
      check_key(fresh, k, sl_conf_get(fresh, k->name));
    }
    sl_conf_destroy(fresh);
    defaults_checked = true;
  }
  for (size_t i = 0; i < sl__conf_key_count(); i++) {
    const sl__conf_key *k = sl__conf_key_at(i);
    const char *v = sl_conf_get(conf, k->name);
    if (v != k->def)
      check_key(conf, k, v);
  }
}

static void load(sl_conf_t *conf, const char *name, const uint8_t *p,
                 size_t n) {
  char err[2048];
  dump before = {{0}, 0}, after = {{0}, 0};
  sl_conf_foreach(conf, dump_kv, &before);
  fuzz_write(fuzz_tmpdir(), name, p, n);
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", fuzz_tmpdir(), name);
  int rc = sl_conf_load_file(conf, path, err, sizeof(err));
  FUZZ_ASSERT(rc == SL_OK || rc == SL_ERR_CONF, "load: %d (%s)", rc, err);
  FUZZ_ASSERT(rc == SL_OK || err[0], "a failed load without a message");
  sl_conf_foreach(conf, dump_kv, &after);
  FUZZ_ASSERT(rc == SL_OK || (before.len == after.len &&
                              memcmp(before.text, after.text, after.len) == 0),
              "a failed load changed the configuration");
}

FUZZ_TARGET(conf) {
  if (size == 0)
    return 0;
  uint8_t how = data[0] % 4;
  const uint8_t *part[MAX_PARTS];
  size_t len[MAX_PARTS];
  size_t n = fuzz_split(data + 1, size - 1, part, len, MAX_PARTS);
  sl_conf_t *conf = sl_conf_new();
  FUZZ_ASSERT(conf, "out of memory");
  char err[1024];
  if (how == 0 || how == 1) {
    load(conf, how == 0 ? "f.properties" : "f.json", data + 1, size - 1);
  } else if (how == 2) {
    for (size_t i = 0; i + 1 < n; i += 2) {
      char *k = cstr(part[i], len[i]), *v = cstr(part[i + 1], len[i + 1]);
      int rc = sl_conf_set(conf, k, v, err, sizeof(err));
      FUZZ_ASSERT(rc == SL_OK || rc == SL_ERR_CONF, "set: %d", rc);
      if (rc == SL_OK) {
        /* What get returns sets the same value again. */
        char *again = strdup(sl_conf_get(conf, k));
        FUZZ_ASSERT(again &&
                        sl_conf_set(conf, k, again, err, sizeof(err)) == SL_OK,
                    "%s: its own value \"%s\" is refused: %s", k, again, err);
        FUZZ_ASSERT(strcmp(again, sl_conf_get(conf, k)) == 0,
                    "%s: value changed when set again", k);
        free(again);
      }
      free(k);
      free(v);
    }
  } else {
    for (size_t i = 0; i < n; i++) {
      /* As --set does: split at the first '=' */
      char *kv = cstr(part[i], len[i]), *eq = strchr(kv, '=');
      if (eq) {
        *eq = 0;
        int rc = sl_conf_set(conf, kv, eq + 1, err, sizeof(err));
        FUZZ_ASSERT(rc == SL_OK || rc == SL_ERR_CONF, "set: %d", rc);
      }
      free(kv);
    }
  }
  check_all(conf);
  sl_conf_t *dup = sl_conf_dup(conf);
  FUZZ_ASSERT(dup, "out of memory");
  check_all(dup);
  sl_conf_destroy(dup);
  sl_conf_destroy(conf);
  return 0;
}
