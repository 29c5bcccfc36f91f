/* access() and stat() of files and directories of the fixture, and of a missing file. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void probe(const char *p) {
    errno = 0;
    int r = access(p, R_OK);
    int e = errno;
    struct stat st;
    errno = 0;
    int s = stat(p, &st);
    if (s == 0)
        printf("%s: access %d, stat size %lld type %s mode %o\n", p, r, S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_size,
               S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : "other", st.st_mode & 07777);
    else
        printf("%s: access %d (%s), stat %d (%s)\n", p, r, strerror(e), s, strerror(errno));
}

int main(void) {
    probe("tree/alpha.txt");
    probe("tree/sub");
    probe("tree/missing");
    probe("/");
    printf("X_OK on a data file: %d\n", access("tree/alpha.txt", X_OK));
    return 0;
}
