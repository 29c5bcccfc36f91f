/* Signals a program sends itself: its handler runs (raise), SIG_IGN makes a write to a closed
 * pipe fail with EPIPE instead of killing it, and abort() ends it with SIGABRT (status 134). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void on(int s) { got = s; }

int main(void) {
    signal(SIGUSR1, on);
    raise(SIGUSR1);
    printf("handler ran for signal %d\n", (int)got);
    signal(SIGPIPE, SIG_IGN);
    int p[2];
    if (pipe(p)) { perror("pipe"); return 1; }
    close(p[0]);
    ssize_t n = write(p[1], "x", 1);
    printf("write to a closed pipe: %zd %s\n", n, n < 0 ? strerror(errno) : "");
    fflush(stdout);
    abort();
}
