/* A guest that never ends by itself, with threads in every state a signal can find them in:
 * three compute without a system call, one waits in a futex (pthread_join of a thread that
 * never ends), one sleeps in nanosleep. Not a compat case: harness/tests/signals.rs sends
 * signals to vbench while it runs under bt. */
#include <pthread.h>
#include <stdint.h>
#include <time.h>

static volatile uint64_t sink;

static void *compute(void *a) {
    uint64_t x = (uintptr_t)a;
    for (;;) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        sink = x;
    }
    return 0;
}

static void *sleeper(void *a) {
    (void)a;
    struct timespec t = {0, 1000000};
    for (;;) nanosleep(&t, 0);
    return 0;
}

int main(void) {
    pthread_t t[4];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], 0, compute, (void *)(uintptr_t)(i + 1));
    pthread_create(&t[3], 0, sleeper, 0);
    pthread_join(t[0], 0);
    return 0;
}
