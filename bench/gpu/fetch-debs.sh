#!/usr/bin/env bash
# Downloads the Debian 12 packages a GPU machine lacks to build and test kto (Open MPI, HDF5,
# yaml-cpp, nlohmann-json, Catch2, SentencePiece, PCRE2, utf8proc and what they load at run time)
# into DIR (default .device/debs, ignored by git), for bench/gpu/run.sh to unpack there. Run it on
# a Debian 12 machine with its package archive reachable (the development machine). Leaves out
# what any build image has (libc, libstdc++, compilers, perl, the package tools) and what the
# GPU machine brings itself (LibTorch, CUDA, NCCL, Python). Prints the total size: the device
# tool carries at most 64 MiB.
#
#   bench/gpu/fetch-debs.sh [DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${1:-$root/.device/debs}
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
command -v apt-get >/dev/null || { echo "fetch-debs.sh: needs apt-get (a Debian 12 machine)" >&2; exit 1; }
wanted=(libopenmpi-dev openmpi-bin libhdf5-dev libyaml-cpp-dev nlohmann-json3-dev catch2
        libsentencepiece-dev libpcre2-dev libutf8proc-dev libssl-dev zlib1g-dev)
# Base system, toolchains and anything the GPU image has or the build does not load.
skip='^(libc6|libc-dev-bin|libc6-dev|libgcc|libstdc\+\+|gcc|cpp|g\+\+|gfortran|flang|libgfortran|libflang|'\
'libllvm|libclang|libmlir|libz3|binutils|libbinutils|libctf|libgprofng|autoconf|automake|autotools-dev|m4|'\
'perl|libperl|libasan|liblsan|libtsan|libubsan|libitm|libatomic|libquadmath|libcc1|libisl|libmpc|libmpfr|libgmp|'\
'dpkg|debconf|cdebconf|libdebian-installer|adduser|passwd|tar|install-info|debianutils|readline-common|'\
'libreadline|libtinfo|libslang|libnewt|libtextwrap|libpam|libselinux|libsepol|libsemanage|libaudit|libcap-ng|'\
'libcrypt|libmd0|libbsd0|libdb5|libgdbm|openssh-client|libfido2|libcbor|libedit|libx11|libxcb|libxau|libxdmcp|'\
'libxext|libxnvctrl|ocl-icd|libjs-|linux-libc-dev|rpcsvc-proto|libtirpc-dev|libnsl-dev|libjpeg|libcurl4-nss|'\
'libcurl3-nss|libnss3|libnspr4|nss-plugin|libgomp1)'
mapfile -t closure < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances "${wanted[@]}" 2>/dev/null | grep '^[a-z0-9]' | sort -u | grep -Ev "$skip")
mkdir -p "$dir"
cd "$dir"
rm -f ./*.deb
apt-get download "${closure[@]}" >/dev/null
echo "fetch-debs.sh: ${#closure[@]} packages in $dir, $(du -sh . | cut -f1) (the device tool carries 64 MiB at most)"
