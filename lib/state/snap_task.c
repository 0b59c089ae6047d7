/* SPDX-License-Identifier: Apache-2.0 */
/* The background part of a backend's snapshot (snap_task.h): a detached
 * thread, freed by whichever of its three holders lets go last, so that
 * neither the worker, nor the coordinator, nor the thread has to outlive
 * the others. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "sluice/common.h"
#include "state/backend.h"
#include "state/snap_task.h"

struct sl__snap_task {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs;
  _Atomic bool done;
  bool go; /* a holder joins: the test hold no longer applies (hold_mu) */
  int rc;
  char err[768];
  int (*run)(sl__snap_task *, void *, char *, size_t);
  void (*free_arg)(void *);
  void *arg;
};

static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static int hold_stage;

static void task_free(sl__snap_task *t) {
  if (t->free_arg)
    t->free_arg(t->arg);
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

void sl__snap_task_drop(sl__snap_task *t) {
  if (!t)
    return;
  pthread_mutex_lock(&t->mu);
  bool last = --t->refs == 0;
  pthread_mutex_unlock(&t->mu);
  if (last)
    task_free(t);
}

static void *task_main(void *p) {
  sl__snap_task *t = p;
  int rc = t->run(t, t->arg, t->err, sizeof(t->err));
  pthread_mutex_lock(&t->mu);
  t->rc = rc;
  atomic_store_explicit(&t->done, true, memory_order_release);
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
  sl__snap_task_drop(t);
  return NULL;
}

sl__snap_task *sl__snap_task_start(int (*run)(sl__snap_task *, void *, char *,
                                              size_t),
                                   void (*free_arg)(void *), void *arg) {
  sl__snap_task *t = calloc(1, sizeof(*t));
  if (!t)
    return NULL;
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->cv, NULL);
  t->refs = 3;
  t->run = run;
  t->free_arg = free_arg;
  t->arg = arg;
  pthread_attr_t a;
  pthread_t th;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  int e = pthread_create(&th, &a, task_main, t);
  pthread_attr_destroy(&a);
  if (e) {
    t->free_arg = NULL;
    task_free(t);
    return NULL;
  }
  return t;
}

bool sl__snap_task_done(sl__snap_task *t) {
  return atomic_load_explicit(&t->done, memory_order_acquire);
}

/* A holder waits: the test hold no longer applies to t. */
static void let_go(sl__snap_task *t) {
  pthread_mutex_lock(&hold_mu);
  t->go = true;
  pthread_cond_broadcast(&hold_cv);
  pthread_mutex_unlock(&hold_mu);
}

void sl__snap_task_signal(sl__snap_task *t) {
  pthread_mutex_lock(&t->mu);
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

void sl__snap_task_await(sl__snap_task *t, bool (*ready)(void *), void *arg) {
  let_go(t);
  pthread_mutex_lock(&t->mu);
  while (!atomic_load_explicit(&t->done, memory_order_relaxed) && !ready(arg))
    pthread_cond_wait(&t->cv, &t->mu);
  pthread_mutex_unlock(&t->mu);
}

int sl__snap_task_join(sl__snap_task *t, char *err, size_t errlen) {
  let_go(t);
  pthread_mutex_lock(&t->mu);
  while (!atomic_load_explicit(&t->done, memory_order_relaxed))
    pthread_cond_wait(&t->cv, &t->mu);
  int rc = t->rc;
  if (rc && err && errlen)
    snprintf(err, errlen, "%s", t->err);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int sl__snap_task_wait(sl__snap_task *t, char *err, size_t errlen) {
  if (!t)
    return SL_OK;
  int rc = sl__snap_task_join(t, err, errlen);
  sl__snap_task_drop(t);
  return rc;
}

void sl__snap_task_point(sl__snap_task *t, int stage) {
  pthread_mutex_lock(&hold_mu);
  while (hold_stage == stage && !t->go)
    pthread_cond_wait(&hold_cv, &hold_mu);
  pthread_mutex_unlock(&hold_mu);
}

void sl__snap_task_hold(int stage) {
  pthread_mutex_lock(&hold_mu);
  hold_stage = stage;
  pthread_cond_broadcast(&hold_cv);
  pthread_mutex_unlock(&hold_mu);
}
