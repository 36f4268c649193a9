#!/usr/bin/env bash
# Builds the release binaries deepstackd and deepstack for TARGET, without Docker: a rustup
# target plus Debian's gcc cross toolchain (it links, and compiles the bundled SQLite).
#
#   packaging/cross-build.sh aarch64-unknown-linux-gnu       # arm64: Raspberry Pi 3/4/5, 64-bit OS
#   packaging/cross-build.sh armv7-unknown-linux-gnueabihf   # armhf: Pi 2/3/4/5, 32-bit OS (ARMv7)
#   packaging/cross-build.sh x86_64-unknown-linux-gnu        # the host itself: a plain build
#
# Output: target/TARGET/release/{deepstackd,deepstack} (the host: target/release/).
# Installs what is missing (as root): the rustup target, gcc-*-linux-gnu*, libc6-dev-*-cross.
# Sets CARGO_TARGET_<T>_RUNNER to qemu-user, so `cargo run/test --target TARGET` also works
# when qemu-user is installed. cross-rs users: see cross.toml instead.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: $0 TARGET (aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | x86_64-unknown-linux-gnu)}
host=$(rustc -vV | sed -n 's/^host: //p')
bins=(-p deepstackd -p deepstack-cli --bin deepstackd --bin deepstack)

if [ "$target" = "$host" ]; then
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
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"gcc-$gnu" "libc6-dev-$apt_arch-cross" >/dev/null
fi

upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
lower=${target//-/_}
export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
export "CC_${lower}=$gnu-gcc"
export "AR_${lower}=$gnu-ar"
export "CARGO_TARGET_${upper}_RUNNER=$qemu -L /usr/$gnu"

cargo build --release --target "$target" "${bins[@]}"
