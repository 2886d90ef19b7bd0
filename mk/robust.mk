# mk/robust.mk — robustness tests (issue "never lose a file, never crash").
#
#   make test-threads    tests/c/test_threads.c (8 threads x 100 save+restore rounds; one archive
#                        read by 8 threads at once) and tests/c/test_fork.c (fork after the pools
#                        started: concurrent children, alarm() timeouts), under ASan+UBSan
#   make test-progress   tests/c/test_progress.c (progress callbacks on the caller's thread,
#                        cancellation of saves and restores), under ASan+UBSan
#   make test-robust     the pytest files in tests/robust/: SIGKILL during saves (target never
#                        torn), OS failure paths (EFBIG, EACCES, EROFS, ENOTDIR, ENOENT, ENOSPC),
#                        RLIMIT_AS -> PSV_ERR_NOMEM, fork with multiprocessing; asynchronous saves
#                        (test_async_robust.py: EFBIG, ENOSPC at wait, SIGKILL mid-job, fork)
#
# ThreadSanitizer and helgrind are not used: the Rust library is not instrumented and
# synchronises through atomics and futexes neither of them sees, so both report thousands of
# false races (helgrind: ~900 contexts in std's own statx/mutex code, and 10 minutes per run).

ROBUST_CFLAGS := $(CFLAGS_STRICT) -g -fsanitize=address,undefined -fno-omit-frame-pointer -pthread
ROBUST_ENV    := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
                 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

.PHONY: test-threads test-progress test-robust

$(BUILD)/test_threads_asan: tests/c/test_threads.c tests/c/robust_util.h tests/c/test_files.h include/psv.h lib | $(BUILD)
	$(CC) $(ROBUST_CFLAGS) $< -o $@ $(LDLIBS_PSV)

$(BUILD)/test_fork_asan: tests/c/test_fork.c tests/c/robust_util.h tests/c/test_files.h include/psv.h lib | $(BUILD)
	$(CC) $(ROBUST_CFLAGS) $< -o $@ $(LDLIBS_PSV)

$(BUILD)/test_progress_asan: tests/c/test_progress.c tests/c/robust_util.h tests/c/test_files.h include/psv.h lib | $(BUILD)
	$(CC) $(ROBUST_CFLAGS) $< -o $@ $(LDLIBS_PSV)

test-threads: $(BUILD)/test_threads_asan $(BUILD)/test_fork_asan
	$(ROBUST_ENV) $(BUILD)/test_threads_asan $(BUILD)/robust_threads
	$(ROBUST_ENV) $(BUILD)/test_fork_asan $(BUILD)/robust_fork

test-progress: $(BUILD)/test_progress_asan
	$(ROBUST_ENV) $(BUILD)/test_progress_asan $(BUILD)/robust_progress

test-robust: lib venv
	PSV_LIBRARY=$(abspath $(LIBDIR))/libpsv.so $(VPY) -m pytest -q -p no:cacheprovider tests/robust

TEST_TARGETS += test-threads test-progress test-robust
