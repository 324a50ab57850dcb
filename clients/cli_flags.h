/* ipamctl's command line: the table-driven flag parser and the usage text,
 * both derived from the flag table and the subcommand table.
 *
 * cli_parse() fills o from argv (o->server and o->output hold their defaults
 * on entry) and returns the subcommand argv names, one of cmds. It does not
 * return on a usage error (the message and the usage go to stderr, exit
 * status 2) nor on --help (the full usage goes to stdout, exit status 0).
 * TLS flags with a Unix socket server, or --tls-cert without --tls-key, are
 * usage errors.
 * Free what it stored in o with opts_free(). */
#ifndef IPAMCTL_CLI_FLAGS_H
#define IPAMCTL_CLI_FLAGS_H

#include "cli.h"

const command *cli_parse(int argc, char **argv, const command *cmds, size_t ncmds, struct opts *o);
void opts_free(struct opts *o);

/* Whether target is a Unix socket ("unix:", "unix-abstract:"), never TLS. */
bool cli_unix_target(const char *target);

/* Fills the TLS options no flag gave from $IPAMCTL_TLS_CA, _CERT, _KEY and
 * _SERVER_NAME, for a host:port server only (so that an environment set for
 * a remote ipamd does not break a local socket). */
void cli_tls_from_env(struct opts *o);

#endif
