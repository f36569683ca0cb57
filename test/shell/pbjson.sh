#!/usr/bin/env bash
# checks: 93 (test/run fails when a different number of checks ran)
# The protobuf-to-JSON decoder outside the server: replays every fuzzing
# corpus through its target (no crash, no sanitizer report where gcc has
# them) and runs the unit test of pbjson.c (test/fuzz, no clang needed).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(make -s -C "$root/test/fuzz" check 2>&1)
rc=$?
echo "$out" | sed -n -e 's/^build\/replay_\(.*\): replayed \(.*\)$/ok - corpus of \1 replayed (\2)/p' \
                     -e '/^ok - /p' -e '/^not ok - /p'
[ $rc -eq 0 ] || { echo "$out" | tail -20; echo "not ok - make -C test/fuzz check exited $rc"; }
