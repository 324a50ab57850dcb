/* ipamctl stats: pool utilisation per family from a ListPools response. */
#ifndef IPAMCTL_CLI_STATS_H
#define IPAMCTL_CLI_STATS_H

#include "cli.h"

/* Prints the table (or JSON lines for -o json); returns the exit status. */
int cli_print_stats(const ProtobufCMessage *resp, const struct opts *o);

#endif
