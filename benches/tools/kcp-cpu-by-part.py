#!/usr/bin/env python3
"""kcp's CPU per synced object, by part of kcp, for the floor's and kcp-tmc's burst profiles.

    benches/tools/kcp-cpu-by-part.py FLOOR.pprof FLOOR_OBJECTS TMC.pprof TMC_OBJECTS

The object counts are those that arrived during each profile's window (the bench's progress
lines every 5 s give them). Each sample is charged to the first part whose pattern matches a
frame of its stack, in the order below, so every millisecond is counted once. Prints a
Markdown table.
"""
import re
import subprocess
import sys
from collections import defaultdict

PARTS = [
    ("garbage collection", r"runtime\.gcBgMarkWorker|runtime\.bgsweep|runtime\.bgscavenge"),
    ("etcd (embedded)", r"go\.etcd\.io/etcd/server"),
    ("watch: events to watchers", r"WatchServer\)\.HandleHTTP|serveWatch|cacheWatcher|watchcache|dispatchEvent|Cacher\)\.processEvent"),
    ("virtual workspace: forwarding a write (read + guarded update)", r"forwardingregistry"),
    ("authorization (kcp's, the virtual workspace's)", r"Authorize|SubjectAccessReview"),
    ("admission", r"chainAdmissionHandler|Admit|Validate\b"),
    ("REST handlers (create, update, patch, get)", r"endpoints/handlers\."),
    ("TLS, HTTP, authentication, filters", r"crypto/tls|net/http|golang\.org/x/net/http2|authentication|filters\."),
    ("client-go (informers, the virtual workspace's client)", r"client-go|informers|controller"),
]
SEPARATOR = "-----------+-------------------------------------------------------"
UNITS = {"s": 1000.0, "ms": 1.0, "us": 0.001}


def by_part(path):
    traces = subprocess.run(["go", "tool", "pprof", "-traces", path], capture_output=True, text=True, check=True)
    totals = defaultdict(float)
    for block in traces.stdout.split(SEPARATOR)[1:]:
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        first = re.match(r"([\d.]+)(s|ms|us)\s+(.*)", lines[0]) if lines else None
        if not first:
            continue
        stack = "\n".join([first.group(3)] + lines[1:])
        part = next((name for name, pattern in PARTS if re.search(pattern, stack)), "other")
        totals[part] += float(first.group(1)) * UNITS[first.group(2)]
    return totals


def main():
    floor_path, floor_objects, tmc_path, tmc_objects = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    floor, tmc = by_part(floor_path), by_part(tmc_path)
    print("| part of kcp | floor, CPU ms per object | kcp-tmc, CPU ms per object | extra |")
    print("|---|---|---|---|")
    for name in [name for name, _ in PARTS] + ["other"]:
        a, b = floor[name] / floor_objects, tmc[name] / tmc_objects
        print(f"| {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    a, b = sum(floor.values()) / floor_objects, sum(tmc.values()) / tmc_objects
    print(f"| **total** | {a:.2f} | {b:.2f} | {b - a:+.2f} |")


if __name__ == "__main__":
    main()
