# mk/cffi.mk — libpsv through cffi in ABI mode (ffi.dlopen), declared from include/psv.h.
#
#   make test-cffi   runs examples/python_cffi/psv_cffi.py with the .venv python (numpy + cffi
#                    from tests/python/requirements.txt): save and restore zero-copy, cross-checked
#                    against numpy both ways.

.PHONY: test-cffi
test-cffi: lib venv
	PSV_LIBRARY=$(abspath $(LIBDIR))/libpsv.so CC=$(CC) $(VPY) examples/python_cffi/psv_cffi.py $(BUILD)/cffi

TEST_TARGETS += test-cffi
