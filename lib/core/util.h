/* SPDX-License-Identifier: Apache-2.0 */
/* Small internal helpers shared by every module: error-buffer formatting,
 * checked allocation wrappers, branch hints and single-writer counters. */
#ifndef SL_CORE_UTIL_H
#define SL_CORE_UTIL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SL__LIKELY(x) __builtin_expect(!!(x), 1)
#define SL__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define SL__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SL__CACHELINE 64

/* Byte equality for short keys without a call into libc and with few
 * branches: a hit is usually decided by two overlapping word loads. The
 * state backends' lookups compare keys on every record, where a
 * mispredicted branch or a call costs more than the comparison itself. */
static inline bool sl__bytes_eq(const unsigned char *a, const unsigned char *b,
                                size_t n) {
  if (n >= 8 && n <= 16) {
    uint64_t x, y, z, w;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    memcpy(&z, a + n - 8, 8);
    memcpy(&w, b + n - 8, 8);
    return ((x ^ y) | (z ^ w)) == 0;
  }
  if (n >= 4 && n < 8) {
    uint32_t x, y, z, w;
    memcpy(&x, a, 4);
    memcpy(&y, b, 4);
    memcpy(&z, a + n - 4, 4);
    memcpy(&w, b + n - 4, 4);
    return ((x ^ y) | (z ^ w)) == 0;
  }
  if (n < 4)
    return !n || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]);
  return memcmp(a, b, n) == 0;
}

/* Asks for the cache line at p in the state for writing: a line another
 * core holds is taken from it ahead of the store. (__builtin_prefetch's
 * write hint only reads the line unless the target has PRFCHW, which
 * every x86-64 processor runs: older ones as a no-op.) */
static inline void sl__prefetchw(const void *p) {
#if defined(__x86_64__)
  __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

/* Asks the kernel for the pages of [p, p + len) in one call, for a large
 * buffer about to be filled that would otherwise take one page fault per
 * page (each a trap to the hypervisor on a virtual machine). A hint: a
 * no-op where the kernel lacks it (MADV_POPULATE_WRITE, Linux 5.14). */
void sl__prefault(void *p, size_t len);

/* snprintf into an error buffer that may be NULL or zero-sized. */
void sl__errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sl__verrf(char *err, size_t errlen, const char *fmt, va_list ap);

/* strdup that returns NULL for NULL. */
char *sl__strdup(const char *s);

/* Formats up to max bytes of data as a printable, escaped string into buf
 * (for error messages about records); always NUL-terminates. */
void sl__escape(char *buf, size_t buflen, const void *data, size_t len,
                size_t max);

/* A counter with exactly one writing thread and any number of readers:
 * a relaxed load+store compiles to a plain add (no lock prefix) while
 * staying race-free for readers. */
typedef _Atomic uint64_t sl__counter;
static inline void sl__counter_add(sl__counter *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}
static inline uint64_t sl__counter_get(const sl__counter *c) {
  return atomic_load_explicit((sl__counter *)c, memory_order_relaxed);
}

#endif
