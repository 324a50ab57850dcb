/* Where the Kubernetes API server is and how to authenticate to it.
 *
 * Three sources fill a struct kube_config:
 *
 *   kube_config_in_cluster()       the Pod's service account: KUBERNETES_SERVICE_HOST and
 *                                  KUBERNETES_SERVICE_PORT, and token, ca.crt and namespace
 *                                  under /var/run/secrets/kubernetes.io/serviceaccount (or
 *                                  under $KUBE_SA_DIR, for tests). The token is referenced
 *                                  by token_file so that rotation is picked up.
 *   kube_config_load_kubeconfig()  a kubeconfig file (kubectl's format), one context of it.
 *   kube_config_server()           a plain URL, e.g. http://127.0.0.1:8001 (kubectl proxy).
 *
 * Ownership: every string in the struct is malloc'd and owned by the struct;
 * kube_config_free() frees them all and zeroes the struct. It is safe on a zeroed
 * struct and twice in a row. The loaders overwrite *cfg without freeing what it held,
 * so pass a zeroed or freed struct. On failure a loader leaves *cfg zeroed.
 *
 * Errors: loaders return 0 or -1 with a message in err (always NUL-terminated when
 * errlen > 0) that quotes the file, the line and the missing or invalid key or
 * variable, e.g. "kubeconfig `/home/u/.kube/config' line 12: context `prod' names
 * cluster `p1', which is not in clusters".
 *
 * Files named by the configuration (CA, client certificate and key, token file) are
 * checked to be readable when loading, and read again when used, so later changes
 * are picked up; inline data (*-data keys) is base64-decoded into the *_pem fields
 * by a small decoder in kubeconfig.c (standard alphabet, padding optional, whitespace
 * ignored; decoded data must be text without NUL bytes).
 *
 * Threads: no global state except reading the environment; distinct structs may be
 * used from distinct threads. */
#ifndef K8S_ADAPTER_KUBECONFIG_H
#define K8S_ADAPTER_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct kube_config {
    char *server;               /* "https://host:port" or "http://host:port", no trailing '/'. */
    char *ca_pem;               /* CA bundle as PEM text, or NULL. Wins over ca_file. */
    char *ca_file;              /* CA bundle file, or NULL. Neither: the system's trust store. */
    char *token;                /* Bearer token, or NULL. */
    char *token_file;           /* File holding the bearer token, re-read when it changes; wins
                                 * over token (as in client-go). NULL if none. */
    char *cert_pem, *key_pem;   /* Client certificate and key as PEM text, or NULL. Each
                                 * wins over its file. */
    char *cert_file, *key_file; /* Client certificate and key files, or NULL. */
    bool insecure;              /* Do not verify the server's certificate. */
    char *namespace_;           /* The context's or the Pod's namespace; "default" if none
                                 * is set. Never NULL after a successful load. */
};

/* Fills cfg from the Pod's environment and service-account directory. Fails naming
 * KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT when unset, or the token or
 * ca.crt file when unreadable; a missing namespace file means "default". An IPv6
 * host is bracketed in server. */
int kube_config_in_cluster(struct kube_config *cfg, char *err, size_t errlen);

/* Fills cfg from the kubeconfig at path; context NULL means the file's
 * current-context.
 *
 * path NULL means $KUBECONFIG, else $HOME/.kube/config. $KUBECONFIG may list several
 * files separated by ':'; only the first that exists is read (kubectl merges them
 * all; this does not).
 *
 * Supported: clusters[].cluster.{server, certificate-authority,
 * certificate-authority-data, insecure-skip-tls-verify}; users[].user.{token,
 * tokenFile, client-certificate, client-certificate-data, client-key,
 * client-key-data}; contexts[].context.{cluster, user, namespace}; current-context.
 * Other keys are ignored. A user with exec, auth-provider or username/password
 * authentication is refused with an error naming it. Relative file paths are
 * relative to the kubeconfig's directory and "~/" means $HOME/. When a name appears
 * twice in a list, the first entry wins. */
int kube_config_load_kubeconfig(struct kube_config *cfg, const char *path, const char *context,
                                char *err, size_t errlen);

/* Fills cfg for a plain URL with no authentication and the system's trust store.
 * The URL must start with http:// or https://; a trailing '/' is dropped. */
int kube_config_server(struct kube_config *cfg, const char *url, char *err, size_t errlen);

/* Writes a printf-style message into err (errlen bytes, always terminated
 * when errlen > 0) and returns -1: the error path of this library and kube.c. */
int kube_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Frees every string of cfg and zeroes it. cfg may be NULL. */
void kube_config_free(struct kube_config *cfg);

/* Copies src into dst (deep); dst must be zeroed or freed. Returns 0, or -1 when out
 * of memory (dst is then zeroed). */
int kube_config_copy(struct kube_config *dst, const struct kube_config *src);

#endif
