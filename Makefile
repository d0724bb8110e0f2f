# The two commands of the README, plus a few conveniences. CMake does the real work.
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 120
CMAKE_FLAGS ?=
# ccache, when installed, makes rebuilds (and other clones on the same machine) cheap;
# paths are hashed relative to the checkout so two clones share the cache.
ifneq ($(shell command -v ccache 2>/dev/null),)
CCACHE_FLAGS := -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache
export CCACHE_BASEDIR := $(CURDIR)
endif

.PHONY: all deps build build-asan build-fuzz test test-fast fuzz demo bench clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CCACHE_FLAGS) $(CMAKE_FLAGS)

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CCACHE_FLAGS) $(CMAKE_FLAGS) > /dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DAJI_SANITIZE=ON -DAJI_BUILD_BENCH=OFF $(CCACHE_FLAGS) $(CMAKE_FLAGS) > /dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# libFuzzer harnesses (fuzz/README.md): clang, ASan+UBSan, only the parsers' sources.
build-fuzz: deps
	@cmake -S . -B $(FUZZ_BUILD) -DAJI_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ $(CCACHE_FLAGS) $(CMAKE_FLAGS) > /dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all

# Every test: the release build (fast and slow labels), then the fast tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then every fuzz harness for a few seconds.
test: build build-asan build-fuzz
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 1800
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS) --timeout 1800
	cd $(FUZZ_BUILD) && ctest --output-on-failure -j $(JOBS) -L fuzz

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L fast

# Long fuzzing: each harness FUZZ_SECONDS (default 120), inputs executed per harness.
# Also FUZZ_RUNS=1000000 (stop a harness at that count), FUZZ_JOBS=2 (-fork=2), FUZZ_NICE,
# FUZZ_MAX_LEN[_<harness>]: see fuzz/run_long.sh.
fuzz: build-fuzz
	fuzz/run_long.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The demo runs only the aji binary: build just that target (no tests, no benchmarks).
demo: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CCACHE_FLAGS) $(CMAKE_FLAGS) > /dev/null
	cmake --build $(BUILD) -j $(JOBS) --target aji
	scripts/demo.sh

bench: build
	bench/run_all.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
