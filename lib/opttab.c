/* Option tables: getopt_long's table and usage lines from one declaration. */
#include "ipam/opttab.h"

#include <string.h>

void ipam_opt_getopt(const struct ipam_opt *o, size_t n, struct option *lo)
{
    memset(lo, 0, (n + 1) * sizeof(*lo));
    for (size_t i = 0; i < n; i++) {
        lo[i].name = o[i].name;
        lo[i].has_arg = o[i].arg ? required_argument : no_argument;
        lo[i].val = IPAM_OPT_BASE + (int)i;
    }
}

void ipam_opt_usage(FILE *f, const struct ipam_opt *o, size_t n, int width)
{
    for (size_t i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", o[i].name, o[i].arg ? " " : "",
                 o[i].arg ? o[i].arg : "");
        fprintf(f, "  %-*s %s\n", width, left, o[i].help);
    }
}
