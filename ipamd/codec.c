/* Core objects to protobuf messages: replies, store blobs and events. */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("ipamd: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 8192 ? n : 8192;
        c = xmalloc(sizeof(*c) + cap);
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = arena_alloc(a, n);
    memcpy(d, s, n);
    return d;
}

void arena_free(struct arena *a)
{
    while (a->head) {
        struct arena_chunk *n = a->head->next;
        free(a->head);
        a->head = n;
    }
}

static const char *const proto_names[] = {NULL, "TCP", "UDP", "SCTP"};

int port_proto_parse(const char *s)
{
    for (int i = 1; i < 4; i++)
        if (strcasecmp(s, proto_names[i]) == 0)
            return i;
    return 0;
}

const char *port_proto_name(int p) { return p >= 1 && p <= 3 ? proto_names[p] : "?"; }

void lease_to_pb(struct arena *a, const struct lease *l, Ipam__V1__Lease *out)
{
    ipam__v1__lease__init(out);
    out->owner = l->owner;
    out->pool = (char *)lease_pool_name(l);
    out->space = l->space->name;
    out->n_addresses = l->naddr;
    out->addresses = arena_alloc(a, l->naddr * sizeof(char *));
    for (size_t i = 0; i < l->naddr; i++)
        out->addresses[i] = ipam_addr_format(l->addr[i].addr, arena_alloc(a, IPAM_ADDR_STRLEN));
    out->n_labels = l->nlabels;
    out->labels = arena_alloc(a, l->nlabels * sizeof(*out->labels));
    for (size_t i = 0; i < l->nlabels; i++) {
        Ipam__V1__Lease__LabelsEntry *e = arena_alloc(a, sizeof(*e));
        ipam__v1__lease__labels_entry__init(e);
        e->key = l->labels[i].key;
        e->value = l->labels[i].value;
        out->labels[i] = e;
    }
    out->n_ports = l->nports;
    out->ports = arena_alloc(a, l->nports * sizeof(*out->ports));
    for (size_t i = 0; i < l->nports; i++) {
        Ipam__V1__Port *p = arena_alloc(a, sizeof(*p));
        ipam__v1__port__init(p);
        p->protocol = (char *)port_proto_name(l->ports[i].proto);
        p->port = l->ports[i].port;
        out->ports[i] = p;
    }
    out->sharing_key = (char *)lease_sharing_key(l);
    out->ttl_seconds = l->ttl;
    out->expire_time = l->expire_time;
    out->create_time = l->create_time;
    out->create_revision = l->create_revision;
    out->revision = l->revision;
}

static Ipam__V1__FamilyStats *family_stats(struct arena *a, ipam_u128 total, ipam_u128 used)
{
    Ipam__V1__FamilyStats *f = arena_alloc(a, sizeof(*f));
    ipam__v1__family_stats__init(f);
    f->total = ipam_u128_format(total, arena_alloc(a, IPAM_U128_STRLEN));
    f->used = ipam_u128_format(used, arena_alloc(a, IPAM_U128_STRLEN));
    f->free = ipam_u128_format(total - used, arena_alloc(a, IPAM_U128_STRLEN));
    return f;
}

void pool_to_pb(struct arena *a, const struct pool *p, bool with_status, Ipam__V1__Pool *out)
{
    ipam__v1__pool__init(out);
    out->name = p->name;
    out->space = p->space->name;
    out->n_blocks = p->nblocks;
    out->blocks = p->blocks;
    out->search_order = p->order;
    out->skip_end_ips = p->skip_end_ips;
    out->avoid_buggy_ips = p->avoid_buggy_ips;
    out->allow_share = p->allow_share;
    out->create_revision = p->create_revision;
    out->revision = p->revision;
    if (!with_status)
        return;
    out->dhcp = p->dhcp;
    out->n_ranges = p->set.n;
    out->ranges = arena_alloc(a, p->set.n * sizeof(char *));
    for (size_t i = 0; i < p->set.n; i++)
        out->ranges[i] = ipam_range_format(p->set.r[i], arena_alloc(a, IPAM_BLOCK_STRLEN));
    struct pool_stats ps;
    st_pool_stats(p, &ps);
    out->ipv4 = family_stats(a, ps.total[0], ps.used[0]);
    out->ipv6 = family_stats(a, ps.total[1], ps.used[1]);
    out->leases = p->nleases;
}

uint8_t *pb_pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = xmalloc(*len);
    protobuf_c_message_pack(m, buf);
    return buf;
}

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
static bool valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += k + 1;
    }
    return true;
}

static int validate(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                    int depth, char *err, size_t errlen)
{
    if (depth > 16) {
        snprintf(err, errlen, "%s: nested too deeply", d->name);
        return -1;
    }
    while (p < end) {
        uint64_t key, n;
        if (!read_varint(&p, end, &key))
            return 0; /* Malformed: protobuf-c's decoder reports it. */
        unsigned wire = key & 7;
        /* Field numbers are 1 to 2^29 - 1. protobuf-c lets a 0 through when its
         * varint is padded (0x80 0x00), then cannot read back what it re-encodes. */
        if (key >> 3 == 0 || key >> 3 > 536870911) {
            snprintf(err, errlen, "%s: field number %llu is not valid", d->name,
                     (unsigned long long)(key >> 3));
            return -1;
        }
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
        switch (wire) {
        case 0:
            if (!read_varint(&p, end, &n))
                return 0;
            continue;
        case 1:
        case 5: {
            size_t w = wire == 1 ? 8 : 4;
            if (f && f->type == PROTOBUF_C_TYPE_BOOL) {
                snprintf(err, errlen, "%s.%s: a bool must be a varint", d->name, f->name);
                return -1;
            }
            if ((size_t)(end - p) < w)
                return 0;
            p += w;
            continue;
        }
        case 2:
            if (!read_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return 0;
            /* (A repeated bool may come packed; none of ours is repeated.) */
            if (f && f->type == PROTOBUF_C_TYPE_BOOL && f->label != PROTOBUF_C_LABEL_REPEATED) {
                snprintf(err, errlen, "%s.%s: a bool must be a varint", d->name, f->name);
                return -1;
            }
            if (f && f->type == PROTOBUF_C_TYPE_STRING &&
                (memchr(p, 0, n) || !valid_utf8(p, n))) {
                snprintf(err, errlen, "%s.%s: not valid UTF-8 text (or holds a NUL byte)",
                         d->name, f->name);
                return -1;
            }
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                validate(f->descriptor, p, p + n, depth + 1, err, errlen) != 0)
                return -1;
            p += n;
            continue;
        default:
            return 0;
        }
    }
    return 0;
}

int pb_validate(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char *err,
                size_t errlen)
{
    return validate(d, data, data + len, 0, err, errlen);
}
