# mk/corpus.mk — `make test-corpus`: the hostile-input corpus (tests/corpus/, written by
# tests/corpus/make_corpus.py) replayed through the C ABI, under AddressSanitizer + UBSan and
# under valgrind memcheck.
# Every file in tests/corpus/expected.txt must give exactly its listed status from both
# psv_restore and psv_restore_from_memory. The Rust replay (and the committed fuzz corpora under
# fuzz/corpus/) runs in `make test-rust` as tests/corpus_replay.rs.

CORPUS_DIR := tests/corpus

$(BUILD)/test_corpus_asan: tests/c/test_corpus.c include/psv.h lib | $(BUILD)
	$(CC) $(CFLAGS_STRICT) -g -fsanitize=address,undefined -fno-omit-frame-pointer $< -o $@ $(LDLIBS_PSV)

$(BUILD)/test_corpus: tests/c/test_corpus.c include/psv.h lib | $(BUILD)
	$(CC) $(CFLAGS_STRICT) -g $< -o $@ $(LDLIBS_PSV)

.PHONY: test-corpus
test-corpus: $(BUILD)/test_corpus_asan $(BUILD)/test_corpus
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		$(BUILD)/test_corpus_asan $(CORPUS_DIR)
	tests/c/run_valgrind.sh $(BUILD)/test_corpus $(CORPUS_DIR)

TEST_TARGETS += test-corpus
