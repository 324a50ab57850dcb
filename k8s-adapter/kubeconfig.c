/* Kubernetes client configuration: the in-cluster service account, kubeconfig files, plain URLs. */
#include "kubeconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#define SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"
#define NAMESPACE_MAX 4096

int kube_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Returns a malloc'd formatted string, or NULL when out of memory. */
__attribute__((format(printf, 1, 2))) static char *str_printf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Reads at most max bytes of a file into a NUL-terminated malloc'd string with
 * surrounding whitespace trimmed. Returns NULL with errno set on failure (EFBIG
 * when the file is larger than max). */
static char *read_trimmed(const char *path, size_t max)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL, *out = NULL;
    size_t n, start = 0;
    int saved = 0;

    if (f == NULL)
        return NULL;
    buf = malloc(max + 1);
    if (buf == NULL) {
        saved = ENOMEM;
        goto out;
    }
    n = fread(buf, 1, max + 1, f);
    if (ferror(f)) {
        saved = EIO;
        goto out;
    }
    if (n > max) {
        saved = EFBIG;
        goto out;
    }
    while (n > 0 && is_space(buf[n - 1]))
        n--;
    while (start < n && is_space(buf[start]))
        start++;
    out = dup_n(buf + start, n - start);
    if (out == NULL)
        saved = ENOMEM;
out:
    free(buf);
    fclose(f);
    if (out == NULL)
        errno = saved;
    return out;
}

void kube_config_free(struct kube_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->server);
    free(cfg->ca_pem);
    free(cfg->ca_file);
    free(cfg->token);
    free(cfg->token_file);
    free(cfg->cert_pem);
    free(cfg->key_pem);
    free(cfg->cert_file);
    free(cfg->key_file);
    free(cfg->namespace_);
    memset(cfg, 0, sizeof *cfg);
}

/* Duplicates one optional string field; returns false when out of memory. */
static bool copy_field(char **dst, const char *src)
{
    *dst = NULL;
    if (src == NULL)
        return true;
    *dst = strdup(src);
    return *dst != NULL;
}

int kube_config_copy(struct kube_config *dst, const struct kube_config *src)
{
    memset(dst, 0, sizeof *dst);
    dst->insecure = src->insecure;
    if (!copy_field(&dst->server, src->server) || !copy_field(&dst->ca_pem, src->ca_pem) ||
        !copy_field(&dst->ca_file, src->ca_file) || !copy_field(&dst->token, src->token) ||
        !copy_field(&dst->token_file, src->token_file) ||
        !copy_field(&dst->cert_pem, src->cert_pem) || !copy_field(&dst->key_pem, src->key_pem) ||
        !copy_field(&dst->cert_file, src->cert_file) ||
        !copy_field(&dst->key_file, src->key_file) ||
        !copy_field(&dst->namespace_, src->namespace_)) {
        kube_config_free(dst);
        return -1;
    }
    return 0;
}

/* Checks that a URL is http(s):// with something after the scheme and returns a
 * copy without trailing '/'. Returns NULL for a bad URL (*oom false) or when out of
 * memory (*oom true). */
static char *clean_server_url(const char *url, bool *oom)
{
    size_t n = strlen(url), scheme;

    *oom = false;
    if (strncmp(url, "https://", 8) == 0)
        scheme = 8;
    else if (strncmp(url, "http://", 7) == 0)
        scheme = 7;
    else
        return NULL;
    while (n > scheme && url[n - 1] == '/')
        n--;
    if (n == scheme || memchr(url + scheme, '/', n - scheme) == url + scheme)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (is_space(url[i]))
            return NULL;
    char *s = dup_n(url, n);
    *oom = s == NULL;
    return s;
}

int kube_config_server(struct kube_config *cfg, const char *url, char *err, size_t errlen)
{
    bool oom;

    memset(cfg, 0, sizeof *cfg);
    cfg->server = clean_server_url(url, &oom);
    if (cfg->server == NULL)
        return oom ? kube_fail(err, errlen, "out of memory")
                   : kube_fail(err, errlen, "server `%s' is not an http:// or https:// URL", url);
    cfg->namespace_ = strdup("default");
    if (cfg->namespace_ == NULL) {
        kube_config_free(cfg);
        return kube_fail(err, errlen, "out of memory");
    }
    return 0;
}

/* True when s is a decimal port number 1..65535. */
static bool is_port(const char *s)
{
    long v = 0;

    if (*s == '\0' || strlen(s) > 5)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (*s - '0');
    }
    return v >= 1 && v <= 65535;
}

int kube_config_in_cluster(struct kube_config *cfg, char *err, size_t errlen)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    const char *dir = getenv("KUBE_SA_DIR");
    char *ns_path = NULL;
    bool bracket;
    int rc = -1;

    memset(cfg, 0, sizeof *cfg);
    if (host == NULL || *host == '\0') {
        kube_fail(err, errlen,
             "in-cluster config: KUBERNETES_SERVICE_HOST is not set (not running in a Pod?)");
        goto out;
    }
    if (port == NULL || *port == '\0') {
        kube_fail(err, errlen,
             "in-cluster config: KUBERNETES_SERVICE_PORT is not set (not running in a Pod?)");
        goto out;
    }
    if (!is_port(port)) {
        kube_fail(err, errlen, "in-cluster config: KUBERNETES_SERVICE_PORT `%s' is not a port number",
             port);
        goto out;
    }
    if (dir == NULL || *dir == '\0')
        dir = SA_DIR_DEFAULT;
    bracket = strchr(host, ':') != NULL && host[0] != '[';
    cfg->server =
        str_printf("https://%s%s%s:%s", bracket ? "[" : "", host, bracket ? "]" : "", port);
    cfg->token_file = str_printf("%s/token", dir);
    cfg->ca_file = str_printf("%s/ca.crt", dir);
    ns_path = str_printf("%s/namespace", dir);
    if (cfg->server == NULL || cfg->token_file == NULL || cfg->ca_file == NULL || ns_path == NULL) {
        kube_fail(err, errlen, "out of memory");
        goto out;
    }
    if (access(cfg->token_file, R_OK) < 0) {
        kube_fail(err, errlen, "in-cluster config: token file `%s': %s", cfg->token_file,
             strerror(errno));
        goto out;
    }
    if (access(cfg->ca_file, R_OK) < 0) {
        kube_fail(err, errlen, "in-cluster config: CA file `%s': %s", cfg->ca_file, strerror(errno));
        goto out;
    }
    cfg->namespace_ = read_trimmed(ns_path, NAMESPACE_MAX);
    if (cfg->namespace_ == NULL && errno != ENOENT) {
        kube_fail(err, errlen, "in-cluster config: namespace file `%s': %s", ns_path, strerror(errno));
        goto out;
    }
    if (cfg->namespace_ != NULL && cfg->namespace_[0] == '\0') {
        free(cfg->namespace_);
        cfg->namespace_ = NULL;
    }
    if (cfg->namespace_ == NULL)
        cfg->namespace_ = strdup("default");
    if (cfg->namespace_ == NULL) {
        kube_fail(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    free(ns_path);
    if (rc < 0)
        kube_config_free(cfg);
    return rc;
}

/* ---- base64 ---- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes standard base64 (padding optional, ASCII whitespace ignored) into a
 * NUL-terminated malloc'd buffer. Returns 0, -1 for invalid input, -2 when out of
 * memory. */
static int base64_decode(const char *in, size_t inlen, char **out, size_t *outlen)
{
    unsigned char *buf = malloc(inlen / 4 * 3 + 4);
    uint32_t acc = 0;
    size_t n = 0, chars = 0, pad = 0;
    int rc = -1;

    *out = NULL;
    if (buf == NULL)
        return -2;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        int v;

        if (is_space((char)c))
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        v = b64_value(c);
        if (v < 0 || pad > 0)
            goto out;
        acc = (acc << 6) | (uint32_t)v;
        chars++;
        if (chars % 4 == 0) {
            buf[n++] = (unsigned char)(acc >> 16);
            buf[n++] = (unsigned char)(acc >> 8);
            buf[n++] = (unsigned char)acc;
            acc = 0;
        }
    }
    switch (chars % 4) {
    case 1:
        goto out;
    case 2:
        buf[n++] = (unsigned char)(acc >> 4);
        break;
    case 3:
        buf[n++] = (unsigned char)(acc >> 10);
        buf[n++] = (unsigned char)(acc >> 2);
        break;
    }
    if (pad > 0 && (chars % 4 == 0 || (chars % 4 + pad) != 4))
        goto out;
    buf[n] = '\0';
    *out = (char *)buf;
    *outlen = n;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    return rc;
}

/* ---- kubeconfig ---- */

/* One kubeconfig being read. */
struct kc {
    const char *path; /* The file as named by the caller. */
    char *dir;        /* Its directory, for relative paths. */
    yaml_document_t doc;
    char *err;
    size_t errlen;
};

/* Sets the error "kubeconfig `PATH' line N: MESSAGE" (no line when at is NULL). */
__attribute__((format(printf, 3, 4))) static int kc_fail(struct kc *kc, const yaml_node_t *at,
                                                         const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at != NULL)
        return kube_fail(kc->err, kc->errlen, "kubeconfig `%s' line %zu: %s", kc->path,
                    (size_t)at->start_mark.line + 1, msg);
    return kube_fail(kc->err, kc->errlen, "kubeconfig `%s': %s", kc->path, msg);
}

static bool scalar_is(const yaml_node_t *n, const char *s)
{
    size_t len = strlen(s);

    return n != NULL && n->type == YAML_SCALAR_NODE && n->data.scalar.length == len &&
           memcmp(n->data.scalar.value, s, len) == 0;
}

/* A plain empty, "~" or "null" scalar is YAML's null: the key counts as absent. */
static bool is_null(const yaml_node_t *n)
{
    return n == NULL ||
           (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (n->data.scalar.length == 0 || scalar_is(n, "~") || scalar_is(n, "null") ||
             scalar_is(n, "Null") || scalar_is(n, "NULL")));
}

/* Returns the value of key in a mapping node, or NULL when absent or null. */
static yaml_node_t *map_get(struct kc *kc, const yaml_node_t *map, const char *key)
{
    yaml_node_pair_t *p;

    if (map == NULL || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        if (scalar_is(yaml_document_get_node(&kc->doc, p->key), key)) {
            yaml_node_t *v = yaml_document_get_node(&kc->doc, p->value);
            return is_null(v) ? NULL : v;
        }
    }
    return NULL;
}

/* Returns the key node of key in a mapping node (for error lines), or NULL. */
static yaml_node_t *map_key(struct kc *kc, const yaml_node_t *map, const char *key)
{
    yaml_node_pair_t *p;

    if (map == NULL || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&kc->doc, p->key);
        if (scalar_is(k, key))
            return k;
    }
    return NULL;
}

/* Reads an optional string key of a mapping: *out is NULL when absent, else the
 * text (owned by the document) and *at its node. what names the mapping in errors. */
static int get_str(struct kc *kc, const yaml_node_t *map, const char *key, const char *what,
                   const char **out, yaml_node_t **at)
{
    yaml_node_t *v = map_get(kc, map, key);

    *out = NULL;
    if (at != NULL)
        *at = v;
    if (v == NULL)
        return 0;
    if (v->type != YAML_SCALAR_NODE)
        return kc_fail(kc, v, "%s: `%s' is not a string", what, key);
    if (strlen((const char *)v->data.scalar.value) != v->data.scalar.length)
        return kc_fail(kc, v, "%s: `%s' contains a NUL byte", what, key);
    *out = (const char *)v->data.scalar.value;
    return 0;
}

/* Reads an optional boolean key (YAML 1.1 spellings), false when absent. */
static int get_bool(struct kc *kc, const yaml_node_t *map, const char *key, const char *what,
                    bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
                                      "YES",  "on",   "On",   "ON"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No",
                                     "NO",    "off",   "Off",   "OFF"};
    yaml_node_t *at;
    const char *s;

    *out = false;
    if (get_str(kc, map, key, what, &s, &at) < 0)
        return -1;
    if (s == NULL)
        return 0;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, no[i]) == 0)
            return 0;
    }
    return kc_fail(kc, at, "%s: %s `%s' is not a boolean", what, key, s);
}

/* Finds the entry named name in the top-level list key (clusters, users, contexts)
 * and returns its inner mapping (cluster, user, context) in *out, NULL when absent;
 * *entry is the list item (NULL when no entry has that name). */
static int find_named(struct kc *kc, const yaml_node_t *root, const char *list, const char *inner,
                      const char *name, yaml_node_t **entry, yaml_node_t **out)
{
    yaml_node_t *seq = map_get(kc, root, list);
    yaml_node_item_t *it;

    *entry = NULL;
    *out = NULL;
    if (seq == NULL)
        return 0;
    if (seq->type != YAML_SEQUENCE_NODE)
        return kc_fail(kc, seq, "`%s' is not a list", list);
    for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(&kc->doc, *it);
        const char *n;

        if (item == NULL || item->type != YAML_MAPPING_NODE)
            return kc_fail(kc, item, "an entry of `%s' is not a mapping", list);
        if (get_str(kc, item, "name", list, &n, NULL) < 0)
            return -1;
        if (n == NULL || strcmp(n, name) != 0)
            continue;
        *entry = item;
        *out = map_get(kc, item, inner);
        if (*out != NULL && (*out)->type != YAML_MAPPING_NODE)
            return kc_fail(kc, *out, "%s `%s': `%s' is not a mapping", inner, name, inner);
        return 0;
    }
    return 0;
}

/* Makes a path from the kubeconfig absolute (relative to its directory; "~/" is
 * $HOME/) and checks that it is readable. */
static int resolve_file(struct kc *kc, const yaml_node_t *at, const char *what, const char *key,
                        const char *p, char **out)
{
    const char *home = getenv("HOME");

    if (p[0] == '/')
        *out = strdup(p);
    else if (p[0] == '~' && p[1] == '/' && home != NULL)
        *out = str_printf("%s%s", home, p + 1);
    else
        *out = str_printf("%s/%s", kc->dir, p);
    if (*out == NULL)
        return kube_fail(kc->err, kc->errlen, "out of memory");
    if (access(*out, R_OK) < 0)
        return kc_fail(kc, at, "%s: %s `%s': %s", what, key, *out, strerror(errno));
    return 0;
}

/* Reads an inline *-data key (base64 of PEM text) into *out. */
static int get_pem_data(struct kc *kc, const yaml_node_t *map, const char *key, const char *what,
                        char **out)
{
    yaml_node_t *at;
    const char *s;
    size_t n;
    int rc;

    *out = NULL;
    if (get_str(kc, map, key, what, &s, &at) < 0)
        return -1;
    if (s == NULL)
        return 0;
    rc = base64_decode(s, strlen(s), out, &n);
    if (rc == -2)
        return kube_fail(kc->err, kc->errlen, "out of memory");
    if (rc < 0)
        return kc_fail(kc, at, "%s: %s is not valid base64", what, key);
    if (strlen(*out) != n || strstr(*out, "-----BEGIN ") == NULL) {
        free(*out);
        *out = NULL;
        return kc_fail(kc, at, "%s: %s does not decode to PEM text (no `-----BEGIN ')", what, key);
    }
    return 0;
}

/* Reads an optional file-path key into *out (absolute, checked readable). */
static int get_file(struct kc *kc, const yaml_node_t *map, const char *key, const char *what,
                    char **out)
{
    yaml_node_t *at;
    const char *s;

    *out = NULL;
    if (get_str(kc, map, key, what, &s, &at) < 0)
        return -1;
    if (s == NULL)
        return 0;
    return resolve_file(kc, at, what, key, s, out);
}

static int load_cluster(struct kc *kc, struct kube_config *cfg, const yaml_node_t *root,
                        const char *ctx_name, const char *name, const yaml_node_t *name_at)
{
    yaml_node_t *entry, *cluster, *at;
    char what[512];
    const char *server;
    bool oom;

    if (find_named(kc, root, "clusters", "cluster", name, &entry, &cluster) < 0)
        return -1;
    if (entry == NULL)
        return kc_fail(kc, name_at, "context `%s' names cluster `%s', which is not in clusters",
                       ctx_name, name);
    snprintf(what, sizeof what, "cluster `%s'", name);
    if (get_str(kc, cluster, "server", what, &server, &at) < 0)
        return -1;
    if (server == NULL)
        return kc_fail(kc, entry, "%s has no server", what);
    cfg->server = clean_server_url(server, &oom);
    if (cfg->server == NULL)
        return oom ? kube_fail(kc->err, kc->errlen, "out of memory")
                   : kc_fail(kc, at, "%s: server `%s' is not an http:// or https:// URL", what,
                             server);
    if (get_pem_data(kc, cluster, "certificate-authority-data", what, &cfg->ca_pem) < 0 ||
        get_file(kc, cluster, "certificate-authority", what, &cfg->ca_file) < 0 ||
        get_bool(kc, cluster, "insecure-skip-tls-verify", what, &cfg->insecure) < 0)
        return -1;
    return 0;
}

static int load_user(struct kc *kc, struct kube_config *cfg, const yaml_node_t *root,
                     const char *ctx_name, const char *name, const yaml_node_t *name_at)
{
    static const struct {
        const char *key, *what;
    } unsupported[] = {
        {"exec", "exec (credential plugin)"},
        {"auth-provider", "auth-provider"},
        {"username", "username/password"},
        {"password", "username/password"},
    };
    yaml_node_t *entry, *user;
    const char *token;
    char what[512];

    if (find_named(kc, root, "users", "user", name, &entry, &user) < 0)
        return -1;
    if (entry == NULL)
        return kc_fail(kc, name_at, "context `%s' names user `%s', which is not in users", ctx_name,
                       name);
    snprintf(what, sizeof what, "user `%s'", name);
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        if (map_get(kc, user, unsupported[i].key) != NULL)
            return kc_fail(kc, map_key(kc, user, unsupported[i].key),
                           "%s uses %s authentication, which is not supported (use a token, "
                           "a client certificate, or --server with kubectl proxy)",
                           what, unsupported[i].what);
    }
    if (get_str(kc, user, "token", what, &token, NULL) < 0)
        return -1;
    if (token != NULL) {
        cfg->token = strdup(token);
        if (cfg->token == NULL)
            return kube_fail(kc->err, kc->errlen, "out of memory");
    }
    if (get_file(kc, user, "tokenFile", what, &cfg->token_file) < 0 ||
        get_pem_data(kc, user, "client-certificate-data", what, &cfg->cert_pem) < 0 ||
        get_file(kc, user, "client-certificate", what, &cfg->cert_file) < 0 ||
        get_pem_data(kc, user, "client-key-data", what, &cfg->key_pem) < 0 ||
        get_file(kc, user, "client-key", what, &cfg->key_file) < 0)
        return -1;
    if ((cfg->cert_pem || cfg->cert_file) && !(cfg->key_pem || cfg->key_file))
        return kc_fail(kc, entry, "%s has a client certificate but no client-key(-data)", what);
    if ((cfg->key_pem || cfg->key_file) && !(cfg->cert_pem || cfg->cert_file))
        return kc_fail(kc, entry, "%s has a client key but no client-certificate(-data)", what);
    return 0;
}

/* Picks the kubeconfig when none is named: the first existing file of $KUBECONFIG,
 * else $HOME/.kube/config. */
static char *default_kubeconfig(char *err, size_t errlen)
{
    const char *env = getenv("KUBECONFIG");
    const char *home = getenv("HOME");
    char *p;

    if (env != NULL && *env != '\0') {
        const char *s = env;
        while (*s != '\0') {
            size_t n = strcspn(s, ":");
            if (n > 0) {
                p = dup_n(s, n);
                if (p == NULL) {
                    kube_fail(err, errlen, "out of memory");
                    return NULL;
                }
                if (access(p, F_OK) == 0)
                    return p;
                free(p);
            }
            s += n;
            if (*s == ':')
                s++;
        }
        kube_fail(err, errlen, "none of the files in KUBECONFIG `%s' exists", env);
        return NULL;
    }
    if (home == NULL || *home == '\0') {
        kube_fail(err, errlen, "no kubeconfig: neither KUBECONFIG nor HOME is set");
        return NULL;
    }
    p = str_printf("%s/.kube/config", home);
    if (p == NULL)
        kube_fail(err, errlen, "out of memory");
    return p;
}

static int load_document(struct kc *kc, struct kube_config *cfg, const char *context)
{
    yaml_node_t *root = yaml_document_get_root_node(&kc->doc);
    yaml_node_t *entry, *ctx, *cur_at = NULL, *cluster_at, *user_at;
    const char *cur = NULL, *cluster, *user, *ns;
    char what[512];

    if (root != NULL && root->type != YAML_MAPPING_NODE)
        return kc_fail(kc, root, "the document is not a mapping");
    if (context == NULL) {
        if (get_str(kc, root, "current-context", "the document", &cur, &cur_at) < 0)
            return -1;
        if (cur == NULL)
            return kc_fail(kc, NULL, "no context given and no current-context set");
        context = cur;
    }
    if (find_named(kc, root, "contexts", "context", context, &entry, &ctx) < 0)
        return -1;
    if (entry == NULL)
        return kc_fail(kc, cur_at, "context `%s' is not in contexts", context);
    snprintf(what, sizeof what, "context `%s'", context);
    if (get_str(kc, ctx, "cluster", what, &cluster, &cluster_at) < 0 ||
        get_str(kc, ctx, "user", what, &user, &user_at) < 0 ||
        get_str(kc, ctx, "namespace", what, &ns, NULL) < 0)
        return -1;
    if (cluster == NULL)
        return kc_fail(kc, entry, "%s names no cluster", what);
    if (load_cluster(kc, cfg, root, context, cluster, cluster_at) < 0)
        return -1;
    if (user != NULL && load_user(kc, cfg, root, context, user, user_at) < 0)
        return -1;
    cfg->namespace_ = strdup(ns != NULL ? ns : "default");
    if (cfg->namespace_ == NULL)
        return kube_fail(kc->err, kc->errlen, "out of memory");
    return 0;
}

int kube_config_load_kubeconfig(struct kube_config *cfg, const char *path, const char *context,
                                char *err, size_t errlen)
{
    struct kc kc = {.err = err, .errlen = errlen};
    yaml_parser_t parser;
    bool parser_ok = false, doc_ok = false;
    char *chosen = NULL, *slash;
    FILE *f = NULL;
    int rc = -1;

    memset(cfg, 0, sizeof *cfg);
    if (path == NULL) {
        chosen = default_kubeconfig(err, errlen);
        if (chosen == NULL)
            goto out;
        path = chosen;
    }
    kc.path = path;
    slash = strrchr(path, '/');
    if (slash == NULL)
        kc.dir = strdup(".");
    else if (slash == path)
        kc.dir = strdup("/");
    else
        kc.dir = dup_n(path, (size_t)(slash - path));
    if (kc.dir == NULL) {
        kube_fail(err, errlen, "out of memory");
        goto out;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        kc_fail(&kc, NULL, "%s", strerror(errno));
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        kube_fail(err, errlen, "out of memory");
        goto out;
    }
    parser_ok = true;
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &kc.doc)) {
        kube_fail(err, errlen, "kubeconfig `%s' line %zu column %zu: %s%s%s", path,
             parser.problem_mark.line + 1, parser.problem_mark.column + 1,
             parser.problem ? parser.problem : "invalid YAML", parser.context ? " " : "",
             parser.context ? parser.context : "");
        goto out;
    }
    doc_ok = true;
    if (load_document(&kc, cfg, context) < 0)
        goto out;
    rc = 0;
out:
    if (doc_ok)
        yaml_document_delete(&kc.doc);
    if (parser_ok)
        yaml_parser_delete(&parser);
    if (f != NULL)
        fclose(f);
    free(kc.dir);
    free(chosen);
    if (rc < 0)
        kube_config_free(cfg);
    return rc;
}
