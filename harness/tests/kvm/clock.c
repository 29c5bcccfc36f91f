/* The clock in the micro-VM, for harness/tests/kvm.rs: the vDSO the auxiliary vector names
 * answers clock_gettime, gettimeofday and time without a system call, the raw clock_gettime
 * syscall is answered in the guest too (EFAULT for a bad pointer, as natively), and both agree
 * with a clock the host answers (CLOCK_TAI, which the clock page does not keep: it leaves the
 * guest) to within a millisecond, also after a sleep. Prints what it checked; exits 1 on a
 * disagreement. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long ns_of(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }
static long long vdso(clockid_t c) { struct timespec t; clock_gettime(c, &t); return ns_of(t); }
static long long raw(clockid_t c) {
    struct timespec t;
    if (syscall(SYS_clock_gettime, c, &t)) { perror("clock_gettime"); exit(1); }
    return ns_of(t);
}

static int off(const char *what, long long a, long long b) {
    long long d = a > b ? a - b : b - a;
    printf("%s: %s\n", what, d < 1000000 ? "agree" : "DIFFER");
    if (d >= 1000000) fprintf(stderr, "%s differ by %lld ns\n", what, d);
    return d >= 1000000;
}

int main(void) {
    int bad = 0;
    printf("vdso: %s\n", getauxval(AT_SYSINFO_EHDR) ? "offered" : "none");
    for (int round = 0; round < 2; round++) {
        long long host_tai = raw(CLOCK_TAI), tai_real = raw(CLOCK_REALTIME);
        (void)tai_real;
        bad |= off("vdso realtime vs host tai", vdso(CLOCK_REALTIME), host_tai);
        bad |= off("raw realtime vs host tai", raw(CLOCK_REALTIME), host_tai);
        bad |= off("vdso monotonic vs raw monotonic", vdso(CLOCK_MONOTONIC), raw(CLOCK_MONOTONIC));
        struct timeval tv;
        gettimeofday(&tv, 0);
        bad |= off("gettimeofday vs host tai", tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL, host_tai);
        time_t t = time(0);
        printf("time vs gettimeofday: %s\n", t - tv.tv_sec <= 1 ? "agree" : "DIFFER");
        if (round == 0) usleep(300000);
    }
    long r = syscall(SYS_clock_gettime, CLOCK_MONOTONIC, (void *)8);
    printf("raw clock_gettime to a bad pointer: %ld\n", r);
    return bad;
}
