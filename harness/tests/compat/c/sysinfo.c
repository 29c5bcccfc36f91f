/* sysconf(_SC_NPROCESSORS_ONLN) (the runner compares it with native), page size, getrusage. */
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

int main(void) {
    printf("online cpus %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf("page size %ld\n", sysconf(_SC_PAGESIZE));
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < 20000000; i++) x += i;
    struct rusage ru;
    int r = getrusage(RUSAGE_SELF, &ru);
    printf("getrusage %d, user time > 0: %s, maxrss > 0: %s\n", r,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec > 0 ? "ok" : "NO", ru.ru_maxrss > 0 ? "ok" : "NO");
    return r;
}
