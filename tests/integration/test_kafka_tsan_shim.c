/* SPDX-License-Identifier: Apache-2.0 */
/* ThreadSanitizer builds only: gcc 12's libtsan (and clang 14's) does not
 * intercept C11 thrd_create, which librdkafka starts its threads with, so
 * those threads run without TSan state and crash in its allocator. This
 * thrd_create, linked into the Kafka test programs, starts them through
 * pthread_create (which TSan intercepts), with glibc's own result
 * convention so thrd_join keeps working. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

typedef struct tramp {
  thrd_start_t fn;
  void *arg;
} tramp;

static void *run(void *p) {
  tramp t = *(tramp *)p;
  free(p);
  return (void *)(intptr_t)t.fn(t.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg) {
  tramp *t = malloc(sizeof(*t));
  if (!t)
    return thrd_nomem;
  t->fn = fn;
  t->arg = arg;
  pthread_t p;
  if (pthread_create(&p, NULL, run, t)) {
    free(t);
    return thrd_error;
  }
  *thr = (thrd_t)p;
  return thrd_success;
}

int thrd_join(thrd_t thr, int *res) {
  void *r;
  if (pthread_join((pthread_t)thr, &r))
    return thrd_error;
  if (res)
    *res = (int)(intptr_t)r;
  return thrd_success;
}

int thrd_detach(thrd_t thr) {
  return pthread_detach((pthread_t)thr) ? thrd_error : thrd_success;
}

/* glibc's C11 mutexes and condition variables are pthread ones inside but
 * reach them through internal symbols TSan does not see either; going
 * through the public pthread calls lets TSan see librdkafka's locking. */
int mtx_init(mtx_t *m, int type) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  if (type & mtx_recursive)
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
  int rc = pthread_mutex_init((pthread_mutex_t *)m, &a);
  pthread_mutexattr_destroy(&a);
  return rc ? thrd_error : thrd_success;
}
int mtx_lock(mtx_t *m) {
  return pthread_mutex_lock((pthread_mutex_t *)m) ? thrd_error : thrd_success;
}
int mtx_trylock(mtx_t *m) {
  int rc = pthread_mutex_trylock((pthread_mutex_t *)m);
  return rc == 0 ? thrd_success : rc == EBUSY ? thrd_busy : thrd_error;
}
int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts) {
  int rc = pthread_mutex_timedlock((pthread_mutex_t *)m, ts);
  return rc == 0 ? thrd_success : rc == ETIMEDOUT ? thrd_timedout : thrd_error;
}
int mtx_unlock(mtx_t *m) {
  return pthread_mutex_unlock((pthread_mutex_t *)m) ? thrd_error : thrd_success;
}
void mtx_destroy(mtx_t *m) {
  pthread_mutex_destroy((pthread_mutex_t *)m);
}
int cnd_init(cnd_t *c) {
  return pthread_cond_init((pthread_cond_t *)c, NULL) ? thrd_error
                                                      : thrd_success;
}
int cnd_signal(cnd_t *c) {
  return pthread_cond_signal((pthread_cond_t *)c) ? thrd_error : thrd_success;
}
int cnd_broadcast(cnd_t *c) {
  return pthread_cond_broadcast((pthread_cond_t *)c) ? thrd_error
                                                     : thrd_success;
}
int cnd_wait(cnd_t *c, mtx_t *m) {
  return pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m)
             ? thrd_error
             : thrd_success;
}
int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m,
                  const struct timespec *restrict ts) {
  int rc =
      pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts);
  return rc == 0 ? thrd_success : rc == ETIMEDOUT ? thrd_timedout : thrd_error;
}
void cnd_destroy(cnd_t *c) {
  pthread_cond_destroy((pthread_cond_t *)c);
}

/* What remains are reports inside librdkafka itself, which is not built
 * with TSan: its reference counts and flags use atomics TSan cannot see,
 * so its teardown looks racy. Reports with any sluice-only stack stay. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void) {
  return "race:librdkafka.so\n"
         "race:mtx_destroy\n"
         "race:cnd_destroy\n";
}
