# mk/header.mk — header hygiene for include/psv.h (STYLE rules 29, 33-35).
#
#   make test-header   psv.h compiles as C99 and as C++17 with -Wall -Wextra -Wpedantic -Werror;
#                      its version macros match Cargo.toml (PSV_PKG_* from mk/install.mk); psv.hpp
#                      stands alone; `cc -std=c99 -E -P include/psv.h` is parsed by cffi's cdef().
#
# -std=c99 for the preprocessed header: under the compiler's default (gnu17/C11) <stddef.h>
# declares max_align_t with __attribute__((__aligned__)), which cffi's parser rejects.

PSV_HEADER_EXPECT = -DEXPECT_MAJOR=$(PSV_PKG_MAJOR) -DEXPECT_MINOR=$(PSV_PKG_MINOR) -DEXPECT_PATCH=$(PSV_PKG_PATCH)
PSV_HEADER_WARN   = -Wall -Wextra -Wpedantic -Werror

$(BUILD)/psv_cdef.h: include/psv.h | $(BUILD)
	$(CC) -std=c99 -E -P include/psv.h > $@.tmp && mv $@.tmp $@

.PHONY: test-header
test-header: lib venv $(BUILD)/psv_cdef.h
	$(CC) -std=c99 $(PSV_HEADER_WARN) -Wstrict-prototypes -Wmissing-prototypes -Iinclude $(PSV_HEADER_EXPECT) \
		-c tests/header/header_check.c -o $(BUILD)/header_check_c99.o
	$(CC) -std=c11 $(PSV_HEADER_WARN) -Iinclude $(PSV_HEADER_EXPECT) \
		-c tests/header/header_check.c -o $(BUILD)/header_check_c11.o
	$(CXX) -x c++ -std=c++17 $(PSV_HEADER_WARN) -Iinclude $(PSV_HEADER_EXPECT) \
		-c tests/header/header_check.c -o $(BUILD)/header_check_cxx17.o
	printf '#include "psv.hpp"\n#include "psv.hpp"\nint main() { return psv::abi_compatible() ? 0 : 1; }\n' \
		| $(CXX) -x c++ -std=c++17 $(PSV_HEADER_WARN) -Iinclude -fsyntax-only -
	@grep -q '^#define PSV_VERSION_MAJOR $(PSV_PKG_MAJOR)$$' include/psv.h \
		&& grep -q '^#define PSV_VERSION_MINOR $(PSV_PKG_MINOR)$$' include/psv.h \
		&& grep -q '^#define PSV_VERSION_PATCH $(PSV_PKG_PATCH)$$' include/psv.h \
		|| { echo "test-header: PSV_VERSION_* in include/psv.h do not match Cargo.toml $(PSV_PKG_VERSION)" >&2; exit 1; }
	$(VPY) tests/header/check_cdef.py $(BUILD)/psv_cdef.h include/psv.h $(LIBDIR)/libpsv.so $(PSV_PKG_VERSION)
	@echo "test-header: psv.h is C99/C11/C++17 clean, versions match Cargo.toml $(PSV_PKG_VERSION), cffi parses it"

TEST_TARGETS += test-header
