/* Pools file parser: INI sections "[pool NAME]" with a table of keys. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipam/ipset.h"

static char *dup_range(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        *--e = 0;
    return s;
}

static int parse_bool(const char *v, protobuf_c_boolean *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
        *out = 0;
    else
        return -1;
    return 0;
}

typedef int (*setter)(Ipam__V1__Pool *p, const char *v, char *why, size_t n);

static int set_blocks(Ipam__V1__Pool *p, const char *v, char *why, size_t n)
{
    char **entries = NULL, **nb;
    size_t k = 0;

    if (ipam_list_split(v, &entries, &k, why, n) != 0) {
        /* The splitter quotes the list; the file's reader wants the key. */
        if (errno == EINVAL)
            snprintf(why, n, "empty entry in blocks `%s'", v);
        return -1;
    }
    /* A second blocks line adds to the first. */
    nb = realloc(p->blocks, (p->n_blocks + k) * sizeof(char *));
    if (!nb) {
        ipam_list_free(entries, k);
        snprintf(why, n, "out of memory");
        return -1;
    }
    p->blocks = nb;
    memcpy(p->blocks + p->n_blocks, entries, k * sizeof(char *));
    p->n_blocks += k;
    free(entries);
    return 0;
}

static int set_order(Ipam__V1__Pool *p, const char *v, char *why, size_t n)
{
    if (!strcmp(v, "asc"))
        p->search_order = IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_ASC;
    else if (!strcmp(v, "desc"))
        p->search_order = IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC;
    else {
        snprintf(why, n, "search-order `%s' is not asc or desc", v);
        return -1;
    }
    return 0;
}

static int set_space(Ipam__V1__Pool *p, const char *v, char *why, size_t n)
{
    free(p->space == protobuf_c_empty_string ? NULL : p->space);
    p->space = dup_range(v, strlen(v));
    if (!p->space) {
        p->space = (char *)protobuf_c_empty_string;
        snprintf(why, n, "out of memory");
        return -1;
    }
    return 0;
}

#define BOOL_SETTER(fn, field, key)                                                                \
    static int fn(Ipam__V1__Pool *p, const char *v, char *why, size_t n)                           \
    {                                                                                              \
        if (parse_bool(v, &p->field) == 0)                                                         \
            return 0;                                                                              \
        snprintf(why, n, key " `%s' is not true or false", v);                                     \
        return -1;                                                                                 \
    }
BOOL_SETTER(set_skip, skip_end_ips, "skip-end-ips")
BOOL_SETTER(set_avoid, avoid_buggy_ips, "avoid-buggy-ips")
BOOL_SETTER(set_share, allow_share, "allow-share")

static const struct {
    const char *key;
    setter set;
} keys[] = {
    {"blocks", set_blocks},     {"search-order", set_order},   {"space", set_space},
    {"skip-end-ips", set_skip}, {"avoid-buggy-ips", set_avoid}, {"allow-share", set_share},
};

static void pool_free(Ipam__V1__Pool *p)
{
    if (!p)
        return;
    free(p->name);
    if (p->space != protobuf_c_empty_string)
        free(p->space);
    for (size_t i = 0; i < p->n_blocks; i++)
        free(p->blocks[i]);
    free(p->blocks);
    free(p);
}

void config_free(struct config *c)
{
    for (size_t i = 0; i < c->n; i++)
        pool_free(c->pools[i]);
    free(c->pools);
    free(c->lines);
    c->pools = NULL;
    c->lines = NULL;
    c->n = 0;
}

static int add_pool(struct config *c, const char *name, int line)
{
    Ipam__V1__Pool **np = realloc(c->pools, (c->n + 1) * sizeof(*np));
    if (np)
        c->pools = np;
    int *nl = realloc(c->lines, (c->n + 1) * sizeof(*nl));
    if (nl)
        c->lines = nl;
    Ipam__V1__Pool *p = calloc(1, sizeof(*p));
    if (!np || !nl || !p) {
        free(p);
        return -1;
    }
    ipam__v1__pool__init(p);
    p->name = dup_range(name, strlen(name));
    if (!p->name) {
        free(p);
        return -1;
    }
    c->pools[c->n] = p;
    c->lines[c->n++] = line;
    return 0;
}

int config_load(const char *path, struct config *out, char *err, size_t errlen)
{
    struct config c = {NULL, NULL, 0};
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t cap = 0;
    int line = 0, rc = -1;
    char why[300];
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    ssize_t got;
    while ((got = getline(&buf, &cap, f)) >= 0) {
        line++;
        /* A NUL would silently cut the line short. */
        if (memchr(buf, 0, (size_t)got)) {
            snprintf(err, errlen, "%s:%d: the line holds a NUL byte", path, line);
            goto out;
        }
        char *s = trim(buf);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || trim(e + 1)[0]) {
                snprintf(err, errlen, "%s:%d: malformed section header `%s'", path, line, s);
                goto out;
            }
            *e = 0;
            char *body = trim(s + 1);
            if (strncmp(body, "pool", 4) != 0 || (body[4] != ' ' && body[4] != '\t')) {
                snprintf(err, errlen, "%s:%d: unknown section `[%s]' (expected [pool NAME])",
                         path, line, body);
                goto out;
            }
            char *name = trim(body + 4);
            for (size_t i = 0; i < c.n; i++)
                if (!strcmp(c.pools[i]->name, name)) {
                    snprintf(err, errlen, "%s:%d: pool `%s' is declared twice (first at line %d)",
                             path, line, name, c.lines[i]);
                    goto out;
                }
            if (add_pool(&c, name, line) != 0) {
                snprintf(err, errlen, "%s:%d: out of memory", path, line);
                goto out;
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected `key = value', got `%s'", path, line, s);
            goto out;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        if (!c.n) {
            snprintf(err, errlen, "%s:%d: `%s' outside a [pool NAME] section", path, line, key);
            goto out;
        }
        size_t k = 0;
        while (k < sizeof(keys) / sizeof(keys[0]) && strcmp(keys[k].key, key) != 0)
            k++;
        if (k == sizeof(keys) / sizeof(keys[0])) {
            snprintf(err, errlen,
                     "%s:%d: unknown key `%s' (blocks, search-order, space, skip-end-ips, "
                     "avoid-buggy-ips, allow-share)",
                     path, line, key);
            goto out;
        }
        if (keys[k].set(c.pools[c.n - 1], val, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%s:%d: %s", path, line, why);
            goto out;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto out;
    }
    *out = c;
    c.pools = NULL;
    c.lines = NULL;
    c.n = 0;
    rc = 0;
out:
    config_free(&c);
    free(buf);
    fclose(f);
    return rc;
}
