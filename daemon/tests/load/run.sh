#!/usr/bin/env bash
# Load test: deepstackd (release build) under wrk for 60 s at 32 connections, mixing
# recognize, register, list and delete against a gallery of 1,000 users registered from real
# photos. Prints throughput, latency percentiles, answers by route and status, and the
# daemon's memory before and after. Not part of CI (it takes a few minutes); the last
# results are in LOAD.md.
#
# Usage: daemon/tests/load/run.sh            (from the repository root)
# Needs: wrk (apt-get install wrk), curl, the test photos (cargo test builds
# target/testdata; or python3 daemon/tests/data/setup.py target/testdata).
# Knobs: DURATION (60s), CONNECTIONS (32), USERS (1000), THREADCOUNT (nproc),
#        OVERLOAD=1 to add a deliberately overloaded phase (MAX_QUEUE=4, 64 connections).
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$PWD
here=daemon/tests/load
DURATION=${DURATION:-60s}
CONNECTIONS=${CONNECTIONS:-32}
USERS=${USERS:-1000}
THREADCOUNT=${THREADCOUNT:-$(nproc)}
OVERLOAD=${OVERLOAD:-1}
photos=$root/target/testdata
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -f "$photos/obama2.jpg" ] || python3 daemon/tests/data/setup.py "$photos"
cargo build --release -q -p deepstackd
bin=$root/target/release/deepstackd

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
start() { # start ENV...: the daemon on a free port with the given extra settings
  port=$((20000 + RANDOM % 20000))
  while ! port_free "$port"; do port=$((port + 1)); done
  env -i PATH="$PATH" RUST_LOG=warn VISION-FACE=True THREADCOUNT="$THREADCOUNT" "$@" \
    "$bin" --bind 127.0.0.1 --port "$port" --data-dir "$work/data" 2>>"$work/daemon.log" &
  pid=$!
  for _ in $(seq 600); do
    curl -sf "127.0.0.1:$port/v1/status" >/dev/null && return 0
    sleep 0.1
  done
  echo "deepstackd did not start" >&2; cat "$work/daemon.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
rss_kb() { awk '/^VmRSS/ {print $2}' /proc/"$pid"/status; }
users() { curl -sf "127.0.0.1:$port/v1/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["users"], d["samples"])'; }

start
# Seeding registers real photos through the API (minutes on a small machine); its result is
# kept as a backup in target/ and restored by later runs (SEED=1 forces a fresh seeding).
seed_cache=$root/target/load-seed-$USERS.backup
if [ -f "$seed_cache" ] && [ "${SEED:-0}" != 1 ]; then
  echo "== restoring the $USERS-user gallery from $seed_cache"
  curl -sf -o /dev/null -F file=@"$seed_cache" "127.0.0.1:$port/v1/restore"
else
  echo "== seeding $USERS users (real photos, one registration each)"
  seed_start=$(date +%s)
  seed_photos=(obama.jpg obama3.jpg biden.jpg astronaut.png obama_1280x720.jpg obama.webp)
  seq 1 "$USERS" | xargs -P "$THREADCOUNT" -I{} sh -c '
    i={}; set -- '"${seed_photos[*]}"'; shift $((i % $#)); photo=$1
    curl -sf -o /dev/null -F image=@'"$photos"'/$photo -F userid=person-$i 127.0.0.1:'"$port"'/v1/vision/face/register \
      || echo "seed $i failed" >&2'
  echo "seeded in $(( $(date +%s) - seed_start )) s"
  curl -sf -o "$seed_cache" -X POST "127.0.0.1:$port/v1/backup"
fi
echo "users samples: $(users)"

echo "== warm-up (10 s, same mix)"
DEEPSTACK_PHOTOS=$photos wrk -t2 -c"$CONNECTIONS" -d10s -s "$here/mixed.lua" "http://127.0.0.1:$port" >/dev/null
rss_before=$(rss_kb)
echo "RSS before: $((rss_before / 1024)) MB; users samples: $(users)"

echo "== load: $DURATION at $CONNECTIONS connections, THREADCOUNT=$THREADCOUNT"
DEEPSTACK_PHOTOS=$photos wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --timeout 30s --latency \
  -s "$here/mixed.lua" "http://127.0.0.1:$port" | tee "$work/wrk.txt"
rss_after=$(rss_kb)
echo "RSS after: $((rss_after / 1024)) MB ($(( (rss_after - rss_before) * 100 / rss_before ))% growth); users samples: $(users)"
grep -q 'non200_or_bad=0$' "$work/wrk.txt" || { echo "FAIL: errors under normal load" >&2; exit 1; }
[ $(( (rss_after - rss_before) * 100 / rss_before )) -le 10 ] || { echo "FAIL: memory grew more than 10%" >&2; exit 1; }
stop

if [ "$OVERLOAD" = 1 ]; then
  echo "== deliberate overload: MAX_QUEUE=4, 64 connections, 20 s"
  start MAX_QUEUE=4
  DEEPSTACK_PHOTOS=$photos wrk -t2 -c64 -d20s --timeout 30s -s "$here/mixed.lua" "http://127.0.0.1:$port" | tee "$work/wrk-overload.txt"
  # Every refusal must be the documented one: 500 "failed to process request before timeout".
  if grep '^ROUTE error:' "$work/wrk-overload.txt" | grep -v '^ROUTE error:failed to process request before timeout 500:'; then
    echo "FAIL: undocumented errors under overload" >&2; exit 1
  fi
  curl -sf "127.0.0.1:$port/v1/status" >/dev/null && echo "still serving after the overload"
  stop
fi
echo "== done"
