#!/usr/bin/env bash
# Builds the .deb for one Debian architecture with dpkg-deb (no cargo-deb needed):
#
#   packaging/build-deb.sh amd64|arm64|armhf      # -> target/deb/deepstack-rs_VERSION_ARCH.deb
#
# Builds the release binaries first (packaging/cross-build.sh); DEEPSTACK_SKIP_BUILD=1 packages
# the binaries already built. The package: /usr/bin/{deepstackd,deepstack}, the systemd units,
# /etc/deepstack/deepstack.env (a conffile), the docs and licences, and the maintainer scripts
# of packaging/debian/. Depends are read from the binaries (their NEEDED libraries and the
# newest glibc and libsystemd symbol versions they use).
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${1:?usage: $0 amd64|arm64|armhf}
case "$arch" in
amd64) target=x86_64-unknown-linux-gnu ;;
arm64) target=aarch64-unknown-linux-gnu ;;
armhf) target=armv7-unknown-linux-gnueabihf ;;
*)
	echo "build-deb.sh: unknown architecture $arch (amd64, arm64, armhf)" >&2
	exit 2
	;;
esac

if [ "${DEEPSTACK_SKIP_BUILD:-}" != 1 ]; then
	packaging/cross-build.sh "$target"
fi
host=$(rustc -vV | sed -n 's/^host: //p')
if [ "$target" = "$host" ]; then bindir=target/release; else bindir=target/$target/release; fi

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
deb_version="$version-${DEB_REVISION:-1}"
out=target/deb
root=$out/$arch/root
rm -rf "${out:?}/$arch"
mkdir -p "$root/DEBIAN"

install -D -m 0755 "$bindir/deepstackd" "$root/usr/bin/deepstackd"
install -D -m 0755 "$bindir/deepstack" "$root/usr/bin/deepstack"
install -D -m 0644 systemd/deepstack.service "$root/usr/lib/systemd/system/deepstack.service"
install -D -m 0644 systemd/deepstack.socket "$root/usr/lib/systemd/system/deepstack.socket"
install -D -m 0640 packaging/deepstack.env "$root/etc/deepstack/deepstack.env"
doc=$root/usr/share/doc/deepstack-rs
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
install -m 0644 README.md "$doc/README.md"
install -m 0644 models-int8/PROVENANCE.md "$doc/PROVENANCE.md"
python3 packaging/third-party-licenses.py "$target" | gzip -9n >"$doc/third-party-licenses.txt.gz"
chmod 0644 "$doc/third-party-licenses.txt.gz"
{
	printf 'deepstack-rs (%s) unstable; urgency=medium\n\n  * Built from the deepstack-rs workspace %s.\n\n' "$deb_version" "$version"
	printf ' -- deepstack-rs maintainers <deepstack-rs@example.invalid>  %s\n' "$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n >"$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"

# Depends from what the binaries link against.
glibc=$(readelf --wide -V "$root/usr/bin/deepstackd" "$root/usr/bin/deepstack" |
	grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -1)
depends="libc6 (>= $glibc)"
for lib in $(readelf -d "$root/usr/bin/deepstackd" "$root/usr/bin/deepstack" |
	sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u); do
	case "$lib" in
	libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | ld-linux*) ;;
	libgcc_s.so.1) depends="$depends, libgcc-s1" ;;
	libsystemd.so.0)
		# Its symbols are versioned by the systemd release that added them (LIBSYSTEMD_219 for
		# sd_pid_notify_with_fds), and libsystemd0's version is systemd's (252.39-1~deb12u2):
		# the newest one used is the floor, as libsystemd0's symbols file (dpkg-shlibdeps) has it.
		systemd=$(readelf --wide -V "$root/usr/bin/deepstackd" "$root/usr/bin/deepstack" |
			grep -o 'LIBSYSTEMD_[0-9]*' | sed 's/LIBSYSTEMD_//' | sort -nu | tail -1)
		depends="$depends, libsystemd0${systemd:+ (>= $systemd)}"
		;;
	*)
		echo "build-deb.sh: unexpected library $lib: add its package to Depends" >&2
		exit 1
		;;
	esac
done

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$deb_version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
	-e "s/@INSTALLED_SIZE@/$installed_size/" packaging/debian/control.in >"$root/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
	install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
	xargs -0 md5sum) >"$root/DEBIAN/md5sums"

deb=$out/deepstack-rs_${deb_version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb: $(stat -c %s "$deb") bytes (installed $installed_size KiB); Depends: $depends"
