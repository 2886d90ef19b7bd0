/*
 * test_progress.c - progress callbacks and cancellation from C.
 *
 * Save and restore (from a file, from memory, mapped) of 192 MiB with a recording callback:
 * every call on the thread that called save/restore (pthread_self, also when that is not the
 * main thread), never re-entered, userdata passed back unchanged, total constant, done
 * non-decreasing and <= total, at least two calls, and the last call has done == total
 * (for a save, total is the file's size). A NULL callback removes it (no calls).
 *
 * Cancellation (the callback returns non-zero): at the first call, after the first call, and
 * at the final done == total call. A cancelled save returns PSV_ERR_ABORTED with a message,
 * leaves the old target byte-identical and no temporary file; a cancelled restore returns
 * PSV_ERR_ABORTED and sets *out to NULL.
 *
 * Usage: test_progress SCRATCH_DIR. Built by `make test-progress` (mk/robust.mk) with
 * -std=c99 -Wall -Wextra -Wpedantic -Werror under ASan+UBSan. Exit status 1 on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include "robust_util.h"

#define N_BIG 8
#define BIG_ELEMS (6u << 20) /* uint32: 24 MiB each, 192 MiB in all */

static char g_dir[RB_PATH - 64];
static uint32_t *g_big[N_BIG];

typedef struct {
    void *self;             /* userdata must come back as this pointer */
    pthread_t caller;       /* the thread that called save/restore */
    unsigned long calls;
    uint64_t first_total, last_done, last_total;
    unsigned long wrong_thread, wrong_userdata, decreasing, over_total, total_changed, reentered;
    int in_cb;
    unsigned long cancel_at_call; /* return non-zero from this call on (0: never) */
    bool cancel_at_end;           /* return non-zero when done == total */
} recorder;

static void rec_init(recorder *r)
{
    memset(r, 0, sizeof *r);
    r->self = r;
    r->caller = pthread_self();
}

static int on_progress(void *userdata, uint64_t done, uint64_t total)
{
    recorder *r = userdata;
    if (r == NULL || r->self != r) {
        /* Cannot record into a bad pointer: count it in a global check. */
        CHECK(false, "progress callback got userdata %p", userdata);
        return 1;
    }
    if (r->in_cb++) {
        r->reentered++;
    }
    if (!pthread_equal(pthread_self(), r->caller)) {
        r->wrong_thread++;
    }
    if (r->calls == 0) {
        r->first_total = total;
    } else {
        if (done < r->last_done) {
            r->decreasing++;
        }
        if (total != r->first_total) {
            r->total_changed++;
        }
    }
    if (done > total) {
        r->over_total++;
    }
    r->calls++;
    r->last_done = done;
    r->last_total = total;
    int ret = 0;
    if (r->cancel_at_call != 0 && r->calls >= r->cancel_at_call) {
        ret = 1;
    }
    if (r->cancel_at_end && done == total) {
        ret = 1;
    }
    r->in_cb--;
    return ret;
}

/* The invariants of every recorded operation; `complete` means it ran to the end. */
static void check_recorder(const recorder *r, const char *what, bool complete)
{
    CHECK(r->wrong_thread == 0, "%s: %lu calls on a thread other than the caller's", what,
          r->wrong_thread);
    CHECK(r->reentered == 0, "%s: callback re-entered %lu times", what, r->reentered);
    CHECK(r->decreasing == 0, "%s: done decreased %lu times", what, r->decreasing);
    CHECK(r->over_total == 0, "%s: done > total %lu times", what, r->over_total);
    CHECK(r->total_changed == 0, "%s: total changed %lu times", what, r->total_changed);
    if (complete) {
        CHECK(r->calls >= 2, "%s: only %lu calls for 192 MiB", what, r->calls);
        CHECK(r->last_done == r->last_total && r->last_total > 0,
              "%s: last call done %" PRIu64 " != total %" PRIu64, what, r->last_done,
              r->last_total);
    }
}

static psv_saver *big_saver(void)
{
    psv_saver *s = psv_saver_new();
    CHECK(s != NULL, "psv_saver_new");
    for (unsigned k = 0; s != NULL && k < N_BIG; k++) {
        char key[16];
        int64_t shape[1] = {BIG_ELEMS};
        snprintf(key, sizeof key, "big%u", k);
        CHECK_OK(psv_saver_add(s, key, g_big[k], PSV_DTYPE_U32, shape, 1));
    }
    return s;
}

static void check_big_archive(const psv_archive *ar, const char *what)
{
    CHECK(psv_archive_count(ar) == N_BIG, "%s: count %zu", what, psv_archive_count(ar));
    for (unsigned k = 0; k < N_BIG && psv_archive_count(ar) == N_BIG; k++) {
        const void *d = psv_archive_data(ar, k);
        CHECK(psv_archive_nbytes(ar, k) == BIG_ELEMS * 4u && d != NULL &&
                  memcmp(d, g_big[k], BIG_ELEMS * 4u) == 0,
              "%s: array %u differs", what, k);
    }
}

static const char *path_of(const char *name)
{
    static char bufs[8][RB_PATH];
    static unsigned next;
    char *b = bufs[next++ % 8];
    snprintf(b, RB_PATH, "%s/%s", g_dir, name);
    return b;
}

/* ---- save ---- */

static void test_save_progress(const char *what, size_t threads)
{
    recorder r;
    rec_init(&r);
    psv_saver *s = big_saver();
    psv_save_options *o = psv_save_options_new();
    CHECK_OK(psv_save_options_set_threads(o, threads));
    CHECK_OK(psv_save_options_set_progress(o, on_progress, &r));
    const char *path = path_of("progress.npz");
    CHECK_OK(psv_saver_save(s, path, o));
    check_recorder(&r, what, true);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == r.last_total,
          "%s: total %" PRIu64 " is not the file size %lld", what, r.last_total,
          (long long)st.st_size);
    psv_archive *ar = NULL;
    CHECK_OK(psv_restore(path, NULL, &ar));
    check_big_archive(ar, what);
    psv_free(ar);
    printf("  %-44s %lu calls, total %" PRIu64 "\n", what, r.calls, r.last_total);

    /* Removing the callback: no more calls. */
    rec_init(&r);
    CHECK_OK(psv_save_options_set_progress(o, NULL, &r));
    CHECK_OK(psv_saver_save(s, path, o));
    CHECK(r.calls == 0, "%s: %lu calls after the callback was removed", what, r.calls);
    psv_save_options_free(o);
    psv_saver_free(s);
}

static void *save_progress_thread(void *arg)
{
    (void)arg;
    test_save_progress("save from a second thread, 3 threads", 3);
    return NULL;
}

static void test_save_cancel(const char *what, unsigned long at_call, bool at_end)
{
    /* The old target: a small, different archive. */
    const char *path = path_of("cancel.npz");
    int32_t old[1000];
    for (int i = 0; i < 1000; i++) {
        old[i] = i * 7;
    }
    psv_saver *os = psv_saver_new();
    int64_t oshape[1] = {1000};
    CHECK_OK(psv_saver_add(os, "old", old, PSV_DTYPE_I32, oshape, 1));
    CHECK_OK(psv_saver_save(os, path, NULL));
    psv_saver_free(os);
    size_t before_len = 0;
    unsigned char *before = rb_read_file(path, &before_len);
    CHECK(before != NULL, "cannot read %s", path);

    recorder r;
    rec_init(&r);
    r.cancel_at_call = at_call;
    r.cancel_at_end = at_end;
    psv_saver *s = big_saver();
    psv_save_options *o = psv_save_options_new();
    CHECK_OK(psv_save_options_set_progress(o, on_progress, &r));
    psv_status st = psv_saver_save(s, path, o);
    char msg[1024];
    rb_err(msg, sizeof msg);
    CHECK(st == PSV_ERR_ABORTED, "%s: save returned %s (%s), expected PSV_ERR_ABORTED (%lu calls)",
          what, psv_status_str(st), msg, r.calls);
    CHECK(msg[0] != '\0', "%s: no error message", what);
    check_recorder(&r, what, false);
    if (at_end) {
        CHECK(r.last_done == r.last_total, "%s: cancelled before the end", what);
    } else {
        CHECK(r.calls >= at_call, "%s: %lu calls", what, r.calls);
    }
    size_t after_len = 0;
    unsigned char *after = rb_read_file(path, &after_len);
    CHECK(after != NULL && before != NULL && after_len == before_len &&
              memcmp(after, before, before_len) == 0,
          "%s: the old target changed (%zu -> %zu bytes)", what, before_len, after_len);
    int temps = rb_count_suffix(g_dir, ".psv-tmp");
    CHECK(temps == 0, "%s: %d temporary files left", what, temps);
    printf("  %-44s %s after %lu calls, target intact, %d temp files\n", what,
           psv_status_str(st), r.calls, temps);
    free(before);
    free(after);
    psv_save_options_free(o);
    psv_saver_free(s);
}

/* ---- restore ---- */

enum source { FROM_FILE, FROM_MEMORY, MAPPED };

static psv_status do_restore(enum source src, psv_restore_options *o, psv_archive **out)
{
    const char *path = path_of("progress.npz");
    if (src == FROM_MEMORY) {
        size_t len = 0;
        unsigned char *buf = rb_read_file(path, &len);
        CHECK(buf != NULL, "cannot read %s", path);
        psv_status st = psv_restore_from_memory(buf, len, o, out);
        free(buf);
        return st;
    }
    if (src == MAPPED) {
        CHECK_OK(psv_restore_options_set_mmap(o, true));
    }
    return psv_restore(path, o, out);
}

static void test_restore_progress(const char *what, enum source src, size_t threads)
{
    recorder r;
    rec_init(&r);
    psv_restore_options *o = psv_restore_options_new();
    CHECK_OK(psv_restore_options_set_threads(o, threads));
    CHECK_OK(psv_restore_options_set_progress(o, on_progress, &r));
    psv_archive *ar = NULL;
    psv_status st = do_restore(src, o, &ar);
    char msg[1024];
    CHECK(st == PSV_OK, "%s: %s: %s", what, psv_status_str(st), rb_err(msg, sizeof msg));
    check_big_archive(ar, what);
    psv_free(ar);
    /* A mapped restore reads nothing up front: only the final call is required. */
    if (src == MAPPED) {
        check_recorder(&r, what, false);
        CHECK(r.calls >= 1 && r.last_done == r.last_total,
              "%s: %lu calls, last done %" PRIu64 " of %" PRIu64, what, r.calls, r.last_done,
              r.last_total);
    } else {
        check_recorder(&r, what, true);
    }
    printf("  %-44s %lu calls, total %" PRIu64 "\n", what, r.calls, r.last_total);
    rec_init(&r);
    CHECK_OK(psv_restore_options_set_progress(o, NULL, NULL));
    ar = NULL;
    CHECK_OK(do_restore(src, o, &ar));
    CHECK(r.calls == 0, "%s: %lu calls after the callback was removed", what, r.calls);
    psv_free(ar);
    psv_restore_options_free(o);
}

static void test_restore_cancel(const char *what, enum source src, unsigned long at_call,
                                bool at_end)
{
    recorder r;
    rec_init(&r);
    r.cancel_at_call = at_call;
    r.cancel_at_end = at_end;
    psv_restore_options *o = psv_restore_options_new();
    CHECK_OK(psv_restore_options_set_progress(o, on_progress, &r));
    int sentinel = 0;
    psv_archive *ar = (psv_archive *)(void *)&sentinel;
    psv_status st = do_restore(src, o, &ar);
    char msg[1024];
    rb_err(msg, sizeof msg);
    CHECK(st == PSV_ERR_ABORTED, "%s: restore returned %s (%s), expected PSV_ERR_ABORTED", what,
          psv_status_str(st), msg);
    CHECK(msg[0] != '\0', "%s: no error message", what);
    CHECK(ar == NULL, "%s: *out is %p, not NULL", what, (void *)ar);
    if (ar != NULL && ar != (psv_archive *)(void *)&sentinel) {
        psv_free(ar);
    }
    check_recorder(&r, what, false);
    printf("  %-44s %s after %lu calls, *out %s\n", what, psv_status_str(st), r.calls,
           ar == NULL ? "NULL" : "NOT NULL");
    psv_restore_options_free(o);
}

int main(int argc, char **argv)
{
    rb_scratch_dir(argc, argv, g_dir, sizeof g_dir);
    for (unsigned k = 0; k < N_BIG; k++) {
        g_big[k] = malloc(BIG_ELEMS * sizeof(uint32_t));
        if (g_big[k] == NULL) {
            fprintf(stderr, "out of memory\n");
            return 2;
        }
        for (uint32_t i = 0; i < BIG_ELEMS; i++) {
            g_big[k][i] = i * 2654435761u + k;
        }
    }

    printf("save progress:\n");
    test_save_progress("save, all cores", 0);
    test_save_progress("save, 1 thread", 1);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, save_progress_thread, NULL) == 0, "pthread_create");
    pthread_join(t, NULL);

    printf("save cancel:\n");
    test_save_cancel("cancel at the first call", 1, false);
    test_save_cancel("cancel after the first call", 2, false);
    test_save_cancel("cancel at the final call (done == total)", 0, true);

    printf("restore progress:\n");
    test_restore_progress("restore, all cores", FROM_FILE, 0);
    test_restore_progress("restore, 1 thread", FROM_FILE, 1);
    test_restore_progress("restore from memory", FROM_MEMORY, 0);
    test_restore_progress("restore mapped", MAPPED, 0);

    printf("restore cancel:\n");
    test_restore_cancel("cancel at the first call", FROM_FILE, 1, false);
    test_restore_cancel("cancel after the first call", FROM_FILE, 2, false);
    test_restore_cancel("cancel at the final call (done == total)", FROM_FILE, 0, true);
    test_restore_cancel("from memory, cancel after the first call", FROM_MEMORY, 2, false);
    test_restore_cancel("mapped, cancel at the final call", MAPPED, 0, true);

    for (unsigned k = 0; k < N_BIG; k++) {
        free(g_big[k]);
    }
    int temps = rb_count_suffix(g_dir, ".psv-tmp");
    CHECK(temps == 0, "%d temporary files left in %s", temps, g_dir);
    printf("test_progress: %lu checks, %lu failures\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
