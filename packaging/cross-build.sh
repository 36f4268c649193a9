#!/usr/bin/env bash
# Builds the release binaries deepstackd and deepstack for TARGET, without Docker: a rustup
# target plus Debian's gcc cross toolchain (it links, and compiles the bundled SQLite).
#
#   packaging/cross-build.sh aarch64-unknown-linux-gnu       # arm64: Raspberry Pi 3/4/5, 64-bit OS
#   packaging/cross-build.sh armv7-unknown-linux-gnueabihf   # armhf: Pi 2/3/4/5, 32-bit OS (ARMv7)
#   packaging/cross-build.sh x86_64-unknown-linux-gnu        # the host itself: a plain build
#
# Output: target/TARGET/release/{deepstackd,deepstack} (the host: target/release/).
# Installs what is missing (as root): pkg-config and libsystemd-dev (deepstackd links
# libsystemd: the systemd crate), and for an ARM target the rustup target, gcc-*-linux-gnu*,
# libc6-dev-*-cross and Debian's multiarch libsystemd-dev:ARCH in place of libsystemd-dev.
# Sets CARGO_TARGET_<T>_RUNNER to qemu-user, so `cargo run/test --target TARGET` also works
# when qemu-user is installed. cross-rs users: see cross.toml instead.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: $0 TARGET (aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | x86_64-unknown-linux-gnu)}
host=$(rustc -vV | sed -n 's/^host: //p')
bins=(-p deepstackd -p deepstack-cli --bin deepstackd --bin deepstack)

# shellcheck source=packaging/apt.sh
. packaging/apt.sh
command -v pkg-config >/dev/null || apt_install pkg-config
# jemalloc (deepstackd's allocator) is built from source by tikv-jemalloc-sys: configure, make.
command -v make >/dev/null || apt_install make
# Its page size is fixed at build time. On aarch64, 64 KiB: such a build also runs on 4 KiB
# and on the 16 KiB pages of the Pi 5's kernel, where a 4 KiB build would not start. A cross
# build cannot probe the target's; this variable also sets it for a native aarch64 build
# through this script. Only a plain `cargo build` on a board takes that board's own.
export AARCH64_UNKNOWN_LINUX_GNU_JEMALLOC_SYS_WITH_LG_PAGE=16

if [ "$target" = "$host" ]; then
	pkg-config --exists libsystemd || apt_install libsystemd-dev
	exec cargo build --release "${bins[@]}"
fi

case "$target" in
aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu apt_arch=arm64 qemu="qemu-aarch64 -cpu cortex-a72" ;;
armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf apt_arch=armhf qemu="qemu-arm -cpu cortex-a7" ;;
*)
	echo "cross-build.sh: unsupported target $target" >&2
	exit 2
	;;
esac

if ! rustup target list --installed | grep -qx "$target"; then
	rustup target add "$target"
fi
if ! command -v "$gnu-gcc" >/dev/null || [ ! -d "/usr/$gnu/include" ]; then
	apt_install "gcc-$gnu" "libc6-dev-$apt_arch-cross"
fi
# libsystemd for the target, which libsystemd-sys finds through pkg-config: Debian's multiarch
# libsystemd-dev:ARCH (/usr/lib/GNU/libsystemd.so and its .pc). It pulls in libsystemd0:ARCH
# and libc6:ARCH, the runtime the RUNNER below and qemu-smoke.sh use. Multi-Arch: same, so apt
# installs the version of the host's libsystemd0 (and upgrades both together).
if [ ! -f "/usr/lib/$gnu/pkgconfig/libsystemd.pc" ]; then
	apt_install_foreign "$apt_arch" libsystemd-dev
fi

upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
lower=${target//-/_}
export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
export "CC_${lower}=$gnu-gcc"
export "AR_${lower}=$gnu-ar"
# pkg-config for the target only (the pkg-config crate reads VAR_<target> before VAR, and host
# build scripts keep the host's): the target's .pc files in place of the host's, and
# ALLOW_CROSS because plain pkgconf is no cross wrapper. Debian's cross gcc and ld search
# /usr/lib/GNU themselves (multiarch): libsystemd.so, and libsystemd.so.0's own NEEDED
# libraries (libcap, libgcrypt, liblzma, libzstd, liblz4) that ld checks.
export "PKG_CONFIG_ALLOW_CROSS_${lower}=1"
export "PKG_CONFIG_LIBDIR_${lower}=/usr/lib/$gnu/pkgconfig:/usr/share/pkgconfig"
export "PKG_CONFIG_PATH_${lower}="
# qemu without a prefix (-L /): the binary's /lib/ld-linux-*.so and libraries are libc6:ARCH
# and libsystemd0:ARCH in /usr/lib/GNU. -L /usr/GNU would pair the cross toolchain's ld.so
# (libc6-*-cross, an older build of glibc) with libc6:ARCH's libc.so.6, which that ld.so
# finds first, in /lib/GNU.
export "CARGO_TARGET_${upper}_RUNNER=$qemu -L /"

cargo build --release --target "$target" "${bins[@]}"
