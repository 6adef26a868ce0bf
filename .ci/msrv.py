"""Checks the crate's stated rust-version against its dependency tree.

Only one toolchain can be installed on the CI machines, so the MSRV is checked
the way cargo's MSRV-aware resolver sees it: no normal dependency reachable in
the default build (and with `--no-default-features`) may declare a newer
`rust-version` than the crate. The `tonic` feature is allowed a newer one,
which the README states.
"""

import json
import subprocess
import sys


def version_tuple(v):
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def check(extra_args, label):
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", *extra_args]
        )
    )
    packages = {p["id"]: p for p in meta["packages"]}
    root_id = meta["resolve"]["root"]
    root = packages[root_id]
    msrv = version_tuple(root["rust_version"])
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}

    # Walk normal (non-dev, non-build) edges only from the root.
    seen, stack = set(), [root_id]
    while stack:
        node = nodes[stack.pop()]
        for dep in node["deps"]:
            kinds = {k["kind"] for k in dep["dep_kinds"]}
            if node["id"] == root_id and kinds <= {"dev"}:
                continue
            if dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])

    too_new = []
    for pid in seen:
        p = packages[pid]
        rv = p.get("rust_version")
        if rv and version_tuple(rv) > msrv:
            too_new.append(f"{p['name']} {p['version']} needs {rv}")
    if too_new:
        print(f"{label}: dependencies need a newer compiler than {root['rust_version']}:")
        print("\n".join(sorted(too_new)))
        return False
    print(f"{label}: {len(seen)} dependencies, all within rust-version {root['rust_version']}")
    return True


ok = check([], "default features")
ok = check(["--no-default-features"], "no default features") and ok
sys.exit(0 if ok else 1)
