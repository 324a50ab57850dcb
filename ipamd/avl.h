/* An intrusive AVL tree with parent pointers and an augmentation hook.
 *
 * Nodes are embedded in the caller's structs (container_of to get back); the
 * tree never allocates. Ordering is the caller's: insert takes a node
 * comparator, lookups a key comparator. When `update' is set it is called on
 * every node whose subtree changed, children first, so callers can keep
 * per-subtree aggregates (sums, flags) that their own descents use. A caller
 * that changes a node's aggregated fields in place calls avl_touch. */
#ifndef IPAMD_AVL_H
#define IPAMD_AVL_H

#include <stddef.h>

struct avl_node {
    struct avl_node *l, *r, *p;
    int h;
    int aux; /* the embedding struct's, never touched here (it fills padding) */
};

struct avl {
    struct avl_node *root;
    void (*update)(struct avl_node *n);
    size_t count;
};

#define avl_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef int (*avl_cmp_fn)(const struct avl_node *a, const struct avl_node *b);
/* Returns <0, 0, >0 as key sorts before, at, after the node. */
typedef int (*avl_key_fn)(const void *key, const struct avl_node *n);

/* Inserts n; equal nodes go after existing ones. */
void avl_insert(struct avl *t, struct avl_node *n, avl_cmp_fn cmp);
void avl_remove(struct avl *t, struct avl_node *n);
/* Recomputes aggregates of n and its ancestors after an in-place change. */
void avl_touch(struct avl *t, struct avl_node *n);

struct avl_node *avl_first(const struct avl *t);
struct avl_node *avl_last(const struct avl *t);
struct avl_node *avl_next(const struct avl_node *n);
struct avl_node *avl_prev(const struct avl_node *n);
/* First node >= key, last node <= key, the node == key; NULL if none. */
struct avl_node *avl_find_ge(const struct avl *t, const void *key, avl_key_fn cmp);
struct avl_node *avl_find_le(const struct avl *t, const void *key, avl_key_fn cmp);
struct avl_node *avl_find(const struct avl *t, const void *key, avl_key_fn cmp);

#endif
