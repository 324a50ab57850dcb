/* The kube-vip ConfigMap: address pools per namespace, as kube-vip-cloud-
 * provider reads them (shared/conformance/kube-vip.md), minus its bugs.
 *
 * kv_config_parse copies what it needs from the ConfigMap's `data' object
 * (cJSON, borrowed); kv_config_free releases it. Lookups return pointers into
 * the config, valid until it is freed. Nothing here talks to ipamd or the API
 * server. */
#ifndef K8S_KVCONFIG_H
#define K8S_KVCONFIG_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

struct kv_pool {
    char *key;     /* "cidr-team-a", "range-global" */
    char *ipam;    /* the ipamd pool name made from it */
    char **blocks; /* entries, trimmed */
    size_t nblocks;
    bool dhcp;   /* exactly 0.0.0.0/32 */
    bool cidr;   /* the value holds '/': CIDR entries, else start-end ranges */
    char *error; /* why the value is unusable (quotes the entry), or NULL */
};

struct kv_config {
    struct kv_pool *pools;
    size_t npools;
    bool desc;     /* search-order: desc */
    bool skip_end; /* skip-end-ips-in-cidr: true */
    cJSON *data;   /* a copy of the data object, for the per-namespace keys */
};

/* data may be NULL (a ConfigMap without data). Pool names are
 * "<prefix>.<key>", shortened with a hash when longer than ipamd allows. */
void kv_config_parse(const cJSON *data, const char *prefix, struct kv_config *out);
void kv_config_free(struct kv_config *c);

/* The pool for a namespace: cidr-<ns>, range-<ns>, cidr-global,
 * range-global, the first present. NULL when none is. */
const struct kv_pool *kv_pool_for(const struct kv_config *c, const char *ns);
/* allow-share-<ns>, else allow-share-global, is "true". */
bool kv_allow_share(const struct kv_config *c, const char *ns);
/* interface-<ns>, else interface-global, or NULL. */
const char *kv_interface(const struct kv_config *c, const char *ns);
const struct kv_pool *kv_pool_by_key(const struct kv_config *c, const char *key);

#endif
