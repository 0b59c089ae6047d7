/* SPDX-License-Identifier: Apache-2.0 */
/* scoring-job: a real-time feature pipeline and model scorer. Per user
 * (keyed state with event-time TTL) it keeps sliding-horizon counts and
 * sums, distinct pages, session statistics and the time since the last
 * event; the latest features are queryable (the online feature store:
 * GET /state/features/features?key=<user>). Each event is scored by the
 * model in force at its event time: the --model file, then the versions
 * that arrive on the models topic (broadcast state). Scores go to Kafka
 * as JSON. */
#include <inttypes.h>
#include <sluice/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/exjob.h"
#include "../common/exutil.h"
#include "userfeatures.h"
#include "model.h"

#define PROG "scoring-job"
#define MAX_VERSIONS 64

typedef struct app {
  sc_model *file_model; /* in force before every published version */
} app;

static int parse(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  sc_event e;
  if (!sc_event_parse(rec->value, rec->value_len, &e))
    return SL_ERR_DECODE; /* error.policy decides */
  e.in_ms = ex_wall_ms();
  sl_record_t r = {e.user, strlen(e.user), &e, sizeof(e), e.ts};
  return sl_emit(ctx, &r);
}

/* Map keys that sort by (ts, id) bytewise: signed ts big-endian, then id. */
static void be64(int64_t v, unsigned char b[8]) {
  uint64_t u = (uint64_t)v ^ (1ULL << 63);
  for (int i = 7; i >= 0; i--, u >>= 8)
    b[i] = (unsigned char)u;
}

static int64_t from_be64(const unsigned char b[8]) {
  uint64_t u = 0;
  for (int i = 0; i < 8; i++)
    u = u << 8 | b[i];
  return (int64_t)(u ^ (1ULL << 63));
}

typedef struct version {
  int64_t from;
  sc_model *model;
} version;

typedef struct inst {
  sl_state_t *pending;     /* (ts, id) -> sc_event, until the watermark */
  sl_state_t *user;        /* sc_user */
  sl_state_t *features;    /* JSON text of the latest features: queryable */
  sl_bstate_t *models;     /* big-endian effective ts -> model JSON */
  version v[MAX_VERSIONS]; /* the parsed models, by effective ts */
  size_t n_v;
} inst;

static void drop_versions(inst *in) {
  for (size_t i = 0; i < in->n_v; i++)
    sc_model_free(in->v[i].model);
  in->n_v = 0;
}

static int f_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  inst *in = calloc(1, sizeof(*in));
  if (!in)
    return SL_ERR_NOMEM;
  sl_ctx_set_local(ctx, in);
  /* A user silent for a day of event time is forgotten. */
  sl_state_ttl_t day = {.ttl_ms = 24LL * 3600 * 1000,
                        .time = SL_TTL_EVENT_TIME};
  sl_state_desc_t p = {.name = "pending", .kind = SL_STATE_MAP};
  sl_state_desc_t u = {.name = "user", .kind = SL_STATE_VALUE, .ttl = day};
  sl_state_desc_t f = {.name = "features",
                       .kind = SL_STATE_VALUE,
                       .ttl = day,
                       .queryable = true};
  in->pending = sl_state_register(ctx, &p);
  in->user = sl_state_register(ctx, &u);
  in->features = sl_state_register(ctx, &f);
  in->models = sl_bstate_register(ctx, "models");
  return in->pending && in->user && in->features && in->models ? 0
                                                               : SL_ERR_STATE;
}

static void f_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  inst *in = sl_ctx_local(ctx);
  if (in)
    drop_versions(in);
  free(in);
}

/* Parses the broadcast state's versions again when they changed (a new
 * one arrived, or a restore brought them back). */
static int sync_versions(sl_ctx_t *ctx, inst *in) {
  if (in->n_v == sl_bstate_size(ctx, in->models))
    return 0;
  drop_versions(in);
  sl_bstate_iter_t it;
  const void *mk, *val;
  size_t mkl, vl;
  sl_bstate_iter(ctx, in->models, &it);
  while (sl_bstate_next(&it, &mk, &mkl, &val, &vl) == 1) {
    char err[256];
    sc_model *m = sc_model_parse(val, vl, err, sizeof(err));
    if (!m || mkl != 8 || in->n_v == MAX_VERSIONS) {
      sc_model_free(m);
      return SL_ERR_STATE;
    }
    in->v[in->n_v++] = (version){from_be64(mk), m};
  }
  return 0;
}

/* A model version: {"ts":<effective from>,"model":{...}} with the record's
 * time the effective time. A bad model is rejected (error.policy) before
 * it reaches broadcast state, so every instance keeps the same versions. */
static int f_broadcast(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  inst *in = sl_ctx_local(ctx);
  json_t *j = json_loadb(rec->value, rec->value_len, 0, NULL);
  char *text = j ? json_dumps(json_object_get(j, "model"), JSON_COMPACT) : NULL;
  json_decref(j);
  char err[256];
  sc_model *m =
      text ? sc_model_parse(text, strlen(text), err, sizeof(err)) : NULL;
  int rc = SL_ERR_DECODE;
  if (m && sl_bstate_size(ctx, in->models) < MAX_VERSIONS) {
    unsigned char k[8];
    be64(rec->ts, k);
    rc = sl_bstate_put(ctx, in->models, k, 8, text, strlen(text));
  }
  sc_model_free(m);
  free(text);
  /* A version may replace one of the same time: parse them all again. */
  drop_versions(in);
  return rc ? rc : sync_versions(ctx, in);
}

static int f_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  inst *in = sl_ctx_local(ctx);
  sc_event e;
  if (rec->value_len != sizeof(e))
    return SL_ERR_INVAL;
  memcpy(&e, rec->value, sizeof(e));
  unsigned char k[8 + sizeof(e.id)];
  be64(e.ts, k);
  size_t idl = strlen(e.id);
  memcpy(k + 8, e.id, idl);
  int rc = sl_map_put(ctx, in->pending, k, 8 + idl, &e, sizeof(e));
  return rc ? rc : sl_timer_set(ctx, SL_EVENT_TIME, e.ts);
}

static int by_ts_id(const void *a, const void *b) {
  const sc_event *x = a, *y = b;
  if (x->ts != y->ts)
    return x->ts < y->ts ? -1 : 1;
  return strcmp(x->id, y->id);
}

/* The model in force at ts: the latest version effective at or before
 * it. Every version up to ts has arrived once the watermark, the minimum
 * over both inputs, has passed ts: the choice depends on event time only,
 * not on how the two inputs interleave. */
static const sc_model *model_at(const inst *in, const app *a, int64_t ts) {
  const sc_model *m = a->file_model;
  for (size_t i = 0; i < in->n_v && in->v[i].from <= ts; i++)
    m = in->v[i].model;
  return m;
}

static int score(sl_ctx_t *ctx, inst *in, const app *a, sc_user *u,
                 const sc_event *e) {
  double f[SC_N_FEATURES];
  sc_user_add(u, e, f);
  char fj[1024];
  int n = sc_features_json(f, e->ts, fj, sizeof(fj));
  int rc = sl_value_put(ctx, in->features, fj, (size_t)n);
  if (rc)
    return rc;
  const sc_model *m = model_at(in, a, e->ts);
  char *out = sl_ctx_alloc(ctx, 256);
  if (!out)
    return SL_ERR_NOMEM;
  n = snprintf(out, 256,
               "{\"id\":\"%s\",\"user\":\"%s\",\"ts\":%" PRId64
               ",\"model\":\"%s\",\"score\":%.17g,\"in_ms\":%" PRId64
               ",\"out_ms\":%" PRId64 "}",
               e->id, e->user, e->ts, sc_model_name(m), sc_model_score(m, f),
               e->in_ms, ex_wall_ms());
  sl_record_t r = {e->user, strlen(e->user), out, (size_t)n, e->ts};
  return sl_emit(ctx, &r);
}

/* The watermark passed ts: score the user's events up to ts in (ts, id)
 * order, so the features are those of event-time order whatever the
 * order of arrival. */
static int f_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d;
  app *a = opaque;
  inst *in = sl_ctx_local(ctx);
  int rc = sync_versions(ctx, in);
  if (rc)
    return rc;
  /* A user's pending events are those of the last watermark bound: few. */
  sc_event *due = NULL;
  size_t n = 0, cap = 0;
  sl_map_iter_t it;
  const void *mk, *val;
  size_t mkl, vl;
  if ((rc = sl_map_iter(ctx, in->pending, &it)))
    return rc;
  while ((rc = sl_map_next(&it, &mk, &mkl, &val, &vl)) == 1) {
    if (vl != sizeof(sc_event)) {
      rc = SL_ERR_STATE;
      break;
    }
    if (n == cap) {
      sc_event *nd = realloc(due, (cap = cap ? 2 * cap : 8) * sizeof(*due));
      if (!nd) {
        rc = SL_ERR_NOMEM;
        break;
      }
      due = nd;
    }
    memcpy(&due[n], val, sizeof(sc_event));
    n += due[n].ts <= ts;
  }
  /* Removed after the iteration (the state must not change during it). */
  for (size_t i = 0; rc >= 0 && i < n; i++) {
    unsigned char k[8 + sizeof(due[i].id)];
    size_t idl = strlen(due[i].id);
    be64(due[i].ts, k);
    memcpy(k + 8, due[i].id, idl);
    rc = sl_map_remove(ctx, in->pending, k, 8 + idl);
  }
  if (rc < 0) {
    free(due);
    return rc;
  }
  qsort(due, n, sizeof(due[0]), by_ts_id);
  sc_user u;
  const void *v;
  size_t len;
  if (sl_value_get(ctx, in->user, &v, &len) == 1 && len == sizeof(u))
    memcpy(&u, v, sizeof(u));
  else
    sc_user_init(&u);
  rc = 0;
  for (size_t i = 0; !rc && i < n; i++)
    rc = score(ctx, in, a, &u, &due[i]);
  free(due);
  return rc ? rc : sl_value_put(ctx, in->user, &u, sizeof(u));
}

/* --no-score: each event's id and time, keyed by user, instead of its
 * features and score: the same reading, parsing, exchange and writing,
 * the baseline of the scoring benchmark (bench/scoring.sh). */
static int unscored(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                    void *opaque) {
  (void)opaque;
  sc_event e;
  if (in->value_len != sizeof(e))
    return SL_ERR_INVAL;
  memcpy(&e, in->value, sizeof(e));
  char *v = sl_ctx_alloc(ctx, 128);
  if (!v)
    return SL_ERR_NOMEM;
  out->value = v;
  out->value_len = (size_t)snprintf(
      v, 128, "{\"id\":\"%s\",\"user\":\"%s\",\"ts\":%" PRId64 "}", e.id,
      e.user, e.ts);
  return 0;
}

int main(int argc, char **argv) {
  /* --model FILE and --no-score are ours; the rest are the examples'
   * common flags. */
  const char *model_path = "examples/scoring/models/lr.json";
  bool no_score = false;
  int n = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc)
      model_path = argv[++i];
    else if (!strcmp(argv[i], "--no-score"))
      no_score = true;
    else
      argv[n++] = argv[i];
  }
  char err[256];
  app a = {sc_model_load(model_path, err, sizeof(err))};
  if (!a.file_model) {
    fprintf(stderr, PROG ": %s\n", err);
    return 1;
  }
  ex_job ej;
  if (ex_job_init(&ej, n, argv, PROG, "scoring",
                  "examples/scoring/scoring.conf", "scoring.events",
                  "scoring.scores"))
    return 1;
  sl_stream_t *events = ex_job_parse(&ej, parse);
  if (no_score) {
    sl_stream_t *ids =
        sl_map(sl_key_by(events, NULL, NULL), "features", unscored, NULL);
    ex_job_sink_alerts(&ej, &ids, 1);
    int rc = ex_job_run(&ej);
    sc_model_free(a.file_model);
    return rc;
  }
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST,
                               .codec = SL_KAFKA_JSON,
                               .ts_pointer = "/ts",
                               .stop = ej.exit_at_end ? SL_KAFKA_STOP_LATEST
                                                      : SL_KAFKA_STOP_NONE};
  /* Unbounded, a quiet models topic must not hold back scoring: idle
   * after a second. Bounded, it ends once read. */
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED,
                            .idle_timeout_ms = ej.exit_at_end ? 0 : 1000};
  sl_stream_t *models = sl_with_watermarks(
      sl_source_kafka(ej.job, "models", "scoring.models", &so), &wm);
  sl_broadcast_process_ops_t ops = {.open = f_open,
                                    .on_element = f_element,
                                    .on_broadcast = f_broadcast,
                                    .on_timer = f_timer,
                                    .close = f_close};
  sl_stream_t *scores =
      sl_broadcast_process(sl_key_by(events, NULL, NULL), sl_broadcast(models),
                           "features", &ops, &a);
  ex_job_sink_alerts(&ej, &scores, 1);
  int rc = ex_job_run(&ej);
  sc_model_free(a.file_model);
  return rc;
}
