/* Logging: one line per event on stderr, with a level, as text or JSON.
 *
 * Text:  2026-11-23T15:00:00.123Z info message
 * JSON:  {"time":"2026-11-23T15:00:00.123Z","level":"info","msg":"message"}
 *
 * Each line is written with one call, so lines from several threads never
 * interleave. Messages longer than 2,000 bytes are cut. The level and format
 * are set once at start-up, before other threads log. */
#ifndef IPAM_LOG_H
#define IPAM_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_TEXT, LOG_JSON };

extern enum log_level log_threshold;
extern enum log_format log_format;

/* Parse "debug|info|warn|error" and "text|json"; 0, or -1 leaving *out. */
int log_parse_level(const char *s, enum log_level *out);
int log_parse_format(const char *s, enum log_format *out);

void log_msg(enum log_level lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline bool log_enabled(enum log_level lv) { return lv >= log_threshold; }

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
