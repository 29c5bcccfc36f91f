/* opendir/readdir over a directory of the fixture and over one made here, sorted. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int list(const char *path) {
    DIR *d = opendir(path);
    if (!d) { printf("opendir %s: %s\n", path, strerror(errno)); return 1; }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof names[0], cmp);
    printf("%s: %d entries\n", path, n);
    for (int i = 0; i < n; i++) printf("  %s\n", names[i]);
    return 0;
}

int main(void) {
    int bad = list("tree") | list("tree/sub");
    if (mkdir("made", 0755) < 0) { printf("mkdir: %s\n", strerror(errno)); return 1; }
    for (int i = 0; i < 40; i++) {
        char p[64];
        snprintf(p, sizeof p, "made/file-%02d", i);
        FILE *f = fopen(p, "w");
        if (!f) { printf("fopen %s: %s\n", p, strerror(errno)); return 1; }
        fclose(f);
    }
    bad |= list("made");
    for (int i = 0; i < 40; i++) {
        char p[64];
        snprintf(p, sizeof p, "made/file-%02d", i);
        if (unlink(p) < 0) { printf("unlink %s: %s\n", p, strerror(errno)); return 1; }
    }
    if (rmdir("made") < 0) { printf("rmdir: %s\n", strerror(errno)); return 1; }
    printf("rmdir ok\n");
    return bad;
}
