/* Log lines as text or JSON; see ipam/log.h. */
#include "ipam/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum log_level log_threshold = LOG_INFO;
enum log_format log_format = LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_parse_level(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    return -1;
}

int log_parse_format(const char *s, enum log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_JSON;
    else
        return -1;
    return 0;
}

/* Appends s to buf[*n..cap) with control characters escaped (and, for the
 * inside of a JSON string, quotes and backslashes), so one event is always
 * one line whatever a message quotes; stops short of the end rather than
 * cutting an escape in two. */
static void escape(char *buf, size_t *n, size_t cap, const char *s, bool json)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[7];
        size_t len = 0;
        if (json && (c == '"' || c == '\\')) {
            esc[len++] = '\\';
            esc[len++] = (char)c;
        } else if (c == '\n') {
            esc[len++] = '\\';
            esc[len++] = 'n';
        } else if (c == '\t') {
            esc[len++] = '\\';
            esc[len++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            len = 6;
        } else {
            esc[len++] = (char)c;
        }
        if (*n + len >= cap)
            return;
        memcpy(buf + *n, esc, len);
        *n += len;
    }
}

void log_msg(enum log_level lv, const char *fmt, ...)
{
    if (lv < log_threshold)
        return;
    struct timespec now;
    struct tm tm;
    char ts[40], msg[2048], line[4300];
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", now.tv_nsec / 1000000);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (log_format == LOG_JSON) {
        /* Invalid UTF-8 passes through as it came; JSON readers that insist
         * replace it. Everything else is escaped, so a line stays one line. */
        n = (size_t)snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                             level_names[lv]);
        escape(line, &n, sizeof(line) - 3, msg, true);
        memcpy(line + n, "\"}", 3);
    } else {
        n = (size_t)snprintf(line, sizeof(line), "%s %s ", ts, level_names[lv]);
        escape(line, &n, sizeof(line) - 1, msg, false);
        line[n] = '\0';
    }
    fprintf(stderr, "%s\n", line);
}
