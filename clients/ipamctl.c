/* ipamctl: the command-line client of ipamd (pools, leases, watch, health). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <grpc/status.h>

#include "ipam/client.h"

#define DEFAULT_SERVER "127.0.0.1:50051"
#define EXIT_USAGE 2
#define MAX_TTL_SECONDS 315360000u /* ten years, the API's limit */

/* ---- small helpers ---------------------------------------------------- */

static _Noreturn void out_of_memory(void)
{
    fputs("ipamctl: out of memory\n", stderr);
    exit(GRPC_STATUS_RESOURCE_EXHAUSTED);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);
    if (p == NULL)
        out_of_memory();
    return p;
}

static void *xreallocarray(void *p, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        out_of_memory();
    p = realloc(p, n * size == 0 ? 1 : n * size);
    if (p == NULL)
        out_of_memory();
    return p;
}

__attribute__((format(printf, 1, 2))) static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        out_of_memory();
    char *s = xcalloc((size_t)n + 1, 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static char *xstrdup(const char *s)
{
    return xprintf("%s", s);
}

/* Joins n strings with sep; "-" when there are none. */
static char *join(char *const *v, size_t n, const char *sep)
{
    if (n == 0)
        return xstrdup("-");
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + strlen(sep);
    char *s = xcalloc(len, 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(s + off, len - off, "%s%s", i > 0 ? sep : "", v[i]);
        off += (size_t)w;
    }
    return s;
}

/* ---- options and the table-driven flag parser --------------------------- */

typedef struct {
    const char **v; /* the strings point into argv */
    size_t n;
} strlist;

typedef struct {
    char *key;         /* owned */
    const char *value; /* points into argv */
} kv;

typedef struct {
    kv *v;
    size_t n;
} kvlist;

typedef struct {
    char protocol[8]; /* upper case */
    uint32_t port;
} portspec;

typedef struct {
    portspec *v;
    size_t n;
} portlist;

enum { OUT_TABLE, OUT_JSON };

struct opts {
    const char *server;
    int output;
    const char *args[2];
    size_t nargs;
    strlist blocks, addresses;
    int order, family, primary;
    bool skip_end_ips, avoid_buggy_ips, allow_share, force;
    const char *space, *pool, *owner, *sharing_key, *owner_prefix;
    uint32_t ttl;
    uint64_t from_revision;
    kvlist labels;
    portlist ports;
};

static void opts_free(struct opts *o)
{
    free(o->blocks.v);
    free(o->addresses.v);
    for (size_t i = 0; i < o->labels.n; i++)
        free(o->labels.v[i].key);
    free(o->labels.v);
    free(o->ports.v);
}

typedef struct {
    const char *name;
    int value;
} choice;

typedef struct flag flag;
/* Stores value into o; on a bad value prints why (quoting it) and returns false. */
typedef bool (*flag_parser)(const flag *f, const char *value, struct opts *o);

struct flag {
    const char *name;    /* "--block" */
    const char *alias;   /* another spelling, or NULL */
    const char *metavar; /* NULL for a flag without value */
    flag_parser parse;
    size_t offset; /* of the destination in struct opts */
    bool repeatable;
    bool allow_empty;      /* for parse_string */
    const choice *choices; /* NULL-terminated, for parse_choice */
    uint64_t min, max;     /* for parse_u32 and parse_u64 */
};

#define AT(o, f, type) ((type *)(void *)((char *)(o) + (f)->offset))

static bool bad_value(const flag *f, const char *value, const char *why)
{
    fprintf(stderr, "ipamctl: invalid %s `%s': %s\n", f->name, value, why);
    return false;
}

static bool parse_string(const flag *f, const char *value, struct opts *o)
{
    if (value[0] == '\0' && !f->allow_empty)
        return bad_value(f, value, "empty");
    *AT(o, f, const char *) = value;
    return true;
}

static bool parse_strings(const flag *f, const char *value, struct opts *o)
{
    if (value[0] == '\0')
        return bad_value(f, value, "empty");
    strlist *l = AT(o, f, strlist);
    l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
    l->v[l->n++] = value;
    return true;
}

static bool parse_bool(const flag *f, const char *value, struct opts *o)
{
    (void)value;
    *AT(o, f, bool) = true;
    return true;
}

/* Decimal digits only: strtoull alone would take "-1", " 7" and "0x10". */
static bool parse_number(const flag *f, const char *value, uint64_t *out)
{
    if (value[0] < '0' || value[0] > '9')
        return bad_value(f, value, "not a decimal number");
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (*end != '\0')
        return bad_value(f, value, "not a decimal number");
    if (errno == ERANGE || v < f->min || v > f->max) {
        fprintf(stderr, "ipamctl: invalid %s `%s': out of range (%llu..%llu)\n", f->name, value,
                (unsigned long long)f->min, (unsigned long long)f->max);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_u32(const flag *f, const char *value, struct opts *o)
{
    uint64_t v;
    if (!parse_number(f, value, &v))
        return false;
    *AT(o, f, uint32_t) = (uint32_t)v;
    return true;
}

static bool parse_u64(const flag *f, const char *value, struct opts *o)
{
    return parse_number(f, value, AT(o, f, uint64_t));
}

static bool parse_choice(const flag *f, const char *value, struct opts *o)
{
    for (const choice *c = f->choices; c->name != NULL; c++) {
        if (strcmp(c->name, value) == 0) {
            *AT(o, f, int) = c->value;
            return true;
        }
    }
    char why[96];
    snprintf(why, sizeof(why), "expected %s", f->metavar);
    return bad_value(f, value, why);
}

static bool parse_label(const flag *f, const char *value, struct opts *o)
{
    const char *eq = strchr(value, '=');
    if (eq == NULL || eq == value)
        return bad_value(f, value, "expected key=value");
    size_t klen = (size_t)(eq - value);
    kvlist *l = AT(o, f, kvlist);
    for (size_t i = 0; i < l->n; i++) {
        if (strlen(l->v[i].key) == klen && strncmp(l->v[i].key, value, klen) == 0)
            return bad_value(f, value, "label key given twice");
    }
    l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
    l->v[l->n].key = xprintf("%.*s", (int)klen, value);
    l->v[l->n].value = eq + 1;
    l->n++;
    return true;
}

static bool parse_port(const flag *f, const char *value, struct opts *o)
{
    static const char *const protocols[] = {"TCP", "UDP", "SCTP"};
    const char *slash = strchr(value, '/');
    if (slash == NULL)
        return bad_value(f, value, "expected protocol/port, e.g. tcp/80");
    size_t plen = (size_t)(slash - value);
    portspec p = {.port = 0};
    for (size_t i = 0; i < sizeof(protocols) / sizeof(protocols[0]); i++) {
        if (strlen(protocols[i]) == plen && strncasecmp(protocols[i], value, plen) == 0)
            snprintf(p.protocol, sizeof(p.protocol), "%s", protocols[i]);
    }
    if (p.protocol[0] == '\0')
        return bad_value(f, value, "protocol is not tcp, udp or sctp");
    const char *num = slash + 1;
    char *end = NULL;
    unsigned long v = 0;
    errno = 0;
    if (num[0] >= '0' && num[0] <= '9')
        v = strtoul(num, &end, 10);
    if (end == NULL || *end != '\0' || errno == ERANGE || v < 1 || v > 65535)
        return bad_value(f, value, "port is not 1..65535");
    p.port = (uint32_t)v;
    portlist *l = AT(o, f, portlist);
    l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
    l->v[l->n++] = p;
    return true;
}

static const choice output_choices[] = {{"table", OUT_TABLE}, {"json", OUT_JSON}, {NULL, 0}};
static const choice order_choices[] = {{"asc", IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_ASC},
                                       {"desc", IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC},
                                       {NULL, 0}};
static const choice family_choices[] = {
    {"ipv4", IPAM__V1__FAMILY__FAMILY_IPV4},
    {"ipv6", IPAM__V1__FAMILY__FAMILY_IPV6},
    {"prefer-dual", IPAM__V1__FAMILY__FAMILY_PREFER_DUAL_STACK},
    {"require-dual", IPAM__V1__FAMILY__FAMILY_REQUIRE_DUAL_STACK},
    {NULL, 0}};
static const choice primary_choices[] = {
    {"ipv4", IPAM__V1__FAMILY__FAMILY_IPV4}, {"ipv6", IPAM__V1__FAMILY__FAMILY_IPV6}, {NULL, 0}};

enum {
    F_NONE, /* ends a command's flag list */
    F_SERVER,
    F_OUTPUT,
    F_BLOCK,
    F_ORDER,
    F_SKIP_END_IPS,
    F_AVOID_BUGGY_IPS,
    F_ALLOW_SHARE,
    F_SPACE,
    F_FORCE,
    F_POOL,
    F_OWNER,
    F_ADDRESS,
    F_FAMILY,
    F_PRIMARY,
    F_TTL,
    F_LABEL,
    F_PORT,
    F_SHARING_KEY,
    F_OWNER_PREFIX,
    F_FROM_REVISION,
    F_COUNT
};

#define OFF(field) offsetof(struct opts, field)

static const flag flags[F_COUNT] = {
    [F_SERVER] = {"--server", NULL, "ADDR", parse_string, OFF(server)},
    [F_OUTPUT] = {"-o", "--output", "table|json", parse_choice, OFF(output),
                  .choices = output_choices},
    [F_BLOCK] = {"--block", NULL, "B", parse_strings, OFF(blocks), .repeatable = true},
    [F_ORDER] = {"--order", NULL, "asc|desc", parse_choice, OFF(order), .choices = order_choices},
    [F_SKIP_END_IPS] = {"--skip-end-ips", NULL, NULL, parse_bool, OFF(skip_end_ips)},
    [F_AVOID_BUGGY_IPS] = {"--avoid-buggy-ips", NULL, NULL, parse_bool, OFF(avoid_buggy_ips)},
    [F_ALLOW_SHARE] = {"--allow-share", NULL, NULL, parse_bool, OFF(allow_share)},
    [F_SPACE] = {"--space", NULL, "S", parse_string, OFF(space)},
    [F_FORCE] = {"--force", NULL, NULL, parse_bool, OFF(force)},
    /* An empty pool with --address asks for a static reservation. */
    [F_POOL] = {"--pool", NULL, "P", parse_string, OFF(pool), .allow_empty = true},
    [F_OWNER] = {"--owner", NULL, "O", parse_string, OFF(owner)},
    [F_ADDRESS] = {"--address", NULL, "A", parse_strings, OFF(addresses), .repeatable = true},
    [F_FAMILY] = {"--family", NULL, "ipv4|ipv6|prefer-dual|require-dual", parse_choice, OFF(family),
                  .choices = family_choices},
    [F_PRIMARY] = {"--primary", NULL, "ipv4|ipv6", parse_choice, OFF(primary),
                   .choices = primary_choices},
    [F_TTL] = {"--ttl", NULL, "S", parse_u32, OFF(ttl), .max = MAX_TTL_SECONDS},
    [F_LABEL] = {"--label", NULL, "k=v", parse_label, OFF(labels), .repeatable = true},
    [F_PORT] = {"--port", NULL, "tcp/80", parse_port, OFF(ports), .repeatable = true},
    [F_SHARING_KEY] = {"--sharing-key", NULL, "K", parse_string, OFF(sharing_key)},
    [F_OWNER_PREFIX] = {"--owner-prefix", NULL, "X", parse_string, OFF(owner_prefix)},
    [F_FROM_REVISION] = {"--from-revision", NULL, "N", parse_u64, OFF(from_revision),
                         .max = UINT64_MAX},
};

/* Accepted before and after every subcommand. */
static const int global_flags[] = {F_SERVER, F_OUTPUT};
#define N_GLOBAL_FLAGS (sizeof(global_flags) / sizeof(global_flags[0]))

/* ---- output: aligned tables ----------------------------------------------- */

typedef struct {
    size_t ncols;
    const char *const *headers;
    char **cells; /* nrows * ncols, owned */
    size_t nrows, cap;
} table;

/* Adds a row of ncols cells, taking ownership of them. */
static void table_row(table *t, char **cells)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap == 0 ? 16 : t->cap * 2;
        t->cells = xreallocarray(t->cells, t->cap, t->ncols * sizeof(char *));
    }
    memcpy(t->cells + t->nrows * t->ncols, cells, t->ncols * sizeof(char *));
    t->nrows++;
}

static void table_free(table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->cap = 0;
}

/* Prints and frees the table. */
static void table_flush(table *t)
{
    size_t *width = xcalloc(t->ncols, sizeof(size_t));
    for (size_t c = 0; c < t->ncols; c++) {
        width[c] = strlen(t->headers[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t w = strlen(t->cells[r * t->ncols + c]);
            width[c] = w > width[c] ? w : width[c];
        }
    }
    for (size_t r = 0; r <= t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = r == 0 ? t->headers[c] : t->cells[(r - 1) * t->ncols + c];
            if (c + 1 < t->ncols)
                printf("%-*s  ", (int)width[c], s);
            else
                printf("%s\n", s);
        }
    }
    free(width);
    table_free(t);
}

static const char *const pool_headers[] = {"NAME",          "SPACE",         "BLOCKS", "ORDER",
                                           "V4 USED/TOTAL", "V6 USED/TOTAL", "LEASES"};
static const char *const lease_headers[] = {"OWNER", "POOL",    "ADDRESSES",
                                            "TTL",   "EXPIRES", "LABELS"};

static table pool_table(void)
{
    return (table){.ncols = sizeof(pool_headers) / sizeof(pool_headers[0]),
                   .headers = pool_headers};
}

static table lease_table(void)
{
    return (table){.ncols = sizeof(lease_headers) / sizeof(lease_headers[0]),
                   .headers = lease_headers};
}

static char *stats_cell(const Ipam__V1__FamilyStats *s)
{
    if (s == NULL || strcmp(s->total, "0") == 0 || s->total[0] == '\0')
        return xstrdup("-");
    return xprintf("%s/%s", s->used, s->total);
}

static void pool_row(table *t, const Ipam__V1__Pool *p)
{
    char *cells[] = {
        xstrdup(p->name),
        xstrdup(p->space[0] != '\0' ? p->space : "default"),
        join(p->blocks, p->n_blocks, ","),
        xstrdup(p->search_order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC ? "desc" : "asc"),
        stats_cell(p->ipv4),
        stats_cell(p->ipv6),
        xprintf("%llu", (unsigned long long)p->leases),
    };
    table_row(t, cells);
}

static char *time_cell(int64_t unix_seconds)
{
    if (unix_seconds == 0)
        return xstrdup("-");
    time_t tt = (time_t)unix_seconds;
    struct tm tm;
    char buf[32];
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return xprintf("%lld", (long long)unix_seconds);
    return xstrdup(buf);
}

static void lease_row(table *t, const Ipam__V1__Lease *l)
{
    char **labels = xcalloc(l->n_labels, sizeof(char *));
    for (size_t i = 0; i < l->n_labels; i++)
        labels[i] = xprintf("%s=%s", l->labels[i]->key, l->labels[i]->value);
    char *cells[] = {
        xstrdup(l->owner),
        xstrdup(l->pool[0] != '\0' ? l->pool : "-"),
        join(l->addresses, l->n_addresses, ","),
        l->ttl_seconds != 0 ? xprintf("%us", (unsigned)l->ttl_seconds) : xstrdup("-"),
        time_cell(l->expire_time),
        join(labels, l->n_labels, ","),
    };
    for (size_t i = 0; i < l->n_labels; i++)
        free(labels[i]);
    free(labels);
    table_row(t, cells);
}

/* ---- output: JSON from any protobuf-c message ------------------------------- */

/* Field names are the proto's (owner, ttl_seconds), enums their value names,
 * maps objects. Unlike canonical proto3 JSON, 64-bit integers are numbers and
 * fields at their default value are kept, which suits scripts better. */
static cJSON *message_json(const ProtobufCMessage *m);

static size_t value_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default: /* 32-bit integers, float, enum */
        return 4;
    }
}

static cJSON *base64_json(const ProtobufCBinaryData *b)
{
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = xcalloc(b->len / 3 * 4 + 5, 1);
    size_t o = 0;
    for (size_t i = 0; i < b->len; i += 3) {
        uint32_t v = (uint32_t)b->data[i] << 16;
        if (i + 1 < b->len)
            v |= (uint32_t)b->data[i + 1] << 8;
        if (i + 2 < b->len)
            v |= b->data[i + 2];
        s[o++] = digits[(v >> 18) & 63];
        s[o++] = digits[(v >> 12) & 63];
        s[o++] = i + 1 < b->len ? digits[(v >> 6) & 63] : '=';
        s[o++] = i + 2 < b->len ? digits[v & 63] : '=';
    }
    cJSON *j = cJSON_CreateString(s);
    free(s);
    return j;
}

static cJSON *value_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return cJSON_CreateNumber(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return cJSON_CreateNumber((double)*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return cJSON_CreateNumber(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return cJSON_CreateNumber((double)*(const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return cJSON_CreateNumber(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return cJSON_CreateNumber(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return cJSON_CreateBool(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        return ev != NULL ? cJSON_CreateString(ev->name) : cJSON_CreateNumber(v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return cJSON_CreateString(s != NULL ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES:
        return base64_json(p);
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m != NULL ? message_json(m) : cJSON_CreateNull();
    }
    }
    return cJSON_CreateNull();
}

/* protobuf-c has no map type: a map is a repeated message named ...Entry
 * with the fields key = 1 and value = 2. */
static bool is_map_entry(const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->name);
    return d->n_fields == 2 && n > 5 && strcmp(d->name + n - 5, "Entry") == 0 &&
           d->fields[0].id == 1 && strcmp(d->fields[0].name, "key") == 0 && d->fields[1].id == 2 &&
           strcmp(d->fields[1].name, "value") == 0;
}

static cJSON *map_json(const ProtobufCFieldDescriptor *f, ProtobufCMessage *const *entries,
                       size_t n)
{
    const ProtobufCMessageDescriptor *d = f->descriptor;
    cJSON *obj = cJSON_CreateObject();
    for (size_t i = 0; i < n; i++) {
        const char *e = (const char *)entries[i];
        cJSON *key = value_json(&d->fields[0], e + d->fields[0].offset);
        cJSON *val = value_json(&d->fields[1], e + d->fields[1].offset);
        char *k = cJSON_IsString(key) ? xstrdup(cJSON_GetStringValue(key)) : cJSON_Print(key);
        cJSON_AddItemToObject(obj, k != NULL ? k : "", val);
        free(k);
        cJSON_Delete(key);
    }
    return obj;
}

static cJSON *message_json(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    cJSON *obj = cJSON_CreateObject();
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *member = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(const void *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)member;
            if (is_map_entry(f)) {
                cJSON_AddItemToObject(obj, f->name,
                                      map_json(f, (ProtobufCMessage *const *)(const void *)arr, n));
                continue;
            }
            cJSON *a = cJSON_CreateArray();
            for (size_t k = 0; k < n; k++)
                cJSON_AddItemToArray(a, value_json(f, arr + k * value_size(f->type)));
            cJSON_AddItemToObject(obj, f->name, a);
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(const void *)(base + f->quantifier_offset) != f->id)
                continue;
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                   f->type != PROTOBUF_C_TYPE_STRING && f->quantifier_offset != 0) {
            if (!*(const protobuf_c_boolean *)(const void *)(base + f->quantifier_offset))
                continue;
        }
        /* Absent sub-messages are left out rather than written as null. */
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && *(ProtobufCMessage *const *)member == NULL)
            continue;
        cJSON_AddItemToObject(obj, f->name, value_json(f, member));
    }
    return obj;
}

/* Prints j on one line and frees it. */
static void print_json(cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (s == NULL)
        out_of_memory();
    printf("%s\n", s);
    cJSON_free(s);
}

/* ---- subcommands ------------------------------------------------------------ */

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

static int missing_in_response(const char *what)
{
    fprintf(stderr, "ipamctl: the server's response has no %s\n", what);
    return GRPC_STATUS_INTERNAL;
}

static void print_pools(const struct opts *o, Ipam__V1__Pool *const *pools, size_t n)
{
    table t = pool_table();
    for (size_t i = 0; i < n; i++) {
        if (o->output == OUT_JSON)
            print_json(message_json(&pools[i]->base));
        else
            pool_row(&t, pools[i]);
    }
    if (o->output == OUT_TABLE)
        table_flush(&t);
}

static void print_lease(const struct opts *o, const Ipam__V1__Lease *l)
{
    if (o->output == OUT_JSON) {
        print_json(message_json(&l->base));
        return;
    }
    table t = lease_table();
    lease_row(&t, l);
    table_flush(&t);
}

/* Builds map entries of descriptor d from labels; free with free_entries. */
static ProtobufCMessage **label_entries(const kvlist *labels, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage **v = xcalloc(labels->n, sizeof(*v));
    unsigned key = protobuf_c_message_descriptor_get_field_by_name(d, "key")->offset;
    unsigned value = protobuf_c_message_descriptor_get_field_by_name(d, "value")->offset;
    for (size_t i = 0; i < labels->n; i++) {
        v[i] = xcalloc(1, d->sizeof_message);
        protobuf_c_message_init(d, v[i]);
        /* protobuf-c fields are not const; requests are only read. */
        *(const char **)(void *)((char *)v[i] + key) = labels->v[i].key;
        *(const char **)(void *)((char *)v[i] + value) = labels->v[i].value;
    }
    return v;
}

static void free_entries(ProtobufCMessage **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static const char *or_empty(const char *s)
{
    return s != NULL ? s : "";
}

static int cmd_pool_apply(ipam_client *c, const struct opts *o)
{
    Ipam__V1__Pool pool = IPAM__V1__POOL__INIT;
    pool.name = (char *)o->args[0];
    pool.space = (char *)or_empty(o->space);
    pool.n_blocks = o->blocks.n;
    pool.blocks = (char **)o->blocks.v;
    pool.search_order = o->order;
    pool.skip_end_ips = o->skip_end_ips;
    pool.avoid_buggy_ips = o->avoid_buggy_ips;
    pool.allow_share = o->allow_share;
    Ipam__V1__ApplyPoolRequest req = IPAM__V1__APPLY_POOL_REQUEST__INIT;
    req.pool = &pool;
    ProtobufCMessage *resp;
    int rc = rpc(c, IPAM_METHOD_APPLY_POOL, &req.base, &resp);
    if (rc != GRPC_STATUS_OK)
        return rc;
    Ipam__V1__ApplyPoolResponse *r = (Ipam__V1__ApplyPoolResponse *)resp;
    if (r->pool != NULL)
        print_pools(o, &r->pool, 1);
    else
        rc = missing_in_response("pool");
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cmd_pool_get(ipam_client *c, const struct opts *o)
{
    Ipam__V1__GetPoolRequest req = IPAM__V1__GET_POOL_REQUEST__INIT;
    req.name = (char *)o->args[0];
    ProtobufCMessage *resp;
    int rc = rpc(c, IPAM_METHOD_GET_POOL, &req.base, &resp);
    if (rc != GRPC_STATUS_OK)
        return rc;
    Ipam__V1__GetPoolResponse *r = (Ipam__V1__GetPoolResponse *)resp;
    if (r->pool != NULL)
        print_pools(o, &r->pool, 1);
    else
        rc = missing_in_response("pool");
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cmd_pool_list(ipam_client *c, const struct opts *o)
{
    Ipam__V1__ListPoolsRequest req = IPAM__V1__LIST_POOLS_REQUEST__INIT;
    ProtobufCMessage *resp;
    int rc = rpc(c, IPAM_METHOD_LIST_POOLS, &req.base, &resp);
    if (rc != GRPC_STATUS_OK)
        return rc;
    Ipam__V1__ListPoolsResponse *r = (Ipam__V1__ListPoolsResponse *)resp;
    print_pools(o, r->pools, r->n_pools);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cmd_pool_delete(ipam_client *c, const struct opts *o)
{
    Ipam__V1__DeletePoolRequest req = IPAM__V1__DELETE_POOL_REQUEST__INIT;
    req.name = (char *)o->args[0];
    req.force = o->force;
    ProtobufCMessage *resp;
    int rc = rpc(c, IPAM_METHOD_DELETE_POOL, &req.base, &resp);
    if (rc != GRPC_STATUS_OK)
        return rc;
    Ipam__V1__DeletePoolResponse *r = (Ipam__V1__DeletePoolResponse *)resp;
    if (o->output == OUT_JSON) {
        cJSON *j = message_json(resp);
        cJSON_AddItemToObject(j, "name", cJSON_CreateString(o->args[0]));
        print_json(j);
    } else {
        printf("pool %s deleted, %u leases released\n", o->args[0], (unsigned)r->released_leases);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cmd_allocate(ipam_client *c, const struct opts *o)
{
    Ipam__V1__AllocateRequest req = IPAM__V1__ALLOCATE_REQUEST__INIT;
    req.pool = (char *)or_empty(o->pool);
    req.owner = (char *)o->owner;
    req.n_addresses = o->addresses.n;
    req.addresses = (char **)o->addresses.v;
    req.family = o->family;
    req.primary_family = o->primary;
    req.ttl_seconds = o->ttl;
    req.n_labels = o->labels.n;
    req.labels = (Ipam__V1__AllocateRequest__LabelsEntry **)label_entries(
        &o->labels, &ipam__v1__allocate_request__labels_entry__descriptor);
    Ipam__V1__Port *ports = xcalloc(o->ports.n, sizeof(*ports));
    Ipam__V1__Port **port_ptrs = xcalloc(o->ports.n, sizeof(*port_ptrs));
    for (size_t i = 0; i < o->ports.n; i++) {
        ipam__v1__port__init(&ports[i]);
        ports[i].protocol = (char *)o->ports.v[i].protocol;
        ports[i].port = o->ports.v[i].port;
        port_ptrs[i] = &ports[i];
    }
    req.n_ports = o->ports.n;
    req.ports = port_ptrs;
    req.sharing_key = (char *)or_empty(o->sharing_key);
    req.space = (char *)or_empty(o->space);

    ProtobufCMessage *resp;
    int rc = rpc(c, IPAM_METHOD_ALLOCATE, &req.base, &resp);
    free_entries((ProtobufCMessage **)req.labels, req.n_labels);
    free(port_ptrs);
    free(ports);
    if (rc != GRPC_STATUS_OK)
        return rc;
    Ipam__V1__AllocateResponse *r = (Ipam__V1__AllocateResponse *)resp;
    if (r->lease != NULL)
        print_lease(o, r->lease);
    else
        rc = missing_in_response("lease");
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cmd_release(ipam_client *c, const struct opts *o)
{
    Ipam__V1__ReleaseRequest req = IPAM__V1__RELEASE_REQUEST__INIT;
    req.owner = (char *)o->owner;
    ProtobufCMessage *resp;
    int rc = rpc(c, IPAM_METHOD_RELEASE, &req.base, &resp);
    if (rc != GRPC_STATUS_OK)
        return rc;
    Ipam__V1__ReleaseResponse *r = (Ipam__V1__ReleaseResponse *)resp;
    if (r->lease != NULL)
        print_lease(o, r->lease);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cmd_renew(ipam_client *c, const struct opts *o)
{
    Ipam__V1__RenewRequest req = IPAM__V1__RENEW_REQUEST__INIT;
    req.owner = (char *)o->owner;
    req.ttl_seconds = o->ttl;
    ProtobufCMessage *resp;
    int rc = rpc(c, IPAM_METHOD_RENEW, &req.base, &resp);
    if (rc != GRPC_STATUS_OK)
        return rc;
    Ipam__V1__RenewResponse *r = (Ipam__V1__RenewResponse *)resp;
    if (r->lease != NULL)
        print_lease(o, r->lease);
    else
        rc = missing_in_response("lease");
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int cmd_lease_get(ipam_client *c, const struct opts *o)
{
    Ipam__V1__GetLeaseRequest req = IPAM__V1__GET_LEASE_REQUEST__INIT;
    req.owner = (char *)o->args[0];
    ProtobufCMessage *resp;
    int rc = rpc(c, IPAM_METHOD_GET_LEASE, &req.base, &resp);
    if (rc != GRPC_STATUS_OK)
        return rc;
    Ipam__V1__GetLeaseResponse *r = (Ipam__V1__GetLeaseResponse *)resp;
    if (r->lease != NULL)
        print_lease(o, r->lease);
    else
        rc = missing_in_response("lease");
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* Reads every page; JSON objects are printed as pages arrive, a table once at
 * the end so that its columns line up. */
static int cmd_lease_list(ipam_client *c, const struct opts *o)
{
    Ipam__V1__ListLeasesRequest req = IPAM__V1__LIST_LEASES_REQUEST__INIT;
    req.pool = (char *)or_empty(o->pool);
    req.owner_prefix = (char *)or_empty(o->owner_prefix);
    req.n_labels = o->labels.n;
    req.labels = (Ipam__V1__ListLeasesRequest__LabelsEntry **)label_entries(
        &o->labels, &ipam__v1__list_leases_request__labels_entry__descriptor);
    char *token = xstrdup("");
    table t = lease_table();
    int rc;
    for (;;) {
        req.page_token = token;
        ProtobufCMessage *resp;
        rc = rpc(c, IPAM_METHOD_LIST_LEASES, &req.base, &resp);
        if (rc != GRPC_STATUS_OK)
            break;
        Ipam__V1__ListLeasesResponse *r = (Ipam__V1__ListLeasesResponse *)resp;
        for (size_t i = 0; i < r->n_leases; i++) {
            if (o->output == OUT_JSON)
                print_json(message_json(&r->leases[i]->base));
            else
                lease_row(&t, r->leases[i]);
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
    free_entries((ProtobufCMessage **)req.labels, req.n_labels);
    return rc;
}

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
    return ev != NULL ? ev->name : "?";
}

static void print_event_line(const Ipam__V1__Event *e)
{
    char *what;
    if (e->lease != NULL) {
        char *addrs = join(e->lease->addresses, e->lease->n_addresses, ",");
        what = xprintf("owner=%s pool=%s addresses=%s", e->lease->owner,
                       e->lease->pool[0] != '\0' ? e->lease->pool : "-", addrs);
        free(addrs);
    } else if (e->pool != NULL) {
        char *blocks = join(e->pool->blocks, e->pool->n_blocks, ",");
        what = xprintf("pool=%s blocks=%s", e->pool->name, blocks);
        free(blocks);
    } else {
        what = xstrdup("-");
    }
    printf("%llu %s %s %s\n", (unsigned long long)e->revision,
           enum_name(&ipam__v1__event__type__descriptor, e->type),
           e->reason[0] != '\0' ? e->reason : "-", what);
    free(what);
}

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

static int cmd_watch(ipam_client *c, const struct opts *o)
{
    Ipam__V1__WatchRequest req = IPAM__V1__WATCH_REQUEST__INIT;
    req.from_revision = o->from_revision;
    ipam_stream *s = ipam_client_stream_invoke(c, IPAM_METHOD_WATCH, &req.base);
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

static int cmd_health(ipam_client *c, const struct opts *o)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp;
    int rc = rpc(c, IPAM_METHOD_HEALTH_CHECK, &req.base, &resp);
    if (rc != GRPC_STATUS_OK)
        return rc;
    Grpc__Health__V1__HealthCheckResponse *r = (Grpc__Health__V1__HealthCheckResponse *)resp;
    if (o->output == OUT_JSON)
        print_json(message_json(resp));
    else
        printf("%s\n",
               enum_name(&grpc__health__v1__health_check_response__serving_status__descriptor,
                         r->status));
    rc = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : 1;
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- the subcommand table and the command line ------------------------------ */

typedef struct {
    int id;
    bool required;
} cmd_flag;

#define REQ(id)                                                                                    \
    {                                                                                              \
        id, true                                                                                   \
    }
#define OPT(id)                                                                                    \
    {                                                                                              \
        id, false                                                                                  \
    }
#define MAX_CMD_FLAGS 12

typedef struct {
    const char *group; /* "pool", or NULL for a one-word subcommand */
    const char *name;
    const char *args[2]; /* positional arguments, NULL-terminated */
    cmd_flag flags[MAX_CMD_FLAGS];
    int (*run)(ipam_client *c, const struct opts *o);
    bool until_interrupted; /* takes SIGINT/SIGTERM as "stop" */
    const char *summary;
} command;

static const command commands[] = {
    {.group = "pool",
     .name = "apply",
     .args = {"NAME"},
     .flags = {REQ(F_BLOCK), OPT(F_ORDER), OPT(F_SKIP_END_IPS), OPT(F_AVOID_BUGGY_IPS),
               OPT(F_ALLOW_SHARE), OPT(F_SPACE)},
     .run = cmd_pool_apply,
     .summary = "create a pool, or replace the pool of that name"},
    {.group = "pool",
     .name = "get",
     .args = {"NAME"},
     .run = cmd_pool_get,
     .summary = "show a pool"},
    {.group = "pool", .name = "list", .run = cmd_pool_list, .summary = "show every pool"},
    {.group = "pool",
     .name = "delete",
     .args = {"NAME"},
     .flags = {OPT(F_FORCE)},
     .run = cmd_pool_delete,
     .summary = "delete a pool (--force: and release its leases)"},
    {.name = "allocate",
     .flags = {REQ(F_POOL), REQ(F_OWNER), OPT(F_ADDRESS), OPT(F_FAMILY), OPT(F_PRIMARY), OPT(F_TTL),
               OPT(F_LABEL), OPT(F_PORT), OPT(F_SHARING_KEY), OPT(F_SPACE)},
     .run = cmd_allocate,
     .summary = "give the owner a lease (idempotent); --pool '' with --address reserves "
                "statically"},
    {.name = "release",
     .flags = {REQ(F_OWNER)},
     .run = cmd_release,
     .summary = "release the owner's lease"},
    {.name = "renew",
     .flags = {REQ(F_OWNER), OPT(F_TTL)},
     .run = cmd_renew,
     .summary = "push the lease's expiry to now + ttl (the lease's own ttl unless given)"},
    {.group = "lease",
     .name = "get",
     .args = {"OWNER"},
     .run = cmd_lease_get,
     .summary = "show the owner's lease"},
    {.group = "lease",
     .name = "list",
     .flags = {OPT(F_POOL), OPT(F_OWNER_PREFIX), OPT(F_LABEL)},
     .run = cmd_lease_list,
     .summary = "show leases, following every page"},
    {.name = "watch",
     .flags = {OPT(F_FROM_REVISION)},
     .run = cmd_watch,
     .until_interrupted = true,
     .summary = "print pool and lease events until interrupted or the stream ends"},
    {.name = "health",
     .run = cmd_health,
     .summary = "print the server's health; exit 0 only when SERVING"},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_flag_usage(FILE *out, const flag *f, bool required)
{
    const char *sp = f->metavar != NULL ? " " : "";
    const char *mv = f->metavar != NULL ? f->metavar : "";
    if (required)
        fprintf(out, " %s%s%s", f->name, sp, mv);
    if (!required || f->repeatable)
        fprintf(out, " [%s%s%s]%s", f->name, sp, mv, f->repeatable ? "..." : "");
}

static void print_globals_usage(FILE *out)
{
    fputs("ipamctl", out);
    for (size_t i = 0; i < N_GLOBAL_FLAGS; i++)
        print_flag_usage(out, &flags[global_flags[i]], false);
}

static void print_command_usage(FILE *out, const command *c)
{
    if (c->group != NULL)
        fprintf(out, "%s ", c->group);
    fputs(c->name, out);
    for (size_t i = 0; i < 2 && c->args[i] != NULL; i++)
        fprintf(out, " %s", c->args[i]);
    for (size_t i = 0; i < MAX_CMD_FLAGS && c->flags[i].id != F_NONE; i++)
        print_flag_usage(out, &flags[c->flags[i].id], c->flags[i].required);
}

static void print_usage(FILE *out)
{
    fputs("usage: ", out);
    print_globals_usage(out);
    fputs(" SUBCOMMAND\n\nsubcommands:\n", out);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        fputs("  ", out);
        print_command_usage(out, &commands[i]);
        fprintf(out, "\n      %s\n", commands[i].summary);
    }
    fputs("\nADDR is host:port or unix:/path; the default is $IPAMD_ADDR, else " DEFAULT_SERVER
          ".\nThe exit status is 0, 2 for a usage error, else the gRPC status code.\n",
          out);
}

/* Reports a usage error (already printed) and exits 2. */
static _Noreturn void usage_exit(const command *c)
{
    fputs("usage: ", stderr);
    print_globals_usage(stderr);
    if (c != NULL) {
        fputc(' ', stderr);
        print_command_usage(stderr, c);
        fputc('\n', stderr);
    } else {
        fputs(" SUBCOMMAND\n(ipamctl --help lists the subcommands)\n", stderr);
    }
    exit(EXIT_USAGE);
}

__attribute__((format(printf, 2, 3))) static _Noreturn void usage_error(const command *c,
                                                                        const char *fmt, ...)
{
    va_list ap;
    fputs("ipamctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    usage_exit(c);
}

static const char *command_label(const command *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s%s", c->group != NULL ? c->group : "", c->group != NULL ? " " : "",
             c->name);
    return buf;
}

/* Finds the flag spelled name (length len) among the globals and c's flags;
 * F_NONE when there is none. */
static int find_flag(const command *c, const char *name, size_t len)
{
    for (size_t i = 0; i < N_GLOBAL_FLAGS; i++) {
        const flag *f = &flags[global_flags[i]];
        if ((strlen(f->name) == len && strncmp(f->name, name, len) == 0) ||
            (f->alias != NULL && strlen(f->alias) == len && strncmp(f->alias, name, len) == 0))
            return global_flags[i];
    }
    for (size_t i = 0; c != NULL && i < MAX_CMD_FLAGS && c->flags[i].id != F_NONE; i++) {
        const flag *f = &flags[c->flags[i].id];
        if (strlen(f->name) == len && strncmp(f->name, name, len) == 0)
            return c->flags[i].id;
    }
    return F_NONE;
}

/* Matches the subcommand at argv[*i] (one or two words) and steps past it. */
static const command *find_command(int argc, char **argv, int *i)
{
    const char *w = argv[*i];
    const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
    bool group = false;
    for (size_t k = 0; k < N_COMMANDS; k++) {
        const command *c = &commands[k];
        if (c->group == NULL && strcmp(c->name, w) == 0) {
            *i += 1;
            return c;
        }
        if (c->group != NULL && strcmp(c->group, w) == 0) {
            group = true;
            if (next != NULL && strcmp(c->name, next) == 0) {
                *i += 2;
                return c;
            }
        }
    }
    if (group && next == NULL)
        usage_error(NULL, "missing subcommand after `%s'", w);
    if (group)
        usage_error(NULL, "unknown subcommand `%s %s'", w, next);
    usage_error(NULL, "unknown subcommand `%s'", w);
}

static const command *parse_command_line(int argc, char **argv, struct opts *o)
{
    const command *cmd = NULL;
    bool seen[F_COUNT] = {false};
    bool only_args = false;
    char label[64];

    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        if (only_args || a[0] != '-' || a[1] == '\0') {
            if (cmd == NULL) {
                cmd = find_command(argc, argv, &i);
                continue;
            }
            if (o->nargs >= 2 || cmd->args[o->nargs] == NULL)
                usage_error(cmd, "unexpected argument `%s' for `%s'", a,
                            command_label(cmd, label, sizeof(label)));
            o->args[o->nargs++] = a;
            i++;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = true;
            i++;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_usage(stdout);
            exit(0);
        }
        const char *eq = strchr(a, '=');
        size_t len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        int id = find_flag(cmd, a, len);
        if (id == F_NONE) {
            if (cmd == NULL)
                usage_error(NULL, "unknown flag `%.*s'", (int)len, a);
            usage_error(cmd, "unknown flag `%.*s' for `%s'", (int)len, a,
                        command_label(cmd, label, sizeof(label)));
        }
        const flag *f = &flags[id];
        const char *value = "";
        if (f->metavar != NULL) {
            if (eq != NULL) {
                value = eq + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                usage_error(cmd, "flag `%s' needs a value (%s)", f->name, f->metavar);
            }
        } else if (eq != NULL) {
            usage_error(cmd, "flag `%s' takes no value", f->name);
        }
        if (seen[id] && !f->repeatable)
            usage_error(cmd, "flag `%s' given twice", f->name);
        seen[id] = true;
        if (!f->parse(f, value, o))
            usage_exit(cmd);
        i++;
    }

    if (cmd == NULL)
        usage_error(NULL, "missing subcommand");
    if (o->nargs < 2 && cmd->args[o->nargs] != NULL)
        usage_error(cmd, "missing %s for `%s'", cmd->args[o->nargs],
                    command_label(cmd, label, sizeof(label)));
    for (size_t k = 0; k < MAX_CMD_FLAGS && cmd->flags[k].id != F_NONE; k++) {
        if (cmd->flags[k].required && !seen[cmd->flags[k].id])
            usage_error(cmd, "missing %s for `%s'", flags[cmd->flags[k].id].name,
                        command_label(cmd, label, sizeof(label)));
    }
    return cmd;
}

int main(int argc, char **argv)
{
    struct opts o = {.output = OUT_TABLE};
    const char *env = getenv("IPAMD_ADDR");
    o.server = env != NULL && env[0] != '\0' ? env : DEFAULT_SERVER;
    const command *cmd = parse_command_line(argc, argv, &o);

    static sigset_t stop_signals;
    if (cmd->until_interrupted) {
        /* Before grpc_init, so that gRPC's threads inherit the mask. */
        sigemptyset(&stop_signals);
        sigaddset(&stop_signals, SIGINT);
        sigaddset(&stop_signals, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
        pthread_t t;
        if (pthread_create(&t, NULL, signal_thread, &stop_signals) != 0) {
            fputs("ipamctl: cannot start the signal thread\n", stderr);
            opts_free(&o);
            return GRPC_STATUS_RESOURCE_EXHAUSTED;
        }
        pthread_detach(t);
    }

    ipam_client *c = ipam_client_open(o.server);
    if (c == NULL)
        out_of_memory();
    int rc = cmd->run(c, &o);
    fflush(stdout);
    ipam_client_close(c);
    opts_free(&o);
    return rc;
}
