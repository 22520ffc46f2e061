#!/usr/bin/env bash
# Installs every Debian 12 package kto needs to build, test and run its demo.
# Idempotent: when all packages are already installed it does nothing (no apt-get update).
# Used by launch/demo.sh and tests/run.sh; safe to run by hand (needs root or sudo).
#   --test   also the packages only the test suite uses: a real Slurm (slurm-wlm, munge) for the
#            launch/slurm tests, headless Chromium to render the HTML report, iproute2 for the
#            two network-namespace "nodes" of the multi-node test, script(1) for the
#            terminal-progress test, clang-format 14 for the format check of .ci/run, clang 14
#            with its sanitizer and libFuzzer runtimes for scripts/sanitize.sh.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev                       # LibTorch 1.13 (CPU)
  libopenblas0-openmp                # fast BLAS; without it fp32 matmul is ~17x slower
  libopenmpi-dev openmpi-bin         # MPI control plane and CPU collectives
  libhdf5-dev                        # HDF5 C API: datasets and checkpoints
  libyaml-cpp-dev                    # configs
  nlohmann-json3-dev                 # config.json, safetensors headers, JSONL
  catch2                             # Catch2 v2 unit tests
  libsentencepiece-dev               # SentencePiece tokenizers (data tools)
  libpcre2-dev libutf8proc-dev       # tokenizer regexes (Unicode classes), NFC normalisation
  zlib1g-dev                         # .gz inputs (data tools)
  libssl-dev                         # SHA-256 (tokenizer hashes, checkpoint checksums)
  python3 python3-numpy              # tooling scripts (Debian's /usr/bin/python3)
  procps                             # pgrep/pkill (launch scripts)
)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(
    slurm-wlm munge                  # tests/slurm: a private one-node Slurm cluster
    chromium                         # renders report.html headless in the report test
    iproute2                         # tests/multinode: two network-namespace nodes (ip netns)
    bsdutils                         # script(1): runs kto-train on a pseudo-terminal
    clang-format-14                  # scripts/check-format.sh (the repo's .clang-format)
    clang-14 libclang-rt-14-dev      # scripts/sanitize.sh: ASan, UBSan, libFuzzer (tests/fuzz)
  )
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/install-deps.sh [--test]" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[install] all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "[install] need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "[install] installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "[install] done"
