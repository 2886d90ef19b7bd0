/*
 * robust_util.h - shared helpers of the robustness C tests (test_threads.c, test_fork.c,
 * test_progress.c): a thread-safe CHECK framework, file helpers, and one deterministic set of
 * arrays per (id, round) with an exact checker for a restored archive.
 *
 * Every function is static inline so that each test uses what it needs without
 * -Wunused-function. Include after defining _POSIX_C_SOURCE 200809L.
 */
#ifndef PSV_ROBUST_UTIL_H
#define PSV_ROBUST_UTIL_H

#include "psv.h"
#include "test_files.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Thread-safe checks                                                       */
/* ------------------------------------------------------------------------ */

static pthread_mutex_t g_check_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long g_checks;
static unsigned long g_failures;

static inline void rb_count(bool ok)
{
    pthread_mutex_lock(&g_check_lock);
    g_checks++;
    if (!ok) {
        g_failures++;
    }
    pthread_mutex_unlock(&g_check_lock);
}

static inline void rb_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    char msg[2048];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_check_lock);
    fprintf(stderr, "%s:%d: FAIL: %s\n", file, line, msg);
    pthread_mutex_unlock(&g_check_lock);
}

static inline unsigned long rb_failures(void)
{
    pthread_mutex_lock(&g_check_lock);
    unsigned long n = g_failures;
    pthread_mutex_unlock(&g_check_lock);
    return n;
}

/* CHECK(cond, fmt, ...): counts the check; on failure prints the location and the message. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        bool ok_ = (cond);                                                                         \
        rb_count(ok_);                                                                             \
        if (!ok_) {                                                                                \
            rb_fail(__FILE__, __LINE__, __VA_ARGS__);                                              \
        }                                                                                          \
    } while (0)

/* The calling thread's last libpsv error message, into buf. */
static inline const char *rb_err(char *buf, size_t len)
{
    buf[0] = '\0';
    psv_last_error_message(buf, len);
    return buf;
}

/* CHECK_OK(call): the call returns PSV_OK; otherwise prints the status and the message. */
#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        psv_status st_ = (call);                                                                   \
        char em_[1024];                                                                            \
        if (st_ != PSV_OK) {                                                                       \
            rb_err(em_, sizeof em_);                                                               \
        }                                                                                          \
        CHECK(st_ == PSV_OK, "%s returned %s: %s", #call, psv_status_str(st_),                    \
              st_ == PSV_OK ? "" : em_);                                                           \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */

#define RB_PATH TF_PATH

/* The test's one argument, SCRATCH_DIR, copied into dir (cap bytes) and reset; exits 2 with a
 * usage line if it is missing or too long. */
static inline void rb_scratch_dir(int argc, char **argv, char *dir, size_t cap)
{
    if (argc != 2 || strlen(argv[1]) >= cap) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        exit(2);
    }
    snprintf(dir, cap, "%s", argv[1]);
    tf_reset_dir(dir);
}

/* Number of entries of dir whose name ends with suffix (-1 if dir cannot be read). */
static inline int rb_count_suffix(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -1;
    }
    int n = 0;
    size_t sl = strlen(suffix);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l >= sl && strcmp(e->d_name + l - sl, suffix) == 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

/* The whole file in a malloc'd buffer (*len set); NULL on error. */
static inline unsigned char *rb_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (buf != NULL && fread(buf, 1, n, f) != n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* ------------------------------------------------------------------------ */
/* One deterministic set of arrays per (id, round)                          */
/* ------------------------------------------------------------------------ */

#define RB_N_F64 40000 /* 320 KB: written in chunks, not packed */
#define RB_N_C64 1000
#define RB_REC_N 17
#define RB_REC_SIZE 12 /* [('a', '<i4'), ('b', '<f8')]: packed, 12 bytes */
#define RB_FORT_R 20
#define RB_FORT_C 30
#define RB_N_ARRAYS 8

typedef struct {
    double f64[RB_N_F64];
    int32_t i32[30 * 50];
    uint8_t u8;
    float c64[2 * RB_N_C64];
    int16_t empty[1];
    unsigned char rec[RB_REC_N * RB_REC_SIZE];
    char strs[3 * 5];
    float fort[RB_FORT_R * RB_FORT_C];
} rb_arrays;

typedef struct {
    const char *key;
    psv_dtype dtype; /* expected code after restore */
    const char *descr;
    size_t itemsize;
    size_t ndim;
    int64_t shape[2];
    bool fortran;
} rb_meta;

static const rb_meta RB_META[RB_N_ARRAYS] = {
    {"f64", PSV_DTYPE_F64, "<f8", 8, 1, {RB_N_F64, 0}, false},
    {"i32", PSV_DTYPE_I32, "<i4", 4, 2, {30, 50}, false},
    {"u8", PSV_DTYPE_U8, "|u1", 1, 0, {0, 0}, false},
    {"c64", PSV_DTYPE_C64, "<c8", 8, 1, {RB_N_C64, 0}, false},
    {"empty", PSV_DTYPE_I16, "<i2", 2, 2, {0, 5}, false},
    {"rec", PSV_DTYPE_OTHER, "[('a', '<i4'), ('b', '<f8')]", RB_REC_SIZE, 1, {RB_REC_N, 0}, false},
    {"strs", PSV_DTYPE_OTHER, "|S5", 5, 1, {3, 0}, false},
    {"fort", PSV_DTYPE_F32, "<f4", 4, 2, {RB_FORT_R, RB_FORT_C}, true},
};

static inline void rb_fill(rb_arrays *a, unsigned id, unsigned round)
{
    for (size_t i = 0; i < RB_N_F64; i++) {
        a->f64[i] = (double)id * 1e6 + (double)round * 1000.0 + (double)i * 0.5;
    }
    for (size_t i = 0; i < 30 * 50; i++) {
        a->i32[i] = (int32_t)(((uint32_t)id << 24) ^ ((uint32_t)round << 12) ^ (uint32_t)i);
    }
    a->u8 = (uint8_t)(id * 31u + round);
    for (size_t i = 0; i < 2 * RB_N_C64; i++) {
        a->c64[i] = (float)(id + round) + (float)i / 4.0f;
    }
    a->empty[0] = 0;
    for (size_t i = 0; i < sizeof a->rec; i++) {
        a->rec[i] = (unsigned char)(i * 7u + id * 13u + round);
    }
    for (size_t i = 0; i < sizeof a->strs; i++) {
        a->strs[i] = (char)('a' + (i + id + round) % 26);
    }
    for (size_t i = 0; i < RB_FORT_R * RB_FORT_C; i++) {
        a->fort[i] = (float)i * 0.25f - (float)id + (float)round;
    }
}

static inline const void *rb_data_of(const rb_arrays *a, size_t k, size_t *nbytes)
{
    switch (k) {
    case 0: *nbytes = sizeof a->f64; return a->f64;
    case 1: *nbytes = sizeof a->i32; return a->i32;
    case 2: *nbytes = 1; return &a->u8;
    case 3: *nbytes = sizeof a->c64; return a->c64;
    case 4: *nbytes = 0; return a->empty;
    case 5: *nbytes = sizeof a->rec; return a->rec;
    case 6: *nbytes = sizeof a->strs; return a->strs;
    default: *nbytes = sizeof a->fort; return a->fort;
    }
}

/* A saver holding every array of `a` (borrowed: `a` must outlive the saver). */
static inline psv_saver *rb_saver(const rb_arrays *a)
{
    psv_saver *s = psv_saver_new();
    CHECK(s != NULL, "psv_saver_new returned NULL");
    if (s == NULL) {
        return NULL;
    }
    for (size_t k = 0; k < RB_N_ARRAYS; k++) {
        const rb_meta *m = &RB_META[k];
        size_t nbytes;
        const void *data = rb_data_of(a, k, &nbytes);
        if (m->dtype != PSV_DTYPE_OTHER && !m->fortran) {
            CHECK_OK(psv_saver_add(s, m->key, data, m->dtype, m->ndim ? m->shape : NULL, m->ndim));
        } else {
            CHECK_OK(psv_saver_add_descr(s, m->key, data, nbytes, m->descr, m->shape, m->ndim,
                                         m->fortran));
        }
    }
    CHECK(psv_saver_count(s) == RB_N_ARRAYS, "saver count %zu", psv_saver_count(s));
    return s;
}

/* Checks that archive `ar` holds exactly `a`, through every accessor. `what` names the case. */
static inline void rb_check_archive(const psv_archive *ar, const rb_arrays *a, const char *what)
{
    CHECK(ar != NULL, "%s: NULL archive", what);
    if (ar == NULL) {
        return;
    }
    size_t block_len = 0;
    const unsigned char *block = psv_archive_block(ar, &block_len);
    CHECK(block != NULL && (uintptr_t)block % 4096 == 0, "%s: block %p", what, (const void *)block);
    CHECK(psv_archive_count(ar) == RB_N_ARRAYS, "%s: count %zu", what, psv_archive_count(ar));
    CHECK(psv_archive_skipped_count(ar) == 0, "%s: skipped %zu", what,
          psv_archive_skipped_count(ar));
    CHECK(psv_archive_skipped_name(ar, 0) == NULL, "%s: skipped name 0 not NULL", what);
    for (size_t k = 0; k < RB_N_ARRAYS; k++) {
        const rb_meta *m = &RB_META[k];
        size_t idx = (size_t)-1;
        psv_status st = psv_archive_find(ar, m->key, &idx);
        CHECK(st == PSV_OK && idx == k, "%s: find(%s) = %s, index %zu", what, m->key,
              psv_status_str(st), idx);
        const char *key = psv_archive_key(ar, k);
        CHECK(key != NULL && strcmp(key, m->key) == 0, "%s: key %zu = %s", what, k,
              key ? key : "NULL");
        CHECK(psv_archive_dtype(ar, k) == m->dtype, "%s/%s: dtype %d", what, m->key,
              (int)psv_archive_dtype(ar, k));
        const char *descr = psv_archive_descr(ar, k);
        CHECK(descr != NULL && strcmp(descr, m->descr) == 0, "%s/%s: descr %s", what, m->key,
              descr ? descr : "NULL");
        CHECK(psv_archive_itemsize(ar, k) == m->itemsize, "%s/%s: itemsize %zu", what, m->key,
              psv_archive_itemsize(ar, k));
        CHECK(psv_archive_ndim(ar, k) == m->ndim, "%s/%s: ndim %zu", what, m->key,
              psv_archive_ndim(ar, k));
        const int64_t *shape = psv_archive_shape(ar, k);
        if (m->ndim == 0) {
            CHECK(shape == NULL, "%s/%s: 0-d shape not NULL", what, m->key);
        } else {
            CHECK(shape != NULL, "%s/%s: NULL shape", what, m->key);
            for (size_t d = 0; shape != NULL && d < m->ndim; d++) {
                CHECK(shape[d] == m->shape[d], "%s/%s: shape[%zu] = %" PRId64, what, m->key, d,
                      shape[d]);
            }
        }
        CHECK(psv_archive_fortran_order(ar, k) == m->fortran, "%s/%s: fortran_order", what,
              m->key);
        size_t want_n;
        const void *want = rb_data_of(a, k, &want_n);
        CHECK(psv_archive_nbytes(ar, k) == want_n, "%s/%s: nbytes %zu, want %zu", what, m->key,
              psv_archive_nbytes(ar, k), want_n);
        const unsigned char *data = psv_archive_data(ar, k);
        CHECK(data != NULL && (uintptr_t)data % 64 == 0, "%s/%s: data %p not 64-aligned", what,
              m->key, (const void *)data);
        if (data != NULL && block != NULL) {
            CHECK(data >= block && data + want_n <= block + (block_len > 0 ? block_len : 64),
                  "%s/%s: data outside the block", what, m->key);
        }
        if (data != NULL && want_n > 0) {
            CHECK(memcmp(data, want, want_n) == 0, "%s/%s: values differ", what, m->key);
        }
    }
    /* Out of range. */
    CHECK(psv_archive_key(ar, RB_N_ARRAYS) == NULL, "%s: key out of range", what);
    CHECK(psv_archive_data(ar, RB_N_ARRAYS) == NULL, "%s: data out of range", what);
    CHECK(psv_archive_nbytes(ar, RB_N_ARRAYS) == 0, "%s: nbytes out of range", what);
    CHECK(psv_archive_dtype(ar, RB_N_ARRAYS) == PSV_DTYPE_INVALID, "%s: dtype out of range", what);
    CHECK(psv_archive_descr(ar, RB_N_ARRAYS) == NULL, "%s: descr out of range", what);
    CHECK(psv_archive_shape(ar, RB_N_ARRAYS) == NULL, "%s: shape out of range", what);
}

/* Saves `a` to path with `threads`, restores it with `rthreads` and checks it exactly. */
static inline void rb_round_trip(const rb_arrays *a, const char *path, size_t threads,
                                 size_t rthreads, const char *what)
{
    psv_saver *s = rb_saver(a);
    psv_save_options *so = psv_save_options_new();
    psv_restore_options *ro = psv_restore_options_new();
    CHECK(so != NULL && ro != NULL, "%s: options_new returned NULL", what);
    if (s == NULL || so == NULL || ro == NULL) {
        psv_saver_free(s);
        psv_save_options_free(so);
        psv_restore_options_free(ro);
        return;
    }
    CHECK_OK(psv_save_options_set_threads(so, threads));
    CHECK_OK(psv_restore_options_set_threads(ro, rthreads));
    CHECK_OK(psv_saver_save(s, path, so));
    psv_archive *ar = NULL;
    CHECK_OK(psv_restore(path, ro, &ar));
    rb_check_archive(ar, a, what);
    psv_free(ar);
    psv_saver_free(s);
    psv_save_options_free(so);
    psv_restore_options_free(ro);
}

#endif /* PSV_ROBUST_UTIL_H */
