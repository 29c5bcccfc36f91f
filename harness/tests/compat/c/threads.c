/* Threads as a real program uses them: mutexes, condition variables, joins, thread-local
 * storage, a signal to one thread (pthread_kill), a spin-wait on another thread's store (no
 * system call: the waiting thread must be preempted), and detached threads. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long counter;
static __thread long mine;
static int turn;

static void *adder(void *arg) {
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&mu);
        counter++;
        pthread_mutex_unlock(&mu);
        mine++;
    }
    return (void *)mine;
}

static void *pong(void *arg) {
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&mu);
        while (turn != 1) pthread_cond_wait(&cv, &mu);
        turn = 0;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
    return 0;
}

static atomic_int flag;
static void *setter(void *arg) {
    (void)arg;
    for (volatile long i = 0; i < 20000000; i++) {}
    atomic_store(&flag, 1);
    return 0;
}

static volatile pthread_t got;
static void on_usr1(int s) { (void)s; got = pthread_self(); }
static void *sleeper(void *arg) {
    (void)arg;
    while (!got) usleep(1000);
    return 0;
}

static void *ids(void *arg) {
    long *out = arg;
    out[0] = syscall(SYS_gettid);
    out[1] = getpid();
    return 0;
}

int main(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], 0, adder, (void *)100000L);
    long sum = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (long)r;
    }
    printf("mutex: counter %ld, thread-local sums %ld\n", counter, sum);

    pthread_t p;
    pthread_create(&p, 0, pong, (void *)10000L);
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&mu);
        while (turn != 0) pthread_cond_wait(&cv, &mu);
        turn = 1;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
    pthread_join(p, 0);
    printf("condvar: 10000 round trips\n");

    pthread_t s;
    pthread_create(&s, 0, setter, 0);
    long spins = 0;
    while (!atomic_load(&flag)) spins++;
    pthread_join(s, 0);
    printf("spin-wait: done (%s)\n", spins > 0 ? "spun" : "no spin");

    signal(SIGUSR1, on_usr1);
    pthread_t z;
    pthread_create(&z, 0, sleeper, 0);
    pthread_kill(z, SIGUSR1);
    pthread_join(z, 0);
    printf("pthread_kill: handled on %s\n", pthread_equal(got, z) ? "the target thread" : "ANOTHER thread");

    long id[2];
    pthread_t q;
    pthread_create(&q, 0, ids, id);
    pthread_join(q, 0);
    printf("ids: thread's tid %s pid, same pid %s\n", id[0] != getpid() ? "differs from" : "EQUALS",
           id[1] == getpid() ? "yes" : "NO");

    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < 8; i++) pthread_create(&q, &a, adder, (void *)1000L);
    for (;;) {
        pthread_mutex_lock(&mu);
        long c = counter;
        pthread_mutex_unlock(&mu);
        if (c == 400000 + 8000) break;
        usleep(1000);
    }
    printf("detached: counter %ld\n", counter);
    return 0;
}
