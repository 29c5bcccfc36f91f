/* Threads that wait in the kernel while another thread does the work that wakes them: poll,
 * select, accept, read and recvmsg, each in a thread of its own, woken by the main thread (a
 * thread waiting must never stop the others). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

static int pa[2], pb[2], pc[2], sp[2], lsock;

static void *by_poll(void *a) {
    (void)a;
    struct pollfd p = {.fd = pa[0], .events = POLLIN};
    int n = poll(&p, 1, -1);
    char c = 0;
    if (read(pa[0], &c, 1) != 1) return "poll: read failed";
    return n == 1 && (p.revents & POLLIN) && c == 'p' ? "poll: woken" : "poll: WRONG";
}

static void *by_select(void *a) {
    (void)a;
    fd_set r;
    FD_ZERO(&r);
    FD_SET(pb[0], &r);
    int n = select(pb[0] + 1, &r, 0, 0, 0);
    char c = 0;
    if (read(pb[0], &c, 1) != 1) return "select: read failed";
    return n == 1 && FD_ISSET(pb[0], &r) && c == 's' ? "select: woken" : "select: WRONG";
}

static void *by_read(void *a) {
    (void)a;
    char buf[8] = {0};
    ssize_t n = read(pc[0], buf, sizeof buf);
    return n == 4 && memcmp(buf, "read", 4) == 0 ? "read: woken" : "read: WRONG";
}

static void *by_recvmsg(void *a) {
    (void)a;
    char buf[16] = {0};
    struct iovec v = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    ssize_t n = recvmsg(sp[0], &m, 0);
    return n == 7 && memcmp(buf, "recvmsg", 7) == 0 ? "recvmsg: woken" : "recvmsg: WRONG";
}

static void *by_accept(void *a) {
    (void)a;
    int c = accept(lsock, 0, 0);
    if (c < 0) return "accept: FAILED";
    char buf[8] = {0};
    ssize_t n = read(c, buf, sizeof buf);
    close(c);
    return n == 6 && memcmp(buf, "accept", 6) == 0 ? "accept: woken" : "accept: WRONG";
}

int main(void) {
    if (pipe(pa) || pipe(pb) || pipe(pc) || socketpair(AF_UNIX, SOCK_STREAM, 0, sp)) return 2;
    lsock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in ad = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof ad;
    if (lsock < 0 || bind(lsock, (void *)&ad, sizeof ad) || listen(lsock, 1) ||
        getsockname(lsock, (void *)&ad, &len))
        return 3;
    void *(*fns[])(void *) = {by_poll, by_select, by_read, by_recvmsg, by_accept};
    pthread_t t[5];
    for (int i = 0; i < 5; i++) pthread_create(&t[i], 0, fns[i], 0);
    usleep(20000); /* they all wait now */
    if (write(pa[1], "p", 1) != 1 || write(pb[1], "s", 1) != 1 || write(pc[1], "read", 4) != 4 ||
        send(sp[1], "recvmsg", 7, 0) != 7)
        return 4;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&ad, sizeof ad) || write(c, "accept", 6) != 6) return 5;
    for (int i = 0; i < 5; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("%s\n", (char *)r);
    }
    close(c);
    return 0;
}
