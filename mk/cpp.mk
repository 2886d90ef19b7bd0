# mk/cpp.mk — the header-only C++17 wrapper include/psv.hpp and its example.
#
#   make test-cpp   builds examples/cpp/psv_example.cpp strictly as C++17 (psv's own span) and as
#                   C++20 (std::span) under AddressSanitizer + UBSan, and runs both.

CXX ?= g++
CXXFLAGS_STRICT := -Wall -Wextra -Wpedantic -Werror -O2 -Iinclude

$(BUILD)/psv_example_cpp17: examples/cpp/psv_example.cpp include/psv.hpp include/psv.h lib | $(BUILD)
	$(CXX) -std=c++17 $(CXXFLAGS_STRICT) $< -o $@ $(LDLIBS_PSV)

$(BUILD)/psv_example_cpp20: examples/cpp/psv_example.cpp include/psv.hpp include/psv.h lib | $(BUILD)
	$(CXX) -std=c++20 $(CXXFLAGS_STRICT) -g -fsanitize=address,undefined -fno-sanitize-recover=all \
		-fno-omit-frame-pointer $< -o $@ $(LDLIBS_PSV)

.PHONY: test-cpp
test-cpp: $(BUILD)/psv_example_cpp17 $(BUILD)/psv_example_cpp20
	$(BUILD)/psv_example_cpp17 $(BUILD)/cpp17_example
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		$(BUILD)/psv_example_cpp20 $(BUILD)/cpp20_example
	rm -f $(BUILD)/cpp17_example.npz $(BUILD)/cpp20_example.npz

TEST_TARGETS += test-cpp
