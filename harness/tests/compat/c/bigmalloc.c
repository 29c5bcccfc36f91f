/* 300 MiB from malloc, one byte written in every 4 KiB page, all read back. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    size_t size = 300u << 20;
    unsigned char *p = malloc(size);
    if (!p) { printf("malloc(300 MiB) failed\n"); return 1; }
    for (size_t i = 0; i < size; i += 4096) p[i] = (unsigned char)(i >> 12);
    unsigned long sum = 0;
    for (size_t i = 0; i < size; i += 4096) sum += p[i];
    printf("pages %zu sum %lu\n", size / 4096, sum);
    free(p);
    return 0;
}
