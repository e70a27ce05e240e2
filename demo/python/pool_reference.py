#!/usr/bin/env python3
"""The log-analytics job of the mpx demo, done with multiprocessing.Pool.

    python3 pool_reference.py [--processes N] [--batch-bytes B] ACCESS_LOG

Same file, same rules as demo/log_format.cpp (keep them in step), same
design as the demo: the main process cuts the file into batches of whole
lines (at least B bytes each; it reads only around each cut), a Pool of N
processes reads each batch's bytes from the file, parses and counts them
with a compiled regex, the main process merges the partial counts. Prints one JSON object on stdout: the
counts the demo compares (lines, malformed, bytes, status, top paths,
distinct clients, minutes, p50/p99 latency in ms) and "seconds", the time
from the first read to the merged result (the Pool is started before).
"""
import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter
from multiprocessing import Pool

# client ident user [dd/Mon/yyyy:HH:MM:SS +zzzz] "request" status bytes ["referer" "agent" [seconds]]
LINE = re.compile(
    rb'([^ ]+) [^ ]+ [^ ]+ \[(\d{2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):\d{2} ([+-])(\d{2})(\d{2})\] '
    rb'"([^"]*)" (\d{3}) (\d{1,18}|-)'
    rb'(?: "(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*"(?: (\d{1,6})(?:\.(\d+))?)?)?')
MONTHS = {m: i + 1 for i, m in enumerate(
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"])}


def days_from_civil(y, m, d):
    """Days since 1970-01-01 (the same algorithm as the C++ side)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_chunk(data):
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    malformed = 0
    sent = 0
    status = Counter()
    paths = Counter()
    clients = Counter()
    latency = Counter()
    minutes = Counter()
    minute_of = {}
    match = LINE.match
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        m = match(line)
        if m is None:
            malformed += 1
            continue
        client, day, mon, year, hh, mm, sign, zh, zm, request, code, size, secs, frac = m.groups()
        key = (day, mon, year, hh, mm, sign, zh, zm)
        minute = minute_of.get(key)
        if minute is None:
            month = MONTHS.get(mon)
            if month is None:
                malformed += 1
                continue
            offset = int(zh) * 60 + int(zm)
            minute = (days_from_civil(int(year), month, int(day)) * 1440 + int(hh) * 60 + int(mm)
                      - (-offset if sign == b"-" else offset))
            minute_of[key] = minute
        parts = request.split(b" ")
        path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b"-"
        nbytes = 0 if size == b"-" else int(size)
        sent += nbytes
        status[int(code)] += 1
        paths[path] += 1
        clients[client] += nbytes
        if secs is not None:
            latency[int(secs) * 1000 + (int((frac + b"000")[:3]) if frac else 0)] += 1
        minutes[minute] += 1
    return len(lines), malformed, sent, status, paths, clients, latency, minutes


_files = {}


def parse_range(job):
    path, offset, length = job
    f = _files.get(path)
    if f is None:
        f = _files[path] = open(path, "rb")
    f.seek(offset)
    return parse_chunk(f.read(length))


def batches(path, batch_bytes):
    """(path, offset, length) of whole lines: each ends after the first newline at or beyond offset + batch_bytes - 1."""
    size = os.path.getsize(path)
    offset = 0
    with open(path, "rb") as f:
        while offset < size:
            end = offset + batch_bytes
            if end >= size:
                end = size
            else:
                probe = end - 1
                while True:
                    f.seek(probe)
                    window = f.read(64 << 10)
                    nl = window.find(b"\n")
                    if nl >= 0:
                        end = probe + nl + 1
                        break
                    if not window:
                        end = size
                        break
                    probe += len(window)
            yield path, offset, end - offset
            offset = end


def quantile(counts, total, q):
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for ms in sorted(counts):
        seen += counts[ms]
        if seen >= rank:
            return ms
    return max(counts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    ap.add_argument("--batch-bytes", type=int, default=1 << 20)
    ap.add_argument("log")
    args = ap.parse_args()
    lines = malformed = sent = 0
    status, paths, clients, latency, minutes = Counter(), Counter(), Counter(), Counter(), Counter()
    with Pool(args.processes) as pool:
        start = time.perf_counter()
        for part in pool.imap_unordered(parse_range, batches(args.log, args.batch_bytes)):
            n, bad, s, st, pa, cl, la, mi = part
            lines += n
            malformed += bad
            sent += s
            status.update(st)
            paths.update(pa)
            clients.update(cl)
            latency.update(la)
            minutes.update(mi)
        seconds = time.perf_counter() - start
    requests_with_latency = sum(latency.values())
    top = sorted(paths.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    json.dump({
        "lines": lines, "malformed": malformed, "bytes": sent,
        "status": {str(k): v for k, v in sorted(status.items())},
        "top_paths": [[p.decode("utf-8", "replace"), n] for p, n in top],
        "distinct_clients": len(clients), "minutes": len(minutes),
        "p50": quantile(latency, requests_with_latency, 0.5),
        "p99": quantile(latency, requests_with_latency, 0.99),
        "seconds": seconds, "processes": args.processes,
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
