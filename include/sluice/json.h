/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/json.h — the JSON helpers: the Kafka JSON codec's parsed
 * document, RFC 6901 pointers, emitting a JSON value as a record, and
 * encoding JSON with doubles in their shortest round-trip form. This is
 * the one public header that exposes jansson's json_t: it includes
 * <jansson.h>, and pkg-config's sluice.pc requires jansson, so
 * `pkg-config --cflags --libs sluice` is all a job needs. sluice.h does
 * not include it. */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <jansson.h>

#include "sluice/kafka.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The JSON codec's parsed value (borrowed: json_incref to keep it), or
 * NULL for other codecs. The codec itself only scans the value; the
 * document is built on the first call for a message (on the calling
 * thread: the source's, as m is only reachable while its record is
 * emitted) and freed after the record's emit. */
SL_API json_t *sl_kafka_msg_json(const sl_kafka_msg_t *m);

/* The value at an RFC 6901 pointer ("/a/0/b"; "" is the whole document),
 * or NULL. Borrowed from root. */
SL_API json_t *sl_json_pointer(json_t *root, const char *ptr);

/* Encodes value as sl_json_dumpb() does into scratch memory of ctx (valid
 * until the callback returns) and emits {key, encoded, ts}. SL_OK,
 * SL_ERR_INVAL (no ctx or value, or value cannot be encoded) or
 * SL_ERR_NOMEM. */
SL_API int sl_json_emit(sl_ctx_t *ctx, const void *key, size_t key_len,
                        const json_t *value, int64_t ts);

/* Compact JSON text of value (any value, not only objects and arrays),
 * as jansson's JSON_COMPACT | JSON_ENCODE_ANY writes it — members in
 * insertion order, "\uXXXX" escapes for control characters, UTF-8
 * otherwise — except for reals: each is written with the fewest
 * significant digits (1 to 17) that read back (strtod) as the same
 * double, in fixed notation when its decimal exponent is in [-4, 16)
 * and with ".0" when it has no fraction (2.0, 100.0, -0.0), else in
 * exponent notation without "+" or leading zeros (1e21, 1e-7,
 * 1.7976931348623157e308). So 0.1 is "0.1" (jansson's default writes
 * 0.10000000000000001) and 1.0/3 is "0.3333333333333333". The decimal
 * point is '.' whatever the locale.
 *
 * sl_json_dumpb writes at most size bytes of the text (no terminating
 * NUL) into buf and returns the text's full length, so a call with size 0
 * measures; 0 for an error: value NULL, a string or key that is not valid
 * UTF-8, or nesting deeper than 2048 (also a value containing itself).
 * sl_json_dumps returns the text NUL-terminated in malloc'd memory (the
 * caller frees it) and its length in *len when len is not NULL, or NULL
 * for the same errors and when out of memory. Thread-safe. */
SL_API size_t sl_json_dumpb(const json_t *value, char *buf, size_t size);
SL_API char *sl_json_dumps(const json_t *value, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
