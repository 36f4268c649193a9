#!/usr/bin/env bash
# Installs a deepstack-rs .deb for real with dpkg, checks it, then purges it (twice: keeping the
# gallery, then with DEEPSTACK_PURGE_GALLERY=yes). Run as root on a machine where deepstack-rs
# is not in use: it removes any installed deepstack-rs first (refused outside CI).
#
#   packaging/deb-check.sh target/deb/deepstack-rs_0.1.0-1_amd64.deb
#
# Works with or without a running systemd: without it (a container, CI), deepstackd is started
# as a user without systemd would (user deepstack, CAP_NET_BIND_SERVICE only to bind port 80
# itself, the packaged env file), and systemd-check.sh boots a real systemd in a namespace to run the packaged unit itself
# (DEEPSTACK_CHECK_PHOTO=PATH.jpg adds a face detection inside its sandbox).
set -euo pipefail
deb=$(realpath "${1:?usage: $0 PATH.deb}")
gallery=/var/lib/deepstack
env_file=/etc/deepstack/deepstack.env
fail() {
	echo "deb-check: FAIL: $*" >&2
	exit 1
}
check() { echo "deb-check: ok: $*"; }
daemon_pid=
cleanup() { if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

for tool in curl setpriv nsenter pgrep systemd-analyze; do
	if ! command -v "$tool" >/dev/null; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl util-linux procps systemd >/dev/null
		break
	fi
done

if dpkg-query -W -f '${Status}' deepstack-rs 2>/dev/null | grep -q installed; then
	[ "${CI:-}" = true ] || fail "deepstack-rs is installed here: purge it first (this check would)"
	DEEPSTACK_PURGE_GALLERY=yes dpkg --purge deepstack-rs >/dev/null
fi
if [ "${CI:-}" = true ]; then rm -rf "$gallery"; fi

# 1. Install.
dpkg -i "$deb" >/dev/null
dpkg --verify deepstack-rs || fail "dpkg --verify"
check "installed $(dpkg-query -W -f '${Package} ${Version} ${Architecture}' deepstack-rs)"

# 2. Files, user, permissions.
for f in /usr/bin/deepstackd /usr/bin/deepstack /usr/lib/systemd/system/deepstack.service \
	/usr/lib/systemd/system/deepstack.socket \
	"$env_file" /usr/share/doc/deepstack-rs/copyright /usr/share/doc/deepstack-rs/third-party-licenses.txt.gz; do
	[ -f "$f" ] || fail "missing $f"
done
check "files"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd deepstack) || fail "no user deepstack"
if [ "$uid" -ge 1000 ] || [ "$home" != "$gallery" ] || [ "$shell" != /usr/sbin/nologin ]; then
	fail "user deepstack: uid $uid home $home shell $shell"
fi
[ "$(stat -c '%a %U %G' "$env_file")" = "640 root deepstack" ] || fail "$env_file: $(stat -c '%a %U %G' "$env_file")"
[ "$(stat -c '%a %U %G' "$gallery")" = "750 deepstack deepstack" ] || fail "$gallery: $(stat -c '%a %U %G' "$gallery")"
check "system user deepstack (uid $uid), $env_file 0640 root:deepstack, $gallery 0750"

# 3. Both binaries run.
version=$(dpkg-query -W -f '${Version}' deepstack-rs)
[ "$(deepstack --version)" = "deepstack ${version%-*}" ] || fail "deepstack --version: $(deepstack --version)"
[ "$(deepstackd --version)" = "deepstackd ${version%-*}" ] || fail "deepstackd --version: $(deepstackd --version)"
check "$(deepstack --version), $(deepstackd --version)"

# 4. The units. The service holds no capability and may create no network socket (the port
# is deepstack.socket's): exposure at most 1.0.
systemd-analyze verify /usr/lib/systemd/system/deepstack.service /usr/lib/systemd/system/deepstack.socket ||
	fail "systemd-analyze verify"
exposure=$(systemd-analyze security --offline=yes /usr/lib/systemd/system/deepstack.service 2>&1 |
	sed -n 's/.*Overall exposure level for deepstack.service: \([0-9.]*\).*/\1/p')
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 1.0) }' || fail "exposure $exposure > 1.0"
check "systemd-analyze verify clean, security exposure $exposure"

# 5. deepstackd starts with the packaged config and binds the port itself, as without systemd.
port=80
if (exec 3<>/dev/tcp/127.0.0.1/80) 2>/dev/null; then port=18080; fi # 80 taken: the env beats the file
log=$(mktemp)
env PORT=$port setpriv --reuid deepstack --regid deepstack --init-groups \
	--inh-caps -all,+net_bind_service --ambient-caps -all,+net_bind_service \
	--bounding-set -all,+net_bind_service --no-new-privs \
	/usr/bin/deepstackd --env-file "$env_file" >"$log" 2>&1 &
daemon_pid=$!
status=
for _ in $(seq 120); do
	status=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/v1/status" 2>/dev/null) && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$log"; fail "deepstackd exited"; }
	sleep 0.5
done
[[ "$status" == *"\"version\":\"${version%-*}\""* ]] || { cat "$log"; fail "GET /v1/status: $status"; }
if [ "$port" = 80 ]; then deepstack status >/dev/null || fail "deepstack status: exit $?"; fi
kill -TERM "$daemon_pid"
wait "$daemon_pid" || fail "deepstackd did not stop cleanly on SIGTERM"
daemon_pid=
[ -f "$gallery/faces.sqlite3" ] || fail "no gallery in $gallery"
check "deepstackd as user deepstack on port $port with the packaged config; /v1/status answered; SIGTERM exit 0"

# 5b. Under a real systemd: this machine's, or one booted as PID 1 of a namespace.
if [ ! -d /run/systemd/system ]; then
	"$(dirname "$0")/systemd-check.sh" ${DEEPSTACK_CHECK_PHOTO:+"$DEEPSTACK_CHECK_PHOTO"} ||
		fail "the package under systemd (packaging/systemd-check.sh)"
	check "the packaged unit under a real systemd"
fi

# 6. deepstack start/config with the real systemctl.
set +e
out=$(deepstack start "VISION-FACE=True API-KEY=ci-secret" 2>&1)
code=$?
set -e
if [ -d /run/systemd/system ]; then
	[ "$code" = 0 ] || fail "deepstack start: exit $code: $out"
	deepstack status || fail "deepstack status: exit $?"
	deepstack stop
else
	if [ "$code" != 1 ] || [[ "$out" != *"systemd is not running"* ]]; then
		fail "deepstack start without systemd: exit $code: $out"
	fi
fi
[ "$(stat -c '%a %U %G' "$env_file")" = "640 root deepstack" ] || fail "$env_file after start: $(stat -c '%a %U %G' "$env_file")"
config=$(deepstack config)
[[ "$config" == *"********"* && "$config" != *ci-secret* ]] || fail "deepstack config: $config"
check "deepstack start wrote $env_file (0640 root:deepstack), config masks the key (exit $code)"

# 7. Purge keeps the gallery, removes settings and user.
dpkg --purge deepstack-rs >/dev/null 2>&1
[ ! -e /etc/deepstack ] || fail "/etc/deepstack survived the purge"
! getent passwd deepstack >/dev/null || fail "user deepstack survived the purge"
! getent group deepstack >/dev/null || fail "group deepstack survived the purge"
[ ! -e /usr/bin/deepstackd ] || fail "/usr/bin/deepstackd survived"
[ ! -e /etc/systemd/system/multi-user.target.wants/deepstack.service ] || fail "the boot link survived"
[ ! -e /etc/systemd/system/sockets.target.wants/deepstack.socket ] || fail "the socket's boot link survived"
[ ! -e /etc/systemd/system/deepstack.socket.d ] || fail "the socket's drop-in survived the purge"
[ -f "$gallery/faces.sqlite3" ] || fail "the gallery did not survive the purge"
check "purge: settings, socket drop-in, user and group gone; gallery kept"

# 8. A reinstall takes the gallery back; DEEPSTACK_PURGE_GALLERY=yes removes it.
dpkg -i "$deb" >/dev/null
[ "$(stat -c %U "$gallery/faces.sqlite3")" = deepstack ] || fail "reinstall: gallery not re-owned"
DEEPSTACK_PURGE_GALLERY=yes dpkg --purge deepstack-rs >/dev/null
[ ! -e "$gallery" ] || fail "DEEPSTACK_PURGE_GALLERY=yes kept $gallery"
check "reinstall re-owns the gallery; DEEPSTACK_PURGE_GALLERY=yes purge removes it"
echo "deb-check: all passed"
