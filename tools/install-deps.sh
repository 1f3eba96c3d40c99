#!/usr/bin/env bash
# Installs kpistream's dependencies from Debian's packages, by purpose:
#   tools/install-deps.sh run            what building and running kpid needs (tools/run)
#   tools/install-deps.sh test           that, plus the test tools (tools/test): clang for
#                                        the fuzzers and sanitizers, the JDK and Maven for
#                                        the local Kafka broker and the Kafka Streams peer,
#                                        Prometheus, Alertmanager, the deployment check's
#                                        venv, buildah and debootstrap for the image
#   tools/install-deps.sh alertmanager   Alertmanager (tools/run --with-alertmanager)
# With no argument: test (everything). Idempotent: skips apt entirely when
# everything is already present.
set -euo pipefail

# Build and run (the Dockerfile's build stage takes its packages from here).
PKGS=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  librdkafka-dev librocksdb-dev prometheus-cpp-dev libmicrohttpd-dev libgnutls28-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libxxhash-dev
  libcurl4-openssl-dev nlohmann-json3-dev libcrypt-dev libsimdjson-dev libavro-dev libprotoc-dev
)

# Test tools.
TEST_PKGS=(
  clang-format clang-14 libclang-rt-14-dev
  openjdk-17-jdk-headless maven python3 curl
  prometheus prometheus-alertmanager
  # a real terminal for kpictl's interactive output (tests/kpictl_it)
  tmux
  # test certificate authorities for gRPC over TLS (tests/secure_api_it)
  openssl
  # tools/deploy/check, ctest deploy_check: its venv, and the image build with
  # buildah, on debootstrap base images where no container registry answers.
  python3-venv buildah debootstrap
)

ALERTMANAGER_PKGS=(prometheus-alertmanager python3 curl)

case "${1:-test}" in
  run) want=("${PKGS[@]}") ;;
  test) want=("${PKGS[@]}" "${TEST_PKGS[@]}") ;;
  alertmanager) want=("${ALERTMANAGER_PKGS[@]}") ;;
  *) echo "install-deps: unknown set '$1' (run, test or alertmanager)" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
