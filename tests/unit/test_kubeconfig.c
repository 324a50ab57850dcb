/* Unit tests for the Kubernetes client configuration: kubeconfig files, in-cluster, --server. */
#include "kubeconfig.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* PEM texts and their base64, as kubeconfig *-data keys hold them. */
#define CA_A "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"
#define CA_A64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tClFVSkQKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
#define CA_A_NONL "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----"
#define CA_A_NONL64                                                                                \
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tClFVSkQKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQ=="
#define CERT_B "-----BEGIN CERTIFICATE-----\nREVG\n-----END CERTIFICATE-----\n"
#define CERT_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tClJFVkcKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
#define KEY_C "-----BEGIN PRIVATE KEY-----\nR0hJ\n-----END PRIVATE KEY-----\n"
#define KEY_C64 "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tClIwaEoKLS0tLS1FTkQgUFJJVkFURSBLRVktLS0tLQo="

static char dir[64];

/* Writes text to DIR/name. */
static void write_file(const char *name, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    if (!CHECK_MSG(f != NULL, "cannot create %s", path))
        return;
    fputs(text, f);
    fclose(f);
}

/* Copies tmpl to out with every '@' replaced by the temporary directory. */
static const char *expand(const char *tmpl, char *out, size_t n)
{
    size_t o = 0;

    if (tmpl == NULL)
        return NULL;
    for (; *tmpl && o + 1 < n; tmpl++) {
        if (*tmpl == '@') {
            o += (size_t)snprintf(out + o, n - o, "%s", dir);
            if (o >= n)
                o = n - 1;
        } else {
            out[o++] = *tmpl;
        }
    }
    out[o] = '\0';
    return out;
}

/* The shared kubeconfig: line numbers matter to the error rows below. */
static const char base_config[] =
    "clusters:\n"                                                 /* 1 */
    "- name: dev\n"                                               /* 2 */
    "  cluster:\n"                                                /* 3 */
    "    server: https://dev.example:6443/\n"                     /* 4 */
    "    certificate-authority-data: " CA_A64 "\n"                /* 5 */
    "- name: lab\n"                                               /* 6 */
    "  cluster:\n"                                                /* 7 */
    "    server: https://[2001:db8::1]:6443\n"                    /* 8 */
    "    certificate-authority: ../certs/ca.crt\n"                /* 9 */
    "    insecure-skip-tls-verify: true\n"                        /* 10 */
    "users:\n"                                                    /* 11 */
    "- name: alice\n"                                             /* 12 */
    "  user:\n"                                                   /* 13 */
    "    token: alice-token\n"                                    /* 14 */
    "- name: bob\n"                                               /* 15 */
    "  user:\n"                                                   /* 16 */
    "    tokenFile: token\n"                                      /* 17 */
    "- name: carol\n"                                             /* 18 */
    "  user:\n"                                                   /* 19 */
    "    client-certificate-data: " CERT_B64 "\n"                 /* 20 */
    "    client-key-data: " KEY_C64 "\n"                          /* 21 */
    "- name: dave\n"                                              /* 22 */
    "  user:\n"                                                   /* 23 */
    "    client-certificate: ../certs/client.crt\n"               /* 24 */
    "    client-key: ~/client.key\n"                              /* 25 */
    "contexts:\n"                                                 /* 26 */
    "- name: dev\n"                                               /* 27 */
    "  context: {cluster: dev, user: alice, namespace: team-a}\n" /* 28 */
    "- name: lab\n"                                               /* 29 */
    "  context: {cluster: lab, user: bob}\n"                      /* 30 */
    "- name: certs\n"                                             /* 31 */
    "  context: {cluster: dev, user: carol}\n"                    /* 32 */
    "- name: files\n"                                             /* 33 */
    "  context: {cluster: dev, user: dave}\n"                     /* 34 */
    "- name: no-cluster\n"                                        /* 35 */
    "  context: {cluster: gone, user: alice}\n"                   /* 36 */
    "- name: no-user\n"                                           /* 37 */
    "  context: {cluster: dev, user: nobody}\n"                   /* 38 */
    "- name: anonymous\n"                                         /* 39 */
    "  context: {cluster: lab}\n"                                 /* 40 */
    "- name: empty\n"                                             /* 41 */
    "  context: {user: alice}\n"                                  /* 42 */
    "- name: dev\n"                                               /* 43 */
    "  context: {cluster: lab, user: bob}\n"                      /* 44 */
    "current-context: dev\n";                                     /* 45 */

/* A one-cluster config around a user mapping (the user starts on line 6). */
#define WITH_USER(user)                                                                            \
    "clusters:\n"                                                                                  \
    "- name: c\n"                                                                                  \
    "  cluster: {server: 'http://127.0.0.1:8001'}\n"                                               \
    "users:\n"                                                                                     \
    "- name: u\n"                                                                                  \
    "  user:\n" user "contexts:\n"                                                                 \
    "- name: x\n"                                                                                  \
    "  context: {cluster: c, user: u}\n"                                                           \
    "current-context: x\n"

/* A one-cluster config around a cluster mapping (the cluster starts on line 3). */
#define WITH_CLUSTER(cluster)                                                                      \
    "clusters:\n"                                                                                  \
    "- name: c\n"                                                                                  \
    "  cluster:\n" cluster "contexts:\n"                                                           \
    "- name: x\n"                                                                                  \
    "  context: {cluster: c}\n"                                                                    \
    "current-context: x\n"

#define CFG "kubeconfig `@/sub/config'"

struct kc_case {
    const char *name;    /* What the row shows. */
    const char *yaml;    /* Written to @/sub/config; NULL: base_config. */
    const char *context; /* Argument; NULL: current-context. */
    /* On success ('@' is the temporary directory): */
    const char *server, *ca_pem, *ca_file, *token, *token_file, *cert_pem, *key_pem, *cert_file,
        *key_file, *ns;
    bool insecure;
    const char *err; /* The whole error message when loading must fail. */
};

static const struct kc_case kc_cases[] = {
    {.name = "current-context picks cluster, user and namespace; CA data is decoded",
     .server = "https://dev.example:6443",
     .ca_pem = CA_A,
     .token = "alice-token",
     .ns = "team-a"},
    {.name = "an explicit context wins; relative CA and token files; insecure; default namespace",
     .context = "lab",
     .server = "https://[2001:db8::1]:6443",
     .ca_file = "@/sub/../certs/ca.crt",
     .token_file = "@/sub/token",
     .insecure = true,
     .ns = "default"},
    {.name = "client certificate and key data",
     .context = "certs",
     .server = "https://dev.example:6443",
     .ca_pem = CA_A,
     .cert_pem = CERT_B,
     .key_pem = KEY_C,
     .ns = "default"},
    {.name = "client certificate and key files, relative and under ~",
     .context = "files",
     .server = "https://dev.example:6443",
     .ca_pem = CA_A,
     .cert_file = "@/sub/../certs/client.crt",
     .key_file = "@/client.key",
     .ns = "default"},
    {.name = "a context without user is anonymous",
     .context = "anonymous",
     .server = "https://[2001:db8::1]:6443",
     .ca_file = "@/sub/../certs/ca.crt",
     .insecure = true,
     .ns = "default"},
    {.name = "an unknown explicit context is named",
     .context = "nope",
     .err = CFG ": context `nope' is not in contexts"},
    {.name = "a missing cluster is named with its line",
     .context = "no-cluster",
     .err = CFG " line 36: context `no-cluster' names cluster `gone', which is not in clusters"},
    {.name = "a missing user is named with its line",
     .context = "no-user",
     .err = CFG " line 38: context `no-user' names user `nobody', which is not in users"},
    {.name = "a context without cluster is refused",
     .context = "empty",
     .err = CFG " line 41: context `empty' names no cluster"},
    {.name = "a current-context that is not in contexts is named with its line",
     .yaml = "contexts: []\ncurrent-context: prod\n",
     .err = CFG " line 2: context `prod' is not in contexts"},
    {.name = "no context at all is refused",
     .yaml = "clusters: []\n",
     .err = CFG ": no context given and no current-context set"},
    {.name = "an empty file is refused",
     .yaml = "",
     .err = CFG ": no context given and no current-context set"},
    {.name = "exec authentication is named as unsupported",
     .yaml = WITH_USER("    exec:\n      command: aws\n"),
     .err = CFG " line 7: user `u' uses exec (credential plugin) authentication, which is not "
                "supported (use a token, a client certificate, or --server with kubectl proxy)"},
    {.name = "auth-provider authentication is named as unsupported",
     .yaml = WITH_USER("    auth-provider: {name: gcp}\n"),
     .err = CFG " line 7: user `u' uses auth-provider authentication, which is not supported "
                "(use a token, a client certificate, or --server with kubectl proxy)"},
    {.name = "username/password authentication is named as unsupported",
     .yaml = WITH_USER("    username: admin\n    password: secret\n"),
     .err = CFG " line 7: user `u' uses username/password authentication, which is not "
                "supported (use a token, a client certificate, or --server with kubectl proxy)"},
    {.name = "a null user is anonymous; a quoted server is fine",
     .yaml = WITH_USER("    ~\n"),
     .server = "http://127.0.0.1:8001",
     .ns = "default"},
    {.name = "a token file that does not exist is named",
     .yaml = WITH_USER("    tokenFile: /nonexistent/token\n"),
     .err = CFG " line 7: user `u': tokenFile `/nonexistent/token': No such file or directory"},
    {.name = "a client certificate without key is refused",
     .yaml = WITH_USER("    client-certificate-data: " CERT_B64 "\n"),
     .err = CFG " line 5: user `u' has a client certificate but no client-key(-data)"},
    {.name = "a client key without certificate is refused",
     .yaml = WITH_USER("    client-key: ../certs/client.key\n"),
     .err = CFG " line 5: user `u' has a client key but no client-certificate(-data)"},
    {.name = "malformed YAML is reported at its line",
     .yaml = "clusters:\n- name: c\n  cluster:\n    server: [unclosed\ncurrent-context: x\n",
     .err = CFG " line 5 column 16: did not find expected ',' or ']' while parsing a flow "
                "sequence"},
    {.name = "a tab indentation is reported at its line",
     .yaml = "clusters:\n\t- name: c\n",
     .err = CFG " line 2 column 1: found character that cannot start any token while scanning "
                "for the next token"},
    {.name = "base64 with bad characters is refused",
     .yaml = WITH_CLUSTER("    server: https://c\n    certificate-authority-data: LS0t*LS1C\n"),
     .err = CFG " line 5: cluster `c': certificate-authority-data is not valid base64"},
    {.name = "base64 with a lone last character is refused",
     .yaml = WITH_CLUSTER("    server: https://c\n    certificate-authority-data: LS0tL\n"),
     .err = CFG " line 5: cluster `c': certificate-authority-data is not valid base64"},
    {.name = "base64 with data after padding is refused",
     .yaml = WITH_CLUSTER("    server: https://c\n    certificate-authority-data: LQ==LQ==\n"),
     .err = CFG " line 5: cluster `c': certificate-authority-data is not valid base64"},
    {.name = "base64 with too much padding is refused",
     .yaml = WITH_CLUSTER("    server: https://c\n    certificate-authority-data: LS0t=\n"),
     .err = CFG " line 5: cluster `c': certificate-authority-data is not valid base64"},
    {.name = "base64 that is not PEM is refused",
     .yaml = WITH_CLUSTER("    server: https://c\n"
                          "    certificate-authority-data: aGVsbG8gd29ybGQ=\n"),
     .err = CFG " line 5: cluster `c': certificate-authority-data does not decode to PEM text "
                "(no `-----BEGIN ')"},
    {.name = "unpadded, folded and double-padded base64 decode",
     .yaml = WITH_CLUSTER("    server: https://c\n"
                          "    certificate-authority-data: |\n"
                          "      LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t\n"
                          "      ClFVSkQKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQ\n"),
     .server = "https://c",
     .ca_pem = CA_A_NONL,
     .ns = "default"},
    {.name = "padded base64 without a final newline decodes",
     .yaml =
         WITH_CLUSTER("    server: https://c\n    certificate-authority-data: " CA_A_NONL64 "\n"),
     .server = "https://c",
     .ca_pem = CA_A_NONL,
     .ns = "default"},
    {.name = "a cluster without server is refused",
     .yaml = WITH_CLUSTER("    insecure-skip-tls-verify: false\n"),
     .err = CFG " line 2: cluster `c' has no server"},
    {.name = "a server that is not http(s) is refused",
     .yaml = WITH_CLUSTER("    server: ftp://c\n"),
     .err = CFG " line 4: cluster `c': server `ftp://c' is not an http:// or https:// URL"},
    {.name = "a CA file that does not exist is named with its resolved path",
     .yaml = WITH_CLUSTER("    server: https://c\n    certificate-authority: missing.crt\n"),
     .err = CFG " line 5: cluster `c': certificate-authority `@/sub/missing.crt': No such file or "
                "directory"},
    {.name = "a non-boolean insecure-skip-tls-verify is refused",
     .yaml = WITH_CLUSTER("    server: https://c\n    insecure-skip-tls-verify: maybe\n"),
     .err = CFG " line 5: cluster `c': insecure-skip-tls-verify `maybe' is not a boolean"},
    {.name = "a server that is a mapping is refused",
     .yaml = WITH_CLUSTER("    server: {a: b}\n"),
     .err = CFG " line 4: cluster `c': `server' is not a string"},
    {.name = "clusters that are not a list are refused",
     .yaml = "clusters: {}\ncontexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n",
     .err = CFG " line 1: `clusters' is not a list"},
    {.name = "a top level that is not a mapping is refused",
     .yaml = "- a\n- b\n",
     .err = CFG " line 1: the document is not a mapping"},
    {.name = "a kubeconfig in JSON is read",
     .yaml = "{\"clusters\": [{\"name\": \"c\", \"cluster\": {\"server\": \"https://j:443\", "
             "\"insecure-skip-tls-verify\": true}}], \"users\": [{\"name\": \"u\", \"user\": "
             "{\"token\": \"t\"}}], \"contexts\": [{\"name\": \"x\", \"context\": {\"cluster\": "
             "\"c\", \"user\": \"u\", \"namespace\": \"ns\"}}], \"current-context\": \"x\"}\n",
     .server = "https://j:443",
     .token = "t",
     .insecure = true,
     .ns = "ns"},
};

static void check_field(const char *row, const char *field, const char *got, const char *want_t)
{
    char want[512];

    expand(want_t, want, sizeof want);
    CHECK_MSG((got == NULL && want_t == NULL) ||
                  (got != NULL && want_t != NULL && strcmp(got, want) == 0),
              "%s: %s: got \"%s\", want \"%s\"", row, field, got ? got : "(null)",
              want_t ? want : "(null)");
}

static void test_kubeconfig_table(void)
{
    char path[128], err[1024], want[1024];

    snprintf(path, sizeof path, "%s/sub/config", dir);
    for (size_t i = 0; i < N(kc_cases); i++) {
        const struct kc_case *c = &kc_cases[i];
        struct kube_config cfg;
        int rc;

        write_file("sub/config", c->yaml ? c->yaml : base_config);
        err[0] = '\0';
        rc = kube_config_load_kubeconfig(&cfg, path, c->context, err, sizeof err);
        if (c->err != NULL) {
            CHECK_MSG(rc == -1, "%s: loading succeeded", c->name);
            CHECK_MSG(strcmp(err, expand(c->err, want, sizeof want)) == 0,
                      "%s:\n  got  \"%s\"\n  want \"%s\"", c->name, err, want);
            CHECK_MSG(cfg.server == NULL && cfg.namespace_ == NULL, "%s: not zeroed", c->name);
            kube_config_free(&cfg);
            continue;
        }
        if (!CHECK_MSG(rc == 0, "%s: %s", c->name, err))
            continue;
        check_field(c->name, "server", cfg.server, c->server);
        check_field(c->name, "ca_pem", cfg.ca_pem, c->ca_pem);
        check_field(c->name, "ca_file", cfg.ca_file, c->ca_file);
        check_field(c->name, "token", cfg.token, c->token);
        check_field(c->name, "token_file", cfg.token_file, c->token_file);
        check_field(c->name, "cert_pem", cfg.cert_pem, c->cert_pem);
        check_field(c->name, "key_pem", cfg.key_pem, c->key_pem);
        check_field(c->name, "cert_file", cfg.cert_file, c->cert_file);
        check_field(c->name, "key_file", cfg.key_file, c->key_file);
        check_field(c->name, "namespace", cfg.namespace_, c->ns);
        CHECK_MSG(cfg.insecure == c->insecure, "%s: insecure %d", c->name, cfg.insecure);
        kube_config_free(&cfg);
        CHECK_MSG(cfg.server == NULL, "%s: kube_config_free zeroes", c->name);
        kube_config_free(&cfg);
    }
}

static void test_missing_file_is_named(void)
{
    struct kube_config cfg;
    char path[128], err[512], want[512];

    snprintf(path, sizeof path, "%s/nope", dir);
    CHECK(kube_config_load_kubeconfig(&cfg, path, NULL, err, sizeof err) == -1);
    CHECK_EQ_STR(err, expand("kubeconfig `@/nope': No such file or directory", want, sizeof want));
}

/* $KUBECONFIG lists files; the first one that exists is read, else $HOME/.kube/config. */
static void test_kubeconfig_env(void)
{
    struct kube_config cfg;
    char env[256], err[512], want[512];

    write_file("first.yaml", WITH_CLUSTER("    server: https://first\n"));
    write_file("second.yaml", WITH_CLUSTER("    server: https://second\n"));
    snprintf(env, sizeof env, "%s/none.yaml::%s/first.yaml:%s/second.yaml", dir, dir, dir);
    setenv("KUBECONFIG", env, 1);
    if (CHECK_MSG(kube_config_load_kubeconfig(&cfg, NULL, NULL, err, sizeof err) == 0, "%s", err))
        CHECK_EQ_STR(cfg.server, "https://first");
    kube_config_free(&cfg);

    snprintf(env, sizeof env, "%s/none.yaml:%s/none2.yaml", dir, dir);
    setenv("KUBECONFIG", env, 1);
    CHECK(kube_config_load_kubeconfig(&cfg, NULL, NULL, err, sizeof err) == -1);
    snprintf(want, sizeof want, "none of the files in KUBECONFIG `%s' exists", env);
    CHECK_EQ_STR(err, want);

    unsetenv("KUBECONFIG");
    mkdir(expand("@/.kube", want, sizeof want), 0700);
    write_file(".kube/config", WITH_CLUSTER("    server: https://home\n"));
    if (CHECK_MSG(kube_config_load_kubeconfig(&cfg, NULL, NULL, err, sizeof err) == 0, "%s", err))
        CHECK_EQ_STR(cfg.server, "https://home");
    kube_config_free(&cfg);
}

struct ic_case {
    const char *name;
    const char *host, *port; /* NULL: unset */
    const char *files;       /* Which of t(oken), c(a.crt), n(amespace) exist. */
    const char *ns_text;
    const char *server, *ns; /* Expected on success. */
    const char *err;         /* Expected error. */
};

static const struct ic_case ic_cases[] = {
    {"an IPv4 service host", "10.96.0.1", "443", "tcn", "kube-system\n", "https://10.96.0.1:443",
     "kube-system", NULL},
    {"an IPv6 service host is bracketed", "fd00::1", "6443", "tcn", "  ops  ",
     "https://[fd00::1]:6443", "ops", NULL},
    {"a missing namespace file means default", "10.0.0.1", "443", "tc", NULL,
     "https://10.0.0.1:443", "default", NULL},
    {"an unset host is named", NULL, "443", "tcn", "x", NULL, NULL,
     "in-cluster config: KUBERNETES_SERVICE_HOST is not set (not running in a Pod?)"},
    {"an unset port is named", "10.0.0.1", NULL, "tcn", "x", NULL, NULL,
     "in-cluster config: KUBERNETES_SERVICE_PORT is not set (not running in a Pod?)"},
    {"a bad port is quoted", "10.0.0.1", "https", "tcn", "x", NULL, NULL,
     "in-cluster config: KUBERNETES_SERVICE_PORT `https' is not a port number"},
    {"a missing token file is named", "10.0.0.1", "443", "cn", "x", NULL, NULL,
     "in-cluster config: token file `@/sa/token': No such file or directory"},
    {"a missing CA file is named", "10.0.0.1", "443", "tn", "x", NULL, NULL,
     "in-cluster config: CA file `@/sa/ca.crt': No such file or directory"},
};

static void test_in_cluster(void)
{
    char sa[128], want[512], err[512];

    snprintf(sa, sizeof sa, "%s/sa", dir);
    mkdir(sa, 0700);
    setenv("KUBE_SA_DIR", sa, 1);
    for (size_t i = 0; i < N(ic_cases); i++) {
        const struct ic_case *c = &ic_cases[i];
        struct kube_config cfg;
        char p[160];
        int rc;

        snprintf(p, sizeof p, "%s/token", sa);
        unlink(p);
        if (strchr(c->files, 't'))
            write_file("sa/token", "sa-token\n");
        snprintf(p, sizeof p, "%s/ca.crt", sa);
        unlink(p);
        if (strchr(c->files, 'c'))
            write_file("sa/ca.crt", CA_A);
        snprintf(p, sizeof p, "%s/namespace", sa);
        unlink(p);
        if (strchr(c->files, 'n'))
            write_file("sa/namespace", c->ns_text);
        if (c->host)
            setenv("KUBERNETES_SERVICE_HOST", c->host, 1);
        else
            unsetenv("KUBERNETES_SERVICE_HOST");
        if (c->port)
            setenv("KUBERNETES_SERVICE_PORT", c->port, 1);
        else
            unsetenv("KUBERNETES_SERVICE_PORT");
        err[0] = '\0';
        rc = kube_config_in_cluster(&cfg, err, sizeof err);
        if (c->err) {
            CHECK_MSG(rc == -1, "%s: succeeded", c->name);
            CHECK_MSG(strcmp(err, expand(c->err, want, sizeof want)) == 0,
                      "%s:\n  got  \"%s\"\n  want \"%s\"", c->name, err, want);
            continue;
        }
        if (!CHECK_MSG(rc == 0, "%s: %s", c->name, err))
            continue;
        check_field(c->name, "server", cfg.server, c->server);
        check_field(c->name, "namespace", cfg.namespace_, c->ns);
        check_field(c->name, "token_file", cfg.token_file, "@/sa/token");
        check_field(c->name, "ca_file", cfg.ca_file, "@/sa/ca.crt");
        check_field(c->name, "token", cfg.token, NULL);
        CHECK_MSG(!cfg.insecure, "%s: insecure", c->name);
        kube_config_free(&cfg);
    }
    unsetenv("KUBE_SA_DIR");
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
}

static void test_server_url(void)
{
    static const struct {
        const char *url, *server, *err;
    } cases[] = {
        {"http://127.0.0.1:8001", "http://127.0.0.1:8001", NULL},
        {"https://k8s.example/prefix//", "https://k8s.example/prefix", NULL},
        {"ftp://x", NULL, "server `ftp://x' is not an http:// or https:// URL"},
        {"http://", NULL, "server `http://' is not an http:// or https:// URL"},
        {"127.0.0.1:8001", NULL, "server `127.0.0.1:8001' is not an http:// or https:// URL"},
        {"http://a b", NULL, "server `http://a b' is not an http:// or https:// URL"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct kube_config cfg, copy;
        char err[256] = "";
        int rc = kube_config_server(&cfg, cases[i].url, err, sizeof err);

        if (cases[i].err) {
            CHECK_MSG(rc == -1, "%s: succeeded", cases[i].url);
            CHECK_EQ_STR(err, cases[i].err);
            continue;
        }
        if (!CHECK_MSG(rc == 0, "%s: %s", cases[i].url, err))
            continue;
        CHECK_EQ_STR(cfg.server, cases[i].server);
        CHECK_EQ_STR(cfg.namespace_, "default");
        CHECK(cfg.token == NULL && cfg.ca_pem == NULL && !cfg.insecure);
        if (CHECK(kube_config_copy(&copy, &cfg) == 0)) {
            CHECK_EQ_STR(copy.server, cfg.server);
            CHECK(copy.server != cfg.server);
            kube_config_free(&copy);
        }
        kube_config_free(&cfg);
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    char p[160];

    snprintf(dir, sizeof dir, "/tmp/test-kubeconfig-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    setenv("HOME", dir, 1);
    unsetenv("KUBECONFIG");
    snprintf(p, sizeof p, "%s/sub", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/certs", dir);
    mkdir(p, 0700);
    write_file("certs/ca.crt", CA_A);
    write_file("certs/client.crt", CERT_B);
    write_file("certs/client.key", KEY_C);
    write_file("client.key", KEY_C);
    write_file("sub/token", "file-token\n");

    test_kubeconfig_table();
    test_missing_file_is_named();
    test_kubeconfig_env();
    test_in_cluster();
    test_server_url();

    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_summary();
}
