# mk/readme.mk — the README's programs run as written (tests/readme/).
#
#   make test-readme   writes the C, C++, Python, cffi and LuaJIT programs of README.md into a
#                      scratch directory and builds and runs them with the README's own lines
#                      (the Python ones in the venv of the installed wheel). The install,
#                      pkg-config and CMake blocks run in `make test-install`.

.PHONY: test-readme
test-readme: lib wheel-venv luajit-installed
	PYTHON='$(abspath $(WPY))' LUAJIT='$(LUAJIT)' CC='$(CC)' CXX='$(CXX)' \
		sh tests/readme/test_readme.sh '$(abspath $(BUILD))/readme'

TEST_TARGETS += test-readme
