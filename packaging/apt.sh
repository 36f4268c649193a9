# Sourced by the packaging scripts: apt installs of what is missing, as root. apt's lists are
# refreshed once per script, and again after a foreign architecture is added.
apt_updated=
apt_install() {
	[ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# apt_install_foreign ARCH PACKAGE...: Debian's multiarch packages for ARCH (arm64, armhf),
# the architecture added to dpkg first if it is not yet.
apt_install_foreign() {
	local arch=$1
	shift
	if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
		dpkg --add-architecture "$arch"
		apt_updated=
	fi
	apt_install "${@/%/:$arch}"
}
