/* 200 threads at once: each computes, then waits at a barrier while the main thread sends it a
 * signal of its own (pthread_kill), which its handler counts: no signal may be lost, as none is
 * natively (each thread has its own pending set). */
#include <pthread.h>
#include <stdio.h>
#include <signal.h>
#include <unistd.h>
#define N 200
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t b1, b2;
static long total;
static volatile int hits;
static void h(int s) { (void)s; __sync_fetch_and_add(&hits, 1); }
static void *w(void *a) {
    long n = (long)a, s = 0;
    for (long i = 0; i < 1000 * n; i++) s += i % 7;
    pthread_mutex_lock(&mu); total += s; pthread_mutex_unlock(&mu);
    pthread_barrier_wait(&b1);
    pthread_barrier_wait(&b2);
    return 0;
}
int main(void) {
    signal(SIGUSR1, h);
    pthread_barrier_init(&b1, 0, N + 1);
    pthread_barrier_init(&b2, 0, N + 1);
    pthread_t t[N];
    for (int i = 0; i < N; i++) if (pthread_create(&t[i], 0, w, (void *)(long)(i % 13))) return 2;
    pthread_barrier_wait(&b1);
    for (int i = 0; i < N; i++) pthread_kill(t[i], SIGUSR1);
    while (hits < N) usleep(1000);
    pthread_barrier_wait(&b2);
    for (int i = 0; i < N; i++) pthread_join(t[i], 0);
    printf("threads %d total %ld signals %d\n", N, total, hits);
    return 0;
}
