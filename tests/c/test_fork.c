/*
 * test_fork.c - fork() after libpsv has started its worker pools.
 *
 * The parent saves and restores (starting the default pool and a 3-thread pool), then forks 4
 * children at once; each child (alarm(30): a hang kills it with SIGALRM) saves and restores its
 * own file 5 times with both pool sizes, restores the parent's file, and exits 0 only if every
 * value is exact. The parent keeps saving and restoring meanwhile, then waits for the children
 * under alarm(60) (a SIGALRM handler without SA_RESTART interrupts waitpid: deadlock). Finally
 * a fork from a second thread (not the main thread), after that thread used the library.
 *
 * Usage: test_fork SCRATCH_DIR. Built by `make test-threads` (mk/robust.mk) with
 * -std=c99 -Wall -Wextra -Wpedantic -Werror under ASan+UBSan. Exit status 1 on any failure.
 */
#define _POSIX_C_SOURCE 200809L

#include "robust_util.h"

#include <signal.h>
#include <sys/wait.h>

#define NCHILDREN 4
#define CHILD_ROUNDS 5

static char g_dir[RB_PATH - 64];
static volatile sig_atomic_t g_alarm;

static void on_alarm(int sig)
{
    (void)sig;
    g_alarm = 1;
}

static void child_work(unsigned id, const rb_arrays *parent_arrays)
{
    alarm(30); /* default action: a deadlocked child dies of SIGALRM */
    static rb_arrays a;
    char path[RB_PATH], what[64];
    snprintf(path, sizeof path, "%s/child%u.npz", g_dir, id);
    for (unsigned r = 0; r < CHILD_ROUNDS; r++) {
        snprintf(what, sizeof what, "child %u round %u", id, r);
        rb_fill(&a, id, r);
        rb_round_trip(&a, path, r % 2 ? 3 : 0, r % 2 ? 0 : 3, what);
    }
    char ppath[RB_PATH];
    snprintf(ppath, sizeof ppath, "%s/parent.npz", g_dir);
    psv_archive *ar = NULL;
    CHECK_OK(psv_restore(ppath, NULL, &ar));
    rb_check_archive(ar, parent_arrays, "parent's file in child");
    psv_free(ar);
}

/* Waits for pid under the parent's alarm; returns true if it exited with status 0. */
static bool wait_child(pid_t pid, const char *what)
{
    int status = 0;
    pid_t got;
    do {
        got = waitpid(pid, &status, 0);
    } while (got < 0 && errno == EINTR && !g_alarm);
    if (got != pid) {
        CHECK(false, "%s (pid %d): no exit within the timeout: DEADLOCK (waitpid: %s)", what,
              (int)pid, strerror(errno));
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return false;
    }
    if (WIFSIGNALED(status)) {
        CHECK(false, "%s (pid %d) died of signal %d%s", what, (int)pid, WTERMSIG(status),
              WTERMSIG(status) == SIGALRM ? " (its own 30 s alarm: DEADLOCK)" : "");
        return false;
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s (pid %d) exited with %d", what,
          (int)pid, WEXITSTATUS(status));
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static rb_arrays g_parent_arrays;

static void *forking_thread(void *arg)
{
    (void)arg;
    static rb_arrays a;
    char path[RB_PATH];
    snprintf(path, sizeof path, "%s/thread.npz", g_dir);
    rb_fill(&a, 77, 1);
    rb_round_trip(&a, path, 2, 2, "second thread before fork");
    pid_t pid = fork();
    if (pid == 0) {
        child_work(200, &g_parent_arrays);
        _exit(rb_failures() == 0 ? 0 : 1);
    }
    CHECK(pid > 0, "fork from a second thread: %s", strerror(errno));
    if (pid > 0) {
        wait_child(pid, "child forked from a second thread");
    }
    return NULL;
}

int main(int argc, char **argv)
{
    rb_scratch_dir(argc, argv, g_dir, sizeof g_dir);
    setvbuf(stdout, NULL, _IONBF, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: waitpid returns EINTR when the alarm fires */
    sigaction(SIGALRM, &sa, NULL);

    /* The parent uses the library first: both pools exist when it forks. */
    char ppath[RB_PATH];
    snprintf(ppath, sizeof ppath, "%s/parent.npz", g_dir);
    rb_fill(&g_parent_arrays, 0, 0);
    rb_round_trip(&g_parent_arrays, ppath, 0, 3, "parent before fork");
    rb_round_trip(&g_parent_arrays, ppath, 3, 0, "parent before fork");

    pid_t pids[NCHILDREN];
    for (unsigned i = 0; i < NCHILDREN; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            signal(SIGALRM, SIG_DFL);
            child_work(i + 1, &g_parent_arrays);
            _exit(rb_failures() == 0 ? 0 : 1);
        }
        CHECK(pids[i] > 0, "fork: %s", strerror(errno));
    }
    /* The parent's pools still work while the children run. */
    static rb_arrays mine;
    char mpath[RB_PATH];
    snprintf(mpath, sizeof mpath, "%s/parent2.npz", g_dir);
    for (unsigned r = 0; r < 3; r++) {
        rb_fill(&mine, 50, r);
        rb_round_trip(&mine, mpath, r % 2 ? 3 : 0, 0, "parent while children run");
    }
    alarm(60);
    unsigned ok = 0;
    for (unsigned i = 0; i < NCHILDREN; i++) {
        if (pids[i] > 0) {
            ok += wait_child(pids[i], "forked child");
        }
    }
    alarm(0);
    printf("fork: %u of %d concurrent children exact and finished\n", ok, NCHILDREN);

    /* Children's files, checked by the parent. */
    for (unsigned i = 0; i < NCHILDREN; i++) {
        char path[RB_PATH];
        snprintf(path, sizeof path, "%s/child%u.npz", g_dir, i + 1);
        rb_fill(&mine, i + 1, CHILD_ROUNDS - 1);
        psv_archive *ar = NULL;
        CHECK_OK(psv_restore(path, NULL, &ar));
        rb_check_archive(ar, &mine, "child's file in parent");
        psv_free(ar);
    }

    alarm(60);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, forking_thread, NULL) == 0, "pthread_create");
    pthread_join(t, NULL);
    alarm(0);
    printf("fork from a second thread: %s\n", rb_failures() ? "FAILED" : "ok");

    int temps = rb_count_suffix(g_dir, ".psv-tmp");
    CHECK(temps == 0, "%d temporary files left in %s", temps, g_dir);
    printf("test_fork: %lu checks, %lu failures\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
