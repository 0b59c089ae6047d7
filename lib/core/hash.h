/* SPDX-License-Identifier: Apache-2.0 */
/* The key hash: computed once per record by key_by and carried with the
 * record through the exchange, so state backends and timers reuse it
 * instead of hashing the key again. */
#ifndef SL_CORE_HASH_H
#define SL_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t sl__mix64(uint64_t h) {
  /* Finalizer with full avalanche, so `hash % K` is uniform for any K. */
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

/* The key hash of checkpoint format 1 (see sl__hash64_of): checkpoints
 * of that format put keys in key groups by it, so restore and the tools
 * still need it. Eight bytes per step. */
static inline uint64_t sl__hash64_v1(const void *data, size_t len) {
  const unsigned char *p = data;
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ (len * 0x100000001b3ULL);
  if (len >= 8 && len <= 16) {
    /* Two (possibly overlapping) word loads, no loop. */
    uint64_t a, b;
    memcpy(&a, p, 8);
    memcpy(&b, p + len - 8, 8);
    h = (h ^ sl__mix64(a)) * 0x9e3779b97f4a7c15ULL;
    return sl__mix64(h ^ (b * 0xc2b2ae3d27d4eb4fULL));
  }
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ sl__mix64(w)) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 29;
    p += 8;
    len -= 8;
  }
  if (len) {
    uint64_t w = 0;
    memcpy(&w, p, len);
    h = (h ^ sl__mix64(w ^ ((uint64_t)len << 56))) * 0x9e3779b97f4a7c15ULL;
  }
  return sl__mix64(h);
}

/* 64-bit hash of a byte string; stable across processes, runs and
 * platforms of the same endianness, since key groups in checkpoints depend
 * on it (a change needs a new checkpoint format: SL__HASH_FORMAT). Keys
 * are hashed on every record and most are 8 or 16 bytes (an integer id, a
 * UUID): one finalizer for 8 bytes (a bijection, so no two such keys
 * collide), two chained for 16; other lengths as format 1. */
static inline uint64_t sl__hash64(const void *data, size_t len) {
  uint64_t a, b;
  if (len == 8) {
    memcpy(&a, data, 8);
    return sl__mix64(a ^ 0x9e3779b97f4a7c15ULL);
  }
  if (len == 16) {
    memcpy(&a, data, 8);
    /* + len - 8, not + 8: the same bytes, but gcc then does not warn
     * about callers whose buffers are shorter than 16 (other lengths). */
    memcpy(&b, (const unsigned char *)data + len - 8, 8);
    return sl__mix64(sl__mix64(a ^ 0xc2b2ae3d27d4eb4fULL) ^ b);
  }
  return sl__hash64_v1(data, len);
}

/* The checkpoint format whose key groups sl__hash64 gives; format 1's
 * came from sl__hash64_v1. */
#define SL__HASH_FORMAT 2

/* The key hash a checkpoint of format `format` partitioned keys by. */
static inline uint64_t sl__hash64_of(int format, const void *data, size_t len) {
  return format < SL__HASH_FORMAT ? sl__hash64_v1(data, len)
                                  : sl__hash64(data, len);
}

/* Flink's assignment: key group = hash % K, worker = kg * P / K, so that
 * changing P moves whole, contiguous key-group ranges. */
static inline uint32_t sl__key_group(uint64_t hash, uint32_t max_par) {
  /* The same value either way; the mask spares a 64-bit division on every
   * record for the usual power-of-two max.parallelism. */
  if ((max_par & (max_par - 1)) == 0)
    return (uint32_t)(hash & (max_par - 1));
  return (uint32_t)(hash % max_par);
}
/* Kafka's default partitioner (the Java client's murmur2, which
 * librdkafka's "murmur2" and "murmur2_random" partitioners reproduce):
 * partition = (murmur2(key) & 0x7fffffff) % partitions. In group mode
 * (docs/scaling.md) a key's key group is this partition, so the process
 * that owns a Kafka partition owns the state of its keys. */
static inline uint32_t sl__murmur2(const void *data, size_t len) {
  const unsigned char *p = data;
  const uint32_t m = 0x5bd1e995;
  uint32_t h = 0x9747b28c ^ (uint32_t)len;
  size_t n4 = len / 4;
  for (size_t i = 0; i < n4; i++, p += 4) {
    uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    k *= m;
    k ^= k >> 24;
    k *= m;
    h *= m;
    h ^= k;
  }
  switch (len & 3) {
  case 3:
    h ^= (uint32_t)p[2] << 16;
    /* fall through */
  case 2:
    h ^= (uint32_t)p[1] << 8;
    /* fall through */
  case 1:
    h ^= p[0];
    h *= m;
  }
  h ^= h >> 13;
  h *= m;
  h ^= h >> 15;
  return h;
}
static inline uint32_t sl__murmur2_partition(const void *key, size_t len,
                                             uint32_t partitions) {
  return (sl__murmur2(key, len) & 0x7fffffff) % partitions;
}

/* `n % d` for a divisor fixed for the life of a job (max.parallelism,
 * the partition count), without a division per record: Granlund and
 * Montgomery's round-up method ("Division by invariant integers using
 * multiplication", 1994, fig. 4.1; libdivide's branch-free unsigned form)
 * gives the exact quotient of every 64-bit n for every d >= 1 from one
 * high multiply, so the remainder, and with it every key group, is the
 * same as the division's: checkpoints and group mode depend on that
 * (tests/unit/test_hash.c compares them). */
typedef struct sl__divisor {
  uint64_t m; /* floor(2^64 * (2^l - d) / d) + 1, l = ceil(log2 d) */
  uint32_t d;
  uint8_t sh1, sh2; /* min(l, 1), max(l - 1, 0) */
} sl__divisor;

static inline sl__divisor sl__divisor_of(uint32_t d) {
  __extension__ typedef unsigned __int128 u128;
  sl__divisor v = {0, d ? d : 1, 0, 0};
  unsigned l = 0;
  while (((uint64_t)1 << l) < v.d)
    l++;
  v.m = (uint64_t)((((u128)(((uint64_t)1 << l) - v.d)) << 64) / v.d) + 1;
  v.sh1 = (uint8_t)(l < 1 ? l : 1);
  v.sh2 = (uint8_t)(l > 1 ? l - 1 : 0);
  return v;
}

static inline uint32_t sl__divisor_mod(uint64_t n, const sl__divisor *v) {
  __extension__ typedef unsigned __int128 u128;
  uint64_t t = (uint64_t)(((u128)v->m * n) >> 64);
  uint64_t q = (t + ((n - t) >> v->sh1)) >> v->sh2;
  return (uint32_t)(n - q * v->d);
}

/* sl__murmur2_partition with the partition count as a divisor. */
static inline uint32_t sl__murmur2_partition_div(const void *key, size_t len,
                                                 const sl__divisor *parts) {
  return sl__divisor_mod(sl__murmur2(key, len) & 0x7fffffff, parts);
}

static inline int sl__kg_worker(uint32_t kg, int par, uint32_t max_par) {
  return (int)((uint64_t)kg * (uint64_t)par / max_par);
}

#endif
