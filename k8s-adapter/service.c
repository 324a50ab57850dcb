/* Service objects: parsing what they ask for, patches for what they carry. */
#include "service.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipam/addr.h"
#include "ipam/ipset.h"
#include "ipam/v1/ipam.pb-c.h"

static void oom(void)
{
    fputs("k8s-adapter: out of memory\n", stderr);
    abort();
}

static char *dup_or_null(const cJSON *v)
{
    if (!cJSON_IsString(v) || !v->valuestring)
        return NULL;
    char *d = strdup(v->valuestring);
    if (!d)
        oom();
    return d;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static bool str_is(const cJSON *v, const char *s)
{
    return cJSON_IsString(v) && v->valuestring && strcmp(v->valuestring, s) == 0;
}

/* Whether the comma-separated list holds item as one whole entry. */
static bool list_has(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == n && strncmp(p, item, n) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* The format is always a literal: what the Service carries is an argument,
 * never part of a format. */
__attribute__((format(printf, 2, 3))) static void set_problem(struct svc *s, const char *fmt, ...)
{
    if (s->problem)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    s->problem = strdup(buf);
    if (!s->problem)
        oom();
}

/* Validates and keeps a list of requested addresses from source `what'. */
static void take_requested(struct svc *s, const char *list, const char *what)
{
    char **v = NULL, err[300];
    size_t n = 0;
    if (ipam_list_split(list, &v, &n, err, sizeof(err)) != 0 || n > 2) {
        set_problem(s, "%s `%.200s' is not one address or an IPv4,IPv6 pair", what, list);
        ipam_list_free(v, n);
        return;
    }
    int fams = 0;
    for (size_t i = 0; i < n; i++) {
        ipam_u128 a;
        if (ipam_addr_parse(v[i], strlen(v[i]), &a) != 0) {
            set_problem(s, "%s holds `%.200s', which is not an IP address", what, v[i]);
            ipam_list_free(v, n);
            return;
        }
        int f = ipam_is_v4(a) ? 1 : 2;
        if (fams & f) {
            set_problem(s, "%s names two addresses of one family", what);
            ipam_list_free(v, n);
            return;
        }
        fams |= f;
    }
    for (size_t i = 0; i < n; i++)
        s->requested[i] = v[i];
    s->nrequested = n;
    free(v);
}

static void parse_family(struct svc *s, const cJSON *spec)
{
    const cJSON *pol = get(spec, "ipFamilyPolicy");
    const cJSON *fams = get(spec, "ipFamilies");
    const cJSON *first = cJSON_IsArray(fams) ? cJSON_GetArrayItem(fams, 0) : NULL;
    s->primary = str_is(first, "IPv6") ? IPAM__V1__FAMILY__FAMILY_IPV6
                                       : IPAM__V1__FAMILY__FAMILY_UNSPECIFIED;
    if (str_is(pol, "PreferDualStack"))
        s->family = IPAM__V1__FAMILY__FAMILY_PREFER_DUAL_STACK;
    else if (str_is(pol, "RequireDualStack"))
        s->family = IPAM__V1__FAMILY__FAMILY_REQUIRE_DUAL_STACK;
    else if (s->nrequested)
        s->family = IPAM__V1__FAMILY__FAMILY_UNSPECIFIED; /* the addresses say */
    else if (str_is(first, "IPv6"))
        s->family = IPAM__V1__FAMILY__FAMILY_IPV6;
    else if (str_is(first, "IPv4"))
        s->family = IPAM__V1__FAMILY__FAMILY_IPV4;
    else
        s->family = IPAM__V1__FAMILY__FAMILY_UNSPECIFIED;
}

static void parse_ports(struct svc *s, const cJSON *spec)
{
    const cJSON *ports = get(spec, "ports"), *p;
    if (!cJSON_IsArray(ports))
        return;
    cJSON_ArrayForEach(p, ports)
    {
        const cJSON *num = get(p, "port"), *proto = get(p, "protocol");
        if (!cJSON_IsNumber(num) || num->valuedouble < 1 || num->valuedouble > 65535)
            continue;
        if (s->nports == MAX_SVC_PORTS) {
            set_problem(s, "%s: too many ports to share an address", "spec.ports");
            return;
        }
        struct svc_port *sp = &s->ports[s->nports++];
        snprintf(sp->proto, sizeof(sp->proto), "%s",
                 str_is(proto, "UDP")    ? "UDP"
                 : str_is(proto, "SCTP") ? "SCTP"
                                         : "TCP");
        sp->port = (uint32_t)num->valuedouble;
    }
}

int svc_parse(const cJSON *obj, const struct svc_opts *o, struct svc *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const cJSON *md = get(obj, "metadata"), *spec = get(obj, "spec");
    out->ns = dup_or_null(get(md, "namespace"));
    out->name = dup_or_null(get(md, "name"));
    if (!out->ns || !out->name || !out->ns[0] || !out->name[0]) {
        snprintf(err, errlen, "a Service without metadata.namespace and metadata.name");
        svc_free(out);
        return -1;
    }
    out->uid = dup_or_null(get(md, "uid"));
    out->rv = dup_or_null(get(md, "resourceVersion"));
    out->deleting = get(md, "deletionTimestamp") && !cJSON_IsNull(get(md, "deletionTimestamp"));

    const cJSON *fin = get(md, "finalizers"), *f;
    if (cJSON_IsArray(fin)) {
        out->finalizers = cJSON_Duplicate(fin, 1);
        cJSON_ArrayForEach(f, fin) out->has_finalizer |= str_is(f, FINALIZER);
    }
    const cJSON *ann = get(md, "annotations"), *labels = get(md, "labels");
    out->ann_ips = dup_or_null(get(ann, ANN_IPS));
    out->ann_iface = dup_or_null(get(ann, ANN_IFACE));
    out->label_impl = str_is(get(labels, LABEL_IMPL), "kube-vip");
    out->label_legacy = get(labels, LABEL_LEGACY) != NULL;
    out->spec_ip = dup_or_null(get(spec, "loadBalancerIP"));
    if (out->spec_ip && !out->spec_ip[0]) {
        free(out->spec_ip);
        out->spec_ip = NULL;
    }

    out->load_balancer = str_is(get(spec, "type"), "LoadBalancer");
    const cJSON *cls = get(spec, "loadBalancerClass");
    bool has_class = cJSON_IsString(cls) && cls->valuestring[0];
    out->handled =
        out->load_balancer &&
        (o->class_mode ? has_class && !strcmp(cls->valuestring, o->class_name) : !has_class);

    /* The annotation is what we wrote (or the user asked for), and we write
     * spec.loadBalancerIP as its first address. When they disagree, one was
     * edited since: the caller tells which from the lease (svc_prefer_spec). */
    if (out->ann_ips && out->ann_ips[0]) {
        out->spec_differs = out->spec_ip && !list_has(out->ann_ips, out->spec_ip);
        take_requested(out, out->ann_ips, "annotation " ANN_IPS);
    } else if (out->spec_ip) {
        take_requested(out, out->spec_ip, "spec.loadBalancerIP");
    }
    parse_family(out, spec);
    parse_ports(out, spec);

    const cJSON *ing = get(get(get(obj, "status"), "loadBalancer"), "ingress"), *e;
    if (cJSON_IsArray(ing)) {
        size_t n = (size_t)cJSON_GetArraySize(ing);
        out->ingress = calloc(n ? n : 1, sizeof(char *));
        if (!out->ingress)
            oom();
        cJSON_ArrayForEach(e, ing)
        {
            char *ip = dup_or_null(get(e, "ip"));
            if (ip)
                out->ingress[out->ningress++] = ip;
        }
    }
    return 0;
}

void svc_free(struct svc *s)
{
    free(s->ns);
    free(s->name);
    free(s->uid);
    free(s->rv);
    cJSON_Delete(s->finalizers);
    free(s->ann_ips);
    free(s->ann_iface);
    free(s->spec_ip);
    for (size_t i = 0; i < s->nrequested; i++)
        free(s->requested[i]);
    free(s->problem);
    for (size_t i = 0; i < s->ningress; i++)
        free(s->ingress[i]);
    free(s->ingress);
    memset(s, 0, sizeof(*s));
}

void svc_prefer_spec(struct svc *s)
{
    for (size_t i = 0; i < s->nrequested; i++)
        free(s->requested[i]);
    s->nrequested = 0;
    free(s->problem);
    s->problem = NULL;
    take_requested(s, s->spec_ip, "spec.loadBalancerIP");
    s->spec_differs = false;
}

void svc_key(const struct svc *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", s->ns, s->name);
}

static void join(char *const *addrs, size_t n, char *buf, size_t len)
{
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, "%s%s", i ? "," : "", addrs[i]);
    }
}

static cJSON *obj(cJSON *parent, const char *key)
{
    cJSON *o = cJSON_GetObjectItemCaseSensitive(parent, key);
    if (!o) {
        o = cJSON_AddObjectToObject(parent, key);
        if (!o)
            oom();
    }
    return o;
}

static cJSON *new_patch(const struct svc *s)
{
    cJSON *p = cJSON_CreateObject();
    if (!p)
        oom();
    if (s->rv)
        cJSON_AddStringToObject(obj(p, "metadata"), "resourceVersion", s->rv);
    return p;
}

/* metadata.finalizers with ours added or removed; merge patch replaces
 * arrays whole, so the others are carried over. */
static void set_finalizers(cJSON *patch, const struct svc *s, bool ours)
{
    cJSON *arr = cJSON_CreateArray(), *f;
    if (!arr)
        oom();
    cJSON_ArrayForEach(f, s->finalizers)
    {
        if (!str_is(f, FINALIZER))
            cJSON_AddItemToArray(arr, cJSON_Duplicate(f, 1));
    }
    if (ours)
        cJSON_AddItemToArray(arr, cJSON_CreateString(FINALIZER));
    cJSON_AddItemToObject(obj(patch, "metadata"), "finalizers", arr);
}

cJSON *svc_patch_assign(const struct svc *s, char *const *addrs, size_t n, const char *iface)
{
    char ips[200];
    join(addrs, n, ips, sizeof(ips));
    cJSON *p = new_patch(s);
    bool change = false;
    if (!s->ann_ips || strcmp(s->ann_ips, ips) != 0 ||
        (iface && (!s->ann_iface || strcmp(s->ann_iface, iface)))) {
        cJSON *ann = obj(obj(p, "metadata"), "annotations");
        cJSON_AddStringToObject(ann, ANN_IPS, ips);
        if (iface)
            cJSON_AddStringToObject(ann, ANN_IFACE, iface);
        change = true;
    }
    if (!s->label_impl || s->label_legacy) {
        cJSON *labels = obj(obj(p, "metadata"), "labels");
        cJSON_AddStringToObject(labels, LABEL_IMPL, "kube-vip");
        if (s->label_legacy)
            cJSON_AddNullToObject(labels, LABEL_LEGACY);
        change = true;
    }
    if (n && (!s->spec_ip || strcmp(s->spec_ip, addrs[0]) != 0)) {
        cJSON_AddStringToObject(obj(p, "spec"), "loadBalancerIP", addrs[0]);
        change = true;
    }
    if (!s->has_finalizer) {
        set_finalizers(p, s, true);
        change = true;
    }
    if (!change) {
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

cJSON *svc_patch_release(const struct svc *s)
{
    cJSON *p = new_patch(s);
    bool change = false;
    if (s->has_finalizer) {
        set_finalizers(p, s, false);
        change = true;
    }
    if (!s->deleting && s->ann_ips) {
        cJSON_AddNullToObject(obj(obj(p, "metadata"), "annotations"), ANN_IPS);
        change = true;
    }
    if (!s->deleting && s->label_impl) {
        cJSON_AddNullToObject(obj(obj(p, "metadata"), "labels"), LABEL_IMPL);
        change = true;
    }
    if (!change) {
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

cJSON *svc_patch_status(const struct svc *s, char *const *addrs, size_t n)
{
    bool same = s->ningress == n;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(s->ingress[i], addrs[i]) == 0;
    if (same)
        return NULL;
    cJSON *p = new_patch(s);
    cJSON *ing = cJSON_AddArrayToObject(obj(obj(p, "status"), "loadBalancer"), "ingress");
    if (!ing)
        oom();
    for (size_t i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e)
            oom();
        cJSON_AddStringToObject(e, "ip", addrs[i]);
        cJSON_AddItemToArray(ing, e);
    }
    return p;
}
