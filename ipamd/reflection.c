/* Server reflection from the embedded FileDescriptorSet; see reflection.h.
 *
 * The set is walked with a minimal protobuf reader (descriptor.proto's
 * messages are not compiled in): a file's name (field 1), package (2),
 * dependencies (3), messages (4), enums (5) and services (6); a message's
 * name (1), nested messages (3) and enums (4); a service's name (1) and
 * methods (2). Everything else is skipped. */
#include "reflection.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipam/log.h"

extern const unsigned char ipamd_descriptor_set[];
extern const size_t ipamd_descriptor_set_len;

#define GRPC_NOT_FOUND 5
#define GRPC_INVALID_ARGUMENT 3

struct rfile {
    char *name;
    const uint8_t *data;
    size_t len;
    char **deps;
    size_t ndeps;
};

struct rsym {
    char *name;
    size_t file;
};

static struct {
    bool ready;
    struct rfile *files;
    size_t nfiles;
    struct rsym *syms;
    size_t nsyms, csyms;
    char **services;
    size_t nservices;
} R;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        log_error("out of memory");
        abort();
    }
    return q;
}

/* ---- a minimal protobuf reader --------------------------------------- */

struct pbr {
    const uint8_t *p, *end;
};

static bool rd_varint(struct pbr *r, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* The next field: 1 (with field number, and its bytes when length-delimited),
 * 0 at the end, -1 when malformed. */
static int rd_field(struct pbr *r, uint32_t *field, struct pbr *bytes)
{
    if (r->p >= r->end)
        return 0;
    uint64_t key, v;
    if (!rd_varint(r, &key) || (key >> 3) == 0 || (key >> 3) > 0x1fffffff)
        return -1;
    *field = (uint32_t)(key >> 3);
    bytes->p = bytes->end = NULL;
    switch (key & 7) {
    case 0:
        return rd_varint(r, &v) ? 1 : -1;
    case 1:
        if ((size_t)(r->end - r->p) < 8)
            return -1;
        r->p += 8;
        return 1;
    case 2:
        if (!rd_varint(r, &v) || v > (uint64_t)(r->end - r->p))
            return -1;
        bytes->p = r->p;
        bytes->end = r->p + v;
        r->p += v;
        return 1;
    case 5:
        if ((size_t)(r->end - r->p) < 4)
            return -1;
        r->p += 4;
        return 1;
    default:
        return -1;
    }
}

static char *dup_bytes(struct pbr b)
{
    size_t n = (size_t)(b.end - b.p);
    char *s = xrealloc(NULL, n + 1);
    memcpy(s, b.p, n);
    s[n] = '\0';
    return s;
}

/* "prefix.name", or name when prefix is empty. */
static char *join(const char *prefix, struct pbr name)
{
    size_t pl = strlen(prefix), nl = (size_t)(name.end - name.p);
    char *s = xrealloc(NULL, pl + 1 + nl + 1);
    size_t o = 0;
    if (pl) {
        memcpy(s, prefix, pl);
        s[pl] = '.';
        o = pl + 1;
    }
    memcpy(s + o, name.p, nl);
    s[o + nl] = '\0';
    return s;
}

static void add_sym(char *name, size_t file)
{
    if (R.nsyms == R.csyms) {
        R.csyms = R.csyms ? R.csyms * 2 : 64;
        R.syms = xrealloc(R.syms, R.csyms * sizeof(*R.syms));
    }
    R.syms[R.nsyms].name = name;
    R.syms[R.nsyms++].file = file;
}

/* The name field (1) of a descriptor message; false when it has none. */
static bool find_name(struct pbr m, struct pbr *name)
{
    uint32_t f;
    struct pbr b;
    int rc;
    while ((rc = rd_field(&m, &f, &b)) == 1)
        if (f == 1 && b.p) {
            *name = b;
            return true;
        }
    return false;
}

/* Adds the symbols of a DescriptorProto (nested ones too), an
 * EnumDescriptorProto (kind 'e') or a ServiceDescriptorProto (kind 's'). */
static int walk(struct pbr m, char kind, const char *scope, size_t file)
{
    struct pbr name, b;
    if (!find_name(m, &name))
        return -1;
    char *fq = join(scope, name);
    add_sym(fq, file);
    if (kind == 's') {
        R.services = xrealloc(R.services, (R.nservices + 1) * sizeof(*R.services));
        R.services[R.nservices++] = fq;
    }
    uint32_t f;
    int rc;
    while ((rc = rd_field(&m, &f, &b)) == 1) {
        if (!b.p)
            continue;
        if (kind == 'm' && f == 3)
            rc = walk(b, 'm', fq, file);
        else if (kind == 'm' && f == 4)
            rc = walk(b, 'e', fq, file);
        else if (kind == 's' && f == 2) {
            struct pbr mname;
            if (!find_name(b, &mname))
                return -1;
            add_sym(join(fq, mname), file);
        }
        if (rc < 0)
            return -1;
    }
    return rc;
}

static int index_file(struct rfile *rf, size_t idx)
{
    struct pbr r = {rf->data, rf->data + rf->len}, b, name = {NULL, NULL};
    uint32_t f;
    int rc;
    char *package = NULL;
    /* The package scopes every symbol: find it first. */
    while ((rc = rd_field(&r, &f, &b)) == 1) {
        if (f == 1 && b.p)
            name = b;
        else if (f == 2 && b.p && !package)
            package = dup_bytes(b);
        else if (f == 3 && b.p) {
            rf->deps = xrealloc(rf->deps, (rf->ndeps + 1) * sizeof(*rf->deps));
            rf->deps[rf->ndeps++] = dup_bytes(b);
        }
    }
    if (rc < 0 || !name.p) {
        free(package);
        return -1;
    }
    rf->name = dup_bytes(name);
    r.p = rf->data;
    while ((rc = rd_field(&r, &f, &b)) == 1) {
        if (!b.p)
            continue;
        if (f == 4)
            rc = walk(b, 'm', package ? package : "", idx);
        else if (f == 5)
            rc = walk(b, 'e', package ? package : "", idx);
        else if (f == 6)
            rc = walk(b, 's', package ? package : "", idx);
        if (rc < 0)
            break;
    }
    free(package);
    return rc < 0 ? -1 : 0;
}

int refl_init(char *err, size_t errlen)
{
    if (R.ready)
        return 0;
    struct pbr r = {ipamd_descriptor_set, ipamd_descriptor_set + ipamd_descriptor_set_len}, b;
    uint32_t f;
    int rc;
    while ((rc = rd_field(&r, &f, &b)) == 1) {
        if (f != 1 || !b.p)
            continue;
        R.files = xrealloc(R.files, (R.nfiles + 1) * sizeof(*R.files));
        struct rfile *rf = &R.files[R.nfiles];
        memset(rf, 0, sizeof(*rf));
        rf->data = b.p;
        rf->len = (size_t)(b.end - b.p);
        R.nfiles++;
        if (index_file(rf, R.nfiles - 1) != 0) {
            rc = -1;
            break;
        }
    }
    if (rc < 0 || R.nfiles == 0 || R.nservices == 0) {
        snprintf(err, errlen, "internal: the embedded descriptor set is malformed");
        refl_free();
        return -1;
    }
    R.ready = true;
    return 0;
}

void refl_free(void)
{
    for (size_t i = 0; i < R.nfiles; i++) {
        free(R.files[i].name);
        for (size_t k = 0; k < R.files[i].ndeps; k++)
            free(R.files[i].deps[k]);
        free(R.files[i].deps);
    }
    for (size_t i = 0; i < R.nsyms; i++)
        free(R.syms[i].name); /* services point into these */
    free(R.files);
    free(R.syms);
    free(R.services);
    memset(&R, 0, sizeof(R));
}

/* ---- answers ---------------------------------------------------------- */

static size_t file_named(const char *name)
{
    for (size_t i = 0; i < R.nfiles; i++)
        if (!strcmp(R.files[i].name, name))
            return i;
    return SIZE_MAX;
}

static size_t file_of_symbol(const char *sym)
{
    /* A leading dot (".ipam.v1.Pool", as descriptors write type names) is
     * accepted too. */
    if (sym[0] == '.')
        sym++;
    for (size_t i = 0; i < R.nsyms; i++)
        if (!strcmp(R.syms[i].name, sym))
            return R.syms[i].file;
    return SIZE_MAX;
}

/* The file, then every file it depends on (each once). */
static void closure(size_t f, bool *seen, ProtobufCBinaryData *out, size_t *n)
{
    if (f == SIZE_MAX || seen[f])
        return;
    seen[f] = true;
    out[(*n)++] = (ProtobufCBinaryData){R.files[f].len, (uint8_t *)R.files[f].data};
    for (size_t k = 0; k < R.files[f].ndeps; k++)
        closure(file_named(R.files[f].deps[k]), seen, out, n);
}

uint8_t *refl_answer(const Grpc__Reflection__V1__ServerReflectionRequest *req, size_t *len)
{
    Grpc__Reflection__V1__ServerReflectionResponse resp =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1__FileDescriptorResponse fdr =
        GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse lsr =
        GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__ExtensionNumberResponse enr =
        GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
    Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    char msg[400] = "";
    size_t f = SIZE_MAX;
    bool *seen = NULL;
    ProtobufCBinaryData *files = NULL;
    Grpc__Reflection__V1__ServiceResponse *svc = NULL, **svcp = NULL;

    resp.valid_host = req->host ? req->host : "";
    resp.original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)req;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        f = file_named(req->file_by_filename);
        if (f == SIZE_MAX) {
            er.error_code = GRPC_NOT_FOUND;
            snprintf(msg, sizeof(msg), "file `%.200s' not found", req->file_by_filename);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        f = file_of_symbol(req->file_containing_symbol);
        if (f == SIZE_MAX) {
            er.error_code = GRPC_NOT_FOUND;
            snprintf(msg, sizeof(msg), "symbol `%.200s' not found", req->file_containing_symbol);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
        const Grpc__Reflection__V1__ExtensionRequest *x = req->file_containing_extension;
        er.error_code = GRPC_NOT_FOUND;
        snprintf(msg, sizeof(msg), "extension %d of `%.200s' not found: ipamd's files define none",
                 x ? x->extension_number : 0, x && x->containing_type ? x->containing_type : "");
        break;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        if (file_of_symbol(req->all_extension_numbers_of_type) == SIZE_MAX) {
            er.error_code = GRPC_NOT_FOUND;
            snprintf(msg, sizeof(msg), "type `%.200s' not found",
                     req->all_extension_numbers_of_type);
        } else {
            enr.base_type_name = req->all_extension_numbers_of_type;
            resp.message_response_case =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            resp.all_extension_numbers_response = &enr;
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        svc = xrealloc(NULL, R.nservices * sizeof(*svc));
        svcp = xrealloc(NULL, R.nservices * sizeof(*svcp));
        for (size_t i = 0; i < R.nservices; i++) {
            grpc__reflection__v1__service_response__init(&svc[i]);
            svc[i].name = R.services[i];
            svcp[i] = &svc[i];
        }
        lsr.service = svcp;
        lsr.n_service = R.nservices;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &lsr;
        break;
    default:
        er.error_code = GRPC_INVALID_ARGUMENT;
        snprintf(msg, sizeof(msg),
                 "the request asks nothing: set one of file_by_filename, "
                 "file_containing_symbol, file_containing_extension, "
                 "all_extension_numbers_of_type, list_services");
        break;
    }
    if (f != SIZE_MAX) {
        seen = xrealloc(NULL, R.nfiles * sizeof(*seen));
        memset(seen, 0, R.nfiles * sizeof(*seen));
        files = xrealloc(NULL, R.nfiles * sizeof(*files));
        closure(f, seen, files, &fdr.n_file_descriptor_proto);
        fdr.file_descriptor_proto = files;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        resp.file_descriptor_response = &fdr;
    } else if (er.error_code) {
        er.error_message = msg;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &er;
    }
    *len = protobuf_c_message_get_packed_size(&resp.base);
    uint8_t *out = xrealloc(NULL, *len);
    protobuf_c_message_pack(&resp.base, out);
    free(seen);
    free(files);
    free(svc);
    free(svcp);
    return out;
}
