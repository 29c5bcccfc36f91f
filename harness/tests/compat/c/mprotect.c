/* mprotect's protections: a syscall into a read-only or unmapped page is EFAULT, and the
 * program's own write to a read-only page kills it with SIGSEGV (status 139 natively). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    char *p = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    p[0] = 1;
    p[4096] = 2;
    if (mprotect(p, 4096, PROT_READ)) { perror("mprotect"); return 1; }
    int fd = open("/dev/zero", O_RDONLY);
    ssize_t n = read(fd, p, 10);
    printf("read into read-only: %zd %s\n", n, n < 0 ? strerror(errno) : "");
    n = read(fd, p + 4096, 10);
    printf("read into writable: %zd, first byte still %d\n", n, p[0]);
    if (munmap(p + 4096, 4096)) { perror("munmap"); return 1; }
    n = read(fd, p + 4096, 10);
    printf("read into unmapped: %zd %s\n", n, n < 0 ? strerror(errno) : "");
    fflush(stdout);
    ((volatile char *)p)[0] = 3;
    printf("wrote a read-only page\n");
    return 0;
}
