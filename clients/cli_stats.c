/* ipamctl stats: every pool's use per family, as a table for people (with a
 * bar and a percentage) or as JSON lines with the exact counts. */
#include "cli_stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>

#include "cli_output.h"
#include "ipam/addr.h"

#define BAR_WIDTH 20

struct row {
    const char *pool, *family;
    ipam_u128 size, used;
    unsigned long long leases;
    bool dhcp;
};

/* Exact below a trillion; beyond that, 2^n when exact, else three digits
 * and an exponent: an IPv6 /64 reads "2^64", not twenty digits. */
static void human(ipam_u128 v, char *buf, size_t len)
{
    if (v < (ipam_u128)1000000000000ull) {
        snprintf(buf, len, "%llu", (unsigned long long)v);
        return;
    }
    if ((v & (v - 1)) == 0) {
        int n = 0;
        while (v >>= 1)
            n++;
        snprintf(buf, len, "2^%d", n);
        return;
    }
    snprintf(buf, len, "%.2Le", (long double)v);
}

static double percent(ipam_u128 used, ipam_u128 size)
{
    return size ? (double)((long double)used * 100.0L / (long double)size) : 0.0;
}

static void percent_text(ipam_u128 used, ipam_u128 size, char *buf, size_t len)
{
    double p = percent(used, size);
    if (size == 0)
        snprintf(buf, len, "-");
    else if (used > 0 && p < 0.1)
        snprintf(buf, len, "<0.1%%");
    else if (used < size && p > 99.9)
        snprintf(buf, len, ">99.9%%");
    else
        snprintf(buf, len, "%.1f%%", p);
}

static void bar(ipam_u128 used, ipam_u128 size, char *buf)
{
    int n = size ? (int)(percent(used, size) * BAR_WIDTH / 100.0 + 0.5) : 0;
    if (n == 0 && used > 0)
        n = 1; /* anything held shows */
    if (n == BAR_WIDTH && used < size)
        n = BAR_WIDTH - 1; /* full only when full */
    buf[0] = '[';
    for (int i = 0; i < BAR_WIDTH; i++)
        buf[1 + i] = i < n ? '#' : '.';
    buf[BAR_WIDTH + 1] = ']';
    buf[BAR_WIDTH + 2] = '\0';
}

static bool parse_count(const Ipam__V1__FamilyStats *f, ipam_u128 *size, ipam_u128 *used)
{
    *size = *used = 0;
    if (f == NULL)
        return true;
    return ipam_u128_parse(f->total, size) == 0 && ipam_u128_parse(f->used, used) == 0;
}

static void print_json_row(const struct row *r)
{
    char size[IPAM_U128_STRLEN], used[IPAM_U128_STRLEN], fr[IPAM_U128_STRLEN];
    cJSON *j = cJSON_CreateObject();
    if (j == NULL)
        out_of_memory();
    cJSON_AddStringToObject(j, "pool", r->pool);
    cJSON_AddStringToObject(j, "family", r->family);
    cJSON_AddStringToObject(j, "size", ipam_u128_format(r->size, size));
    cJSON_AddStringToObject(j, "used", ipam_u128_format(r->used, used));
    cJSON_AddStringToObject(j, "free", ipam_u128_format(r->size - r->used, fr));
    cJSON_AddNumberToObject(j, "used_percent", percent(r->used, r->size));
    cJSON_AddNumberToObject(j, "leases", (double)r->leases);
    print_json(j);
}

int cli_print_stats(const ProtobufCMessage *resp, const struct opts *o)
{
    const Ipam__V1__ListPoolsResponse *lp = (const Ipam__V1__ListPoolsResponse *)resp;
    struct row *rows = xcalloc(lp->n_pools * 2 + 1, sizeof(*rows));
    size_t n = 0;
    for (size_t i = 0; i < lp->n_pools; i++) {
        const Ipam__V1__Pool *p = lp->pools[i];
        const Ipam__V1__FamilyStats *fam[2] = {p->ipv4, p->ipv6};
        static const char *const names[2] = {"ipv4", "ipv6"};
        size_t before = n;
        for (int f = 0; f < 2 && !p->dhcp; f++) {
            ipam_u128 size, used;
            if (!parse_count(fam[f], &size, &used)) {
                fprintf(stderr, "ipamctl: pool `%s' reports counts that are not numbers\n",
                        p->name);
                free(rows);
                return GRPC_STATUS_INTERNAL;
            }
            if (size == 0 && used == 0)
                continue;
            rows[n++] = (struct row){p->name, names[f], size, used, p->leases, false};
        }
        if (n == before) /* DHCP mode (every lease is 0.0.0.0), or no addresses */
            rows[n++] = (struct row){p->name, p->dhcp ? "dhcp" : "-", 0, 0, p->leases, p->dhcp};
    }
    if (o->output == OUT_JSON) {
        for (size_t i = 0; i < n; i++)
            print_json_row(&rows[i]);
        free(rows);
        return 0;
    }

    static const char *const head[] = {"POOL", "FAMILY", "SIZE", "USED", "FREE", "USE", ""};
    enum { NC = 7 };
    char(*cell)[NC][48] = xcalloc(n + 1, sizeof(*cell));
    size_t width[NC] = {0};
    for (size_t c = 0; c < NC; c++)
        snprintf(cell[0][c], sizeof(cell[0][c]), "%s", head[c]);
    for (size_t i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        char(*c)[48] = cell[i + 1];
        snprintf(c[0], 48, "%.47s", r->pool);
        snprintf(c[1], 48, "%s", r->family);
        if (r->size == 0) {
            snprintf(c[2], 48, "-");
            snprintf(c[3], 48, "%llu", r->leases);
            snprintf(c[4], 48, "-");
            snprintf(c[5], 48, "-");
            c[6][0] = '\0';
            continue;
        }
        human(r->size, c[2], 48);
        human(r->used, c[3], 48);
        human(r->size - r->used, c[4], 48);
        percent_text(r->used, r->size, c[5], 48);
        bar(r->used, r->size, c[6]);
    }
    for (size_t i = 0; i <= n; i++)
        for (size_t c = 0; c < NC; c++) {
            size_t w = strlen(cell[i][c]);
            width[c] = w > width[c] ? w : width[c];
        }
    for (size_t i = 0; i <= n; i++) {
        /* Names left-aligned, numbers right-aligned, the bar last. */
        printf("%-*s  %-*s  %*s  %*s  %*s  %*s", (int)width[0], cell[i][0], (int)width[1],
               cell[i][1], (int)width[2], cell[i][2], (int)width[3], cell[i][3], (int)width[4],
               cell[i][4], (int)width[5], cell[i][5]);
        printf(cell[i][6][0] ? "  %s\n" : "\n", cell[i][6]);
    }
    free(cell);
    free(rows);
    return 0;
}
