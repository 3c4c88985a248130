/* qlane_rt.c: the few C library functions a freestanding qlane build links against (part of
 * qlane; used by the emulator tier, qlane.codegen.cross).
 *
 * Generated kernels call memcpy / memset / memmove through <string.h>; the cross build maps
 * them to the compiler builtins, so small constant-size copies become plain loads and stores.
 * Whatever the compiler still emits as a call lands here: word-at-a-time when both pointers are
 * word aligned, bytes otherwise. Compile this file with -fno-builtin so the loops below are not
 * turned back into calls to themselves.
 */
#include <stddef.h>
#include <stdint.h>

typedef size_t __attribute__((may_alias)) qlane_rt_word;
#define QLANE_RT_W sizeof(qlane_rt_word)
#define QLANE_RT_ALIGNED(a, b) (((((uintptr_t)(a)) | ((uintptr_t)(b))) & (QLANE_RT_W - 1u)) == 0u)

void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if (QLANE_RT_ALIGNED(d, s)) {
        /* four words an iteration under GCC too, as clang unrolls it (a taken branch costs
         * more than a copied word on a Cortex-M) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 4
#endif
        for (; n >= QLANE_RT_W; n -= QLANE_RT_W, d += QLANE_RT_W, s += QLANE_RT_W) {
            *(qlane_rt_word *)d = *(const qlane_rt_word *)s;
        }
    }
    while (n--) {
        *d++ = *s++;
    }
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if (d == s || n == 0u) {
        return dst;
    }
    if ((uintptr_t)d < (uintptr_t)s || (uintptr_t)d >= (uintptr_t)s + n) {
        return memcpy(dst, src, n); /* no overlap that a forward copy would clobber */
    }
    d += n;
    s += n;
    if (QLANE_RT_ALIGNED(d, s)) {
        for (; n >= QLANE_RT_W; n -= QLANE_RT_W) {
            d -= QLANE_RT_W;
            s -= QLANE_RT_W;
            *(qlane_rt_word *)d = *(const qlane_rt_word *)s;
        }
    }
    while (n--) {
        *--d = *--s;
    }
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = (unsigned char *)dst;
    const unsigned char b = (unsigned char)c;
    if (QLANE_RT_ALIGNED(d, 0)) {
        const qlane_rt_word w = (qlane_rt_word)b * (qlane_rt_word)(~(size_t)0 / 0xFFu);
        for (; n >= QLANE_RT_W; n -= QLANE_RT_W, d += QLANE_RT_W) {
            *(qlane_rt_word *)d = w;
        }
    }
    while (n--) {
        *d++ = b;
    }
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;
    for (; n; --n, ++x, ++y) {
        if (*x != *y) {
            return (int)*x - (int)*y;
        }
    }
    return 0;
}
