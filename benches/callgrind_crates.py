#!/usr/bin/env python3
"""Instructions per request by crate, from a `benches/callgrind.sh` run.

usage: benches/callgrind_crates.py DIR [N]

DIR is callgrind.sh's output for one label (`/tmp/pimesh-callgrind/LABEL`),
N the requests it measured (its N, 3000 by default). For each path it ran
(inbound h1, inbound h2, mesh h1 and mesh h2, the mesh's two proxies summed)
it reads the counts dumped after the measured requests (`NAME.PID.out.1`)
and prints each function's own instructions ("self", callees excluded)
summed by the crate its symbol names, per request, largest first. Generic
code of core/alloc/std is counted to the first crate named in its type
parameters (a `Vec<h2::frame::Frame>` method counts to h2); libc's copies
and allocator are their own lines. Needs a proxy built with symbols
(callgrind.sh's usage); a stripped one shows as "(no symbol)".

The file format is callgrind's (valgrind's docs, "Callgrind Format
Specification"): `fn=(id) name` starts a function's cost lines, `cfn=` and
`calls=` announce that the next cost line is a call's inclusive cost, and
names are compressed to `(id)` after their first use.
"""

import collections
import glob
import os
import re
import sys

PATHS = [
    ("inbound h1", ["inbound-h1"]),
    ("inbound h2", ["inbound-h2"]),
    ("mesh h1", ["client-h1", "server-h1"]),
    ("mesh h2", ["client-h2", "server-h2"]),
]
CRATE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)::")
# A path that starts a type parameter or a trait: `<T as `, `Vec<T>`, `(T, U)`.
INNER = re.compile(r"[<&(, ]([A-Za-z_][A-Za-z0-9_]*)::")
NAMED = re.compile(r"\((\d+)\)(?: (.*))?")
STD = {"core", "alloc", "std"}


def self_costs(path):
    """{(object, function): self instructions} of one callgrind file."""
    names = {"fn": {}, "ob": {}}
    costs = collections.Counter()
    fn = ob = None
    call_line_next = False
    with open(path, errors="replace") as f:
        for line in f:
            key, _, rest = line.rstrip("\n").partition("=")
            if key in ("fn", "cfn", "ob", "cob") and rest:
                table = names["ob" if key.endswith("ob") else "fn"]
                m = NAMED.match(rest)
                name = rest
                if m:
                    if m.group(2) is not None:
                        table[m.group(1)] = m.group(2)
                    name = table.get(m.group(1), rest)
                if key == "fn":
                    fn = name
                elif key == "ob":
                    ob = name
                continue
            if key == "calls":
                call_line_next = True
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    continue
                if call_line_next:
                    call_line_next = False
                else:
                    costs[(ob, fn)] += int(parts[1])
    return costs


def crate(ob, fn):
    """The line a function's cost is counted on."""
    obj = os.path.basename(ob or "")
    if obj.startswith("libc.so"):
        if re.search(r"mem(cpy|move|set|cmp)", fn):
            return "libc memcpy/memmove/memset"
        if re.search(r"malloc|free|realloc|calloc|_int_", fn):
            return "libc malloc/free"
        return "libc, other"
    if obj.startswith(("ld-linux", "linux-vdso")):
        return "dynamic loader, vDSO"
    if fn.startswith("0x"):
        return "(no symbol)"
    crates = CRATE.findall(fn.lstrip("<"))
    if not crates:
        return "C functions (ring's assembly, ...)"
    if crates[0] in STD:
        inner = [c for c in INNER.findall(fn) if c not in STD]
        return (inner[0] + " (generic)") if inner else "core/alloc/std"
    return crates[0]


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) == 3 else 3000
    for label, names in PATHS:
        files = []
        for name in names:
            files += sorted(glob.glob(os.path.join(out, f"{name}.*.out.1")))
        if len(files) != len(names):
            print(f"{label}: no dump in {out} (callgrind.sh ran it?)", file=sys.stderr)
            continue
        by = collections.Counter()
        for path in files:
            for (ob, fn), cost in self_costs(path).items():
                by[crate(ob, fn)] += cost
        total = sum(by.values())
        print(f"{label}: {total / n:,.0f} instructions per request")
        for name, cost in by.most_common():
            if cost / total < 0.005:
                break
            print(f"  {cost / n:>9,.0f}  {100 * cost / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
