/*
 * psv_example.c - save a few arrays into one .npz in parallel, restore them
 * into one 64-byte-aligned block, and check that everything came back.
 *
 *   cc -std=c99 -Iinclude examples/c/psv_example.c -Ltarget/release -lpsv \
 *      -Wl,-rpath,$PWD/target/release -o psv_example
 *   ./psv_example build/demo_c          # writes build/demo_c.npz
 *
 * The .npz is an ordinary NumPy archive: np.load("build/demo_c.npz") reads it.
 *
 * Timing: the save and the restore run ROUNDS times and each round prints its GB/s. The first
 * round is slow (typically 0.2-0.5 GB/s here against 2-7 GB/s for later ones): it is the first
 * touch of fresh memory, not libpsv's speed. The kernel must zero (and on a virtual machine the
 * host must first back) every page of the new file's page cache and of the new restore block;
 * later rounds get pages that were just freed. `make demo` and `make bench` report the best of
 * several runs after pre-touching memory, so compare them with the best round.
 */
#define _POSIX_C_SOURCE 200809L

#include "psv.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BIG_COUNT ((size_t)64 * 1024 * 1024) /* 64 Mi float32 = 256 MiB */
#define ROUNDS 3                              /* timed save + restore rounds (see above) */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Print what failed, with the library's own message, and return 1. */
static int fail(const char *what, psv_status st)
{
    char msg[1024];
    psv_last_error_message(msg, sizeof msg);
    fprintf(stderr, "psv_example: %s failed: %s: %s\n", what, psv_status_str(st), msg);
    return 1;
}

/* One array we save, and what we expect to get back for it. */
struct array {
    const char *key;
    psv_dtype dtype;
    const char *descr; /* numpy dtype.str on a little-endian machine */
    size_t ndim;
    int64_t shape[2];
    const void *data; /* may be NULL only when nbytes == 0 */
    size_t nbytes;
};

/* Find `want` in the archive and check dtype, shape, alignment and every byte. */
static int check_array(const psv_archive *a, const struct array *want)
{
    size_t i = 0;
    psv_status st = psv_archive_find(a, want->key, &i);
    if (st != PSV_OK) {
        return fail(want->key, st);
    }
    size_t block_len = 0;
    const unsigned char *block = psv_archive_block(a, &block_len);
    const unsigned char *data = psv_archive_data(a, i);
    const int64_t *shape = psv_archive_shape(a, i);
    size_t nbytes = psv_archive_nbytes(a, i);
    const char *descr = psv_archive_descr(a, i);
    const char *problem = NULL;

    if (psv_archive_dtype(a, i) != want->dtype) {
        problem = "dtype differs";
    } else if (descr == NULL || strcmp(descr, want->descr) != 0) {
        problem = "descr differs";
    } else if (psv_archive_ndim(a, i) != want->ndim) {
        problem = "ndim differs";
    } else if (want->ndim > 0 &&
               (shape == NULL || memcmp(shape, want->shape, want->ndim * sizeof *shape) != 0)) {
        problem = "shape differs";
    } else if (nbytes != want->nbytes) {
        problem = "nbytes differs";
    } else if (data == NULL || (uintptr_t)data % 64 != 0) {
        problem = "data pointer is not 64-byte aligned";
    } else if ((uintptr_t)data < (uintptr_t)block ||
               (uintptr_t)data + nbytes > (uintptr_t)block + block_len) {
        problem = "data lies outside psv_archive_block";
    } else if (nbytes > 0 && memcmp(data, want->data, nbytes) != 0) {
        problem = "values differ";
    }
    if (problem != NULL) {
        fprintf(stderr, "psv_example: array '%s': %s (got descr %s, %zu bytes)\n", want->key,
                problem, descr ? descr : "(null)", nbytes);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTPUT_PREFIX   (writes OUTPUT_PREFIX.npz)\n", argv[0]);
        return 2;
    }
    printf("libpsv %s\n", psv_version());

    /* --- the data: filling the arrays also touches every page before timing --- */
    float *big = malloc(BIG_COUNT * sizeof *big);
    int64_t *matrix = malloc(1000 * 3 * sizeof *matrix);
    uint8_t *bytes = malloc(777);
    double scalar = 3.141592653589793;
    if (big == NULL || matrix == NULL || bytes == NULL) {
        fprintf(stderr, "psv_example: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < BIG_COUNT; i++) {
        big[i] = (float)(i % 1000003) * 0.25f; /* exactly representable */
    }
    for (size_t i = 0; i < 1000 * 3; i++) {
        matrix[i] = (int64_t)i * 1000003 - 5;
    }
    for (size_t i = 0; i < 777; i++) {
        bytes[i] = (uint8_t)(i * 31);
    }

    const struct array arrays[] = {
        {"big", PSV_DTYPE_F32, "<f4", 1, {(int64_t)BIG_COUNT, 0}, big, BIG_COUNT * sizeof *big},
        {"matrix", PSV_DTYPE_I64, "<i8", 2, {1000, 3}, matrix, 1000 * 3 * sizeof *matrix},
        {"bytes", PSV_DTYPE_U8, "|u1", 1, {777, 0}, bytes, 777},
        {"scalar", PSV_DTYPE_F64, "<f8", 0, {0, 0}, &scalar, sizeof scalar}, /* 0-d */
        {"empty", PSV_DTYPE_F32, "<f4", 2, {0, 16}, NULL, 0},                /* zero-size */
    };
    const size_t n_arrays = sizeof arrays / sizeof arrays[0];
    size_t total_bytes = 0;

    /* --- save: the saver borrows the data until psv_saver_free --- */
    psv_saver *saver = psv_saver_new();
    if (saver == NULL) {
        fprintf(stderr, "psv_example: psv_saver_new: out of memory\n");
        return 1;
    }
    for (size_t k = 0; k < n_arrays; k++) {
        const struct array *x = &arrays[k];
        psv_status st = psv_saver_add(saver, x->key, x->data, x->dtype,
                                      x->ndim > 0 ? x->shape : NULL, x->ndim);
        if (st != PSV_OK) {
            return fail("psv_saver_add", st);
        }
        total_bytes += x->nbytes;
    }

    char path[4096];
    snprintf(path, sizeof path, "%s.npz", argv[1]);
    const double mb = (double)total_bytes / 1e6;
    double best_save = 0.0, best_restore = 0.0;
    psv_archive *archive = NULL;
    int errors = 0;
    for (int round = 1; round <= ROUNDS; round++) {
        psv_free(archive); /* the previous round's archive (NULL is a no-op) */
        archive = NULL;
        double t0 = now_seconds();
        psv_status st = psv_saver_save(saver, path, NULL); /* NULL options = all cores */
        double save_s = now_seconds() - t0;
        if (st != PSV_OK) {
            return fail("psv_saver_save", st);
        }

        /* --- restore: every array lands in one aligned block owned by the archive --- */
        t0 = now_seconds();
        st = psv_restore(path, NULL, &archive);
        double restore_s = now_seconds() - t0;
        if (st != PSV_OK) {
            return fail("psv_restore", st);
        }
        printf("round %d: saved %zu arrays, %.1f MB to %s in %.3f s: %.2f GB/s; restored in %.3f s: "
               "%.2f GB/s%s\n",
               round, n_arrays, mb, path, save_s, mb / 1e3 / save_s, restore_s,
               mb / 1e3 / restore_s, round == 1 ? " (first touch of fresh memory)" : "");
        if (best_save == 0.0 || save_s < best_save) {
            best_save = save_s;
        }
        if (best_restore == 0.0 || restore_s < best_restore) {
            best_restore = restore_s;
        }

        if (psv_archive_count(archive) != n_arrays) {
            fprintf(stderr, "psv_example: restored %zu arrays, expected %zu\n",
                    psv_archive_count(archive), n_arrays);
            errors++;
        }
        for (size_t k = 0; k < n_arrays; k++) {
            errors += check_array(archive, &arrays[k]);
        }
    }

    /* Typed access: the data pointer is an ordinary C array. */
    size_t i_big = 0;
    if (psv_archive_find(archive, "big", &i_big) == PSV_OK) {
        const float *restored = psv_archive_data(archive, i_big);
        printf("big[123456789 %% n] = %g\n", (double)restored[123456789 % BIG_COUNT]);
    }
    printf("best of %d rounds: save %.2f GB/s, restore %.2f GB/s\n", ROUNDS, mb / 1e3 / best_save,
           mb / 1e3 / best_restore);

    psv_free(archive);     /* releases the block: the data pointers are now invalid */
    psv_saver_free(saver); /* the saver no longer borrows our arrays */
    free(big);
    free(matrix);
    free(bytes);

    if (errors != 0) {
        fprintf(stderr, "psv_example: FAILED: %d mismatching array(s)\n", errors);
        return 1;
    }
    printf("all values, dtypes, shapes and alignments check out\n");
    return 0;
}
