# mk/python.mk — the Python package as users install it (pyproject.toml, setup.py,
# python/parallel_saver/), and `cargo package`.
#
#   make wheel        `pip wheel .` into build/wheel/: the package with libpsv.so inside, built by
#                     setuptools-rust from the same cargo build as `make lib` (nothing recompiles)
#   make test-wheel   `pip install .` into a fresh venv (build/wheel-venv), with numpy, pytest and
#                     cffi from PyPI; checks the import from another directory with no PSV_LIBRARY, the
#                     console script and examples/python_ctypes/demo.py (small), then runs
#                     tests/python against it (part of `make test`; `make test-python` is the same)
#   make test-wheel-oldest   the same wheel with the oldest supported numpy (1.24) and, when
#                     found, the oldest supported Python (3.9): the package's own tests
#                     (test_package, test_lowlevel, test_large_and_unzip), prog.py of the README and
#                     demo.py. (The rest of tests/python builds numpy-2-only fixtures: 64-dim
#                     arrays, StringDType, numpy.lib._format_impl.)
#   make venv-pkg     installs the wheel into .venv, for the tools that import parallel_saver
#                     there (make demo, bench, test-robust)
#   make test-package `cargo package`: the crate packages and builds from its own sources, and
#                     its build writes nothing into the source tree

PY_PLATFORM = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')
WHEEL_DIR   := $(BUILD)/wheel
WHEEL        = $(WHEEL_DIR)/parallel_saver-$(PSV_PKG_VERSION)-py3-none-$(PY_PLATFORM).whl
WVENV       := $(BUILD)/wheel-venv
WPY         := $(WVENV)/bin/python

.PHONY: wheel wheel-venv test-wheel test-wheel-oldest venv-pkg test-package

# pip builds in an isolated environment with the build requirements of pyproject.toml; setuptools'
# own scratch space (build/python) is emptied first, so no stale module reaches the wheel.
wheel: lib venv
	rm -rf $(BUILD)/python $(WHEEL_DIR) python/parallel_saver.egg-info
	$(VPY) -m pip wheel --quiet --no-deps --wheel-dir $(WHEEL_DIR) .
	@test -f $(WHEEL) || { echo "wheel: expected $(WHEEL); got:" >&2; ls $(WHEEL_DIR) >&2; exit 1; }
	@echo "wheel: $(WHEEL) ($$(du -k $(WHEEL) | cut -f1) KiB)"

# What a user does: `pip install .` into a fresh venv (pip builds the wheel again, in its
# isolated environment; cargo has nothing to recompile). It runs after `wheel`, which checks the
# wheel's name and platform tag.
wheel-venv: wheel
	rm -rf $(WVENV) $(BUILD)/python python/parallel_saver.egg-info
	$(PYTHON) -m venv $(WVENV)
	$(WPY) -m pip install --quiet . -r tests/python/requirements.txt

test-wheel: wheel-venv
	cd / && env -u PSV_LIBRARY $(abspath $(WPY)) -c 'import parallel_saver as p, sys; \
		print("test-wheel: parallel_saver", p.version(), "from", p.library_path()); \
		sys.exit(p.library_path().parent != __import__("pathlib").Path(p.__file__).parent)'
	env -u PSV_LIBRARY $(WVENV)/bin/psv-py --help > /dev/null
	env -u PSV_LIBRARY $(WPY) examples/python_ctypes/demo.py --mb 16 --small 20 --repeat 1 > /dev/null
	env -u PSV_LIBRARY PSV_EXPECT_INSTALLED=1 $(WPY) -m pytest -q -p no:cacheprovider tests/python

test-python: test-wheel

# Python 3.9 if this machine has one (pyenv's, or Debian's), else $(PYTHON).
PYTHON_OLDEST ?= $(firstword $(foreach p,$(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python3.9) /usr/bin/python3.9,\
	$(if $(shell $(p) -c 'print(1)' 2>/dev/null),$(p))) $(PYTHON))
OVENV := $(BUILD)/wheel-venv-oldest
OPY   := $(OVENV)/bin/python

test-wheel-oldest: wheel
	rm -rf $(OVENV)
	$(PYTHON_OLDEST) -m venv $(OVENV)
	$(OPY) -m pip install --quiet $(WHEEL) numpy==1.24.4 pytest
	@$(OPY) -c 'import sys, numpy; print("test-wheel-oldest: Python", sys.version.split()[0], "numpy", numpy.__version__)'
	cd $(BUILD) && python3 $(abspath tests/readme/readme_blocks.py) $(abspath README.md) prog.py > prog_oldest.py \
		&& env -u PSV_LIBRARY $(abspath $(OPY)) prog_oldest.py
	env -u PSV_LIBRARY $(OPY) examples/python_ctypes/demo.py --mb 16 --small 20 --repeat 1 > /dev/null
	env -u PSV_LIBRARY PSV_EXPECT_INSTALLED=1 $(OPY) -m pytest -q -p no:cacheprovider \
		tests/python/test_package.py tests/python/test_lowlevel.py tests/python/test_large_and_unzip.py

TEST_TARGETS += test-wheel-oldest

venv-pkg: wheel venv
	$(VPY) -m pip install --quiet --no-deps --force-reinstall $(WHEEL)

demo bench bench-smoke test-robust: venv-pkg

test-package:
	$(CARGO) package --quiet --allow-dirty

TEST_TARGETS += test-package
