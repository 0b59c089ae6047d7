#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Prints the output of every test that did not pass, from meson's
testlog.json: `make test` calls it after a failed run, so that the last
lines of the run (all a CI page may show) say why, not only which."""
import json
import os
import sys
import time

LINES = 200  # of each failed test's output, its last ones

def main(path):
    failed = 0
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        print("no test log to show (%s): the run failed before its tests" % e)
        return
    with f:
        for line in f:
            t = json.loads(line)
            if t.get("result") in ("OK", "SKIP", "EXPECTEDFAIL"):
                continue
            failed += 1
            out = (t.get("stdout") or "") + (t.get("stderr") or "")
            tail = out.splitlines()[-LINES:]
            print("=" * 78)
            print("%s: %s (exit %s, %.1f s); its last %d lines:" %
                  (t["name"], t["result"], t.get("returncode"),
                   t.get("duration", 0.0), len(tail)))
            print("\n".join(tail))
    print("=" * 78)
    print("%d test(s) did not pass; every output is in %s (written %s)" %
          (failed, path, time.strftime("%Y-%m-%d %H:%M:%S",
                                       time.localtime(os.path.getmtime(path)))))

if __name__ == "__main__":
    main(sys.argv[1])
