/* Fuzz harness for kubeconfig files (k8s-adapter/kubeconfig.c).
 *
 * The input is the file, loaded for its current-context and for a context
 * named "fuzz", and then a --server URL (kube_config_server). On success the configuration must be
 * what kubeconfig.h promises (an http(s) server without a trailing '/', a namespace, PEM text where
 * inline data was given, a key with every certificate) and copy exactly; on failure the struct must
 * be zeroed and the message terminated. HOME is pinned so "~/" paths resolve the same on every
 * machine. */
#include "fuzz.h"

#include <stdbool.h>

#include "kubeconfig.h"

#define FUZZ_MAX_INPUT 65536

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool is_zero(const struct kube_config *c)
{
    static const struct kube_config zero;
    return memcmp(c, &zero, sizeof zero) == 0;
}

static void check_loaded(const struct kube_config *c)
{
    size_t n;

    FUZZ_ASSERT(c->server != NULL, "no server");
    FUZZ_ASSERT(!strncmp(c->server, "https://", 8) || !strncmp(c->server, "http://", 7),
                "server `%s'", c->server);
    n = strlen(c->server);
    FUZZ_ASSERT(c->server[n - 1] != '/', "server `%s' ends with '/'", c->server);
    FUZZ_ASSERT(c->namespace_ != NULL, "no namespace");
    FUZZ_ASSERT(!c->ca_pem || strstr(c->ca_pem, "-----BEGIN "), "CA data is not PEM");
    FUZZ_ASSERT(!c->cert_pem || strstr(c->cert_pem, "-----BEGIN "), "certificate is not PEM");
    FUZZ_ASSERT(!c->key_pem || strstr(c->key_pem, "-----BEGIN "), "key is not PEM");
    FUZZ_ASSERT(!(c->cert_pem || c->cert_file) == !(c->key_pem || c->key_file),
                "a certificate without a key or a key without a certificate");
    const char *files[] = {c->ca_file, c->token_file, c->cert_file, c->key_file};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        FUZZ_ASSERT(!files[i] || files[i][0] == '/', "file `%s' is not absolute", files[i]);

    struct kube_config d;
    FUZZ_ASSERT(kube_config_copy(&d, c) == 0, "copy failed");
    FUZZ_ASSERT(same_str(d.server, c->server) && same_str(d.ca_pem, c->ca_pem) &&
                    same_str(d.ca_file, c->ca_file) && same_str(d.token, c->token) &&
                    same_str(d.token_file, c->token_file) && same_str(d.cert_pem, c->cert_pem) &&
                    same_str(d.key_pem, c->key_pem) && same_str(d.cert_file, c->cert_file) &&
                    same_str(d.key_file, c->key_file) && same_str(d.namespace_, c->namespace_) &&
                    d.insecure == c->insecure,
                "the copy differs");
    kube_config_free(&d);
    FUZZ_ASSERT(is_zero(&d), "kube_config_free leaves fields");
    kube_config_free(&d);
}

static void load(const char *path, const char *context)
{
    struct kube_config c;
    char err[512];
    size_t errlen = sizeof err;

    memset(&c, 0xa5, sizeof c); /* the loader must not read what it overwrites */
    memset(err, 'x', sizeof err);
    if (kube_config_load_kubeconfig(&c, path, context, err, errlen) != 0) {
        FUZZ_ASSERT(is_zero(&c), "a failed load leaves fields set");
        FUZZ_ASSERT(memchr(err, '\0', errlen) != NULL && err[0], "error message");
        return;
    }
    check_loaded(&c);
    kube_config_free(&c);
}

/* The input as a --server URL. */
static void server(const uint8_t *data, size_t size)
{
    struct kube_config c;
    char *url = fuzz_strdup(data, size), err[256];

    memset(&c, 0xa5, sizeof c);
    if (kube_config_server(&c, url, err, sizeof err) == 0) {
        FUZZ_ASSERT(strncmp(c.server, url, strlen(c.server)) == 0, "server `%s' from `%s'",
                    c.server, url);
        FUZZ_ASSERT(!strpbrk(c.server, " \t\r\n\v\f"), "server `%s' has spaces", c.server);
        FUZZ_ASSERT(c.namespace_ && strcmp(c.namespace_, "default") == 0, "namespace");
        check_loaded(&c);
        kube_config_free(&c);
    } else {
        FUZZ_ASSERT(is_zero(&c), "a refused URL leaves fields set");
        FUZZ_ASSERT(memchr(err, '\0', sizeof err) != NULL && err[0], "error message");
    }
    free(url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    const char *path;

    if (!init) {
        setenv("HOME", "/nonexistent-fuzz-home", 1);
        init = true;
    }
    if (size > FUZZ_MAX_INPUT)
        return 0;
    path = fuzz_file(data, size);
    load(path, NULL);
    load(path, "fuzz");
    server(data, size);
    return 0;
}
