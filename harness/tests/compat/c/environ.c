/* The environment vbench was given, seen by the program: VBENCH_COMPAT and a count. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    const char *v = getenv("VBENCH_COMPAT");
    printf("VBENCH_COMPAT=%s\n", v ? v : "(unset)");
    const char *l = getenv("LC_ALL");
    printf("LC_ALL=%s\n", l ? l : "(unset)");
    printf("argc=%d argv[1]=%s argv[2]=%s\n", argc, argc > 1 ? argv[1] : "-", argc > 2 ? argv[2] : "-");
    return v ? 0 : 3;
}
