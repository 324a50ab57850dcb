/* The kube-vip ConfigMap and Service parsing: pools per namespace, options,
 * requested addresses, families, ports and the patches written back. */
#include <stdlib.h>
#include <string.h>

#include "../unit/check.h"
#include "ipam/v1/ipam.pb-c.h"
#include "kvconfig.h"
#include "service.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static cJSON *json(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    CHECK_MSG(j != NULL, "bad test JSON: %s", text);
    return j;
}

/* The conformance vector "picking the pool", plus the fixed lookup order. */
static void test_pool_lookup(void)
{
    cJSON *data = json("{\"cidr-dummystart\":\"172.16.0.1/24\",\"cidr-global\":\"192.168.1.1/24\","
                       "\"cidr-system\":\"10.10.10.8/29\",\"allow-share-system\":\"true\","
                       "\"cidr-dummyend\":\"172.16.0.2/24\",\"cidr-ipv6\":\"2001::10/127\"}");
    struct kv_config c;
    kv_config_parse(data, "k8s", &c);
    static const struct {
        const char *ns, *key, *block;
        bool share;
    } want[] = {
        {"system", "cidr-system", "10.10.10.8/29", true},
        {"ipv6", "cidr-ipv6", "2001::10/127", false},
        {"basic", "cidr-global", "192.168.1.1/24", false},
    };
    for (size_t i = 0; i < N(want); i++) {
        const struct kv_pool *p = kv_pool_for(&c, want[i].ns);
        if (!CHECK_MSG(p != NULL, "namespace %s has no pool", want[i].ns))
            continue;
        CHECK_EQ_STR(p->key, want[i].key);
        CHECK(p->nblocks == 1 && strcmp(p->blocks[0], want[i].block) == 0);
        CHECK(p->cidr && !p->dhcp && p->error == NULL);
        CHECK_MSG(kv_allow_share(&c, want[i].ns) == want[i].share, "share for %s", want[i].ns);
    }
    CHECK_EQ_STR(kv_pool_for(&c, "system")->ipam, "k8s.cidr-system");
    kv_config_free(&c);
    cJSON_Delete(data);

    /* Fix: a namespace's range wins over a global CIDR. */
    data = json("{\"cidr-global\":\"192.0.2.0/24\",\"range-team\":\"198.51.100.10-198.51.100.20\","
                "\"range-global\":\"203.0.113.1-203.0.113.9\"}");
    kv_config_parse(data, "k8s", &c);
    CHECK_EQ_STR(kv_pool_for(&c, "team")->key, "range-team");
    CHECK(!kv_pool_for(&c, "team")->cidr);
    CHECK_EQ_STR(kv_pool_for(&c, "other")->key, "cidr-global");
    kv_config_free(&c);
    cJSON_Delete(data);

    data = json("{\"range-global\":\"203.0.113.1-203.0.113.9\"}");
    kv_config_parse(data, "k8s", &c);
    CHECK_EQ_STR(kv_pool_for(&c, "x")->key, "range-global");
    kv_config_free(&c);
    cJSON_Delete(data);

    kv_config_parse(NULL, "k8s", &c);
    CHECK(kv_pool_for(&c, "x") == NULL);
    kv_config_free(&c);
}

static void test_pool_values(void)
{
    static const struct {
        const char *value;
        size_t nblocks;
        bool dhcp, cidr;
        const char *error; /* part of the message, or NULL */
    } rows[] = {
        {"0.0.0.0/32", 1, true, true, NULL},
        {"192.0.2.0/24, 2001:db8::/64", 2, false, true, NULL},
        {" 192.0.2.10-192.0.2.20 ,198.51.100.1-198.51.100.2 ", 2, false, false, NULL},
        {"192.0.2.0/33", 0, false, true, "192.0.2.0/33"},
        {"192.0.2.9-192.0.2.1", 0, false, false, "192.0.2.9-192.0.2.1"},
        {"192.0.2.1-2001:db8::1", 0, false, false, "192.0.2.1-2001:db8::1"},
        {"192.0.2.0/24,192.0.2.1-192.0.2.5", 0, false, true, "192.0.2.1-192.0.2.5"},
        {"192.0.2.0/24,,198.51.100.0/24", 0, false, true, "empty"},
        {"garbage", 0, false, false, "garbage"},
    };
    for (size_t i = 0; i < N(rows); i++) {
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "cidr-global", rows[i].value);
        struct kv_config c;
        kv_config_parse(data, "k8s", &c);
        const struct kv_pool *p = kv_pool_for(&c, "ns");
        if (CHECK_MSG(p != NULL, "row %zu", i)) {
            if (rows[i].error) {
                CHECK_MSG(p->error && strstr(p->error, rows[i].error) &&
                              strstr(p->error, "cidr-global"),
                          "row %zu: error `%s' should quote `%s' and the key", i,
                          p->error ? p->error : "(none)", rows[i].error);
            } else {
                CHECK_MSG(p->error == NULL, "row %zu: unexpected error %s", i, p->error);
                CHECK_MSG(p->nblocks == rows[i].nblocks, "row %zu: %zu blocks", i, p->nblocks);
                CHECK_MSG(p->dhcp == rows[i].dhcp && p->cidr == rows[i].cidr, "row %zu flags", i);
            }
        }
        kv_config_free(&c);
        cJSON_Delete(data);
    }
}

static void test_options(void)
{
    cJSON *data = json("{\"search-order\":\"desc\",\"skip-end-ips-in-cidr\":\"true\","
                       "\"interface-global\":\"eth0\",\"interface-team\":\"eth1\","
                       "\"allow-share-global\":\"true\",\"allow-share-team\":\"false\","
                       "\"cidr-global\":\"192.0.2.0/24\"}");
    struct kv_config c;
    kv_config_parse(data, "k8s", &c);
    CHECK(c.desc && c.skip_end);
    CHECK_EQ_STR(kv_interface(&c, "team"), "eth1");
    CHECK_EQ_STR(kv_interface(&c, "other"), "eth0");
    CHECK(kv_allow_share(&c, "other") && !kv_allow_share(&c, "team"));
    kv_config_free(&c);
    cJSON_Delete(data);

    data = json("{\"search-order\":\"random\",\"skip-end-ips-in-cidr\":\"yes\"}");
    kv_config_parse(data, "k8s", &c);
    CHECK(!c.desc && !c.skip_end && kv_interface(&c, "x") == NULL && !kv_allow_share(&c, "x"));
    kv_config_free(&c);
    cJSON_Delete(data);

    /* A key too long for an ipamd pool name gets a stable shortened name. */
    char key[200];
    snprintf(key, sizeof key, "range-%s", "a-very-long-namespace-name-that-goes-on-and-on-and-on-x");
    data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, key, "192.0.2.1-192.0.2.2");
    kv_config_parse(data, "k8s", &c);
    const struct kv_pool *p = kv_pool_by_key(&c, key);
    CHECK(p && strlen(p->ipam) <= 63 && strncmp(p->ipam, "k8s.range-a-very", 16) == 0);
    char first[64];
    snprintf(first, sizeof first, "%s", p ? p->ipam : "");
    kv_config_free(&c);
    kv_config_parse(data, "k8s", &c);
    CHECK_EQ_STR(kv_pool_by_key(&c, key)->ipam, first);
    kv_config_free(&c);
    cJSON_Delete(data);
}

static const struct svc_opts plain = {false, "kube-vip.io/kube-vip-class"};
static const struct svc_opts classy = {true, "kube-vip.io/kube-vip-class"};

static void test_service_parsing(void)
{
    static const struct {
        const char *json;
        const struct svc_opts *o;
        bool handled;
        const char *req0, *req1;
        int family, primary;
        const char *problem;
    } rows[] = {
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":\"LoadBalancer\"}}",
         &plain, true, NULL, NULL, 0, 0, NULL},
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":\"ClusterIP\"}}",
         &plain, false, NULL, NULL, 0, 0, NULL},
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":\"LoadBalancer\","
         "\"loadBalancerClass\":\"other\"}}",
         &plain, false, NULL, NULL, 0, 0, NULL},
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":\"LoadBalancer\","
         "\"loadBalancerClass\":\"kube-vip.io/kube-vip-class\"}}",
         &classy, true, NULL, NULL, 0, 0, NULL},
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":\"LoadBalancer\"}}",
         &classy, false, NULL, NULL, 0, 0, NULL},
        /* spec.loadBalancerIP with no annotation is requested. */
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":\"LoadBalancer\","
         "\"loadBalancerIP\":\"192.0.2.7\",\"ipFamilies\":[\"IPv4\"]}}",
         &plain, true, "192.0.2.7", NULL, IPAM__V1__FAMILY__FAMILY_UNSPECIFIED, 0, NULL},
        /* The annotation wins when spec agrees with its first address. */
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"annotations\":{"
         "\"kube-vip.io/loadbalancerIPs\":\"192.0.2.7,2001:db8::7\"}},\"spec\":{\"type\":"
         "\"LoadBalancer\",\"loadBalancerIP\":\"192.0.2.7\",\"ipFamilyPolicy\":\"RequireDualStack\"}}",
         &plain, true, "192.0.2.7", "2001:db8::7", IPAM__V1__FAMILY__FAMILY_REQUIRE_DUAL_STACK, 0,
         NULL},
        /* Annotation and spec disagree: the annotation is requested until the
         * lease says the spec is the edit (test_spec_edit). */
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"annotations\":{"
         "\"kube-vip.io/loadbalancerIPs\":\"192.0.2.70\"}},\"spec\":{\"type\":"
         "\"LoadBalancer\",\"loadBalancerIP\":\"192.0.2.7\"}}",
         &plain, true, "192.0.2.70", NULL, 0, 0, NULL},
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":\"LoadBalancer\","
         "\"ipFamilyPolicy\":\"PreferDualStack\",\"ipFamilies\":[\"IPv6\",\"IPv4\"]}}",
         &plain, true, NULL, NULL, IPAM__V1__FAMILY__FAMILY_PREFER_DUAL_STACK,
         IPAM__V1__FAMILY__FAMILY_IPV6, NULL},
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":\"LoadBalancer\","
         "\"ipFamilies\":[\"IPv6\"]}}",
         &plain, true, NULL, NULL, IPAM__V1__FAMILY__FAMILY_IPV6, IPAM__V1__FAMILY__FAMILY_IPV6,
         NULL},
        /* Hostile values: reported, never trusted. */
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"annotations\":{"
         "\"kube-vip.io/loadbalancerIPs\":\"not-an-ip\"}},\"spec\":{\"type\":\"LoadBalancer\"}}",
         &plain, true, NULL, NULL, 0, 0, "not-an-ip"},
        /* Carried text is data, never a format (found by fuzzing). */
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":"
         "\"LoadBalancer\",\"loadBalancerIP\":\"%s%s%s%s%n%s\"}}",
         &plain, true, NULL, NULL, 0, 0, "holds `%s%s%s%s%n%s'"},
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"annotations\":{"
         "\"kube-vip.io/loadbalancerIPs\":\"192.0.2.1,192.0.2.2\"}},\"spec\":{\"type\":"
         "\"LoadBalancer\"}}",
         &plain, true, NULL, NULL, 0, 0, "two addresses of one family"},
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"annotations\":{"
         "\"kube-vip.io/loadbalancerIPs\":\"1.1.1.1,2.2.2.2,3.3.3.3\"}},\"spec\":{\"type\":"
         "\"LoadBalancer\"}}",
         &plain, true, NULL, NULL, 0, 0, "not one address"},
        {"{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"annotations\":7,\"labels\":[],"
         "\"finalizers\":\"x\"},\"spec\":{\"type\":\"LoadBalancer\",\"ports\":{\"a\":1},"
         "\"loadBalancerIP\":12,\"ipFamilies\":\"IPv6\"}}",
         &plain, true, NULL, NULL, 0, 0, NULL},
    };
    for (size_t i = 0; i < N(rows); i++) {
        cJSON *j = json(rows[i].json);
        struct svc s;
        char err[200];
        if (!CHECK_MSG(svc_parse(j, rows[i].o, &s, err, sizeof err) == 0, "row %zu: %s", i, err)) {
            cJSON_Delete(j);
            continue;
        }
        CHECK_MSG(s.handled == rows[i].handled, "row %zu: handled %d", i, s.handled);
        CHECK_MSG((s.nrequested > 0 ? s.requested[0] : NULL) == NULL ? rows[i].req0 == NULL
                                                                      : rows[i].req0 != NULL,
                  "row %zu: requested", i);
        if (rows[i].req0 && s.nrequested)
            CHECK_EQ_STR(s.requested[0], rows[i].req0);
        if (rows[i].req1)
            CHECK_MSG(s.nrequested == 2 && !strcmp(s.requested[1], rows[i].req1), "row %zu", i);
        if (!rows[i].problem) {
            CHECK_MSG(s.problem == NULL, "row %zu: problem %s", i, s.problem);
            CHECK_MSG(s.family == rows[i].family, "row %zu: family %d", i, s.family);
            CHECK_MSG(s.primary == rows[i].primary, "row %zu: primary %d", i, s.primary);
        } else {
            CHECK_MSG(s.problem && strstr(s.problem, rows[i].problem), "row %zu: problem `%s'", i,
                      s.problem ? s.problem : "(none)");
        }
        svc_free(&s);
        cJSON_Delete(j);
    }
    /* No name: refused. */
    cJSON *j = json("{\"metadata\":{},\"spec\":{\"type\":\"LoadBalancer\"}}");
    struct svc s;
    char err[200];
    CHECK(svc_parse(j, &plain, &s, err, sizeof err) == -1 && strstr(err, "metadata.name"));
    cJSON_Delete(j);
    j = json("[1,2,3]");
    CHECK(svc_parse(j, &plain, &s, err, sizeof err) == -1);
    cJSON_Delete(j);
}

static void test_spec_edit(void)
{
    cJSON *j = json("{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"annotations\":{"
                    "\"kube-vip.io/loadbalancerIPs\":\"192.0.2.70,2001:db8::70\"}},\"spec\":{"
                    "\"type\":\"LoadBalancer\",\"loadBalancerIP\":\"192.0.2.7\"}}");
    struct svc s;
    char err[100];
    CHECK(svc_parse(j, &plain, &s, err, sizeof err) == 0);
    CHECK(s.spec_differs && s.nrequested == 2 && !strcmp(s.requested[0], "192.0.2.70"));
    svc_prefer_spec(&s);
    CHECK(!s.spec_differs && s.nrequested == 1 && !strcmp(s.requested[0], "192.0.2.7"));
    svc_free(&s);
    cJSON_Delete(j);
    /* A spec address among the annotation's is no edit. */
    j = json("{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"annotations\":{"
             "\"kube-vip.io/loadbalancerIPs\":\"192.0.2.70, 192.0.2.7x\"}},\"spec\":{"
             "\"type\":\"LoadBalancer\",\"loadBalancerIP\":\"192.0.2.7\"}}");
    CHECK(svc_parse(j, &plain, &s, err, sizeof err) == 0);
    CHECK(s.spec_differs); /* "192.0.2.7x" is not "192.0.2.7": whole entries only */
    svc_free(&s);
    cJSON_Delete(j);
}

static void test_ports(void)
{
    cJSON *j = json("{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\"},\"spec\":{\"type\":"
                    "\"LoadBalancer\",\"ports\":[{\"port\":53,\"protocol\":\"UDP\"},{\"port\":53},"
                    "{\"port\":0},{\"port\":70000},{\"port\":\"80\"},{\"port\":443,\"protocol\":"
                    "\"SCTP\"}]}}");
    struct svc s;
    char err[100];
    CHECK(svc_parse(j, &plain, &s, err, sizeof err) == 0);
    CHECK(s.nports == 3);
    CHECK(!strcmp(s.ports[0].proto, "UDP") && s.ports[0].port == 53);
    CHECK(!strcmp(s.ports[1].proto, "TCP") && s.ports[1].port == 53);
    CHECK(!strcmp(s.ports[2].proto, "SCTP") && s.ports[2].port == 443);
    svc_free(&s);
    cJSON_Delete(j);
}

static char *print(cJSON *p)
{
    char *t = p ? cJSON_PrintUnformatted(p) : NULL;
    cJSON_Delete(p);
    return t;
}

static void test_patches(void)
{
    cJSON *j = json("{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"resourceVersion\":\"42\","
                    "\"finalizers\":[\"other/keep\"],\"labels\":{\"ipam-address\":\"x\"}},"
                    "\"spec\":{\"type\":\"LoadBalancer\"}}");
    struct svc s;
    char err[100];
    CHECK(svc_parse(j, &plain, &s, err, sizeof err) == 0);
    char *addrs[] = {"192.0.2.7", "2001:db8::7"};
    char *t = print(svc_patch_assign(&s, addrs, 2, "eth0"));
    CHECK_EQ_STR(t, "{\"metadata\":{\"resourceVersion\":\"42\",\"annotations\":{"
                    "\"kube-vip.io/loadbalancerIPs\":\"192.0.2.7,2001:db8::7\","
                    "\"kube-vip.io/serviceInterface\":\"eth0\"},\"labels\":{\"implementation\":"
                    "\"kube-vip\",\"ipam-address\":null},\"finalizers\":[\"other/keep\","
                    "\"service.kubernetes.io/load-balancer-cleanup\"]},\"spec\":{"
                    "\"loadBalancerIP\":\"192.0.2.7\"}}");
    free(t);
    t = print(svc_patch_status(&s, addrs, 2));
    CHECK_EQ_STR(t, "{\"metadata\":{\"resourceVersion\":\"42\"},\"status\":{\"loadBalancer\":{"
                    "\"ingress\":[{\"ip\":\"192.0.2.7\"},{\"ip\":\"2001:db8::7\"}]}}}");
    free(t);
    svc_free(&s);
    cJSON_Delete(j);

    /* A Service that already carries everything needs no patch. */
    j = json("{\"metadata\":{\"namespace\":\"a\",\"name\":\"b\",\"resourceVersion\":\"43\","
             "\"finalizers\":[\"service.kubernetes.io/load-balancer-cleanup\"],\"labels\":{"
             "\"implementation\":\"kube-vip\"},\"annotations\":{\"kube-vip.io/loadbalancerIPs\":"
             "\"192.0.2.7\"}},\"spec\":{\"type\":\"LoadBalancer\",\"loadBalancerIP\":\"192.0.2.7\"},"
             "\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"192.0.2.7\"}]}}}");
    CHECK(svc_parse(j, &plain, &s, err, sizeof err) == 0);
    CHECK(svc_patch_assign(&s, addrs, 1, NULL) == NULL);
    CHECK(svc_patch_status(&s, addrs, 1) == NULL);
    t = print(svc_patch_release(&s));
    CHECK_EQ_STR(t, "{\"metadata\":{\"resourceVersion\":\"43\",\"finalizers\":[],\"annotations\":{"
                    "\"kube-vip.io/loadbalancerIPs\":null},\"labels\":{\"implementation\":null}}}");
    free(t);
    svc_free(&s);
    cJSON_Delete(j);
}

int main(void)
{
    test_pool_lookup();
    test_pool_values();
    test_options();
    test_service_parsing();
    test_spec_edit();
    test_ports();
    test_patches();
    return check_summary();
}
