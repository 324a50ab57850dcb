/* failwrite: an LD_PRELOAD shim that makes storage calls on files under one
 * directory fail while a control file exists, so a test can switch a store
 * fault on and off at runtime without restarting the process under test.
 *
 * Environment (read once, at the first intercepted call):
 *   FAILWRITE_DIR  the directory whose files fail (compared after realpath)
 *   FAILWRITE_CTL  the control file; while it exists, the fault is on
 *
 * The control file holds an errno name and, optionally, the classes of calls
 * that fail, e.g. "ENOSPC", "EIO sync", "EACCES open write". Classes:
 *   write     write, pwrite, pwrite64, writev, pwritev, pwritev64
 *   sync      fsync, fdatasync
 *   truncate  ftruncate, ftruncate64, fallocate, fallocate64, posix_fallocate
 *   open      open/open64/openat/openat64 for writing or creating
 * Without classes: write, sync and truncate (not open). Errno names: ENOSPC,
 * EIO, EROFS, EACCES, EDQUOT, EPERM. An unreadable or empty control file
 * means "EIO" on the default classes.
 *
 * Every injected failure is counted in the file FAILWRITE_CTL.hits (one byte
 * appended per failure, written with the real write), so a test can check
 * that the fault was actually met. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
    CLASS_WRITE = 1,
    CLASS_SYNC = 2,
    CLASS_TRUNCATE = 4,
    CLASS_OPEN = 8,
    CLASS_DEFAULT = CLASS_WRITE | CLASS_SYNC | CLASS_TRUNCATE,
};

static struct {
    pthread_once_t once;
    char dir[PATH_MAX];
    size_t dirlen;
    char ctl[PATH_MAX];
    char hits[PATH_MAX + 8];
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*pwrite)(int, const void *, size_t, off_t);
    ssize_t (*pwrite64)(int, const void *, size_t, off64_t);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*pwritev)(int, const struct iovec *, int, off_t);
    ssize_t (*pwritev64)(int, const struct iovec *, int, off64_t);
    int (*fsync)(int);
    int (*fdatasync)(int);
    int (*ftruncate)(int, off_t);
    int (*ftruncate64)(int, off64_t);
    int (*fallocate)(int, int, off_t, off_t);
    int (*fallocate64)(int, int, off64_t, off64_t);
    int (*posix_fallocate)(int, off_t, off_t);
    int (*open)(const char *, int, ...);
    int (*open64)(const char *, int, ...);
    int (*openat)(int, const char *, int, ...);
    int (*openat64)(int, const char *, int, ...);
} g = {.once = PTHREAD_ONCE_INIT};

static void init(void)
{
#define LOOKUP(name) g.name = (__typeof__(g.name))dlsym(RTLD_NEXT, #name)
    LOOKUP(write);
    LOOKUP(pwrite);
    LOOKUP(pwrite64);
    LOOKUP(writev);
    LOOKUP(pwritev);
    LOOKUP(pwritev64);
    LOOKUP(fsync);
    LOOKUP(fdatasync);
    LOOKUP(ftruncate);
    LOOKUP(ftruncate64);
    LOOKUP(fallocate);
    LOOKUP(fallocate64);
    LOOKUP(posix_fallocate);
    LOOKUP(open);
    LOOKUP(open64);
    LOOKUP(openat);
    LOOKUP(openat64);
#undef LOOKUP
    const char *dir = getenv("FAILWRITE_DIR");
    const char *ctl = getenv("FAILWRITE_CTL");
    if (!dir || !ctl || !*dir || !*ctl)
        return;
    /* The directory may not exist yet: keep it as given, without a trailing slash. */
    if (!realpath(dir, g.dir))
        snprintf(g.dir, sizeof(g.dir), "%s", dir);
    g.dirlen = strlen(g.dir);
    while (g.dirlen > 1 && g.dir[g.dirlen - 1] == '/')
        g.dir[--g.dirlen] = '\0';
    snprintf(g.ctl, sizeof(g.ctl), "%s", ctl);
    snprintf(g.hits, sizeof(g.hits), "%s.hits", ctl);
}

static int errno_of(const char *name)
{
    static const struct {
        const char *name;
        int value;
    } names[] = {{"ENOSPC", ENOSPC}, {"EIO", EIO},       {"EROFS", EROFS},
                 {"EACCES", EACCES}, {"EDQUOT", EDQUOT}, {"EPERM", EPERM}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(names[i].name, name) == 0)
            return names[i].value;
    return EIO;
}

/* The errno to fail with when the fault is on for this class, else 0. The
 * control file is read with raw syscalls of ours that are not intercepted
 * (open with O_RDONLY is never failed). */
static int fault_errno(int class)
{
    pthread_once(&g.once, init);
    if (!g.dirlen || !g.open)
        return 0;
    int fd = g.open(g.ctl, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    int err = EIO, classes = 0;
    char *save = NULL;
    bool first = true;
    for (char *w = strtok_r(buf, " \t\r\n,", &save); w; w = strtok_r(NULL, " \t\r\n,", &save)) {
        if (first && w[0] == 'E') {
            err = errno_of(w);
        } else if (strcmp(w, "write") == 0) {
            classes |= CLASS_WRITE;
        } else if (strcmp(w, "sync") == 0) {
            classes |= CLASS_SYNC;
        } else if (strcmp(w, "truncate") == 0) {
            classes |= CLASS_TRUNCATE;
        } else if (strcmp(w, "open") == 0) {
            classes |= CLASS_OPEN;
        }
        first = false;
    }
    if (!classes)
        classes = CLASS_DEFAULT;
    return (classes & class) ? err : 0;
}

static bool under_dir(const char *path)
{
    return strncmp(path, g.dir, g.dirlen) == 0 &&
           (path[g.dirlen] == '/' || path[g.dirlen] == '\0');
}

static bool fd_under_dir(int fd)
{
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0)
        return false;
    path[n] = '\0';
    return under_dir(path);
}

static void count_hit(void)
{
    if (!g.open || !g.write)
        return;
    int fd = g.open(g.hits, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        (void)g.write(fd, "x", 1);
        close(fd);
    }
}

/* Non-zero (with errno set) when a call of this class on fd must fail. */
static int fail_fd(int class, int fd)
{
    int saved = errno;
    int err = fault_errno(class);
    if (err && fd_under_dir(fd)) {
        count_hit();
        errno = err;
        return 1;
    }
    errno = saved;
    return 0;
}

static int fail_path(int dirfd, const char *path, int flags)
{
    if (!(flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)))
        return 0;
    int saved = errno;
    int err = fault_errno(CLASS_OPEN);
    if (!err) {
        errno = saved;
        return 0;
    }
    char full[2 * PATH_MAX + 2], resolved[PATH_MAX];
    if (path[0] == '/') {
        snprintf(full, sizeof(full), "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof(base))) {
                errno = saved;
                return 0;
            }
        } else {
            char link[64];
            snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof(base) - 1);
            if (n <= 0) {
                errno = saved;
                return 0;
            }
            base[n] = '\0';
        }
        snprintf(full, sizeof(full), "%s/%s", base, path);
    }
    /* The file itself may not exist yet: resolve its directory. */
    char *slash = strrchr(full, '/');
    bool hit;
    if (realpath(full, resolved)) {
        hit = under_dir(resolved);
    } else if (slash && slash != full) {
        *slash = '\0';
        hit = realpath(full, resolved) && under_dir(resolved);
    } else {
        hit = false;
    }
    if (hit) {
        count_hit();
        errno = err;
        return 1;
    }
    errno = saved;
    return 0;
}

#define RESOLVE() pthread_once(&g.once, init)

ssize_t write(int fd, const void *buf, size_t n)
{
    RESOLVE();
    if (fail_fd(CLASS_WRITE, fd))
        return -1;
    return g.write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    RESOLVE();
    if (fail_fd(CLASS_WRITE, fd))
        return -1;
    return g.pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    RESOLVE();
    if (fail_fd(CLASS_WRITE, fd))
        return -1;
    return g.pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    RESOLVE();
    if (fail_fd(CLASS_WRITE, fd))
        return -1;
    return g.writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    RESOLVE();
    if (fail_fd(CLASS_WRITE, fd))
        return -1;
    return g.pwritev(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
    RESOLVE();
    if (fail_fd(CLASS_WRITE, fd))
        return -1;
    return g.pwritev64(fd, iov, cnt, off);
}

int fsync(int fd)
{
    RESOLVE();
    if (fail_fd(CLASS_SYNC, fd))
        return -1;
    return g.fsync(fd);
}

int fdatasync(int fd)
{
    RESOLVE();
    if (fail_fd(CLASS_SYNC, fd))
        return -1;
    return g.fdatasync(fd);
}

int ftruncate(int fd, off_t len)
{
    RESOLVE();
    if (fail_fd(CLASS_TRUNCATE, fd))
        return -1;
    return g.ftruncate(fd, len);
}

int ftruncate64(int fd, off64_t len)
{
    RESOLVE();
    if (fail_fd(CLASS_TRUNCATE, fd))
        return -1;
    return g.ftruncate64(fd, len);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    RESOLVE();
    if (fail_fd(CLASS_TRUNCATE, fd))
        return -1;
    return g.fallocate(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
    RESOLVE();
    if (fail_fd(CLASS_TRUNCATE, fd))
        return -1;
    return g.fallocate64(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    RESOLVE();
    int saved = errno;
    if (fail_fd(CLASS_TRUNCATE, fd)) {
        int err = errno;
        errno = saved;
        return err; /* posix_fallocate returns the error number */
    }
    return g.posix_fallocate(fd, off, len);
}

/* The mode argument exists only with O_CREAT or O_TMPFILE. */
#define OPEN_MODE(flags, mode)                                                                   \
    do {                                                                                         \
        if (((flags) & O_CREAT) || ((flags) & O_TMPFILE) == O_TMPFILE) {                      \
            va_list ap;                                                                          \
            va_start(ap, flags);                                                                 \
            mode = (mode_t)va_arg(ap, int);                                                      \
            va_end(ap);                                                                          \
        }                                                                                        \
    } while (0)

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    RESOLVE();
    if (fail_path(AT_FDCWD, path, flags))
        return -1;
    return g.open(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    RESOLVE();
    if (fail_path(AT_FDCWD, path, flags))
        return -1;
    return g.open64(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    RESOLVE();
    if (fail_path(dirfd, path, flags))
        return -1;
    return g.openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    RESOLVE();
    if (fail_path(dirfd, path, flags))
        return -1;
    return g.openat64(dirfd, path, flags, mode);
}
