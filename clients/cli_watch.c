/* ipamctl watch: printing the event stream until it ends or a signal stops it. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <grpc/status.h>

#include "cli_output.h"
#include "cli_run.h"

/* The stream being watched, cancelled by the signal thread. */
static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static ipam_stream *watch_stream;
static bool watch_interrupted;

/* SIGINT and SIGTERM are blocked in every thread (so gRPC's threads never run
 * a handler) and taken here instead: the first cancels the watch so that it
 * ends cleanly, a second one exits at once. */
static void *signal_thread(void *arg)
{
    const sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0)
            continue;
        pthread_mutex_lock(&watch_lock);
        if (watch_interrupted)
            _exit(128 + sig);
        watch_interrupted = true;
        if (watch_stream != NULL)
            ipam_stream_cancel(watch_stream);
        pthread_mutex_unlock(&watch_lock);
    }
    return NULL;
}

int cli_watch_signals(void)
{
    static sigset_t stop_signals;
    pthread_t t;

    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    if (pthread_create(&t, NULL, signal_thread, &stop_signals) != 0)
        return -1;
    pthread_detach(t);
    return 0;
}

int cli_run_watch(ipam_client *c, const command *cmd, const struct opts *o)
{
    arena a = ARENA_INIT;
    ipam_stream *s = ipam_client_stream_invoke(c, cmd->method, cli_request_new(cmd, o, &a));
    arena_free(&a);
    if (s == NULL)
        out_of_memory();
    pthread_mutex_lock(&watch_lock);
    watch_stream = s;
    if (watch_interrupted)
        ipam_stream_cancel(s);
    pthread_mutex_unlock(&watch_lock);

    ProtobufCMessage *m;
    int status;
    char *msg = NULL;
    for (;;) {
        m = ipam_stream_next(s, &status, &msg);
        if (m == NULL)
            break;
        Ipam__V1__WatchResponse *r = (Ipam__V1__WatchResponse *)m;
        if (r->created)
            fprintf(stderr, "ipamctl: watching, current revision %llu\n",
                    (unsigned long long)r->revision);
        for (size_t i = 0; i < r->n_events; i++) {
            if (o->output == OUT_JSON)
                print_json(message_json(&r->events[i]->base));
            else
                print_event_line(r->events[i]);
        }
        fflush(stdout);
        protobuf_c_message_free_unpacked(m, NULL);
    }

    pthread_mutex_lock(&watch_lock);
    watch_stream = NULL;
    bool interrupted = watch_interrupted;
    pthread_mutex_unlock(&watch_lock);
    ipam_stream_close(s);

    /* Being stopped is how a watch is meant to end. */
    if (interrupted && status == GRPC_STATUS_CANCELLED)
        status = GRPC_STATUS_OK;
    if (status != GRPC_STATUS_OK)
        fprintf(stderr, "ipamctl: %s\n", msg != NULL ? msg : ipam_status_name(status));
    free(msg);
    return status;
}
