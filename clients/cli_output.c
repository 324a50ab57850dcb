/* ipamctl's output: aligned tables of pools and leases, JSON from protobuf-c messages. */
#include "cli_output.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

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

/* ---- tables --------------------------------------------------------------- */

static char *stats_cell(const Ipam__V1__FamilyStats *s)
{
    if (s == NULL || strcmp(s->total, "0") == 0 || s->total[0] == '\0')
        return xstrdup("-");
    return xprintf("%s/%s", s->used, s->total);
}

static void pool_cells(const ProtobufCMessage *m, char **cells)
{
    const Ipam__V1__Pool *p = (const Ipam__V1__Pool *)m;
    cells[0] = xstrdup(p->name);
    cells[1] = xstrdup(p->space[0] != '\0' ? p->space : "default");
    cells[2] = join(p->blocks, p->n_blocks, ",");
    cells[3] =
        xstrdup(p->search_order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC ? "desc" : "asc");
    cells[4] = stats_cell(p->ipv4);
    cells[5] = stats_cell(p->ipv6);
    cells[6] = xprintf("%llu", (unsigned long long)p->leases);
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

static void lease_cells(const ProtobufCMessage *m, char **cells)
{
    const Ipam__V1__Lease *l = (const Ipam__V1__Lease *)m;
    char **labels = xcalloc(l->n_labels, sizeof(char *));
    for (size_t i = 0; i < l->n_labels; i++)
        labels[i] = xprintf("%s=%s", l->labels[i]->key, l->labels[i]->value);
    cells[0] = xstrdup(l->owner);
    cells[1] = xstrdup(l->pool[0] != '\0' ? l->pool : "-");
    cells[2] = join(l->addresses, l->n_addresses, ",");
    cells[3] = l->ttl_seconds != 0 ? xprintf("%us", (unsigned)l->ttl_seconds) : xstrdup("-");
    cells[4] = time_cell(l->expire_time);
    cells[5] = join(labels, l->n_labels, ",");
    for (size_t i = 0; i < l->n_labels; i++)
        free(labels[i]);
    free(labels);
}

#define MAX_COLUMNS 8

/* The columns of a table of one message type. */
struct table_kind {
    const ProtobufCMessageDescriptor *type;
    const char *headers[MAX_COLUMNS]; /* NULL-terminated when shorter */
    /* Writes one cell (the table's) per header. */
    void (*cells)(const ProtobufCMessage *m, char **cells);
};

static const struct table_kind kinds[] = {
    {&ipam__v1__pool__descriptor,
     {"NAME", "SPACE", "BLOCKS", "ORDER", "V4 USED/TOTAL", "V6 USED/TOTAL", "LEASES"},
     pool_cells},
    {&ipam__v1__lease__descriptor,
     {"OWNER", "POOL", "ADDRESSES", "TTL", "EXPIRES", "LABELS"},
     lease_cells},
};

static size_t ncols(const struct table_kind *k)
{
    size_t n = 0;
    while (n < MAX_COLUMNS && k->headers[n] != NULL)
        n++;
    return n;
}

table table_for(const ProtobufCMessageDescriptor *d)
{
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (kinds[i].type == d)
            return (table){.kind = &kinds[i]};
    }
    fprintf(stderr, "ipamctl: no table for %s\n", d->name);
    abort();
}

void table_add(table *t, const ProtobufCMessage *m)
{
    size_t n = ncols(t->kind);
    if (t->nrows == t->cap) {
        t->cap = t->cap == 0 ? 16 : t->cap * 2;
        t->cells = xreallocarray(t->cells, t->cap, n * sizeof(char *));
    }
    t->kind->cells(m, t->cells + t->nrows * n);
    t->nrows++;
}

void table_free(table *t)
{
    for (size_t i = 0; i < t->nrows * ncols(t->kind); i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->cap = 0;
}

void table_flush(table *t)
{
    size_t n = ncols(t->kind);
    const char *const *headers = t->kind->headers;
    size_t *width = xcalloc(n, sizeof(size_t));
    for (size_t c = 0; c < n; c++) {
        width[c] = strlen(headers[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t w = strlen(t->cells[r * n + c]);
            width[c] = w > width[c] ? w : width[c];
        }
    }
    for (size_t r = 0; r <= t->nrows; r++) {
        for (size_t c = 0; c < n; c++) {
            const char *s = r == 0 ? headers[c] : t->cells[(r - 1) * n + c];
            if (c + 1 < n)
                printf("%-*s  ", (int)width[c], s);
            else
                printf("%s\n", s);
        }
    }
    free(width);
    table_free(t);
}

void print_messages(int output, const ProtobufCMessageDescriptor *d, ProtobufCMessage *const *m,
                    size_t n)
{
    if (output == OUT_JSON) {
        for (size_t i = 0; i < n; i++)
            print_json(message_json(m[i]));
        return;
    }
    table t = table_for(d);
    for (size_t i = 0; i < n; i++)
        table_add(&t, m[i]);
    table_flush(&t);
}

/* ---- JSON from any protobuf-c message ------------------------------------ */

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

cJSON *message_json(const ProtobufCMessage *m)
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

void print_json(cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (s == NULL)
        out_of_memory();
    printf("%s\n", s);
    cJSON_free(s);
}

/* ---- watch events ------------------------------------------------------------ */

const char *enum_name(const ProtobufCEnumDescriptor *d, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
    return ev != NULL ? ev->name : "?";
}

void print_event_line(const Ipam__V1__Event *e)
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
