# libpsv — build, demo and test entry points. See README.md.
# `make demo` builds and runs the main job on built-in data; `make test` runs every test.

CARGO   ?= cargo
PYTHON  ?= python3
CC      ?= gcc
VENV    := .venv
VPY     := $(VENV)/bin/python
LIBDIR  := target/release
BUILD   := build
CFLAGS_STRICT := -std=c99 -Wall -Wextra -Wpedantic -Werror -O2 -Iinclude
LDLIBS_PSV    := -L$(LIBDIR) -lpsv -Wl,-rpath,$(abspath $(LIBDIR)) -pthread

.PHONY: all lib demo test test-slow test-rust test-c test-python lint venv clean

# Each mk/*.mk file owns one concern (install, other FFI hosts, fuzz corpus, ...) and appends
# its test targets to TEST_TARGETS, which `make test` runs after the core tests.
TEST_TARGETS :=

all: lib

lib:
	$(CARGO) build --release

# A local virtualenv with what the tests and the demo need (numpy from PyPI).
$(VENV)/.stamp: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r tests/python/requirements.txt
	touch $@

venv: $(VENV)/.stamp

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/psv_example: examples/c/psv_example.c include/psv.h lib | $(BUILD)
	$(CC) $(CFLAGS_STRICT) $< -o $@ $(LDLIBS_PSV)

demo: lib $(BUILD)/psv_example venv
	$(BUILD)/psv_example $(BUILD)/demo_c
	PSV_LIBRARY=$(abspath $(LIBDIR))/libpsv.so $(VPY) examples/python_ctypes/demo.py

-include $(sort $(wildcard mk/*.mk))

test: lint test-rust test-c test-python $(TEST_TARGETS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	git diff --exit-code include/psv.h

test-rust:
	$(CARGO) test

# C tests: built strictly, run under AddressSanitizer + UBSan and under valgrind memcheck.
$(BUILD)/test_api_asan: tests/c/test_api.c tests/c/test_files.h include/psv.h lib | $(BUILD)
	$(CC) $(CFLAGS_STRICT) -g -fsanitize=address,undefined -fno-omit-frame-pointer $< -o $@ $(LDLIBS_PSV)

$(BUILD)/test_api: tests/c/test_api.c tests/c/test_files.h include/psv.h lib | $(BUILD)
	$(CC) $(CFLAGS_STRICT) -g $< -o $@ $(LDLIBS_PSV)

test-c: $(BUILD)/test_api_asan $(BUILD)/test_api $(BUILD)/psv_example
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		$(BUILD)/test_api_asan $(BUILD)/c_asan
	tests/c/run_valgrind.sh $(BUILD)/test_api $(BUILD)/c_valgrind
	$(BUILD)/psv_example $(BUILD)/c_example

# The > 4 GiB cases (about a minute and 13 GiB of disk in all); .ci/run runs them too.
test-slow: lib venv
	PSV_TEST_LARGE=1 PSV_LIBRARY=$(abspath $(LIBDIR))/libpsv.so $(VPY) -m pytest -q tests/python -k 4gib

test-python: lib venv
	PSV_LIBRARY=$(abspath $(LIBDIR))/libpsv.so $(VPY) -m pytest -q tests/python

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
