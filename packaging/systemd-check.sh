#!/usr/bin/env bash
# Runs the INSTALLED deepstack-rs package under a real systemd, on a machine (a container, CI)
# where systemd is not PID 1: systemd boots as PID 1 of a new PID and mount namespace that
# shares this machine's files and network, and everything below talks to it with nsenter.
#
#   packaging/systemd-check.sh [PHOTO.jpg]      (as root, after dpkg -i; deb-check.sh calls it)
#
# Checks, with the packaged unit and its whole sandbox (seccomp filter, MemoryDenyWriteExecute,
# ProtectSystem=strict, the deepstack user, CAP_NET_BIND_SERVICE): `deepstack start` brings the
# service up (Type=notify: READY only once the port answers), a face is detected in PHOTO,
# STATUS= and watchdog keep-alives reach systemd, a SIGKILL is followed by a restart, log lines
# reach the journal with their priorities, `deepstack stop` drains and stops it.
set -euo pipefail
photo=${1:-}
port=18081
fail() {
	echo "systemd-check: FAIL: $*" >&2
	[ -n "${pid1:-}" ] && in_ns journalctl -u deepstack --no-pager -n 40 >&2 2>/dev/null || true
	exit 1
}
check() { echo "systemd-check: ok: $*"; }

[ -d /run/systemd/system ] && fail "systemd already runs here: use the real one (deepstack start ...)"
[ -x /lib/systemd/systemd ] || fail "no /lib/systemd/systemd (apt-get install systemd)"
[ -x /usr/bin/deepstackd ] || fail "deepstack-rs is not installed"

# The namespace gets its own empty /tmp, /var/tmp and /run: at boot systemd-tmpfiles empties
# /tmp, and that must not be this machine's /tmp (other work's files are there).
unshare --pid --fork --mount --mount-proc --propagation private sh -c '
	for d in /tmp /var/tmp /run; do mount -t tmpfs -o mode=1777 tmpfs "$d"; done
	exec /lib/systemd/systemd --system --log-target=null' >/dev/null 2>&1 &
unshare_pid=$!
pid1=
cleanup() {
	if [ -n "$pid1" ]; then kill -9 "$pid1" 2>/dev/null || true; fi
	wait "$unshare_pid" 2>/dev/null || true
}
trap cleanup EXIT
in_ns() { nsenter --target "$pid1" --mount --pid -- "$@"; }

for _ in $(seq 100); do
	pid1=$(pgrep -P "$unshare_pid" -x systemd || true) # the sh above, once it exec'd systemd
	[ -n "$pid1" ] && break
	sleep 0.1
done
[ -n "$pid1" ] || fail "systemd did not start"
state=
for _ in $(seq 120); do
	state=$(in_ns systemctl is-system-running 2>/dev/null || true)
	case "$state" in running | degraded) break ;; esac
	sleep 0.5
done
case "$state" in running | degraded) ;; *) fail "systemd did not boot: $state" ;; esac
check "systemd $(in_ns systemctl --version | head -1 | cut -d' ' -f2) booted as PID 1 of a namespace ($state)"

show() { in_ns systemctl show deepstack -P "$1"; }
wait_active() {
	for _ in $(seq 240); do
		[ "$(show ActiveState)" = active ] && [ "$(show SubState)" = running ] && return 0
		sleep 0.5
	done
	fail "deepstack.service not active: $(show ActiveState)/$(show SubState)"
}

# 1. deepstack start -> systemctl enable + restart; Type=notify waits for READY.
in_ns deepstack start "VISION-FACE=True PORT=$port" || fail "deepstack start: exit $?"
wait_active
curl -fsS --max-time 5 "http://127.0.0.1:$port/v1/status" >/dev/null || fail "active but /v1/status does not answer"
[ "$(show UnitFileState)" = enabled ] || fail "not enabled: $(show UnitFileState)"
check "deepstack start: enabled, active (READY came), /v1/status answers"

# 2. Inference inside the sandbox (seccomp, W^X memory, read-only system).
if [ -n "$photo" ]; then
	photo=$(realpath "$photo")
	out=$(curl -fsS --max-time 60 -F image=@"$photo" "http://127.0.0.1:$port/v1/vision/face")
	[[ "$out" == *'"success":true'* && "$out" == *'"confidence"'* ]] ||
		fail "detection in the sandbox: $out"
	check "a face detected inside the sandbox: ${out:0:80}..."
fi

# 3. STATUS= and watchdog keep-alives.
for _ in $(seq 40); do
	[[ "$(show StatusText)" == serving:* ]] && break
	sleep 0.5
done
[[ "$(show StatusText)" == serving:* ]] || fail "StatusText: $(show StatusText)"
watchdog=$(show WatchdogTimestampMonotonic)
[ "${watchdog:-0}" -gt 0 ] || fail "no watchdog keep-alive yet"
check "StatusText '$(show StatusText)', watchdog keep-alives received ($(show WatchdogUSec) interval)"

# 4. A crash: SIGKILL -> Restart=on-failure brings it back.
old=$(show MainPID)
in_ns kill -9 "$old" # a PID of the namespace
for _ in $(seq 100); do
	new=$(show MainPID)
	[ "$new" != 0 ] && [ "$new" != "$old" ] && break
	sleep 0.2
done
wait_active
[ "$(show NRestarts)" -ge 1 ] || fail "NRestarts $(show NRestarts)"
curl -fsS --max-time 5 "http://127.0.0.1:$port/v1/status" >/dev/null || fail "no answer after the restart"
check "SIGKILL of $old: restarted as $(show MainPID) (NRestarts $(show NRestarts))"

# 5. Journal: this run's lines, with their priorities parsed (info is not warning).
journal() { in_ns journalctl -u deepstack --no-pager -o cat "_SYSTEMD_INVOCATION_ID=$(show InvocationID)" "$@"; }
info=$(journal -p info)
warning=$(journal -p warning)
[[ "$info" == *"listening on"* ]] || fail "no 'listening on' line at priority info in the journal"
[[ "$warning" != *"listening on"* ]] || fail "'listening on' logged as a warning: priorities not parsed"
[[ "$info" != *"<6>"* ]] || fail "raw <N> prefixes reached the journal text"
check "journal has the daemon's lines with their priorities"

# 6. deepstack stop: STOPPING=1 and a clean exit.
invocation=$(show InvocationID)
in_ns deepstack stop || fail "deepstack stop: exit $?"
[ "$(show ActiveState)" = inactive ] || fail "after stop: $(show ActiveState) (result $(show Result))"
[ "$(show Result)" = success ] || fail "stop result: $(show Result)"
stopped=$(in_ns journalctl -u deepstack --no-pager -o cat "_SYSTEMD_INVOCATION_ID=$invocation")
[[ "$stopped" == *"SIGTERM: finishing the requests in flight"* ]] || fail "no drain line after SIGTERM"
check "deepstack stop: SIGTERM drain, exit clean (Result=success)"
echo "systemd-check: all passed"
