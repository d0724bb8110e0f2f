#!/usr/bin/env bash
# Prepares what scripts/device_check.sh needs on a lent GPU machine (docs/cuda.md): the release
# build with the CUDA plugin, and in .devcarry/ (git-ignored through .git/info/exclude) the aji
# binary, libaji_cuda.so, the test binary, and the non-CUDA shared libraries they use (the GPU
# image lacks oneDNN, CLD2, gumbo, ...; oneDNN travels xz-compressed: 38 -> 7 MB). The CUDA
# libraries (cuBLASLt) come from the GPU machine's own image.
#
#   scripts/device_prepare.sh            # then: device run, carry [".devcarry"],
#                                        #   command "bash scripts/device_check.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DAJI_CUDA=ON > /dev/null
cmake --build "$BUILD" -j "$(nproc)" --target aji aji_cuda aji_tests
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo '/.devcarry/' >> .git/info/exclude
rm -rf .devcarry && mkdir -p .devcarry/lib
cp "$BUILD/aji" "$BUILD/libaji_cuda.so" "$BUILD/tests/aji_tests" .devcarry/
# Every non-CUDA, non-libc library the three binaries load.
for bin in .devcarry/aji .devcarry/aji_tests .devcarry/libaji_cuda.so; do
  ldd "$bin" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libcublas*|libcudart*) continue ;;
  esac
  cp -L "$lib" .devcarry/lib/
done
[ -f .devcarry/lib/libdnnl.so.3 ] && xz -6 -T0 .devcarry/lib/libdnnl.so.3
[ -f .devcarry/lib/libdnnl.so.2 ] && xz -6 -T0 .devcarry/lib/libdnnl.so.2
du -sh .devcarry
echo "ready: device run with carry [\".devcarry\"] and command \"bash scripts/device_check.sh\""
