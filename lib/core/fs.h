/* SPDX-License-Identifier: Apache-2.0 */
/* File-system helpers every layer uses: making a directory path, reading
 * a whole file, removing a tree. */
#ifndef SL_CORE_FS_H
#define SL_CORE_FS_H

#include <stddef.h>
#include <sys/types.h>

#include "sluice/conf.h"

/* Modes of the files and directories the library creates (checkpoints,
 * state directories, lock files), from files.access: state is the
 * user's data and private by default. The process umask still applies. */
typedef struct sl__fmode {
  mode_t file, dir;
} sl__fmode;
sl__fmode sl__fs_mode(const sl_conf_t *conf);

/* mkdir -p: creates path and its missing parents with mode. 0, or -1 with
 * errno (ENOTDIR when path exists and is not a directory). */
int sl__mkdirs(const char *path, mode_t mode);

/* Reads a whole file into malloc'd memory (*data, never NULL on success,
 * even for an empty file). 0, or -1 with errno. */
int sl__read_file(const char *path, unsigned char **data, size_t *len);

/* Removes a directory tree without following symlinks, as much of it as
 * can be removed. 0, or -1 with errno of a failure. */
int sl__rmtree(const char *path);

#endif
