# Multi-stage build: a Rust builder with cmake and a C++ compiler (grpcio-sys builds gRPC
# core, rdkafka-sys builds librdkafka with Cyrus SASL for GSSAPI), then a small Debian
# runtime running as non-root.
# Not built in CI: these machines have no Docker engine.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make pkg-config libssl-dev zlib1g-dev \
    libsasl2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lagscaler \
 && install -m 0755 target/release/lagscaler /lagscaler

FROM debian:bookworm-slim
# GSSAPI (SCALER_KAFKA_SASL=gssapi): libsasl2 with its GSSAPI plugin, and kinit, which
# librdkafka runs with the keytab. Its credential cache goes to KRB5CCNAME (/tmp by default).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libstdc++6 \
    libsasl2-2 libsasl2-modules-gssapi-mit krb5-user \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /lagscaler /usr/local/bin/lagscaler
# A fixed unprivileged uid/gid, as Kubernetes' runAsNonRoot can verify.
USER 65532:65532
ENV SCALER_PORT=8090 SCALER_HTTP_PORT=9100
EXPOSE 8090 9100
# /healthz over bash's /dev/tcp: the slim image has no HTTP client.
HEALTHCHECK --interval=30s --timeout=3s \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9100 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["/usr/local/bin/lagscaler"]
