/*
 * test_corpus.c - replays the hostile-input corpus (tests/corpus/, written by make_corpus.py)
 * through the C ABI: for every line `<file> <STATUS>` of CORPUS_DIR/expected.txt, both
 * psv_restore (from the file) and psv_restore_from_memory (from its bytes) must return exactly
 * STATUS (compared by name, through psv_status_str). A success must hand out a usable archive;
 * a failure must set *out to NULL and leave a message.
 *
 * Usage: test_corpus CORPUS_DIR
 * Built by `make test-corpus` (mk/corpus.mk) with -std=c99 -Wall -Wextra -Wpedantic -Werror and
 * run under ASan+UBSan, so a memory error on any hostile file fails the run.
 * Exit status 1 on any mismatch.
 */
#define _POSIX_C_SOURCE 200809L

#include "psv.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Under ASan a failed huge allocation must come back as NULL (the library turns it into
 * PSV_ERR_NOMEM) instead of ASan aborting the process. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

/* The block limit for corpus restores, as in tests/corpus_replay.rs. */
#define MAX_TOTAL_BYTES (UINT64_C(1) << 30)

static unsigned long g_passed;
static unsigned long g_failed;

/* Reads a whole file; returns a malloc'd buffer (at least 1 byte, so never NULL for an empty
 * file) and its length, or NULL on error. */
static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    if (f == NULL) {
        return NULL;
    }
    for (;;) {
        size_t got;
        if (n == cap) {
            size_t ncap = cap == 0 ? 65536 : cap * 2;
            unsigned char *nbuf = realloc(buf, ncap + 1);
            if (nbuf == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nbuf;
            cap = ncap;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            break;
        }
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Checks one call's result against the expected status name; frees the archive. */
static void check(const char *file, const char *how, psv_status st, psv_archive *a,
                  const char *want)
{
    const char *got = psv_status_str(st);
    char msg[512];
    bool ok = strcmp(got, want) == 0;
    psv_last_error_message(msg, sizeof msg);
    if (st == PSV_OK) {
        size_t i, n = psv_archive_count(a);
        if (a == NULL) {
            ok = false;
            snprintf(msg, sizeof msg, "PSV_OK but the archive is NULL");
        }
        for (i = 0; a != NULL && i < n; i++) {
            const void *d = psv_archive_data(a, i);
            const char *key = psv_archive_key(a, i);
            const char *descr = psv_archive_descr(a, i);
            size_t nb = psv_archive_nbytes(a, i);
            if (d == NULL || key == NULL || descr == NULL || (uintptr_t)d % 64 != 0) {
                ok = false;
                snprintf(msg, sizeof msg, "array %zu: bad data/key/descr pointer", i);
                break;
            }
            if (nb > 0) {
                /* Touch both ends so ASan sees any view that is not inside the block. */
                volatile unsigned char first = ((const unsigned char *)d)[0];
                volatile unsigned char last = ((const unsigned char *)d)[nb - 1];
                (void)first;
                (void)last;
            }
        }
        if (a != NULL) {
            snprintf(msg, sizeof msg, "%zu arrays, %zu skipped", n, psv_archive_skipped_count(a));
        }
    } else if (a != NULL) {
        ok = false;
        snprintf(msg, sizeof msg, "failure %s left *out non-NULL", got);
    } else if (msg[0] == '\0') {
        ok = false;
        snprintf(msg, sizeof msg, "failure %s without an error message", got);
    }
    psv_free(a);
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        fprintf(stderr, "FAIL %s: %s: expected %s, got %s (%s)\n", file, how, want, got, msg);
    }
}

int main(int argc, char **argv)
{
    char path[4096];
    char line[1024];
    FILE *list;
    psv_restore_options *opts;
    unsigned long files = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    snprintf(path, sizeof path, "%s/expected.txt", argv[1]);
    list = fopen(path, "r");
    if (list == NULL) {
        perror(path);
        return 2;
    }
    opts = psv_restore_options_new();
    if (opts == NULL || psv_restore_options_set_limits(opts, MAX_TOTAL_BYTES, 0, 0) != PSV_OK ||
        psv_restore_options_set_threads(opts, 2) != PSV_OK) {
        fprintf(stderr, "cannot set up restore options\n");
        return 2;
    }

    while (fgets(line, sizeof line, list) != NULL) {
        char file[512], want[64];
        unsigned char *buf;
        size_t len = 0;
        psv_archive *a = NULL;
        psv_status st;
        if (line[0] == '#' || line[0] == '\n') {
            continue;
        }
        if (sscanf(line, "%511s %63s", file, want) != 2) {
            fprintf(stderr, "bad expected.txt line: %s", line);
            g_failed++;
            continue;
        }
        files++;
        snprintf(path, sizeof path, "%s/%s", argv[1], file);

        st = psv_restore(path, opts, &a);
        check(file, "psv_restore", st, a, want);

        buf = read_file(path, &len);
        if (buf == NULL) {
            fprintf(stderr, "FAIL %s: cannot read the file\n", file);
            g_failed++;
            continue;
        }
        a = NULL;
        st = psv_restore_from_memory(buf, len, opts, &a);
        check(file, "psv_restore_from_memory", st, a, want);
        free(buf);
    }
    fclose(list);
    psv_restore_options_free(opts);

    if (files < 40) {
        fprintf(stderr, "FAIL: the corpus lists only %lu files\n", files);
        g_failed++;
    }
    printf("test_corpus: %lu files\n%lu passed, %lu failed\n", files, g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
