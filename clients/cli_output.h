/* ipamctl's output: aligned tables of pools and leases, JSON for any
 * protobuf-c message, and the one-line form of watch events. Everything is
 * written to stdout; what a function takes ownership of it says. */
#ifndef IPAMCTL_CLI_OUTPUT_H
#define IPAMCTL_CLI_OUTPUT_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "ipam/client.h"

struct table_kind;

/* A table of messages of one type, filled row by row and printed at the end
 * with its columns aligned. */
typedef struct {
    const struct table_kind *kind;
    char **cells; /* nrows * the kind's column count, owned */
    size_t nrows, cap;
} table;

/* An empty table for messages of type d: ipam.v1.Pool or ipam.v1.Lease
 * (any other type aborts, as a mistake of the program). */
table table_for(const ProtobufCMessageDescriptor *d);
/* Adds m, of the table's type, as a row. */
void table_add(table *t, const ProtobufCMessage *m);
/* Prints the header line and the rows, then frees them (the table is then
 * empty and reusable). */
void table_flush(table *t);
/* Frees the rows without printing them. */
void table_free(table *t);

/* Prints n messages of type d: as JSON, one object a line; as a table (see
 * table_for), the header line even when n is 0. output is OUT_TABLE or OUT_JSON. */
void print_messages(int output, const ProtobufCMessageDescriptor *d, ProtobufCMessage *const *m,
                    size_t n);

/* The message as a JSON object (the caller's): field names are the proto's
 * (owner, ttl_seconds), enums their value names, maps objects. Unlike
 * canonical proto3 JSON, 64-bit integers are numbers and fields at their
 * default value are kept, which suits scripts better. */
cJSON *message_json(const ProtobufCMessage *m);
/* Prints j on one line and frees it. */
void print_json(cJSON *j);

/* The name of value v of the enum d, or "?". */
const char *enum_name(const ProtobufCEnumDescriptor *d, int v);
/* Prints "REVISION TYPE REASON WHAT" for one watch event. */
void print_event_line(const Ipam__V1__Event *e);

#endif
