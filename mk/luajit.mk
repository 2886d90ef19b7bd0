# mk/luajit.mk — a second FFI host (STYLE rule 38): LuaJIT's ffi reads the plain psv.h.
#
#   make test-luajit   installs Debian's luajit if it is missing (apt-get; root or sudo), feeds
#                      `cc -std=c99 -E -P include/psv.h` to ffi.cdef and runs
#                      examples/luajit/psv_example.lua (save, restore, check every value).

LUAJIT ?= luajit

.PHONY: luajit-installed test-luajit
luajit-installed:
	@command -v $(LUAJIT) >/dev/null 2>&1 || { \
		echo "test-luajit: installing Debian's luajit"; \
		$(PSV_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(PSV_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq luajit >/dev/null; }
	@command -v $(LUAJIT) >/dev/null 2>&1 || { echo "test-luajit: no $(LUAJIT) after apt-get install" >&2; exit 1; }

# $(BUILD)/psv_cdef.h (cc -std=c99 -E -P include/psv.h) is made by mk/header.mk.
test-luajit: lib luajit-installed $(BUILD)/psv_cdef.h
	$(LUAJIT) examples/luajit/psv_example.lua $(LIBDIR)/libpsv.so include/psv.h $(BUILD)/psv_cdef.h \
		$(BUILD)/luajit_example

TEST_TARGETS += test-luajit
