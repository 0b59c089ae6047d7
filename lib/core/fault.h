/* SPDX-License-Identifier: Apache-2.0 */
/* Fault points for tests: named places in the checkpoint and state code
 * where a test (or the chaos driver, through the environment) makes the
 * process die or an I/O call fail, deterministically. Unarmed, a fault
 * point costs one relaxed atomic load. docs/reliability.md lists them. */
#ifndef SL_CORE_FAULT_H
#define SL_CORE_FAULT_H

/* Arms fault points from a spec, replacing what was armed; NULL or ""
 * disarms all. The spec is a comma-separated list of
 *   point:action[:first[:count]]
 * action is "kill" (SIGKILL of the process), "stop" (SIGSTOP of the
 * process, which goes on from the point once continued) or an errno name
 * (ENOSPC, EIO, EACCES, EROFS, ENOENT); the point acts on its first-th
 * hit (default 1) and, for an errno or a stop, on the count hits from
 * there on (default 1, "*": every later hit). Hits are counted from this call.
 * SLUICE_FAULT in the environment is read the same way at the first hit of any
 * point, unless this was called before. 0, or -1 (nothing armed) for a
 * malformed spec. */
int sl__fault_set(const char *spec);

/* A fault point was reached: kills or stops the process when armed so,
 * returns the errno value the caller must fail with, or 0 to go on.
 * Thread-safe. */
int sl__fault_hit(const char *point);

#endif
