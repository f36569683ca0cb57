#!/usr/bin/env python3
"""Server CPU per transaction, side by side on several servers.

For each server (HOST:PORT, e.g. one running an older build and one running
this one) and each kind of transaction, a fresh session runs N transactions
in a procedure (one COMMIT each, no client round trip) and the backend's CPU
time is read from /proc/PID/schedstat (nanoseconds) before and after.
Rounds alternate the order of servers and kinds; prints the median and the
middle half per server and kind.  Run it as root or as the servers' owner on
the servers' machine (it reads /proc of their backends).

The servers need test/bench's setup: the counter example
(test/bench/command_setup.sql) and bench.plain (as test/bench/run creates it).

Usage: test/bench/cpu_per_txn.py N ROUNDS HOST:PORT [HOST:PORT ...]
       ES_CPU_KINDS=command,append,insert (the default) chooses the kinds.
"""
import os
import statistics
import subprocess
import sys

CALLS = {
    'command': "SELECT * INTO r FROM eventsourced.handle_command('counter', (g % 1000)::text, "
               "'Increase', '{\"n\": 1}');",
    'append': "PERFORM eventsourced.append('bench', (g % 100000)::text, NULL, 'Happened', "
              "'{\"n\": 1}');",
    'insert': "INSERT INTO bench.plain (entity_type, entity_id, seq_no, position, event_type, "
              "payload) VALUES ('bench', (g % 100000)::text, (random() * 4e18)::bigint, "
              "(random() * 4e18)::bigint, 'Happened', '{\"n\": 1}');",
}


def loop_sql(kind):
    """A procedure running one transaction of the kind per iteration."""
    return ("CREATE OR REPLACE PROCEDURE pg_temp.loop_%s(n int) LANGUAGE plpgsql AS $$\n"
            "DECLARE r record;\nBEGIN\n  FOR g IN 1..n LOOP\n    %s\n    COMMIT;\n"
            "  END LOOP;\nEND $$;\n") % (kind, CALLS[kind])


def cpu_ns(pid):
    """CPU time the process has run, in nanoseconds."""
    with open('/proc/%d/schedstat' % pid) as f:
        return int(f.read().split()[0])


def measure(target, kind, n):
    """Microseconds of backend CPU per transaction for one run."""
    host, port = target.rsplit(':', 1)
    q = subprocess.Popen(['psql', '-X', '-q', '-At', '-h', host, '-p', port, '-U', 'postgres'],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    # a short warm-up run fills the session's caches
    q.stdin.write(loop_sql(kind) + "CALL pg_temp.loop_%s(200);\nSELECT pg_backend_pid();\n" % kind)
    q.stdin.flush()
    pid = int(q.stdout.readline())
    before = cpu_ns(pid)
    q.stdin.write("CALL pg_temp.loop_%s(%d);\nSELECT 'done';\n" % (kind, n))
    q.stdin.flush()
    while q.stdout.readline().strip() != 'done':
        pass
    after = cpu_ns(pid)
    q.stdin.close()
    q.wait()
    return (after - before) / 1000.0 / n


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    n, rounds, targets = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    kinds = os.environ.get('ES_CPU_KINDS', 'command,append,insert').split(',')
    results = {(t, k): [] for t in targets for k in kinds}
    for r in range(rounds):
        for t in (targets if r % 2 == 0 else targets[::-1]):
            for k in (kinds if r % 2 == 0 else kinds[::-1]):
                results[(t, k)].append(measure(t, k, n))
    for t in targets:
        for k in kinds:
            v = sorted(results[(t, k)])
            print('%-28s %-8s %8.2f us/txn  q1-q3 %.2f-%.2f' % (
                t, k, statistics.median(v), v[len(v) // 4], v[(3 * len(v)) // 4]))


main()
