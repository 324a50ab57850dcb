/* Replays fuzz inputs through a harness without libFuzzer, under any compiler.
 *
 *   fuzz_addr_replay DIR_OR_FILE...
 *
 * Runs LLVMFuzzerTestOneInput once per file (a directory's regular files in
 * name order, so a run is reproducible). A broken invariant aborts, which
 * fails the test; each input's name is printed first so the culprit is the
 * last line. Exits 1 when a directory holds no input: an empty corpus would
 * otherwise pass without testing anything. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = -1;

    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (!nb)
                goto out;
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "%s: read error\n", path);
        goto out;
    }
    printf("replaying %s (%zu bytes)\n", path, len);
    fflush(stdout);
    /* A copy of exactly len bytes, so a read past the input is caught by
     * AddressSanitizer as it would be under libFuzzer. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact)
        goto out;
    if (len)
        memcpy(exact, buf, len);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_dir(const char *dir, size_t *count)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, by_name);
    int rc = 0;

    if (n < 0) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;

        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (rc == 0 && names[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path) != 0)
                rc = -1;
            else
                (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    size_t total = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        size_t count = 0;

        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) != 0 : run_file(argv[i]) != 0)
            return 1;
        if (S_ISDIR(st.st_mode) && count == 0) {
            fprintf(stderr, "%s: no input to replay\n", argv[i]);
            return 1;
        }
        total += S_ISDIR(st.st_mode) ? count : 1;
    }
    printf("%zu passed, 0 failed\n", total);
    return 0;
}
