/* SPDX-License-Identifier: Apache-2.0 */
/* CRC32C: hardware crc32 instructions on x86-64 with SSE4.2 (checked once
 * at run time), else a byte-wise table. Both give the standard CRC32C
 * (e.g. crc32c("123456789") = 0xe3069283). */
#include "core/crc32c.h"

#include <stdbool.h>
#include <string.h>

static uint32_t table[256];
static bool table_ready;

static void table_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
  __atomic_store_n(&table_ready, true, __ATOMIC_RELEASE);
}

static uint32_t crc_table(uint32_t crc, const unsigned char *p, size_t n) {
  if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE))
    table_init(); /* idempotent: racing threads write the same values */
  while (n--)
    crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t
crc_hw(uint32_t crc, const unsigned char *p, size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (n--)
    c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}
#endif

uint32_t sl__crc32c(uint32_t crc, const void *p, size_t n) {
  crc = ~crc;
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("sse4.2"))
    return ~crc_hw(crc, p, n);
#endif
  return ~crc_table(crc, p, n);
}
