/* A Service as the adapter sees it: what it asks for, what it carries, and
 * the merge patches that make it carry a lease.
 *
 * svc_parse reads a Service object (cJSON, borrowed; possibly hostile: any
 * field may be missing or of the wrong type) into a struct svc that owns
 * copies of what it keeps; svc_free releases them. It fails only when the
 * object has no usable namespace/name, with a message in err. Problems with
 * what the Service asks for (a garbage address) are kept in svc.problem for
 * the caller to report. */
#ifndef K8S_SERVICE_H
#define K8S_SERVICE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ANN_IPS "kube-vip.io/loadbalancerIPs"
#define ANN_IFACE "kube-vip.io/serviceInterface"
#define LABEL_IMPL "implementation"
#define LABEL_LEGACY "ipam-address"
#define FINALIZER "service.kubernetes.io/load-balancer-cleanup"
#define MAX_SVC_PORTS 64

struct svc_opts {
    bool class_mode;        /* KUBEVIP_ENABLE_LOADBALANCERCLASS */
    const char *class_name; /* KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME */
};

struct svc_port {
    char proto[8]; /* TCP, UDP, SCTP */
    uint32_t port;
};

struct svc {
    char *ns, *name, *uid, *rv;
    bool load_balancer; /* spec.type == LoadBalancer */
    bool handled;       /* ... and its class is ours */
    bool deleting;      /* metadata.deletionTimestamp is set */
    bool has_finalizer;
    cJSON *finalizers; /* a copy of metadata.finalizers (array), or NULL */
    char *ann_ips;     /* annotation kube-vip.io/loadbalancerIPs */
    char *ann_iface;   /* annotation kube-vip.io/serviceInterface */
    char *spec_ip;     /* spec.loadBalancerIP */
    bool label_impl, label_legacy;
    char *requested[2]; /* addresses asked for, validated */
    size_t nrequested;
    char *problem; /* why what it asks for is unusable, or NULL */
    /* spec.loadBalancerIP is set and not among the annotation's addresses:
     * one of the two was edited. requested holds the annotation's; the caller
     * decides with the lease (svc_prefer_spec). */
    bool spec_differs;
    int family;    /* Ipam__V1__Family */
    int primary;   /* Ipam__V1__Family: IPV6 when ipFamilies[0] is IPv6 */
    struct svc_port ports[MAX_SVC_PORTS];
    size_t nports;
    char **ingress; /* status.loadBalancer.ingress[].ip */
    size_t ningress;
};

int svc_parse(const cJSON *obj, const struct svc_opts *o, struct svc *out, char *err,
              size_t errlen);
void svc_free(struct svc *s);
/* Makes spec.loadBalancerIP the requested address (when spec_differs and the
 * lease still holds the annotation's addresses, the spec is the edit). */
void svc_prefer_spec(struct svc *s);

/* "ns/name" into buf. */
void svc_key(const struct svc *s, char *buf, size_t len);

/* The merge patch that makes the Service carry addrs (primary first) and
 * iface (NULL: none), with our label and finalizer; NULL when it already
 * does. Carries metadata.resourceVersion, so a stale write gets 409. */
cJSON *svc_patch_assign(const struct svc *s, char *const *addrs, size_t n, const char *iface);
/* The merge patch that removes what the adapter added (finalizer always;
 * annotation and label too unless the Service is being deleted); NULL when
 * there is nothing to remove. */
cJSON *svc_patch_release(const struct svc *s);
/* The status patch for status.loadBalancer.ingress, or NULL when equal. */
cJSON *svc_patch_status(const struct svc *s, char *const *addrs, size_t n);

#endif
