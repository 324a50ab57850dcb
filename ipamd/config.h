/* The pools file (--config): pools declared in INI sections, applied at start.
 *
 *   # comment
 *   [pool lan]
 *   blocks = 192.0.2.0/24, 198.51.100.10-198.51.100.20
 *   search-order = desc
 *   skip-end-ips = true
 *
 * config_load returns 0 with a malloc'd array of pools (each with the line of
 * its section in lines[i]); free with config_free. On error returns -1 with
 * "FILE:LINE: message" in err; nothing is allocated then. The pools' contents
 * (names, blocks) are checked when they are applied, like any ApplyPool. */
#ifndef IPAMD_CONFIG_H
#define IPAMD_CONFIG_H

#include <stddef.h>

#include "ipam/v1/ipam.pb-c.h"

struct config {
    Ipam__V1__Pool **pools;
    int *lines;
    size_t n;
};

int config_load(const char *path, struct config *out, char *err, size_t errlen);
void config_free(struct config *c);

#endif
