# syntax=docker/dockerfile:1
#
# streamgate: multi-stage build (needs BuildKit, the default builder since Docker 23).
#
#   docker build -t streamgate .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/prod.yaml:/etc/streamgate/config.yaml:ro" \
#     -e STREAM_SIGNING_KEY streamgate
#
# The image holds no configuration and no key. It reads /etc/streamgate/config.yaml, which
# the operator mounts (deploy/config.example.yaml is a starting point); signing keys come from
# the environment or from files mounted under /run/secrets/. The repository's config.yaml is
# the offline demo (built-in emulator, development key written to .streamgate/) and is
# deliberately not copied in: without a mounted config the container exits with an error
# instead of serving the demo.

# ── Build ───────────────────────────────────────────────────────────────────────────────
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the release binary needs. Cargo.toml declares the benches, so their sources
# must exist for the manifest to load; tests/ is not needed for `--bin streamgate`.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Dependency caching: the registry and target/ live in BuildKit cache mounts, so a rebuild
# after a source change recompiles only streamgate itself. A cache mount is not part of the
# image, so the binary is copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin streamgate \
 && install -m 0755 target/release/streamgate /usr/local/bin/streamgate

# ── Runtime ─────────────────────────────────────────────────────────────────────────────
# debian:bookworm-slim rather than gcr.io/distroless/cc-debian12: the same glibc as the build
# stage, and it has curl for HEALTHCHECK (streamgate has no health subcommand, and
# distroless has none). The price is a shell
# and a few more packages in the image.
FROM debian:bookworm-slim
# ca-certificates: streamgate itself trusts its compiled-in webpki roots (plus `jwks_ca_file`
# and `upstream.ca_file`), but the system store is small and serves curl and debugging.
# curl: HEALTHCHECK only. Versions are whatever bookworm's security updates carry.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/streamgate /usr/local/bin/streamgate

# Non-root, numeric (so Kubernetes' runAsNonRoot can verify it without a passwd entry).
USER 65532:65532
WORKDIR /etc/streamgate
# NO_COLOR: plain log lines (stderr) for `docker logs` and log collectors.
ENV STREAMGATE_CONFIG=/etc/streamgate/config.yaml \
    NO_COLOR=1

# 8080: the gateway (HTTP, or HTTPS with `tls:`); 9090: `metrics_listen`, when configured.
EXPOSE 8080 9090

# Docker only (Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes/).
# Plain HTTP first; with `tls:` the listener speaks HTTPS, hence the -k fallback. Shell form
# on purpose (for `||`), so DL3025 does not apply.
# hadolint ignore=DL3025
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz \
   || curl -fsSk -o /dev/null https://127.0.0.1:8080/healthz \
   || exit 1

# Exec form: streamgate is PID 1 and receives SIGTERM itself (graceful shutdown).
# Other subcommands use the same config via STREAMGATE_CONFIG:
#   docker run --rm -v ...:/etc/streamgate:ro -e STREAM_SIGNING_KEY streamgate check
ENTRYPOINT ["streamgate"]
CMD ["--config", "/etc/streamgate/config.yaml", "serve", "--listen", "0.0.0.0:8080"]
