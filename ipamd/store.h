/* The store: where pools, leases and the revision counter are made durable.
 *
 * The core sees only this interface, so another backend (etcd, for several
 * replicas) can replace SQLite without touching it. Objects are opaque blobs
 * keyed by name (pools) or owner (leases); the core encodes them.
 *
 * Contract:
 * - open claims the data directory exclusively (a second process fails) and
 *   fails with a message rather than creating over unreadable data.
 * - load calls the callbacks once per stored object, then reports the
 *   revision. A callback's non-zero return aborts the load with its message.
 * - commit applies every op and the new revision atomically and durably:
 *   when it returns 0 all of it survives a crash; otherwise none of it is
 *   visible and err says why. Ops apply in order.
 * - Messages are written to err (errlen bytes, always terminated). */
#ifndef IPAMD_STORE_H
#define IPAMD_STORE_H

#include <stddef.h>
#include <stdint.h>

enum store_kind { STORE_POOL, STORE_LEASE };

struct store_op {
    enum store_kind kind;
    int del;             /* 1: delete key; 0: put key = data */
    char *key;           /* owned by the batch that holds the op */
    uint8_t *data;
    size_t len;
};

struct store_loader {
    void *ctx;
    int (*object)(void *ctx, enum store_kind kind, const char *key, const uint8_t *data,
                  size_t len, char *err, size_t errlen);
};

struct store;

struct store_backend {
    const char *name;
    struct store *(*open)(const char *dir, char *err, size_t errlen);
    int (*load)(struct store *s, const struct store_loader *l, uint64_t *revision, char *err,
                size_t errlen);
    int (*commit)(struct store *s, uint64_t revision, const struct store_op *ops, size_t n,
                  char *err, size_t errlen);
    void (*close)(struct store *s);
};

extern const struct store_backend store_sqlite;

#endif
