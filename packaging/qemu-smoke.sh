#!/usr/bin/env bash
# Runs the ARM binaries under qemu-user on this x86 machine.
#
#   packaging/qemu-smoke.sh           # `deepstackd --version` and `deepstack --version`
#   packaging/qemu-smoke.sh --full    # and the API: the ARM deepstackd and the x86 one (in
#                                     # the ARM one's mode) each register obama.jpg and
#                                     # recognize obama2.jpg; the userids must agree and the
#                                     # confidences within 0.01 (under a minute)
#   packaging/qemu-smoke.sh --all     # --full, plus recognize biden.jpg (unknown) and match
#                                     # obama.jpg with obama3.jpg (about 2 minutes)
#
# QEMU_TARGET=armv7-unknown-linux-gnueabihf checks the armhf build instead of aarch64.
# Needs the binaries built: packaging/cross-build.sh TARGET (and, for --full, the x86
# target/release/deepstackd: cargo build --release -p deepstackd). Photos: target/testdata,
# made by daemon/tests/data/setup.py (run here if missing). Installs qemu-user, curl and the
# ARM binaries' run-time libraries (Debian's multiarch libsystemd0:ARCH, with libc6:ARCH) if
# missing. Daemons listen on 127.0.0.1 only, with temporary data directories.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${QEMU_TARGET:-aarch64-unknown-linux-gnu}
case "$target" in
aarch64-unknown-linux-gnu) qemu=qemu-aarch64 cpu=cortex-a72 gnu=aarch64-linux-gnu apt_arch=arm64 ;;
armv7-unknown-linux-gnueabihf) qemu=qemu-arm cpu=cortex-a7 gnu=arm-linux-gnueabihf apt_arch=armhf ;;
*)
	echo "qemu-smoke.sh: unsupported QEMU_TARGET $target" >&2
	exit 2
	;;
esac
bin=target/$target/release
# shellcheck source=packaging/apt.sh
. packaging/apt.sh
for tool in "$qemu" curl; do
	if ! command -v "$tool" >/dev/null; then
		apt_install qemu-user curl
		break
	fi
done
# deepstackd needs libsystemd.so.0 for ARCH: Debian's multiarch libsystemd0:ARCH, which brings
# libc6:ARCH (/lib/ld-linux-*.so, /usr/lib/GNU/libc.so.6). cross-build.sh has installed them
# with libsystemd-dev:ARCH; here only when missing (binaries built elsewhere).
if [ ! -e "/usr/lib/$gnu/libsystemd.so.0" ]; then
	apt_install_foreign "$apt_arch" libsystemd0
fi
# A Raspberry Pi's core (Pi 4: Cortex-A72, Pi 2: Cortex-A7). qemu's default "max" CPU
# offers extensions a Pi lacks, and tract's kernels for them run ten times slower under qemu.
# -L /: no prefix, so the binaries run on the multiarch runtime, ld.so, libc and libsystemd of
# one Debian build each, as on a Pi (the cross toolchain's /usr/GNU has an older ld.so, and
# no libsystemd).
emulator=("$qemu" -cpu "$cpu" -L /)
run_arm() { "${emulator[@]}" "$@"; }

for b in deepstackd deepstack; do
	[ -x "$bin/$b" ] || { echo "qemu-smoke.sh: no $bin/$b: run packaging/cross-build.sh $target" >&2; exit 1; }
	file -b "$bin/$b" 2>/dev/null | grep -q ARM || readelf -h "$bin/$b" | grep -q 'AArch64\|ARM' ||
		{ echo "qemu-smoke.sh: $bin/$b is not an ARM binary" >&2; exit 1; }
done
arm_daemon_version=$(run_arm "$bin/deepstackd" --version)
arm_cli_version=$(run_arm "$bin/deepstack" --version)
[ "$arm_daemon_version" = "deepstackd $(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)" ] ||
	{ echo "qemu-smoke.sh: unexpected $arm_daemon_version" >&2; exit 1; }
echo "qemu-smoke: $target under $qemu -cpu $cpu: $arm_daemon_version, $arm_cli_version"
# The ARM build refuses MODE, in DeepStack's words, before it loads anything.
scratch=$(mktemp -d)
out=$(timeout 120 env MODE=High "${emulator[@]}" "$bin/deepstackd" --bind 127.0.0.1 --port 1 \
	--data-dir "$scratch" 2>&1) && status=0 || status=$?
rm -rf "$scratch"
if [ "$status" = 0 ] || [ "$status" = 124 ] || ! grep -qi "not available" <<<"$out"; then
	echo "qemu-smoke.sh: MODE=High was not refused on ARM (exit $status): $out" >&2
	exit 1
fi
echo "qemu-smoke: MODE=High refused on ARM: $out"

case "${1:-}" in
--full) all=0 ;;
--all) all=1 ;;
*) exit 0 ;;
esac

photos=target/testdata
[ -f "$photos/obama2.jpg" ] || python3 daemon/tests/data/setup.py "$photos"
x86=target/release/deepstackd
[ -x "$x86" ] || cargo build --release -p deepstackd --bin deepstackd

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME PORT COMMAND...: a daemon with faces on, on 127.0.0.1:PORT, its own DATA_DIR.
start() {
	local name=$1 port=$2
	shift 2
	mkdir -p "$work/$name"
	env VISION-FACE=True BIND=127.0.0.1 PORT="$port" DATA_DIR="$work/$name" TIMEOUT=1800 \
		"$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
	local started=$SECONDS
	until curl -fsS --max-time 5 "http://127.0.0.1:$port/v1/status" >/dev/null 2>&1; do
		if ! kill -0 "${pids[-1]}" 2>/dev/null; then
			cat "$work/$name.log" >&2
			echo "qemu-smoke.sh: $name exited" >&2
			exit 1
		fi
		if [ $((SECONDS - started)) -gt 600 ]; then
			echo "qemu-smoke.sh: $name not up after 600 s" >&2
			exit 1
		fi
		sleep 1
	done
	echo "qemu-smoke: $name up in $((SECONDS - started)) s"
}

# session PORT: register, recognize (and more with --all); prints one JSON object.
session() {
	local url=http://127.0.0.1:$1/v1/vision/face
	local t0=$SECONDS
	curl -fsS --max-time 1800 -F image=@"$photos/obama.jpg" -F userid=obama "$url/register" >"$work/register.json"
	curl -fsS --max-time 1800 -F image=@"$photos/obama2.jpg" "$url/recognize" >"$work/obama2.json"
	if [ "$all" = 1 ]; then
		curl -fsS --max-time 1800 -F image=@"$photos/biden.jpg" "$url/recognize" >"$work/biden.json"
		curl -fsS --max-time 1800 -F image1=@"$photos/obama.jpg" -F image2=@"$photos/obama3.jpg" "$url/match" >"$work/match.json"
	fi
	python3 - "$work" "$((SECONDS - t0))" "$all" <<'PY'
import json, sys
w, seconds, everything = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
load = lambda n: json.load(open(f"{w}/{n}.json"))
recognized = lambda n: [(p["userid"], p["confidence"]) for p in load(n)["predictions"]]
out = {"register": load("register").get("message"), "obama2": recognized("obama2")}
if everything:
    out["biden"] = recognized("biden")
    out["match"] = load("match").get("similarity")
out["seconds"] = seconds
print(json.dumps(out))
PY
}

arm_port=$(free_port)
start "$target" "$arm_port" "${emulator[@]}" "$bin/deepstackd"
# The x86 daemon runs the detector setting the ARM one runs (fixed on ARM), so the two compare.
mode=$(curl -fsS "http://127.0.0.1:$arm_port/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mode"])')
arm_result=$(session "$arm_port")
echo "qemu-smoke: $target (mode $mode): $arm_result"
x86_port=$(free_port)
start x86_64 "$x86_port" env MODE="$mode" "$x86"
x86_result=$(session "$x86_port")
echo "qemu-smoke: x86_64 (MODE=$mode): $x86_result"

python3 - "$arm_result" "$x86_result" <<'PY'
import json, sys
arm, x86 = json.loads(sys.argv[1]), json.loads(sys.argv[2])
problems, diffs = [], []
for photo in ("obama2", "biden"):
    if photo not in arm:
        continue
    a, x = arm[photo], x86[photo]
    if [u for u, _ in a] != [u for u, _ in x]:
        problems.append(f"{photo}: userids {a} vs {x}")
    for (_, ca), (_, cx) in zip(a, x):
        diffs.append(abs(ca - cx))
if [u for u, _ in arm["obama2"]] != ["obama"]:
    problems.append(f"obama2.jpg recognized as {arm['obama2']}")
if "match" in arm:
    diffs.append(abs(arm["match"] - x86["match"]))
if max(diffs) > 0.01:
    problems.append(f"confidences differ by {max(diffs):.5f} (> 0.01)")
if problems:
    print("qemu-smoke: FAIL: " + "; ".join(problems))
    sys.exit(1)
print(f"qemu-smoke: ARM and x86 agree: same userids, largest confidence difference {max(diffs):.5f}")
PY
