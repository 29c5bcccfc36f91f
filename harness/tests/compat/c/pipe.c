/* pipe() within one process: write, then read back; a closed write end reads as EOF. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    int fds[2];
    if (pipe(fds) < 0) { printf("pipe: %s\n", strerror(errno)); return 1; }
    const char *msg = "through the pipe";
    if (write(fds[1], msg, strlen(msg)) != (ssize_t)strlen(msg)) { printf("write: %s\n", strerror(errno)); return 1; }
    char buf[64] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    printf("read %zd: %s\n", n, n > 0 ? buf : strerror(errno));
    close(fds[1]);
    n = read(fds[0], buf, sizeof buf);
    printf("after close: %zd\n", n);
    int d = dup(fds[0]);
    printf("dup: %s\n", d > fds[0] ? "ok" : strerror(errno));
    return 0;
}
