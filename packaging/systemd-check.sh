#!/usr/bin/env bash
# Runs the INSTALLED deepstack-rs package under a real systemd, on a machine (a container, CI)
# where systemd is not PID 1: systemd boots as PID 1 of a new PID and mount namespace that
# shares this machine's files and network, and everything below talks to it with nsenter.
#
#   packaging/systemd-check.sh [PHOTO.jpg]      (as root, after dpkg -i; deb-check.sh calls it)
#
# Checks, with the packaged units and the whole sandbox (seccomp filter, MemoryDenyWriteExecute,
# ProtectSystem=strict, PrivateNetwork, the deepstack user, no capability): `deepstack start`
# brings deepstack.socket up on PORT and the service on its socket (Type=notify: READY only
# once it serves), the exposure systemd-analyze gives the running service, a face detected in
# PHOTO, STATUS= and watchdog keep-alives reaching systemd, journal entries with their
# priorities and request fields, a `deepstack restart` during a stream of requests losing
# none, a SIGKILL followed by a restart, `deepstack stop` draining and stopping both units.
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
socket_show() { in_ns systemctl show deepstack.socket -P "$1"; }
[ "$(socket_show ActiveState)" = active ] || fail "deepstack.socket: $(socket_show ActiveState)"
[ "$(socket_show UnitFileState)" = enabled ] || fail "deepstack.socket not enabled"
[[ "$(socket_show Listen)" == *":$port (Stream)"* ]] || fail "deepstack.socket listens on $(socket_show Listen)"
check "deepstack start: socket and service enabled and active (READY came), /v1/status answers on $(socket_show Listen)"

# 1b. The service serves the socket systemd passed, and holds no capability.
journal() { in_ns journalctl -u deepstack --no-pager -o cat "_SYSTEMD_INVOCATION_ID=$(show InvocationID)" "$@"; }
[[ "$(journal)" == *"(the socket from deepstack.socket)"* ]] || fail "the service bound a socket of its own"
caps=$(in_ns grep '^CapEff' "/proc/$(show MainPID)/status" | awk '{print $2}')
[ "$caps" = 0000000000000000 ] || fail "the service holds capabilities: CapEff $caps"
exposure=$(in_ns systemd-analyze security deepstack.service 2>&1 |
	sed -n 's/.*Overall exposure level for deepstack.service: \([0-9.]*\).*/\1/p')
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 1.0) }' || fail "exposure of the running service: $exposure > 1.0"
check "socket activation: no capability (CapEff 0), systemd-analyze security exposure $exposure"

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

# 4. `deepstack restart` during a stream of requests: connections wait in the socket's queue
# while the new process loads its models, and none fails.
stream() { # $1: a file to count into; runs until $stop exists
	while [ ! -e "$stop" ]; do
		if curl -fsS --max-time 60 "http://127.0.0.1:$port/v1/status" >/dev/null 2>&1; then
			echo ok >>"$1"
		else
			echo failed >>"$1"
		fi
	done
}
work=$(mktemp -d)
stop=$work/stop
before=$(show MainPID)
stream "$work/a" & stream_a=$!
stream "$work/b" & stream_b=$!
sleep 1
in_ns deepstack restart >/dev/null || fail "deepstack restart: exit $?"
wait_active
sleep 1
touch "$stop"
wait "$stream_a" "$stream_b"
ok=$(cat "$work/a" "$work/b" | grep -c '^ok$' || true)
failed=$(cat "$work/a" "$work/b" | grep -c '^failed$' || true)
rm -rf "$work"
[ "$(show MainPID)" != "$before" ] || fail "deepstack restart did not replace $before"
[ "$failed" = 0 ] || fail "$failed of $((ok + failed)) requests failed across the restart"
[ "$ok" -gt 0 ] || fail "no request answered"
check "deepstack restart ($before -> $(show MainPID)) during two request streams: $ok answered, 0 failed"

# 4b. A crash: SIGKILL -> Restart=on-failure brings it back.
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

# 5. Journal: this run's lines, with their priorities (info is not warning), and a request's
# entry with its fields (native journal entries, not text on stderr).
info=$(journal -p info)
warning=$(journal -p warning)
[[ "$info" == *"listening on"* ]] || fail "no 'listening on' line at priority info in the journal"
[[ "$warning" != *"listening on"* ]] || fail "'listening on' logged as a warning: priorities not parsed"
[[ "$info" != *"<6>"* ]] || fail "raw <N> prefixes reached the journal text"
curl -fsS --max-time 5 "http://127.0.0.1:$port/v1/status" >/dev/null || fail "/v1/status after the restart"
entry=""
for _ in $(seq 20); do
	entry=$(journal ROUTE=status -o export | tr '\n' ' ')
	[ -n "$entry" ] && break
	sleep 0.25
done
for field in ROUTE=status METHOD=GET PATH=/v1/status HTTP_STATUS=200 DURATION_MS= SYSLOG_IDENTIFIER=deepstackd PRIORITY=6; do
	[[ " $entry" == *" $field"* ]] || fail "the request's journal entry lacks $field: ${entry:0:600}"
done
check "journal has the daemon's lines with their priorities, and request entries with fields (ROUTE=status ...)"

# 6. deepstack stop: STOPPING=1 and a clean exit.
invocation=$(show InvocationID)
in_ns deepstack stop || fail "deepstack stop: exit $?"
[ "$(show ActiveState)" = inactive ] || fail "after stop: $(show ActiveState) (result $(show Result))"
[ "$(show Result)" = success ] || fail "stop result: $(show Result)"
stopped=$(in_ns journalctl -u deepstack --no-pager -o cat "_SYSTEMD_INVOCATION_ID=$invocation")
[[ "$stopped" == *"SIGTERM: finishing the requests in flight"* ]] || fail "no drain line after SIGTERM"
[ "$(socket_show ActiveState)" = inactive ] || fail "deepstack.socket after stop: $(socket_show ActiveState)"
! curl -fsS --max-time 2 "http://127.0.0.1:$port/v1/status" >/dev/null 2>&1 || fail "the port still answers after stop"
check "deepstack stop: SIGTERM drain, exit clean (Result=success), socket closed"
echo "systemd-check: all passed"
