#!/usr/bin/env bash
# The one command that builds every package: amd64 natively, arm64 and armhf cross-compiled
# (packaging/cross-build.sh installs the toolchains it needs). Output: target/deb/*.deb.
# About 2 + 2 x 8 minutes on 2 cores from a cold target/ (tract dominates).
set -euo pipefail
cd "$(dirname "$0")/.."
for arch in ${DEEPSTACK_ARCHES:-amd64 arm64 armhf}; do
	packaging/build-deb.sh "$arch"
done
ls -l target/deb/*.deb
