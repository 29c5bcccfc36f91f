/* Processes: fork children that write through a pipe, wait for each with its exit status,
 * a child killed by a signal, getppid in the child, and execve of a program with argv. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        printf("exec'd with %s %s\n", argv[1], argc > 2 ? argv[2] : "");
        return 9;
    }
    setvbuf(stdout, 0, _IONBF, 0);
    int p[2];
    if (pipe(p)) { perror("pipe"); return 1; }
    pid_t me = getpid();
    for (int i = 0; i < 3; i++) {
        pid_t c = fork();
        if (c < 0) { perror("fork"); return 1; }
        if (c == 0) {
            close(p[0]);
            char b[64];
            int n = snprintf(b, sizeof b, "child %d parent-ok %d\n", i, getppid() == me);
            write(p[1], b, n);
            _exit(10 + i);
        }
    }
    close(p[1]);
    char buf[512];
    size_t got = 0;
    ssize_t n;
    while ((n = read(p[0], buf + got, sizeof buf - 1 - got)) > 0) got += n;
    buf[got] = 0;
    int lines = 0;
    for (size_t i = 0; i < got; i++) lines += buf[i] == '\n';
    printf("read %d lines, parent-ok in all: %s\n", lines, strstr(buf, "parent-ok 0") ? "no" : "yes");
    int sum = 0, st;
    while (wait(&st) > 0) sum += WEXITSTATUS(st);
    printf("exit statuses sum to %d\n", sum);
    pid_t c = fork();
    if (c == 0) { pause(); _exit(0); }
    kill(c, SIGTERM);
    waitpid(c, &st, 0);
    printf("signalled: %d by %d\n", WIFSIGNALED(st), WTERMSIG(st));
    c = fork();
    if (c == 0) {
        execl("/proc/self/exe", argv[0], "child", "two", (char *)0);
        perror("execl");
        _exit(127);
    }
    waitpid(c, &st, 0);
    printf("exec'd child exited %d\n", WEXITSTATUS(st));
    return 0;
}
