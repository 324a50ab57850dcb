/* An in-memory store backend for tests and fuzzing: committed objects in a
 * list, one store for the whole program. Closing and opening it again is a
 * restart that finds exactly what was committed; fake.fail_next makes the next
 * commit fail and change nothing. fake_reset empties it. Not thread-safe. */
#ifndef IPAM_TESTS_FAKE_STORE_H
#define IPAM_TESTS_FAKE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct fake_obj {
    struct fake_obj *next;
    enum store_kind kind;
    char *key;
    uint8_t *data;
    size_t len;
};

struct store {
    struct fake_obj *objs;
    uint64_t rev;
    bool open;
    bool fail_next; /* the next commit fails and changes nothing */
    unsigned commits, failures;
};

extern struct store fake;
extern const struct store_backend fake_backend;

/* Number of committed objects. */
size_t fake_count(void);
/* Frees every object and zeroes the store (it must be closed). */
void fake_reset(void);

#endif
