/* Log lines: "2026-11-23T15:00:00Z info message". */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

enum log_level log_threshold = LOG_INFO;

static const char *const names[] = {"debug", "info", "warn", "error"};

void log_msg(enum log_level lv, const char *fmt, ...)
{
    if (lv < log_threshold)
        return;
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* One fprintf per line so concurrent writers never interleave a line. */
    fprintf(stderr, "%s %s %s\n", ts, names[lv], line);
}
