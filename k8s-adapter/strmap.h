/* A string-keyed hash map (open addressing). Keys are copied; values are the
 * caller's. Iteration order is unspecified; deleting during iteration is not
 * allowed (collect keys first). Out of memory aborts. */
#ifndef K8S_STRMAP_H
#define K8S_STRMAP_H

#include <stddef.h>

struct strmap_slot {
    char *key; /* NULL: empty; TOMBSTONE: deleted */
    void *value;
};

struct strmap {
    struct strmap_slot *slots;
    size_t cap, count, used; /* used counts tombstones too */
};

void *strmap_get(const struct strmap *m, const char *key);
/* Sets key to value; returns the previous value or NULL. */
void *strmap_put(struct strmap *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *strmap_del(struct strmap *m, const char *key);
void strmap_free(struct strmap *m);

/* for (size_t i = 0; strmap_next(m, &i, &key, &value);) ... */
int strmap_next(const struct strmap *m, size_t *i, const char **key, void **value);

#endif
