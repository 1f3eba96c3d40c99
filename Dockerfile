# kpistream image: kpid (and kpictl) on Debian bookworm, as built and tested
# by tools/install-deps.sh + tools/build.
#
#   tools/image/build                      # builds it with buildah (docs/DEPLOY.md)
#   docker build -t kpistream:0.2.0 .      # where a Docker engine runs
#
# The base images are build arguments so that a builder without access to a
# container registry can supply local Debian bookworm images
# (tools/image/build does, with debootstrap); the defaults are the official
# ones.
ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build-deps
# The build dependencies from tools/install-deps.sh that kpid and kpictl need;
# not the test tools (clang, Java, Maven, Prometheus, benchmark). GoogleTest
# is here only because the top-level CMakeLists.txt requires it at configure
# time.
FROM ${BUILD_IMAGE} AS build-deps
ARG DEBIAN_FRONTEND=noninteractive
# Debian package versions are not pinned: a bookworm point release brings
# security fixes, and the suite is the pin (hadolint DL3008, ignored).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential \
      ca-certificates \
      cmake \
      libabsl-dev \
      libcli11-dev \
      libcurl4-openssl-dev \
      libfmt-dev \
      libgmock-dev \
      libgnutls28-dev \
      libgrpc++-dev \
      libgtest-dev \
      libmicrohttpd-dev \
      libprotobuf-dev \
      libprotoc-dev \
      librdkafka-dev \
      librocksdb-dev \
      libsimdjson-dev \
      libavro-dev \
      libspdlog-dev \
      libxxhash-dev \
      libyaml-cpp-dev \
      ninja-build \
      nlohmann-json3-dev \
      pkg-config \
      prometheus-cpp-dev \
      protobuf-compiler \
      protobuf-compiler-grpc \
 && rm -rf /var/lib/apt/lists/*

# --------------------------------------------------------------------- build
FROM build-deps AS build
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKPISTREAM_WERROR=ON \
 && cmake --build build --target kpid kpictl

# ------------------------------------------------------------------- runtime
# Only the shared libraries kpid and kpictl link (readelf -d: NEEDED), by
# their Debian bookworm runtime package; their own dependencies (OpenSSL,
# c-ares, RE2, snappy, lz4, zstd, ...) come with them.
FROM ${RUNTIME_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="kpistream" \
      org.opencontainers.image.description="kpid: live business KPIs from Kafka events, served over gRPC and Prometheus" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      libabsl20220623 \
      libcurl4 \
      libfmt9 \
      libavro23 \
      libgnutls30 \
      libgrpc++1.51 \
      libgrpc29 \
      libmicrohttpd12 \
      libprometheus-cpp-core1.0 \
      libprotobuf32 \
      librdkafka1 \
      librocksdb7.8 \
      libsimdjson14 \
      libspdlog1.10 \
      libxxhash0 \
      libyaml-cpp0.7 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kpistream \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/kpistream --shell /usr/sbin/nologin kpistream \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/kpistream
COPY --from=build /src/build/services/kpid /src/build/tools/kpictl /usr/local/bin/
COPY config/kpis.yaml /etc/kpistream/kpis.yaml
COPY LICENSE /usr/share/doc/kpistream/LICENSE
USER 10001:10001
WORKDIR /var/lib/kpistream
VOLUME ["/var/lib/kpistream"]
# 50051: gRPC (KpiService, AlertService, health, reflection); 9464: /metrics.
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/kpid"]
# With no arguments the image runs the embedded demo (its own in-process
# broker), listening on all interfaces; a deployment passes --config,
# --state-dir and the listen addresses instead (deploy/k8s/statefulset.yaml).
CMD ["--grpc-listen=0.0.0.0:50051", "--metrics-listen=0.0.0.0:9464"]
