/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/harness.h — drives one operator by hand, as Flink's operator test
 * harnesses and Kafka Streams' TopologyTestDriver do: push records and
 * watermarks, move processing time, read the outputs. It runs the real
 * operator, state backend and timer code on the calling thread (a job of
 * parallelism 1 whose worker is driven step by step), with a manual clock. */
#ifndef SLUICE_HARNESS_H
#define SLUICE_HARNESS_H

#include <stdbool.h>

#include "sluice/job.h"
#include "sluice/process.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_harness sl_harness_t;

/* Adds the operator under test to n input streams and returns its output
 * stream (NULL on error). inputs are keyed by the record's key when the
 * harness was created with keyed = true. */
typedef sl_stream_t *(*sl_harness_build_fn)(sl_stream_t *const *inputs,
                                            size_t n, void *opaque);

/* Creates a harness for the operator that build adds to n_inputs (1 or 2)
 * inputs. side_tags is a NULL-terminated list of side outputs to capture
 * (may be NULL). conf may be NULL; it is consumed on success (parallelism
 * is forced to 1). The manual clock starts at 0. Returns NULL with a
 * message in err on failure (conf is then still the caller's). */
SL_API sl_harness_t *sl_harness_new(sl_conf_t *conf, size_t n_inputs,
                                    bool keyed, sl_harness_build_fn build,
                                    void *opaque, const char *const *side_tags,
                                    char *err, size_t errlen);

/* Shortcut: a harness around sl_process(keyed input, "process", ops,
 * opaque), capturing side_tags. */
SL_API sl_harness_t *sl_harness_new_process(sl_conf_t *conf,
                                            const sl_process_ops_t *ops,
                                            void *opaque,
                                            const char *const *side_tags,
                                            char *err, size_t errlen);

/* Snapshot and restore (Flink's snapshot / initializeState): the
 * operator's keyed state, timers and operator state, as the bytes of a
 * checkpoint's worker file. sl_harness_snapshot() takes it between two
 * calls and sets *data (malloc'd; the caller frees it) and *len; SL_OK or
 * the error (the harness is then failed). sl_harness_new_restored() is
 * sl_harness_new() whose operator starts from such a snapshot; the
 * operator must have the same uid, and the harness the same
 * max.parallelism. NULL with a message in err for a damaged snapshot. */
SL_API int sl_harness_snapshot(sl_harness_t *h, void **data, size_t *len);
SL_API sl_harness_t *
sl_harness_new_restored(sl_conf_t *conf, size_t n_inputs, bool keyed,
                        sl_harness_build_fn build, void *opaque,
                        const char *const *side_tags, const void *snapshot,
                        size_t len, char *err, size_t errlen);

/* Everything the constructors above take, plus the job's name and
 * state.dir. Each harness is a job of its own: with the rocksdb backend it
 * keeps its working state in <state.dir>/<job name>/ and locks that
 * directory while it lives, so harnesses that live at the same time (in
 * one process or in test processes running side by side) need different
 * names or state directories. */
typedef struct sl_harness_opts {
  size_t n_inputs; /* 1 or 2 */
  bool keyed;
  sl_harness_build_fn build;
  void *opaque;
  const char *const *side_tags; /* NULL-terminated, may be NULL */
  const char *job_name;         /* NULL: "harness" */
  const char *state_dir;        /* NULL: conf's state.dir */
  /* A snapshot from sl_harness_snapshot() to start from; NULL: a fresh
   * start. */
  const void *snapshot;
  size_t snapshot_len;
} sl_harness_opts_t;

/* sl_harness_new() or, with opts->snapshot, sl_harness_new_restored(),
 * with opts' job name and state.dir (set in conf, which is consumed on
 * success as there). opts and its strings are copied. NULL with a message
 * in err on failure. */
SL_API sl_harness_t *sl_harness_new_opts(sl_conf_t *conf,
                                         const sl_harness_opts_t *opts,
                                         char *err, size_t errlen);

/* Frees the harness (closing the operator). NULL is a no-op. */
SL_API void sl_harness_destroy(sl_harness_t *h);

/* Pushes one record into input `input`; it is processed before the call
 * returns. Returns SL_OK, or the error that failed the operator
 * (sl_harness_errmsg() says why); after a failure every call fails. */
SL_API int sl_harness_push(sl_harness_t *h, size_t input,
                           const sl_record_t *rec);

/* Shortcut for string key and value. */
SL_API int sl_harness_push_kv(sl_harness_t *h, size_t input, const char *key,
                              const char *value, int64_t ts);

/* Advances input's watermark to wm (lower values are ignored, as watermarks
 * only advance); due event-time timers fire before this returns. */
SL_API int sl_harness_watermark(sl_harness_t *h, size_t input, int64_t wm);

/* Sets processing time (never backwards); due processing-time timers fire
 * before this returns. */
SL_API int sl_harness_set_time(sl_harness_t *h, int64_t now_ms);

/* Ends every input: the maximum watermark, then end of input. */
SL_API int sl_harness_end(sl_harness_t *h);

/* Captured outputs of the main output (tag NULL) or a side output, in
 * emission order. Records are owned by the harness, valid until their
 * output is cleared (sl_harness_clear(), sl_harness_clear_output()) or
 * sl_harness_destroy(); i out of range gives NULL. */
SL_API size_t sl_harness_count(const sl_harness_t *h, const char *tag);
SL_API const sl_record_t *sl_harness_get(const sl_harness_t *h, const char *tag,
                                         size_t i);
/* Forgets every captured record. */
SL_API void sl_harness_clear(sl_harness_t *h);
/* Forgets the captured records of one output: the main output (tag NULL)
 * or the side output tag; the others keep theirs. SL_OK, or
 * SL_ERR_NOTFOUND for a tag the harness does not capture (SL_ERR_INVAL for
 * h NULL). */
SL_API int sl_harness_clear_output(sl_harness_t *h, const char *tag);

/* The last watermark that reached the main output (SL_TS_MIN if none). */
SL_API int64_t sl_harness_output_watermark(const sl_harness_t *h);

/* The job under the harness, e.g. for sl_job_op_stats(). */
SL_API sl_job_t *sl_harness_job(sl_harness_t *h);
SL_API const char *sl_harness_errmsg(const sl_harness_t *h);

#ifdef __cplusplus
}
#endif
#endif
