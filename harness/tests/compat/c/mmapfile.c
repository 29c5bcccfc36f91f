/* mmap of a file: MAP_PRIVATE read, MAP_SHARED write read back with read(), mprotect. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    int fd = open("tree/alpha.txt", O_RDONLY);
    if (fd < 0) { printf("open: %s\n", strerror(errno)); return 1; }
    off_t len = lseek(fd, 0, SEEK_END);
    char *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) { printf("mmap private: %s\n", strerror(errno)); return 1; }
    printf("private map of %lld bytes: %.*s", (long long)len, (int)len, p);
    munmap(p, len);
    close(fd);

    fd = open("shared.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { printf("open shared: %s\n", strerror(errno)); return 1; }
    if (ftruncate(fd, 8192) < 0) { printf("ftruncate: %s\n", strerror(errno)); return 1; }
    char *s = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s == MAP_FAILED) { printf("mmap shared: %s\n", strerror(errno)); return 1; }
    strcpy(s, "written through a shared mapping");
    strcpy(s + 4096, "second page");
    if (msync(s, 8192, MS_SYNC) < 0) printf("msync: %s\n", strerror(errno));
    munmap(s, 8192);
    char buf[64] = {0};
    if (pread(fd, buf, 32, 0) != 32) { printf("pread: %s\n", strerror(errno)); return 1; }
    printf("read back: %s\n", buf);
    memset(buf, 0, sizeof buf);
    if (pread(fd, buf, 11, 4096) != 11) { printf("pread 2: %s\n", strerror(errno)); return 1; }
    printf("read back page 2: %s\n", buf);
    close(fd);

    char *a = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) { printf("mmap anon: %s\n", strerror(errno)); return 1; }
    strcpy(a, "before mprotect");
    int r = mprotect(a, 4096, PROT_READ);
    printf("mprotect PROT_READ: %d, still reads: %s\n", r, a);
    return r != 0;
}
