/* Running ipamctl's subcommands: building the request from the options,
 * calling ipamd and printing the result (cli_run.c; the watch stream and its
 * signals in cli_watch.c). Each returns the exit status: 0, else the gRPC
 * status code (after "ipamctl: MESSAGE" on stderr), or what a command's own
 * print function returns. */
#ifndef IPAMCTL_CLI_RUN_H
#define IPAMCTL_CLI_RUN_H

#include "cli.h"

/* A new request of cmd's method, filled in by cmd->build; it and everything
 * it points to that argv does not hold belongs to a. */
ProtobufCMessage *cli_request_new(const command *cmd, const struct opts *o, arena *a);

/* One call of cmd's method; prints the response's result field, or hands
 * the response to cmd->print. */
int cli_run_unary(ipam_client *c, const command *cmd, const struct opts *o);

/* Follows every page of ListLeases: JSON objects are printed as pages
 * arrive, a table once at the end so that its columns line up. */
int cli_run_lease_list(ipam_client *c, const command *cmd, const struct opts *o);

/* Prints cmd's stream of WatchResponses until it ends or is interrupted
 * (see cli_watch_signals); being interrupted exits 0. */
int cli_run_watch(ipam_client *c, const command *cmd, const struct opts *o);

/* Makes SIGINT and SIGTERM stop a watch cleanly (a second one exits at
 * once). Call before ipam_client_open, so that gRPC's threads inherit the
 * signal mask. Returns 0, or -1 when the signal thread cannot start. */
int cli_watch_signals(void);

#endif
