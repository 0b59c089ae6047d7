/* SPDX-License-Identifier: Apache-2.0 */
/* JSON helpers shared inside the library and its tools (the public ones
 * are in sluice/json.h). */
#ifndef SL_CORE_JSON_H
#define SL_CORE_JSON_H

#include <jansson.h>
#include <stddef.h>

/* Standard base64 with padding, malloc'ed and NUL-terminated; NULL when
 * out of memory. */
char *sl__base64(const void *p, size_t n);

/* Sets obj[name] to bytes p[0..n) as a string when they are printable
 * UTF-8, else as base64, and obj[name + "_enc"] to "utf8" or "base64":
 * how sluice-ckpt's dump and the state endpoint show keys and values. */
void sl__json_set_bytes(json_t *obj, const char *name, const void *p, size_t n);

#endif
