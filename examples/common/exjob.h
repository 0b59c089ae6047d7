/* SPDX-License-Identifier: Apache-2.0 */
/* The parts the fraud and botdetect jobs share: command line and config
 * file, the Kafka source with event time from the record, the alerts
 * sink, and running until stopped or, with --exit-at-end, until every
 * partition was read up to where it ended when the job started and every
 * alert was written. */
#ifndef EX_JOB_H
#define EX_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include <sluice.h>

/* Bounded out-of-orderness of the input's watermarks: the generators delay
 * records by at most 2 s (--max-delay-ms), so none is ever late. */
#define EX_WATERMARK_BOUND_MS 5000

typedef struct ex_job {
  const char *prog;
  sl_job_t *job;
  const char *in_topic;
  const char *alerts_topic;
  bool print;       /* also write each alert to stdout */
  bool exit_at_end; /* bounded input: the offsets latest at the start */
  int64_t bound_ms; /* out-of-orderness bound of the watermarks */
} ex_job;

/* Parses the common flags (prints usage with `extra_usage` and exits on a
 * bad command line: these are programs), loads the config file, points
 * kafka.bootstrap.servers at --brokers or the dev broker, and creates the
 * job named `name`. Returns 0, or 1 after printing why. */
int ex_job_init(ex_job *ej, int argc, char **argv, const char *prog,
                const char *name, const char *default_conf,
                const char *in_topic, const char *alerts_topic);

/* Example-specific flags for ex_job_init_ext: called with a flag the
 * common ones do not include and the argument after it (NULL when it is
 * the last); returns how many arguments it used (1: the flag alone, 2:
 * with its value), or 0 for a flag it does not know either (a usage
 * error). It may exit(2) on a bad value, as the common flags do. */
typedef int (*ex_job_flag_fn)(const char *flag, const char *value,
                              void *opaque);

/* ex_job_init with the example's own flags; extra_usage (may be NULL) is
 * appended to the usage line. */
int ex_job_init_ext(ex_job *ej, int argc, char **argv, const char *prog,
                    const char *name, const char *default_conf,
                    const char *in_topic, const char *alerts_topic,
                    const char *extra_usage, ex_job_flag_fn flag, void *opaque);

/* The input: JSON records from in_topic, event time from the "ts" member,
 * bounded out-of-orderness watermarks per partition. With --exit-at-end
 * the source is bounded (SL_KAFKA_STOP_LATEST): it reads what each
 * partition held when the job started, and the job then ends. */
sl_stream_t *ex_job_source(ex_job *ej);

/* Another JSON input like ex_job_source's (uid, topic): bounded the same
 * way with --exit-at-end. Without it, idle_ms > 0 marks a partition idle
 * after that much processing time without records, so that a quiet
 * topic (rules) does not hold the job's watermark back; bounded, no
 * idleness: the source ends once it has read what the topic held, and
 * until then its watermark is exact. */
sl_stream_t *ex_job_kafka_source(ex_job *ej, const char *uid, const char *topic,
                                 int64_t idle_ms);

/* The job's parse step: a flat_map (uid "parse", opaque ej) over
 * ex_job_source() that turns each JSON record into the job's own record,
 * or returns SL_ERR_DECODE for one it rejects (error.policy decides). Its
 * rejections count among the "bad records skipped" ex_job_run() reports,
 * with what the source could not decode. */
sl_stream_t *ex_job_parse(ex_job *ej, sl_record_fn parse);

/* Writes the union of the alert streams to alerts_topic (uid "alerts"),
 * keyed by entity, echoing them to stdout with --print. SL_OK or an
 * error (recorded in the job). */
int ex_job_sink_alerts(ex_job *ej, sl_stream_t **alerts, size_t n);

/* Emits one alert as JSON:
 * {"id":"<rule>/<entity>/<start>-<end>","rule","entity","start","end",
 *  "evidence":{<evidence>}} with key = entity. The id names the alert for
 * deduplication: a replay after a restart emits the same id again, and two
 * different alerts of a rule and entity never cover the same span. */
int ex_alert_emit(sl_ctx_t *ctx, const char *rule, const void *entity,
                  size_t entity_len, int64_t start, int64_t end,
                  const char *evidence);

/* Runs the job (SIGINT/SIGTERM stop it cleanly, with a final checkpoint;
 * SIGUSR1 stops it draining, sl_job_stop_drain(): every window and
 * event-time timer fires first, as at the end of a bounded input) and
 * destroys it. Returns the process exit code. */
int ex_job_run(ex_job *ej);

#endif
