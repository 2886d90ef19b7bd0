/*
 * test_files.h - scratch-directory helpers shared by the C tests (test_api.c and, through
 * robust_util.h, test_threads.c, test_fork.c and test_progress.c).
 *
 * static inline so that each test uses what it needs without -Wunused-function. Include after
 * defining _POSIX_C_SOURCE 200809L.
 */
#ifndef PSV_TEST_FILES_H
#define PSV_TEST_FILES_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define TF_PATH 4096

/* mkdir -p path; 0 on success, -1 with errno set. */
static inline int tf_mkdir_p(const char *path)
{
    char tmp[TF_PATH];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
                return -1;
            }
            *p = '/';
        }
    }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
        return -1;
    }
    return 0;
}

/* mkdir -p dir, then remove the regular files and empty directories directly in it. Exits
 * with status 2 if dir cannot be created or read. */
static inline void tf_reset_dir(const char *dir)
{
    if (tf_mkdir_p(dir) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
        exit(2);
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "cannot open %s: %s\n", dir, strerror(errno));
        exit(2);
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char full[TF_PATH * 2];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (unlink(full) != 0) {
            rmdir(full);
        }
    }
    closedir(d);
}

#endif
