/* SPDX-License-Identifier: Apache-2.0 */
/* Running a Nexmark query as a job over generated events (driver.c): the
 * options the benchmark and the tests share. */
#ifndef NX_DRIVER_H
#define NX_DRIVER_H

#include "nexmark.h"

typedef struct nx_run_opts {
  const nx_query *query;
  nx_config gen;
  nx_query_conf qc;
  uint64_t events;
  int parallelism;
  const char *backend;   /* state.backend */
  const char *state_dir; /* state.dir, NULL for the default */
  int64_t watermark_bound_ms;
  sl_clock_t *clock; /* processing time; NULL: the system clock */
  sl_record_fn sink; /* called for every output record */
  void *sink_opaque;
  /* Optional, for tests: called by source subtask `subtask` (which runs
   * on the worker of that index) before it makes event i, and with i =
   * events at the end; true makes it wait and ask again on the next poll. */
  bool (*hold)(sl_job_t *job, int subtask, uint64_t i, void *opaque);
  void *hold_opaque;
} nx_run_opts;

/* 10^7 events, P=1, hashmap, 4 s watermark bound, default generator. */
void nx_run_opts_default(nx_run_opts *o);

/* The generated event stream of o as a parallel source with watermarks;
 * *state (freed by the caller after the job) holds the positions. */
sl_stream_t *nx_events_source(sl_job_t *job, const nx_run_opts *o,
                              void **state);

/* A job named "nexmark-<query>" with o's parallelism and backend. */
sl_job_t *nx_job_new(const nx_run_opts *o, char *err, size_t errlen);

/* Builds and runs the query; SL_OK or an error (err says why). */
int nx_run(const nx_run_opts *o, char *err, size_t errlen);

#endif
