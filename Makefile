# SPDX-License-Identifier: Apache-2.0
# Thin wrapper over meson: `make demo` and `make test` each install what is
# missing (Debian packages, as root, no prompt), build, and run.

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
BENCH_BUILD ?= build-release
DEB_PACKAGES = meson ninja-build pkg-config gcc libc6-dev check libjansson-dev \
               librdkafka-dev librocksdb-dev libmicrohttpd-dev \
               prometheus \
               kcat python3-confluent-kafka
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test test-asan test-tsan demo bench nexmark nexmark-kafka clean format

all: build

# Installs only the packages that are missing; apt-get update runs only
# when something has to be installed.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

test: build
	meson test -C $(BUILD) -v --print-errorlogs --num-processes 2

test-asan: deps
	[ -f $(ASAN_BUILD)/build.ninja ] || meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false
	ninja -C $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  CK_FORK=no meson test -C $(ASAN_BUILD) -v --print-errorlogs --num-processes 2 --timeout-multiplier 3

test-tsan: deps
	[ -f $(TSAN_BUILD)/build.ninja ] || meson setup $(TSAN_BUILD) -Db_sanitize=thread -Db_lundef=false
	ninja -C $(TSAN_BUILD)
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" CK_FORK=no meson test -C $(TSAN_BUILD) --print-errorlogs --num-processes 1 --timeout-multiplier 5

demo: build
	./examples/demo.sh $(BUILD)

# Benchmarks measure a production build: release (-O3, no assertions) with
# link-time optimization.
bench: deps
	[ -f $(BENCH_BUILD)/build.ninja ] || meson setup $(BENCH_BUILD) --buildtype=release -Db_ndebug=true -Db_lto=true -Dtests=false
	ninja -C $(BENCH_BUILD)
	./bench/run.sh $(BENCH_BUILD)

# Nexmark (examples/nexmark): every query at P=1 and P=2 on both backends,
# 10^7 events each unless NEXMARK_EVENTS says otherwise; see
# examples/nexmark/README.md for the other settings.
nexmark: deps
	[ -f $(BENCH_BUILD)/build.ninja ] || meson setup $(BENCH_BUILD) --buildtype=release -Db_ndebug=true -Db_lto=true -Dtests=false
	ninja -C $(BENCH_BUILD)
	./$(BENCH_BUILD)/examples/nexmark/nexmark

# The same end to end: the events as JSON through the dev broker
# (sluice-kafka-dev, started and stopped by the program), 10^6 unless
# NEXMARK_KAFKA_EVENTS says otherwise.
nexmark-kafka: deps
	[ -f $(BENCH_BUILD)/build.ninja ] || meson setup $(BENCH_BUILD) --buildtype=release -Db_ndebug=true -Db_lto=true -Dtests=false
	ninja -C $(BENCH_BUILD)
	./$(BENCH_BUILD)/examples/nexmark/nexmark --kafka

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(BENCH_BUILD)
