/* Fuzz harness for the pools file parser (ipamd/config.c).
 *
 * The input is the file. On success every pool must be a valid ipam.v1.Pool
 * message (packs, unpacks to the same fields), names unique, lines
 * increasing, block entries non-empty and trimmed; on failure the message
 * must name the file and nothing may be left allocated or written. */
#include "fuzz.h"

#include <stdbool.h>

#include "config.h"

#define FUZZ_MAX_INPUT 16384

static bool is_list_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void check_pool(const Ipam__V1__Pool *p)
{
    FUZZ_ASSERT(protobuf_c_message_check(&p->base), "pool `%s' is not a valid message", p->name);
    FUZZ_ASSERT(p->search_order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_ASC ||
                    p->search_order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC,
                "search order %d", (int)p->search_order);
    FUZZ_ASSERT(p->skip_end_ips <= 1 && p->avoid_buggy_ips <= 1 && p->allow_share <= 1,
                "a boolean that is neither 0 nor 1");
    for (size_t i = 0; i < p->n_blocks; i++) {
        size_t len = strlen(p->blocks[i]);
        FUZZ_ASSERT(len > 0, "pool `%s' block %zu is empty", p->name, i);
        FUZZ_ASSERT(!is_list_space(p->blocks[i][0]) && !is_list_space(p->blocks[i][len - 1]),
                    "block `%s' is not trimmed", p->blocks[i]);
        FUZZ_ASSERT(!strchr(p->blocks[i], ','), "block `%s' holds a comma", p->blocks[i]);
    }

    /* The message round-trips, as ipamd stores and sends it. */
    size_t len = protobuf_c_message_get_packed_size(&p->base);
    uint8_t *buf = malloc(len ? len : 1);
    FUZZ_ASSERT(buf != NULL, "out of memory");
    FUZZ_ASSERT(protobuf_c_message_pack(&p->base, buf) == len, "packed size");
    Ipam__V1__Pool *q = ipam__v1__pool__unpack(NULL, len, buf);
    FUZZ_ASSERT(q != NULL, "pool `%s' does not unpack", p->name);
    FUZZ_ASSERT(strcmp(q->name, p->name) == 0 && strcmp(q->space, p->space) == 0 &&
                    q->n_blocks == p->n_blocks && q->search_order == p->search_order &&
                    q->skip_end_ips == p->skip_end_ips &&
                    q->avoid_buggy_ips == p->avoid_buggy_ips && q->allow_share == p->allow_share,
                "pool `%s' changes when packed", p->name);
    for (size_t i = 0; i < p->n_blocks; i++)
        FUZZ_ASSERT(strcmp(q->blocks[i], p->blocks[i]) == 0, "block %zu changes", i);
    ipam__v1__pool__free_unpacked(q, NULL);
    free(buf);

    /* What ipamd does next with the blocks must not misbehave either. */
    ipam_set s;
    char err[256];
    if (ipam_set_from_blocks((const char *const *)p->blocks, p->n_blocks, p->skip_end_ips, &s, err,
                             sizeof err) == 0) {
        fuzz_check_set(&s);
        ipam_set_free(&s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct config untouched = {(Ipam__V1__Pool **)1, (int *)2, 3};
    struct config c = untouched;
    char err[512];
    const char *path;
    size_t errlen;

    if (size > FUZZ_MAX_INPUT)
        return 0;
    path = fuzz_file(data, size);
    /* A short error buffer now and then: messages must be cut, not overflow. */
    errlen = size % 7 == 0 ? 1 + size % 31 : sizeof err;
    memset(err, 'x', sizeof err);
    if (config_load(path, &c, err, errlen) != 0) {
        FUZZ_ASSERT(memchr(err, '\0', errlen) != NULL, "error message not terminated");
        FUZZ_ASSERT(errlen < sizeof err || strncmp(err, path, strlen(path)) == 0,
                    "error `%s' does not name the file", err);
        FUZZ_ASSERT(memcmp(&c, &untouched, sizeof c) == 0, "a failed load wrote its output");
        return 0;
    }
    FUZZ_ASSERT(c.n == 0 || (c.pools != NULL && c.lines != NULL), "%zu pools, no arrays", c.n);
    for (size_t i = 0; i < c.n; i++) {
        FUZZ_ASSERT(c.pools[i] != NULL && c.pools[i]->name != NULL, "pool %zu", i);
        FUZZ_ASSERT(c.lines[i] >= 1 && (i == 0 || c.lines[i] > c.lines[i - 1]),
                    "pool %zu at line %d", i, c.lines[i]);
        for (size_t j = 0; j < i; j++)
            FUZZ_ASSERT(strcmp(c.pools[i]->name, c.pools[j]->name) != 0, "pool `%s' declared twice",
                        c.pools[i]->name);
        check_pool(c.pools[i]);
    }
    config_free(&c);
    FUZZ_ASSERT(c.n == 0 && c.pools == NULL && c.lines == NULL, "config_free leaves pools");
    return 0;
}
