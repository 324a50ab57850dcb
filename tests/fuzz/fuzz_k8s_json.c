/* Fuzz harness for the adapter's Kubernetes JSON (k8s-adapter/service.c, kvconfig.c).
 *
 * The input is JSON as the API server might send it, hostile or not. It is
 * read as a Service (svc_parse), as a watch event ({"type", "object"}: the
 * object is read as a Service and as a ConfigMap), as a ConfigMap (its
 * `data' through kv_config_parse with every lookup) and as a bare data
 * object. For each parsed Service the three patch builders run with the
 * addresses it asks for (or the valid ones it carries); a patch must print
 * as JSON, carry the resourceVersion, and once
 * applied (RFC 7386 merge, as the API server does) the same builder must
 * find nothing left to change. The first input byte's low bit turns on
 * LoadBalancerClass mode. */
#include "fuzz.h"

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "kvconfig.h"
#include "service.h"

#define FUZZ_MAX_INPUT 65536
#define PREFIX "kubevip"
#define CLASS "kube-vip.io/kube-vip-class"

enum patch_kind { ASSIGN, RELEASE, STATUS };

/* RFC 7386 JSON merge patch; consumes target and returns the result.
 * Duplicate keys of target collapse into the patched one, as a decoder
 * that keeps one value per key would see it. */
static cJSON *merge(cJSON *target, const cJSON *patch)
{
    const cJSON *p;

    if (!cJSON_IsObject(patch)) {
        cJSON_Delete(target);
        return cJSON_Duplicate(patch, 1);
    }
    if (!cJSON_IsObject(target)) {
        cJSON_Delete(target);
        target = cJSON_CreateObject();
    }
    cJSON_ArrayForEach(p, patch)
    {
        cJSON *old = cJSON_DetachItemFromObjectCaseSensitive(target, p->string);
        while (cJSON_GetObjectItemCaseSensitive(target, p->string))
            cJSON_DeleteItemFromObjectCaseSensitive(target, p->string);
        if (cJSON_IsNull(p)) {
            cJSON_Delete(old);
            continue;
        }
        cJSON *merged = merge(old, p);
        FUZZ_ASSERT(merged != NULL, "out of memory");
        cJSON_AddItemToObject(target, p->string, merged);
    }
    return target;
}

static cJSON *build(enum patch_kind k, const struct svc *s, char *const *addrs, size_t n,
                    const char *iface)
{
    switch (k) {
    case ASSIGN:
        return svc_patch_assign(s, addrs, n, iface);
    case RELEASE:
        return svc_patch_release(s);
    default:
        return svc_patch_status(s, addrs, n);
    }
}

static void check_patch(const cJSON *obj, const struct svc *s, const struct svc_opts *o,
                        enum patch_kind k, char *const *addrs, size_t n, const char *iface)
{
    static const char *const names[] = {"assign", "release", "status"};
    cJSON *patch = build(k, s, addrs, n, iface);
    char err[256];
    struct svc t;

    if (!patch)
        return;
    FUZZ_ASSERT(cJSON_IsObject(patch), "%s patch is not an object", names[k]);
    const cJSON *rv = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(patch, "metadata"), "resourceVersion");
    FUZZ_ASSERT(s->rv ? cJSON_IsString(rv) && strcmp(rv->valuestring, s->rv) == 0 : rv == NULL,
                "%s patch does not carry the resourceVersion", names[k]);
    char *txt = cJSON_PrintUnformatted(patch);
    FUZZ_ASSERT(txt != NULL, "%s patch does not print", names[k]);
    cJSON *back = cJSON_Parse(txt);
    FUZZ_ASSERT(back != NULL, "%s patch prints as invalid JSON: %.300s", names[k], txt);
    cJSON_Delete(back);

    cJSON *merged = merge(cJSON_Duplicate(obj, 1), patch);
    FUZZ_ASSERT(merged != NULL, "out of memory");
    FUZZ_ASSERT(svc_parse(merged, o, &t, err, sizeof err) == 0,
                "the Service no longer parses after its %s patch %.300s: %s", names[k], txt, err);
    FUZZ_ASSERT(strcmp(t.ns, s->ns) == 0 && strcmp(t.name, s->name) == 0,
                "%s patch renamed the Service", names[k]);
    cJSON *again = build(k, &t, addrs, n, iface);
    if (again) {
        char *txt2 = cJSON_PrintUnformatted(again);
        FUZZ_ASSERT(again == NULL, "%s patch %.300s, once applied, wants %.300s", names[k], txt,
                    txt2 ? txt2 : "?");
    }
    svc_free(&t);
    cJSON_Delete(merged);
    free(txt);
    cJSON_Delete(patch);
}

static void check_config(const struct kv_config *c, const char *ns);

static void check_service(const cJSON *obj, const struct svc_opts *o, const struct kv_config *cfg)
{
    struct svc s;
    char err[256], key[1024];

    memset(err, 'x', sizeof err);
    if (svc_parse(obj, o, &s, err, sizeof err) != 0) {
        FUZZ_ASSERT(memchr(err, '\0', sizeof err) != NULL, "error not terminated");
        return;
    }
    FUZZ_ASSERT(s.ns && s.ns[0] && s.name && s.name[0], "Service without namespace/name");
    svc_key(&s, key, sizeof key);
    FUZZ_ASSERT(strlen(key) == sizeof key - 1 || strlen(key) == strlen(s.ns) + 1 + strlen(s.name),
                "key `%s'", key);
    FUZZ_ASSERT(!s.handled || s.load_balancer, "handled but not a LoadBalancer");
    FUZZ_ASSERT(s.nrequested <= 2, "%zu addresses requested", s.nrequested);
    for (size_t i = 0; i < s.nrequested; i++) {
        ipam_u128 a, b;
        FUZZ_ASSERT(ipam_addr_parse(s.requested[i], strlen(s.requested[i]), &a) == 0,
                    "requested `%s' is not an address", s.requested[i]);
        if (i == 1) {
            FUZZ_ASSERT(ipam_addr_parse(s.requested[0], strlen(s.requested[0]), &b) == 0 &&
                            ipam_is_v4(a) != ipam_is_v4(b),
                        "two requested addresses of one family");
        }
    }
    FUZZ_ASSERT(s.family >= 0 && s.family <= 4, "family %d", s.family);
    FUZZ_ASSERT(s.primary == 0 || s.primary == 2, "primary family %d", s.primary);
    FUZZ_ASSERT(s.nports <= MAX_SVC_PORTS, "%zu ports", s.nports);
    for (size_t i = 0; i < s.nports; i++) {
        FUZZ_ASSERT(s.ports[i].port >= 1 && s.ports[i].port <= 65535, "port %u", s.ports[i].port);
        FUZZ_ASSERT(!strcmp(s.ports[i].proto, "TCP") || !strcmp(s.ports[i].proto, "UDP") ||
                        !strcmp(s.ports[i].proto, "SCTP"),
                    "protocol `%s'", s.ports[i].proto);
    }
    FUZZ_ASSERT(!s.problem || s.problem[0], "empty problem");

    /* The addresses the Service would be given, as ipamd writes them: what
     * it asks for, else the addresses among what it carries. */
    char *addrs[2];
    size_t n = 0;
    for (size_t i = 0; i < s.nrequested; i++)
        addrs[n++] = s.requested[i];
    for (size_t i = 0; !s.nrequested && i < s.ningress && n < 2; i++) {
        ipam_u128 a;
        if (ipam_addr_parse(s.ingress[i], strlen(s.ingress[i]), &a) == 0)
            addrs[n++] = s.ingress[i];
    }
    const char *iface = cfg ? kv_interface(cfg, s.ns) : NULL;
    FUZZ_ASSERT(svc_patch_status(&s, s.ingress, s.ningress) == NULL,
                "a status patch for what the Service already carries");
    check_patch(obj, &s, o, ASSIGN, addrs, n, iface);
    check_patch(obj, &s, o, RELEASE, addrs, n, iface);
    check_patch(obj, &s, o, STATUS, addrs, n, iface);
    if (cfg)
        check_config(cfg, s.ns);
    svc_free(&s);
}

static bool is_pool_key(const char *k)
{
    return k && (strncmp(k, "cidr-", 5) == 0 || strncmp(k, "range-", 6) == 0);
}

static void check_pool(const struct kv_config *c, const struct kv_pool *p)
{
    size_t len = strlen(p->ipam);
    char want[300];

    FUZZ_ASSERT(len >= 1 && len <= 63, "pool name `%s' is too long for ipamd", p->ipam);
    snprintf(want, sizeof want, "%s.%s", PREFIX, p->key);
    FUZZ_ASSERT(strlen(want) > 63 || strcmp(want, p->ipam) == 0, "pool `%s' is named `%s'", p->key,
                p->ipam);
    const struct kv_pool *first = kv_pool_by_key(c, p->key);
    FUZZ_ASSERT(first && strcmp(first->key, p->key) == 0 && first <= p, "pool `%s' lookup", p->key);
    if (p->error) {
        FUZZ_ASSERT(p->error[0], "empty error");
        return;
    }
    FUZZ_ASSERT(p->nblocks >= 1, "pool `%s' has no blocks and no error", p->key);
    for (size_t i = 0; i < p->nblocks; i++) {
        ipam_block b;
        FUZZ_ASSERT(ipam_block_parse(p->blocks[i], strlen(p->blocks[i]), &b, NULL, 0) == 0,
                    "pool `%s' block `%s' does not parse", p->key, p->blocks[i]);
        FUZZ_ASSERT((strchr(p->blocks[i], '/') != NULL) == p->cidr,
                    "pool `%s' mixes CIDRs and ranges", p->key);
    }
    FUZZ_ASSERT(!p->dhcp || (p->nblocks == 1 && strcmp(p->blocks[0], "0.0.0.0/32") == 0),
                "pool `%s' is DHCP", p->key);
    ipam_set set;
    FUZZ_ASSERT(ipam_set_from_blocks((const char *const *)p->blocks, p->nblocks, c->skip_end, &set,
                                     NULL, 0) == 0,
                "pool `%s' has no error but ipamd would refuse it", p->key);
    fuzz_check_set(&set);
    ipam_set_free(&set);
}

static void check_config(const struct kv_config *c, const char *ns)
{
    const char *scopes[] = {ns, "global"};
    const struct kv_pool *p = kv_pool_for(c, ns);

    if (p) {
        bool expected = false;
        for (int i = 0; i < 2; i++) {
            char k1[320], k2[320];
            snprintf(k1, sizeof k1, "cidr-%s", scopes[i]);
            snprintf(k2, sizeof k2, "range-%s", scopes[i]);
            expected |= strcmp(p->key, k1) == 0 || strcmp(p->key, k2) == 0;
        }
        FUZZ_ASSERT(expected, "namespace `%s' gets pool `%s'", ns, p->key);
    }
    const char *iface = kv_interface(c, ns);
    FUZZ_ASSERT(!iface || iface[0], "empty interface");
    (void)kv_allow_share(c, ns);
}

/* kv_config_parse on data (an object or NULL), with every lookup. */
static void check_data(const cJSON *data)
{
    struct kv_config c;
    size_t n = 0;
    const cJSON *e;

    kv_config_parse(data, PREFIX, &c);
    cJSON_ArrayForEach(e, data) n += cJSON_IsString(e) && is_pool_key(e->string);
    FUZZ_ASSERT(c.npools == n, "%zu pools for %zu pool keys", c.npools, n);
    for (size_t i = 0; i < c.npools; i++)
        check_pool(&c, &c.pools[i]);
    check_config(&c, "default");
    check_config(&c, "global");
    for (size_t i = 0; i < c.npools; i++) {
        const char *dash = strchr(c.pools[i].key, '-');
        check_config(&c, dash + 1);
    }
    kv_config_free(&c);
    FUZZ_ASSERT(c.pools == NULL && c.npools == 0 && c.data == NULL, "kv_config_free");
}

static const cJSON *data_of(const cJSON *cm)
{
    const cJSON *d = cJSON_IsObject(cm) ? cJSON_GetObjectItemCaseSensitive(cm, "data") : NULL;
    return cJSON_IsObject(d) ? d : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct svc_opts o = {.class_mode = size > 0 && (data[0] & 1), .class_name = CLASS};
    struct kv_config cfg;
    cJSON *root;

    if (size > FUZZ_MAX_INPUT)
        return 0;
    root = cJSON_ParseWithLength((const char *)data, size);
    if (!root)
        return 0;

    /* A watch event: the object is a Service or the ConfigMap. */
    const cJSON *type =
        cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "type") : NULL;
    const cJSON *obj =
        cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "object") : NULL;
    const cJSON *cm = cJSON_IsString(type) && cJSON_IsObject(obj) ? obj : root;

    kv_config_parse(data_of(cm), PREFIX, &cfg);
    check_service(root, &o, &cfg);
    if (cm != root)
        check_service(cm, &o, &cfg);
    kv_config_free(&cfg);
    check_data(data_of(cm));
    if (cJSON_IsObject(root))
        check_data(root);
    cJSON_Delete(root);
    return 0;
}
