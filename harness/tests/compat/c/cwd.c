/* getcwd, chdir into a subdirectory and back, getcwd again (the runner replaces the case's
 * directory with <dir>). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    char buf[4096];
    if (!getcwd(buf, sizeof buf)) { printf("getcwd: %s\n", strerror(errno)); return 1; }
    printf("cwd %s\n", buf);
    if (chdir("tree/sub") < 0) { printf("chdir: %s\n", strerror(errno)); return 1; }
    if (!getcwd(buf, sizeof buf)) { printf("getcwd 2: %s\n", strerror(errno)); return 1; }
    printf("after chdir %s\n", buf);
    FILE *f = fopen("inner.txt", "r");
    char line[64] = {0};
    if (!f || !fgets(line, sizeof line, f)) { printf("relative open: %s\n", strerror(errno)); return 1; }
    printf("relative read: %s", line);
    fclose(f);
    if (chdir("../..") < 0) { printf("chdir ..: %s\n", strerror(errno)); return 1; }
    if (!getcwd(buf, sizeof buf)) { printf("getcwd 3: %s\n", strerror(errno)); return 1; }
    printf("back %s\n", buf);
    return 0;
}
