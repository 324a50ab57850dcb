/* Conversions between the core's objects and ipam.v1 protobuf messages.
 *
 * Messages built here point into an arena (and into the objects for strings
 * that outlive the call); they are valid until the arena is reset and the
 * objects change. Nothing here fails except for memory: allocation failure
 * aborts the process, because a half-built reply or store blob must never be
 * sent or written. */
#ifndef IPAMD_CODEC_H
#define IPAMD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "state.h"

struct arena {
    struct arena_chunk *head;
};

#define ARENA_INIT {NULL}

void *arena_alloc(struct arena *a, size_t n);
char *arena_strdup(struct arena *a, const char *s);
void arena_free(struct arena *a);

void lease_to_pb(struct arena *a, const struct lease *l, Ipam__V1__Lease *out);
void pool_to_pb(struct arena *a, const struct pool *p, bool with_status, Ipam__V1__Pool *out);
/* Packs m into a new malloc'd buffer. */
uint8_t *pb_pack(const ProtobufCMessage *m, size_t *len);

/* Checks what protobuf-c's decoder lets through, on the raw bytes of a
 * message of type d (and of every message inside it): string fields must be
 * valid UTF-8 without NUL bytes (protobuf-c hands them over as C strings, so a
 * NUL would silently cut "a\0b" to "a"), and bool fields must be varints.
 * Returns 0, or -1 with a message naming the field in err. */
int pb_validate(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char *err,
                size_t errlen);

/* Parses "tcp", "UDP", "sctp" (any case) to 1..3; 0 if none. */
int port_proto_parse(const char *s);
const char *port_proto_name(int p);

#endif
