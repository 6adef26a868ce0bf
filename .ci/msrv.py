"""Checks the crate's stated rust-version against its dependency tree.

Only one toolchain can be installed on the CI machines, so the MSRV is checked
the way cargo's MSRV-aware resolver sees it: no normal dependency reachable in
the default build (and with `--no-default-features`) may declare a newer
`rust-version` than the crate. The `tonic` feature is allowed a newer one,
which the README states.

The dependency set is `cargo tree`'s with dev-dependencies left out, which
resolves features as a dependent's build does. `cargo metadata` cannot: it
unifies the dev-dependencies' features too, and the crate's dev-dependency on
itself turns on every feature for the tests and examples.
"""

import json
import subprocess
import sys

CRATE = "tower-spillway"


def version_tuple(v):
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def rust_versions():
    """(name, version) -> rust-version (or None), for every package cargo knows."""
    meta = json.loads(
        subprocess.check_output(["cargo", "metadata", "--format-version", "1"])
    )
    return {(p["name"], p["version"]): p.get("rust_version") for p in meta["packages"]}


def dependencies(extra_args):
    """(name, version) of every package in the crate's normal and build tree."""
    out = subprocess.check_output(
        [
            "cargo", "tree", "-p", CRATE, "-e", "normal,build", "--target", "all",
            "--prefix", "none", "--format", "{p}", *extra_args,
        ],
        text=True,
    )
    deps = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[1].startswith("v"):
            continue
        deps.add((fields[0], fields[1][1:]))
    return deps


def check(extra_args, label, versions):
    deps = dependencies(extra_args)
    root = next(d for d in deps if d[0] == CRATE)
    msrv_text = versions[root]
    msrv = version_tuple(msrv_text)
    deps.discard(root)

    too_new = []
    for name, version in deps:
        rv = versions.get((name, version))
        if rv and version_tuple(rv) > msrv:
            too_new.append(f"{name} {version} needs {rv}")
    if too_new:
        print(f"{label}: dependencies need a newer compiler than {msrv_text}:")
        print("\n".join(sorted(too_new)))
        return False
    print(f"{label}: {len(deps)} dependencies, all within rust-version {msrv_text}")
    return True


versions = rust_versions()
ok = check([], "default features", versions)
ok = check(["--no-default-features"], "no default features", versions) and ok
sys.exit(0 if ok else 1)
