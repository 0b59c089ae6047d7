/* SPDX-License-Identifier: Apache-2.0 */
/* The background part of a backend's snapshot: a detached thread running
 * one function, and the handles the worker (through its backend) and the
 * checkpoint coordinator (sl__snap_task_wait in backend.h) hold on it. */
#ifndef SL_STATE_SNAP_TASK_H
#define SL_STATE_SNAP_TASK_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sl__snap_task sl__snap_task;

/* Runs run(t, arg, err, errlen) on a new thread; free_arg(arg) when the
 * last hold is dropped. Three holds: the thread's, and two the caller
 * hands out (each released by sl__snap_task_drop or sl__snap_task_wait).
 * NULL when no thread could be started (nothing runs, arg is not freed). */
sl__snap_task *sl__snap_task_start(int (*run)(sl__snap_task *t, void *arg,
                                              char *err, size_t errlen),
                                   void (*free_arg)(void *arg), void *arg);
/* Whether run has returned (any thread). */
bool sl__snap_task_done(sl__snap_task *t);
/* Waits until run has returned; its return value, with its message in
 * err. */
int sl__snap_task_join(sl__snap_task *t, char *err, size_t errlen);
void sl__snap_task_drop(sl__snap_task *t);
/* Steps within run: run publishes what it finished (an atomic of its
 * own) and then signals; sl__snap_task_await waits until ready(arg) holds
 * or run has returned, as a join does (the test hold is lifted). */
void sl__snap_task_signal(sl__snap_task *t);
void sl__snap_task_await(sl__snap_task *t, bool (*ready)(void *), void *arg);

/* Tests: run calls sl__snap_task_point(t, stage) between its steps; while
 * sl__snap_task_hold(stage) is in force the thread stops there until a
 * holder joins the task or the hold is lifted (sl__snap_task_hold(0)), so
 * a test decides what the worker does while the background part waits. */
void sl__snap_task_point(sl__snap_task *t, int stage);
void sl__snap_task_hold(int stage);

#endif
