#!/usr/bin/env bash
# Dev-time: builds llama.cpp from the tree vendored in PyPI's llama-cpp-python 0.3.36 sdist
# (llama.cpp 0c1e570), for this CPU's instruction sets, with no network at build or run time, into
# bench/vendor/ (gitignored). Resumable: each step is skipped when its output exists.
# About 20 minutes on 2 cores. The benchmark (npm run bench -- --llama-cpp) then finds the tools in
# bench/vendor/llama.cpp/build/bin.
set -euo pipefail
cd "$(dirname "$0")/vendor"
VERSION=0.3.36
if [ ! -d llama.cpp ]; then
  [ -f "llama_cpp_python-$VERSION.tar.gz" ] || pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d .
  tar xzf "llama_cpp_python-$VERSION.tar.gz"
  mv "llama_cpp_python-$VERSION/vendor/llama.cpp" llama.cpp
  rm -rf "llama_cpp_python-$VERSION"
fi
cd llama.cpp
# Some hosts list AMX that their VM does not let a process use: a native build there dies with
# SIGILL in ggml_backend_amx_mul_mat. On those, name the instruction sets one by one, AMX left out.
FLAGS=" $(grep -m1 '^flags' /proc/cpuinfo) "
has() { [[ "$FLAGS" == *" $1 "* ]] && echo ON || echo OFF; }
if [[ "$FLAGS" == *" amx_tile "* ]]; then
  ISA=(-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c)
       -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VBMI=$(has avx512_vbmi) -DGGML_AVX512_VNNI=$(has avx512_vnni)
       -DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AVX_VNNI=$(has avx_vnni))
else
  ISA=(-DGGML_NATIVE=ON)
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${ISA[@]}" -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF > /dev/null
cmake --build build -j 2 --target llama-bench llama-mtmd-cli llama-quantize llama-server
ls build/bin
