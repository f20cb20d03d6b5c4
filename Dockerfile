# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run from a small Debian image as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY templates ./templates
COPY locales ./locales
COPY static ./static
RUN cargo build --profile dist --locked && strip target/dist/codex-gateway

FROM debian:bookworm-slim
# Unpinned on purpose: take Debian stable's current security updates at build time.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin gateway \
    && mkdir -p /data && chown gateway /data
COPY --from=build /src/target/dist/codex-gateway /usr/local/bin/codex-gateway
USER 10001
WORKDIR /data
ENV GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_DATA_DIR=/data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD ["codex-gateway", "healthcheck"]
ENTRYPOINT ["codex-gateway"]
CMD ["serve"]
