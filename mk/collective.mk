# mk/collective.mk — the collective save (issue 15): N processes write ONE .npz.
#
#   make test-collective-c  tests/c/test_collective.c (every rank in one process: the C API's
#                           NULL, error and success paths, byte identity, alignment) under
#                           ASan+UBSan and valgrind
#   make test-mpi           the same flow under mpirun: installs Open MPI (Debian's openmpi-bin,
#                           libopenmpi-dev; root or sudo) and mpi4py (PyPI, into $(VENV)) when
#                           missing, builds examples/mpi/psv_mpi.c with mpicc, runs tests/mpi
#                           (each mpirun bounded by `timeout`)
#   make bench / bench-smoke also build psv_mpi for their collective-save row

MPICC      ?= mpicc
MPI_STAMP  := $(VENV)/.mpi-stamp

.PHONY: test-collective-c mpi-installed test-mpi

$(BUILD)/test_collective_asan: tests/c/test_collective.c include/psv.h lib | $(BUILD)
	$(CC) $(CFLAGS_STRICT) -g -fsanitize=address,undefined -fno-omit-frame-pointer $< -o $@ $(LDLIBS_PSV)

$(BUILD)/test_collective: tests/c/test_collective.c include/psv.h lib | $(BUILD)
	$(CC) $(CFLAGS_STRICT) -g $< -o $@ $(LDLIBS_PSV)

test-collective-c: $(BUILD)/test_collective_asan $(BUILD)/test_collective
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		$(BUILD)/test_collective_asan $(BUILD)/collective_asan
	tests/c/run_valgrind.sh $(BUILD)/test_collective $(BUILD)/collective_valgrind

mpi-installed:
	@command -v $(MPICC) >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 || { \
		echo "test-mpi: installing Debian's Open MPI"; \
		$(PSV_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(PSV_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null; }
	@command -v $(MPICC) >/dev/null 2>&1 || { echo "test-mpi: no $(MPICC) after apt-get install" >&2; exit 1; }

$(MPI_STAMP): tests/mpi/requirements.txt $(VENV)/.stamp | mpi-installed
	$(VPY) -m pip install --quiet -r tests/mpi/requirements.txt
	touch $@

$(BUILD)/psv_mpi: examples/mpi/psv_mpi.c include/psv.h lib | $(BUILD) mpi-installed
	$(MPICC) $(CFLAGS_STRICT) $< -o $@ $(LDLIBS_PSV)

test-mpi: venv-pkg $(MPI_STAMP) $(BUILD)/psv_mpi
	PSV_LIBRARY=$(abspath $(LIBDIR))/libpsv.so PSV_MPI_EXAMPLE=$(abspath $(BUILD)/psv_mpi) \
		$(VPY) -m pytest -q -p no:cacheprovider tests/mpi

TEST_TARGETS += test-collective-c test-mpi

# The bench's collective row (benches/collective_bench.py) runs examples/mpi/psv_mpi.c.
bench bench-smoke: $(BUILD)/psv_mpi
BENCH_ENV += PSV_MPI_EXAMPLE=$(abspath $(BUILD)/psv_mpi)
