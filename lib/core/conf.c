/* SPDX-License-Identifier: Apache-2.0 */
/* Job configuration: the table of known keys (type, default, range, meaning)
 * and a small insertion-ordered map of what the user set. Every value is
 * validated when it is set, so the runtime's typed getters never fail.
 * Files ("key = value" or JSON) load all-or-nothing through a copy. */
#include "core/conf.h"
#include "core/util.h"
#include "sluice/json.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Row constructors, so that a new key is one line in the table below. */
#define KEY_INT(name, def, lo, hi, doc)                                        \
  { name, SL__CONF_INT, def, lo, hi, NULL, doc }
#define KEY_SIZE(name, def, lo, hi, doc)                                       \
  { name, SL__CONF_SIZE, def, lo, hi, NULL, doc }
#define KEY_BOOL(name, def, doc)                                               \
  { name, SL__CONF_BOOL, def, 0, 1, NULL, doc }
#define KEY_STRING(name, def, doc)                                             \
  { name, SL__CONF_STRING, def, 0, 0, NULL, doc }
#define KEY_ENUM(name, def, values, doc)                                       \
  { name, SL__CONF_ENUM, def, 0, 0, values, doc }
#define KEY_TOPIC(name, def, doc)                                              \
  { name, SL__CONF_TOPIC, def, 0, 0, NULL, doc }

/* Keep docs/configuration.md in step: a unit test checks that every name
 * here appears there. ENUM value order is the index sl__conf_enum() returns,
 * so append new values at the end. */
static const sl__conf_key keys[] = {
    KEY_INT("parallelism", "1", 1, 1024, "worker threads of the job"),
    KEY_INT("max.parallelism", "128", 1, 32768,
            "number of key groups K; fixed for the life of the job's state"),
    KEY_ENUM("group.mode", "off", "off|copartitioned|repartition",
             "off: the job is one process; copartitioned: processes of the "
             "same job and Kafka group id share the input partitions through "
             "Kafka's consumer group, each input partition a task; "
             "repartition: the same, with each key_by writing a repartition "
             "topic whose partitions are the tasks (docs/scaling.md)"),
    KEY_INT("group.partitions", "0", 0, 32768,
            "group mode: the partition count of the topics the keyed stage "
            "reads, declared; the job checks it against the cluster and "
            "uses it as the number of key groups"),
    KEY_INT("group.revive.max", "3", 0, 1000,
            "group mode: how many times within group.revive.interval.ms a "
            "fenced process revives its tasks (drops them, rejoins the "
            "group, restores what it is assigned); one more fence fails "
            "the job; 0: a fence fails the job"),
    KEY_INT("group.revive.interval.ms", "600000", 1, INT64_MAX,
            "group mode: the window over which group.revive.max counts "
            "revivals"),
    KEY_STRING("group.owners.topic", "",
               "group mode: the topic where each process announces the "
               "partitions it owns and its query endpoint; empty = "
               "sluice-<job name>-owners"),
    KEY_STRING("instance.id", "",
               "this process's name: the instance label of every metric and "
               "its name in the group's owners topic; empty = "
               "<hostname>-<pid>"),
    KEY_ENUM("error.policy", "fail", "fail|skip|dlq",
             "what a user-function error or a malformed input record does: "
             "fail the job with the record's context, skip the record and "
             "count it, or write it to the Kafka dead-letter topic and count "
             "it"),
    KEY_INT("batch.size", "512", 1, 65536, "records per exchange batch"),
    KEY_BOOL("mini.batch", "false",
             "fold each batch's records per key and window before the keyed "
             "state is touched (event-time tumbling window aggregates)"),
    KEY_INT("channel.capacity", "32", 2, 65536,
            "batches in flight per exchange channel; a full channel "
            "backpressures the producer"),
    KEY_INT("watermark.interval.ms", "200", 1, 86400000,
            "processing time between calls of a user watermark generator's "
            "on_periodic (Flink's auto watermark interval)"),
    KEY_INT("source.batch.size", "1024", 1, 1000000,
            "records a source emits per poll before the worker services its "
            "other inputs"),
    KEY_ENUM("log.level", "info", "error|warn|info|debug",
             "least severe log message that is written"),
    KEY_ENUM("state.backend", "hashmap", "hashmap|rocksdb",
             "keyed state backend"),
    KEY_STRING("state.dir", "/tmp/sluice-state",
               "directory of the RocksDB backend's working state: "
               "<state.dir>/<job name>/w<worker>, locked by the running job"),
    KEY_SIZE("state.rocksdb.memory", "512m", (int64_t)8 << 20, (int64_t)1 << 40,
             "memory budget of a job's RocksDB state, shared by all workers: "
             "block cache + write buffers + write-back caches"),
    KEY_INT("state.rocksdb.write_buffer.percent", "25", 5, 80,
            "share of state.rocksdb.memory for memtables (write buffers)"),
    KEY_INT("state.rocksdb.write_buffer.count", "2", 2, 16,
            "memtables per column family (max_write_buffer_number)"),
    KEY_INT("state.rocksdb.write_back.percent", "25", 1, 80,
            "share of state.rocksdb.memory for the write-back caches in "
            "front of RocksDB"),
    KEY_BOOL("state.rocksdb.malloc.tune", "true",
             "on glibc, fix malloc's mmap threshold at 128 KiB when RocksDB "
             "state first opens (process-wide), so freed memtables go back "
             "to the system instead of staying in the heap"),
    KEY_ENUM("files.access", "private", "private|group|umask",
             "who may read the checkpoint files and state directories the "
             "job creates: private (owner only, files 0600, directories "
             "0700), group (0640/0750) or umask (0666/0777 less the "
             "process umask)"),
    KEY_STRING("checkpoint.dir", "",
               "directory of the job's checkpoints (chk-<id>/); empty turns "
               "checkpoints off"),
    KEY_INT("checkpoint.interval.ms", "0", 0, INT64_MAX,
            "time between periodic checkpoints; 0: only on demand "
            "(sl_job_checkpoint) and the final one"),
    KEY_INT("checkpoint.min.pause.ms", "0", 0, INT64_MAX,
            "least time from the end of one checkpoint to the start of the "
            "next"),
    KEY_INT("checkpoint.timeout.ms", "600000", 1, INT64_MAX,
            "a checkpoint not complete after this long is given up"),
    KEY_INT("checkpoint.tolerable.failures", "0", 0, 1000000,
            "consecutive failed checkpoints tolerated before the job fails"),
    KEY_INT("checkpoint.retained", "3", 1, 1000000,
            "complete checkpoints kept; older ones are deleted"),
    KEY_BOOL("checkpoint.final", "true",
             "take a checkpoint when the job ends cleanly (input finished or "
             "sl_job_stop)"),
    KEY_STRING("restore.from", "",
               "start from a checkpoint: empty (no restore), \"latest\" (the "
               "newest valid one in checkpoint.dir, none is fine) or a "
               "chk-<id> directory"),
    KEY_BOOL("restore.allow.dropped.state", "false",
             "restore even when the checkpoint holds state of operator uids "
             "the job no longer has (that state is dropped)"),
    KEY_STRING("metrics.listen", "off",
               "address of the Prometheus /metrics and /healthz endpoint "
               "(host:port), or off"),
    KEY_BOOL("metrics.listen.allow.remote", "false",
             "allow metrics.listen on a non-loopback address"),
    KEY_INT("query.timeout.ms", "1000", 1, 3600000,
            "how long a state query (sl_job_query, GET /state/...) waits for "
            "the worker that owns the key"),
    KEY_STRING("query.advertised.endpoint", "",
               "group mode: the address other processes name for keys this "
               "process owns (http://host:port); empty = http:// and the "
               "metrics.listen address, with the bound port"),
    KEY_STRING("query.http.token", "",
               "bearer token GET /state/... requires (Authorization: Bearer "
               "<token>); empty = none"),
    KEY_INT("metrics.log.interval.ms", "0", 0, 86400000,
            "period of the JSON metrics log line; 0 = off"),
    KEY_INT("health.checkpoint.max.age.ms", "0", 0, INT64_MAX,
            "/healthz is unhealthy when the last completed checkpoint is "
            "older; 0 = no check"),
    KEY_ENUM("source.startup.mode", "committed",
             "earliest|latest|committed|timestamp",
             "where a Kafka source starts when it does not restore from a "
             "checkpoint"),
    KEY_INT("source.startup.timestamp.ms", "0", 0, INT64_MAX,
            "source.startup.mode=timestamp: first offset whose message "
            "timestamp is at least this"),
    KEY_ENUM("sink.delivery.guarantee", "at_least_once",
             "none|at_least_once|exactly_once",
             "what a Kafka sink guarantees across failures"),
    KEY_STRING("sink.transactional.id.prefix", "sluice",
               "exactly_once: the producer's transactional.id is this, '-', "
               "and the job name"),
    KEY_SIZE("sink.held.max.bytes", "64m", 1, (int64_t)1 << 40,
             "exactly_once: output a sink instance holds between a barrier "
             "and its commit, past which it waits (backpressure)"),
    KEY_TOPIC("dlq.topic", "sluice-dlq",
              "error.policy=dlq: the Kafka topic bad records go to"),
    KEY_INT("broker.timeout.ms", "60000", 1000, 86400000,
            "how long Kafka clients retry while no broker is reachable "
            "before the job fails"),
};

#define KAFKA_PREFIX "kafka."
#define KAFKA_PREFIX_LEN (sizeof(KAFKA_PREFIX) - 1)

/* Bad values are quoted in messages; cap them so a pasted blob stays
 * readable and the message still fits the caller's buffer. */
#define QUOTE_MAX 64

typedef struct entry {
  char *key;
  char *value;             /* as set, without surrounding blanks */
  const sl__conf_key *def; /* NULL for kafka.* keys */
  int64_t num;             /* parsed once at set time; see sl__conf_check() */
} entry;

/* A plain array: configurations hold tens of keys and are read while a job
 * is built, not per record, so linear search is the simplest fast enough
 * map and gives foreach its insertion order for free. */
struct sl_conf {
  entry *v;
  size_t n, cap;
  sl_log_fn log_fn;
  void *log_opaque;
};

void sl_conf_set_log_cb(sl_conf_t *conf, sl_log_fn fn, void *opaque) {
  if (!conf)
    return;
  conf->log_fn = fn;
  conf->log_opaque = opaque;
}

sl_log_fn sl__conf_log_cb(const sl_conf_t *conf, void **opaque) {
  *opaque = conf->log_opaque;
  return conf->log_fn;
}

size_t sl__conf_key_count(void) {
  return SL__ARRAY_LEN(keys);
}

const sl__conf_key *sl__conf_key_at(size_t i) {
  assert(i < SL__ARRAY_LEN(keys));
  return i < SL__ARRAY_LEN(keys) ? &keys[i] : NULL;
}

const char *sl__conf_key_name(size_t i) {
  const sl__conf_key *k = sl__conf_key_at(i);
  return k ? k->name : NULL;
}

/* The table's indices sorted by name, made once: the typed getters look
 * keys up by name wherever the runtime reads its configuration. */
static uint16_t by_name[SL__ARRAY_LEN(keys)];
_Static_assert(SL__ARRAY_LEN(keys) <= UINT16_MAX, "key indices are 16 bits");
static pthread_once_t by_name_once = PTHREAD_ONCE_INIT;

static int cmp_index(const void *a, const void *b) {
  return strcmp(keys[*(const uint16_t *)a].name,
                keys[*(const uint16_t *)b].name);
}

static void sort_names(void) {
  for (size_t i = 0; i < SL__ARRAY_LEN(keys); i++)
    by_name[i] = (uint16_t)i;
  qsort(by_name, SL__ARRAY_LEN(keys), sizeof(by_name[0]), cmp_index);
}

static const sl__conf_key *key_find(const char *name) {
  pthread_once(&by_name_once, sort_names);
  size_t lo = 0, hi = SL__ARRAY_LEN(keys);
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(keys[by_name[mid]].name, name);
    if (c == 0)
      return &keys[by_name[mid]];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

static entry *entry_find(const sl_conf_t *conf, const char *key, size_t *idx) {
  for (size_t i = 0; i < conf->n; i++) {
    if (strcmp(conf->v[i].key, key) == 0) {
      if (idx)
        *idx = i;
      return &conf->v[i];
    }
  }
  return NULL;
}

static bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
         c == '\f';
}

/* Narrows [*s, *e) to exclude leading and trailing blanks. */
static void trim(const char **s, const char **e) {
  while (*s < *e && is_blank(**s))
    (*s)++;
  while (*e > *s && is_blank((*e)[-1]))
    (*e)--;
}

static char *dup_range(const char *s, const char *e) {
  size_t n = (size_t)(e - s);
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static char *trim_dup(const char *s) {
  const char *e = s + strlen(s);
  trim(&s, &e);
  return dup_range(s, e);
}

/* ---- parsing ------------------------------------------------------------ */

enum { PARSE_OK, PARSE_SYNTAX, PARSE_OVERFLOW };

/* Unsigned decimal digits up to limit; *p is left after the digits. */
static int parse_digits(const char **p, uint64_t limit, uint64_t *out) {
  const char *s = *p;
  uint64_t mag = 0;
  bool over = false;
  if (*s < '0' || *s > '9')
    return PARSE_SYNTAX;
  for (; *s >= '0' && *s <= '9'; s++) {
    unsigned d = (unsigned)(*s - '0');
    /* Keep scanning after an overflow so that trailing garbage is still
     * reported as a syntax error rather than as a range error. */
    if (over || mag > (limit - d) / 10)
      over = true;
    else
      mag = mag * 10 + d;
  }
  *p = s;
  *out = mag;
  return over ? PARSE_OVERFLOW : PARSE_OK;
}

static int parse_int(const char *s, int64_t *out) {
  bool neg = false;
  if (*s == '+' || *s == '-')
    neg = *s++ == '-';
  uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  uint64_t mag;
  int rc = parse_digits(&s, limit, &mag);
  if (rc == PARSE_SYNTAX || *s != '\0')
    return PARSE_SYNTAX;
  if (rc == PARSE_OVERFLOW)
    return PARSE_OVERFLOW;
  if (!neg)
    *out = (int64_t)mag;
  else if (mag == (uint64_t)INT64_MAX + 1)
    *out = INT64_MIN;
  else
    *out = -(int64_t)mag;
  return PARSE_OK;
}

#define KIB ((int64_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

static int64_t size_unit(char c) {
  switch (c) {
  case 'k':
  case 'K':
    return KIB;
  case 'm':
  case 'M':
    return MIB;
  case 'g':
  case 'G':
    return GIB;
  }
  return 0;
}

static int parse_size(const char *s, int64_t *out) {
  uint64_t mag;
  int rc = parse_digits(&s, (uint64_t)INT64_MAX, &mag);
  if (rc == PARSE_SYNTAX)
    return PARSE_SYNTAX;
  int64_t unit = 1;
  if (*s != '\0') {
    unit = size_unit(*s++);
    if (unit == 0 || *s != '\0')
      return PARSE_SYNTAX;
  }
  if (rc == PARSE_OVERFLOW || mag > (uint64_t)(INT64_MAX / unit))
    return PARSE_OVERFLOW;
  *out = (int64_t)mag * unit;
  return PARSE_OK;
}

static const struct {
  const char *word;
  bool value;
} bool_words[] = {
    {"true", true}, {"false", false}, {"1", true},  {"0", false},
    {"yes", true},  {"no", false},    {"on", true}, {"off", false},
};

static int parse_bool(const char *s, int64_t *out) {
  for (size_t i = 0; i < SL__ARRAY_LEN(bool_words); i++) {
    if (strcasecmp(s, bool_words[i].word) == 0) {
      *out = bool_words[i].value;
      return PARSE_OK;
    }
  }
  return PARSE_SYNTAX;
}

/* Index of s in a "a|b|c" list, or -1. */
static int enum_index(const char *values, const char *s) {
  size_t n = strlen(s);
  int i = 0;
  for (const char *p = values;; i++) {
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == n && memcmp(p, s, n) == 0)
      return i;
    if (!bar)
      return -1;
    p = bar + 1;
  }
}

/* ---- messages ----------------------------------------------------------- */

/* 4096 -> "4k": bounds read the way a user writes them. */
static void fmt_size(char *buf, size_t len, int64_t n) {
  static const struct {
    int64_t unit;
    char suffix;
  } units[] = {{GIB, 'g'}, {MIB, 'm'}, {KIB, 'k'}};
  for (size_t i = 0; i < SL__ARRAY_LEN(units); i++) {
    if (n != 0 && n % units[i].unit == 0) {
      snprintf(buf, len, "%" PRId64 "%c", n / units[i].unit, units[i].suffix);
      return;
    }
  }
  snprintf(buf, len, "%" PRId64, n);
}

static void fmt_allowed(char *buf, size_t len, const sl__conf_key *k) {
  char lo[32], hi[32];
  switch (k->type) {
  case SL__CONF_INT:
    snprintf(buf, len, "%" PRId64 "..%" PRId64, k->min, k->max);
    return;
  case SL__CONF_SIZE:
    fmt_size(lo, sizeof lo, k->min);
    fmt_size(hi, sizeof hi, k->max);
    snprintf(buf, len, "%s..%s bytes; suffixes k, m, g multiply by 1024", lo,
             hi);
    return;
  case SL__CONF_BOOL:
    snprintf(buf, len, "true, false, 1, 0, yes, no, on, off");
    return;
  case SL__CONF_STRING:
    snprintf(buf, len, k->def[0] ? "any non-empty string" : "any string");
    return;
  case SL__CONF_TOPIC:
    snprintf(buf, len,
             "1 to 249 of a-z, A-Z, 0-9, '.', '_', '-'; "
             "not \".\" or \"..\"");
    return;
  case SL__CONF_ENUM: {
    size_t o = 0;
    for (const char *p = k->values; *p && o + 3 < len; p++) {
      if (*p == '|') {
        buf[o++] = ',';
        buf[o++] = ' ';
      } else {
        buf[o++] = *p;
      }
    }
    buf[o] = '\0';
    return;
  }
  }
  snprintf(buf, len, "?");
}

static int bad_value(const sl__conf_key *k, const char *value,
                     const char *problem, char *err, size_t errlen) {
  char quoted[QUOTE_MAX * 4 + 8], allowed[256];
  sl__escape(quoted, sizeof quoted, value, strlen(value), QUOTE_MAX);
  fmt_allowed(allowed, sizeof allowed, k);
  sl__errf(err, errlen, "%s: \"%s\" %s (allowed: %s)", k->name, quoted, problem,
           allowed);
  return SL_ERR_CONF;
}

int sl__conf_check(const sl__conf_key *k, const char *value, int64_t *num,
                   char *err, size_t errlen) {
  int64_t n = 0;
  int rc = PARSE_OK;
  const char *syntax = "is not valid";
  /* A string key whose default is empty is optional: empty unsets it. */
  if (*value == '\0' && !(k->type == SL__CONF_STRING && !k->def[0]))
    return bad_value(k, value, "is empty", err, errlen);
  switch (k->type) {
  case SL__CONF_INT:
    rc = parse_int(value, &n);
    syntax = "is not an integer";
    break;
  case SL__CONF_SIZE:
    rc = parse_size(value, &n);
    syntax = "is not a size";
    break;
  case SL__CONF_BOOL:
    rc = parse_bool(value, &n);
    syntax = "is not a boolean";
    break;
  case SL__CONF_ENUM:
    n = enum_index(k->values, value);
    rc = n < 0 ? PARSE_SYNTAX : PARSE_OK;
    syntax = "is not one of the allowed values";
    break;
  case SL__CONF_STRING:
    break;
  case SL__CONF_TOPIC:
    /* Kafka's own rule (Topic.validate in the Java client): a broker
     * refuses any other name, and only when the first record is sent. */
    if (strlen(value) > 249) {
      rc = PARSE_SYNTAX;
      syntax = "is longer than 249 characters";
      break;
    }
    rc = strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       "0123456789._-") != strlen(value) ||
                 !strcmp(value, ".") || !strcmp(value, "..")
             ? PARSE_SYNTAX
             : PARSE_OK;
    syntax = "is not a valid Kafka topic name";
    break;
  }
  if (rc == PARSE_SYNTAX)
    return bad_value(k, value, syntax, err, errlen);
  if (rc == PARSE_OVERFLOW ||
      ((k->type == SL__CONF_INT || k->type == SL__CONF_SIZE) &&
       (n < k->min || n > k->max)))
    return bad_value(k, value, "is out of range", err, errlen);
  if (num)
    *num = n;
  return SL_OK;
}

/* ---- the map ------------------------------------------------------------ */

sl_conf_t *sl_conf_new(void) {
  return calloc(1, sizeof(sl_conf_t));
}

static void entries_free(entry *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i].key);
    free(v[i].value);
  }
  free(v);
}

void sl_conf_destroy(sl_conf_t *conf) {
  if (!conf)
    return;
  entries_free(conf->v, conf->n);
  free(conf);
}

sl_conf_t *sl_conf_dup(const sl_conf_t *conf) {
  if (!conf)
    return NULL;
  sl_conf_t *d = sl_conf_new();
  if (!d)
    return NULL;
  d->log_fn = conf->log_fn;
  d->log_opaque = conf->log_opaque;
  if (conf->n == 0)
    return d;
  d->v = calloc(conf->n, sizeof(entry));
  if (!d->v)
    goto oom;
  d->cap = conf->n;
  for (size_t i = 0; i < conf->n; i++) {
    const entry *src = &conf->v[i];
    entry *e = &d->v[d->n++];
    e->def = src->def;
    e->num = src->num;
    e->key = sl__strdup(src->key);
    e->value = sl__strdup(src->value);
    if (!e->key || !e->value)
      goto oom;
  }
  return d;
oom:
  sl_conf_destroy(d);
  return NULL;
}

/* librdkafka's bootstrap.servers and its older alias. */
static bool is_broker_list(const char *key) {
  return strcmp(key, KAFKA_PREFIX "bootstrap.servers") == 0 ||
         strcmp(key, KAFKA_PREFIX "metadata.broker.list") == 0;
}

int sl_conf_set(sl_conf_t *conf, const char *key, const char *value, char *err,
                size_t errlen) {
  sl__errf(err, errlen, "%s", "");
  if (!conf || !key) {
    sl__errf(err, errlen, "sl_conf_set: conf and key must not be NULL");
    return SL_ERR_INVAL;
  }
  const sl__conf_key *def = key_find(key);
  if (!def) {
    char quoted[QUOTE_MAX * 4 + 8];
    sl__escape(quoted, sizeof quoted, key, strlen(key), QUOTE_MAX);
    if (strncmp(key, KAFKA_PREFIX, KAFKA_PREFIX_LEN) != 0) {
      sl__errf(err, errlen, "unknown configuration key \"%s\"", quoted);
      return SL_ERR_CONF;
    }
    if (key[KAFKA_PREFIX_LEN] == '\0') {
      sl__errf(err, errlen,
               "configuration key \"%s\" lacks the librdkafka property name "
               "after \"" KAFKA_PREFIX "\"",
               quoted);
      return SL_ERR_CONF;
    }
  }

  size_t idx = 0;
  entry *e = entry_find(conf, key, &idx);
  if (!value) {
    /* Reset: the key counts as never set, so setting it again later
     * places it last in foreach order. */
    if (e) {
      free(e->key);
      free(e->value);
      memmove(&conf->v[idx], &conf->v[idx + 1],
              (conf->n - idx - 1) * sizeof(entry));
      conf->n--;
    }
    return SL_OK;
  }

  char *v = trim_dup(value);
  if (!v) {
    sl__errf(err, errlen, "%s: out of memory", key);
    return SL_ERR_NOMEM;
  }
  int64_t num = 0;
  /* kafka.* values go to librdkafka as they are; it validates them when
   * the job creates its clients. */
  if (def) {
    int rc = sl__conf_check(def, v, &num, err, errlen);
    if (rc != SL_OK) {
      free(v);
      return rc;
    }
  } else if (is_broker_list(key) && v[strspn(v, ", \t")] == '\0') {
    /* The one kafka.* value checked here: librdkafka accepts a list
     * without brokers and then retries for broker.timeout.ms. */
    char quoted[QUOTE_MAX * 4 + 8];
    sl__escape(quoted, sizeof quoted, v, strlen(v), QUOTE_MAX);
    sl__errf(err, errlen,
             "%s: \"%s\" names no broker (allowed: a comma-separated list "
             "of host:port)",
             key, quoted);
    free(v);
    return SL_ERR_CONF;
  }
  if (e) {
    free(e->value);
    e->value = v;
    e->num = num;
    return SL_OK;
  }

  if (conf->n == conf->cap) {
    size_t cap = conf->cap ? conf->cap * 2 : 8;
    entry *nv = realloc(conf->v, cap * sizeof(entry));
    if (!nv) {
      free(v);
      sl__errf(err, errlen, "%s: out of memory", key);
      return SL_ERR_NOMEM;
    }
    conf->v = nv;
    conf->cap = cap;
  }
  char *k = sl__strdup(key);
  if (!k) {
    free(v);
    sl__errf(err, errlen, "%s: out of memory", key);
    return SL_ERR_NOMEM;
  }
  conf->v[conf->n++] = (entry){.key = k, .value = v, .def = def, .num = num};
  return SL_OK;
}

const char *sl_conf_get(const sl_conf_t *conf, const char *key) {
  if (!key)
    return NULL;
  const entry *e = conf ? entry_find(conf, key, NULL) : NULL;
  if (e)
    return e->value;
  const sl__conf_key *def = key_find(key);
  return def ? def->def : NULL;
}

int sl_conf_foreach(const sl_conf_t *conf,
                    int (*fn)(const char *key, const char *value, void *opaque),
                    void *opaque) {
  if (!conf || !fn)
    return 0;
  for (size_t i = 0; i < conf->n; i++) {
    int rc = fn(conf->v[i].key, conf->v[i].value, opaque);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Words that mark a key as holding a secret, matched anywhere in the key
 * without regard to case: wide on purpose, since showing a secret costs
 * more than hiding a harmless value (ssl.key.location is only a path). */
static const char *const secret_words[] = {
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "jaas",
    "oauthbearer.config",
    "ssl.key",
    "keystore",
    "private.key",
    "api.key",
    "apikey",
};

int sl_conf_is_secret(const char *key) {
  if (!key)
    return 0;
  for (size_t i = 0; i < sizeof(secret_words) / sizeof(secret_words[0]); i++)
    if (strcasestr(key, secret_words[i]))
      return 1;
  return 0;
}

/* ---- typed getters ------------------------------------------------------ */

static int64_t value_num(const sl_conf_t *conf, const sl__conf_key *k) {
  const entry *e = conf ? entry_find(conf, k->name, NULL) : NULL;
  if (e)
    return e->num;
  int64_t n = 0;
  int rc = sl__conf_check(k, k->def, &n, NULL, 0);
  assert(rc == SL_OK && "key table default fails its own validation");
  (void)rc;
  return n;
}

int64_t sl__conf_int(const sl_conf_t *conf, const char *key) {
  const sl__conf_key *k = key_find(key);
  assert(k && "sl__conf_int: key not in the table");
  assert(k && (k->type == SL__CONF_INT || k->type == SL__CONF_SIZE));
  return k ? value_num(conf, k) : 0;
}

bool sl__conf_bool(const sl_conf_t *conf, const char *key) {
  const sl__conf_key *k = key_find(key);
  assert(k && "sl__conf_bool: key not in the table");
  assert(k && k->type == SL__CONF_BOOL);
  return k ? value_num(conf, k) != 0 : false;
}

const char *sl__conf_str(const sl_conf_t *conf, const char *key) {
  const sl__conf_key *k = key_find(key);
  assert(k && "sl__conf_str: key not in the table");
  return k ? sl_conf_get(conf, key) : NULL;
}

int sl__conf_enum(const sl_conf_t *conf, const char *key) {
  const sl__conf_key *k = key_find(key);
  assert(k && "sl__conf_enum: key not in the table");
  assert(k && k->type == SL__CONF_ENUM);
  return k ? (int)value_num(conf, k) : 0;
}

/* ---- files -------------------------------------------------------------- */

/* Large enough for any sl_conf_set() message plus a path:line prefix. */
#define MSG_MAX 1024

static int read_all(const char *path, char **out, size_t *outlen) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return -1;
  size_t len = 0, cap = 4096;
  char *buf = malloc(cap);
  if (!buf) {
    fclose(f);
    errno = ENOMEM;
    return -1;
  }
  for (;;) {
    if (len == cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        fclose(f);
        errno = ENOMEM;
        return -1;
      }
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0)
      break;
  }
  if (ferror(f)) {
    int saved = errno ? errno : EIO;
    free(buf);
    fclose(f);
    errno = saved;
    return -1;
  }
  fclose(f);
  *out = buf;
  *outlen = len;
  return 0;
}

static int load_properties(sl_conf_t *conf, const char *path, const char *buf,
                           size_t len, char *err, size_t errlen) {
  char msg[MSG_MAX];
  const char *p = buf, *end = buf + len;
  /* Editors on some systems write a UTF-8 byte order mark. */
  if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
    p += 3;
  for (size_t line = 1; p < end; line++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *s = p, *e = nl ? nl : end;
    p = nl ? nl + 1 : end;
    if (memchr(s, '\0', (size_t)(e - s))) {
      sl__errf(err, errlen, "%s:%zu: line contains a NUL byte", path, line);
      return SL_ERR_CONF;
    }
    trim(&s, &e);
    if (s == e || *s == '#')
      continue;
    const char *eq = memchr(s, '=', (size_t)(e - s));
    if (!eq || eq == s) {
      char quoted[QUOTE_MAX * 4 + 8];
      sl__escape(quoted, sizeof quoted, s, (size_t)(e - s), QUOTE_MAX);
      /* A line such as "kafka.sasl.password s3cret" (no '=') would show
       * the secret in the message: name the line only. */
      if (sl_conf_is_secret(quoted))
        snprintf(quoted, sizeof quoted, "(not shown: it names a secret)");
      sl__errf(err, errlen, "%s:%zu: expected \"key = value\", got \"%s\"",
               path, line, quoted);
      return SL_ERR_CONF;
    }
    const char *ke = eq;
    trim(&s, &ke);
    char *key = dup_range(s, ke);
    char *value = dup_range(eq + 1, e); /* sl_conf_set() trims it */
    int rc = key && value ? sl_conf_set(conf, key, value, msg, sizeof msg)
                          : SL_ERR_NOMEM;
    free(key);
    free(value);
    if (rc != SL_OK) {
      sl__errf(err, errlen, "%s:%zu: %s", path, line,
               rc == SL_ERR_NOMEM ? "out of memory" : msg);
      return rc;
    }
  }
  return SL_OK;
}

/* Whether text mentions a key that holds a secret (sl_conf_is_secret). */
static bool names_secret(const char *text, size_t len) {
  for (size_t w = 0; w < sizeof(secret_words) / sizeof(secret_words[0]); w++) {
    size_t n = strlen(secret_words[w]);
    for (size_t i = 0; i + n <= len; i++)
      if (strncasecmp(text + i, secret_words[w], n) == 0)
        return true;
  }
  return false;
}

static int load_json(sl_conf_t *conf, const char *path, const char *buf,
                     size_t len, char *err, size_t errlen) {
  char msg[MSG_MAX], quoted[QUOTE_MAX * 4 + 8];
  json_error_t je;
  json_t *root =
      json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
  if (!root) {
    /* jansson quotes the text "near" the error, which may be part of a
     * secret's value: a file that names a secret gets the position only. */
    char *near = strstr(je.text, " near ");
    if (near && names_secret(buf, len))
      *near = 0;
    sl__errf(err, errlen, "%s:%d:%d: invalid JSON: %s", path, je.line,
             je.column, je.text);
    return SL_ERR_CONF;
  }
  if (!json_is_object(root)) {
    json_decref(root);
    sl__errf(err, errlen, "%s: the top-level value must be a JSON object",
             path);
    return SL_ERR_CONF;
  }
  int rc = SL_OK;
  const char *key;
  json_t *v;
  json_object_foreach(root, key, v) {
    char num[32], *owned = NULL;
    const char *text = NULL;
    bool reported = false;
    switch (json_typeof(v)) {
    case JSON_STRING:
      text = json_string_value(v);
      break;
    case JSON_INTEGER:
      snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
      text = num;
      break;
    case JSON_REAL:
      text = owned = sl_json_dumps(v, NULL);
      if (!owned)
        rc = SL_ERR_NOMEM;
      break;
    case JSON_TRUE:
      text = "true";
      break;
    case JSON_FALSE:
      text = "false";
      break;
    case JSON_OBJECT:
    case JSON_ARRAY:
    case JSON_NULL:
      sl__escape(quoted, sizeof quoted, key, strlen(key), QUOTE_MAX);
      sl__errf(err, errlen,
               "%s: member \"%s\": %s is not allowed (use a string, number "
               "or boolean)",
               path, quoted,
               json_is_object(v)  ? "an object"
               : json_is_array(v) ? "an array"
                                  : "null");
      rc = SL_ERR_CONF;
      reported = true;
      break;
    }
    if (rc == SL_OK)
      rc = sl_conf_set(conf, key, text, msg, sizeof msg);
    free(owned);
    if (rc != SL_OK) {
      if (!reported)
        sl__errf(err, errlen, "%s: %s", path,
                 rc == SL_ERR_NOMEM ? "out of memory" : msg);
      break;
    }
  }
  json_decref(root);
  return rc;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

int sl_conf_load_file(sl_conf_t *conf, const char *path, char *err,
                      size_t errlen) {
  sl__errf(err, errlen, "%s", "");
  if (!conf || !path) {
    sl__errf(err, errlen, "sl_conf_load_file: conf and path must not be NULL");
    return SL_ERR_INVAL;
  }
  char *buf;
  size_t len;
  if (read_all(path, &buf, &len) != 0) {
    int saved = errno;
    sl__errf(err, errlen, "%s: cannot read: %s", path, strerror(saved));
    return saved == ENOMEM ? SL_ERR_NOMEM : SL_ERR_IO;
  }
  /* All-or-nothing: apply to a copy and swap only when every line passed,
   * so a typo on line 40 cannot leave lines 1-39 half applied. */
  sl_conf_t *tmp = sl_conf_dup(conf);
  if (!tmp) {
    free(buf);
    sl__errf(err, errlen, "%s: out of memory", path);
    return SL_ERR_NOMEM;
  }
  int rc = ends_with(path, ".json")
               ? load_json(tmp, path, buf, len, err, errlen)
               : load_properties(tmp, path, buf, len, err, errlen);
  free(buf);
  if (rc == SL_OK) {
    sl_conf_t swap = *conf;
    *conf = *tmp;
    *tmp = swap;
  }
  sl_conf_destroy(tmp);
  return rc;
}
