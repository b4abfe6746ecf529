/*
 * fdfs_cbench: a load generator written against the official FastDFS C client library
 * (libfdfsclient), so that one client drives both our daemons and C FastDFS in the same
 * benchmark run. The calls are the ones applications make: storage_upload_by_filebuff1
 * through the tracker or straight to one storage (no tracker asked, store path chosen by
 * the storage, as fdfs_upload_file does when given a storage), and
 * storage_download_file_to_buff1 through the tracker or straight from one storage.
 * Connections follow the client config: with `use_connection_pool = true` the library
 * keeps them, otherwise every request makes new ones, exactly as applications see it.
 *
 *   fdfs_cbench <client.conf> upload   <threads> <seconds> <size> <ids_out>
 *                                      [storage_ip:port] [label]
 *   fdfs_cbench <client.conf> download <threads> <seconds> <ids_in> [storage_ip:port] [label]
 *
 * Prints one JSON line: label, op, direct (to one storage), threads, pool, ok, failed,
 * seconds, per_second and the first error seen. Build: bench/cbench/build.sh (links the
 * C build in target/c-fastdfs).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fastcommon/logger.h"
#include "fdfs_client.h"

#define ID_MAX 128

struct shared {
    int upload;
    double deadline;
    int64_t size;
    char *payload;
    /* download: the ids to fetch, cycled through */
    char (*ids)[ID_MAX];
    long id_count;
    /* upload to / download from one storage straight (port 0: ask the tracker) */
    ConnectionInfo storage;
    /* upload: where the new ids go */
    FILE *ids_out;
    pthread_mutex_t lock;
    long ok, failed;
    int first_error;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int one_request(struct shared *s, long n, ConnectionInfo *storage, char *file_id)
{
    TrackerServerInfo server;
    ConnectionInfo *tracker;
    char *buff = NULL;
    int64_t got = 0;
    int result = 0;

    /* the reentrant form: each call gets its own connection (or a pooled one); a
     * request straight to a storage asks no tracker, so it takes no connection */
    tracker = NULL;
    if (storage == NULL) {
        tracker = tracker_get_connection_r(&server, &result);
        if (tracker == NULL) {
            return result != 0 ? result : ECONNREFUSED;
        }
    }
    if (s->upload) {
        /* straight to a storage: store path -1, the storage picks one */
        result = storage_upload_by_filebuff1(tracker, storage, storage != NULL ? -1 : 0,
                s->payload, s->size, "bin", NULL, 0, NULL, file_id);
    } else {
        result = storage_download_file_to_buff1(tracker, storage,
                s->ids[n % s->id_count], &buff, &got);
        free(buff);
    }
    if (tracker != NULL) {
        tracker_close_connection_ex(tracker, result != 0 && result != ENOENT);
    }
    return result;
}

static void *worker(void *arg)
{
    struct shared *s = arg;
    ConnectionInfo storage;
    ConnectionInfo *target = NULL;
    char file_id[ID_MAX];
    long ok = 0, failed = 0, n = (long)pthread_self() % 7919;
    int first_error = 0;

    if (s->storage.port != 0) {
        storage = s->storage;
        storage.sock = -1;
        target = &storage;
    }
    while (now_seconds() < s->deadline) {
        int result = one_request(s, n++, target, file_id);
        if (target != NULL && target->sock >= 0 && !g_use_connection_pool) {
            conn_pool_disconnect_server(target);
        }
        if (result == 0) {
            ok++;
            if (s->upload && s->ids_out != NULL) {
                pthread_mutex_lock(&s->lock);
                fprintf(s->ids_out, "%s\n", file_id);
                pthread_mutex_unlock(&s->lock);
            }
        } else {
            failed++;
            if (first_error == 0) {
                first_error = result;
            }
        }
    }
    if (target != NULL && target->sock >= 0) {
        conn_pool_disconnect_server(target);
    }
    pthread_mutex_lock(&s->lock);
    s->ok += ok;
    s->failed += failed;
    if (s->first_error == 0) {
        s->first_error = first_error;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static long read_ids(const char *path, char (**ids)[ID_MAX])
{
    FILE *f = fopen(path, "r");
    char line[ID_MAX];
    long count = 0, cap = 1024;

    if (f == NULL) {
        return -1;
    }
    *ids = malloc(cap * ID_MAX);
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (*line == '\0') {
            continue;
        }
        if (count == cap) {
            cap *= 2;
            *ids = realloc(*ids, cap * ID_MAX);
        }
        snprintf((*ids)[count++], ID_MAX, "%s", line);
    }
    fclose(f);
    return count;
}

static int usage(const char *me)
{
    fprintf(stderr,
            "usage: %s <client.conf> upload <threads> <seconds> <size> <ids_out> "
            "[storage_ip:port] [label]\n"
            "       %s <client.conf> download <threads> <seconds> <ids_in> "
            "[storage_ip:port] [label]\n", me, me);
    return 1;
}

int main(int argc, char *argv[])
{
    struct shared s;
    const char *label;
    pthread_t *threads;
    int thread_count, i, result;
    double seconds, started, elapsed;

    if (argc < 6) {
        return usage(argv[0]);
    }
    memset(&s, 0, sizeof(s));
    pthread_mutex_init(&s.lock, NULL);
    s.upload = strcmp(argv[2], "upload") == 0;
    if (!s.upload && strcmp(argv[2], "download") != 0) {
        return usage(argv[0]);
    }
    thread_count = atoi(argv[3]);
    seconds = atof(argv[4]);
    if (thread_count <= 0 || seconds <= 0) {
        return usage(argv[0]);
    }
    if (s.upload) {
        if (argc < 7) {
            return usage(argv[0]);
        }
        s.size = atoll(argv[5]);
        s.payload = malloc(s.size > 0 ? s.size : 1);
        for (i = 0; i < s.size; i++) {
            s.payload[i] = (char)(i * 131 + 7);
        }
        s.ids_out = fopen(argv[6], "w");
        if (s.ids_out == NULL) {
            perror(argv[6]);
            return 1;
        }
        if (argc > 7 && strchr(argv[7], ':') != NULL) {
            if (conn_pool_parse_server_info(argv[7], &s.storage,
                        FDFS_STORAGE_SERVER_DEF_PORT) != 0) {
                fprintf(stderr, "%s: bad storage address %s\n", argv[0], argv[7]);
                return 1;
            }
            label = argc > 8 ? argv[8] : "upload";
        } else {
            label = argc > 7 ? argv[7] : "upload";
        }
    } else {
        s.id_count = read_ids(argv[5], &s.ids);
        if (s.id_count <= 0) {
            fprintf(stderr, "%s: no file ids in %s\n", argv[0], argv[5]);
            return 1;
        }
        if (argc > 6 && strchr(argv[6], ':') != NULL) {
            if (conn_pool_parse_server_info(argv[6], &s.storage,
                        FDFS_STORAGE_SERVER_DEF_PORT) != 0) {
                fprintf(stderr, "%s: bad storage address %s\n", argv[0], argv[6]);
                return 1;
            }
            label = argc > 7 ? argv[7] : "download";
        } else {
            label = argc > 6 ? argv[6] : "download";
        }
    }

    log_init();
    g_log_context.log_level = LOG_ERR;
    ignore_signal_pipe();
    if ((result = fdfs_client_init(argv[1])) != 0) {
        fprintf(stderr, "%s: cannot load %s: errno %d\n", argv[0], argv[1], result);
        return 1;
    }

    threads = calloc(thread_count, sizeof(pthread_t));
    started = now_seconds();
    s.deadline = started + seconds;
    for (i = 0; i < thread_count; i++) {
        pthread_create(&threads[i], NULL, worker, &s);
    }
    for (i = 0; i < thread_count; i++) {
        pthread_join(threads[i], NULL);
    }
    elapsed = now_seconds() - started;
    if (s.ids_out != NULL) {
        fclose(s.ids_out);
    }
    printf("{\"label\": \"%s\", \"op\": \"%s\", \"direct\": %s, \"threads\": %d, "
           "\"pool\": %s, \"ok\": %ld, \"failed\": %ld, \"seconds\": %.3f, \"per_second\": %.1f, "
           "\"first_error\": %d}\n",
           label, s.upload ? "upload" : "download",
           s.storage.port != 0 ? "true" : "false", thread_count,
           g_use_connection_pool ? "true" : "false", s.ok, s.failed, elapsed,
           s.ok / elapsed, s.first_error);
    fdfs_client_destroy();
    return s.failed > 0 && s.ok == 0 ? 1 : 0;
}
