/* SPDX-License-Identifier: Apache-2.0 */
/* The registry of state backends (backend.h): finding one by name and
 * opening the one state.backend names. Apart from the keyed-state layer
 * so that readers of checkpoints (sluice-ckpt) can reach the backends
 * without the operator runtime. */
#include <string.h>

#include "core/conf.h"
#include "core/util.h"
#include "state/backend.h"

/* Indexed by the value of state.backend in the configuration table. */
static const sl__backend_ops *const backends[] = {&sl__hashmap_ops,
                                                  &sl__rocksdb_ops};

const sl__backend_ops *sl__backend_find(const char *name) {
  for (size_t i = 0; name && i < SL__ARRAY_LEN(backends); i++)
    if (strcmp(backends[i]->name, name) == 0)
      return backends[i];
  return NULL;
}

sl__backend *sl__backend_open(const sl__backend_conf *bc, char *err,
                              size_t errlen) {
  int i = sl__conf_enum(bc->conf, "state.backend");
  if (i < 0 || (size_t)i >= SL__ARRAY_LEN(backends)) {
    sl__errf(err, errlen, "state.backend \"%s\" is not available",
             sl__conf_str(bc->conf, "state.backend"));
    return NULL;
  }
  sl__backend *be = backends[i]->open(bc, err, errlen);
  if (be)
    be->kg_murmur2 = sl__conf_enum(bc->conf, "group.mode") != 0;
  return be;
}
