/* ipamctl's command line: flag parsers, the flag table, usage text and parsing. */
#include "cli_flags.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EXIT_USAGE 2
#define MAX_TTL_SECONDS 315360000u /* ten years, the API's limit */

void opts_free(struct opts *o)
{
    free(o->blocks.v);
    free(o->addresses.v);
    for (size_t i = 0; i < o->labels.n; i++)
        free(o->labels.v[i].key);
    free(o->labels.v);
    free(o->ports.v);
}

typedef struct {
    const char *name;
    int value;
} choice;

typedef struct flag flag;
/* Stores value into o; on a bad value prints why (quoting it) and returns false. */
typedef bool (*flag_parser)(const flag *f, const char *value, struct opts *o);

struct flag {
    const char *name;    /* "--block" */
    const char *alias;   /* another spelling, or NULL */
    const char *metavar; /* NULL for a flag without value */
    flag_parser parse;
    size_t offset; /* of the destination in struct opts */
    bool repeatable;
    bool allow_empty;      /* for parse_string */
    const choice *choices; /* NULL-terminated, for parse_choice */
    uint64_t min, max;     /* for parse_u32 and parse_u64 */
};

#define AT(o, f, type) ((type *)(void *)((char *)(o) + (f)->offset))

static bool bad_value(const flag *f, const char *value, const char *why)
{
    fprintf(stderr, "ipamctl: invalid %s `%s': %s\n", f->name, value, why);
    return false;
}

static bool parse_string(const flag *f, const char *value, struct opts *o)
{
    if (value[0] == '\0' && !f->allow_empty)
        return bad_value(f, value, "empty");
    *AT(o, f, const char *) = value;
    return true;
}

static bool parse_strings(const flag *f, const char *value, struct opts *o)
{
    if (value[0] == '\0')
        return bad_value(f, value, "empty");
    strlist *l = AT(o, f, strlist);
    l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
    l->v[l->n++] = value;
    return true;
}

static bool parse_bool(const flag *f, const char *value, struct opts *o)
{
    (void)value;
    *AT(o, f, bool) = true;
    return true;
}

/* Decimal digits only: strtoull alone would take "-1", " 7" and "0x10". */
static bool parse_number(const flag *f, const char *value, uint64_t *out)
{
    if (value[0] < '0' || value[0] > '9')
        return bad_value(f, value, "not a decimal number");
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (*end != '\0')
        return bad_value(f, value, "not a decimal number");
    if (errno == ERANGE || v < f->min || v > f->max) {
        fprintf(stderr, "ipamctl: invalid %s `%s': out of range (%llu..%llu)\n", f->name, value,
                (unsigned long long)f->min, (unsigned long long)f->max);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_u32(const flag *f, const char *value, struct opts *o)
{
    uint64_t v;
    if (!parse_number(f, value, &v))
        return false;
    *AT(o, f, uint32_t) = (uint32_t)v;
    return true;
}

static bool parse_u64(const flag *f, const char *value, struct opts *o)
{
    return parse_number(f, value, AT(o, f, uint64_t));
}

static bool parse_choice(const flag *f, const char *value, struct opts *o)
{
    for (const choice *c = f->choices; c->name != NULL; c++) {
        if (strcmp(c->name, value) == 0) {
            *AT(o, f, int) = c->value;
            return true;
        }
    }
    char why[96];
    snprintf(why, sizeof(why), "expected %s", f->metavar);
    return bad_value(f, value, why);
}

static bool parse_label(const flag *f, const char *value, struct opts *o)
{
    const char *eq = strchr(value, '=');
    if (eq == NULL || eq == value)
        return bad_value(f, value, "expected key=value");
    size_t klen = (size_t)(eq - value);
    kvlist *l = AT(o, f, kvlist);
    for (size_t i = 0; i < l->n; i++) {
        if (strlen(l->v[i].key) == klen && strncmp(l->v[i].key, value, klen) == 0)
            return bad_value(f, value, "label key given twice");
    }
    l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
    l->v[l->n].key = xprintf("%.*s", (int)klen, value);
    l->v[l->n].value = eq + 1;
    l->n++;
    return true;
}

static bool parse_port(const flag *f, const char *value, struct opts *o)
{
    static const char *const protocols[] = {"TCP", "UDP", "SCTP"};
    const char *slash = strchr(value, '/');
    if (slash == NULL)
        return bad_value(f, value, "expected protocol/port, e.g. tcp/80");
    size_t plen = (size_t)(slash - value);
    portspec p = {.port = 0};
    for (size_t i = 0; i < sizeof(protocols) / sizeof(protocols[0]); i++) {
        if (strlen(protocols[i]) == plen && strncasecmp(protocols[i], value, plen) == 0)
            snprintf(p.protocol, sizeof(p.protocol), "%s", protocols[i]);
    }
    if (p.protocol[0] == '\0')
        return bad_value(f, value, "protocol is not tcp, udp or sctp");
    const char *num = slash + 1;
    char *end = NULL;
    unsigned long v = 0;
    errno = 0;
    if (num[0] >= '0' && num[0] <= '9')
        v = strtoul(num, &end, 10);
    if (end == NULL || *end != '\0' || errno == ERANGE || v < 1 || v > 65535)
        return bad_value(f, value, "port is not 1..65535");
    p.port = (uint32_t)v;
    portlist *l = AT(o, f, portlist);
    l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
    l->v[l->n++] = p;
    return true;
}

static const choice output_choices[] = {{"table", OUT_TABLE}, {"json", OUT_JSON}, {NULL, 0}};
static const choice order_choices[] = {{"asc", IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_ASC},
                                       {"desc", IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC},
                                       {NULL, 0}};
static const choice family_choices[] = {
    {"ipv4", IPAM__V1__FAMILY__FAMILY_IPV4},
    {"ipv6", IPAM__V1__FAMILY__FAMILY_IPV6},
    {"prefer-dual", IPAM__V1__FAMILY__FAMILY_PREFER_DUAL_STACK},
    {"require-dual", IPAM__V1__FAMILY__FAMILY_REQUIRE_DUAL_STACK},
    {NULL, 0}};
static const choice primary_choices[] = {
    {"ipv4", IPAM__V1__FAMILY__FAMILY_IPV4}, {"ipv6", IPAM__V1__FAMILY__FAMILY_IPV6}, {NULL, 0}};

#define OFF(field) offsetof(struct opts, field)

static const flag flags[F_COUNT] = {
    [F_SERVER] = {"--server", NULL, "ADDR", parse_string, OFF(server)},
    [F_OUTPUT] = {"-o", "--output", "table|json", parse_choice, OFF(output),
                  .choices = output_choices},
    [F_BLOCK] = {"--block", NULL, "B", parse_strings, OFF(blocks), .repeatable = true},
    [F_ORDER] = {"--order", NULL, "asc|desc", parse_choice, OFF(order), .choices = order_choices},
    [F_SKIP_END_IPS] = {"--skip-end-ips", NULL, NULL, parse_bool, OFF(skip_end_ips)},
    [F_AVOID_BUGGY_IPS] = {"--avoid-buggy-ips", NULL, NULL, parse_bool, OFF(avoid_buggy_ips)},
    [F_ALLOW_SHARE] = {"--allow-share", NULL, NULL, parse_bool, OFF(allow_share)},
    [F_SPACE] = {"--space", NULL, "S", parse_string, OFF(space)},
    [F_FORCE] = {"--force", NULL, NULL, parse_bool, OFF(force)},
    /* An empty pool with --address asks for a static reservation. */
    [F_POOL] = {"--pool", NULL, "P", parse_string, OFF(pool), .allow_empty = true},
    [F_OWNER] = {"--owner", NULL, "O", parse_string, OFF(owner)},
    [F_ADDRESS] = {"--address", NULL, "A", parse_strings, OFF(addresses), .repeatable = true},
    [F_FAMILY] = {"--family", NULL, "ipv4|ipv6|prefer-dual|require-dual", parse_choice, OFF(family),
                  .choices = family_choices},
    [F_PRIMARY] = {"--primary", NULL, "ipv4|ipv6", parse_choice, OFF(primary),
                   .choices = primary_choices},
    [F_TTL] = {"--ttl", NULL, "S", parse_u32, OFF(ttl), .max = MAX_TTL_SECONDS},
    [F_LABEL] = {"--label", NULL, "k=v", parse_label, OFF(labels), .repeatable = true},
    [F_PORT] = {"--port", NULL, "tcp/80", parse_port, OFF(ports), .repeatable = true},
    [F_SHARING_KEY] = {"--sharing-key", NULL, "K", parse_string, OFF(sharing_key)},
    [F_OWNER_PREFIX] = {"--owner-prefix", NULL, "X", parse_string, OFF(owner_prefix)},
    [F_FROM_REVISION] = {"--from-revision", NULL, "N", parse_u64, OFF(from_revision),
                         .max = UINT64_MAX},
    [F_TLS_CA] = {"--tls-ca", NULL, "FILE", parse_string, OFF(tls_ca)},
    [F_TLS_CERT] = {"--tls-cert", NULL, "FILE", parse_string, OFF(tls_cert)},
    [F_TLS_KEY] = {"--tls-key", NULL, "FILE", parse_string, OFF(tls_key)},
    [F_TLS_SERVER_NAME] = {"--tls-server-name", NULL, "NAME", parse_string, OFF(tls_server_name)},
};

/* Accepted before and after every subcommand. The TLS flags are global too,
 * but are listed in a section of their own, not in every usage line. */
static const int global_flags[] = {F_SERVER, F_OUTPUT};
#define N_GLOBAL_FLAGS (sizeof(global_flags) / sizeof(global_flags[0]))
static const struct {
    int id;
    const char *env, *help;
} tls_flags[] = {
    {F_TLS_CA, "IPAMCTL_TLS_CA", "CA certificates that verify ipamd (default: gRPC's roots)"},
    {F_TLS_CERT, "IPAMCTL_TLS_CERT", "client certificate, for ipamd's --tls-client-ca"},
    {F_TLS_KEY, "IPAMCTL_TLS_KEY", "its private key"},
    {F_TLS_SERVER_NAME, "IPAMCTL_TLS_SERVER_NAME",
     "name ipamd's certificate must carry (default: ADDR's host)"},
};
#define N_TLS_FLAGS (sizeof(tls_flags) / sizeof(tls_flags[0]))

static void print_flag_usage(FILE *out, const flag *f, bool required)
{
    const char *sp = f->metavar != NULL ? " " : "";
    const char *mv = f->metavar != NULL ? f->metavar : "";
    if (required)
        fprintf(out, " %s%s%s", f->name, sp, mv);
    if (!required || f->repeatable)
        fprintf(out, " [%s%s%s]%s", f->name, sp, mv, f->repeatable ? "..." : "");
}

static void print_globals_usage(FILE *out)
{
    fputs("ipamctl", out);
    for (size_t i = 0; i < N_GLOBAL_FLAGS; i++)
        print_flag_usage(out, &flags[global_flags[i]], false);
}

static void print_command_usage(FILE *out, const command *c)
{
    if (c->group != NULL)
        fprintf(out, "%s ", c->group);
    fputs(c->name, out);
    for (size_t i = 0; i < 2 && c->args[i] != NULL; i++)
        fprintf(out, " %s", c->args[i]);
    for (size_t i = 0; i < MAX_CMD_FLAGS && c->flags[i].id != F_NONE; i++)
        print_flag_usage(out, &flags[c->flags[i].id], c->flags[i].required);
}

static void print_usage(FILE *out, const command *cmds, size_t ncmds)
{
    fputs("usage: ", out);
    print_globals_usage(out);
    fputs(" SUBCOMMAND\n\nsubcommands:\n", out);
    for (size_t i = 0; i < ncmds; i++) {
        fputs("  ", out);
        print_command_usage(out, &cmds[i]);
        fprintf(out, "\n      %s\n", cmds[i].summary);
    }
    fputs("\nADDR is host:port or unix:/path; the default is $IPAMD_ADDR, else " DEFAULT_SERVER
          ".\nThe exit status is 0, 2 for a usage error, else the gRPC status code.\n",
          out);
    fputs("\nTLS, for a host:port ADDR (any of these turns it on; Unix sockets are plaintext):\n",
          out);
    for (size_t i = 0; i < N_TLS_FLAGS; i++) {
        const flag *f = &flags[tls_flags[i].id];
        char left[40];
        snprintf(left, sizeof(left), "%s %s", f->name, f->metavar);
        fprintf(out, "  %-23s %s ($%s)\n", left, tls_flags[i].help, tls_flags[i].env);
    }
}

/* Reports a usage error (already printed) and exits 2. */
static _Noreturn void usage_exit(const command *c)
{
    fputs("usage: ", stderr);
    print_globals_usage(stderr);
    if (c != NULL) {
        fputc(' ', stderr);
        print_command_usage(stderr, c);
        fputc('\n', stderr);
    } else {
        fputs(" SUBCOMMAND\n(ipamctl --help lists the subcommands)\n", stderr);
    }
    exit(EXIT_USAGE);
}

__attribute__((format(printf, 2, 3))) static _Noreturn void usage_error(const command *c,
                                                                        const char *fmt, ...)
{
    va_list ap;
    fputs("ipamctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    usage_exit(c);
}

static const char *command_label(const command *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s%s", c->group != NULL ? c->group : "", c->group != NULL ? " " : "",
             c->name);
    return buf;
}

/* Whether spelling (may be NULL) is the first len characters of name. */
static bool spelled(const char *spelling, const char *name, size_t len)
{
    return spelling != NULL && strlen(spelling) == len && strncmp(spelling, name, len) == 0;
}

/* Finds the flag spelled name (length len) among the globals and c's flags;
 * F_NONE when there is none. Only global flags have an alias. */
static int find_flag(const command *c, const char *name, size_t len)
{
    for (size_t i = 0; i < N_GLOBAL_FLAGS; i++) {
        const flag *f = &flags[global_flags[i]];
        if (spelled(f->name, name, len) || spelled(f->alias, name, len))
            return global_flags[i];
    }
    for (size_t i = 0; i < N_TLS_FLAGS; i++) {
        if (spelled(flags[tls_flags[i].id].name, name, len))
            return tls_flags[i].id;
    }
    for (size_t i = 0; c != NULL && i < MAX_CMD_FLAGS && c->flags[i].id != F_NONE; i++) {
        if (spelled(flags[c->flags[i].id].name, name, len))
            return c->flags[i].id;
    }
    return F_NONE;
}

/* Matches the subcommand at argv[*i] (one or two words) and steps past it. */
static const command *find_command(int argc, char **argv, int *i, const command *cmds, size_t ncmds)
{
    const char *w = argv[*i];
    const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
    bool group = false;
    for (size_t k = 0; k < ncmds; k++) {
        const command *c = &cmds[k];
        if (c->group == NULL && strcmp(c->name, w) == 0) {
            *i += 1;
            return c;
        }
        if (c->group != NULL && strcmp(c->group, w) == 0) {
            group = true;
            if (next != NULL && strcmp(c->name, next) == 0) {
                *i += 2;
                return c;
            }
        }
    }
    if (group && next == NULL)
        usage_error(NULL, "missing subcommand after `%s'", w);
    if (group)
        usage_error(NULL, "unknown subcommand `%s %s'", w, next);
    usage_error(NULL, "unknown subcommand `%s'", w);
}

bool cli_unix_target(const char *target)
{
    return strncmp(target, "unix:", 5) == 0 || strncmp(target, "unix-abstract:", 14) == 0;
}

/* TLS flags make sense together and for a TCP server only. */
static void check_tls_flags(const command *cmd, const bool *seen, const struct opts *o)
{
    for (size_t i = 0; i < N_TLS_FLAGS; i++) {
        if (seen[tls_flags[i].id] && cli_unix_target(o->server))
            usage_error(cmd,
                        "%s is for a host:port server; ipamd's Unix sockets (`%s') are plaintext",
                        flags[tls_flags[i].id].name, o->server);
    }
    if (seen[F_TLS_CERT] != seen[F_TLS_KEY])
        usage_error(cmd, "--tls-cert and --tls-key go together");
}

const command *cli_parse(int argc, char **argv, const command *cmds, size_t ncmds, struct opts *o)
{
    const command *cmd = NULL;
    bool seen[F_COUNT] = {false};
    bool only_args = false;
    char label[64];

    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        if (only_args || a[0] != '-' || a[1] == '\0') {
            if (cmd == NULL) {
                cmd = find_command(argc, argv, &i, cmds, ncmds);
                continue;
            }
            if (o->nargs >= 2 || cmd->args[o->nargs] == NULL)
                usage_error(cmd, "unexpected argument `%s' for `%s'", a,
                            command_label(cmd, label, sizeof(label)));
            o->args[o->nargs++] = a;
            i++;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = true;
            i++;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_usage(stdout, cmds, ncmds);
            exit(0);
        }
        const char *eq = strchr(a, '=');
        size_t len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        int id = find_flag(cmd, a, len);
        if (id == F_NONE) {
            if (cmd == NULL)
                usage_error(NULL, "unknown flag `%.*s'", (int)len, a);
            usage_error(cmd, "unknown flag `%.*s' for `%s'", (int)len, a,
                        command_label(cmd, label, sizeof(label)));
        }
        const flag *f = &flags[id];
        const char *value = "";
        if (f->metavar != NULL) {
            if (eq != NULL) {
                value = eq + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                usage_error(cmd, "flag `%s' needs a value (%s)", f->name, f->metavar);
            }
        } else if (eq != NULL) {
            usage_error(cmd, "flag `%s' takes no value", f->name);
        }
        if (seen[id] && !f->repeatable)
            usage_error(cmd, "flag `%s' given twice", f->name);
        seen[id] = true;
        if (!f->parse(f, value, o))
            usage_exit(cmd);
        i++;
    }

    if (cmd == NULL)
        usage_error(NULL, "missing subcommand");
    if (o->nargs < 2 && cmd->args[o->nargs] != NULL)
        usage_error(cmd, "missing %s for `%s'", cmd->args[o->nargs],
                    command_label(cmd, label, sizeof(label)));
    for (size_t k = 0; k < MAX_CMD_FLAGS && cmd->flags[k].id != F_NONE; k++) {
        if (cmd->flags[k].required && !seen[cmd->flags[k].id])
            usage_error(cmd, "missing %s for `%s'", flags[cmd->flags[k].id].name,
                        command_label(cmd, label, sizeof(label)));
    }
    check_tls_flags(cmd, seen, o);
    return cmd;
}

void cli_tls_from_env(struct opts *o)
{
    if (cli_unix_target(o->server))
        return;
    for (size_t i = 0; i < N_TLS_FLAGS; i++) {
        const char **field = AT(o, &flags[tls_flags[i].id], const char *);
        const char *v = getenv(tls_flags[i].env);
        if (*field == NULL && v != NULL && v[0] != '\0')
            *field = v;
    }
}
