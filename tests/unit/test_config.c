/* Unit tests for the pools file parser: a full file, comments, and every error with its line. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char dir[64];

/* Writes text to DIR/name and returns the path (in a static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[128];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    if (!CHECK_MSG(f != NULL, "cannot create %s", path))
        return path;
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_good_file(void)
{
    const char *text = "# Pools of the lab.\n"
                       "; another comment style\n"
                       "\n"
                       "[pool lan]\n"
                       "blocks = 192.0.2.0/24, 198.51.100.10-198.51.100.20\n"
                       "search-order = desc\n"
                       "skip-end-ips = true\n"
                       "avoid-buggy-ips = yes\n"
                       "allow-share = 1\n"
                       "space = blue\n"
                       "   \t\n"
                       "  # indented comment\n"
                       "[ pool   v6 ]\r\n"
                       "\tblocks=2001:db8::/64\r\n"
                       "blocks = 2001:db8:1::1-2001:db8:1::9\n"
                       "search-order = asc\n"
                       "skip-end-ips = false\n"
                       "avoid-buggy-ips = no\n"
                       "allow-share = 0\n";
    const char *path = write_file("good.conf", text);
    struct config c = {NULL, NULL, 0};
    char err[512] = "";

    if (!CHECK_MSG(config_load(path, &c, err, sizeof err) == 0, "config_load: %s", err))
        return;
    if (!CHECK_EQ_INT(c.n, 2))
        goto out;
    const Ipam__V1__Pool *lan = c.pools[0], *v6 = c.pools[1];
    CHECK_EQ_STR(lan->name, "lan");
    CHECK_EQ_INT(c.lines[0], 4);
    CHECK_EQ_INT(lan->n_blocks, 2);
    if (lan->n_blocks == 2) {
        CHECK_EQ_STR(lan->blocks[0], "192.0.2.0/24");
        CHECK_EQ_STR(lan->blocks[1], "198.51.100.10-198.51.100.20");
    }
    CHECK(lan->search_order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC);
    CHECK(lan->skip_end_ips && lan->avoid_buggy_ips && lan->allow_share);
    CHECK_EQ_STR(lan->space, "blue");

    CHECK_EQ_STR(v6->name, "v6");
    CHECK_EQ_INT(c.lines[1], 13);
    /* A second blocks line adds to the first. */
    CHECK_EQ_INT(v6->n_blocks, 2);
    if (v6->n_blocks == 2) {
        CHECK_EQ_STR(v6->blocks[0], "2001:db8::/64");
        CHECK_EQ_STR(v6->blocks[1], "2001:db8:1::1-2001:db8:1::9");
    }
    CHECK(v6->search_order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_ASC);
    CHECK(!v6->skip_end_ips && !v6->avoid_buggy_ips && !v6->allow_share);
    CHECK_EQ_STR(v6->space, "");
out:
    config_free(&c);
    CHECK(c.pools == NULL && c.lines == NULL && c.n == 0);
    unlink(path);
}

/* Files with nothing but comments, or nothing at all, declare no pools. */
static void test_empty_files(void)
{
    static const char *const texts[] = {"", "\n\n", "# only a comment\n; and another\n   \n",
                                        "# no newline at the end"};

    for (size_t i = 0; i < N(texts); i++) {
        const char *path = write_file("empty.conf", texts[i]);
        struct config c = {NULL, NULL, 0};
        char err[512] = "";
        CHECK_MSG(config_load(path, &c, err, sizeof err) == 0 && c.n == 0,
                  "text %zu: %s (%zu pools)", i, err, c.n);
        config_free(&c);
        unlink(path);
    }
}

/* Each bad file fails at its line with a message quoting the bad part.
 */
static const struct {
    const char *text;
    int line;
    const char *want; /* a part of the message after "FILE:LINE: " */
} bad[] = {
    {"[pool lan]\nblocks = 192.0.2.0/24\ncolour = blue\n", 3, "unknown key `colour'"},
    {"[pool lan]\nskip-end-ips = maybe\n", 2, "skip-end-ips `maybe' is not true or false"},
    {"[pool lan]\navoid-buggy-ips = TRUE\n", 2, "avoid-buggy-ips `TRUE' is not true or false"},
    {"[pool lan]\nallow-share =\n", 2, "allow-share `' is not true or false"},
    {"[pool lan]\nsearch-order = random\n", 2, "search-order `random' is not asc or desc"},
    {"# header missing\nblocks = 192.0.2.0/24\n[pool lan]\n", 2,
     "`blocks' outside a [pool NAME] section"},
    {"[pool lan]\nblocks = 192.0.2.0/24\n\n[pool wan]\nblocks = 10.0.0.0/8\n[pool lan]\n", 6,
     "pool `lan' is declared twice (first at line 1)"},
    {"[pool lan\nblocks = 192.0.2.0/24\n", 1, "malformed section header `[pool lan'"},
    {"[pool lan] extra\n", 1, "malformed section header `[pool lan] extra'"},
    {"[global]\n", 1, "unknown section `[global]'"},
    {"[pools lan]\n", 1, "unknown section `[pools lan]'"},
    {"[pool]\n", 1, "unknown section `[pool]'"},
    {"[pool lan]\nblocks = 192.0.2.0/24,,10.0.0.0/8\n", 2,
     "empty entry in blocks `192.0.2.0/24,,10.0.0.0/8'"},
    {"[pool lan]\nblocks = , 192.0.2.0/24\n", 2, "empty entry in blocks `, 192.0.2.0/24'"},
    /* A trailing comma leaves an empty last entry (the value is trimmed first). */
    {"[pool lan]\nblocks = 192.0.2.0/24, \n", 2, "empty entry in blocks `192.0.2.0/24,'"},
    {"[pool lan]\nblocks = 192.0.2.0/24,\n", 2, "empty entry in blocks `192.0.2.0/24,'"},
    {"[pool lan]\njust some words\n", 2, "expected `key = value', got `just some words'"},
    {"[pool lan]\n = 192.0.2.0/24\n", 2, "unknown key `'"},
};

static void test_errors(void)
{
    for (size_t i = 0; i < N(bad); i++) {
        const char *path = write_file("bad.conf", bad[i].text);
        struct config c = {NULL, NULL, 0};
        char err[512] = "", prefix[160];
        snprintf(prefix, sizeof prefix, "%s:%d: ", path, bad[i].line);
        CHECK_MSG(config_load(path, &c, err, sizeof err) == -1, "row %zu: accepted", i);
        CHECK_MSG(strncmp(err, prefix, strlen(prefix)) == 0 && strstr(err, bad[i].want) != NULL,
                  "row %zu: got `%s', want `%s%s...'", i, err, prefix, bad[i].want);
        CHECK_MSG(c.pools == NULL && c.n == 0, "row %zu: output written on error", i);
        config_free(&c);
        unlink(path);
    }
}

static void test_missing_file(void)
{
    char path[128], err[512] = "", want[160];
    struct config c = {NULL, NULL, 0};

    snprintf(path, sizeof path, "%s/no-such.conf", dir);
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    CHECK(config_load(path, &c, err, sizeof err) == -1);
    CHECK_EQ_STR(err, want);
    CHECK(c.pools == NULL && c.n == 0);
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s", "/tmp/ipam-config-XXXXXX");
    if (!CHECK_MSG(mkdtemp(dir) != NULL, "mkdtemp %s", dir))
        return check_summary();
    test_good_file();
    test_empty_files();
    test_errors();
    test_missing_file();
    CHECK_MSG(rmdir(dir) == 0, "rmdir %s: files left behind", dir);
    return check_summary();
}
