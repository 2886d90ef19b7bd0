/*
 * test_api.c - C tests of libpsv's exported API (STYLE rule 39): for every
 * exported function its NULL, error and success paths; every error code that
 * can be triggered from C has a test that triggers it.
 *
 * Usage: test_api SCRATCH_DIR   (created if missing; files in it are overwritten)
 * Built by `make test-c` with -std=c99 -Wall -Wextra -Wpedantic -Werror, run under
 * ASan+UBSan and under valgrind (tests/c/run_valgrind.sh). Exit status 1 on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include "psv.h"
#include "test_files.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Under ASan a failed huge allocation must come back as NULL (the library is
 * supposed to turn it into PSV_ERR_NOMEM) instead of ASan aborting the process. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

/* ======================================================================== */
/* A tiny assertion framework                                               */
/* ======================================================================== */

static unsigned long g_checks;
static unsigned long g_failures;
static const char *g_test = "";

static void fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    g_failures++;
    fprintf(stderr, "%s:%d: [%s] FAIL: ", file, line, g_test);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            fail_at(__FILE__, __LINE__, "%s", #cond);                                              \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            fail_at(__FILE__, __LINE__, __VA_ARGS__);                                              \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_U(got, want)                                                                      \
    do {                                                                                           \
        unsigned long long got_ = (unsigned long long)(got);                                       \
        unsigned long long want_ = (unsigned long long)(want);                                     \
        g_checks++;                                                                                \
        if (got_ != want_) {                                                                       \
            fail_at(__FILE__, __LINE__, "%s == %llu, expected %s == %llu", #got, got_, #want,      \
                    want_);                                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_I(got, want)                                                                      \
    do {                                                                                           \
        long long got_ = (long long)(got);                                                         \
        long long want_ = (long long)(want);                                                       \
        g_checks++;                                                                                \
        if (got_ != want_) {                                                                       \
            fail_at(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", #got, got_, #want,      \
                    want_);                                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_STR(got, want) check_str(__FILE__, __LINE__, #got, (got), (want))

static void check_str(const char *file, int line, const char *expr, const char *got,
                      const char *want)
{
    g_checks++;
    if (got == NULL || strcmp(got, want) != 0) {
        fail_at(file, line, "%s == %s%s%s, expected \"%s\"", expr, got ? "\"" : "",
                got ? got : "NULL", got ? "\"" : "", want);
    }
}

/* The calling thread's last error message (static buffer, valid until the next call). */
static const char *last_error(void)
{
    static char buf[4096];
    buf[0] = '\0';
    psv_last_error_message(buf, sizeof buf);
    return buf;
}

/*
 * CHECK_ST(expected_status, call): the call returns exactly `expected_status`; on
 * success the last error message is empty (length 0), on failure it is non-empty.
 * psv_last_error_os_code() is 0 unless the call failed with PSV_ERR_IO or PSV_ERR_NOMEM.
 */
#define CHECK_ST(want, call) check_st(__FILE__, __LINE__, #call, (call), (want))

static psv_status check_st(const char *file, int line, const char *expr, psv_status got,
                           psv_status want)
{
    char msg[4096];
    msg[0] = '\0';
    size_t n = psv_last_error_message(msg, sizeof msg);
    int32_t os_code = psv_last_error_os_code();
    g_checks++;
    if (got != want) {
        fail_at(file, line, "%s returned %s (%d), expected %s (%d); last error: \"%s\"", expr,
                psv_status_str(got), (int)got, psv_status_str(want), (int)want, msg);
    } else if (want == PSV_OK && n != 0) {
        fail_at(file, line, "%s succeeded but the last error message is not empty: \"%s\"", expr,
                msg);
    } else if (want != PSV_OK && (n == 0 || msg[0] == '\0')) {
        fail_at(file, line, "%s failed with %s but the last error message is empty", expr,
                psv_status_str(got));
    } else if (os_code != 0 && got != PSV_ERR_IO && got != PSV_ERR_NOMEM) {
        fail_at(file, line, "%s returned %s but psv_last_error_os_code() is %d", expr,
                psv_status_str(got), (int)os_code);
    }
    return got;
}

/* ======================================================================== */
/* Helpers: paths, files, data                                              */
/* ======================================================================== */

#define PATH_LEN 4096
static char g_dir[PATH_LEN];

/* "<scratch>/<formatted name>" in one of several rotating static buffers. */
static const char *P(const char *fmt, ...)
{
    static char bufs[16][PATH_LEN];
    static unsigned next;
    char *b = bufs[next++ % 16];
    size_t used = strlen(g_dir);
    memcpy(b, g_dir, used); /* g_dir is shorter than PATH_LEN - 256 (checked in main) */
    b[used++] = '/';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b + used, PATH_LEN - used, fmt, ap);
    va_end(ap);
    return b;
}

/* Names in a directory other than "." and "..", sorted, joined by ' '. */
static void list_dir(const char *path, char *out, size_t cap)
{
    char names[64][256];
    size_t n = 0;
    out[0] = '\0';
    DIR *d = opendir(path);
    if (d == NULL) {
        snprintf(out, cap, "(cannot open)");
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 64) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(names[n++], 256, "%s", e->d_name);
        }
    }
    closedir(d);
    for (size_t i = 1; i < n; i++) { /* insertion sort */
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char t[256];
            memcpy(t, names[j], 256);
            memcpy(names[j], names[j - 1], 256);
            memcpy(names[j - 1], t, 256);
        }
    }
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s%s", i ? " " : "", names[i]);
    }
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || (len > 0 && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
}

/* The whole file in a malloc'd buffer (caller frees), its size in *len. */
static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size + 1);
    if (buf == NULL || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)size;
    return buf;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* Deterministic pseudo-random bytes. */
static void fill(void *p, size_t n, uint64_t seed)
{
    unsigned char *b = p;
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (unsigned char)(x >> 29);
    }
}

static char native_order(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first ? '<' : '>';
}

/* ======================================================================== */
/* Archive invariants: alignment, block range, no overlap, consistent sizes */
/* ======================================================================== */

struct span {
    uintptr_t start;
    size_t len;
};

static int cmp_span(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

#define CHECK_INVARIANTS(a) check_invariants(__FILE__, __LINE__, (a))

static void check_invariants(const char *file, int line, const psv_archive *a)
{
    size_t block_len = 0;
    const void *block = psv_archive_block(a, &block_len);
    uintptr_t b0 = (uintptr_t)block;
    size_t n = psv_archive_count(a);
    struct span *spans = xmalloc((n + 1) * sizeof *spans);
    size_t nspans = 0;
    unsigned long before = g_failures;

    for (size_t i = 0; i < n && g_failures - before < 10; i++) {
        const char *key = psv_archive_key(a, i);
        const void *data = psv_archive_data(a, i);
        size_t nbytes = psv_archive_nbytes(a, i);
        size_t ndim = psv_archive_ndim(a, i);
        size_t itemsize = psv_archive_itemsize(a, i);
        const int64_t *shape = psv_archive_shape(a, i);
        psv_dtype dt = psv_archive_dtype(a, i);
        g_checks++;
        if (key == NULL) {
            fail_at(file, line, "array %zu: psv_archive_key is NULL", i);
            continue;
        }
        size_t found = (size_t)-1;
        if (psv_archive_find(a, key, &found) != PSV_OK || found != i) {
            fail_at(file, line, "array %zu '%s': psv_archive_find gives %zu", i, key, found);
        }
        if (data == NULL || (uintptr_t)data % 64 != 0) {
            fail_at(file, line, "array %zu '%s': data %p is not 64-byte aligned", i, key, data);
        }
        if (nbytes > 0) {
            if (block == NULL || (uintptr_t)data < b0 || (uintptr_t)data - b0 > block_len ||
                nbytes > block_len - ((uintptr_t)data - b0)) {
                fail_at(file, line, "array %zu '%s': [%p, +%zu) outside block [%p, +%zu)", i, key,
                        data, nbytes, block, block_len);
            }
            spans[nspans].start = (uintptr_t)data;
            spans[nspans].len = nbytes;
            nspans++;
        } else if (block == NULL || (uintptr_t)data < b0 || (uintptr_t)data - b0 > block_len) {
            /* psv.h: data is "inside the archive's block", empty arrays included */
            fail_at(file, line, "array %zu '%s': empty array's data %p outside [%p, +%zu]", i, key,
                    data, block, block_len);
        }
        if (psv_archive_descr(a, i) == NULL || psv_archive_descr(a, i)[0] == '\0') {
            fail_at(file, line, "array %zu '%s': no descr", i, key);
        }
        if (dt < PSV_DTYPE_BOOL || dt > PSV_DTYPE_OTHER) {
            fail_at(file, line, "array %zu '%s': dtype code %d out of range", i, key, (int)dt);
        }
        if (ndim > 64 || (ndim == 0) != (shape == NULL)) {
            fail_at(file, line, "array %zu '%s': ndim %zu but shape %p", i, key, ndim,
                    (const void *)shape);
            continue;
        }
        uint64_t count = 1;
        for (size_t d = 0; d < ndim; d++) {
            if (shape[d] < 0) {
                fail_at(file, line, "array %zu '%s': negative dim", i, key);
            }
            count *= (uint64_t)shape[d];
        }
        if (count * itemsize != nbytes) {
            fail_at(file, line, "array %zu '%s': prod(shape) * itemsize = %llu != nbytes %zu", i,
                    key, (unsigned long long)(count * itemsize), nbytes);
        }
    }
    qsort(spans, nspans, sizeof *spans, cmp_span);
    for (size_t k = 1; k < nspans; k++) {
        g_checks++;
        if (spans[k - 1].start + spans[k - 1].len > spans[k].start) {
            fail_at(file, line, "two arrays overlap in the block");
            break;
        }
    }
    free(spans);
}

/* Checks one restored array completely. shape may be NULL iff ndim == 0. */
#define EXPECT_ARRAY(a, key, dtype, descr, itemsize, shape, ndim, fortran, data, nbytes)           \
    expect_array(__FILE__, __LINE__, (a), (key), (dtype), (descr), (itemsize), (shape), (ndim),   \
                 (fortran), (data), (nbytes))

static void expect_array(const char *file, int line, const psv_archive *a, const char *key,
                         psv_dtype dtype, const char *descr, size_t itemsize,
                         const int64_t *shape, size_t ndim, bool fortran, const void *data,
                         size_t nbytes)
{
    size_t i = (size_t)-1;
    g_checks++;
    if (psv_archive_find(a, key, &i) != PSV_OK) {
        fail_at(file, line, "array '%s' not found: %s", key, last_error());
        return;
    }
    const char *got_descr = psv_archive_descr(a, i);
    const int64_t *got_shape = psv_archive_shape(a, i);
    const void *got_data = psv_archive_data(a, i);
    if (psv_archive_key(a, i) == NULL || strcmp(psv_archive_key(a, i), key) != 0) {
        fail_at(file, line, "array '%s': psv_archive_key(find(key)) differs", key);
    }
    if (psv_archive_dtype(a, i) != dtype) {
        fail_at(file, line, "array '%s': dtype %d, expected %d", key, (int)psv_archive_dtype(a, i),
                (int)dtype);
    }
    if (got_descr == NULL || strcmp(got_descr, descr) != 0) {
        fail_at(file, line, "array '%s': descr \"%s\", expected \"%s\"", key,
                got_descr ? got_descr : "(NULL)", descr);
    }
    if (psv_archive_itemsize(a, i) != itemsize) {
        fail_at(file, line, "array '%s': itemsize %zu, expected %zu", key,
                psv_archive_itemsize(a, i), itemsize);
    }
    if (psv_archive_ndim(a, i) != ndim) {
        fail_at(file, line, "array '%s': ndim %zu, expected %zu", key, psv_archive_ndim(a, i),
                ndim);
    } else if (ndim == 0 && got_shape != NULL) {
        fail_at(file, line, "array '%s': 0-d but psv_archive_shape is not NULL", key);
    } else if (ndim > 0 &&
               (got_shape == NULL || memcmp(got_shape, shape, ndim * sizeof *shape) != 0)) {
        fail_at(file, line, "array '%s': shape differs", key);
    }
    if (psv_archive_fortran_order(a, i) != fortran) {
        fail_at(file, line, "array '%s': fortran_order %d, expected %d", key,
                (int)psv_archive_fortran_order(a, i), (int)fortran);
    }
    if (psv_archive_nbytes(a, i) != nbytes) {
        fail_at(file, line, "array '%s': nbytes %zu, expected %zu", key, psv_archive_nbytes(a, i),
                nbytes);
    } else if (got_data == NULL || (uintptr_t)got_data % 64 != 0) {
        fail_at(file, line, "array '%s': data %p not 64-byte aligned", key, got_data);
    } else if (nbytes > 0 && memcmp(got_data, data, nbytes) != 0) {
        size_t k = 0;
        while (((const unsigned char *)got_data)[k] == ((const unsigned char *)data)[k]) {
            k++;
        }
        fail_at(file, line, "array '%s': values differ (first at byte %zu)", key, k);
    }
}

/* Restore `path` with default options; NULL (and a recorded failure) if it fails. */
static psv_archive *restore_ok(const char *file, int line, const char *path,
                               const psv_restore_options *opts)
{
    psv_archive *a = NULL;
    psv_status st = psv_restore(path, opts, &a);
    g_checks++;
    if (st != PSV_OK || a == NULL) {
        fail_at(file, line, "psv_restore(%s) = %s: %s", path, psv_status_str(st), last_error());
        psv_free(a);
        return NULL;
    }
    return a;
}
#define RESTORE_OK(path, opts) restore_ok(__FILE__, __LINE__, (path), (opts))

/* Expect psv_restore to fail with `want`, and *out to be set to NULL. */
#define RESTORE_FAILS(want, path, opts)                                                            \
    do {                                                                                           \
        psv_archive *out_ = (psv_archive *)&g_dir; /* garbage that must be overwritten */         \
        CHECK_ST((want), psv_restore((path), (opts), &out_));                                      \
        CHECK_MSG(out_ == NULL, "psv_restore failed but did not set *out to NULL");                \
        if (out_ != NULL && out_ != (psv_archive *)&g_dir) {                                       \
            psv_free(out_);                                                                        \
        }                                                                                          \
    } while (0)

/* ======================================================================== */
/* Dtype table                                                              */
/* ======================================================================== */

struct dtype_info {
    psv_dtype code;
    size_t itemsize;
    const char *kind; /* descr without the byte-order character */
};

static const struct dtype_info DTYPES[] = {
    {PSV_DTYPE_BOOL, 1, "b1"}, {PSV_DTYPE_I8, 1, "i1"},   {PSV_DTYPE_I16, 2, "i2"},
    {PSV_DTYPE_I32, 4, "i4"},  {PSV_DTYPE_I64, 8, "i8"},  {PSV_DTYPE_U8, 1, "u1"},
    {PSV_DTYPE_U16, 2, "u2"},  {PSV_DTYPE_U32, 4, "u4"},  {PSV_DTYPE_U64, 8, "u8"},
    {PSV_DTYPE_F16, 2, "f2"},  {PSV_DTYPE_F32, 4, "f4"},  {PSV_DTYPE_F64, 8, "f8"},
    {PSV_DTYPE_C64, 8, "c8"},  {PSV_DTYPE_C128, 16, "c16"},
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

static void native_descr(const struct dtype_info *d, char *out, size_t cap)
{
    snprintf(out, cap, "%c%s", d->itemsize == 1 ? '|' : native_order(), d->kind);
}

/* ======================================================================== */
/* Tests                                                                    */
/* ======================================================================== */

static void test_status_and_version(void)
{
    static const struct {
        psv_status code;
        int value;
        const char *name;
    } codes[] = {
        {PSV_OK, 0, "PSV_OK"},
        {PSV_ERR_NULL_ARG, 1, "PSV_ERR_NULL_ARG"},
        {PSV_ERR_INVALID_ARG, 2, "PSV_ERR_INVALID_ARG"},
        {PSV_ERR_BAD_DTYPE, 3, "PSV_ERR_BAD_DTYPE"},
        {PSV_ERR_OVERFLOW, 4, "PSV_ERR_OVERFLOW"},
        {PSV_ERR_IO, 5, "PSV_ERR_IO"},
        {PSV_ERR_FORMAT, 6, "PSV_ERR_FORMAT"},
        {PSV_ERR_UNSUPPORTED, 7, "PSV_ERR_UNSUPPORTED"},
        {PSV_ERR_LIMIT, 8, "PSV_ERR_LIMIT"},
        {PSV_ERR_NOT_FOUND, 9, "PSV_ERR_NOT_FOUND"},
        {PSV_ERR_NOMEM, 10, "PSV_ERR_NOMEM"},
        {PSV_ERR_ABORTED, 11, "PSV_ERR_ABORTED"},
        {PSV_ERR_PANIC, 12, "PSV_ERR_PANIC"},
        {PSV_ERR_CRC, 13, "PSV_ERR_CRC"},
    };
    for (size_t k = 0; k < sizeof codes / sizeof codes[0]; k++) {
        CHECK_EQ_I(codes[k].code, codes[k].value);
        CHECK_STR(psv_status_str(codes[k].code), codes[k].name);
    }
    const psv_status unknown[] = {14, 999, -1, INT32_MIN, INT32_MAX};
    for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++) {
        const char *s = psv_status_str(unknown[k]);
        CHECK_MSG(s != NULL && s[0] != '\0', "psv_status_str(%d) is NULL or empty",
                  (int)unknown[k]);
        for (size_t j = 0; s != NULL && j < sizeof codes / sizeof codes[0]; j++) {
            CHECK_MSG(strcmp(s, codes[j].name) != 0, "psv_status_str(%d) = %s", (int)unknown[k],
                      s);
        }
    }

    /* dtype codes are part of the ABI */
    CHECK_EQ_I(PSV_DTYPE_INVALID, -1);
    for (size_t k = 0; k < N_DTYPES; k++) {
        CHECK_EQ_I(DTYPES[k].code, (int)k + 1);
    }
    CHECK_EQ_I(PSV_DTYPE_OTHER, 15);

    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", PSV_VERSION_MAJOR, PSV_VERSION_MINOR,
             PSV_VERSION_PATCH);
    const char *v = psv_version();
    CHECK(v != NULL);
    /* a pre-release suffix ("0.1.0-alpha") would still start with the numbers */
    CHECK_MSG(v != NULL && strncmp(v, want, strlen(want)) == 0 &&
                  (v[strlen(want)] == '\0' || v[strlen(want)] == '-'),
              "psv_version() = \"%s\", header macros say %s", v ? v : "(NULL)", want);
    CHECK_EQ_I(PSV_VERSION_NUMBER,
               PSV_VERSION_MAJOR * 10000 + PSV_VERSION_MINOR * 100 + PSV_VERSION_PATCH);
#ifdef PSV_ABI_VERSION
    CHECK_EQ_U(psv_abi_version(), PSV_ABI_VERSION);
#else
    /* cargo-c's sover rule, which STYLE rule 36 adopts: 0.y.z -> y, x.y.z -> x */
    CHECK_EQ_U(psv_abi_version(), PSV_VERSION_MAJOR == 0 ? PSV_VERSION_MINOR : PSV_VERSION_MAJOR);
#endif
}

static void test_last_error_message(void)
{
    /* a failure sets a message */
    psv_archive *a = NULL;
    CHECK_ST(PSV_ERR_IO, psv_restore(P("no_such_file.npz"), NULL, &a));
    size_t n = psv_last_error_message(NULL, 0);
    CHECK(n > 0);
    CHECK_EQ_U(psv_last_error_message(NULL, 0), n); /* reading does not clear it */

    char *full = xmalloc(n + 1);
    memset(full, 'X', n + 1);
    CHECK_EQ_U(psv_last_error_message(full, n + 1), n);
    CHECK_EQ_U(strlen(full), n);
    CHECK_MSG(strstr(full, "no_such_file") != NULL, "message does not name the path: \"%s\"",
              full);

    /* truncation: NUL-terminated, the first len-1 bytes, full length returned */
    char small[6];
    memset(small, 'X', sizeof small);
    CHECK_EQ_U(psv_last_error_message(small, 5), n);
    CHECK_EQ_I(small[4], '\0');
    CHECK_EQ_I(small[5], 'X'); /* nothing written past len */
    CHECK(strncmp(small, full, 4) == 0);

    char one[2] = {'X', 'X'};
    CHECK_EQ_U(psv_last_error_message(one, 1), n);
    CHECK_EQ_I(one[0], '\0');
    CHECK_EQ_I(one[1], 'X');

    char untouched[2] = {'X', 'X'};
    CHECK_EQ_U(psv_last_error_message(untouched, 0), n); /* len 0: nothing written */
    CHECK_EQ_I(untouched[0], 'X');

    /* exactly n bytes of room: the last character is dropped for the NUL */
    char *exact = xmalloc(n);
    CHECK_EQ_U(psv_last_error_message(exact, n), n);
    CHECK_EQ_U(strlen(exact), n - 1);
    free(exact);
    free(full);

    /* a NULL buffer with a non-zero length must not crash (NULL is checked) */
    CHECK_EQ_U(psv_last_error_message(NULL, 16), n);

    /* a successful fallible call clears it */
    psv_save_options *o = psv_save_options_new();
    CHECK(o != NULL);
    CHECK_ST(PSV_OK, psv_save_options_set_threads(o, 1));
    CHECK_EQ_U(psv_last_error_message(NULL, 0), 0);
    char buf[8] = "XXXXXXX";
    CHECK_EQ_U(psv_last_error_message(buf, sizeof buf), 0);
    CHECK_EQ_I(buf[0], '\0');
    psv_save_options_free(o);
}

static void test_last_error_os_code(void)
{
    double x[2] = {1.0, 2.0};
    const int64_t shape[1] = {2};
    psv_saver *s = psv_saver_new();
    CHECK(s != NULL);
    CHECK_ST(PSV_OK, psv_saver_add(s, "x", x, PSV_DTYPE_F64, shape, 1));
    CHECK_EQ_I(psv_last_error_os_code(), 0);

    /* saving into a directory that does not exist: the OS's ENOENT */
    CHECK_ST(PSV_ERR_IO, psv_saver_save(s, P("no_such_dir/x"), NULL));
    CHECK_EQ_I(psv_last_error_os_code(), ENOENT);
    CHECK_EQ_I(psv_last_error_os_code(), ENOENT); /* reading does not clear it */

    /* a path below a regular file: ENOTDIR */
    write_file(P("plain_file"), "x", 1);
    CHECK_ST(PSV_ERR_IO, psv_saver_save(s, P("plain_file/x"), NULL));
    CHECK_EQ_I(psv_last_error_os_code(), ENOTDIR);

    /* a failure that is not the OS's replaces it with 0 */
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_save(s, NULL, NULL));
    CHECK_EQ_I(psv_last_error_os_code(), 0);

    /* a success clears it, together with the message */
    CHECK_ST(PSV_ERR_IO, psv_saver_save(s, P("no_such_dir/x"), NULL));
    CHECK_ST(PSV_OK, psv_saver_save(s, P("os_code_ok"), NULL));
    CHECK_EQ_I(psv_last_error_os_code(), 0);

    /* restoring a missing file: ENOENT */
    psv_archive *a = NULL;
    CHECK_ST(PSV_ERR_IO, psv_restore(P("no_such_file.npz"), NULL, &a));
    CHECK(a == NULL);
    CHECK_EQ_I(psv_last_error_os_code(), ENOENT);
    psv_saver_free(s);
}

static void test_null_arguments(void)
{
    float data[3] = {1, 2, 3};
    int64_t shape[1] = {3};
    size_t idx = 77;
    size_t len = 77;

    psv_saver *s = psv_saver_new();
    CHECK(s != NULL);

    /* psv_saver_add */
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add(NULL, "k", data, PSV_DTYPE_F32, shape, 1));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add(s, NULL, data, PSV_DTYPE_F32, shape, 1));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add(s, "k", NULL, PSV_DTYPE_F32, shape, 1));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add(s, "k", data, PSV_DTYPE_F32, NULL, 1));
    /* psv_saver_add_descr */
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add_descr(NULL, "k", data, 12, "<f4", shape, 1, false));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add_descr(s, NULL, data, 12, "<f4", shape, 1, false));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add_descr(s, "k", NULL, 12, "<f4", shape, 1, false));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add_descr(s, "k", data, 12, NULL, shape, 1, false));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add_descr(s, "k", data, 12, "<f4", NULL, 1, false));
    CHECK_EQ_U(psv_saver_count(s), 0); /* nothing was added by the failures */
    CHECK_EQ_U(psv_saver_count(NULL), 0);
    /* psv_saver_save */
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_save(NULL, P("null_saver.npz"), NULL));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_save(s, NULL, NULL));
    CHECK(!file_exists(P("null_saver.npz")));

    /* options */
    CHECK_ST(PSV_ERR_NULL_ARG, psv_save_options_set_threads(NULL, 1));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_save_options_set_fsync(NULL, true));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_restore_options_set_threads(NULL, 1));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_restore_options_set_verify_crc(NULL, false));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_restore_options_set_limits(NULL, 1, 1, 1));

    /* psv_restore */
    CHECK_ST(PSV_OK, psv_saver_add(s, "k", data, PSV_DTYPE_F32, shape, 1));
    CHECK_ST(PSV_OK, psv_saver_save(s, P("null_args.npz"), NULL));
    RESTORE_FAILS(PSV_ERR_NULL_ARG, NULL, NULL);
    CHECK_ST(PSV_ERR_NULL_ARG, psv_restore(P("null_args.npz"), NULL, NULL));

    /* archive accessors with a NULL archive */
    CHECK_EQ_U(psv_archive_count(NULL), 0);
    CHECK_ST(PSV_ERR_NULL_ARG, psv_archive_find(NULL, "k", &idx));
    CHECK_EQ_U(idx, 77); /* scalar out-params are written only on success */
    CHECK(psv_archive_key(NULL, 0) == NULL);
    CHECK(psv_archive_data(NULL, 0) == NULL);
    CHECK_EQ_U(psv_archive_nbytes(NULL, 0), 0);
    CHECK_EQ_I(psv_archive_dtype(NULL, 0), PSV_DTYPE_INVALID);
    CHECK(psv_archive_descr(NULL, 0) == NULL);
    CHECK_EQ_U(psv_archive_itemsize(NULL, 0), 0);
    CHECK_EQ_U(psv_archive_ndim(NULL, 0), 0);
    CHECK(psv_archive_shape(NULL, 0) == NULL);
    CHECK(!psv_archive_fortran_order(NULL, 0));
    CHECK(psv_archive_block(NULL, &len) == NULL);
    CHECK_EQ_U(psv_archive_skipped_count(NULL), 0);
    CHECK(psv_archive_skipped_name(NULL, 0) == NULL);

    /* NULL key / index pointers with a real archive */
    psv_archive *a = RESTORE_OK(P("null_args.npz"), NULL);
    if (a != NULL) {
        CHECK_ST(PSV_ERR_NULL_ARG, psv_archive_find(a, NULL, &idx));
        CHECK_ST(PSV_ERR_NULL_ARG, psv_archive_find(a, "k", NULL));
        CHECK_EQ_U(idx, 77);
        CHECK_ST(PSV_OK, psv_archive_find(a, "k", &idx));
        CHECK_EQ_U(idx, 0);
        /* len is optional (documented in psv.h) */
        size_t len_a = 0;
        const void *blk = psv_archive_block(a, &len_a);
        CHECK(blk != NULL);
        CHECK(psv_archive_block(a, NULL) == blk);
    }

    /* *_free(NULL) is a no-op */
    psv_saver_free(NULL);
    psv_save_options_free(NULL);
    psv_restore_options_free(NULL);
    psv_free(NULL);

    psv_free(a);
    psv_saver_free(s);
}

static void test_saver_add_errors(void)
{
    static int32_t data[64];
    int64_t shape3[1] = {3};
    psv_saver *s = psv_saver_new();

    /* dtype codes */
    const psv_dtype bad_codes[] = {0, -1, 16, 1000, PSV_DTYPE_OTHER, INT32_MIN, INT32_MAX};
    for (size_t k = 0; k < sizeof bad_codes / sizeof bad_codes[0]; k++) {
        CHECK_ST(PSV_ERR_BAD_DTYPE, psv_saver_add(s, "bad", data, bad_codes[k], shape3, 1));
    }

    /* shapes */
    int64_t dims65[65];
    for (size_t d = 0; d < 65; d++) {
        dims65[d] = 1;
    }
    CHECK_ST(PSV_ERR_OVERFLOW, psv_saver_add(s, "ndim65", data, PSV_DTYPE_I32, dims65, 65));
    int64_t negative[2] = {2, -1};
    CHECK_ST(PSV_ERR_OVERFLOW, psv_saver_add(s, "neg", data, PSV_DTYPE_I32, negative, 2));
    int64_t negative0[1] = {-3};
    CHECK_ST(PSV_ERR_OVERFLOW, psv_saver_add(s, "neg0", data, PSV_DTYPE_I32, negative0, 1));
    int64_t huge[2] = {INT64_MAX, 2};
    CHECK_ST(PSV_ERR_OVERFLOW, psv_saver_add(s, "huge", data, PSV_DTYPE_I32, huge, 2));
    int64_t huge1[1] = {INT64_MAX / 2 + 1}; /* * 4 bytes overflows u64 and isize */
    CHECK_ST(PSV_ERR_OVERFLOW, psv_saver_add(s, "huge1", data, PSV_DTYPE_I32, huge1, 1));
    int64_t over_isize[2] = {(int64_t)1 << 62, 2}; /* 2^63 bytes: fits u64, not isize */
    CHECK_ST(PSV_ERR_OVERFLOW, psv_saver_add(s, "over", data, PSV_DTYPE_U8, over_isize, 2));

    /* data NULL: only with zero bytes */
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add(s, "nul", NULL, PSV_DTYPE_I32, shape3, 1));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_add(s, "nul0d", NULL, PSV_DTYPE_F64, NULL, 0));
    int64_t zero[2] = {4, 0};
    CHECK_ST(PSV_OK, psv_saver_add(s, "null_empty", NULL, PSV_DTYPE_I32, zero, 2));
    CHECK_ST(PSV_OK, psv_saver_add(s, "scalar", data, PSV_DTYPE_I32, NULL, 0));
    /* shape is not read when ndim == 0 */
    CHECK_ST(PSV_OK, psv_saver_add(s, "scalar2", data, PSV_DTYPE_I32, shape3, 0));
    CHECK_ST(PSV_OK, psv_saver_add(s, "ndim64", data, PSV_DTYPE_I32, dims65, 64));

    /* keys */
    CHECK_ST(PSV_OK, psv_saver_add(s, "a", data, PSV_DTYPE_I32, shape3, 1));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add(s, "a", data, PSV_DTYPE_I32, shape3, 1));
    CHECK_ST(PSV_OK, psv_saver_add(s, "dup_key_name", data, PSV_DTYPE_I32, shape3, 1));
    CHECK_ST(PSV_ERR_INVALID_ARG,
             psv_saver_add(s, "dup_key_name", data, PSV_DTYPE_U8, shape3, 1));
    CHECK_MSG(strstr(last_error(), "dup_key_name") != NULL, "message does not name the key: %s",
              last_error());
    /* a failed add does not reserve its key */
    CHECK_ST(PSV_ERR_BAD_DTYPE, psv_saver_add(s, "retry", data, 0, shape3, 1));
    CHECK_ST(PSV_OK, psv_saver_add(s, "retry", data, PSV_DTYPE_I32, shape3, 1));
    CHECK_ST(PSV_ERR_INVALID_ARG,
             psv_saver_add_descr(s, "a", data, 12, "<i4", shape3, 1, false));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add(s, "", data, PSV_DTYPE_I32, shape3, 1));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add(s, "\xff\xfe", data, PSV_DTYPE_I32, shape3, 1));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add(s, "ok\xc3", data, PSV_DTYPE_I32, shape3, 1));
    /* a zip member name is at most 65535 bytes; key + ".npy" must fit */
    char *long_key = xmalloc(70001);
    memset(long_key, 'k', 70000);
    long_key[70000] = '\0';
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add(s, long_key, data, PSV_DTYPE_I32, shape3, 1));
    free(long_key);

    CHECK_EQ_U(psv_saver_count(s), 7);

    /* the saver still saves what was accepted */
    CHECK_ST(PSV_OK, psv_saver_save(s, P("add_errors.npz"), NULL));
    psv_archive *a = RESTORE_OK(P("add_errors.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), 7);
        CHECK_INVARIANTS(a);
        const int64_t zero_shape[2] = {4, 0};
        EXPECT_ARRAY(a, "null_empty", PSV_DTYPE_I32, "<i4", 4, zero_shape, 2, false, NULL, 0);
        EXPECT_ARRAY(a, "scalar", PSV_DTYPE_I32, "<i4", 4, NULL, 0, false, data, 4);
        EXPECT_ARRAY(a, "scalar2", PSV_DTYPE_I32, "<i4", 4, NULL, 0, false, data, 4);
        EXPECT_ARRAY(a, "ndim64", PSV_DTYPE_I32, "<i4", 4, dims65, 64, false, data, 4);
        CHECK_ST(PSV_ERR_NOT_FOUND, psv_archive_find(a, "huge", &(size_t){0}));
    }
    psv_free(a);
    psv_saver_free(s);
}

static void test_add_descr(void)
{
    const char n = native_order();
    const char other = n == '<' ? '>' : '<';
    char other_f8[8], native_f4[8], native_i4[8], native_u3[8], native_m8[16], rec[64];
    snprintf(other_f8, sizeof other_f8, "%cf8", other);
    snprintf(native_f4, sizeof native_f4, "%cf4", n);
    snprintf(native_i4, sizeof native_i4, "%ci4", n);
    snprintf(native_u3, sizeof native_u3, "%cU3", n);
    snprintf(native_m8, sizeof native_m8, "%cM8[ns]", n);
    snprintf(rec, sizeof rec, "[('a', '%ci4'), ('b', '%cf8', (2,))]", n, n);

    static unsigned char raw[4096];
    fill(raw, sizeof raw, 7);
    const int64_t s2[1] = {2}, s3[1] = {3}, s23[2] = {2, 3}, s0[1] = {0};

    psv_saver *s = psv_saver_new();

    /* bad descrs */
    const char *bad[] = {"", "abc", "<f3", "<i9", "<f8extra", "[('a', '<i4')",
                         "[('a', '<i4'), ('b',)]", "|O", "O", "<O", "[('a', '|O')]",
                         "[('a', '<i4'), ('b', [('c', '|O')])]"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        psv_status st = psv_saver_add_descr(s, "bad", raw, 8, bad[k], NULL, 0, false);
        CHECK_MSG(st == PSV_ERR_BAD_DTYPE, "add_descr(\"%s\") = %s, expected PSV_ERR_BAD_DTYPE",
                  bad[k], psv_status_str(st));
        CHECK_MSG(psv_last_error_message(NULL, 0) > 0, "no message after add_descr(\"%s\")",
                  bad[k]);
    }

    /* nbytes must equal prod(shape) * itemsize */
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add_descr(s, "nb", raw, 23, "<f8", s3, 1, false));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add_descr(s, "nb", raw, 25, "<f8", s3, 1, false));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add_descr(s, "nb", raw, 0, "<f8", s3, 1, false));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add_descr(s, "nb", raw, 8, "|S5", s2, 1, false));

    /* shapes, keys and NULL data through add_descr */
    int64_t dims65[65];
    for (size_t d = 0; d < 65; d++) {
        dims65[d] = 1;
    }
    const int64_t neg[1] = {-1}, huge[2] = {INT64_MAX, 2};
    CHECK_ST(PSV_ERR_OVERFLOW, psv_saver_add_descr(s, "o", raw, 4, "<i4", dims65, 65, false));
    CHECK_ST(PSV_ERR_OVERFLOW, psv_saver_add_descr(s, "o", raw, 4, "<i4", neg, 1, false));
    CHECK_ST(PSV_ERR_OVERFLOW, psv_saver_add_descr(s, "o", raw, 4, "<i4", huge, 2, false));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_add_descr(s, "", raw, 4, "<i4", NULL, 0, false));
    CHECK_ST(PSV_ERR_INVALID_ARG,
             psv_saver_add_descr(s, "\xff\xfe", raw, 4, "<i4", NULL, 0, false));
    CHECK_EQ_U(psv_saver_count(s), 0);

    /* successes */
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "s5", "helloworld", 10, "|S5", s2, 1, false));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "u3", raw, 24, native_u3, s2, 1, false));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "rec", raw, 40, rec, s2, 1, false));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "swapped", raw, 16, other_f8, s2, 1, false));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "f4", raw, 12, native_f4, s3, 1, false));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "b1", "\0\1\1", 3, "|b1", s3, 1, false));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "dt", raw, 16, native_m8, s2, 1, false));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "fortran", raw, 24, native_i4, s23, 2, true));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "empty", NULL, 0, "|S5", s0, 1, false));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "scalar", raw, 20, rec, NULL, 0, false));
    /* fortran_order is ignored for ndim < 2, as numpy does */
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "f1d", raw, 12, native_i4, s3, 1, true));
    CHECK_ST(PSV_OK, psv_saver_add_descr(s, "f0d", raw, 4, native_i4, NULL, 0, true));
    CHECK_EQ_U(psv_saver_count(s), 12);
    CHECK_ST(PSV_OK, psv_saver_save(s, P("descr.npz"), NULL));

    psv_archive *a = RESTORE_OK(P("descr.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), 12);
        CHECK_INVARIANTS(a);
        EXPECT_ARRAY(a, "s5", PSV_DTYPE_OTHER, "|S5", 5, s2, 1, false, "helloworld", 10);
        EXPECT_ARRAY(a, "u3", PSV_DTYPE_OTHER, native_u3, 12, s2, 1, false, raw, 24);
        EXPECT_ARRAY(a, "rec", PSV_DTYPE_OTHER, rec, 20, s2, 1, false, raw, 40);
        EXPECT_ARRAY(a, "swapped", PSV_DTYPE_OTHER, other_f8, 8, s2, 1, false, raw, 16);
        EXPECT_ARRAY(a, "f4", PSV_DTYPE_F32, native_f4, 4, s3, 1, false, raw, 12);
        EXPECT_ARRAY(a, "b1", PSV_DTYPE_BOOL, "|b1", 1, s3, 1, false, "\0\1\1", 3);
        EXPECT_ARRAY(a, "dt", PSV_DTYPE_OTHER, native_m8, 8, s2, 1, false, raw, 16);
        EXPECT_ARRAY(a, "fortran", PSV_DTYPE_I32, native_i4, 4, s23, 2, true, raw, 24);
        EXPECT_ARRAY(a, "empty", PSV_DTYPE_OTHER, "|S5", 5, s0, 1, false, NULL, 0);
        EXPECT_ARRAY(a, "scalar", PSV_DTYPE_OTHER, rec, 20, NULL, 0, false, raw, 20);
        EXPECT_ARRAY(a, "f1d", PSV_DTYPE_I32, native_i4, 4, s3, 1, false, raw, 12);
        EXPECT_ARRAY(a, "f0d", PSV_DTYPE_I32, native_i4, 4, NULL, 0, false, raw, 4);
    }
    psv_free(a);
    psv_saver_free(s);
}

static void test_roundtrip_all_dtypes(void)
{
    const int64_t shape[2] = {3, 5};
    const int64_t empty_shape[2] = {0, 4};
    unsigned char *bufs[N_DTYPES];
    unsigned char *scalars[N_DTYPES];
    char key[64], descr[16];

    psv_saver *s = psv_saver_new();
    for (size_t k = 0; k < N_DTYPES; k++) {
        const struct dtype_info *d = &DTYPES[k];
        bufs[k] = xmalloc(15 * d->itemsize);
        scalars[k] = xmalloc(d->itemsize);
        fill(bufs[k], 15 * d->itemsize, 100 + k);
        fill(scalars[k], d->itemsize, 200 + k);
        if (d->code == PSV_DTYPE_BOOL) { /* numpy bools are 0 or 1 */
            for (size_t i = 0; i < 15; i++) {
                bufs[k][i] &= 1;
            }
            scalars[k][0] = 1;
        }
        snprintf(key, sizeof key, "%s", d->kind);
        CHECK_ST(PSV_OK, psv_saver_add(s, key, bufs[k], d->code, shape, 2));
        snprintf(key, sizeof key, "scalar_%s", d->kind);
        CHECK_ST(PSV_OK, psv_saver_add(s, key, scalars[k], d->code, NULL, 0));
        snprintf(key, sizeof key, "empty_%s", d->kind);
        CHECK_ST(PSV_OK, psv_saver_add(s, key, NULL, d->code, empty_shape, 2));
    }
    CHECK_EQ_U(psv_saver_count(s), 3 * N_DTYPES);
    CHECK_ST(PSV_OK, psv_saver_save(s, P("dtypes.npz"), NULL));

    psv_archive *a = RESTORE_OK(P("dtypes.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), 3 * N_DTYPES);
        CHECK_EQ_U(psv_archive_skipped_count(a), 0);
        CHECK_INVARIANTS(a);
        for (size_t k = 0; k < N_DTYPES; k++) {
            const struct dtype_info *d = &DTYPES[k];
            native_descr(d, descr, sizeof descr);
            snprintf(key, sizeof key, "%s", d->kind);
            EXPECT_ARRAY(a, key, d->code, descr, d->itemsize, shape, 2, false, bufs[k],
                         15 * d->itemsize);
            snprintf(key, sizeof key, "scalar_%s", d->kind);
            EXPECT_ARRAY(a, key, d->code, descr, d->itemsize, NULL, 0, false, scalars[k],
                         d->itemsize);
            snprintf(key, sizeof key, "empty_%s", d->kind);
            EXPECT_ARRAY(a, key, d->code, descr, d->itemsize, empty_shape, 2, false, NULL, 0);
        }
        /* keys come back in the order they were added */
        for (size_t k = 0; k < N_DTYPES; k++) {
            CHECK_STR(psv_archive_key(a, 3 * k), DTYPES[k].kind);
        }
    }
    psv_free(a);
    psv_saver_free(s);
    for (size_t k = 0; k < N_DTYPES; k++) {
        free(bufs[k]);
        free(scalars[k]);
    }
}

static void test_special_keys(void)
{
    int32_t v[4] = {1, 2, 3, 4};
    const int64_t shape[1] = {4};
    const char *keys[] = {"group/sub/x", "a.npy", "b.npz", "with space", "\xd0\xba\xd0\xbb",
                          "trailing.", "x.npy.npy"};
    const size_t nkeys = sizeof keys / sizeof keys[0];
    char long_key[1001];
    memset(long_key, 'L', 1000);
    long_key[1000] = '\0';

    psv_saver *s = psv_saver_new();
    for (size_t k = 0; k < nkeys; k++) {
        CHECK_ST(PSV_OK, psv_saver_add(s, keys[k], v, PSV_DTYPE_I32, shape, 1));
    }
    CHECK_ST(PSV_OK, psv_saver_add(s, long_key, v, PSV_DTYPE_I32, shape, 1));
    CHECK_ST(PSV_OK, psv_saver_save(s, P("keys.npz"), NULL));
    psv_archive *a = RESTORE_OK(P("keys.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), nkeys + 1);
        CHECK_INVARIANTS(a);
        for (size_t k = 0; k < nkeys; k++) {
            EXPECT_ARRAY(a, keys[k], PSV_DTYPE_I32, "<i4", 4, shape, 1, false, v, sizeof v);
            CHECK_STR(psv_archive_key(a, k), keys[k]);
        }
        EXPECT_ARRAY(a, long_key, PSV_DTYPE_I32, "<i4", 4, shape, 1, false, v, sizeof v);
        size_t idx = 99;
        CHECK_ST(PSV_ERR_NOT_FOUND, psv_archive_find(a, "x.npy", &idx)); /* one suffix only */
        CHECK_ST(PSV_ERR_NOT_FOUND, psv_archive_find(a, "a.npy.npy", &idx));
        CHECK_ST(PSV_ERR_NOT_FOUND, psv_archive_find(a, "", &idx));
        CHECK_EQ_U(idx, 99);
    }
    psv_free(a);
    psv_saver_free(s);
}

static void test_many_arrays(void)
{
    enum { N = 3000 };
    int32_t *values = xmalloc(N * 4 * sizeof *values);
    int64_t *shapes = xmalloc(N * sizeof *shapes);
    char key[32];

    psv_saver *s = psv_saver_new();
    for (size_t i = 0; i < N; i++) {
        shapes[i] = (int64_t)(i % 4) + 1;
        for (size_t j = 0; j < 4; j++) {
            values[i * 4 + j] = (int32_t)(i * 100 + j);
        }
        snprintf(key, sizeof key, "arr_%04zu", i);
        CHECK_ST(PSV_OK, psv_saver_add(s, key, &values[i * 4], PSV_DTYPE_I32, &shapes[i], 1));
    }
    CHECK_EQ_U(psv_saver_count(s), N);
    CHECK_ST(PSV_OK, psv_saver_save(s, P("many.npz"), NULL));

    psv_archive *a = RESTORE_OK(P("many.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), N);
        CHECK_INVARIANTS(a);
        unsigned long before = g_failures;
        for (size_t i = 0; i < N && g_failures == before; i++) {
            snprintf(key, sizeof key, "arr_%04zu", i);
            CHECK_STR(psv_archive_key(a, i), key);
            EXPECT_ARRAY(a, key, PSV_DTYPE_I32, "<i4", 4, &shapes[i], 1, false, &values[i * 4],
                         (size_t)shapes[i] * 4);
        }
    }
    psv_free(a);
    psv_saver_free(s);
    free(values);
    free(shapes);
}

/* psv_save_options_set_compression: levels, errors, and deflated round trips (arrays larger
 * than the 1 MiB compression block, compressible and incompressible, 0-d and empty). */
static void test_compression(void)
{
    CHECK_ST(PSV_ERR_NULL_ARG, psv_save_options_set_compression(NULL, 6));
    psv_save_options *so = psv_save_options_new();
    const int bad_levels[] = {-1, 10, 100, INT32_MIN, INT32_MAX};
    for (size_t k = 0; k < sizeof bad_levels / sizeof bad_levels[0]; k++) {
        CHECK_ST(PSV_ERR_INVALID_ARG, psv_save_options_set_compression(so, bad_levels[k]));
    }

    const size_t n = (size_t)3 * 1024 * 1024 + 17;
    unsigned char *noise = xmalloc(n);
    int32_t *ramp = xmalloc(n / 4 * sizeof *ramp);
    fill(noise, n, 3);
    for (size_t i = 0; i < n / 4; i++) {
        ramp[i] = (int32_t)(i / 3);
    }
    const int64_t s_noise[1] = {(int64_t)n}, s_ramp[2] = {(int64_t)(n / 4), 1},
                  s_empty[1] = {0};
    const double pi = 3.14159;
    psv_saver *s = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_add(s, "noise", noise, PSV_DTYPE_U8, s_noise, 1));
    CHECK_ST(PSV_OK, psv_saver_add(s, "ramp", ramp, PSV_DTYPE_I32, s_ramp, 2));
    CHECK_ST(PSV_OK, psv_saver_add(s, "pi", &pi, PSV_DTYPE_F64, NULL, 0));
    CHECK_ST(PSV_OK, psv_saver_add(s, "empty", NULL, PSV_DTYPE_F32, s_empty, 1));

    const int levels[] = {0, 1, 6, 9};
    size_t stored_size = 0;
    for (size_t k = 0; k < sizeof levels / sizeof levels[0]; k++) {
        for (size_t threads = 1; threads <= 2; threads++) {
            CHECK_ST(PSV_OK, psv_save_options_set_compression(so, levels[k]));
            CHECK_ST(PSV_OK, psv_save_options_set_threads(so, threads));
            const char *path = P("deflate_l%d_t%zu.npz", levels[k], threads);
            CHECK_ST(PSV_OK, psv_saver_save(s, path, so));
            size_t size = 0;
            free(read_file(path, &size));
            if (levels[k] == 0) {
                stored_size = size;
            } else {
                CHECK_MSG(size < stored_size - n / 8,
                          "level %d: %zu bytes, not smaller than stored (%zu)", levels[k], size,
                          stored_size);
            }
            psv_restore_options *ro = psv_restore_options_new();
            CHECK_ST(PSV_OK, psv_restore_options_set_threads(ro, 3 - threads));
            psv_archive *a = RESTORE_OK(path, ro);
            if (a != NULL) {
                CHECK_EQ_U(psv_archive_count(a), 4);
                CHECK_INVARIANTS(a);
                EXPECT_ARRAY(a, "noise", PSV_DTYPE_U8, "|u1", 1, s_noise, 1, false, noise, n);
                EXPECT_ARRAY(a, "ramp", PSV_DTYPE_I32, "<i4", 4, s_ramp, 2, false, ramp,
                             n / 4 * 4);
                EXPECT_ARRAY(a, "pi", PSV_DTYPE_F64, "<f8", 8, NULL, 0, false, &pi, 8);
                EXPECT_ARRAY(a, "empty", PSV_DTYPE_F32, "<f4", 4, s_empty, 1, false, NULL, 0);
            }
            psv_free(a);
            psv_restore_options_free(ro);
        }
    }
    psv_saver_free(s);
    psv_save_options_free(so);
    free(noise);
    free(ramp);
}

/* More than 65535 members: the archive needs the ZIP64 end records. */
static void test_zip64_member_count(void)
{
    enum { N = 70000 };
    uint8_t *values = xmalloc(N);
    char key[32];
    for (size_t i = 0; i < N; i++) {
        values[i] = (uint8_t)(i * 7);
    }
    psv_saver *s = psv_saver_new();
    unsigned long before = g_failures;
    for (size_t i = 0; i < N && g_failures == before; i++) {
        snprintf(key, sizeof key, "%zu", i);
        CHECK_ST(PSV_OK, psv_saver_add(s, key, &values[i], PSV_DTYPE_U8, NULL, 0));
    }
    CHECK_ST(PSV_OK, psv_saver_save(s, P("zip64_count.npz"), NULL));
    psv_archive *a = RESTORE_OK(P("zip64_count.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), N);
        before = g_failures;
        for (size_t i = 0; i < N && g_failures == before; i += 997) {
            snprintf(key, sizeof key, "%zu", i);
            EXPECT_ARRAY(a, key, PSV_DTYPE_U8, "|u1", 1, NULL, 0, false, &values[i], 1);
            CHECK_STR(psv_archive_key(a, i), key);
        }
        const uint8_t *last = psv_archive_data(a, N - 1);
        CHECK(last != NULL && *last == values[N - 1]);
    }
    psv_free(a);
    psv_saver_free(s);
    free(values);
}

/* One array larger than the 4 MiB chunk size, saved and restored with `threads` threads. */
static void test_large_array(size_t threads)
{
    const size_t nbytes = (size_t)40 * 1024 * 1024;
    const int64_t shape[2] = {(int64_t)(nbytes / 4 / 1024), 1024};
    unsigned char *data = xmalloc(nbytes + 12);
    fill(data, nbytes + 12, 42 + threads);
    const int64_t tail_shape[1] = {3}; /* an odd-sized neighbour after the big one */

    psv_saver *s = psv_saver_new();
    psv_save_options *so = psv_save_options_new();
    psv_restore_options *ro = psv_restore_options_new();
    CHECK(so != NULL && ro != NULL);
    CHECK_ST(PSV_OK, psv_save_options_set_threads(so, threads));
    CHECK_ST(PSV_OK, psv_save_options_set_fsync(so, threads == 1));
    CHECK_ST(PSV_OK, psv_restore_options_set_threads(ro, threads));
    CHECK_ST(PSV_OK, psv_restore_options_set_verify_crc(ro, true));
    CHECK_ST(PSV_OK, psv_saver_add(s, "big", data, PSV_DTYPE_F32, shape, 2));
    CHECK_ST(PSV_OK, psv_saver_add(s, "tail", data + nbytes, PSV_DTYPE_I32, tail_shape, 1));
    CHECK_ST(PSV_OK, psv_saver_save(s, P("large_t%zu.npz", threads), so));

    psv_archive *a = RESTORE_OK(P("large_t%zu.npz", threads), ro);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), 2);
        CHECK_INVARIANTS(a);
        EXPECT_ARRAY(a, "big", PSV_DTYPE_F32, "<f4", 4, shape, 2, false, data, nbytes);
        EXPECT_ARRAY(a, "tail", PSV_DTYPE_I32, "<i4", 4, tail_shape, 1, false, data + nbytes,
                     12);
        size_t len = 0;
        CHECK(psv_archive_block(a, &len) != NULL);
        CHECK(len >= nbytes + 12);
    }
    psv_free(a);
    psv_restore_options_free(ro);
    psv_save_options_free(so);
    psv_saver_free(s);
    free(data);
}

static void test_save_paths(void)
{
    int64_t v[3] = {7, 8, 9};
    const int64_t shape[1] = {3};
    char listing[4096];
    char dir[PATH_LEN];
    snprintf(dir, sizeof dir, "%s", P("paths")); /* P's buffers get reused */
    tf_reset_dir(dir);

    psv_saver *s = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_add(s, "v", v, PSV_DTYPE_I64, shape, 1));

    /* ".npz" is appended */
    CHECK_ST(PSV_OK, psv_saver_save(s, P("paths/x"), NULL));
    CHECK(file_exists(P("paths/x.npz")));
    CHECK(!file_exists(P("paths/x")));
    psv_archive *a = RESTORE_OK(P("paths/x"), NULL); /* and on restore too */
    if (a != NULL) {
        EXPECT_ARRAY(a, "v", PSV_DTYPE_I64, "<i8", 8, shape, 1, false, v, sizeof v);
    }
    psv_free(a);
    a = RESTORE_OK(P("paths/x.npz"), NULL);
    psv_free(a);

    /* the saver stays usable: save again, add more, save again */
    CHECK_ST(PSV_OK, psv_saver_save(s, P("paths/y.npz"), NULL));
    int64_t w[2] = {-1, -2};
    const int64_t wshape[1] = {2};
    CHECK_ST(PSV_OK, psv_saver_add(s, "w", w, PSV_DTYPE_I64, wshape, 1));
    CHECK_EQ_U(psv_saver_count(s), 2);
    CHECK_ST(PSV_OK, psv_saver_save(s, P("paths/z.npz"), NULL));
    a = RESTORE_OK(P("paths/y.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), 1);
    }
    psv_free(a);
    a = RESTORE_OK(P("paths/z.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), 2);
        EXPECT_ARRAY(a, "v", PSV_DTYPE_I64, "<i8", 8, shape, 1, false, v, sizeof v);
        EXPECT_ARRAY(a, "w", PSV_DTYPE_I64, "<i8", 8, wshape, 1, false, w, sizeof w);
    }
    psv_free(a);

    /* saving over an existing file (here: junk) replaces it atomically */
    write_file(P("paths/y.npz"), "this is not a zip file", 22);
    CHECK_ST(PSV_OK, psv_saver_save(s, P("paths/y.npz"), NULL));
    a = RESTORE_OK(P("paths/y.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), 2);
    }
    psv_free(a);
    list_dir(dir, listing, sizeof listing);
    CHECK_MSG(strcmp(listing, "x.npz y.npz z.npz") == 0, "left in %s: %s", dir, listing);

    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_save(s, "", NULL));

    /* saving into a missing directory: IO, names the path, creates nothing */
    CHECK_ST(PSV_ERR_IO, psv_saver_save(s, P("paths/no_such_dir/out.npz"), NULL));
    CHECK_MSG(strstr(last_error(), "no_such_dir") != NULL, "message does not name the path: %s",
              last_error());
    CHECK(!file_exists(P("paths/no_such_dir")));

    /* the target is a directory: the rename fails, and the temp file is removed */
    CHECK(mkdir(P("paths/isdir.npz"), 0777) == 0);
    CHECK_ST(PSV_ERR_IO, psv_saver_save(s, P("paths/isdir.npz"), NULL));
    CHECK_MSG(strstr(last_error(), "isdir") != NULL, "message does not name the path: %s",
              last_error());
    rmdir(P("paths/isdir.npz"));
    list_dir(dir, listing, sizeof listing);
    CHECK_MSG(strcmp(listing, "x.npz y.npz z.npz") == 0, "left in %s: %s", dir, listing);

    /* an empty saver writes a valid empty archive */
    psv_saver *empty = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_save(empty, P("paths/empty.npz"), NULL));
    a = RESTORE_OK(P("paths/empty.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), 0);
        CHECK_EQ_U(psv_archive_skipped_count(a), 0);
        CHECK(psv_archive_key(a, 0) == NULL);
    }
    psv_free(a);
    psv_saver_free(empty);
    psv_saver_free(s);
}

/* A save that fails half-way (RLIMIT_FSIZE makes a write fail with EFBIG): IO, the existing
 * file is left untouched and no temporary file is left behind. */
static void test_failed_save_is_atomic(void)
{
    char dir[PATH_LEN], target[PATH_LEN], listing[4096];
    snprintf(dir, sizeof dir, "%s", P("atomic"));
    snprintf(target, sizeof target, "%s", P("atomic/t.npz"));
    tf_reset_dir(dir);
    const size_t n = (size_t)4 << 20;
    unsigned char *data = xmalloc(n);
    fill(data, n, 11);
    const int64_t shape[1] = {(int64_t)n};
    const char old[] = "old contents";
    write_file(target, old, sizeof old - 1);

    psv_saver *s = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_add(s, "big", data, PSV_DTYPE_U8, shape, 1));
    struct rlimit saved, small;
    CHECK(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    small = saved;
    small.rlim_cur = (rlim_t)1 << 20;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
    psv_status st = psv_saver_save(s, target, NULL);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, old_handler);
    CHECK_ST(PSV_ERR_IO, st);

    size_t len = 0;
    unsigned char *now = read_file(target, &len);
    CHECK_MSG(len == sizeof old - 1 && memcmp(now, old, len) == 0,
              "the existing file was changed by a failed save");
    free(now);
    list_dir(dir, listing, sizeof listing);
    CHECK_MSG(strcmp(listing, "t.npz") == 0, "left in %s: %s", dir, listing);

    /* and with the limit lifted the same saver succeeds */
    CHECK_ST(PSV_OK, psv_saver_save(s, target, NULL));
    psv_archive *a = RESTORE_OK(target, NULL);
    if (a != NULL) {
        EXPECT_ARRAY(a, "big", PSV_DTYPE_U8, "|u1", 1, shape, 1, false, data, n);
    }
    psv_free(a);
    psv_saver_free(s);
    free(data);
}

/* Offset of `needle` in `hay`, or (size_t)-1. */
static size_t find_bytes(const unsigned char *hay, size_t n, const unsigned char *needle,
                         size_t m)
{
    for (size_t i = 0; i + m <= n; i++) {
        if (memcmp(hay + i, needle, m) == 0) {
            return i;
        }
    }
    return (size_t)-1;
}

static void test_restore_errors(void)
{
    /* a missing file: IO, *out = NULL, the message names the path */
    RESTORE_FAILS(PSV_ERR_IO, P("missing.npz"), NULL);
    CHECK_MSG(strstr(last_error(), "missing") != NULL, "message does not name the path: %s",
              last_error());
    RESTORE_FAILS(PSV_ERR_IO, P("missing_without_suffix"), NULL);

    /* a directory that is not a psv directory archive (no psv-index.txt): not an archive */
    mkdir(P("a_directory.npz"), 0777);
    RESTORE_FAILS(PSV_ERR_FORMAT, P("a_directory.npz"), NULL);
    CHECK_MSG(strstr(last_error(), "psv-index.txt") != NULL, "message does not say why: %s",
              last_error());

    /* not a zip */
    const char text[] = "Hello, this is plain text and not a zip archive at all.\n";
    write_file(P("text.npz"), text, sizeof text - 1);
    RESTORE_FAILS(PSV_ERR_FORMAT, P("text.npz"), NULL);
    write_file(P("empty_file.npz"), "", 0);
    RESTORE_FAILS(PSV_ERR_FORMAT, P("empty_file.npz"), NULL);

    /* a good file, then truncated or with a hole */
    const size_t n = 65536;
    unsigned char *data = xmalloc(n);
    fill(data, n, 5);
    const int64_t shape[1] = {(int64_t)n};
    const int64_t shape2[1] = {16};
    psv_saver *s = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_add(s, "payload", data, PSV_DTYPE_U8, shape, 1));
    CHECK_ST(PSV_OK, psv_saver_add(s, "second", data, PSV_DTYPE_U8, shape2, 1));
    CHECK_ST(PSV_OK, psv_saver_save(s, P("good.npz"), NULL));
    size_t size = 0;
    unsigned char *file = read_file(P("good.npz"), &size);
    CHECK(size > n);

    const size_t cuts[] = {1, 4, 21, 30, 100, size / 3, size / 2, size - 200, size - 100,
                           size - 22, size - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        write_file(P("truncated.npz"), file, cuts[k]);
        psv_archive *out = (psv_archive *)&g_dir;
        psv_status st = psv_restore(P("truncated.npz"), NULL, &out);
        CHECK_MSG(st == PSV_ERR_FORMAT, "truncated at %zu of %zu: %s (%s), expected FORMAT",
                  cuts[k], size, psv_status_str(st), last_error());
        CHECK(out == NULL);
        if (st == PSV_OK) {
            psv_free(out);
        }
    }
    /* the directory intact, data missing from the middle */
    const size_t keep_tail = 1024;
    unsigned char *holed = xmalloc(size);
    memcpy(holed, file, size / 4);
    memcpy(holed + size / 4, file + size - keep_tail, keep_tail);
    write_file(P("holed.npz"), holed, size / 4 + keep_tail);
    RESTORE_FAILS(PSV_ERR_FORMAT, P("holed.npz"), NULL);
    free(holed);

    /* one flipped data byte: CRC error; with verify_crc off it restores, flipped */
    size_t at = find_bytes(file, size, data, 64);
    CHECK(at != (size_t)-1);
    if (at != (size_t)-1) {
        file[at + 1000] ^= 0x5a;
        write_file(P("flipped.npz"), file, size);
        RESTORE_FAILS(PSV_ERR_CRC, P("flipped.npz"), NULL);
        CHECK_MSG(strstr(last_error(), "payload") != NULL, "CRC message does not name the key: %s",
                  last_error());

        psv_restore_options *ro = psv_restore_options_new();
        CHECK_ST(PSV_OK, psv_restore_options_set_verify_crc(ro, false));
        for (size_t threads = 1; threads <= 2; threads++) {
            CHECK_ST(PSV_OK, psv_restore_options_set_threads(ro, threads));
            psv_archive *a = RESTORE_OK(P("flipped.npz"), ro);
            if (a != NULL) {
                data[1000] ^= 0x5a;
                EXPECT_ARRAY(a, "payload", PSV_DTYPE_U8, "|u1", 1, shape, 1, false, data, n);
                data[1000] ^= 0x5a;
                EXPECT_ARRAY(a, "second", PSV_DTYPE_U8, "|u1", 1, shape2, 1, false, data, 16);
            }
            psv_free(a);
        }
        CHECK_ST(PSV_OK, psv_restore_options_set_verify_crc(ro, true));
        RESTORE_FAILS(PSV_ERR_CRC, P("flipped.npz"), ro);
        psv_restore_options_free(ro);
    }
    free(file);
    psv_saver_free(s);
    free(data);
}

static void test_limits(void)
{
    int32_t v[256];
    fill(v, sizeof v, 9);
    const int64_t shape[1] = {256};
    psv_saver *s = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_add(s, "a", v, PSV_DTYPE_I32, shape, 1));
    CHECK_ST(PSV_OK, psv_saver_add(s, "b", v, PSV_DTYPE_I32, shape, 1));
    CHECK_ST(PSV_OK, psv_saver_save(s, P("limits.npz"), NULL));

    psv_restore_options *ro = psv_restore_options_new();
    CHECK(ro != NULL);
    CHECK_ST(PSV_OK, psv_restore_options_set_limits(ro, 0, 0, 0)); /* defaults */
    psv_archive *a = RESTORE_OK(P("limits.npz"), ro);
    psv_free(a);
    CHECK_ST(PSV_OK, psv_restore_options_set_limits(ro, 1 << 20, 100, 4096)); /* roomy */
    a = RESTORE_OK(P("limits.npz"), ro);
    psv_free(a);

    CHECK_ST(PSV_OK, psv_restore_options_set_limits(ro, 16, 0, 0));
    RESTORE_FAILS(PSV_ERR_LIMIT, P("limits.npz"), ro);
    CHECK_ST(PSV_OK, psv_restore_options_set_limits(ro, sizeof v, 0, 0)); /* one of two fits */
    RESTORE_FAILS(PSV_ERR_LIMIT, P("limits.npz"), ro);
    CHECK_ST(PSV_OK, psv_restore_options_set_limits(ro, 0, 1, 0));
    RESTORE_FAILS(PSV_ERR_LIMIT, P("limits.npz"), ro);
    CHECK_ST(PSV_OK, psv_restore_options_set_limits(ro, 0, 0, 16));
    RESTORE_FAILS(PSV_ERR_LIMIT, P("limits.npz"), ro);
    CHECK_ST(PSV_OK, psv_restore_options_set_limits(ro, 0, 0, 0)); /* back to defaults */
    a = RESTORE_OK(P("limits.npz"), ro);
    psv_free(a);

    psv_restore_options_free(ro);
    psv_saver_free(s);
}

static void test_accessors_out_of_range(void)
{
    double x = 2.5;
    psv_saver *s = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_add(s, "x", &x, PSV_DTYPE_F64, NULL, 0));
    CHECK_ST(PSV_OK, psv_saver_save(s, P("range.npz"), NULL));
    psv_archive *a = RESTORE_OK(P("range.npz"), NULL);
    if (a != NULL) {
        CHECK_EQ_U(psv_archive_count(a), 1);
        EXPECT_ARRAY(a, "x", PSV_DTYPE_F64, "<f8", 8, NULL, 0, false, &x, 8);
        CHECK(psv_archive_key(a, 0) != NULL);
        const size_t bad[] = {1, 2, 1000, SIZE_MAX};
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            size_t i = bad[k];
            CHECK(psv_archive_key(a, i) == NULL);
            CHECK(psv_archive_data(a, i) == NULL);
            CHECK_EQ_U(psv_archive_nbytes(a, i), 0);
            CHECK_EQ_I(psv_archive_dtype(a, i), PSV_DTYPE_INVALID);
            CHECK(psv_archive_descr(a, i) == NULL);
            CHECK_EQ_U(psv_archive_itemsize(a, i), 0);
            CHECK_EQ_U(psv_archive_ndim(a, i), 0);
            CHECK(psv_archive_shape(a, i) == NULL);
            CHECK(!psv_archive_fortran_order(a, i));
            CHECK(psv_archive_skipped_name(a, i) == NULL);
        }
        CHECK(psv_archive_skipped_name(a, 0) == NULL);
        size_t idx = 5;
        CHECK_ST(PSV_ERR_NOT_FOUND, psv_archive_find(a, "y", &idx));
        CHECK_EQ_U(idx, 5);
        CHECK_ST(PSV_ERR_NOT_FOUND, psv_archive_find(a, "X", &idx));
        CHECK_ST(PSV_ERR_NOT_FOUND, psv_archive_find(a, "x.npy", &idx));
        CHECK_ST(PSV_ERR_INVALID_ARG, psv_archive_find(a, "\xff\xfe", &idx)); /* not UTF-8 */
        CHECK_EQ_U(idx, 5);
        CHECK_ST(PSV_OK, psv_archive_find(a, "x", &idx));
        CHECK_EQ_U(idx, 0);
        size_t len = 0;
        const void *block = psv_archive_block(a, &len);
        CHECK(block != NULL && (uintptr_t)block % 64 == 0);
        /* psv.h: "Page-aligned" */
        CHECK((uintptr_t)block % (uintptr_t)sysconf(_SC_PAGESIZE) == 0);
        CHECK(len >= 8);
    }
    psv_free(a);
    psv_saver_free(s);
}

/* ======================================================================== */
/* Hand-made zip files: what numpy (or a hostile writer) produces            */
/* ======================================================================== */

struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void put(struct buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            exit(2);
        }
    }
    if (n > 0) {
        memcpy(b->p + b->len, data, n);
    }
    b->len += n;
}

static void put16(struct buf *b, uint32_t v)
{
    unsigned char x[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    put(b, x, 2);
}

static void put32(struct buf *b, uint32_t v)
{
    put16(b, v & 0xffff);
    put16(b, v >> 16);
}

static void put64(struct buf *b, uint64_t v)
{
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
        }
    }
    return ~c;
}

/* An .npy file: version `major`.0, the given header dict, then `len` data bytes. */
static void make_npy(struct buf *out, int major, const char *dict, const void *data, size_t len)
{
    const size_t prefix = major == 1 ? 10 : 12;
    size_t hlen = strlen(dict) + 1; /* + '\n' */
    while ((prefix + hlen) % 64 != 0) {
        hlen++;
    }
    put(out, "\x93NUMPY", 6);
    unsigned char ver[2] = {(unsigned char)major, 0};
    put(out, ver, 2);
    if (major == 1) {
        put16(out, (uint32_t)hlen);
    } else {
        put32(out, (uint32_t)hlen);
    }
    put(out, dict, strlen(dict));
    for (size_t i = strlen(dict) + 1; i < hlen; i++) {
        put(out, " ", 1);
    }
    put(out, "\n", 1);
    put(out, data, len);
}

/* Deflate made of stored blocks (valid deflate, no zlib needed). */
static void deflate_stored(struct buf *out, const unsigned char *p, size_t n, bool final)
{
    size_t off = 0;
    do {
        size_t chunk = n - off > 65535 ? 65535 : n - off;
        unsigned char hdr = (final && off + chunk == n) ? 1 : 0;
        put(out, &hdr, 1);
        put16(out, (uint32_t)chunk);
        put16(out, (uint32_t)(~chunk & 0xffff));
        put(out, p + off, chunk);
        off += chunk;
    } while (off < n);
}

struct member {
    const char *name;
    const char *local_name;  /* NULL: same as name */
    const unsigned char *raw; /* uncompressed content */
    size_t len;
    uint16_t method;     /* 0 stored, 8 deflate (encoded here), other: raw bytes as is */
    uint16_t flags;      /* general purpose bit flags */
    uint64_t fake_usize; /* non-zero: claim this uncompressed size through a ZIP64 extra */
    int32_t usize_delta; /* added to the declared uncompressed size (lies) */
    int32_t csize_delta; /* added to the declared compressed size (lies) */
};

/* Added to the entry counts in the end-of-central-directory record (a lie when non-zero). */
static uint16_t g_eocd_extra_entries;

static void write_zip(const char *path, const struct member *m, size_t count,
                      size_t leading_junk)
{
    struct buf z = {NULL, 0, 0};
    struct buf cd = {NULL, 0, 0};
    for (size_t k = 0; k < leading_junk; k++) {
        put(&z, "J", 1); /* shifts every member to an unaligned offset */
    }
    for (size_t i = 0; i < count; i++) {
        struct buf body = {NULL, 0, 0};
        if (m[i].method == 8) {
            deflate_stored(&body, m[i].raw, m[i].len, m[i].fake_usize == 0);
        } else {
            put(&body, m[i].raw, m[i].len);
        }
        const uint32_t crc = crc32_of(m[i].raw, m[i].len);
        const bool z64 = m[i].fake_usize != 0;
        const uint64_t usize =
            z64 ? m[i].fake_usize : m[i].len + (uint64_t)(int64_t)m[i].usize_delta;
        const uint64_t csize = body.len + (uint64_t)(int64_t)m[i].csize_delta;
        const char *lname = m[i].local_name ? m[i].local_name : m[i].name;
        const uint32_t offset = (uint32_t)z.len;

        put32(&z, 0x04034b50);
        put16(&z, z64 ? 45 : 20);
        put16(&z, m[i].flags);
        put16(&z, m[i].method);
        put16(&z, 0);      /* time */
        put16(&z, 0x21);   /* date: 1980-01-01 */
        put32(&z, crc);
        put32(&z, z64 ? 0xffffffffu : (uint32_t)csize);
        put32(&z, z64 ? 0xffffffffu : (uint32_t)usize);
        put16(&z, (uint32_t)strlen(lname));
        put16(&z, z64 ? 20 : 0);
        put(&z, lname, strlen(lname));
        if (z64) {
            put16(&z, 1);
            put16(&z, 16);
            put64(&z, usize);
            put64(&z, body.len);
        }
        put(&z, body.p, body.len);

        put32(&cd, 0x02014b50);
        put16(&cd, z64 ? 45 : 20);
        put16(&cd, z64 ? 45 : 20);
        put16(&cd, m[i].flags);
        put16(&cd, m[i].method);
        put16(&cd, 0);
        put16(&cd, 0x21);
        put32(&cd, crc);
        put32(&cd, z64 ? 0xffffffffu : (uint32_t)csize);
        put32(&cd, z64 ? 0xffffffffu : (uint32_t)usize);
        put16(&cd, (uint32_t)strlen(m[i].name));
        put16(&cd, z64 ? 20 : 0);
        put16(&cd, 0); /* comment */
        put16(&cd, 0); /* disk */
        put16(&cd, 0); /* internal attributes */
        put32(&cd, 0); /* external attributes */
        put32(&cd, offset);
        put(&cd, m[i].name, strlen(m[i].name));
        if (z64) {
            put16(&cd, 1);
            put16(&cd, 16);
            put64(&cd, usize);
            put64(&cd, body.len);
        }
        free(body.p);
    }
    const uint32_t cd_offset = (uint32_t)z.len;
    put(&z, cd.p, cd.len);
    put32(&z, 0x06054b50);
    put16(&z, 0);
    put16(&z, 0);
    put16(&z, (uint32_t)(count + g_eocd_extra_entries));
    put16(&z, (uint32_t)(count + g_eocd_extra_entries));
    put32(&z, (uint32_t)cd.len);
    put32(&z, cd_offset);
    put16(&z, 0);
    write_file(path, z.p, z.len);
    free(z.p);
    free(cd.p);
}

static void test_handmade_zips(void)
{
    const int32_t ints[3] = {10, -20, 30};
    const int64_t shape3[1] = {3};
    unsigned char big[100000];
    fill(big, sizeof big, 77);
    const int64_t shape_big[1] = {(int64_t)sizeof big};
    struct buf a_npy = {NULL, 0, 0}, big_npy = {NULL, 0, 0}, v2_npy = {NULL, 0, 0};
    make_npy(&a_npy, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", ints,
             sizeof ints);
    make_npy(&big_npy, 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (100000,), }", big,
             sizeof big);
    make_npy(&v2_npy, 2, "{'descr': '<i4', 'fortran_order': True, 'shape': (3, 1), }", ints,
             sizeof ints);
    const char readme[] = "not an array";
    const char no_magic[] = "NUMPY? no, just text";

    /* numpy-style: unaligned offsets, deflate, non-array members that get skipped */
    {
        const struct member m[] = {
            {"readme.txt", NULL, (const unsigned char *)readme, sizeof readme - 1, 0, 0, 0, 0,
             0},
            {"a.npy", NULL, a_npy.p, a_npy.len, 0, 0, 0, 0, 0},
            {"deflated.npy", NULL, big_npy.p, big_npy.len, 8, 0, 0, 0, 0},
            {"nomagic.npy", NULL, (const unsigned char *)no_magic, sizeof no_magic - 1, 0, 0, 0,
             0, 0},
            {"v2.npy", NULL, v2_npy.p, v2_npy.len, 8, 0, 0, 0, 0},
            {"dir/", NULL, (const unsigned char *)"", 0, 0, 0, 0, 0, 0},
        };
        write_zip(P("numpy_style.npz"), m, 6, 3);
        const size_t thread_counts[] = {1, 2, 8};
        for (size_t t = 0; t < 3; t++) {
            const size_t threads = thread_counts[t];
            psv_restore_options *ro = psv_restore_options_new();
            CHECK_ST(PSV_OK, psv_restore_options_set_threads(ro, threads));
            psv_archive *a = RESTORE_OK(P("numpy_style.npz"), ro);
            if (a != NULL) {
                CHECK_EQ_U(psv_archive_count(a), 3);
                CHECK_INVARIANTS(a);
                CHECK_STR(psv_archive_key(a, 0), "a");
                CHECK_STR(psv_archive_key(a, 1), "deflated");
                CHECK_STR(psv_archive_key(a, 2), "v2");
                EXPECT_ARRAY(a, "a", PSV_DTYPE_I32, "<i4", 4, shape3, 1, false, ints, 12);
                EXPECT_ARRAY(a, "deflated", PSV_DTYPE_U8, "|u1", 1, shape_big, 1, false, big,
                             sizeof big);
                const int64_t s31[2] = {3, 1};
                EXPECT_ARRAY(a, "v2", PSV_DTYPE_I32, "<i4", 4, s31, 2, true, ints, 12);
                /* the order of skipped names is not specified: compare as a set */
                CHECK_EQ_U(psv_archive_skipped_count(a), 3);
                const char *want_skipped[3] = {"readme.txt", "nomagic.npy", "dir/"};
                for (size_t w = 0; w < 3; w++) {
                    bool seen = false;
                    for (size_t k = 0; k < 3; k++) {
                        const char *name = psv_archive_skipped_name(a, k);
                        seen = seen || (name != NULL && strcmp(name, want_skipped[w]) == 0);
                    }
                    CHECK_MSG(seen, "skipped member %s not reported", want_skipped[w]);
                }
                CHECK(psv_archive_skipped_name(a, 3) == NULL);
            }
            psv_free(a);
            psv_restore_options_free(ro);
        }
    }

    /* object arrays (pickles) are unsupported */
    {
        struct buf obj = {NULL, 0, 0};
        make_npy(&obj, 1, "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
                 "\x80\x02]q\x00.", 6);
        const struct member m[] = {{"obj.npy", NULL, obj.p, obj.len, 0, 0, 0, 0, 0}};
        write_zip(P("object.npz"), m, 1, 0);
        RESTORE_FAILS(PSV_ERR_UNSUPPORTED, P("object.npz"), NULL);
        free(obj.p);
    }
    /* a method not read (93, Zstandard), a bzip2 claim on data that is not bzip2, and
       encryption */
    {
        const struct member zs[] = {{"a.npy", NULL, a_npy.p, a_npy.len, 93, 0, 0, 0, 0}};
        write_zip(P("zstd.npz"), zs, 1, 0);
        RESTORE_FAILS(PSV_ERR_UNSUPPORTED, P("zstd.npz"), NULL);
        const struct member bz[] = {{"a.npy", NULL, a_npy.p, a_npy.len, 12, 0, 0, 0, 0}};
        write_zip(P("bzip2.npz"), bz, 1, 0);
        RESTORE_FAILS(PSV_ERR_FORMAT, P("bzip2.npz"), NULL);
        const struct member enc[] = {{"a.npy", NULL, a_npy.p, a_npy.len, 0, 1, 0, 0, 0}};
        write_zip(P("encrypted.npz"), enc, 1, 0);
        RESTORE_FAILS(PSV_ERR_UNSUPPORTED, P("encrypted.npz"), NULL);
    }
    /* duplicate members, local/central name mismatch */
    {
        const struct member dup[] = {{"a.npy", NULL, a_npy.p, a_npy.len, 0, 0, 0, 0, 0},
                                     {"a.npy", NULL, a_npy.p, a_npy.len, 0, 0, 0, 0, 0}};
        write_zip(P("duplicate.npz"), dup, 2, 0);
        RESTORE_FAILS(PSV_ERR_FORMAT, P("duplicate.npz"), NULL);
        const struct member mism[] = {{"a.npy", "b.npy", a_npy.p, a_npy.len, 0, 0, 0, 0, 0}};
        write_zip(P("mismatch.npz"), mism, 1, 0);
        RESTORE_FAILS(PSV_ERR_FORMAT, P("mismatch.npz"), NULL);
    }
    /* bad .npy headers and sizes */
    {
        const char *bad_dicts[] = {
            "{'descr': '<i4', 'fortran_order': False}",                             /* no shape */
            "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), 'extra': 1, }", /* extra */
            "{'descr': '<i4', 'fortran_order': 0, 'shape': (3,), }",
            "{'descr': '<f3', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", /* data too short */
            "not a dict at all",
        };
        for (size_t k = 0; k < sizeof bad_dicts / sizeof bad_dicts[0]; k++) {
            struct buf npy = {NULL, 0, 0};
            make_npy(&npy, 1, bad_dicts[k], ints, sizeof ints);
            const struct member m[] = {{"a.npy", NULL, npy.p, npy.len, 0, 0, 0, 0, 0}};
            write_zip(P("badheader.npz"), m, 1, 0);
            psv_archive *out = (psv_archive *)&g_dir;
            psv_status st = psv_restore(P("badheader.npz"), NULL, &out);
            CHECK_MSG(st == PSV_ERR_FORMAT, "header %s: %s (%s), expected FORMAT", bad_dicts[k],
                      psv_status_str(st), last_error());
            CHECK(out == NULL);
            if (st == PSV_OK) {
                psv_free(out);
            }
            free(npy.p);
        }
        /* impossible shapes in a header: OVERFLOW, like the same shapes given to psv_saver_add */
        const char *overflow_dicts[] = {
            "{'descr': '<i4', 'fortran_order': False, 'shape': (-3,), }",
            "{'descr': '<i4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
            NULL, /* ndim 65, filled in below */
        };
        char dims65[512];
        snprintf(dims65, sizeof dims65, "{'descr': '<i4', 'fortran_order': False, 'shape': (");
        for (int d = 0; d < 65; d++) {
            strcat(dims65, d == 0 ? "3, " : "1, ");
        }
        strcat(dims65, "), }");
        overflow_dicts[2] = dims65;
        for (size_t k = 0; k < sizeof overflow_dicts / sizeof overflow_dicts[0]; k++) {
            struct buf npy = {NULL, 0, 0};
            make_npy(&npy, 1, overflow_dicts[k], ints, sizeof ints);
            const struct member m[] = {{"a.npy", NULL, npy.p, npy.len, 0, 0, 0, 0, 0}};
            write_zip(P("overflowheader.npz"), m, 1, 0);
            psv_archive *out = (psv_archive *)&g_dir;
            psv_status st = psv_restore(P("overflowheader.npz"), NULL, &out);
            CHECK_MSG(st == PSV_ERR_OVERFLOW, "header %s: %s (%s), expected OVERFLOW",
                      overflow_dicts[k], psv_status_str(st), last_error());
            CHECK(out == NULL);
            if (st == PSV_OK) {
                psv_free(out);
            }
            free(npy.p);
        }
        /* an .npy version this library does not know (numpy has 1.0-3.0) */
        struct buf v9 = {NULL, 0, 0};
        make_npy(&v9, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", ints, 12);
        v9.p[6] = 9; /* version 9.0 */
        const struct member m[] = {{"a.npy", NULL, v9.p, v9.len, 0, 0, 0, 0, 0}};
        write_zip(P("version9.npz"), m, 1, 0);
        RESTORE_FAILS(PSV_ERR_UNSUPPORTED, P("version9.npz"), NULL);
        free(v9.p);
        /* a member's CRC is checked for deflate too */
        struct buf copy = {NULL, 0, 0};
        put(&copy, big_npy.p, big_npy.len);
        const struct member d[] = {{"d.npy", NULL, copy.p, copy.len, 8, 0, 0, 0, 0}};
        write_zip(P("deflate_crc.npz"), d, 1, 0);
        size_t size = 0;
        unsigned char *file = read_file(P("deflate_crc.npz"), &size);
        size_t at = find_bytes(file, size, big, 64);
        CHECK(at != (size_t)-1);
        if (at != (size_t)-1) {
            file[at + 5] ^= 1;
            write_file(P("deflate_crc.npz"), file, size);
            RESTORE_FAILS(PSV_ERR_CRC, P("deflate_crc.npz"), NULL);
        }
        free(file);
        free(copy.p);
    }
    /* a claimed size far beyond any memory: never an abort, ideally NOMEM */
    {
        struct buf bomb = {NULL, 0, 0};
        make_npy(&bomb, 1,
                 "{'descr': '|u1', 'fortran_order': False, 'shape': (1152921504606846976,), }",
                 "", 0);
        const size_t header_len = bomb.len;
        const struct member m[] = {
            {"bomb.npy", NULL, bomb.p, bomb.len, 8, 0, header_len + ((uint64_t)1 << 60), 0,
             0}};
        write_zip(P("bomb.npz"), m, 1, 0);
        psv_restore_options *ro = psv_restore_options_new();
        RESTORE_FAILS(PSV_ERR_LIMIT, P("bomb.npz"), NULL); /* default: physical RAM */
        CHECK_ST(PSV_OK, psv_restore_options_set_limits(ro, UINT64_MAX, 0, 0));
        RESTORE_FAILS(PSV_ERR_NOMEM, P("bomb.npz"), ro);
        psv_restore_options_free(ro);
        free(bomb.p);
    }
    free(a_npy.p);
    free(big_npy.p);
    free(v2_npy.p);
}

/* Sizes that lie, trailing bytes, huge header lengths, odd member names. */
static void test_hostile_zips(void)
{
    const int32_t ints[3] = {10, -20, 30};
    const int64_t shape3[1] = {3};
    struct buf npy = {NULL, 0, 0};
    make_npy(&npy, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", ints,
             sizeof ints);

    /* numpy tolerates trailing bytes after the data in a member; so do we */
    {
        struct buf padded = {NULL, 0, 0};
        put(&padded, npy.p, npy.len);
        put(&padded, "trail", 5);
        const struct member st[] = {{"a.npy", NULL, padded.p, padded.len, 0, 0, 0, 0, 0}};
        write_zip(P("trailing.npz"), st, 1, 0);
        psv_archive *a = RESTORE_OK(P("trailing.npz"), NULL);
        if (a != NULL) {
            EXPECT_ARRAY(a, "a", PSV_DTYPE_I32, "<i4", 4, shape3, 1, false, ints, 12);
        }
        psv_free(a);
        const struct member df[] = {{"a.npy", NULL, padded.p, padded.len, 8, 0, 0, 0, 0}};
        write_zip(P("trailing_deflate.npz"), df, 1, 0);
        a = RESTORE_OK(P("trailing_deflate.npz"), NULL);
        if (a != NULL) {
            EXPECT_ARRAY(a, "a", PSV_DTYPE_I32, "<i4", 4, shape3, 1, false, ints, 12);
        }
        psv_free(a);
        free(padded.p);
    }
    /* a deflate stream that inflates to more than the declared size */
    {
        struct buf padded = {NULL, 0, 0};
        put(&padded, npy.p, npy.len);
        for (int k = 0; k < 100; k++) {
            put(&padded, "0123456789", 10);
        }
        const struct member m[] = {{"a.npy", NULL, padded.p, padded.len, 8, 0, 0, -900, 0}};
        write_zip(P("inflates_more.npz"), m, 1, 0);
        RESTORE_FAILS(PSV_ERR_FORMAT, P("inflates_more.npz"), NULL);
        free(padded.p);
    }
    /* declared sizes shorter than the array, or reaching past the end of the file */
    {
        const struct member shorter[] = {{"a.npy", NULL, npy.p, npy.len, 0, 0, 0, -4, -4}};
        write_zip(P("short_member.npz"), shorter, 1, 0);
        RESTORE_FAILS(PSV_ERR_FORMAT, P("short_member.npz"), NULL);
        const struct member past[] = {{"a.npy", NULL, npy.p, npy.len, 0, 0, 0, 100000, 100000}};
        write_zip(P("past_eof.npz"), past, 1, 0);
        RESTORE_FAILS(PSV_ERR_FORMAT, P("past_eof.npz"), NULL);
        const struct member dshort[] = {{"a.npy", NULL, npy.p, npy.len, 8, 0, 0, 0, -3}};
        write_zip(P("deflate_cut.npz"), dshort, 1, 0);
        RESTORE_FAILS(PSV_ERR_FORMAT, P("deflate_cut.npz"), NULL);
    }
    /* the end record claims more entries than the directory holds */
    {
        const struct member m[] = {{"a.npy", NULL, npy.p, npy.len, 0, 0, 0, 0, 0}};
        g_eocd_extra_entries = 5;
        write_zip(P("entry_count.npz"), m, 1, 0);
        g_eocd_extra_entries = 0;
        RESTORE_FAILS(PSV_ERR_FORMAT, P("entry_count.npz"), NULL);
    }
    /* a HEADER_LEN of 4 GiB - 1 in a v2.0 header: refused before allocating */
    {
        struct buf v2 = {NULL, 0, 0};
        make_npy(&v2, 2, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", ints, 12);
        v2.p[8] = v2.p[9] = v2.p[10] = v2.p[11] = 0xff;
        const struct member m[] = {{"a.npy", NULL, v2.p, v2.len, 0, 0, 0, 0, 0}};
        write_zip(P("huge_header_len.npz"), m, 1, 0);
        RESTORE_FAILS(PSV_ERR_LIMIT, P("huge_header_len.npz"), NULL);
        free(v2.p);
    }
    /* member names: ".npy" alone (key ""), and names that are not UTF-8 */
    {
        const struct member m[] = {{".npy", NULL, npy.p, npy.len, 0, 0, 0, 0, 0}};
        write_zip(P("empty_key.npz"), m, 1, 0);
        /* numpy gives the key '' here, and so do we (a saver refuses to write it) */
        psv_archive *a = RESTORE_OK(P("empty_key.npz"), NULL);
        if (a != NULL) {
            CHECK_EQ_U(psv_archive_count(a), 1);
            EXPECT_ARRAY(a, "", PSV_DTYPE_I32, "<i4", 4, shape3, 1, false, ints, 12);
        }
        psv_free(a);

        const struct member l1[] = {{"caf\xe9.npy", NULL, npy.p, npy.len, 0, 0, 0, 0, 0}};
        write_zip(P("latin1_name.npz"), l1, 1, 0);
        /* without the UTF-8 flag (bit 11) a zip name is CP437, as Python's zipfile (and so
         * numpy) decodes it: 0xE9 is U+0398 'Θ'. Keys handed out are always UTF-8. */
        a = RESTORE_OK(P("latin1_name.npz"), NULL);
        if (a != NULL) {
            CHECK_STR(psv_archive_key(a, 0), "caf\xce\x98");
        }
        psv_free(a);
        const struct member u8[] = {{"caf\xc3\xa9.npy", NULL, npy.p, npy.len, 0, 0x800, 0, 0, 0}};
        write_zip(P("utf8_name.npz"), u8, 1, 0);
        a = RESTORE_OK(P("utf8_name.npz"), NULL);
        if (a != NULL) {
            CHECK_STR(psv_archive_key(a, 0), "caf\xc3\xa9");
        }
        psv_free(a);
    }
    free(npy.p);
}

/* ======================================================================== */
/* Threads: the last error is per thread; archives are shareable read-only  */
/* ======================================================================== */

struct thread_result {
    const char *path; /* P() is not thread-safe: paths are made before the threads start */
    const char *save_path;
    psv_status save_status;
    size_t initial_len;
    psv_status status;
    size_t msg_len;
    char msg[4096];
    const psv_archive *archive;
    int mismatches;
};

static void *error_thread(void *arg)
{
    struct thread_result *r = arg;
    r->initial_len = psv_last_error_message(NULL, 0);
    psv_archive *a = NULL;
    r->status = psv_restore(r->path, NULL, &a);
    r->msg_len = psv_last_error_message(r->msg, sizeof r->msg);
    return NULL;
}

static void *reader_thread(void *arg)
{
    struct thread_result *r = arg;
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < psv_archive_count(r->archive); i++) {
            const int32_t *d = psv_archive_data(r->archive, i);
            size_t idx = 0;
            if (psv_archive_find(r->archive, psv_archive_key(r->archive, i), &idx) != PSV_OK ||
                idx != i || d == NULL || d[0] != (int32_t)i) {
                r->mismatches++;
            }
        }
    }
    psv_archive *own = NULL;
    r->status = psv_restore(r->path, NULL, &own);
    if (own == NULL || psv_archive_count(own) != psv_archive_count(r->archive)) {
        r->mismatches++;
    }
    psv_free(own);

    /* an independent save and restore, concurrently with the other threads */
    int32_t v[1000];
    const int64_t shape[1] = {1000};
    fill(v, sizeof v, (uint64_t)(uintptr_t)r);
    psv_saver *s = psv_saver_new();
    r->save_status = psv_saver_add(s, "v", v, PSV_DTYPE_I32, shape, 1);
    if (r->save_status == PSV_OK) {
        r->save_status = psv_saver_save(s, r->save_path, NULL);
    }
    own = NULL;
    if (psv_restore(r->save_path, NULL, &own) != PSV_OK || psv_archive_nbytes(own, 0) != sizeof v ||
        memcmp(psv_archive_data(own, 0), v, sizeof v) != 0) {
        r->mismatches++;
    }
    psv_free(own);
    psv_saver_free(s);
    return NULL;
}

static void test_threads(void)
{
    /* the main thread's error survives another thread's failure */
    psv_archive *a = NULL;
    CHECK_ST(PSV_ERR_IO, psv_restore(P("main_thread_missing.npz"), NULL, &a));
    char main_msg[4096];
    size_t main_len = psv_last_error_message(main_msg, sizeof main_msg);

    struct thread_result r;
    memset(&r, 0, sizeof r);
    r.path = P("from_thread_missing.npz");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, error_thread, &r) == 0);
    pthread_join(t, NULL);
    CHECK_EQ_U(r.initial_len, 0); /* a fresh thread has no error */
    CHECK_EQ_I(r.status, PSV_ERR_IO);
    CHECK(r.msg_len > 0 && strstr(r.msg, "from_thread_missing") != NULL);
    char after[4096];
    CHECK_EQ_U(psv_last_error_message(after, sizeof after), main_len);
    CHECK_STR(after, main_msg);

    /* concurrent const accessors and concurrent restores */
    int32_t values[8];
    const int64_t one[1] = {1};
    psv_saver *s = psv_saver_new();
    for (int i = 0; i < 8; i++) {
        char key[8];
        values[i] = i;
        snprintf(key, sizeof key, "k%d", i);
        CHECK_ST(PSV_OK, psv_saver_add(s, key, &values[i], PSV_DTYPE_I32, one, 1));
    }
    CHECK_ST(PSV_OK, psv_saver_save(s, P("threads.npz"), NULL));
    a = RESTORE_OK(P("threads.npz"), NULL);
    if (a != NULL) {
        struct thread_result rs[4];
        pthread_t ts[4];
        memset(rs, 0, sizeof rs);
        for (int k = 0; k < 4; k++) {
            rs[k].archive = a;
            rs[k].path = P("threads.npz");
            rs[k].save_path = P("thread_save_%d.npz", k);
            CHECK(pthread_create(&ts[k], NULL, reader_thread, &rs[k]) == 0);
        }
        for (int k = 0; k < 4; k++) {
            pthread_join(ts[k], NULL);
            CHECK_EQ_I(rs[k].status, PSV_OK);
            CHECK_EQ_I(rs[k].save_status, PSV_OK);
            CHECK_EQ_I(rs[k].mismatches, 0);
        }
    }
    psv_free(a);
    psv_saver_free(s);
}

/* ======================================================================== */
/* Save destinations: buffer, library buffer, fd (file and pipe), stream,   */
/* prepared ranges. Each gives exactly the bytes of the path save.          */
/* ======================================================================== */

struct sink {
    unsigned char *bytes;
    size_t len, cap;
    size_t fail_after; /* a write that would pass this many bytes returns 7 (0: never) */
};

static int sink_write(void *userdata, const void *buf, size_t len)
{
    struct sink *k = userdata;
    if (k->fail_after != 0 && k->len + len > k->fail_after) {
        return 7;
    }
    if (k->len + len > k->cap) {
        size_t cap = (k->len + len) * 2;
        unsigned char *grown = realloc(k->bytes, cap);
        if (grown == NULL) {
            return 1;
        }
        k->bytes = grown;
        k->cap = cap;
    }
    memcpy(k->bytes + k->len, buf, len);
    k->len += len;
    return 0;
}

struct pipe_reader {
    int fd;
    struct sink got;
};

static void *drain_pipe(void *arg)
{
    struct pipe_reader *r = arg;
    unsigned char chunk[65536];
    for (;;) {
        ssize_t n = read(r->fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        sink_write(&r->got, chunk, (size_t)n);
    }
    return NULL;
}

struct render_job {
    const psv_prepared *p;
    unsigned char *out;
    size_t from, to, part;
    psv_status st;
};

/* Renders [from, to) in parts of `part` bytes, last part first. */
static void *render_parts(void *arg)
{
    struct render_job *j = arg;
    j->st = PSV_OK;
    size_t nparts = (j->to - j->from + j->part - 1) / j->part;
    for (size_t k = nparts; k-- > 0;) {
        size_t at = j->from + k * j->part;
        size_t len = j->to - at < j->part ? j->to - at : j->part;
        psv_status st = psv_prepared_render(j->p, at, len, j->out + at);
        if (st != PSV_OK) {
            j->st = st;
        }
    }
    return NULL;
}

static void test_save_destinations(void)
{
    const size_t n = (size_t)3 * 1024 * 1024 + 17;
    unsigned char *noise = xmalloc(n);
    fill(noise, n, 11);
    const int64_t s_noise[1] = {(int64_t)n}, s_empty[1] = {0};
    const double pi = 3.14159;
    psv_saver *s = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_add(s, "noise", noise, PSV_DTYPE_U8, s_noise, 1));
    CHECK_ST(PSV_OK, psv_saver_add(s, "pi", &pi, PSV_DTYPE_F64, NULL, 0));
    CHECK_ST(PSV_OK, psv_saver_add(s, "empty", NULL, PSV_DTYPE_F32, s_empty, 1));
    psv_save_options *so = psv_save_options_new();

    /* NULL and bad arguments. */
    uint64_t size = 0;
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_size(NULL, NULL, &size));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_size(s, NULL, NULL));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_save_to_buffer(s, NULL, 10, NULL));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_save_to_alloc(s, NULL, NULL));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_save_fd(s, -1, NULL));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_save_stream(s, NULL, NULL, NULL));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_saver_prepare(s, NULL, NULL));
    CHECK(psv_buffer_data(NULL) == NULL);
    CHECK_EQ_U(psv_buffer_len(NULL), 0);
    CHECK_EQ_U(psv_prepared_size(NULL), 0);
    CHECK_ST(PSV_ERR_NULL_ARG, psv_prepared_render(NULL, 0, 0, NULL));
    psv_buffer_free(NULL);
    psv_prepared_free(NULL);

    const int levels[] = {0, 6};
    for (size_t k = 0; k < sizeof levels / sizeof levels[0]; k++) {
        CHECK_ST(PSV_OK, psv_save_options_set_compression(so, levels[k]));
        const char *path = P("dest_l%d.npz", levels[k]);
        CHECK_ST(PSV_OK, psv_saver_save(s, path, so));
        size_t want_len = 0;
        unsigned char *want = read_file(path, &want_len);

        /* Size and caller buffer: stored saves only. */
        if (levels[k] == 0) {
            CHECK_ST(PSV_OK, psv_saver_size(s, so, &size));
            CHECK_EQ_U(size, want_len);
            unsigned char *buf = xmalloc(want_len + 8);
            memset(buf, 0x5A, want_len + 8);
            CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_save_to_buffer(s, buf, want_len - 1, so));
            CHECK_MSG(strstr(last_error(), "needs") != NULL, "message: %s", last_error());
            CHECK_ST(PSV_OK, psv_saver_save_to_buffer(s, buf, want_len + 8, so));
            CHECK(memcmp(buf, want, want_len) == 0);
            CHECK(buf[want_len] == 0x5A && buf[want_len + 7] == 0x5A);
            free(buf);
        } else {
            CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_size(s, so, &size));
            unsigned char tiny[8];
            CHECK_ST(PSV_ERR_INVALID_ARG, psv_saver_save_to_buffer(s, tiny, sizeof tiny, so));
        }

        /* Library-allocated buffer. */
        psv_buffer *b = NULL;
        CHECK_ST(PSV_OK, psv_saver_save_to_alloc(s, so, &b));
        CHECK_EQ_U(psv_buffer_len(b), want_len);
        CHECK(psv_buffer_data(b) != NULL && memcmp(psv_buffer_data(b), want, want_len) == 0);
        psv_buffer_free(b);

        /* A regular file from its current offset; the offset ends after the archive. */
        const char *fpath = P("dest_fd_l%d.bin", levels[k]);
        write_file(fpath, "abc", 3);
        FILE *f = fopen(fpath, "r+b");
        CHECK(f != NULL);
        if (f != NULL) {
            int fd = fileno(f);
            CHECK(lseek(fd, 3, SEEK_SET) == 3);
            CHECK_ST(PSV_OK, psv_saver_save_fd(s, fd, so));
            CHECK_EQ_U((uint64_t)lseek(fd, 0, SEEK_CUR), 3 + want_len);
            fclose(f);
            size_t got_len = 0;
            unsigned char *got = read_file(fpath, &got_len);
            CHECK_EQ_U(got_len, 3 + want_len);
            CHECK(memcmp(got, "abc", 3) == 0 && memcmp(got + 3, want, want_len) == 0);
            free(got);
        }

        /* A pipe drained by another thread. */
        int fds[2];
        CHECK(pipe(fds) == 0);
        struct pipe_reader r = {fds[0], {NULL, 0, 0, 0}};
        pthread_t reader;
        CHECK(pthread_create(&reader, NULL, drain_pipe, &r) == 0);
        CHECK_ST(PSV_OK, psv_saver_save_fd(s, fds[1], so));
        close(fds[1]);
        pthread_join(reader, NULL);
        close(fds[0]);
        CHECK_EQ_U(r.got.len, want_len);
        CHECK(r.got.len == want_len && memcmp(r.got.bytes, want, want_len) == 0);
        free(r.got.bytes);

        /* A write callback; then one that fails part way. */
        struct sink k1 = {NULL, 0, 0, 0};
        CHECK_ST(PSV_OK, psv_saver_save_stream(s, sink_write, &k1, so));
        CHECK(k1.len == want_len && memcmp(k1.bytes, want, want_len) == 0);
        free(k1.bytes);
        struct sink k2 = {NULL, 0, 0, want_len / 2};
        CHECK_ST(PSV_ERR_IO, psv_saver_save_stream(s, sink_write, &k2, so));
        CHECK_MSG(strstr(last_error(), "returned 7") != NULL, "message: %s", last_error());
        CHECK(k2.len <= want_len / 2);
        free(k2.bytes);

        /* Ranges of a prepared save, rendered by two threads, each last part first. */
        psv_prepared *p = NULL;
        CHECK_ST(PSV_OK, psv_saver_prepare(s, so, &p));
        CHECK_EQ_U(psv_prepared_size(p), want_len);
        unsigned char *joined = xmalloc(want_len);
        memset(joined, 0, want_len);
        struct render_job j1 = {p, joined, 0, want_len / 2, 1000003, PSV_OK};
        struct render_job j2 = {p, joined, want_len / 2, want_len, 999983, PSV_OK};
        pthread_t t1, t2;
        CHECK(pthread_create(&t1, NULL, render_parts, &j1) == 0);
        CHECK(pthread_create(&t2, NULL, render_parts, &j2) == 0);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        CHECK_EQ_I(j1.st, PSV_OK);
        CHECK_EQ_I(j2.st, PSV_OK);
        CHECK(memcmp(joined, want, want_len) == 0);
        unsigned char two[2];
        CHECK_ST(PSV_ERR_INVALID_ARG, psv_prepared_render(p, want_len - 1, 2, two));
        CHECK_ST(PSV_ERR_NULL_ARG, psv_prepared_render(p, 0, 2, NULL));
        CHECK_ST(PSV_OK, psv_prepared_render(p, want_len, 0, NULL));
        psv_prepared_free(p);
        free(joined);
        free(want);
    }
    psv_save_options_free(so);
    psv_saver_free(s);
    free(noise);
}

/* Restore destinations: an fd, a caller's buffer, a caller's allocator. */
struct counting_alloc {
    int allocs, frees;
    size_t size;
    void *ptr;
    int mode; /* 0: aligned memory, 1: NULL, 2: misaligned */
};

static void *test_alloc(void *userdata, size_t size, size_t align)
{
    struct counting_alloc *c = userdata;
    c->allocs++;
    c->size = size;
    if (c->mode == 1) {
        return NULL;
    }
    void *p = NULL;
    if (posix_memalign(&p, align, size + 64) != 0) {
        return NULL;
    }
    c->ptr = p;
    return c->mode == 2 ? (char *)p + 1 : p;
}

static void test_free(void *userdata, void *ptr, size_t size)
{
    struct counting_alloc *c = userdata;
    c->frees++;
    CHECK(size == c->size);
    CHECK(ptr == (c->mode == 2 ? (char *)c->ptr + 1 : c->ptr));
    free(c->ptr);
}

static void test_restore_destinations(void)
{
    const size_t n = (size_t)1024 * 1024 + 5;
    unsigned char *noise = xmalloc(n);
    fill(noise, n, 21);
    const int64_t s_noise[1] = {(int64_t)n};
    const int32_t small[3] = {7, -8, 9};
    const int64_t s_small[1] = {3};
    psv_saver *s = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_add(s, "noise", noise, PSV_DTYPE_U8, s_noise, 1));
    CHECK_ST(PSV_OK, psv_saver_add(s, "small", small, PSV_DTYPE_I32, s_small, 1));
    const char *path = P("rdest.npz");
    CHECK_ST(PSV_OK, psv_saver_save(s, path, NULL));
    psv_saver_free(s);

    /* The size caller memory needs, from a metadata-only restore. */
    psv_restore_options *meta = psv_restore_options_new();
    CHECK_ST(PSV_OK, psv_restore_options_set_metadata_only(meta, true));
    psv_archive *m = RESTORE_OK(path, meta);
    size_t need = psv_archive_required_bytes(m);
    CHECK(need >= n + 12);
    CHECK_EQ_U(psv_archive_required_bytes(NULL), 0);
    CHECK_EQ_U(psv_archive_offset(NULL, 0), 0);
    CHECK_EQ_U(psv_archive_offset(m, 99), 0);
    /* Every offset in one call: the same values as one call each. */
    size_t offs[2] = {7, 7};
    CHECK_ST(PSV_OK, psv_archive_offsets(m, offs));
    CHECK_EQ_U(offs[0], psv_archive_offset(m, 0));
    CHECK_EQ_U(offs[1], psv_archive_offset(m, 1));
    CHECK(offs[0] != offs[1] && offs[0] % 64 == 0 && offs[1] % 64 == 0);
    CHECK_ST(PSV_ERR_NULL_ARG, psv_archive_offsets(m, NULL));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_archive_offsets(NULL, offs));
    psv_free(m);
    psv_restore_options_free(meta);

    /* An fd: positional reads, the offset stays. */
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f != NULL) {
        int fd = fileno(f);
        CHECK(lseek(fd, 9, SEEK_SET) == 9);
        psv_archive *a = NULL;
        CHECK_ST(PSV_OK, psv_restore_fd(fd, NULL, &a));
        CHECK(lseek(fd, 0, SEEK_CUR) == 9);
        EXPECT_ARRAY(a, "noise", PSV_DTYPE_U8, "|u1", 1, s_noise, 1, false, noise, n);
        EXPECT_ARRAY(a, "small", PSV_DTYPE_I32, "<i4", 4, s_small, 1, false, small, 12);
        psv_free(a);
        fclose(f);
    }
    psv_archive *none = NULL;
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_restore_fd(-1, NULL, &none));
    CHECK(none == NULL);

    /* A caller's buffer: the views point into it; psv_free leaves it alone. */
    void *buf = NULL;
    CHECK(posix_memalign(&buf, 64, need + 64) == 0);
    psv_archive *a = NULL;
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_restore_into(path, NULL, buf, need - 1, &a));
    CHECK(a == NULL);
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_restore_into(path, NULL, (char *)buf + 1, need, &a));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_restore_into(path, NULL, NULL, need, &a));
    CHECK_ST(PSV_OK, psv_restore_into(path, NULL, buf, need, &a));
    if (a != NULL) {
        EXPECT_ARRAY(a, "noise", PSV_DTYPE_U8, "|u1", 1, s_noise, 1, false, noise, n);
        size_t i = 0;
        CHECK_ST(PSV_OK, psv_archive_find(a, "small", &i));
        CHECK(psv_archive_data(a, i) == (const char *)buf + psv_archive_offset(a, i));
        size_t blen = 0;
        CHECK(psv_archive_block(a, &blen) == buf);
        CHECK_EQ_U(blen, need);
    }
    psv_free(a);
    /* The same from the archive's bytes in memory. */
    size_t file_len = 0;
    unsigned char *file = read_file(path, &file_len);
    memset(buf, 0, need);
    a = NULL;
    CHECK_ST(PSV_OK, psv_restore_from_memory_into(file, file_len, NULL, buf, need, &a));
    if (a != NULL) {
        EXPECT_ARRAY(a, "noise", PSV_DTYPE_U8, "|u1", 1, s_noise, 1, false, noise, n);
        EXPECT_ARRAY(a, "small", PSV_DTYPE_I32, "<i4", 4, s_small, 1, false, small, 12);
    }
    psv_free(a);
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_restore_from_memory_into(file, file_len, NULL, buf, need - 64, &a));
    free(file);
    free(buf);

    /* A caller's allocator: called once, freed once from psv_free. */
    psv_restore_options *ro = psv_restore_options_new();
    CHECK_ST(PSV_ERR_NULL_ARG, psv_restore_options_set_allocator(NULL, test_alloc, test_free, NULL));
    struct counting_alloc c = {0, 0, 0, NULL, 0};
    CHECK_ST(PSV_OK, psv_restore_options_set_allocator(ro, test_alloc, test_free, &c));
    a = RESTORE_OK(path, ro);
    CHECK_EQ_I(c.allocs, 1);
    CHECK_EQ_I(c.frees, 0);
    CHECK_EQ_U(c.size, need);
    if (a != NULL) {
        EXPECT_ARRAY(a, "noise", PSV_DTYPE_U8, "|u1", 1, s_noise, 1, false, noise, n);
        CHECK(psv_archive_block(a, NULL) == c.ptr);
    }
    psv_free(a);
    CHECK_EQ_I(c.frees, 1);
    /* NULL from the allocator: NOMEM; misaligned: INVALID_ARG, and it is freed at once. */
    struct counting_alloc c1 = {0, 0, 0, NULL, 1};
    CHECK_ST(PSV_OK, psv_restore_options_set_allocator(ro, test_alloc, test_free, &c1));
    a = NULL;
    CHECK_ST(PSV_ERR_NOMEM, psv_restore(path, ro, &a));
    CHECK(a == NULL && c1.allocs == 1 && c1.frees == 0);
    struct counting_alloc c2 = {0, 0, 0, NULL, 2};
    CHECK_ST(PSV_OK, psv_restore_options_set_allocator(ro, test_alloc, test_free, &c2));
    CHECK_ST(PSV_ERR_INVALID_ARG, psv_restore(path, ro, &a));
    CHECK(a == NULL && c2.allocs == 1 && c2.frees == 1);
    /* NULL alloc_fn removes the allocator. */
    CHECK_ST(PSV_OK, psv_restore_options_set_allocator(ro, NULL, NULL, NULL));
    a = RESTORE_OK(path, ro);
    psv_free(a);
    psv_restore_options_free(ro);
    free(noise);
}

/* Stream restores: a read callback over memory or a pipe, psv_restore_fd on a pipe. */
struct mem_source {
    const unsigned char *p;
    size_t len, pos;
    size_t max_chunk; /* at most this many bytes per call */
    size_t fail_at;   /* return -5 once this many bytes were given (0: never) */
};

static int64_t mem_read(void *userdata, void *buf, size_t len)
{
    struct mem_source *m = userdata;
    if (m->fail_at != 0 && m->pos >= m->fail_at) {
        return -5;
    }
    size_t n = m->len - m->pos;
    n = n < len ? n : len;
    n = n < m->max_chunk ? n : m->max_chunk;
    if (n > 0) {
        memcpy(buf, m->p + m->pos, n);
    }
    m->pos += n;
    return (int64_t)n;
}

static int64_t fd_read(void *userdata, void *buf, size_t len)
{
    int fd = *(int *)userdata;
    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n < 0 ? -1 : (int64_t)n;
    }
}

struct pipe_writer {
    int fd;
    const unsigned char *p;
    size_t len;
};

static void *feed_pipe(void *arg)
{
    struct pipe_writer *w = arg;
    size_t done = 0;
    while (done < w->len) {
        ssize_t n = write(w->fd, w->p + done, w->len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break; /* the reader is gone (EPIPE: SIGPIPE is ignored in main) */
        }
        done += (size_t)n;
    }
    close(w->fd);
    return NULL;
}

static int cancel_progress(void *userdata, uint64_t done, uint64_t total)
{
    (void)done;
    (void)total;
    (*(int *)userdata)++;
    return 1;
}

static void test_restore_stream(void)
{
    const size_t n = (size_t)5 * 1024 * 1024 + 3;
    unsigned char *noise = xmalloc(n);
    fill(noise, n, 33);
    const int64_t s_noise[1] = {(int64_t)n};
    const int32_t small[3] = {1, -2, 3};
    const int64_t s_small[1] = {3};
    psv_saver *s = psv_saver_new();
    CHECK_ST(PSV_OK, psv_saver_add(s, "noise", noise, PSV_DTYPE_U8, s_noise, 1));
    CHECK_ST(PSV_OK, psv_saver_add(s, "small", small, PSV_DTYPE_I32, s_small, 1));
    psv_save_options *so = psv_save_options_new();
    psv_archive *a = NULL;

    /* NULL arguments. */
    struct mem_source none = {NULL, 0, 0, 1, 0};
    a = (psv_archive *)&g_dir;
    CHECK_ST(PSV_ERR_NULL_ARG, psv_restore_stream(NULL, &none, NULL, &a));
    CHECK(a == NULL);
    CHECK_ST(PSV_ERR_NULL_ARG, psv_restore_stream(mem_read, &none, NULL, NULL));
    CHECK_ST(PSV_ERR_NULL_ARG, psv_restore_stream_into(NULL, &none, NULL, NULL, 0, &a));
    CHECK_ST(PSV_ERR_FORMAT, psv_restore_stream(mem_read, &none, NULL, &a));
    CHECK(a == NULL);

    const int levels[] = {0, 6};
    for (size_t k = 0; k < sizeof levels / sizeof levels[0]; k++) {
        CHECK_ST(PSV_OK, psv_save_options_set_compression(so, levels[k]));
        psv_buffer *b = NULL;
        CHECK_ST(PSV_OK, psv_saver_save_to_alloc(s, so, &b));
        const unsigned char *bytes = psv_buffer_data(b);
        size_t len = psv_buffer_len(b);

        /* From memory, in odd-sized pieces. */
        struct mem_source m = {bytes, len, 0, 100003, 0};
        a = NULL;
        CHECK_ST(PSV_OK, psv_restore_stream(mem_read, &m, NULL, &a));
        EXPECT_ARRAY(a, "noise", PSV_DTYPE_U8, "|u1", 1, s_noise, 1, false, noise, n);
        EXPECT_ARRAY(a, "small", PSV_DTYPE_I32, "<i4", 4, s_small, 1, false, small, 12);
        psv_free(a);
        CHECK_EQ_U(m.pos, len);

        /* Through a pipe fed by a thread: the callback, then psv_restore_fd. */
        for (int via_fd = 0; via_fd < 2; via_fd++) {
            int fds[2];
            CHECK(pipe(fds) == 0);
            struct pipe_writer w = {fds[1], bytes, len};
            pthread_t writer;
            CHECK(pthread_create(&writer, NULL, feed_pipe, &w) == 0);
            a = NULL;
            if (via_fd) {
                CHECK_ST(PSV_OK, psv_restore_fd(fds[0], NULL, &a));
            } else {
                CHECK_ST(PSV_OK, psv_restore_stream(fd_read, &fds[0], NULL, &a));
            }
            EXPECT_ARRAY(a, "noise", PSV_DTYPE_U8, "|u1", 1, s_noise, 1, false, noise, n);
            EXPECT_ARRAY(a, "small", PSV_DTYPE_I32, "<i4", 4, s_small, 1, false, small, 12);
            psv_free(a);
            close(fds[0]);
            pthread_join(writer, NULL);
        }

        /* The callback fails part way: IO naming it; nothing leaks. */
        struct mem_source f = {bytes, len, 0, 65536, len / 2};
        a = NULL;
        CHECK_ST(PSV_ERR_IO, psv_restore_stream(mem_read, &f, NULL, &a));
        CHECK(a == NULL);
        CHECK_MSG(strstr(last_error(), "returned -5") != NULL, "message: %s", last_error());

        /* Cut short anywhere: FORMAT, never a hang. */
        const size_t cuts[] = {1, 4, 29, 30, 100, len / 3, len / 2, len - 23, len - 1};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            struct mem_source t = {bytes, cuts[c], 0, 4096, 0};
            a = (psv_archive *)&g_dir;
            CHECK_ST(PSV_ERR_FORMAT, psv_restore_stream(mem_read, &t, NULL, &a));
            CHECK(a == NULL);
        }

        /* Metadata only gives the size for caller memory; then into a caller's buffer. */
        psv_restore_options *ro = psv_restore_options_new();
        CHECK_ST(PSV_OK, psv_restore_options_set_metadata_only(ro, true));
        struct mem_source m2 = {bytes, len, 0, 1 << 20, 0};
        a = NULL;
        CHECK_ST(PSV_OK, psv_restore_stream(mem_read, &m2, ro, &a));
        size_t need = psv_archive_required_bytes(a);
        CHECK(need >= n + 12);
        CHECK(psv_archive_data(a, 0) == NULL);
        psv_free(a);
        CHECK_ST(PSV_OK, psv_restore_options_set_metadata_only(ro, false));
        void *buf = NULL;
        CHECK(posix_memalign(&buf, 64, need) == 0);
        struct mem_source m3 = {bytes, len, 0, 1 << 20, 0};
        a = NULL;
        CHECK_ST(PSV_OK, psv_restore_stream_into(mem_read, &m3, ro, buf, need, &a));
        EXPECT_ARRAY(a, "noise", PSV_DTYPE_U8, "|u1", 1, s_noise, 1, false, noise, n);
        CHECK(psv_archive_block(a, NULL) == buf);
        psv_free(a);
        struct mem_source m4 = {bytes, len, 0, 1 << 20, 0};
        a = NULL;
        CHECK_ST(PSV_ERR_INVALID_ARG, psv_restore_stream_into(mem_read, &m4, ro, buf, need - 64, &a));
        CHECK(a == NULL);
        char want_size[32];
        snprintf(want_size, sizeof want_size, "%zu", need);
        CHECK_MSG(strstr(last_error(), want_size) != NULL, "message: %s", last_error());
        free(buf);

        /* An allocator needs the size first: UNSUPPORTED. */
        struct counting_alloc ca = {0, 0, 0, NULL, 0};
        CHECK_ST(PSV_OK, psv_restore_options_set_allocator(ro, test_alloc, test_free, &ca));
        struct mem_source m5 = {bytes, len, 0, 1 << 20, 0};
        CHECK_ST(PSV_ERR_UNSUPPORTED, psv_restore_stream(mem_read, &m5, ro, &a));
        CHECK(a == NULL && ca.allocs == 0);
        CHECK_ST(PSV_OK, psv_restore_options_set_allocator(ro, NULL, NULL, NULL));

        /* A progress callback that cancels: ABORTED. */
        int calls = 0;
        CHECK_ST(PSV_OK, psv_restore_options_set_progress(ro, cancel_progress, &calls));
        struct mem_source m6 = {bytes, len, 0, 1 << 20, 0};
        CHECK_ST(PSV_ERR_ABORTED, psv_restore_stream(mem_read, &m6, ro, &a));
        CHECK(a == NULL && calls >= 1);
        psv_restore_options_free(ro);
        psv_buffer_free(b);
    }
    psv_save_options_free(so);
    psv_saver_free(s);
    free(noise);
}

/* ======================================================================== */

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        unsigned long before_ = g_failures;                                                        \
        g_test = #fn;                                                                              \
        fn;                                                                                        \
        printf("%-40s %s\n", #fn, g_failures == before_ ? "ok" : "FAILED");                        \
        fflush(stdout);                                                                            \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    if (tf_mkdir_p(argv[1]) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    if (strlen(argv[1]) > PATH_LEN - 256) {
        fprintf(stderr, "scratch directory path too long\n");
        return 2;
    }
    snprintf(g_dir, sizeof g_dir, "%s", argv[1]);
    signal(SIGPIPE, SIG_IGN); /* a pipe's reader may stop early: writers get EPIPE */
    printf("libpsv %s, scratch directory %s\n", psv_version(), g_dir);

    RUN(test_status_and_version());
    RUN(test_last_error_message());
    RUN(test_last_error_os_code());
    RUN(test_null_arguments());
    RUN(test_saver_add_errors());
    RUN(test_add_descr());
    RUN(test_roundtrip_all_dtypes());
    RUN(test_special_keys());
    RUN(test_many_arrays());
    RUN(test_zip64_member_count());
    RUN(test_large_array(1));
    RUN(test_large_array(2));
    RUN(test_compression());
    RUN(test_save_paths());
    RUN(test_save_destinations());
    RUN(test_restore_destinations());
    RUN(test_restore_stream());
    RUN(test_failed_save_is_atomic());
    RUN(test_restore_errors());
    RUN(test_limits());
    RUN(test_accessors_out_of_range());
    RUN(test_handmade_zips());
    RUN(test_hostile_zips());
    RUN(test_threads());

    printf("%lu checks, %lu failures\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
