/*
 * test_collective.c - C tests of the collective save API (psv_saver_manifest,
 * psv_collective_*) and psv_save_options_set_alignment: NULL, error and success
 * paths. Every "rank" runs in this one process (the blobs are passed by hand, as
 * a host's allgather would); tests/mpi/ runs the same flow under mpirun.
 *
 * Usage: test_collective SCRATCH_DIR
 * Built by `make test-collective-c` strictly, run under ASan+UBSan and valgrind.
 */
#define _POSIX_C_SOURCE 200809L

#include "psv.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long g_checks, g_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            g_failures++;                                                                          \
            fprintf(stderr, "%s:%d: FAIL: %s\n", __FILE__, __LINE__, #cond);                       \
        }                                                                                          \
    } while (0)

#define CHECK_ST(call, want)                                                                       \
    do {                                                                                           \
        psv_status st_ = (call);                                                                   \
        g_checks++;                                                                                \
        if (st_ != (want)) {                                                                       \
            char msg_[512];                                                                        \
            psv_last_error_message(msg_, sizeof msg_);                                             \
            g_failures++;                                                                          \
            fprintf(stderr, "%s:%d: FAIL: %s = %s, expected %s (%s)\n", __FILE__, __LINE__,        \
                    #call, psv_status_str(st_), psv_status_str(want), msg_);                       \
        }                                                                                          \
    } while (0)

static const char *g_dir;

static void path_of(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", g_dir, name);
}

/* The whole file at `path` (malloc'd; *len set), or NULL. */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

#define NRANKS 3
#define BIG ((2u << 20) + 40u) /* two write pieces; kept small for valgrind */

/* Rank r's arrays: rank 0 two (one large), rank 1 none, rank 2 three. */
static float g_big[BIG / 4];
static int32_t g_small[7] = {1, 2, 3, 4, 5, 6, 7};
static double g_d[3] = {0.5, 1.5, 2.5};
static uint8_t g_u8[100];

static psv_saver *rank_saver(int r)
{
    psv_saver *s = psv_saver_new();
    int64_t big_shape[1] = {BIG / 4}, seven[1] = {7}, three[1] = {3}, hundred[2] = {10, 10};
    if (r == 0) {
        CHECK_ST(psv_saver_add(s, "big", g_big, PSV_DTYPE_F32, big_shape, 1), PSV_OK);
        CHECK_ST(psv_saver_add(s, "small", g_small, PSV_DTYPE_I32, seven, 1), PSV_OK);
    } else if (r == 2) {
        CHECK_ST(psv_saver_add(s, "d", g_d, PSV_DTYPE_F64, three, 1), PSV_OK);
        CHECK_ST(psv_saver_add(s, "u8", g_u8, PSV_DTYPE_U8, hundred, 2), PSV_OK);
        CHECK_ST(psv_saver_add(s, "scalar", g_d, PSV_DTYPE_F64, NULL, 0), PSV_OK);
    }
    return s;
}

static void test_flow(size_t alignment)
{
    psv_saver *savers[NRANKS];
    psv_buffer *manifests[NRANKS], *reports[NRANKS];
    const void *blobs[NRANKS];
    size_t lens[NRANKS];
    psv_collective *cs[NRANKS];
    uint8_t ids[NRANKS][PSV_PLAN_ID_LEN];
    psv_save_options *opts = psv_save_options_new();
    char target[512], single[512], name[64];
    unsigned char *a, *b;
    size_t alen = 0, blen = 0;
    int r;

    CHECK_ST(psv_save_options_set_alignment(opts, alignment), PSV_OK);
    CHECK_ST(psv_save_options_set_threads(opts, 2), PSV_OK);
    snprintf(name, sizeof name, "coll_%zu", alignment);
    path_of(target, sizeof target, name);

    for (r = 0; r < NRANKS; r++) {
        savers[r] = rank_saver(r);
        CHECK_ST(psv_saver_manifest(savers[r], &manifests[r]), PSV_OK);
        blobs[r] = psv_buffer_data(manifests[r]);
        lens[r] = psv_buffer_len(manifests[r]);
    }
    for (r = 0; r < NRANKS; r++) {
        CHECK_ST(psv_collective_new(target, blobs, lens, NRANKS, (size_t)r, opts, &cs[r]), PSV_OK);
        CHECK_ST(psv_collective_plan_id(cs[r], ids[r]), PSV_OK);
        CHECK(memcmp(ids[r], ids[0], PSV_PLAN_ID_LEN) == 0);
        CHECK(strcmp(psv_collective_temp_path(cs[r]), psv_collective_temp_path(cs[0])) == 0);
    }
    /* Rank 1 cannot create; rank 2 cannot write before rank 0 created. */
    CHECK_ST(psv_collective_create(cs[1]), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_collective_write(cs[2], savers[2], &reports[2]), PSV_ERR_IO);
    CHECK(reports[2] == NULL);
    CHECK_ST(psv_collective_create(cs[0]), PSV_OK);
    CHECK(exists(psv_collective_temp_path(cs[0])));
    for (r = NRANKS - 1; r >= 0; r--) {
        CHECK_ST(psv_collective_write(cs[r], savers[r], &reports[r]), PSV_OK);
    }
    for (r = 0; r < NRANKS; r++) {
        blobs[r] = psv_buffer_data(reports[r]);
        lens[r] = psv_buffer_len(reports[r]);
    }
    CHECK_ST(psv_collective_commit(cs[1], blobs, lens, NRANKS), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_collective_commit(cs[0], blobs, lens, NRANKS - 1), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_collective_commit(cs[0], blobs, lens, NRANKS), PSV_OK);
    CHECK(!exists(psv_collective_temp_path(cs[0])));

    /* Byte identity with one process saving the same arrays in the same order. */
    {
        psv_saver *all = psv_saver_new();
        int64_t big_shape[1] = {BIG / 4}, seven[1] = {7}, three[1] = {3}, hundred[2] = {10, 10};
        CHECK_ST(psv_saver_add(all, "big", g_big, PSV_DTYPE_F32, big_shape, 1), PSV_OK);
        CHECK_ST(psv_saver_add(all, "small", g_small, PSV_DTYPE_I32, seven, 1), PSV_OK);
        CHECK_ST(psv_saver_add(all, "d", g_d, PSV_DTYPE_F64, three, 1), PSV_OK);
        CHECK_ST(psv_saver_add(all, "u8", g_u8, PSV_DTYPE_U8, hundred, 2), PSV_OK);
        CHECK_ST(psv_saver_add(all, "scalar", g_d, PSV_DTYPE_F64, NULL, 0), PSV_OK);
        snprintf(name, sizeof name, "single_%zu", alignment);
        path_of(single, sizeof single, name);
        CHECK_ST(psv_saver_save(all, single, opts), PSV_OK);
        psv_saver_free(all);
    }
    strcat(target, ".npz");
    strcat(single, ".npz");
    a = slurp(target, &alen);
    b = slurp(single, &blen);
    CHECK(a != NULL && b != NULL && alen == blen && memcmp(a, b, alen) == 0);
    free(a);
    free(b);

    /* Each "rank" restores only its own keys. */
    {
        psv_restore_options *ro = psv_restore_options_new();
        const char *keys[2] = {"d", "u8"};
        psv_archive *arc = NULL;
        size_t i = 99;
        CHECK_ST(psv_restore_options_set_keys(ro, keys, 2), PSV_OK);
        CHECK_ST(psv_restore(target, ro, &arc), PSV_OK);
        CHECK(psv_archive_count(arc) == 2);
        CHECK_ST(psv_archive_find(arc, "u8", &i), PSV_OK);
        CHECK(i == 1 && memcmp(psv_archive_data(arc, 0), g_d, sizeof g_d) == 0);
        CHECK_ST(psv_archive_find(arc, "big", &i), PSV_ERR_NOT_FOUND);
        psv_free(arc);
        psv_restore_options_free(ro);
    }

    for (r = 0; r < NRANKS; r++) {
        psv_buffer_free(manifests[r]);
        psv_buffer_free(reports[r]);
        psv_collective_free(cs[r]);
        psv_saver_free(savers[r]);
    }
    psv_save_options_free(opts);
}

static void test_errors(void)
{
    psv_saver *s0 = rank_saver(0), *dup = rank_saver(0), *s2 = rank_saver(2);
    psv_buffer *m0 = NULL, *md = NULL, *m2 = NULL, *crc = (psv_buffer *)1;
    const void *blobs[3];
    size_t lens[3];
    psv_collective *c = (psv_collective *)1;
    psv_save_options *opts = psv_save_options_new();
    uint8_t id[PSV_PLAN_ID_LEN], id2[PSV_PLAN_ID_LEN];
    char target[512], msg[512];
    static const unsigned char garbage[40] = "PSVMANIF\x01\0\0\0\xff\xff\xff\xff";
    int64_t four[1] = {4};
    int32_t four_ints[4] = {0};

    path_of(target, sizeof target, "errors");
    /* NULL arguments. */
    CHECK_ST(psv_saver_manifest(NULL, &m0), PSV_ERR_NULL_ARG);
    CHECK(m0 == NULL);
    CHECK_ST(psv_saver_manifest(s0, NULL), PSV_ERR_NULL_ARG);
    CHECK_ST(psv_saver_manifest(s0, &m0), PSV_OK);
    CHECK_ST(psv_saver_manifest(dup, &md), PSV_OK);
    CHECK_ST(psv_saver_manifest(s2, &m2), PSV_OK);
    blobs[0] = psv_buffer_data(m0);
    lens[0] = psv_buffer_len(m0);
    blobs[1] = psv_buffer_data(m2);
    lens[1] = psv_buffer_len(m2);
    CHECK_ST(psv_collective_new(NULL, blobs, lens, 2, 0, NULL, &c), PSV_ERR_NULL_ARG);
    CHECK(c == NULL);
    CHECK_ST(psv_collective_new(target, NULL, lens, 2, 0, NULL, &c), PSV_ERR_NULL_ARG);
    CHECK_ST(psv_collective_new(target, blobs, NULL, 2, 0, NULL, &c), PSV_ERR_NULL_ARG);
    CHECK_ST(psv_collective_new(target, blobs, lens, 2, 0, NULL, NULL), PSV_ERR_NULL_ARG);
    CHECK_ST(psv_collective_new(target, blobs, lens, 0, 0, NULL, &c), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_collective_new(target, blobs, lens, 2, 2, NULL, &c), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_collective_plan_id(NULL, id), PSV_ERR_NULL_ARG);
    CHECK(psv_collective_temp_path(NULL) == NULL);
    CHECK_ST(psv_collective_create(NULL), PSV_ERR_NULL_ARG);
    CHECK_ST(psv_collective_write(NULL, s0, &crc), PSV_ERR_NULL_ARG);
    CHECK(crc == NULL);
    CHECK_ST(psv_collective_commit(NULL, blobs, lens, 2), PSV_ERR_NULL_ARG);
    CHECK_ST(psv_collective_abort(NULL), PSV_ERR_NULL_ARG);
    psv_collective_free(NULL);

    /* Bad options: alignment, compression. */
    CHECK_ST(psv_save_options_set_alignment(NULL, 4096), PSV_ERR_NULL_ARG);
    CHECK_ST(psv_save_options_set_alignment(opts, 0), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_save_options_set_alignment(opts, 100), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_save_options_set_alignment(opts, 32), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_save_options_set_alignment(opts, (size_t)2 << 20), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_save_options_set_compression(opts, 3), PSV_OK);
    CHECK_ST(psv_collective_new(target, blobs, lens, 2, 0, opts, &c), PSV_ERR_INVALID_ARG);
    CHECK_ST(psv_save_options_set_compression(opts, 0), PSV_OK);

    /* A hostile manifest: FORMAT naming its rank; a truncated one too. */
    blobs[1] = garbage;
    lens[1] = sizeof garbage;
    CHECK_ST(psv_collective_new(target, blobs, lens, 2, 0, NULL, &c), PSV_ERR_FORMAT);
    psv_last_error_message(msg, sizeof msg);
    CHECK(strstr(msg, "rank 1") != NULL);
    blobs[1] = psv_buffer_data(m2);
    lens[1] = psv_buffer_len(m2) - 1;
    CHECK_ST(psv_collective_new(target, blobs, lens, 2, 0, NULL, &c), PSV_ERR_FORMAT);
    blobs[1] = NULL;
    lens[1] = 5;
    CHECK_ST(psv_collective_new(target, blobs, lens, 2, 0, NULL, &c), PSV_ERR_NULL_ARG);

    /* The same keys on ranks 0 and 2: INVALID_ARG naming both, on every rank. */
    blobs[1] = psv_buffer_data(m2);
    lens[1] = psv_buffer_len(m2);
    blobs[2] = psv_buffer_data(md);
    lens[2] = psv_buffer_len(md);
    CHECK_ST(psv_collective_new(target, blobs, lens, 3, 1, NULL, &c), PSV_ERR_INVALID_ARG);
    psv_last_error_message(msg, sizeof msg);
    CHECK(strstr(msg, "rank 0 and rank 2") != NULL);

    /* Blobs in another order: another plan id. */
    CHECK_ST(psv_collective_new(target, blobs, lens, 2, 0, NULL, &c), PSV_OK);
    CHECK_ST(psv_collective_plan_id(c, id), PSV_OK);
    psv_collective_free(c);
    blobs[0] = psv_buffer_data(m2);
    lens[0] = psv_buffer_len(m2);
    blobs[1] = psv_buffer_data(m0);
    lens[1] = psv_buffer_len(m0);
    CHECK_ST(psv_collective_new(target, blobs, lens, 2, 1, NULL, &c), PSV_OK);
    CHECK_ST(psv_collective_plan_id(c, id2), PSV_OK);
    CHECK(memcmp(id, id2, PSV_PLAN_ID_LEN) != 0);

    /* A changed shape since the manifest: INVALID_ARG; abort removes the file. */
    CHECK_ST(psv_collective_create(c), PSV_ERR_INVALID_ARG); /* rank 1 */
    psv_collective_free(c);
    CHECK_ST(psv_collective_new(target, blobs, lens, 2, 0, NULL, &c), PSV_OK);
    CHECK_ST(psv_collective_create(c), PSV_OK);
    {
        psv_saver *changed = psv_saver_new();
        CHECK_ST(psv_saver_add(changed, "d", four_ints, PSV_DTYPE_I32, four, 1), PSV_OK);
        CHECK_ST(psv_collective_write(c, changed, &crc), PSV_ERR_INVALID_ARG);
        CHECK(crc == NULL);
        psv_saver_free(changed);
    }
    CHECK_ST(psv_collective_write(c, s2, NULL), PSV_ERR_NULL_ARG);
    CHECK_ST(psv_collective_write(c, NULL, &crc), PSV_ERR_NULL_ARG);
    CHECK(exists(psv_collective_temp_path(c)));
    CHECK_ST(psv_collective_abort(c), PSV_OK);
    CHECK(!exists(psv_collective_temp_path(c)));
    CHECK_ST(psv_collective_abort(c), PSV_OK);
    CHECK_ST(psv_collective_write(c, s2, &crc), PSV_ERR_INVALID_ARG);
    psv_collective_free(c);
    strcat(target, ".npz");
    CHECK(!exists(target));

    /* Freeing rank 0's handle after create, before commit, removes the file too. */
    blobs[0] = psv_buffer_data(m0);
    lens[0] = psv_buffer_len(m0);
    CHECK_ST(psv_collective_new(target, blobs, lens, 1, 0, NULL, &c), PSV_OK);
    CHECK_ST(psv_collective_create(c), PSV_OK);
    {
        char temp[512];
        snprintf(temp, sizeof temp, "%s", psv_collective_temp_path(c));
        CHECK(exists(temp));
        psv_collective_free(c);
        CHECK(!exists(temp));
    }

    psv_buffer_free(m0);
    psv_buffer_free(md);
    psv_buffer_free(m2);
    psv_saver_free(s0);
    psv_saver_free(dup);
    psv_saver_free(s2);
    psv_save_options_free(opts);
}

int main(int argc, char **argv)
{
    size_t i;
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    mkdir(g_dir, 0777);
    for (i = 0; i < BIG / 4; i++) g_big[i] = (float)i * 0.25f;
    for (i = 0; i < sizeof g_u8; i++) g_u8[i] = (uint8_t)(i * 7);
    test_flow(64);
    test_flow(4096);
    test_flow((size_t)1 << 20);
    test_errors();
    printf("test_collective: %lu checks, %lu failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
