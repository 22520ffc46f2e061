#!/usr/bin/env bash
# One command on a GPU machine: unpack the Debian libraries kto needs into a prefix (never into
# /), configure against the machine's CUDA LibTorch 2.x, build with every core, run the unit and
# GPU test tiers (NCCL at world size 1; CUDA forward/backward equal to the CPU on tiny models),
# then bench_kto_step in bf16 on TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32/4 heads, ffn
# 5632, vocab 32000, seq 2048), printing tokens/s and MFU against the chip's datasheet bf16 peak.
# Every step's log goes to one folder; a summary is printed at the end.
#
#   bench/gpu/run.sh [--out DIR] [--debs DIR] [--prefix DIR] [--torch-prefix DIR] [--jobs N]
#                    [--batch N] [--steps N] [--peak-gflops G] [--cpu-dry-run]
#
#   --out DIR          logs and results ($OUT on the device machine, else gpu-run/)
#   --debs DIR         the .deb files of bench/gpu/fetch-debs.sh (.device/debs)
#   --prefix DIR       where they are unpacked (/opt/deb)
#   --torch-prefix DIR LibTorch's CMake prefix (default: python3's torch.utils.cmake_prefix_path)
#   --batch N          sequences per step in the benchmark (4); --steps N timed steps (5)
#   --peak-gflops G    the chip's bf16 dense peak per GPU (default from nvidia-smi's name:
#                      H100/H200 989000, A100 312000, L40S 362000; else measured)
#   --cpu-dry-run      on a machine without a GPU: everything but the GPU itself, against
#                      Debian's LibTorch 1.13 (/usr), a tiny benchmark shape on the CPU, and the
#                      GPU tier expected to skip. What the development machine runs to keep this
#                      script working.
#
# On the device machine, from the checkout (with carry [".device"]):
#   bench/gpu/fetch-debs.sh            # here, beforehand: the .debs into .device/debs
#   bench/gpu/run.sh                   # there: logs under $OUT
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${OUT:-$root/gpu-run} debs=$root/.device/debs prefix=/opt/deb torch_prefix="" jobs=$(nproc)
batch=4 steps=5 peak=0 dry=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --debs) debs=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --torch-prefix) torch_prefix=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --peak-gflops) peak=$2; shift 2 ;;
    --cpu-dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary=$out/summary.txt
: >"$summary"
say() { echo "[gpu-run] $*" | tee -a "$summary"; }
t_start=$(date +%s)
# Runs one phase with its output in $out/<name>.log; stops the script (naming the log) if it fails.
phase() {
  local name=$1
  shift
  local t0
  t0=$(date +%s)
  if "$@" >"$out/$name.log" 2>&1; then
    say "$name: ok ($(($(date +%s) - t0)) s)"
  else
    say "$name: FAILED ($(($(date +%s) - t0)) s), last lines of $out/$name.log:"
    tail -25 "$out/$name.log" | tee -a "$summary"
    exit 1
  fi
}

say "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
gpu_name=""
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  say "gpu: $gpu_name ($(nvidia-smi --query-gpu=memory.total --format=csv,noheader | head -1))"
elif [[ $dry == 0 ]]; then
  say "no GPU visible (nvidia-smi -L fails): use --cpu-dry-run on a machine without one"
  exit 1
fi

# 1. The Debian libraries, unpacked into the prefix.
unpack() {
  local n=0
  shopt -s nullglob
  for f in "$debs"/*.deb; do
    dpkg-deb -x "$f" "$prefix" || return 1
    n=$((n + 1))
  done
  [[ $n -gt 0 ]] || { echo "no .deb files in $debs (run bench/gpu/fetch-debs.sh first)"; return 1; }
  echo "$n packages unpacked into $prefix"
  # What update-alternatives would have made: mpicc, mpicxx, mpirun, mpiexec.
  for t in mpicc mpicxx mpirun mpiexec; do
    [[ -e "$prefix/usr/bin/$t.openmpi" ]] && ln -sfn "$t.openmpi" "$prefix/usr/bin/$t"
  done
  # Dev symlinks point at absolute /usr paths of the packaging machine's layout: make them relative.
  find "$prefix/usr/lib/x86_64-linux-gnu" -maxdepth 1 -type l | while read -r l; do
    t=$(readlink "$l")
    [[ "$t" == /* && -e "$prefix$t" ]] && ln -sfn "$prefix$t" "$l"
  done
  return 0
}
mkdir -p "$prefix"
phase unpack unpack
lib=$prefix/usr/lib/x86_64-linux-gnu
export OPAL_PREFIX=$prefix/usr  # the relocated Open MPI finds its components and help files
export PATH=$prefix/usr/bin:$PATH
export LD_LIBRARY_PATH=$lib:$lib/openmpi/lib:$lib/hdf5/serial:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# 2. LibTorch: the machine's CUDA LibTorch 2.x (pip torch), or Debian's 1.13 for the dry run.
if [[ -z "$torch_prefix" ]]; then
  if [[ $dry == 1 ]]; then
    torch_prefix=/usr
  else
    torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
    abi=$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
    [[ "$abi" == 1 ]] || { say "this torch is built with the pre-C++11 ABI; Debian's libraries need the C++11 one"; exit 1; }
    say "torch: $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
  fi
fi
nccl_root=""
if [[ $dry == 0 ]]; then
  nccl_root=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null || true)
  [[ -n "$nccl_root" ]] && export LD_LIBRARY_PATH=$nccl_root/lib:$LD_LIBRARY_PATH
fi

# 3. Configure and build (the Debian libraries found in the prefix before anything on the system).
build=$root/build-gpu
[[ $dry == 1 ]] && build=$root/build-gpu-dry
configure() {
  local args=(-S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
    "-DCMAKE_PREFIX_PATH=$torch_prefix;$prefix/usr" "-DHDF5_ROOT=$prefix/usr"
    "-DMPI_C_COMPILER=$prefix/usr/bin/mpicc" "-DMPIEXEC_EXECUTABLE=$prefix/usr/bin/mpirun" "-DCMAKE_LIBRARY_PATH=$lib;$lib/hdf5/serial"
    "-DCMAKE_INCLUDE_PATH=$prefix/usr/include;$prefix/usr/include/hdf5/serial")
  [[ -n "$nccl_root" ]] && args+=("-DNCCL_ROOT=$nccl_root")
  [[ $dry == 0 ]] && args+=(-DKTO_WITH_NCCL=ON)
  command -v ccache >/dev/null && args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake "${args[@]}"
}
phase configure configure
grep -E "MPI|HDF5|LibTorch|NCCL|CUDA" "$out/configure.log" | grep -v "^--  *$" | head -20 >>"$summary" || true
phase build cmake --build "$build" -j "$jobs"

# 4. Every binary resolves its libraries (a library the image lacks shows up here, named).
libcheck() {
  local missing
  missing=$(for b in "$build"/bin/* "$build"/tests/kto_*_tests; do [[ -x "$b" && -f "$b" ]] && ldd "$b"; done |
    grep "not found" | sort -u || true)
  [[ -z "$missing" ]] || { echo "libraries not found:"; echo "$missing"; return 1; }
  echo "every binary resolves its libraries; MPI and HDF5 from:"
  ldd "$build/bin/kto-train" | grep -E "libmpi|libhdf5|libtorch_cuda|libnccl" || true
}
phase libraries libcheck
grep -A6 "from:" "$out/libraries.log" >>"$summary" || true

# 5. Tests: the unit tier, then the GPU tier (which must run, not skip, where there is a GPU).
phase unit-tests ctest --test-dir "$build" -L unit -j "$jobs" --output-on-failure
gpu_tests() {
  ctest --test-dir "$build" -L gpu --output-on-failure -V
  if [[ $dry == 0 ]] && grep -q "Skipped" "$out/gpu-tests.log"; then
    echo "the GPU tier skipped on a GPU machine"
    return 1
  fi
}
phase gpu-tests gpu_tests
grep -E "SKIPPED|All tests passed|test cases" "$out/gpu-tests.log" | head -3 >>"$summary" || true

# 6. The benchmark: bf16 on TinyLlama-1.1B's shape (a tiny one in the dry run).
if [[ "$peak" == 0 ]]; then
  case "$gpu_name" in
    *H100* | *H200*) peak=989000 ;;  # dense bf16, SXM
    *A100*) peak=312000 ;;
    *L40S*) peak=362000 ;;
  esac
fi
if [[ $dry == 1 ]]; then
  shape=(--hidden 64 --layers 2 --heads 4 --kv-heads 2 --ffn 176 --vocab 512 --seq 64 --batch 2 --steps 1 --warmup 1)
else
  shape=(--hidden 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5632 --vocab 32000 --seq 2048 --batch "$batch"
    --steps "$steps" --warmup 2)
fi
phase bench "$build/bin/bench_kto_step" "${shape[@]}" --dtype bf16 --peak-gflops "$peak"
result=$(tail -1 "$out/bench.log")
echo "$result" >"$out/bench.json"
field() { sed -n "s/.*\"$1\": \([0-9.a-z]*\).*/\1/p" <<<"$result"; }
say "bench_kto_step bf16 ${shape[*]}: $(field ms_per_step) ms/step, $(field tokens_per_s) tokens/s," \
  "model $(field model_gflops) GFLOP/s, MFU $(field mfu) (peak $(field peak_gflops) GFLOP/s$([[ $peak == 0 ]] && echo ", measured")), peak RSS $(field peak_rss_mib) MiB"
say "done in $(($(date +%s) - t_start)) s; logs in $out"
