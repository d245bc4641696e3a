#!/usr/bin/env python3
"""Checks that the workspace's `rust-version` is honest for the locked dependency tree.

The real minimum Rust version is the highest `rust-version` among the packages that a build of
the workspace members compiles: the members' normal and build dependencies, followed through
the `resolve` graph of `cargo metadata --locked`. The script prints that requirement, the
package(s) that set it and each member's claim, and exits 1 when a member claims less than
the lockfile needs. A higher claim is only conservative, so it passes (and is printed).

Choices:
- Dev-dependencies are left out. `rust-version` is a promise to whoever builds these crates:
  dependents never build our dev-dependencies, and a test-only tool (trybuild, proptest)
  raising its own minimum should not raise the library's. For the same reason the members'
  own dev-dependencies are not followed; what `cargo test` would need is printed as a note.
  The workspace members `tests` and `bench` are in the graph with their normal dependencies,
  since they are built as members.
- All features of the members are on (`--all-features`): an optional dependency's minimum
  binds everyone who enables the feature (conveyor-driver's `schemars`).
- All platforms count (no `--filter-platform`): the claim is not limited to one target.
- A package that declares no `rust-version` cannot be checked and is ignored.

Use: python3 scripts/check-msrv.py [--manifest-path PATH]   (stdlib only, Python >= 3.8)
"""

import argparse
import json
import subprocess
import sys

NORMAL_AND_BUILD = (None, "build")


def parse_version(text):
    """'1.89' or '1.89.0' -> (1, 89, 0); the comparison key of a rust-version."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def metadata(manifest_path):
    command = ["cargo", "metadata", "--locked", "--format-version", "1", "--all-features"]
    if manifest_path:
        command += ["--manifest-path", manifest_path]
    result = subprocess.run(command, stdout=subprocess.PIPE, check=False)
    if result.returncode != 0:
        sys.exit("check-msrv: `%s` failed (exit code %d)" % (" ".join(command), result.returncode))
    return json.loads(result.stdout)


def enabled_optional_deps(package, features):
    """Names of the optional dependencies of `package` that its activated `features` turn on.

    The resolve graph lists an optional dependency as soon as a feature names it, also through
    a weak `dep?/feature` that does not turn it on (reqwest's `quinn?/ring`, rcgen's
    `x509-parser?/verify`), so such edges are dropped unless an activated feature says
    `dep:name`, `name/feature` or is the implicit feature `name`."""
    table = package.get("features", {})
    enabled = set()
    for feature in features:
        enabled.add(feature)  # the implicit feature of an optional dependency is its name
        for entry in table.get(feature, []):
            if entry.startswith("dep:"):
                enabled.add(entry[len("dep:"):])
            elif "/" in entry and "?/" not in entry:
                enabled.add(entry.split("/", 1)[0])
    return enabled


def edge_is_built(package, node, dep_package, kinds):
    """Whether the resolve edge from `package` to `dep_package` is one of `kinds` that a build
    with the node's activated features compiles."""
    declarations = [
        declaration
        for declaration in package["dependencies"]
        if declaration["name"] == dep_package["name"] and declaration["kind"] in kinds
    ]
    if not declarations:
        return False
    enabled = None
    for declaration in declarations:
        if not declaration["optional"]:
            return True
        if enabled is None:
            enabled = enabled_optional_deps(package, node.get("features", []))
        if (declaration.get("rename") or declaration["name"]) in enabled:
            return True
    return False


def closure(roots, nodes, packages, kinds, members):
    """The package ids reachable from `roots` over dependency edges of the given `kinds`.

    `kinds` applies to the edges out of workspace members; past them only normal and build
    edges are followed (a registry package's dev-dependencies are not resolved anyway).

    This stays a little above what `cargo build` compiles: the activated features in the
    resolve graph are unified over normal, build and dev-dependencies and over all targets,
    as resolver 1 did. That can only raise the requirement, never hide one."""
    seen = set()
    stack = list(roots)
    while stack:
        package_id = stack.pop()
        if package_id in seen:
            continue
        seen.add(package_id)
        allowed = kinds if package_id in members else NORMAL_AND_BUILD
        node = nodes[package_id]
        for dep in node["deps"]:
            edge_kinds = tuple(kind["kind"] for kind in dep["dep_kinds"] if kind["kind"] in allowed)
            if edge_kinds and edge_is_built(packages[package_id], node, packages[dep["pkg"]], edge_kinds):
                stack.append(dep["pkg"])
    return seen


def requirement(ids, packages, members):
    """(highest rust-version, the packages declaring it) over `ids`, members left out."""
    best, setters = None, []
    for package_id in ids:
        if package_id in members:
            continue
        package = packages[package_id]
        if not package.get("rust_version"):
            continue
        version = parse_version(package["rust_version"])
        if best is None or version > best:
            best, setters = version, [package]
        elif version == best:
            setters.append(package)
    return best, sorted(setters, key=lambda package: package["name"])


def show(version):
    return ".".join(str(part) for part in version)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest-path", help="Cargo.toml of the workspace (default: cargo's)")
    args = parser.parse_args()

    meta = metadata(args.manifest_path)
    packages = {package["id"]: package for package in meta["packages"]}
    nodes = {node["id"]: node for node in meta["resolve"]["nodes"]}
    members = set(meta["workspace_members"])

    needed, setters = requirement(closure(members, nodes, packages, NORMAL_AND_BUILD, members), packages, members)
    if needed is None:
        print("check-msrv: no dependency declares a rust-version; nothing to check")
        return 0
    print("the locked dependency tree needs Rust %s (normal and build dependencies, all features)" % show(needed))
    for package in setters:
        print("  set by %s %s (rust-version %s)" % (package["name"], package["version"], package["rust_version"]))

    with_dev, dev_setters = requirement(
        closure(members, nodes, packages, NORMAL_AND_BUILD + ("dev",), members), packages, members
    )
    if with_dev is not None and with_dev > needed:
        print(
            "note: the dev-dependencies need Rust %s for `cargo test` (%s); not part of the claim"
            % (show(with_dev), ", ".join("%s %s" % (p["name"], p["version"]) for p in dev_setters))
        )

    dishonest = []
    for member_id in sorted(members, key=lambda package_id: packages[package_id]["name"]):
        member = packages[member_id]
        claim = member.get("rust_version")
        if not claim:
            print("  %s: declares no rust-version (not checked)" % member["name"])
            continue
        verdict = "ok" if parse_version(claim) >= needed else "TOO LOW"
        print("  %s: rust-version %s: %s" % (member["name"], claim, verdict))
        if verdict != "ok":
            dishonest.append(member["name"])

    if dishonest:
        print(
            "check-msrv: %s claim(s) a rust-version below %s, which the lockfile needs; "
            "raise `rust-version` in the workspace Cargo.toml" % (", ".join(dishonest), show(needed)),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
