/* SPDX-License-Identifier: Apache-2.0 */
/* sluice-ckpt: command line, usage and the output helpers every command
 * shares. Commands live in dir.c (list, prune, restore), check.c (opening
 * and verifying one checkpoint) and read.c (inspect, dump). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/sluice-ckpt/tool.h"

static const char usage[] =
    "usage: sluice-ckpt [--json] COMMAND ARGS\n"
    "  list DIR                      checkpoints in a checkpoint.dir, newest "
    "first;\n"
    "                                of a group store: its instances and "
    "task pointers\n"
    "  inspect CHK                   what a checkpoint holds (positions, "
    "operators,\n"
    "                                states, broadcast state, key groups,\n"
    "                                timers, sizes)\n"
    "  inspect DIR --task N          what task N's pointer names and holds\n"
    "  verify CHK                    check every file; exit 0 valid, 1 "
    "damaged,\n"
    "                                2 usage or I/O error\n"
    "  verify DIR [--task N]         check task N's pointer and checkpoint "
    "(every\n"
    "                                task's without --task)\n"
    "  dump CHK --uid U [--state S] [--key K | --key-base64 B] [--ttl]\n"
    "                                keyed and broadcast state entries as "
    "JSON lines\n"
    "  dump DIR --task N --uid U ... the keyed state of task N\n"
    "  prune DIR --keep N [--dry-run]  remove all but the newest N complete "
    "(of a\n"
    "                                group store: per instance, keeping what "
    "a pointer\n"
    "                                names, and gone instances nobody needs)\n"
    "  restore CHK --to DIR          copy a checkpoint to DIR/chk-<id> and "
    "verify it\n"
    "  restore DIR --task N --to D   the same with the checkpoint of task N\n"
    "DIR is a checkpoint.dir, CHK one chk-<id> in it; a group store is the "
    "checkpoint.dir\nof group mode (instances/, tasks/); N names a task as "
    "list does: its\npartition, or <topic>-<partition> with repartition "
    "topics.\n"
    "--json prints one JSON document (dump always prints JSON lines).\n"
    "list, inspect, verify and dump only read; exit codes: 0 ok, 1 damaged "
    "or\nincomplete checkpoint or task pointer, 2 usage or I/O error.\n";

void tool_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("sluice-ckpt: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

void tool_print_json(json_t *j) {
  json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  fputc('\n', stdout);
}

void tool_print_line(json_t *j) {
  json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
  fputc('\n', stdout);
}

char *tool_hex(const void *p, size_t n) {
  static const char d[] = "0123456789abcdef";
  const unsigned char *b = p;
  char *s = malloc(2 * n + 1);
  if (!s)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    s[2 * i] = d[b[i] >> 4];
    s[2 * i + 1] = d[b[i] & 15];
  }
  s[2 * n] = 0;
  return s;
}

const char *tool_size(uint64_t bytes, char *buf, size_t len) {
  static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%llu B", (unsigned long long)bytes);
  else
    snprintf(buf, len, "%.1f %s", v, unit[u]);
  return buf;
}

const char *tool_time(int64_t ms, char *buf, size_t len) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  if (ms <= 0 || !gmtime_r(&s, &tm)) {
    snprintf(buf, len, "-");
    return buf;
  }
  char d[32];
  strftime(d, sizeof(d), "%Y-%m-%d %H:%M:%S", &tm);
  snprintf(buf, len, "%s.%03dZ", d, (int)(ms % 1000));
  return buf;
}

const char *tool_btype(uint32_t type) {
  switch (type) {
  case SL__SNAP_VALUE:
    return "value";
  case SL__SNAP_LIST:
    return "list";
  case SL__SNAP_MAP:
    return "map";
  }
  return "?";
}

static int need_value(int argc, char **argv, int *i, const char **out) {
  const char *a = argv[*i], *eq = strchr(a, '=');
  if (eq) {
    *out = eq + 1;
    return 0;
  }
  if (*i + 1 >= argc) {
    tool_err("%s needs a value", a);
    return -1;
  }
  *out = argv[++*i];
  return 0;
}

static bool is_opt(const char *a, const char *name) {
  size_t n = strlen(name);
  return strncmp(a, name, n) == 0 && (a[n] == 0 || a[n] == '=');
}

/* Decodes standard base64 (padding optional); NULL when s is not. */
static char *unbase64(const char *s, size_t *len) {
  size_t n = strlen(s);
  char *out = malloc(n / 4 * 3 + 3), *o = out;
  uint32_t acc = 0;
  int bits = 0;
  for (const char *p = s; out && *p && *p != '='; p++) {
    const char *t =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *c = strchr(t, *p);
    if (!c) {
      free(out);
      return NULL;
    }
    acc = acc << 6 | (uint32_t)(c - t);
    if ((bits += 6) >= 8) {
      bits -= 8;
      *o++ = (char)(acc >> bits & 255);
    }
  }
  if (out)
    *len = (size_t)(o - out);
  return out;
}

/* --key-base64's bytes; file scope, so an early exit leaves it reachable. */
static char *key_buf;

int main(int argc, char **argv) {
  tool_opts o = {.keep = -1, .task = -1};
  const char *cmd = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage, stdout);
      return TOOL_OK;
    } else if (strcmp(a, "--json") == 0) {
      o.json = true;
    } else if (strcmp(a, "--ttl") == 0) {
      o.ttl = true;
    } else if (strcmp(a, "--dry-run") == 0) {
      o.dry_run = true;
    } else if (is_opt(a, "--uid")) {
      if (need_value(argc, argv, &i, &o.uid))
        return TOOL_USAGE;
    } else if (is_opt(a, "--state")) {
      if (need_value(argc, argv, &i, &o.state))
        return TOOL_USAGE;
    } else if (is_opt(a, "--key")) {
      if (need_value(argc, argv, &i, &o.key))
        return TOOL_USAGE;
      o.key_len = strlen(o.key);
      o.have_key = true;
    } else if (is_opt(a, "--key-base64")) {
      /* For keys that are not text: dump prints them base64, so they can
       * be given back the same way. */
      if (need_value(argc, argv, &i, &v))
        return TOOL_USAGE;
      free(key_buf);
      if (!(key_buf = unbase64(v, &o.key_len))) {
        tool_err("--key-base64: \"%s\" is not base64", v);
        return TOOL_USAGE;
      }
      o.key = key_buf;
      o.have_key = true;
    } else if (is_opt(a, "--to")) {
      if (need_value(argc, argv, &i, &o.to))
        return TOOL_USAGE;
    } else if (is_opt(a, "--task")) {
      char *end;
      if (need_value(argc, argv, &i, &v))
        return TOOL_USAGE;
      /* "3", or "<topic>-3" (a task of a repartition topic): its key
       * group is the partition. */
      const char *dash = strrchr(v, '-');
      const char *num = dash ? dash + 1 : v;
      errno = 0;
      o.task = strtol(num, &end, 10);
      o.task_name = v;
      if (!*num || *end || errno || o.task < 0 || o.task > INT32_MAX ||
          *num == '-' || *num == '+' || dash == v) {
        tool_err("--task needs a task: a partition (>= 0), or "
                 "<topic>-<partition> for a repartition topic's, not \"%s\"",
                 v);
        return TOOL_USAGE;
      }
    } else if (is_opt(a, "--keep")) {
      char *end;
      if (need_value(argc, argv, &i, &v))
        return TOOL_USAGE;
      errno = 0;
      o.keep = strtol(v, &end, 10);
      if (!*v || *end || errno || o.keep < 1) {
        tool_err("--keep needs a whole number >= 1, not \"%s\"", v);
        return TOOL_USAGE;
      }
    } else if (a[0] == '-' && a[1]) {
      tool_err("unknown option %s\n%s", a, usage);
      return TOOL_USAGE;
    } else if (!cmd) {
      cmd = a;
    } else if (!o.path) {
      o.path = a;
    } else {
      tool_err("unexpected argument \"%s\"\n%s", a, usage);
      return TOOL_USAGE;
    }
  }
  static const struct {
    const char *name;
    int (*fn)(const tool_opts *);
  } cmds[] = {{"list", cmd_list},     {"inspect", cmd_inspect},
              {"verify", cmd_verify}, {"dump", cmd_dump},
              {"prune", cmd_prune},   {"restore", cmd_restore}};
  if (!cmd) {
    fputs(usage, stderr);
    return TOOL_USAGE;
  }
  for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
    if (strcmp(cmd, cmds[i].name) != 0)
      continue;
    if (!o.path) {
      tool_err("%s needs a directory\n%s", cmd, usage);
      return TOOL_USAGE;
    }
    int rc = cmds[i].fn(&o);
    free(key_buf);
    return rc;
  }
  tool_err("unknown command \"%s\"\n%s", cmd, usage);
  return TOOL_USAGE;
}
