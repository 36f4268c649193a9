#!/usr/bin/env bash
# Runs the fuzz targets one after the other (one job each: the machine is shared).
#
# Usage: daemon/fuzz/run.sh [SECONDS] [TARGET...]
#   SECONDS defaults to 30 (a smoke run); the recorded runs in FUZZING.md used 600+.
#   TARGETs default to all: decode_detect form restore.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without one,
# RUSTC_BOOTSTRAP=1 lets stable build it (sanitizer flags are nightly-only features).
# New corpus entries go to corpus/TARGET (not committed); seeds/TARGET are the committed
# starting points. A crash leaves its input in artifacts/TARGET and stops the script:
# turn it into a regression test (see FUZZING.md) before fixing.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode_detect form restore)

if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

for t in "${targets[@]}"; do
  case $t in
    form) max_len=8192 ;;
    *) max_len=65536 ;;
  esac
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s"
  "${fuzz[@]}" run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -max_len="$max_len" -timeout=30 \
    -rss_limit_mb=4096 -print_final_stats=1 2>&1 | tee "fuzz-$t.log" | grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::|ERROR|panicked|SUMMARY' || true
  if grep -q 'ERROR\|panicked\|deadly signal' "fuzz-$t.log"; then
    echo "$t: FINDING, see fuzz-$t.log and artifacts/$t" >&2
    exit 1
  fi
done
