/* SPDX-License-Identifier: Apache-2.0 */
/* CRC32C (Castagnoli), the checksum of every checkpoint file: the SSE4.2
 * instruction where the CPU has it, a table otherwise. */
#ifndef SL_CORE_CRC32C_H
#define SL_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over n bytes at p. */
uint32_t sl__crc32c(uint32_t crc, const void *p, size_t n);

#endif
