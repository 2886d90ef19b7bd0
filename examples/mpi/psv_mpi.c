/*
 * psv_mpi.c - N MPI ranks save ONE .npz together with libpsv's collective save.
 * libpsv does not link MPI: this host moves libpsv's small blobs (manifests, plan
 * ids, CRC reports, statuses) with MPI collectives.
 *
 *   mpicc -std=c99 -Iinclude examples/mpi/psv_mpi.c -Ltarget/release -lpsv -o psv_mpi
 *   mpirun -np 4 ./psv_mpi OUT [--arrays N] [--kib K] [--align A] [--threads T]
 *                              [--empty-rank R] [--kill-rank R]
 *
 * Rank r saves N uint32 arrays "rank<r>/a<i>" of K*256 + 13*i + 7*r elements,
 * element j = j*31 + i*1000003 + r*7 (mod 2^32): uneven sizes, data a checker can
 * rebuild. --empty-rank R gives rank R no arrays. --kill-rank R makes rank R kill
 * itself (SIGKILL) in the middle of its writes (a fault test). Rank 0 prints
 * "temp: <temporary file>" before the writes, then one JSON line: ranks, bytes,
 * each rank's write time, the commit time, the total (from the manifests to the
 * rename) and the path written. Exit status 0 on success, 1 on failure (every rank
 * reports the same outcome).
 */
#define _POSIX_C_SOURCE 200809L

#include "psv.h"

#include <mpi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Kills this process once part of its data is written: the fault test. */
static int kill_midway(void *userdata, uint64_t done, uint64_t total)
{
    (void)userdata;
    if (done > 0 && done < total) {
        raise(SIGKILL);
    }
    return 0;
}

/* The worst status over every rank (any failure makes it non-zero everywhere). */
static psv_status agree(psv_status st)
{
    psv_status worst = 0;
    MPI_Allreduce(&st, &worst, 1, MPI_INT32_T, MPI_MAX, MPI_COMM_WORLD);
    return worst;
}

static void report(int rank, const char *step, psv_status st)
{
    char msg[1024];
    psv_last_error_message(msg, sizeof msg);
    fprintf(stderr, "rank %d: %s: %s: %s\n", rank, step, psv_status_str(st), msg);
}

/* Gathers every rank's blob (`len` bytes at `data`) on every rank (root < 0) or on `root`:
 * fills blobs[] / lens[] (pointers into one malloc'd buffer, returned; free it). */
static char *gather_blobs(const void *data, size_t len, int nranks, int root, const void **blobs,
                          size_t *lens)
{
    int n = (int)len, rank;
    int *counts = calloc((size_t)nranks, sizeof *counts);
    int *displs = calloc((size_t)nranks, sizeof *displs);
    char *all;
    long total = 0;
    int r;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (root < 0) {
        MPI_Allgather(&n, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD);
    } else {
        MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, root, MPI_COMM_WORLD);
    }
    for (r = 0; r < nranks; r++) {
        displs[r] = (int)total;
        total += counts[r];
    }
    all = malloc(total > 0 ? (size_t)total : 1);
    if (root < 0) {
        MPI_Allgatherv(data, n, MPI_BYTE, all, counts, displs, MPI_BYTE, MPI_COMM_WORLD);
    } else {
        MPI_Gatherv(data, n, MPI_BYTE, all, counts, displs, MPI_BYTE, root, MPI_COMM_WORLD);
    }
    for (r = 0; r < nranks; r++) {
        blobs[r] = all + displs[r];
        lens[r] = (size_t)counts[r];
    }
    free(counts);
    free(displs);
    return all;
}

int main(int argc, char **argv)
{
    int rank, nranks, i, narrays = 4, empty_rank = -1, kill_rank = -1;
    size_t kib = 64, align = 64, threads = 0;
    const char *out = NULL;
    uint32_t **data = NULL;
    psv_saver *s = psv_saver_new();
    psv_save_options *opts = psv_save_options_new();
    psv_buffer *manifest = NULL, *crcs = NULL;
    psv_collective *c = NULL;
    const void **blobs;
    size_t *lens;
    char *gathered = NULL;
    uint8_t id[PSV_PLAN_ID_LEN], *ids;
    psv_status st = PSV_OK, all;
    double t0, t_write = 0, t_commit = 0, *writes;
    int ok = 0;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--arrays") == 0 && i + 1 < argc) narrays = atoi(argv[++i]);
        else if (strcmp(argv[i], "--kib") == 0 && i + 1 < argc) kib = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--align") == 0 && i + 1 < argc) align = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--empty-rank") == 0 && i + 1 < argc) empty_rank = atoi(argv[++i]);
        else if (strcmp(argv[i], "--kill-rank") == 0 && i + 1 < argc) kill_rank = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !out) out = argv[i];
        else {
            if (rank == 0) fprintf(stderr, "usage: %s OUT [--arrays N] [--kib K] [--align A] "
                                           "[--threads T] [--empty-rank R] [--kill-rank R]\n", argv[0]);
            MPI_Finalize();
            return 2;
        }
    }
    if (!out || !s || !opts) {
        if (rank == 0) fprintf(stderr, "usage: %s OUT [options]\n", argv[0]);
        MPI_Finalize();
        return 2;
    }
    blobs = calloc((size_t)nranks, sizeof *blobs);
    lens = calloc((size_t)nranks, sizeof *lens);
    ids = calloc((size_t)nranks, PSV_PLAN_ID_LEN);
    writes = calloc((size_t)nranks, sizeof *writes);
    if (rank == empty_rank) narrays = 0;
    data = calloc((size_t)(narrays > 0 ? narrays : 1), sizeof *data);

    /* 1. This rank's arrays and options. */
    if ((st = psv_save_options_set_alignment(opts, align)) != PSV_OK ||
        (st = psv_save_options_set_threads(opts, threads)) != PSV_OK) {
        report(rank, "options", st);
    }
    if (rank == kill_rank && st == PSV_OK) {
        st = psv_save_options_set_progress(opts, kill_midway, NULL);
    }
    for (i = 0; i < narrays && st == PSV_OK; i++) {
        int64_t n = (int64_t)(kib * 256 + 13 * (size_t)i + 7 * (size_t)rank);
        char key[64];
        int64_t j;
        data[i] = malloc((size_t)n * sizeof(uint32_t));
        for (j = 0; j < n; j++) {
            data[i][j] = (uint32_t)j * 31u + (uint32_t)i * 1000003u + (uint32_t)rank * 7u;
        }
        snprintf(key, sizeof key, "rank%d/a%d", rank, i);
        if ((st = psv_saver_add(s, key, data[i], PSV_DTYPE_U32, &n, 1)) != PSV_OK) {
            report(rank, "add", st);
        }
    }
    /* 2. Manifests to every rank; every rank plans; the plan ids must agree. The timing
     * starts here (the arrays exist, as they would in a training job). */
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = now();
    if (st == PSV_OK && (st = psv_saver_manifest(s, &manifest)) != PSV_OK) report(rank, "manifest", st);
    if ((all = agree(st)) != PSV_OK) goto done;
    gathered = gather_blobs(psv_buffer_data(manifest), psv_buffer_len(manifest), nranks, -1, blobs, lens);
    st = psv_collective_new(out, blobs, lens, (size_t)nranks, (size_t)rank, opts, &c);
    if (st != PSV_OK) report(rank, "plan", st);
    if (st == PSV_OK) psv_collective_plan_id(c, id);
    else memset(id, 0, sizeof id);
    free(gathered);
    gathered = NULL;
    if ((all = agree(st)) != PSV_OK) goto done;
    MPI_Allgather(id, PSV_PLAN_ID_LEN, MPI_BYTE, ids, PSV_PLAN_ID_LEN, MPI_BYTE, MPI_COMM_WORLD);
    for (i = 0; i < nranks; i++) {
        if (memcmp(ids + (size_t)i * PSV_PLAN_ID_LEN, id, PSV_PLAN_ID_LEN) != 0) {
            if (rank == 0) fprintf(stderr, "rank %d holds another plan\n", i);
            all = PSV_ERR_INVALID_ARG;
            goto done;
        }
    }
    /* 3. Rank 0 creates the file; the status exchange is the barrier. */
    if (rank == 0) {
        printf("temp: %s\n", psv_collective_temp_path(c));
        fflush(stdout);
        if ((st = psv_collective_create(c)) != PSV_OK) report(rank, "create", st);
    }
    if ((all = agree(st)) != PSV_OK) goto done;
    /* 4. Every rank writes its members; CRC reports go to rank 0. */
    t_write = now();
    if ((st = psv_collective_write(c, s, &crcs)) != PSV_OK) report(rank, "write", st);
    t_write = now() - t_write;
    gathered = gather_blobs(crcs ? psv_buffer_data(crcs) : "", crcs ? psv_buffer_len(crcs) : 0,
                            nranks, 0, blobs, lens);
    MPI_Gather(&t_write, 1, MPI_DOUBLE, writes, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if ((all = agree(st)) != PSV_OK) goto done;
    /* 5. Rank 0 commits: central directory, end records, rename. */
    if (rank == 0) {
        t_commit = now();
        if ((st = psv_collective_commit(c, blobs, lens, (size_t)nranks)) != PSV_OK) report(rank, "commit", st);
        t_commit = now() - t_commit;
    }
    MPI_Bcast(&st, 1, MPI_INT32_T, 0, MPI_COMM_WORLD);
    all = st;
    if (all == PSV_OK && rank == 0) {
        unsigned long long bytes = 0;
        FILE *f;
        char path[4096];
        snprintf(path, sizeof path, "%s%s", out,
                 strlen(out) >= 4 && strcmp(out + strlen(out) - 4, ".npz") == 0 ? "" : ".npz");
        f = fopen(path, "rb");
        if (f) {
            fseek(f, 0, SEEK_END);
            bytes = (unsigned long long)ftell(f);
            fclose(f);
        }
        printf("{\"ranks\": %d, \"bytes\": %llu, \"write_s\": [", nranks, bytes);
        for (i = 0; i < nranks; i++) printf("%s%.6f", i ? ", " : "", writes[i]);
        printf("], \"commit_s\": %.6f, \"total_s\": %.6f, \"path\": \"%s\"}\n", t_commit,
               now() - t0, path);
    }
done:
    if (all != PSV_OK && rank == 0 && c) {
        psv_collective_abort(c); /* the target is untouched */
    }
    ok = all == PSV_OK;
    free(gathered);
    psv_buffer_free(manifest);
    psv_buffer_free(crcs);
    psv_collective_free(c);
    psv_saver_free(s);
    psv_save_options_free(opts);
    for (i = 0; i < narrays; i++) free(data[i]);
    free(data);
    free(blobs);
    free(lens);
    free(ids);
    free(writes);
    MPI_Finalize();
    return ok ? 0 : 1;
}
