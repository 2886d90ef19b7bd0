# mk/async.mk — asynchronous saves (issue 14): tests/c/test_async.c under ASan+UBSan and under
# valgrind memcheck.
#
#   make test-async   every destination asynchronously (bytes identical to the blocking save),
#                     snapshot isolation and staging reuse, borrowed-mode PSV_ERR_BUSY, wait
#                     timeouts, cancel (old target byte-identical, temp removed), errors at
#                     wait, 8 threads each running 2 jobs at once, fork while a job runs

.PHONY: test-async

$(BUILD)/test_async_asan: tests/c/test_async.c tests/c/robust_util.h tests/c/test_files.h include/psv.h lib | $(BUILD)
	$(CC) $(ROBUST_CFLAGS) $< -o $@ $(LDLIBS_PSV)

$(BUILD)/test_async: tests/c/test_async.c tests/c/robust_util.h tests/c/test_files.h include/psv.h lib | $(BUILD)
	$(CC) $(CFLAGS_STRICT) -g -pthread $< -o $@ $(LDLIBS_PSV)

test-async: $(BUILD)/test_async_asan $(BUILD)/test_async
	$(ROBUST_ENV) $(BUILD)/test_async_asan $(BUILD)/async_asan
	PSV_TEST_NO_FORK=1 tests/c/run_valgrind.sh $(BUILD)/test_async $(BUILD)/async_valgrind

TEST_TARGETS += test-async
