/* SPDX-License-Identifier: Apache-2.0 */
/* Scoring models of the scoring example, loaded from JSON (the format is
 * in docs/examples.md): logistic regression, and a gradient-boosted
 * ensemble of small regression trees. Both give P(bot) in [0, 1] from the
 * features of userfeatures.h. */
#ifndef SC_MODEL_H
#define SC_MODEL_H

#include <stddef.h>

#include "userfeatures.h"

typedef struct sc_model sc_model;

/* Parses a model from JSON text; NULL with a reason in err. */
sc_model *sc_model_parse(const char *json, size_t len, char *err,
                         size_t errlen);
/* Reads and parses a model file. */
sc_model *sc_model_load(const char *path, char *err, size_t errlen);
void sc_model_free(sc_model *m);
/* The model's "name". */
const char *sc_model_name(const sc_model *m);
/* P(label = 1 | features f[SC_N_FEATURES]). */
double sc_model_score(const sc_model *m, const double *f);

#endif
