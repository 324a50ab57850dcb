/* Command-line options declared once, in a table; getopt_long's table and the
 * usage lines are derived from it (shared by ipamd and k8s-adapter).
 *
 * Option i of the table is reported by getopt_long as 256 + i. Nothing here
 * allocates or keeps its arguments. */
#ifndef IPAM_OPTTAB_H
#define IPAM_OPTTAB_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

struct ipam_opt {
    const char *name; /* long name, without "--" */
    const char *arg;  /* its argument's name, or NULL for a flag */
    const char *help;
};

#define IPAM_OPT_BASE 256

/* Fills lo, which has room for n + 1 entries (the last is the terminator). */
void ipam_opt_getopt(const struct ipam_opt *o, size_t n, struct option *lo);

/* Prints one "  --name ARG   help" line per option, the left column width wide. */
void ipam_opt_usage(FILE *f, const struct ipam_opt *o, size_t n, int width);

#endif
