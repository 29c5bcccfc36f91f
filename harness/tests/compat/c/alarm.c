/* Asynchronous signals: SIGALRM ends a spin loop (its handler runs in the middle of the
 * program's code), interrupts a blocking read with EINTR (no SA_RESTART), and a blocked
 * self-sent SIGUSR1 waits until sigsuspend unblocks it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static volatile sig_atomic_t got;
static void on(int s) { got++; }
int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    signal(SIGALRM, on);
    alarm(1);
    unsigned long n = 0;
    while (!got) n++;
    printf("alarm after spinning: %d\n", got);
    struct sigaction sa = {0}; sa.sa_handler = on; sigaction(SIGALRM, &sa, 0);
    int p[2]; pipe(p);
    alarm(1);
    char c; ssize_t r = read(p[0], &c, 1);
    printf("read interrupted: %zd %s, handler ran %d times\n", r, strerror(errno), got);
    sigset_t s, old; sigemptyset(&s); sigaddset(&s, SIGUSR1); sigprocmask(SIG_BLOCK, &s, &old);
    signal(SIGUSR1, on);
    kill(getpid(), SIGUSR1);
    sigset_t pend; sigemptyset(&pend); sigpending(&pend);
    printf("blocked: still %d, pending %d\n", got, sigismember(&pend, SIGUSR1));
    sigsuspend(&old);
    printf("after sigsuspend: %d\n", got);
    return 0;
}
