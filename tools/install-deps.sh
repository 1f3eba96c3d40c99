#!/usr/bin/env bash
# Installs every build and test dependency of kpistream from Debian's packages.
# Idempotent: skips apt entirely when everything is already present.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git curl ca-certificates
  librdkafka-dev librocksdb-dev prometheus-cpp-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libxxhash-dev clang-format clang-14 libclang-rt-14-dev
  openjdk-17-jdk-headless maven python3
  prometheus prometheus-alertmanager libcurl4-openssl-dev nlohmann-json3-dev
  # tools/deploy/check, ctest deploy_check: its venv, and the image build with
  # buildah, on debootstrap base images where no container registry answers.
  python3-venv buildah debootstrap
)

missing=()
for p in "${PKGS[@]}"; do
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
