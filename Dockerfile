# lagscaler's image: a Rust build stage (cmake and a C++ compiler: grpcio-sys builds gRPC
# core, rdkafka-sys builds librdkafka with Cyrus SASL for GSSAPI), then a small Debian
# runtime running as uid 65532.
#
#   docker build -t lagscaler .          # or: podman build --format docker -t lagscaler .
#
# With no image registry, scripts/image builds the two base images from Debian's packages
# first (README, "The container image"). The tests build the runtime around the binary
# their own run built: --target prebuilt, with a build context holding only that binary as
# ./lagscaler (the build stage is not needed for that target, and is skipped).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make pkg-config libssl-dev zlib1g-dev \
    libsasl2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The crates and the build cached between builds on the same host (BuildKit, buildah): a
# rebuild after a change compiles lagscaler, not gRPC core and librdkafka again.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lagscaler \
 && install -m 0755 target/release/lagscaler /lagscaler

FROM debian:bookworm-slim AS runtime
# GSSAPI (SCALER_KAFKA_SASL=gssapi): libsasl2 with its GSSAPI plugin, and kinit, which
# librdkafka runs with the keytab. Its credential cache goes to KRB5CCNAME (/tmp by default).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libstdc++6 \
    libsasl2-2 libsasl2-modules-gssapi-mit krb5-user \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# A fixed unprivileged uid/gid, as Kubernetes' runAsNonRoot can verify.
USER 65532:65532
ENV SCALER_PORT=8090 SCALER_HTTP_PORT=9100
EXPOSE 8090 9100
# /healthz over bash's /dev/tcp (the slim image has no HTTP client), on the port and
# address the settings name: SCALER_HTTP_PORT, and SCALER_LISTEN_ADDR unless it is a
# wildcard (then loopback).
HEALTHCHECK --interval=30s --timeout=3s \
  CMD ["bash", "-c", "host=${SCALER_LISTEN_ADDR:-127.0.0.1}; host=${host#[}; host=${host%]}; case $host in 0.0.0.0) host=127.0.0.1 ;; ::) host=::1 ;; esac; exec 3<>/dev/tcp/$host/${SCALER_HTTP_PORT:?no HTTP listener} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["/usr/local/bin/lagscaler"]

# A binary built outside (the tests'): --target prebuilt.
FROM runtime AS prebuilt
COPY lagscaler /usr/local/bin/lagscaler

# The default: the build stage's binary.
FROM runtime
COPY --from=build /lagscaler /usr/local/bin/lagscaler
