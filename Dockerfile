# syntax=docker/dockerfile:1
#
# The Tidings server as a container image.
#
#     docker build -t tidings .
#     docker run -p 8080:8080 -v tidings-data:/data tidings
#
# CI has no Docker engine: it lints this file (.ci/hadolint.sh) and runs the binary as this
# image would, built with the same command (.ci/image.sh), but it does not build the image.

# --- builder ---------------------------------------------------------------------------------
# Cargo.toml's rust-version, which CI builds with too; on the Debian release of the runtime
# stage below, so that the binary needs no newer glibc than that stage has.
FROM rust:1.95.0-bookworm AS builder
WORKDIR /src

# The dependencies in a layer of their own, built from the manifests and the lock file with
# empty sources, so that a change to the sources rebuilds the crate and not its few hundred
# dependencies. Two manifests do not need cargo-chef (one more tool to install and pin).
# loadtest/ is a workspace member: cargo needs its manifest and a target to load the
# workspace, though it is not built.
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/
RUN mkdir -p src loadtest/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked -p tidings --bin tidings \
    && cargo clean --release --locked -p tidings

# build.rs compiles the dashboard (web/app/) and the SDK it imports (clients/js/src/) into
# the binary; the migrations are embedded too.
COPY build.rs ./
COPY migrations migrations
COPY web/app web/app
COPY clients/js/src clients/js/src
COPY src src
RUN cargo build --release --locked -p tidings --bin tidings

# --- runtime ---------------------------------------------------------------------------------
# The binary links only glibc and libgcc_s (SQLite is compiled in, jemalloc is static, and
# nothing speaks TLS): a slim Debian of the builder's release has both, and a shell for
# `docker exec` when something needs looking at.
FROM debian:bookworm-slim

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tidings" \
      org.opencontainers.image.description="A real-time commerce backend: REST, an outbox, and live WebSocket/SSE delivery" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# A user of its own with fixed ids, so that a volume's owner is the same in every build and
# can be prepared on a host (chown 10001:10001). /data belongs to it; the binary does not.
RUN groupadd --system --gid 10001 tidings \
    && useradd --system --uid 10001 --gid tidings --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tidings \
    && mkdir /data \
    && chown tidings:tidings /data \
    && chmod 0750 /data

COPY --from=builder /src/target/release/tidings /usr/local/bin/tidings

# The SQLite file and the generated JWT key live in /data; with DATABASE_URL set to
# PostgreSQL, only the key does (or nothing, with TIDINGS_JWT_SECRET set).
ENV TIDINGS_DATA_DIR=/data \
    TIDINGS_LISTEN=0.0.0.0:8080
VOLUME ["/data"]
EXPOSE 8080
# By number: Kubernetes runAsNonRoot can check a number, not a name.
USER 10001:10001

# `tidings healthcheck` asks /readyz on loopback (no curl in the image) and gives up after
# 3 s, within Docker's timeout.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/tidings", "healthcheck"]

# The server is PID 1 and handles SIGTERM itself: live connections are closed in paced
# batches and requests finished, for up to 30 s; give `docker stop` a longer --time than its
# default 10 s (README.md, "Container image").
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tidings"]
CMD ["serve"]
