"""Reads an Autobahn|Testsuite report and fails unless every case passed.

A case passes when both its behaviour and its closing behaviour are OK or INFORMATIONAL,
or when its behaviour is NON-STRICT, its closing OK or INFORMATIONAL, and it is listed in
the allow-list with a reason. Prints the counts by behaviour and every case that fails.

Usage: check.py INDEX_JSON ALLOW_LIST AGENT
Runs on Python 2.7 (wstest's virtualenv) and on Python 3.
"""
from __future__ import print_function

import collections
import json
import sys

PASSING = ("OK", "INFORMATIONAL")


def case_key(case):
    return [int(part) for part in case.split(".")]


def read_allowed(path):
    """The allow-list: case id -> reason. Blank lines and `#` comments are skipped."""
    allowed = {}
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 1)
            if len(parts) < 2:
                sys.exit("%s:%d: %s needs a reason" % (path, number, parts[0]))
            allowed[parts[0]] = parts[1]
    return allowed


def main(index_path, allow_path, agent):
    with open(index_path) as index:
        results = json.load(index)[agent]
    allowed = read_allowed(allow_path)
    counts = collections.Counter(result["behavior"] for result in results.values())
    failing = []
    for case in sorted(results, key=case_key):
        result = results[case]
        behavior, closing = result["behavior"], result["behaviorClose"]
        if closing in PASSING and (
            behavior in PASSING or (behavior == "NON-STRICT" and case in allowed)
        ):
            continue
        failing.append("%s %s (closing %s)" % (case, behavior, closing))
    summary = ", ".join("%s %d" % item for item in sorted(counts.items()))
    for case in sorted(set(allowed) - set(results), key=case_key):
        print("autobahn: %s is allowed to be non-strict but did not run" % case)
    for case in sorted(allowed, key=case_key):
        if case in results and results[case]["behavior"] in PASSING:
            print("autobahn: %s is now strict: take it off %s" % (case, allow_path))
    if failing:
        print("autobahn: %d of %d cases fail (%s):" % (len(failing), len(results), summary))
        for line in failing:
            print("  " + line)
        return 1
    print("autobahn: %d cases, all pass (%s)" % (len(results), summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
