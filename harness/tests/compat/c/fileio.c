/* Create, write, append, read back, stat and unlink a file in the working directory. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int must(long r, const char *what) {
    if (r < 0) {
        printf("%s failed: %s\n", what, strerror(errno));
        exit(1);
    }
    return (int)r;
}

int main(void) {
    const char *one = "first line\n", *two = "second line\n";
    int fd = must(open("new.txt", O_CREAT | O_EXCL | O_WRONLY, 0644), "open O_CREAT");
    must(write(fd, one, strlen(one)), "write");
    must(close(fd), "close");
    fd = must(open("new.txt", O_WRONLY | O_APPEND), "open O_APPEND");
    must(write(fd, two, strlen(two)), "write append");
    must(close(fd), "close");
    char buf[128] = {0};
    fd = must(open("new.txt", O_RDONLY), "open O_RDONLY");
    long n = must(read(fd, buf, sizeof buf - 1), "read");
    must(lseek(fd, 6, SEEK_SET), "lseek");
    char word[5] = {0};
    must(read(fd, word, 4), "read after lseek");
    must(close(fd), "close");
    printf("read %ld bytes:\n%s", n, buf);
    printf("at offset 6: %s\n", word);
    struct stat st;
    must(stat("new.txt", &st), "stat");
    printf("size %lld mode %o regular %d\n", (long long)st.st_size, st.st_mode & 07777, S_ISREG(st.st_mode));
    must(rename("new.txt", "renamed.txt"), "rename");
    must(unlink("renamed.txt"), "unlink");
    errno = 0;
    int r = open("renamed.txt", O_RDONLY);
    printf("open after unlink: %d %s\n", r, strerror(errno));
    /* stdio on top of the same calls */
    FILE *f = fopen("stdio.txt", "w");
    if (!f) { printf("fopen w failed: %s\n", strerror(errno)); return 1; }
    for (int i = 0; i < 1000; i++) fprintf(f, "line %d\n", i);
    fclose(f);
    f = fopen("stdio.txt", "r");
    if (!f) { printf("fopen r failed: %s\n", strerror(errno)); return 1; }
    char line[64];
    long lines = 0, sum = 0;
    while (fgets(line, sizeof line, f)) { lines++; sum += strlen(line); }
    fclose(f);
    printf("stdio: %ld lines, %ld bytes\n", lines, sum);
    return 0;
}
