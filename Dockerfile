# The image of one example driver (any binary of `examples/`), chosen by a build argument:
#
#   docker build --build-arg DRIVER=echo -t conveyor-driver-echo:0.1.0 .
#
# Needs BuildKit (Docker's default builder since 23.0) for the cache mounts: a rebuild after a
# source change compiles only the workspace's own crates, the registry and the target
# directory of the last build being kept between builds (no dependency layer to keep in sync
# with the manifests). The linter, hadolint, runs in scripts/check-deploy.sh.

# The workspace's `rust-version`: the image builds with the oldest supported toolchain, and
# tests/tests/deploy.rs keeps the two equal.
ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# The binary of `examples/src/bin/` to build.
ARG DRIVER=echo
WORKDIR /src
COPY . .
# The target directory is a cache mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,id=conveyor-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=conveyor-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p conveyor-driver-examples --bin "${DRIVER}" \
    && install -D -m 0755 "target/release/${DRIVER}" /out/driver

# glibc, libgcc and CA certificates, no shell or package manager. The `nonroot` variant's
# user is 65532; it is given by number so that Kubernetes' `runAsNonRoot` can check it.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG DRIVER=echo
LABEL org.opencontainers.image.title="conveyor-driver-${DRIVER}" \
      org.opencontainers.image.description="The ${DRIVER} Conveyor CI driver (conveyor-driver examples)" \
      org.opencontainers.image.source="https://github.com/conveyor-ci/conveyor-driver" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/driver /usr/local/bin/driver
USER 65532:65532
# /metrics, /healthz and /readyz; the Kubernetes manifests probe this port.
ENV CONVEYOR_METRICS_ADDR=0.0.0.0:9090
EXPOSE 9090
# The driver runs as PID 1 without an init: the runtime handles SIGTERM and SIGINT itself
# (graceful shutdown within CONVEYOR_SHUTDOWN_TIMEOUT, a second signal hands everything back
# at once). A driver whose reconciles start processes that leave orphans behind should run
# under an init that reaps them (`docker run --init`, or tini in its own image).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/driver"]
CMD ["run"]
