/* kube-vip ConfigMap keys to pools and per-namespace settings. */
#include "kvconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipam/addr.h"
#include "ipam/ipset.h"

#define IPAM_NAME_MAX 63

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) {
        fputs("k8s-adapter: out of memory\n", stderr);
        abort();
    }
    return d;
}

/* ipamd pool names are [A-Za-z0-9._-]{1,63}; ConfigMap keys are
 * [-._a-zA-Z0-9]+ up to 253, so a long one keeps a prefix and gains a hash
 * of the whole (FNV-1a) to stay unique and stable. */
static char *ipam_name(const char *prefix, const char *key)
{
    char buf[300];
    snprintf(buf, sizeof(buf), "%s.%s", prefix, key);
    if (strlen(buf) <= IPAM_NAME_MAX)
        return xstrdup(buf);
    uint32_t h = 2166136261u;
    for (const unsigned char *c = (const unsigned char *)buf; *c; c++)
        h = (h ^ *c) * 16777619u;
    char out[IPAM_NAME_MAX + 1];
    snprintf(out, sizeof(out), "%.54s.%08x", buf, h);
    return xstrdup(out);
}

static bool pool_key(const char *k)
{
    return strncmp(k, "cidr-", 5) == 0 || strncmp(k, "range-", 6) == 0;
}

static void parse_pool(struct kv_pool *p, const char *value)
{
    char err[400];
    ipam_set set = IPAM_SET_INIT;
    p->cidr = strchr(value, '/') != NULL;
    if (ipam_list_split(value, &p->blocks, &p->nblocks, err, sizeof(err)) != 0) {
        p->blocks = NULL;
        p->nblocks = 0;
        goto bad;
    }
    p->dhcp = p->nblocks == 1 && strcmp(p->blocks[0], "0.0.0.0/32") == 0;
    for (size_t i = 0; i < p->nblocks; i++) {
        /* The value, not the key, decides the syntax: CIDRs or ranges. */
        bool is_cidr = strchr(p->blocks[i], '/') != NULL;
        if (is_cidr != p->cidr) {
            snprintf(err, sizeof(err), "entry `%s' is a %s in a list of %s", p->blocks[i],
                     is_cidr ? "CIDR" : "range", p->cidr ? "CIDRs" : "ranges");
            goto bad;
        }
    }
    if (ipam_set_from_blocks((const char *const *)p->blocks, p->nblocks, false, &set, err,
                             sizeof(err)) != 0)
        goto bad;
    ipam_set_free(&set);
    return;
bad : {
    char msg[600];
    snprintf(msg, sizeof(msg), "invalid pool `%s': %s", p->key, err);
    p->error = xstrdup(msg);
}
}

void kv_config_parse(const cJSON *data, const char *prefix, struct kv_config *out)
{
    memset(out, 0, sizeof(*out));
    out->data = data ? cJSON_Duplicate(data, 1) : cJSON_CreateObject();
    if (!out->data) {
        fputs("k8s-adapter: out of memory\n", stderr);
        abort();
    }
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, out->data)
    {
        if (cJSON_IsString(e) && pool_key(e->string))
            n++;
    }
    out->pools = calloc(n ? n : 1, sizeof(*out->pools));
    if (!out->pools) {
        fputs("k8s-adapter: out of memory\n", stderr);
        abort();
    }
    cJSON_ArrayForEach(e, out->data)
    {
        if (!cJSON_IsString(e) || !pool_key(e->string))
            continue;
        struct kv_pool *p = &out->pools[out->npools++];
        p->key = xstrdup(e->string);
        p->ipam = ipam_name(prefix, e->string);
        parse_pool(p, e->valuestring);
    }
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(out->data, "search-order");
    out->desc = cJSON_IsString(so) && strcmp(so->valuestring, "desc") == 0;
    const cJSON *sk = cJSON_GetObjectItemCaseSensitive(out->data, "skip-end-ips-in-cidr");
    out->skip_end = cJSON_IsString(sk) && strcmp(sk->valuestring, "true") == 0;
}

void kv_config_free(struct kv_config *c)
{
    for (size_t i = 0; i < c->npools; i++) {
        free(c->pools[i].key);
        free(c->pools[i].ipam);
        ipam_list_free(c->pools[i].blocks, c->pools[i].nblocks);
        free(c->pools[i].error);
    }
    free(c->pools);
    cJSON_Delete(c->data);
    memset(c, 0, sizeof(*c));
}

const struct kv_pool *kv_pool_by_key(const struct kv_config *c, const char *key)
{
    for (size_t i = 0; i < c->npools; i++)
        if (strcmp(c->pools[i].key, key) == 0)
            return &c->pools[i];
    return NULL;
}

/* The value of "<what>-<ns>", else "<what>-global", if a string. */
static const char *ns_value(const struct kv_config *c, const char *what, const char *ns)
{
    const char *scopes[] = {ns, "global"};
    for (size_t i = 0; i < 2; i++) {
        char key[320];
        snprintf(key, sizeof(key), "%s-%s", what, scopes[i]);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->data, key);
        if (cJSON_IsString(v))
            return v->valuestring;
    }
    return NULL;
}

const struct kv_pool *kv_pool_for(const struct kv_config *c, const char *ns)
{
    /* Fix over the original: a namespace's own range comes before any global
     * pool, as its documentation says. */
    const char *order[][2] = {{"cidr", ns}, {"range", ns}, {"cidr", "global"}, {"range", "global"}};
    for (size_t i = 0; i < 4; i++) {
        char key[320];
        snprintf(key, sizeof(key), "%s-%s", order[i][0], order[i][1]);
        const struct kv_pool *p = kv_pool_by_key(c, key);
        if (p)
            return p;
    }
    return NULL;
}

bool kv_allow_share(const struct kv_config *c, const char *ns)
{
    const char *v = ns_value(c, "allow-share", ns);
    return v && strcmp(v, "true") == 0;
}

const char *kv_interface(const struct kv_config *c, const char *ns)
{
    const char *v = ns_value(c, "interface", ns);
    return v && v[0] ? v : NULL;
}
