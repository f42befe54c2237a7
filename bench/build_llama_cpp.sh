#!/usr/bin/env bash
# Dev-time: builds llama.cpp from the tree vendored in PyPI's llama-cpp-python 0.3.36 sdist
# (llama.cpp 0c1e570), natively for this CPU, with no network at build or run time, into
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
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF > /dev/null
cmake --build build -j 2 --target llama-bench llama-mtmd-cli llama-quantize llama-server
ls build/bin
