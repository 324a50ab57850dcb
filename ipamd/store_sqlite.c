/* The embedded store: SQLite in WAL mode with synchronous=FULL. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct store {
    sqlite3 *db;
    int lock_fd;
    char *path;
    sqlite3_stmt *put[2], *del[2], *setrev, *begin, *commit, *rollback, *overwrite;
};

static const char *const table_of[2] = {"pools", "leases"};

static void set_err(struct store *s, char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s: %s (%s)", s->path, what, s->db ? sqlite3_errmsg(s->db) : "no db");
}

static int exec(struct store *s, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", s->path, msg ? msg : "error");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int prepare(struct store *s, const char *sql, sqlite3_stmt **st, char *err, size_t errlen)
{
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
        set_err(s, err, errlen, "cannot prepare statement");
        return -1;
    }
    return 0;
}

static void sq_close(struct store *s)
{
    if (!s)
        return;
    sqlite3_stmt *all[] = {s->put[0], s->put[1], s->del[0],   s->del[1],    s->setrev,
                           s->begin,  s->commit, s->rollback, s->overwrite};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(s->db);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s->path);
    free(s);
}

/* Takes an exclusive lock on DIR/LOCK for the life of the process, so two
 * daemons never share one database (SQLite's own locking would let both run
 * and hand out the same addresses from two memories). */
static int lock_dir(struct store *s, const char *dir, char *err, size_t errlen)
{
    char lp[4096];
    snprintf(lp, sizeof(lp), "%s/LOCK", dir);
    s->lock_fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        snprintf(err, errlen, "cannot open lock file %s: %s", lp, strerror(errno));
        return -1;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            snprintf(err, errlen, "data directory %s is in use by another ipamd", dir);
        else
            snprintf(err, errlen, "cannot lock %s: %s", lp, strerror(errno));
        return -1;
    }
    return 0;
}

static struct store *sq_open(const char *dir, char *err, size_t errlen)
{
    struct store *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->lock_fd = -1;
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    if (lock_dir(s, dir, err, errlen) != 0)
        goto fail;
    size_t n = strlen(dir) + sizeof("/ipamd.db");
    s->path = malloc(n);
    if (!s->path) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(s->path, n, "%s/ipamd.db", dir);
    if (sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        set_err(s, err, errlen, "cannot open database");
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    /* A corrupt or foreign file fails here ("file is not a database"), before
     * anything could be written over it. */
    if (exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;",
             err, errlen) != 0)
        goto fail;
    if (exec(s,
             "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
             "CREATE TABLE IF NOT EXISTS pools(key TEXT PRIMARY KEY, data BLOB NOT NULL);"
             "CREATE TABLE IF NOT EXISTS leases(key TEXT PRIMARY KEY, data BLOB NOT NULL);"
             "INSERT OR IGNORE INTO meta(key, value) VALUES('schema', 1), ('revision', 0);",
             err, errlen) != 0)
        goto fail;
    for (int k = 0; k < 2; k++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO %s(key, data) VALUES(?1, ?2)",
                 table_of[k]);
        if (prepare(s, sql, &s->put[k], err, errlen) != 0)
            goto fail;
        snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE key = ?1", table_of[k]);
        if (prepare(s, sql, &s->del[k], err, errlen) != 0)
            goto fail;
    }
    if (prepare(s, "UPDATE meta SET value = ?1 WHERE key = 'revision'", &s->setrev, err,
                errlen) != 0 ||
        prepare(s, "BEGIN IMMEDIATE", &s->begin, err, errlen) != 0 ||
        prepare(s, "COMMIT", &s->commit, err, errlen) != 0 ||
        prepare(s, "ROLLBACK", &s->rollback, err, errlen) != 0 ||
        prepare(s,
                "INSERT INTO meta(key, value) VALUES('aborted', 1) "
                "ON CONFLICT(key) DO UPDATE SET value = value + 1",
                &s->overwrite, err, errlen) != 0)
        goto fail;
    return s;
fail:
    sq_close(s);
    return NULL;
}

static int sq_load(struct store *s, const struct store_loader *l, uint64_t *revision, char *err,
                   size_t errlen)
{
    int rc = -1;
    sqlite3_stmt *st = NULL;
    if (prepare(s, "SELECT value FROM meta WHERE key = 'schema'", &st, err, errlen) != 0)
        goto out;
    if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_int64(st, 0) != 1) {
        snprintf(err, errlen, "%s: unknown schema version", s->path);
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    /* Pools first: leases refer to them. */
    for (int k = 0; k < 2; k++) {
        char sql[64];
        snprintf(sql, sizeof(sql), "SELECT key, data FROM %s", table_of[k]);
        if (prepare(s, sql, &st, err, errlen) != 0)
            goto out;
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            const char *key = (const char *)sqlite3_column_text(st, 0);
            const uint8_t *data = sqlite3_column_blob(st, 1);
            size_t len = (size_t)sqlite3_column_bytes(st, 1);
            if (!key) {
                snprintf(err, errlen, "%s: %s row without a key", s->path, table_of[k]);
                goto out;
            }
            if (l->object(l->ctx, (enum store_kind)k, key, data ? data : (const uint8_t *)"",
                          len, err, errlen) != 0)
                goto out;
        }
        if (r != SQLITE_DONE) {
            set_err(s, err, errlen, "cannot read");
            goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    if (prepare(s, "SELECT value FROM meta WHERE key = 'revision'", &st, err, errlen) != 0)
        goto out;
    if (sqlite3_step(st) != SQLITE_ROW) {
        snprintf(err, errlen, "%s: revision missing", s->path);
        goto out;
    }
    *revision = (uint64_t)sqlite3_column_int64(st, 0);
    rc = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

static int step_reset(sqlite3_stmt *st)
{
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r == SQLITE_DONE ? 0 : r;
}

static int sq_commit(struct store *s, uint64_t revision, const struct store_op *ops, size_t n,
                     char *err, size_t errlen)
{
    if (step_reset(s->begin) != 0) {
        set_err(s, err, errlen, "cannot begin transaction");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const struct store_op *o = &ops[i];
        sqlite3_stmt *st = o->del ? s->del[o->kind] : s->put[o->kind];
        sqlite3_bind_text(st, 1, o->key, -1, SQLITE_STATIC);
        if (!o->del)
            sqlite3_bind_blob(st, 2, o->len ? o->data : (const void *)"", (int)o->len,
                              SQLITE_STATIC);
        if (step_reset(st) != 0)
            goto fail;
    }
    sqlite3_bind_int64(s->setrev, 1, (sqlite3_int64)revision);
    if (step_reset(s->setrev) != 0)
        goto fail;
    if (step_reset(s->commit) != 0)
        goto fail;
    return 0;
fail:
    set_err(s, err, errlen, "cannot commit");
    step_reset(s->rollback);
    /* A commit whose fsync failed has still written its frames, commit
     * marker included, to the WAL: recovery at the next open would replay
     * the refused changes. A small transaction now is written over them
     * (and breaks the checksum chain of any that follow), so they are never
     * replayed. If even this cannot be written, there is nothing better to
     * do here; the batch stays refused either way. */
    if (step_reset(s->begin) == 0) {
        if (step_reset(s->overwrite) != 0 || step_reset(s->commit) != 0)
            step_reset(s->rollback);
    }
    return -1;
}

const struct store_backend store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .load = sq_load,
    .commit = sq_commit,
    .close = sq_close,
};
