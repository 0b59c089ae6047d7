# SPDX-License-Identifier: Apache-2.0
# Thin wrapper over meson: `make demo` and `make test` each install what is
# missing (Debian packages, as root, no prompt), build, and run.

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
BENCH_BUILD ?= build-release
DEB_PACKAGES = meson ninja-build pkg-config gcc libc6-dev binutils check libjansson-dev \
               librdkafka-dev librocksdb-dev libmicrohttpd-dev \
               prometheus \
               kcat python3-confluent-kafka
# Only for `make format` and `make format-check`: Debian's clang-format,
# whose version decides the layout (.clang-format is checked in).
FORMAT_PACKAGES = clang-format
# Only for `make fuzz`: clang with libFuzzer and the sanitizers' runtime,
# and llvm-symbolizer for readable reports.
FUZZ_PACKAGES = clang libclang-rt-dev llvm
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 30
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test test-asan test-tsan chaos demo bench release-build nexmark nexmark-kafka fuzz clean format format-check

all: build

# Installs only the packages of $(1) that are missing; apt-get update runs
# only when something has to be installed.
install_missing = missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

deps:
	@$(call install_missing,$(DEB_PACKAGES))

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# After a failed run, the failed tests' output once more, last: a CI page
# may show only the end of the run.
failed_logs = { /usr/bin/python3 tests/failed_logs.py $(1)/meson-logs/testlog.json; exit 1; }

test: build
	meson test -C $(BUILD) -v --print-errorlogs --num-processes 2 || $(call failed_logs,$(BUILD))

test-asan: deps
	[ -f $(ASAN_BUILD)/build.ninja ] || meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false
	ninja -C $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  CK_FORK=no meson test -C $(ASAN_BUILD) -v --print-errorlogs --num-processes 2 --timeout-multiplier 3 || $(call failed_logs,$(ASAN_BUILD))

test-tsan: deps
	[ -f $(TSAN_BUILD)/build.ninja ] || meson setup $(TSAN_BUILD) -Db_sanitize=thread -Db_lundef=false
	ninja -C $(TSAN_BUILD)
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" CK_FORK=no meson test -C $(TSAN_BUILD) --print-errorlogs --num-processes 1 --timeout-multiplier 5 || $(call failed_logs,$(TSAN_BUILD))

# Chaos: real jobs on the mock cluster killed and restarted ROUNDS times,
# output compared with a failure-free run (docs/reliability.md). SEED
# repeats a run's choices.
ROUNDS ?= 100
SEED ?=
chaos: build
	./$(BUILD)/tests/chaos $(ROUNDS) $(SEED)

demo: build
	./examples/demo.sh $(BUILD)

# Benchmarks measure a production build: release (-O3, no assertions) with
# link-time optimization.
RELEASE_OPTS = --buildtype=release -Db_ndebug=true -Db_lto=true -Dtests=false -Dwerror=true

bench: deps
	[ -f $(BENCH_BUILD)/build.ninja ] || meson setup $(BENCH_BUILD) $(RELEASE_OPTS)
	ninja -C $(BENCH_BUILD)
	./bench/run.sh $(BENCH_BUILD)

# The build `make bench` and `make nexmark` measure, with warnings as
# errors (-O3 and link-time optimization warn about things the default
# build does not), and nothing run. -Dwerror=true is set again in case the
# directory was configured before.
release-build: deps
	[ -f $(BENCH_BUILD)/build.ninja ] || meson setup $(BENCH_BUILD) $(RELEASE_OPTS)
	meson configure $(BENCH_BUILD) -Dwerror=true
	ninja -C $(BENCH_BUILD)

# Nexmark (examples/nexmark): every query at P=1 and P=2 on both backends,
# 10^7 events each unless NEXMARK_EVENTS says otherwise; see
# examples/nexmark/README.md for the other settings.
nexmark: deps
	[ -f $(BENCH_BUILD)/build.ninja ] || meson setup $(BENCH_BUILD) $(RELEASE_OPTS)
	ninja -C $(BENCH_BUILD)
	./$(BENCH_BUILD)/examples/nexmark/nexmark

# The same end to end: the events as JSON through the dev broker
# (sluice-kafka-dev, started and stopped by the program), 10^6 unless
# NEXMARK_KAFKA_EVENTS says otherwise.
nexmark-kafka: deps
	[ -f $(BENCH_BUILD)/build.ninja ] || meson setup $(BENCH_BUILD) $(RELEASE_OPTS)
	ninja -C $(BENCH_BUILD)
	./$(BENCH_BUILD)/examples/nexmark/nexmark --kafka

# Every fuzz target (tests/fuzz) for FUZZ_SECONDS each from its seed
# corpus, built by clang with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer; fails on any finding. Warnings are not
# errors here: clang warns where gcc, which gates the code, does not.
fuzz:
	@$(call install_missing,$(DEB_PACKAGES) $(FUZZ_PACKAGES))
	[ -f $(FUZZ_BUILD)/build.ninja ] || CC=clang meson setup $(FUZZ_BUILD) \
	  -Dfuzz=true -Dtests=false -Dwerror=false \
	  -Db_sanitize=address,undefined -Db_lundef=false
	ninja -C $(FUZZ_BUILD)
	./tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

format:
	@$(call install_missing,$(FORMAT_PACKAGES))
	clang-format -i $$(git ls-files '*.c' '*.h')

# Fails, naming each tracked .c/.h file that `make format` would change;
# `clang-format --dry-run FILE` shows where.
format-check:
	@$(call install_missing,$(FORMAT_PACKAGES))
	@bad=""; n=0; for f in $$(git ls-files '*.c' '*.h'); do \
	  n=$$((n + 1)); \
	  clang-format --dry-run -Werror "$$f" >/dev/null 2>&1 || bad="$$bad $$f"; \
	done; \
	if [ -n "$$bad" ]; then \
	  echo "format-check: not formatted as .clang-format says ($$(clang-format --version)):"; \
	  for f in $$bad; do echo "  $$f"; done; \
	  echo "format-check: run 'make format' (or 'clang-format --dry-run FILE' to see where)"; \
	  exit 1; \
	fi; \
	echo "format-check: $$n files clean"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(BENCH_BUILD) $(FUZZ_BUILD)
