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

/* Parses "tcp", "UDP", "sctp" (any case) to 1..3; 0 if none. */
int port_proto_parse(const char *s);
const char *port_proto_name(int p);

#endif
