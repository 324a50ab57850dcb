/* check.h: a tiny assertion helper for the unit test programs.
 *
 * Include it from exactly one .c file per test program (it holds static
 * counters). Checks never abort, so one run reports every failing case:
 *
 *   CHECK(cond)                  passes when cond is true;
 *   CHECK_MSG(cond, fmt, ...)    same, and a failure also prints the printf-style
 *                                context (e.g. which table row failed);
 *   CHECK_EQ_STR(got, want)      passes when both C strings are equal (NULL allowed);
 *   CHECK_EQ_INT(got, want)      passes when both integers are equal (as long long).
 *
 * Each evaluates to true when it passed, so `if (!CHECK(p != NULL)) continue;`
 * guards what follows. A failure prints "file:line: FAIL ..." on stdout. End
 * main with `return check_summary();`: it prints "N passed, M failed" alone on
 * the last line and returns 0 only when nothing failed (and at least one check
 * ran), which is what ctest looks at. */
#ifndef IPAM_TESTS_CHECK_H
#define IPAM_TESTS_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int check_passed_, check_failed_;

__attribute__((format(printf, 4, 5))) static inline bool
check_record_(bool ok, const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    if (ok) {
        check_passed_++;
        return true;
    }
    check_failed_++;
    printf("%s:%d: FAIL ", file, line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return false;
}

#define CHECK(cond) check_record_(!!(cond), __FILE__, __LINE__, "%s", #cond)
#define CHECK_MSG(cond, ...) check_record_(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

static inline bool check_eq_str_(const char *got, const char *want, const char *file, int line,
                                 const char *expr)
{
    bool ok = (got == NULL || want == NULL) ? got == want : strcmp(got, want) == 0;

    return check_record_(ok, file, line, "%s: got \"%s\", want \"%s\"", expr, got ? got : "(null)",
                         want ? want : "(null)");
}

#define CHECK_EQ_STR(got, want) check_eq_str_((got), (want), __FILE__, __LINE__, #got)

static inline bool check_eq_int_(long long got, long long want, const char *file, int line,
                                 const char *expr)
{
    return check_record_(got == want, file, line, "%s: got %lld, want %lld", expr, got, want);
}

#define CHECK_EQ_INT(got, want)                                                                    \
    check_eq_int_((long long)(got), (long long)(want), __FILE__, __LINE__, #got)

static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    fflush(stdout);
    return check_failed_ > 0 || check_passed_ == 0;
}

#endif
