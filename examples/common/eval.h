/* SPDX-License-Identifier: Apache-2.0 */
/* Scoring alerts against the generators' ground truth: precision and
 * recall per rule over distinct alerts (a restarted job may write an alert
 * twice), kept apart from Kafka so the unit tests can drive it. */
#ifndef EX_EVAL_H
#define EX_EVAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct ex_eval ex_eval;

typedef struct ex_eval_result {
  size_t alerts;     /* distinct alerts of the rule */
  size_t duplicates; /* records repeating an alert id (all rules) */
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

/* The rules seen in labels or alerts, in first-seen order; NULL past the
 * end. */
const char *ex_eval_rule_at(const ex_eval *ev, size_t i);

#endif
