/* The controller: keeps one ipamd lease per LoadBalancer Service it handles
 * and makes the Service carry it.
 *
 * Stateless but for a watch cache: Services (all namespaces) and the kube-vip
 * ConfigMap are listed, then watched. Start-up, and every time ipamd may have
 * lost its state, runs in this order: re-claim in ipamd every address
 * Services already carry, then allocate pending Services, then release leases
 * whose Service is gone. Reconciles are level-triggered and idempotent: from
 * the cached Service and the ConfigMap compute the wanted lease, make ipamd
 * agree, patch the Service only where it differs. Failures retry with
 * exponential backoff and are reported as Events.
 *
 * ctl_run blocks until *stop becomes non-zero (set from a signal handler
 * thread; call ctl_wakeup after setting it). Returns 0, or 1 on a fatal
 * error (logged). */
#ifndef K8S_CONTROLLER_H
#define K8S_CONTROLLER_H

#include <signal.h>
#include <stdbool.h>

#include "ipam/client.h"
#include "kube.h"
#include "service.h"

struct ctl_opts {
    const char *ipamd;        /* ipamd target */
    const ipam_tls *ipamd_tls; /* TLS to ipamd, or NULL */
    const char *owner_prefix; /* lease owners are <prefix>/<ns>/<name> */
    const char *cm_name, *cm_namespace;
    int resync_seconds;
    bool write_status;
    struct svc_opts svc;
};

struct ctl;

/* Returns NULL with *err (malloc'd) set when ipamd's TLS files can't be used. */
struct ctl *ctl_new(const struct ctl_opts *o, struct kube *kube, char **err);
void ctl_free(struct ctl *c);
int ctl_run(struct ctl *c, volatile sig_atomic_t *stop);
/* Thread-safe: makes a blocked ctl_run look at *stop. */
void ctl_wakeup(struct ctl *c);

#endif
