/* CLOCK_MONOTONIC increases, CLOCK_REALTIME is after 2020, nanosleep(0.2 s) really sleeps. */
#include <stdio.h>
#include <time.h>

static double now(clockid_t c) {
    struct timespec t;
    if (clock_gettime(c, &t) != 0) return -1;
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void) {
    double m0 = now(CLOCK_MONOTONIC), last = m0;
    int increasing = m0 >= 0;
    for (int i = 0; i < 1000; i++) {
        double m = now(CLOCK_MONOTONIC);
        if (m < last) increasing = 0;
        last = m;
    }
    printf("monotonic never goes back: %s\n", increasing ? "ok" : "NO");
    printf("realtime after 2020: %s\n", now(CLOCK_REALTIME) > 1577836800.0 ? "ok" : "NO");
    time_t t = time(NULL);
    printf("time() after 2020: %s\n", t > 1577836800 ? "ok" : "NO");
    double s0 = now(CLOCK_MONOTONIC);
    struct timespec req = {0, 200000000};
    int r = nanosleep(&req, NULL);
    double slept = now(CLOCK_MONOTONIC) - s0;
    printf("nanosleep(0.2 s) returned %d: %s\n", r, slept >= 0.2 ? "ok" : "too short");
    printf("monotonic advanced over the sleep: %s\n", now(CLOCK_MONOTONIC) > m0 ? "ok" : "NO");
    return 0;
}
