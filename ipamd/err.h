/* Errors of the core, each with the gRPC status code it maps to.
 *
 * One list drives the enum, the names and the mapping; add codes at the end,
 * never renumber. A failing operation fills a struct ipam_status whose
 * message names the bad input, and changes nothing. */
#ifndef IPAMD_ERR_H
#define IPAMD_ERR_H

#include <grpc/status.h>

#define IPAM_ERRORS(X)                                                                             \
    X(IPAM_OK, GRPC_STATUS_OK)                                                                     \
    X(IPAM_EINVAL, GRPC_STATUS_INVALID_ARGUMENT)                                                   \
    X(IPAM_ENOTFOUND, GRPC_STATUS_NOT_FOUND)                                                       \
    X(IPAM_EEXIST, GRPC_STATUS_ALREADY_EXISTS)                                                     \
    X(IPAM_EEXHAUSTED, GRPC_STATUS_RESOURCE_EXHAUSTED)                                             \
    X(IPAM_EPRECOND, GRPC_STATUS_FAILED_PRECONDITION)                                              \
    X(IPAM_ERANGE, GRPC_STATUS_OUT_OF_RANGE)                                                       \
    X(IPAM_EUNAVAIL, GRPC_STATUS_UNAVAILABLE)                                                      \
    X(IPAM_ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED)                                                 \
    X(IPAM_EINTERNAL, GRPC_STATUS_INTERNAL)

enum ipam_err {
#define X(name, status) name,
    IPAM_ERRORS(X)
#undef X
};

static inline grpc_status_code ipam_err_status(enum ipam_err e)
{
    static const grpc_status_code map[] = {
#define X(name, status) status,
        IPAM_ERRORS(X)
#undef X
    };
    return map[e];
}

struct ipam_status {
    enum ipam_err err;
    char msg[512];
};

/* Sets st and returns its error, for `return fail(st, IPAM_EINVAL, ...)'. */
enum ipam_err ipam_fail(struct ipam_status *st, enum ipam_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
