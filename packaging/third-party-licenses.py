#!/usr/bin/env python3
"""Lists every crate linked into deepstackd and deepstack for one target, with its licence
expression and the licence files it ships, for /usr/share/doc/deepstack-rs/, and the C
libraries the binaries link dynamically from Debian's packages (named, not shipped).

Usage: third-party-licenses.py TARGET_TRIPLE > third-party-licenses.txt
Reads `cargo metadata` (the crates must be downloaded, as after a build). Build scripts,
proc macros and dev-dependencies are left out: none of their code is in the binaries.
"""
import json
import pathlib
import subprocess
import sys

ROOTS = {"deepstackd", "deepstack-cli"}
LICENCE_PREFIXES = ("license", "licence", "copying", "notice", "copyright", "unlicense")
# Shared libraries the binaries load at run time from Debian's packages (the package Depends on
# them, build-deb.sh): (soname, Debian package, licence, the crate that links it or None for
# Rust's std). Their code is not in this package; their licences are in their own packages.
SHARED_LIBRARIES = (
    ("libsystemd.so.0", "libsystemd0", "LGPL-2.1-or-later", "libsystemd-sys"),
    ("libc.so.6, libm.so.6", "libc6", "LGPL-2.1-or-later", None),
    ("libgcc_s.so.1", "libgcc-s1", "GPL-3.0-or-later WITH GCC-exception-3.1", None),
)


def main() -> None:
    target = sys.argv[1]
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--filter-platform", target],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    todo = [pid for pid, p in packages.items() if p["name"] in ROOTS]
    seen = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for dep in nodes[pid]["deps"]:
            if any(k["kind"] is None for k in dep["dep_kinds"]):
                target_kinds = {
                    k for t in packages[dep["pkg"]]["targets"] for k in t["kind"]
                }
                if "proc-macro" not in target_kinds:
                    todo.append(dep["pkg"])
    out = sys.stdout
    crates = sorted(
        (packages[pid] for pid in seen if packages[pid]["name"] not in ROOTS),
        key=lambda p: (p["name"], p["version"]),
    )
    out.write(
        f"Rust crates statically linked into /usr/bin/deepstackd and /usr/bin/deepstack"
        f" ({target}): {len(crates)}\n\n"
    )
    for p in crates:
        out.write(f"  {p['name']} {p['version']}: {p['license'] or p.get('license_file')}\n")
    names = {p["name"] for p in crates}
    out.write(
        "\nC libraries linked dynamically, from Debian's packages (not part of this package;"
        "\ntheir licences are in /usr/share/doc/PACKAGE/copyright):\n\n"
    )
    for soname, package, licence, crate in SHARED_LIBRARIES:
        if crate is None or crate in names:
            through = f", through the crate {crate}" if crate else ""
            out.write(f"  {soname} ({package}): {licence}{through}\n")
    for p in crates:
        out.write("\n" + "=" * 78 + f"\n{p['name']} {p['version']} ({p['license']})\n")
        if p.get("repository"):
            out.write(f"{p['repository']}\n")
        out.write("=" * 78 + "\n")
        root = pathlib.Path(p["manifest_path"]).parent
        files = sorted(
            f
            for f in root.iterdir()
            if f.is_file() and f.name.lower().startswith(LICENCE_PREFIXES)
        )
        if not files:
            out.write(f"(no licence file in the crate; its licence is {p['license']})\n")
        for f in files:
            out.write(f"\n--- {f.name}\n\n")
            out.write(f.read_text(errors="replace").rstrip() + "\n")


if __name__ == "__main__":
    main()
