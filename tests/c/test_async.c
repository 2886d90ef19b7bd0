/*
 * test_async.c - asynchronous saves (psv_saver_save*_async, psv_job_*), issue 14.
 *
 *   1. NULL and bad arguments: clear codes, *out NULL, nothing started.
 *   2. Every destination (path, fd, write callback, caller buffer, libpsv memory) gives exactly
 *      the bytes of the blocking save; the caller closes its fd right after the call.
 *   3. Snapshot: the arrays changed and the saver freed right after the call do not change the
 *      file; the staging area is reused (psv_saver_staging_bytes stays put over 10 saves).
 *   4. Borrowed mode: while a job runs (held inside its write callback), psv_saver_add* give
 *      PSV_ERR_BUSY, psv_job_wait times out with PSV_ERR_TIMEOUT, psv_job_done is false;
 *      psv_saver_free waits for the job; afterwards adding works again.
 *   5. Cancel: the old target is byte-identical, no temporary file is left, PSV_ERR_ABORTED.
 *   6. Errors surface at wait, with the job's own message and errno (also readable from another
 *      thread); psv_job_free of a running job cancels and waits.
 *   7. 8 threads, each running 2 snapshot jobs at once per round, 10 rounds, checked exactly.
 *   8. fork while a borrowed job runs: in the child the job does not run (wait: INVALID_ARG at
 *      once, done false), the child saves on its own, frees the job and saver without waiting.
 *
 * Usage: test_async SCRATCH_DIR. Built by `make test-async` (mk/async.mk) under ASan+UBSan and
 * run under valgrind memcheck as well (there with PSV_TEST_NO_FORK=1: valgrind leak-checks the
 * child, which keeps what the parent's threads held). Exit status 1 on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include "robust_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define NTHREADS 8
#define ROUNDS 10

static char g_dir[RB_PATH - 64];

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void path_of(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", g_dir, name);
}

/* The bytes of the blocking save of s, in libpsv memory (free with psv_buffer_free). */
static psv_buffer *sync_bytes(psv_saver *s)
{
    psv_buffer *b = NULL;
    CHECK_OK(psv_saver_save_to_alloc(s, NULL, &b));
    return b;
}

static bool same_bytes(const psv_buffer *b, const unsigned char *p, size_t len)
{
    return b != NULL && p != NULL && psv_buffer_len(b) == len &&
           memcmp(psv_buffer_data(b), p, len) == 0;
}

/* ---- a write callback that can hold the job inside it ---- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool hold;     /* the first call waits until released */
    bool entered;  /* the first call has started */
    unsigned char *bytes;
    size_t len, cap;
} gate;

static void gate_init(gate *g, bool hold)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->hold = hold;
    g->entered = false;
    g->bytes = NULL;
    g->len = g->cap = 0;
}

static void gate_destroy(gate *g)
{
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    free(g->bytes);
}

static int gate_write(void *userdata, const void *buf, size_t len)
{
    gate *g = userdata;
    pthread_mutex_lock(&g->lock);
    g->entered = true;
    pthread_cond_broadcast(&g->cond);
    while (g->hold) {
        pthread_cond_wait(&g->cond, &g->lock);
    }
    if (g->len + len > g->cap) {
        size_t cap = (g->len + len) * 2;
        unsigned char *p = realloc(g->bytes, cap);
        if (p == NULL) {
            pthread_mutex_unlock(&g->lock);
            return 1;
        }
        g->bytes = p;
        g->cap = cap;
    }
    memcpy(g->bytes + g->len, buf, len);
    g->len += len;
    pthread_mutex_unlock(&g->lock);
    return 0;
}

static void gate_wait_entered(gate *g)
{
    pthread_mutex_lock(&g->lock);
    while (!g->entered) {
        pthread_cond_wait(&g->cond, &g->lock);
    }
    pthread_mutex_unlock(&g->lock);
}

static void gate_release(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->hold = false;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static int count_tmp(void)
{
    return rb_count_suffix(g_dir, ".psv-tmp");
}

/* ---- 1. arguments ---- */

static int count_progress(void *userdata, uint64_t done, uint64_t total)
{
    (void)userdata;
    (void)done;
    (void)total;
    return 0;
}

static void test_arguments(void)
{
    static rb_arrays a;
    rb_fill(&a, 1, 0);
    psv_saver *s = rb_saver(&a);
    psv_job *job = (psv_job *)&a; /* must become NULL on failure */
    char path[RB_PATH];
    path_of(path, sizeof path, "args.npz");

    CHECK(psv_saver_save_async(NULL, path, NULL, &job) == PSV_ERR_NULL_ARG && job == NULL,
          "NULL saver");
    CHECK(psv_saver_save_async(s, path, NULL, NULL) == PSV_ERR_NULL_ARG, "NULL out");
    job = (psv_job *)&a;
    CHECK(psv_saver_save_async(s, NULL, NULL, &job) == PSV_ERR_NULL_ARG && job == NULL,
          "NULL path");
    CHECK(psv_saver_save_async(s, "", NULL, &job) == PSV_ERR_INVALID_ARG && job == NULL,
          "empty path");
    CHECK(psv_saver_save_fd_async(s, -1, NULL, &job) == PSV_ERR_INVALID_ARG && job == NULL,
          "negative fd");
    CHECK(psv_saver_save_fd_async(s, 1000, NULL, &job) == PSV_ERR_IO && job == NULL &&
              psv_last_error_os_code() == EBADF,
          "closed fd: EBADF");
    CHECK(psv_saver_save_stream_async(s, NULL, NULL, NULL, &job) == PSV_ERR_NULL_ARG &&
              job == NULL,
          "NULL write_fn");
    CHECK(psv_saver_save_to_buffer_async(s, NULL, 10, NULL, &job) == PSV_ERR_NULL_ARG &&
              job == NULL,
          "NULL buf");
    CHECK(psv_saver_save_to_alloc_async(s, NULL, NULL) == PSV_ERR_NULL_ARG, "alloc NULL out");

    psv_save_options *o = psv_save_options_new();
    CHECK(psv_save_options_set_snapshot(NULL, true) == PSV_ERR_NULL_ARG, "set_snapshot NULL");
    CHECK_OK(psv_save_options_set_compression(o, 3));
    unsigned char small[64];
    CHECK(psv_saver_save_to_buffer_async(s, small, sizeof small, o, &job) ==
                  PSV_ERR_INVALID_ARG &&
              job == NULL,
          "compressed into a caller's buffer");
    CHECK_OK(psv_save_options_set_compression(o, 0));
    CHECK_OK(psv_save_options_set_layout(o, PSV_LAYOUT_DIR));
    CHECK(psv_saver_save_to_alloc_async(s, o, &job) == PSV_ERR_INVALID_ARG && job == NULL,
          "directory layout to memory");
    CHECK_OK(psv_save_options_set_layout(o, PSV_LAYOUT_NPZ));
    CHECK_OK(psv_save_options_set_progress(o, count_progress, NULL));
    CHECK(psv_saver_save_async(s, path, o, &job) == PSV_ERR_INVALID_ARG && job == NULL,
          "a progress callback is refused");
    psv_save_options_free(o);

    /* A buffer too small fails at wait, with the size in the job's message. */
    CHECK_OK(psv_saver_save_to_buffer_async(s, small, sizeof small, NULL, &job));
    CHECK(psv_job_wait(job, -1) == PSV_ERR_INVALID_ARG, "buffer too small at wait");
    char msg[512];
    size_t n = psv_job_error_message(job, msg, sizeof msg);
    CHECK(n > 0 && strstr(msg, "bytes") != NULL, "too-small message: %s", msg);
    psv_buffer *b = (psv_buffer *)&a;
    CHECK(psv_job_take_buffer(job, &b) == PSV_ERR_INVALID_ARG && b == NULL,
          "take_buffer of a buffer job");
    psv_job_free(job);

    /* NULL jobs. */
    uint64_t d = 7, t = 7;
    CHECK(psv_job_wait(NULL, 0) == PSV_ERR_NULL_ARG, "wait NULL");
    CHECK(!psv_job_done(NULL), "done NULL");
    CHECK(psv_job_progress(NULL, &d, &t) == PSV_ERR_NULL_ARG && d == 7 && t == 7,
          "progress NULL");
    CHECK(psv_job_cancel(NULL) == PSV_ERR_NULL_ARG, "cancel NULL");
    CHECK(psv_job_error_message(NULL, msg, sizeof msg) == 0, "message NULL");
    CHECK(psv_job_error_os_code(NULL) == 0, "os code NULL");
    CHECK(psv_job_take_buffer(NULL, &b) == PSV_ERR_NULL_ARG, "take NULL");
    CHECK(psv_saver_staging_bytes(NULL) == 0, "staging NULL");
    psv_job_free(NULL);
    CHECK(strcmp(psv_status_str(PSV_ERR_BUSY), "PSV_ERR_BUSY") == 0 &&
              strcmp(psv_status_str(PSV_ERR_TIMEOUT), "PSV_ERR_TIMEOUT") == 0,
          "status names");
    psv_saver_free(s);
}

/* ---- 2. every destination, asynchronously, gives the blocking save's bytes ---- */

static void test_destinations(bool snapshot)
{
    static rb_arrays a;
    rb_fill(&a, 2, snapshot);
    psv_saver *s = rb_saver(&a);
    psv_buffer *want = sync_bytes(s);
    psv_save_options *o = psv_save_options_new();
    CHECK_OK(psv_save_options_set_snapshot(o, snapshot));
    CHECK_OK(psv_save_options_set_threads(o, 2));
    char path[RB_PATH], fpath[RB_PATH];
    path_of(path, sizeof path, snapshot ? "dest_snap" : "dest_borrow"); /* .npz appended */
    path_of(fpath, sizeof fpath, snapshot ? "fd_snap.bin" : "fd_borrow.bin");

    psv_job *jp = NULL, *jf = NULL, *js = NULL, *jb = NULL, *ja = NULL;
    /* Five jobs at once, one per destination. */
    CHECK_OK(psv_saver_save_async(s, path, o, &jp));
    int fd = open(fpath, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0, "open %s", fpath);
    CHECK(write(fd, "HEAD", 4) == 4, "write prefix");
    CHECK_OK(psv_saver_save_fd_async(s, fd, o, &jf));
    close(fd); /* the job has its own duplicate */
    gate g;
    gate_init(&g, false);
    CHECK_OK(psv_saver_save_stream_async(s, gate_write, &g, o, &js));
    size_t len = psv_buffer_len(want);
    unsigned char *buf = malloc(len + 10);
    memset(buf, 0xAB, len + 10);
    CHECK_OK(psv_saver_save_to_buffer_async(s, buf, len + 10, o, &jb));
    CHECK_OK(psv_saver_save_to_alloc_async(s, o, &ja));

    psv_job *all[5] = {jp, jf, js, jb, ja};
    for (int i = 0; i < 5; i++) {
        CHECK(psv_job_wait(all[i], -1) == PSV_OK, "job %d (snapshot %d)", i, snapshot);
        CHECK(psv_job_done(all[i]), "done after wait");
        CHECK(psv_job_wait(all[i], 0) == PSV_OK, "waiting again gives the same status");
        char msg[16] = "x";
        CHECK(psv_job_error_message(all[i], msg, sizeof msg) == 0 && msg[0] == '\0',
              "no message after success");
    }
    uint64_t d = 0, t = 0;
    CHECK_OK(psv_job_progress(jp, &d, &t));
    CHECK(d == t && t >= len - 4096, "progress at the end: %" PRIu64 "/%" PRIu64, d, t);

    char npz[RB_PATH + 8];
    snprintf(npz, sizeof npz, "%s.npz", path);
    size_t flen = 0;
    unsigned char *file = rb_read_file(npz, &flen);
    CHECK(same_bytes(want, file, flen), "path job bytes");
    free(file);
    file = rb_read_file(fpath, &flen);
    CHECK(file != NULL && flen == len + 4 && memcmp(file, "HEAD", 4) == 0 &&
              same_bytes(want, file + 4, flen - 4),
          "fd job bytes after the caller's prefix");
    free(file);
    CHECK(same_bytes(want, g.bytes, g.len), "stream job bytes");
    CHECK(same_bytes(want, buf, len) && buf[len] == 0xAB && buf[len + 9] == 0xAB,
          "buffer job bytes, the rest untouched");
    psv_buffer *got = NULL;
    CHECK_OK(psv_job_take_buffer(ja, &got));
    CHECK(same_bytes(want, psv_buffer_data(got), psv_buffer_len(got)), "alloc job bytes");
    psv_buffer *again = (psv_buffer *)&a;
    CHECK(psv_job_take_buffer(ja, &again) == PSV_ERR_INVALID_ARG && again == NULL,
          "the buffer is taken once");
    for (int i = 0; i < 5; i++) {
        psv_job_free(all[i]);
    }
    psv_buffer_free(got); /* outlives its job */
    psv_buffer_free(want);
    free(buf);
    gate_destroy(&g);
    psv_save_options_free(o);
    psv_saver_free(s);
    CHECK(count_tmp() == 0, "no temporary file left");
}

/* ---- 3. snapshot isolation and staging reuse ---- */

static void test_snapshot(void)
{
    static rb_arrays a, orig;
    rb_fill(&a, 3, 1);
    rb_fill(&orig, 3, 1);
    psv_saver *s = rb_saver(&a);
    psv_save_options *o = psv_save_options_new();
    CHECK_OK(psv_save_options_set_snapshot(o, true));
    char path[RB_PATH];
    path_of(path, sizeof path, "snap.npz");

    psv_job *job = NULL;
    CHECK_OK(psv_saver_save_async(s, path, o, &job));
    size_t staged = psv_saver_staging_bytes(s);
    CHECK(staged >= sizeof a, "staging holds the copy: %zu", staged);
    /* Change every array and free the saver at once: the job saves the copy. */
    rb_fill(&a, 99, 99);
    psv_saver_free(s);
    CHECK_OK(psv_job_wait(job, -1));
    psv_job_free(job);
    psv_archive *ar = NULL;
    CHECK_OK(psv_restore(path, NULL, &ar));
    if (ar != NULL) {
        rb_check_archive(ar, &orig, "snapshot isolation");
    }
    psv_free(ar);

    /* Ten more saves of the same arrays reuse the one idle staging buffer. */
    s = rb_saver(&a);
    for (int i = 0; i < 10; i++) {
        CHECK_OK(psv_saver_save_async(s, path, o, &job));
        CHECK_OK(psv_job_wait(job, -1));
        psv_job_free(job);
        if (i == 0) {
            staged = psv_saver_staging_bytes(s);
        }
        CHECK(psv_saver_staging_bytes(s) == staged, "staging bytes stay %zu: %zu", staged,
              psv_saver_staging_bytes(s));
    }
    /* Adding is fine while snapshot jobs run: they do not borrow the saver. */
    CHECK_OK(psv_saver_save_async(s, path, o, &job));
    static int32_t extra[4] = {1, 2, 3, 4};
    int64_t four = 4;
    CHECK_OK(psv_saver_add(s, "extra", extra, PSV_DTYPE_I32, &four, 1));
    CHECK_OK(psv_job_wait(job, -1));
    psv_job_free(job);
    psv_save_options_free(o);
    psv_saver_free(s);
}

/* ---- 4. borrowed mode: BUSY, timeouts, free waits ---- */

typedef struct {
    gate *g;
    int delay_ms;
} releaser;

static void *release_later(void *arg)
{
    releaser *r = arg;
    struct timespec ts = {r->delay_ms / 1000, (long)(r->delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    gate_release(r->g);
    return NULL;
}

static void test_borrowed(void)
{
    static rb_arrays a;
    rb_fill(&a, 4, 0);
    psv_saver *s = rb_saver(&a);
    psv_buffer *want = sync_bytes(s);
    gate g;
    gate_init(&g, true);
    psv_job *job = NULL;
    CHECK_OK(psv_saver_save_stream_async(s, gate_write, &g, NULL, &job));
    gate_wait_entered(&g); /* the job is running, held in its callback */

    static int32_t extra[4] = {1, 2, 3, 4};
    int64_t four = 4;
    CHECK(psv_saver_add(s, "x", extra, PSV_DTYPE_I32, &four, 1) == PSV_ERR_BUSY, "add BUSY");
    char msg[512];
    CHECK(strstr(rb_err(msg, sizeof msg), "job") != NULL, "BUSY message: %s", msg);
    CHECK(psv_saver_add_fortran(s, "x", extra, PSV_DTYPE_I32, &four, 1) == PSV_ERR_BUSY,
          "add_fortran BUSY");
    CHECK(psv_saver_add_descr(s, "x", extra, 16, "<i4", &four, 1, false) == PSV_ERR_BUSY,
          "add_descr BUSY");
    const char *keys[1] = {"x"};
    const void *datas[1] = {extra};
    psv_dtype dts[1] = {PSV_DTYPE_I32};
    size_t nd[1] = {1};
    CHECK(psv_saver_add_many(s, 1, keys, datas, dts, &four, nd) == PSV_ERR_BUSY,
          "add_many BUSY");
    CHECK(psv_saver_count(s) == RB_N_ARRAYS, "nothing added");
    /* Reading the saver is fine. */
    uint64_t size = 0;
    CHECK_OK(psv_saver_size(s, NULL, &size));
    CHECK(size == psv_buffer_len(want), "size while borrowed");

    CHECK(!psv_job_done(job), "running: not done");
    CHECK(psv_job_wait(job, 0) == PSV_ERR_TIMEOUT, "wait 0: TIMEOUT");
    double t0 = now_ms();
    CHECK(psv_job_wait(job, 50) == PSV_ERR_TIMEOUT, "wait 50: TIMEOUT");
    double waited = now_ms() - t0;
    CHECK(waited >= 45 && waited < 5000, "waited %.1f ms", waited);
    CHECK(psv_job_error_message(job, msg, sizeof msg) == 0, "no message while running");

    gate_release(&g);
    CHECK_OK(psv_job_wait(job, -1));
    CHECK(same_bytes(want, g.bytes, g.len), "borrowed stream bytes");
    CHECK_OK(psv_saver_add(s, "x", extra, PSV_DTYPE_I32, &four, 1));
    psv_job_free(job);
    gate_destroy(&g);

    /* psv_saver_free of a saver with a running borrowing job waits for the job. */
    gate_init(&g, true);
    CHECK_OK(psv_saver_save_stream_async(s, gate_write, &g, NULL, &job));
    gate_wait_entered(&g);
    releaser r = {&g, 200};
    pthread_t th;
    pthread_create(&th, NULL, release_later, &r);
    t0 = now_ms();
    psv_saver_free(s);
    waited = now_ms() - t0;
    CHECK(waited >= 150, "psv_saver_free waited for the job: %.1f ms", waited);
    CHECK_OK(psv_job_wait(job, -1));
    pthread_join(th, NULL);
    psv_job_free(job);
    gate_destroy(&g);
    psv_buffer_free(want);
}

/* ---- 5. cancel ---- */

static void test_cancel(void)
{
    /* 64 MiB: the job cannot finish before the cancel is seen. */
    size_t n = (size_t)8 << 20;
    double *big = malloc(n * sizeof *big);
    for (size_t i = 0; i < n; i++) {
        big[i] = (double)i;
    }
    char path[RB_PATH];
    path_of(path, sizeof path, "cancel.npz");
    static rb_arrays old;
    rb_fill(&old, 5, 0);
    psv_saver *os = rb_saver(&old);
    CHECK_OK(psv_saver_save(os, path, NULL));
    psv_saver_free(os);
    size_t old_len = 0;
    unsigned char *before = rb_read_file(path, &old_len);

    psv_saver *s = psv_saver_new();
    int64_t shape = (int64_t)n;
    CHECK_OK(psv_saver_add(s, "big", big, PSV_DTYPE_F64, &shape, 1));
    for (int snapshot = 0; snapshot < 2; snapshot++) {
        psv_save_options *o = psv_save_options_new();
        CHECK_OK(psv_save_options_set_snapshot(o, snapshot));
        psv_job *job = NULL;
        CHECK_OK(psv_saver_save_async(s, path, o, &job));
        CHECK_OK(psv_job_cancel(job));
        CHECK(psv_job_wait(job, -1) == PSV_ERR_ABORTED, "cancelled job: ABORTED");
        CHECK_OK(psv_job_cancel(job)); /* a finished job: nothing happens */
        char msg[256];
        psv_job_error_message(job, msg, sizeof msg);
        CHECK(strstr(msg, "cancel") != NULL, "cancel message: %s", msg);
        psv_job_free(job);
        size_t len = 0;
        unsigned char *after = rb_read_file(path, &len);
        CHECK(after != NULL && len == old_len && memcmp(before, after, len) == 0,
              "old target byte-identical after cancel (snapshot %d)", snapshot);
        free(after);
        CHECK(count_tmp() == 0, "the temporary file is removed");
        psv_save_options_free(o);
    }
    /* psv_job_free of a running job cancels it and waits. */
    psv_job *job = NULL;
    CHECK_OK(psv_saver_save_async(s, path, NULL, &job));
    psv_job_free(job);
    CHECK(count_tmp() == 0, "free: the temporary file is removed");
    size_t len = 0;
    unsigned char *after = rb_read_file(path, &len);
    /* Either cancelled (old file) or committed first (the new one, whole). */
    CHECK(after != NULL && (len == old_len ? memcmp(before, after, len) == 0
                                           : len > n * sizeof(double)),
          "free of a running job leaves a whole file");
    free(after);
    psv_saver_free(s);
    free(before);
    free(big);
}

/* ---- 6. errors surface at wait ---- */

typedef struct {
    const psv_job *job;
    char msg[1024];
    int os;
} reader;

static void *read_job_error(void *arg)
{
    reader *r = arg;
    psv_job_error_message(r->job, r->msg, sizeof r->msg);
    r->os = psv_job_error_os_code(r->job);
    return NULL;
}

static int failing_write(void *userdata, const void *buf, size_t len)
{
    (void)userdata;
    (void)buf;
    (void)len;
    return 5;
}

static void test_errors(void)
{
    static rb_arrays a;
    rb_fill(&a, 6, 0);
    psv_saver *s = rb_saver(&a);
    char file[RB_PATH], path[RB_PATH + 16];
    path_of(file, sizeof file, "plain_file");
    FILE *f = fopen(file, "w");
    fputs("x", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/sub.npz", file); /* a file used as a directory */
    for (int snapshot = 0; snapshot < 2; snapshot++) {
        psv_save_options *o = psv_save_options_new();
        CHECK_OK(psv_save_options_set_snapshot(o, snapshot));
        psv_job *job = NULL;
        CHECK_OK(psv_saver_save_async(s, path, o, &job)); /* starts fine */
        CHECK(psv_job_wait(job, -1) == PSV_ERR_IO, "ENOTDIR at wait");
        CHECK(psv_last_error_os_code() == ENOTDIR, "the waiting thread's errno");
        reader r = {job, "", 0};
        pthread_t th;
        pthread_create(&th, NULL, read_job_error, &r);
        pthread_join(th, NULL);
        CHECK(r.os == ENOTDIR && strstr(r.msg, "plain_file") != NULL,
              "the job's message from another thread: %d %s", r.os, r.msg);
        char small[8];
        size_t full = psv_job_error_message(job, small, sizeof small);
        CHECK(full == strlen(r.msg) && strlen(small) == 7, "snprintf semantics");
        CHECK(psv_job_wait(job, 0) == PSV_ERR_IO, "again");
        psv_job_free(job);
        psv_save_options_free(o);
    }
    /* A write callback that fails: PSV_ERR_IO at wait. */
    psv_job *job = NULL;
    CHECK_OK(psv_saver_save_stream_async(s, failing_write, NULL, NULL, &job));
    CHECK(psv_job_wait(job, -1) == PSV_ERR_IO, "failing callback: IO");
    char msg[256];
    psv_job_error_message(job, msg, sizeof msg);
    CHECK(strstr(msg, "returned 5") != NULL, "callback message: %s", msg);
    psv_job_free(job);
    psv_saver_free(s);
}

/* ---- 7. 8 threads, each with 2 jobs at once ---- */

static void *thread_jobs(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    rb_arrays *a = malloc(sizeof *a);
    rb_arrays *want = malloc(sizeof *want);
    psv_save_options *o = psv_save_options_new();
    CHECK_OK(psv_save_options_set_snapshot(o, true));
    CHECK_OK(psv_save_options_set_threads(o, id % 3));
    char p1[RB_PATH], p2[RB_PATH], name[64];
    snprintf(name, sizeof name, "t%u_a.npz", id);
    path_of(p1, sizeof p1, name);
    snprintf(name, sizeof name, "t%u_b.npz", id);
    path_of(p2, sizeof p2, name);
    for (unsigned r = 0; r < ROUNDS; r++) {
        rb_fill(a, id, r);
        rb_fill(want, id, r);
        psv_saver *s = rb_saver(a);
        psv_job *j1 = NULL, *j2 = NULL;
        CHECK_OK(psv_saver_save_async(s, p1, o, &j1));
        CHECK_OK(psv_saver_save_async(s, p2, o, &j2));
        rb_fill(a, id + 100, r); /* after the snapshots: not in the files */
        psv_saver_free(s);
        CHECK_OK(psv_job_wait(j2, -1));
        CHECK_OK(psv_job_wait(j1, -1));
        psv_job_free(j1);
        psv_job_free(j2);
        const char *paths[2] = {p1, p2};
        for (int k = 0; k < 2; k++) {
            psv_archive *ar = NULL;
            CHECK_OK(psv_restore(paths[k], NULL, &ar));
            char what[64];
            snprintf(what, sizeof what, "thread %u round %u file %d", id, r, k);
            if (ar != NULL) {
                rb_check_archive(ar, want, what);
            }
            psv_free(ar);
        }
    }
    psv_save_options_free(o);
    free(a);
    free(want);
    return NULL;
}

static void test_threads(void)
{
    pthread_t th[NTHREADS];
    for (uintptr_t i = 0; i < NTHREADS; i++) {
        pthread_create(&th[i], NULL, thread_jobs, (void *)i);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
    }
    CHECK(count_tmp() == 0, "no temporary file left by the threads");
}

/* ---- 8. fork while a job runs ---- */

static void test_fork(void)
{
    static rb_arrays a, mine;
    rb_fill(&a, 8, 0);
    psv_saver *s = rb_saver(&a);
    gate g;
    gate_init(&g, true);
    psv_job *job = NULL;
    CHECK_OK(psv_saver_save_stream_async(s, gate_write, &g, NULL, &job));
    gate_wait_entered(&g);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60);
        int bad = 0;
        bad |= psv_job_done(job);
        double t0 = now_ms();
        bad |= psv_job_wait(job, -1) != PSV_ERR_INVALID_ARG;
        bad |= now_ms() - t0 > 1000;
        /* The child saves and restores on its own. */
        char path[RB_PATH];
        path_of(path, sizeof path, "child.npz");
        rb_fill(&mine, 9, 0);
        psv_saver *cs = rb_saver(&mine);
        psv_job *cj = NULL;
        psv_save_options *o = psv_save_options_new();
        psv_save_options_set_snapshot(o, true);
        bad |= psv_saver_save_async(cs, path, o, &cj) != PSV_OK;
        bad |= psv_job_wait(cj, -1) != PSV_OK;
        psv_job_free(cj);
        psv_save_options_free(o);
        psv_saver_free(cs);
        psv_archive *ar = NULL;
        bad |= psv_restore(path, NULL, &ar) != PSV_OK;
        if (ar != NULL) {
            rb_check_archive(ar, &mine, "child");
        }
        psv_free(ar);
        /* The saver a parent's job borrows stays borrowed here: adding and borrowing give
         * BUSY, a snapshot save works. */
        static int32_t one[1] = {1};
        int64_t n1 = 1;
        bad |= psv_saver_add(s, "new", one, PSV_DTYPE_I32, &n1, 1) != PSV_ERR_BUSY;
        psv_job *bj = NULL;
        bad |= psv_saver_save_async(s, path, NULL, &bj) != PSV_ERR_BUSY || bj != NULL;
        o = psv_save_options_new();
        psv_save_options_set_snapshot(o, true);
        bad |= psv_saver_save_async(s, path, o, &bj) != PSV_OK;
        bad |= psv_job_wait(bj, -1) != PSV_OK;
        psv_job_free(bj);
        psv_save_options_free(o);
        /* The parent's handles: freed without waiting. */
        psv_job_free(job);
        psv_saver_free(s);
        _exit(bad || rb_failures() ? 1 : 0);
    }
    CHECK(pid > 0, "fork");
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    gate_release(&g);
    CHECK_OK(psv_job_wait(job, -1));
    psv_job_free(job);
    psv_saver_free(s);
    gate_destroy(&g);
}

int main(int argc, char **argv)
{
    /* A subdirectory: run_valgrind.sh keeps its log in SCRATCH_DIR itself. */
    char scratch[RB_PATH - 128];
    if (argc != 2 || strlen(argv[1]) + 8 >= sizeof scratch) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    snprintf(scratch, sizeof scratch, "%s/run", argv[1]);
    char *args[2] = {argv[0], scratch};
    rb_scratch_dir(2, args, g_dir, sizeof g_dir);
    test_arguments();
    test_destinations(false);
    test_destinations(true);
    test_snapshot();
    test_borrowed();
    test_cancel();
    test_errors();
    test_threads();
    /* Under valgrind the child's exit is leak-checked too, and a child necessarily leaks what
     * the parent's threads held: the fork part runs in the ASan build only. */
    if (getenv("PSV_TEST_NO_FORK") == NULL) {
        test_fork();
    }
    unsigned long failures = rb_failures();
    printf("test_async: %lu checks, %lu failures\n", g_checks, failures);
    return failures == 0 ? 0 : 1;
}
