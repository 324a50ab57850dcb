/* Decimal text for 128-bit counts, which printf cannot format. */
#include "ipam/addr.h"

char *ipam_u128_format(ipam_u128 v, char *buf)
{
    char tmp[IPAM_U128_STRLEN];
    int n = 0, i = 0;

    do {
        tmp[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v != 0);
    while (n > 0)
        buf[i++] = tmp[--n];
    buf[i] = '\0';
    return buf;
}

int ipam_u128_parse(const char *s, ipam_u128 *out)
{
    const ipam_u128 max = ~(ipam_u128)0;
    ipam_u128 v = 0;

    if (s == NULL || *s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        unsigned d;

        if (*s < '0' || *s > '9')
            return -1;
        d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}
