# mk/bench.mk — `make bench` (issues 5, 18): psv vs numpy, safetensors, pickle 5, h5py and zarr
# against this machine's limits.
#
#   make bench         builds the library, installs benches/requirements.txt (numpy, safetensors,
#                      matplotlib, h5py, zarr from PyPI) into $(VENV), runs benches/compare.py: markdown tables on
#                      stdout, bench/results.json, bench/chart.png; work files in bench/out (ignored).
#                      BENCH_ARGS passes options, e.g. `make bench BENCH_ARGS="--cold --runs 7"`.
#                      Takes ~10-20 min on 2 cores (np.savez_compressed of W1 dominates).
#   make bench-smoke   the same at --quick sizes into bench/out/smoke (seconds); part of `make test`:
#                      it proves the bench runs and that every system's output round-trips, and
#                      asserts nothing about speed.
#   make bench-rust    the Rust-level benchmark through the C ABI, no Python
#                      (`cargo run --release --example bench`, examples/rust/bench.rs).

BENCH_OUT   := bench/out
BENCH_ARGS  ?=
BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_ENV   := PSV_LIBRARY=$(abspath $(LIBDIR))/libpsv.so

$(BENCH_STAMP): benches/requirements.txt $(VENV)/.stamp
	$(VPY) -m pip install --quiet -r benches/requirements.txt
	touch $@

.PHONY: bench bench-smoke bench-rust bench-venv
bench-venv: $(BENCH_STAMP)

bench: lib $(BENCH_STAMP)
	$(BENCH_ENV) $(VPY) benches/compare.py --out $(BENCH_OUT) $(BENCH_ARGS)

bench-smoke: lib $(BENCH_STAMP)
	@mkdir -p $(BENCH_OUT)/smoke
	$(BENCH_ENV) $(VPY) benches/compare.py --quick --out $(BENCH_OUT)/smoke \
		--results $(BENCH_OUT)/smoke/results.json --chart $(BENCH_OUT)/smoke/chart.png \
		> $(BENCH_OUT)/smoke/log.txt 2>&1 || { cat $(BENCH_OUT)/smoke/log.txt; exit 1; }
	@grep '^wrote ' $(BENCH_OUT)/smoke/log.txt

bench-rust:
	$(CARGO) run --release --example bench -- 1024 $(BENCH_OUT)/rust

TEST_TARGETS += bench-smoke
