# Multi-stage build: compile in the Rust image, run from a slim Debian with CA certificates.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches, so their sources must exist for the manifest to load.
COPY benches ./benches
RUN cargo build --release --locked --bin streamgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/streamgate /usr/local/bin/streamgate
# Mount your own config at /etc/streamgate/config.yaml and pass keys by env or mounted file.
COPY config.yaml /etc/streamgate/config.yaml
# The shipped config's demo identity provider secret (development only).
COPY demo /etc/streamgate/demo
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["streamgate", "--config", "/etc/streamgate/config.yaml"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
