/* Running ipamctl's unary subcommands: one call, then its result printed. */
#include "cli_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>

#include "cli_output.h"

ProtobufCMessage *cli_request_new(const command *cmd, const struct opts *o, arena *a)
{
    const ProtobufCMessageDescriptor *d = ipam_methods[cmd->method].request;
    ProtobufCMessage *req = arena_calloc(a, 1, d->sizeof_message);
    protobuf_c_message_init(d, req);
    if (cmd->build != NULL)
        cmd->build(req, o, a);
    return req;
}

/* Calls a unary method; on failure prints the server's message. */
static int rpc(ipam_client *c, ipam_method_id m, const ProtobufCMessage *req,
               ProtobufCMessage **resp)
{
    char *msg = NULL;
    int rc = ipam_client_invoke(c, m, req, resp, &msg);
    if (rc != GRPC_STATUS_OK)
        fprintf(stderr, "ipamctl: %s\n", msg != NULL ? msg : ipam_status_name(rc));
    free(msg);
    return rc;
}

/* Prints the message or messages in resp's field name: a Pool or a Lease, or
 * a repeated field of them. */
static int print_result(const ProtobufCMessage *resp, const char *name, bool optional,
                        const struct opts *o)
{
    const char *base = (const char *)resp;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(resp->descriptor, name);
    if (f == NULL) {
        fprintf(stderr, "ipamctl: %s has no field %s\n", resp->descriptor->name, name);
        abort(); /* a mistake in the subcommand table */
    }
    ProtobufCMessage *const *m = (ProtobufCMessage *const *)(const void *)(base + f->offset);
    size_t n = 1;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        m = *(ProtobufCMessage *const *const *)(const void *)m;
        n = *(const size_t *)(const void *)(base + f->quantifier_offset);
    } else if (*m == NULL) {
        if (optional)
            return GRPC_STATUS_OK;
        fprintf(stderr, "ipamctl: the server's response has no %s\n", name);
        return GRPC_STATUS_INTERNAL;
    }
    print_messages(o->output, f->descriptor, m, n);
    return GRPC_STATUS_OK;
}

int cli_run_unary(ipam_client *c, const command *cmd, const struct opts *o)
{
    arena a = ARENA_INIT;
    ProtobufCMessage *resp;
    int rc = rpc(c, cmd->method, cli_request_new(cmd, o, &a), &resp);
    arena_free(&a);
    if (rc != GRPC_STATUS_OK)
        return rc;
    if (cmd->print != NULL)
        rc = cmd->print(resp, o);
    else
        rc = print_result(resp, cmd->result, cmd->result_optional, o);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int cli_run_lease_list(ipam_client *c, const command *cmd, const struct opts *o)
{
    arena a = ARENA_INIT;
    Ipam__V1__ListLeasesRequest *req = (Ipam__V1__ListLeasesRequest *)cli_request_new(cmd, o, &a);
    char *token = xstrdup("");
    table t = table_for(&ipam__v1__lease__descriptor);
    int rc;
    for (;;) {
        req->page_token = token;
        ProtobufCMessage *resp;
        rc = rpc(c, cmd->method, &req->base, &resp);
        if (rc != GRPC_STATUS_OK)
            break;
        Ipam__V1__ListLeasesResponse *r = (Ipam__V1__ListLeasesResponse *)resp;
        for (size_t i = 0; i < r->n_leases; i++) {
            if (o->output == OUT_JSON)
                print_json(message_json(&r->leases[i]->base));
            else
                table_add(&t, &r->leases[i]->base);
        }
        bool last = r->next_page_token[0] == '\0';
        bool stuck = !last && strcmp(r->next_page_token, token) == 0;
        free(token);
        token = xstrdup(r->next_page_token);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (stuck) {
            fprintf(stderr, "ipamctl: the server returned page token `%s' twice\n", token);
            rc = GRPC_STATUS_INTERNAL;
            break;
        }
        if (last)
            break;
    }
    if (o->output == OUT_TABLE && rc == GRPC_STATUS_OK)
        table_flush(&t);
    table_free(&t);
    free(token);
    arena_free(&a);
    return rc;
}
