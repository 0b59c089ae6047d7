/* SPDX-License-Identifier: Apache-2.0 */
/* Fault points (fault.h): a small table of armed points, set by a test or
 * from SLUICE_FAULT, consulted where the checkpoint and state code does
 * I/O. Unarmed, sl__fault_hit is one atomic load. */
#include "core/fault.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FAULTS 16
#define KILL (-1)
#define STOP (-2)

typedef struct fault {
  char point[64];
  int action;        /* KILL, STOP or an errno value */
  long first, count; /* acts on hits first .. first + count - 1 */
  long hits;
} fault;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static fault faults[MAX_FAULTS];
static int n_faults;
static atomic_int armed;    /* n_faults > 0 */
static atomic_int env_read; /* SLUICE_FAULT was read or sl__fault_set ran */

static const struct {
  const char *name;
  int value;
} errnos[] = {{"ENOSPC", ENOSPC}, {"EIO", EIO},       {"EACCES", EACCES},
              {"EROFS", EROFS},   {"ENOENT", ENOENT}, {"EDQUOT", EDQUOT}};

static int parse_one(const char *s, size_t len, fault *f) {
  char buf[160];
  if (len >= sizeof(buf))
    return -1;
  memcpy(buf, s, len);
  buf[len] = 0;
  char *save, *point = strtok_r(buf, ":", &save);
  char *action = strtok_r(NULL, ":", &save);
  char *first = strtok_r(NULL, ":", &save);
  char *count = strtok_r(NULL, ":", &save);
  if (!point || !action || strlen(point) >= sizeof(f->point) ||
      strtok_r(NULL, ":", &save))
    return -1;
  memset(f, 0, sizeof(*f));
  strcpy(f->point, point);
  f->action = 0;
  if (strcmp(action, "kill") == 0)
    f->action = KILL;
  else if (strcmp(action, "stop") == 0)
    f->action = STOP;
  for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++)
    if (strcmp(action, errnos[i].name) == 0)
      f->action = errnos[i].value;
  if (!f->action)
    return -1;
  char *end;
  f->first = 1;
  if (first && ((f->first = strtol(first, &end, 10)) < 1 || *end))
    return -1;
  f->count = 1;
  if (count && strcmp(count, "*") == 0)
    f->count = -1;
  else if (count && ((f->count = strtol(count, &end, 10)) < 1 || *end))
    return -1;
  return 0;
}

/* mu held. */
static int set_locked(const char *spec) {
  fault parsed[MAX_FAULTS];
  int n = 0;
  for (const char *p = spec ? spec : ""; *p;) {
    size_t len = strcspn(p, ",");
    if (len && (n == MAX_FAULTS || parse_one(p, len, &parsed[n++])))
      n = -1;
    if (n < 0)
      break;
    p += len;
    if (*p == ',')
      p++;
  }
  n_faults = n < 0 ? 0 : n;
  if (n > 0)
    memcpy(faults, parsed, (size_t)n * sizeof(*faults));
  atomic_store_explicit(&armed, n_faults > 0, memory_order_release);
  atomic_store(&env_read, 1);
  return n < 0 ? -1 : 0;
}

int sl__fault_set(const char *spec) {
  pthread_mutex_lock(&mu);
  int rc = set_locked(spec);
  pthread_mutex_unlock(&mu);
  return rc;
}

int sl__fault_hit(const char *point) {
  if (!atomic_load_explicit(&env_read, memory_order_relaxed)) {
    pthread_mutex_lock(&mu);
    if (!atomic_load(&env_read)) {
      const char *spec = getenv("SLUICE_FAULT");
      if (set_locked(spec) && spec)
        fprintf(stderr, "sluice: SLUICE_FAULT=\"%s\" is malformed; ignored\n",
                spec);
    }
    pthread_mutex_unlock(&mu);
  }
  if (!atomic_load_explicit(&armed, memory_order_acquire))
    return 0;
  int act = 0;
  pthread_mutex_lock(&mu);
  for (int i = 0; i < n_faults; i++) {
    fault *f = &faults[i];
    if (strcmp(f->point, point) != 0)
      continue;
    long hit = ++f->hits;
    if (hit >= f->first && (f->count < 0 || hit < f->first + f->count))
      act = f->action;
  }
  pthread_mutex_unlock(&mu);
  if (act == KILL) {
    /* What a crash at this point leaves behind: nothing flushed, no
     * handler run. */
    kill(getpid(), SIGKILL);
    pause();
  }
  if (act == STOP) {
    /* The whole process stops, as with a SIGSTOP from outside at this
     * point; it goes on from here once continued. */
    kill(getpid(), SIGSTOP);
    return 0;
  }
  return act;
}
