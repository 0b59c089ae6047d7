/* SPDX-License-Identifier: Apache-2.0 */
/* Scoring alerts against the generators' ground truth: precision and
 * recall per rule over distinct alerts (a restarted job may write an alert
 * twice), kept apart from Kafka so the unit tests can drive it. */
#ifndef EX_EVAL_H
#define EX_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct ex_eval ex_eval;

typedef struct ex_eval_result {
  size_t alerts;     /* distinct alerts of the rule */
  size_t duplicates; /* records repeating an alert id (all rules) */
  size_t conflicts;  /* of those, repeats whose text differs (all rules) */
  size_t true_pos;   /* distinct alerts that match a label */
  size_t labels;     /* injected cases of the rule */
  size_t detected;   /* labels matched by at least one alert */
  double precision;  /* true_pos / alerts; 1 when there are no alerts */
  double recall;     /* detected / labels; 1 when there are no labels */
} ex_eval_result;

ex_eval *ex_eval_new(void);
void ex_eval_free(ex_eval *ev);

/* A label: {"rule","entity","start","end"} (times in ms, inclusive). An
 * alert: {"id","rule","entity","start","end",...}; its id says which
 * alerts are the same (rule, entity and window or evidence). Both return 0,
 * or -1 for a line that is not such an object (the caller reports it). */
int ex_eval_add_label(ex_eval *ev, const char *json, size_t len);
int ex_eval_add_alert(ex_eval *ev, const char *json, size_t len);

/* An alert is a true positive when a label of the same rule and entity
 * overlaps its [start, end]; a label is detected when such an alert
 * exists. */
void ex_eval_score(ex_eval *ev, const char *rule, ex_eval_result *out);

/* Groups the distinct alerts into incidents (the fraud job's suppression,
 * as a reference model): per rule and entity, in order of end (then
 * start, then id), an alert whose end is at most interval_ms after the
 * previous alert's end belongs to that alert's incident and is dropped;
 * the others (each incident's first alert) stay. Returns how many alerts
 * were dropped. interval_ms <= 0 keeps them all. */
size_t ex_eval_incidents(ex_eval *ev, int64_t interval_ms);

/* The rules seen in labels or alerts, in first-seen order; NULL past the
 * end. */
const char *ex_eval_rule_at(const ex_eval *ev, size_t i);

/* Writes the distinct alerts (the first record of each id), sorted by id,
 * one JSON line each: a reference for ex_eval_compare. 0 or -1. */
int ex_eval_write_alerts(ex_eval *ev, FILE *f);

/* How a run's distinct alerts of one rule differ from a reference run's
 * (the same job on the same input must give the same alerts, however it
 * ran). */
typedef struct ex_eval_diff {
  size_t missing; /* ids in the reference only */
  size_t extra;   /* ids in this run only */
  size_t same;    /* ids in both */
  size_t changed; /* of those, alerts whose text differs */
} ex_eval_diff;

/* Shown per call when f is given. */
#define EX_EVAL_DIFF_SHOWN 10

/* Compares ev's distinct alerts of rule with ref's, by id and then by the
 * alert's whole text. Writes the first EX_EVAL_DIFF_SHOWN differences
 * ("  missing <id>", "  extra <id>", "  changed <id>") to f unless it is
 * NULL. */
void ex_eval_compare(ex_eval *ev, ex_eval *ref, const char *rule,
                     ex_eval_diff *out, FILE *f);

#endif
