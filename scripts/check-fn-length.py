#!/usr/bin/env python3
"""Fails when a function in `src/` is longer than 80 lines, or longer than 60 without a comment
right above it (among its doc or attribute lines) that says why (`// long: <reason>`).

Counts lines from the `fn` line to its closing brace, unit tests in `src/` included.

Usage: scripts/check-fn-length.py [--list N]   (--list N prints every function over N lines)
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)")
SOFT, HARD = 60, 80


def code_only(line):
    line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(?:\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def functions(path):
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, opened, j = 0, False, i
        while j < len(lines):
            code = code_only(lines[j])
            if not opened and ";" in code and "{" not in code:
                break  # a declaration without a body (trait method)
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                break
            j += 1
        if opened:
            k = i - 1
            reason = False
            while k >= 0 and lines[k].strip().startswith(("///", "//", "#[")):
                reason = reason or lines[k].strip().startswith("// long:")
                k -= 1
            yield m.group(1), i + 1, j - i + 1, reason
        i += 1


def main():
    listing = int(sys.argv[sys.argv.index("--list") + 1]) if "--list" in sys.argv else None
    bad = []
    for dirpath, _, names in sorted(os.walk(ROOT)):
        for n in sorted(names):
            if not n.endswith(".rs"):
                continue
            path = os.path.join(dirpath, n)
            rel = os.path.relpath(path, os.path.join(ROOT, ".."))
            for name, line, length, reason in functions(path):
                if listing is not None and length > listing:
                    print(f"{length:4} {rel}:{line} {name}{'  (long: reason given)' if reason else ''}")
                if length > HARD or (length > SOFT and not reason):
                    bad.append(f"{rel}:{line} fn {name} is {length} lines")
    if listing is not None:
        return 0
    for b in bad:
        print(b, file=sys.stderr)
    if bad:
        print(f"{len(bad)} functions over {SOFT} lines without a `// long:` reason, or over {HARD}", file=sys.stderr)
        return 1
    print(f"no function over {SOFT} lines without a reason, none over {HARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
