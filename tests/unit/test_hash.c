/* SPDX-License-Identifier: Apache-2.0 */
/* The key-group arithmetic of lib/core/hash.h: the multiply-and-shift
 * remainder (sl__divisor) must give exactly what `%` gives, for every
 * divisor a job can have, since checkpoints and group mode (murmur2 %
 * partitions) put keys in key groups by it. */
#include <check.h>
#include <stdint.h>

#include "check_main.h"
#include "core/hash.h"

/* Numerators that stress a reciprocal: the ends of the range, values
 * next to multiples of d and of powers of two, and pseudo-random ones. */
/* ck_assert on a mismatch only: Check reports every assertion to its
 * parent process, too slow for millions of them. */
static void expect(const sl__divisor *v, uint64_t n) {
  uint32_t got = sl__divisor_mod(n, v);
  if (got != n % v->d)
    ck_abort_msg("%llu %% %u: %u, expected %llu", (unsigned long long)n, v->d,
                 got, (unsigned long long)(n % v->d));
}

static void check_divisor(uint32_t d, int rounds) {
  sl__divisor v = sl__divisor_of(d);
  uint64_t x = 0x243f6a8885a308d3ULL ^ d;
  uint64_t edge[] = {0,
                     1,
                     d - 1,
                     d,
                     (uint64_t)d + 1,
                     UINT32_MAX,
                     (uint64_t)UINT32_MAX + 1,
                     UINT64_MAX,
                     UINT64_MAX - 1,
                     UINT64_MAX - d,
                     UINT64_MAX / d * d,
                     UINT64_MAX / d * d - 1,
                     (UINT64_MAX / d - 1) * d + (d - 1)};
  for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++) {
    expect(&v, edge[i]);
  }
  for (int b = 0; b < 64; b++) {
    uint64_t p = (uint64_t)1 << b;
    for (uint64_t n = p - 2; n != p + 2; n++)
      expect(&v, n);
  }
  for (int i = 0; i < rounds; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    expect(&v, x);
    expect(&v, x >> (i % 64));
    uint64_t near = x / d * d; /* a multiple of d, and its neighbours */
    expect(&v, near);
    expect(&v, near - 1);
    expect(&v, near + 1);
  }
}

/* Every max.parallelism and partition count the configuration accepts
 * (1..32768), and 32-bit divisors beyond it. */
START_TEST(divisor_remainder_equals_division) {
  for (uint32_t d = 1; d <= 32768; d++)
    check_divisor(d, d <= 1024 || d % 997 == 0 ? 20000 : 256);
  uint32_t big[] = {32769,       65535,      65536,       65537,
                    1000003,     0x7fffffff, 0x80000000u, 0x80000001u,
                    0xfffffffeu, 0xffffffffu};
  for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++)
    check_divisor(big[i], 20000);
}
END_TEST

/* The key group the exchange computes for group mode is Kafka's
 * partition for the key. */
START_TEST(murmur2_partition_by_divisor) {
  char key[16];
  for (uint32_t parts = 1; parts <= 300; parts++) {
    sl__divisor v = sl__divisor_of(parts);
    for (int i = 0; i < 200; i++) {
      size_t len = (size_t)(i % 16) + 1;
      for (size_t j = 0; j < len; j++)
        key[j] = (char)(i * 31 + j * 7 + parts);
      uint32_t got = sl__murmur2_partition_div(key, len, &v),
               want = sl__murmur2_partition(key, len, parts);
      if (got != want)
        ck_abort_msg("partition of %zu bytes over %u: %u, expected %u", len,
                     parts, got, want);
    }
  }
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("hash");
  TCase *tc = tcase_create("hash");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, divisor_remainder_equals_division);
  tcase_add_test(tc, murmur2_partition_by_divisor);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
