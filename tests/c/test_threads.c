/*
 * test_threads.c - libpsv from many threads at once (issue "never lose a file, never crash").
 *
 *   1. 8 threads, each saving and restoring its own file 100 times with its own values
 *      (thread counts 0..3 for save and restore varied per round): every value exact every
 *      time, through every accessor.
 *   2. One archive read by 8 threads at once (released together by a barrier): every accessor,
 *      every value, 64-byte alignment, per-thread last-error messages (each thread looks up
 *      its own missing key and must see its own message), while the same threads also restore
 *      the same file concurrently and compare with the shared archive.
 *   3. 8 threads saving different versions over the SAME file at once (released together by a
 *      barrier, 20 rounds): after every round the file restores to exactly one thread's
 *      version, never a mix (each save has its own temporary file; the last rename wins).
 *   4. No temporary file is left in the directory.
 *
 * Usage: test_threads SCRATCH_DIR. Built by `make test-threads` (mk/robust.mk) with
 * -std=c99 -Wall -Wextra -Wpedantic -Werror under ASan+UBSan. Exit status 1 on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include "robust_util.h"

#include <time.h>

#define NTHREADS 8
#define ROUNDS 100
#define READ_ITERS 2000
#define SHARED_RESTORES 5

static char g_dir[RB_PATH - 64];

/* ---- part 1: own files ---- */

typedef struct {
    unsigned id;
    rb_arrays *arrays;
} own_job;

static void *own_files_thread(void *arg)
{
    own_job *job = arg;
    char path[RB_PATH];
    snprintf(path, sizeof path, "%s/t%u.npz", g_dir, job->id);
    for (unsigned r = 0; r < ROUNDS; r++) {
        char what[64];
        snprintf(what, sizeof what, "thread %u round %u", job->id, r);
        rb_fill(job->arrays, job->id, r);
        rb_round_trip(job->arrays, path, r % 4, (r + job->id) % 4, what);
    }
    return NULL;
}

/* ---- part 2: one archive, many readers ---- */

typedef struct {
    unsigned id;
    const psv_archive *shared;
    const rb_arrays *arrays;
    const char *path;
    pthread_barrier_t *barrier;
} reader_job;

static void *reader_thread(void *arg)
{
    reader_job *job = arg;
    char what[64], missing[64], msg[1024];
    snprintf(what, sizeof what, "reader %u", job->id);
    snprintf(missing, sizeof missing, "missing-key-of-thread-%u", job->id);
    pthread_barrier_wait(job->barrier);
    for (unsigned it = 0; it < READ_ITERS; it++) {
        rb_check_archive(job->shared, job->arrays, what);
        size_t idx = 12345;
        psv_status st = psv_archive_find(job->shared, missing, &idx);
        rb_err(msg, sizeof msg);
        CHECK(st == PSV_ERR_NOT_FOUND, "%s: find(missing) = %s", what, psv_status_str(st));
        CHECK(idx == 12345, "%s: failed find wrote the index", what);
        CHECK(strstr(msg, missing) != NULL,
              "%s: last error \"%s\" is not this thread's (should name %s)", what, msg, missing);
        if (it % (READ_ITERS / SHARED_RESTORES) == 0) {
            /* An independent restore of the same file, compared with the shared archive. */
            psv_archive *own = NULL;
            CHECK_OK(psv_restore(job->path, NULL, &own));
            rb_check_archive(own, job->arrays, what);
            for (size_t k = 0; own != NULL && k < RB_N_ARRAYS; k++) {
                size_t n = psv_archive_nbytes(own, k);
                CHECK(n == psv_archive_nbytes(job->shared, k) &&
                          (n == 0 || memcmp(psv_archive_data(own, k),
                                            psv_archive_data(job->shared, k), n) == 0),
                      "%s: own restore differs from the shared archive at %zu", what, k);
            }
            psv_free(own);
        }
    }
    return NULL;
}

/* ---- part 3: one target, many writers ---- */

#define SAME_ROUNDS 20

typedef struct {
    unsigned id;
    const char *path;
    rb_arrays *arrays;
    pthread_barrier_t *barrier;
} writer_job;

static void *same_target_thread(void *arg)
{
    writer_job *job = arg;
    for (unsigned r = 0; r < SAME_ROUNDS; r++) {
        rb_fill(job->arrays, job->id, r);
        psv_saver *s = rb_saver(job->arrays);
        pthread_barrier_wait(job->barrier); /* everyone saves at once */
        CHECK_OK(psv_saver_save(s, job->path, NULL));
        psv_saver_free(s);
        pthread_barrier_wait(job->barrier); /* main checks the file */
        pthread_barrier_wait(job->barrier); /* ... and lets us go on */
    }
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    rb_scratch_dir(argc, argv, g_dir, sizeof g_dir);
    double t0 = now_s();

    /* 1 */
    pthread_t th[NTHREADS];
    own_job jobs[NTHREADS];
    for (unsigned i = 0; i < NTHREADS; i++) {
        jobs[i].id = i;
        jobs[i].arrays = malloc(sizeof(rb_arrays));
        if (jobs[i].arrays == NULL) {
            fprintf(stderr, "out of memory\n");
            return 2;
        }
        CHECK(pthread_create(&th[i], NULL, own_files_thread, &jobs[i]) == 0, "pthread_create");
    }
    for (unsigned i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
    }
    double t1 = now_s();
    printf("part 1: %d threads x %d save+restore rounds: %s (%.2fs)\n", NTHREADS, ROUNDS,
           rb_failures() ? "FAILED" : "ok", t1 - t0);
    for (unsigned i = 0; i < NTHREADS; i++) {
        /* The last round of each thread is what its file holds now. */
        char path[RB_PATH];
        snprintf(path, sizeof path, "%s/t%u.npz", g_dir, i);
        rb_fill(jobs[i].arrays, i, ROUNDS - 1);
        psv_archive *ar = NULL;
        CHECK_OK(psv_restore(path, NULL, &ar));
        rb_check_archive(ar, jobs[i].arrays, "final file");
        psv_free(ar);
        free(jobs[i].arrays);
    }

    /* 2 */
    rb_arrays *shared_arrays = malloc(sizeof(rb_arrays));
    if (shared_arrays == NULL) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    rb_fill(shared_arrays, 99, 7);
    char shared_path[RB_PATH];
    snprintf(shared_path, sizeof shared_path, "%s/shared.npz", g_dir);
    psv_saver *s = rb_saver(shared_arrays);
    CHECK_OK(psv_saver_save(s, shared_path, NULL));
    psv_saver_free(s);
    psv_archive *shared = NULL;
    CHECK_OK(psv_restore(shared_path, NULL, &shared));
    rb_check_archive(shared, shared_arrays, "shared (main thread)");
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    reader_job rj[NTHREADS];
    for (unsigned i = 0; i < NTHREADS; i++) {
        rj[i].id = i;
        rj[i].shared = shared;
        rj[i].arrays = shared_arrays;
        rj[i].path = shared_path;
        rj[i].barrier = &barrier;
        CHECK(pthread_create(&th[i], NULL, reader_thread, &rj[i]) == 0, "pthread_create");
    }
    for (unsigned i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
    }
    pthread_barrier_destroy(&barrier);
    /* The readers did not disturb the archive. */
    rb_check_archive(shared, shared_arrays, "shared (after readers)");
    psv_free(shared);
    free(shared_arrays);
    double t2 = now_s();
    printf("part 2: one archive read by %d threads x %d passes + %d restores each: %s (%.2fs)\n",
           NTHREADS, READ_ITERS, SHARED_RESTORES, rb_failures() ? "FAILED" : "ok", t2 - t1);

    /* 3 */
    {
        char same_path[RB_PATH];
        snprintf(same_path, sizeof same_path, "%s/same.npz", g_dir);
        pthread_barrier_t b;
        pthread_barrier_init(&b, NULL, NTHREADS + 1);
        writer_job wj[NTHREADS];
        rb_arrays *versions = malloc(NTHREADS * sizeof(rb_arrays));
        if (versions == NULL) {
            fprintf(stderr, "out of memory\n");
            return 2;
        }
        for (unsigned i = 0; i < NTHREADS; i++) {
            wj[i].id = 200 + i;
            wj[i].path = same_path;
            wj[i].arrays = &versions[i];
            wj[i].barrier = &b;
            CHECK(pthread_create(&th[i], NULL, same_target_thread, &wj[i]) == 0, "pthread_create");
        }
        unsigned winners[NTHREADS] = {0};
        for (unsigned r = 0; r < SAME_ROUNDS; r++) {
            pthread_barrier_wait(&b); /* saves start */
            pthread_barrier_wait(&b); /* saves done */
            psv_archive *ar = NULL;
            CHECK_OK(psv_restore(same_path, NULL, &ar));
            /* Whose version is it? f64[0] names the thread; then every array must match. */
            int who = -1;
            for (unsigned i = 0; ar != NULL && i < NTHREADS; i++) {
                const double *f = psv_archive_data(ar, 0);
                if (f != NULL && f[0] == versions[i].f64[0]) {
                    who = (int)i;
                }
            }
            CHECK(who >= 0, "round %u: the shared file is nobody's version", r);
            if (who >= 0) {
                char what[64];
                snprintf(what, sizeof what, "same file, round %u (thread %d's version)", r, who);
                rb_check_archive(ar, &versions[who], what);
                winners[who]++;
            }
            psv_free(ar);
            pthread_barrier_wait(&b); /* next round */
        }
        for (unsigned i = 0; i < NTHREADS; i++) {
            pthread_join(th[i], NULL);
        }
        pthread_barrier_destroy(&b);
        unsigned distinct = 0;
        for (unsigned i = 0; i < NTHREADS; i++) {
            distinct += winners[i] > 0;
        }
        free(versions);
        double t3 = now_s();
        printf("part 3: %d threads saving over one file x %d rounds: %s, %u distinct winners "
               "(%.2fs)\n",
               NTHREADS, SAME_ROUNDS, rb_failures() ? "FAILED" : "ok", distinct, t3 - t2);
    }

    /* 4 */
    int temps = rb_count_suffix(g_dir, ".psv-tmp");
    int npz = rb_count_suffix(g_dir, ".npz");
    CHECK(temps == 0, "%d temporary files left in %s", temps, g_dir);
    CHECK(npz == NTHREADS + 2, "%d .npz files in %s, expected %d", npz, g_dir, NTHREADS + 2);

    printf("test_threads: %lu checks, %lu failures\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
