/* qlane_acle.h: the ACLE DSP intrinsics qlane's generated kernels use (part of qlane; copied
 * verbatim into generated projects).
 *
 * On an Arm target with the DSP and SIMD32 extensions (Cortex-M4/M7/M33+DSP, Armv7-A) this
 * includes <arm_acle.h>. Anywhere else (host builds, tests) it defines portable C99 versions of
 * exactly these intrinsics, with arm_acle.h's signatures (packed int8x4_t / int16x2_t words are
 * int32_t, uint8x4_t / uint16x2_t are uint32_t) and the Arm ARM semantics, without undefined
 * behaviour: __smlad, __smladx, __smlabb, __smlabt, __smlatb, __smlatt, __smulbb, __sxtb16, __uxtb16, __sxtab16, __uxtab16,
 * __qadd8, __qsub8, __qadd16, __ssat, __usat, __ror. They do not model the sticky Q flag.
 * Define QLANE_ACLE_PORTABLE to force the portable versions on Arm too.
 *
 * Always defined: qlane_ror (ROR; GCC before 13 lacks __ror on 32-bit Arm), qlane_smmulr and
 * qlane_smmlar (SMMULR, SMMLAR), qlane_pkhbt, qlane_pack_lo16 and qlane_pack_hi16 (PKHBT,
 * PKHTB), which have no ACLE intrinsic, the
 * extensions of a word rotated by 8 (qlane_sxtb16_ror8 ...) and qlane_acle_s32 (a uint32 bit
 * pattern as int32).
 * Assumes >> of a negative integer is arithmetic (true of GCC, Clang and Arm Compiler).
 */
#ifndef QLANE_ACLE_H
#define QLANE_ACLE_H

#include <stdint.h>

/* The int32 with the bit pattern of u (two's complement), without implementation-defined
 * conversion; compiles to nothing. */
static inline int32_t qlane_acle_s32(uint32_t u) {
    return u <= 0x7FFFFFFFu ? (int32_t)u : -(int32_t)(~u) - 1;
}

/* ROR: x rotated right by n (mod 32) bits. */
static inline uint32_t qlane_ror(uint32_t x, uint32_t n) {
    n &= 31u;
    return (x >> n) | (x << ((32u - n) & 31u));
}

/* GCC on a DSP core: the instructions GCC does not select from the C below (Clang does) are
 * written as inline assembly. */
#if !defined(QLANE_ACLE_PORTABLE) && defined(__ARM_FEATURE_DSP) && defined(__GNUC__) && \
    !defined(__clang__)
#define QLANE_ACLE_GCC_ASM 1
#else
#define QLANE_ACLE_GCC_ASM 0
#endif

/* SMMULR: round(a * b / 2^32), ties toward +infinity (the rounded high word of the product). */
static inline int32_t qlane_smmulr(int32_t a, int32_t b) {
#if QLANE_ACLE_GCC_ASM
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * (int64_t)b + INT64_C(0x80000000)) >> 32);
#endif
}

/* SMMLAR: acc + SMMULR(a, b), wrapping (acc joins the high word; the low word only rounds). */
static inline int32_t qlane_smmlar(int32_t a, int32_t b, int32_t acc) {
#if QLANE_ACLE_GCC_ASM
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
#else
    return qlane_acle_s32((uint32_t)acc + (uint32_t)qlane_smmulr(a, b));
#endif
}

/* PKHBT (no shift): the low halfword of lo under the high halfword of hi. */
static inline uint32_t qlane_pkhbt(uint32_t lo, uint32_t hi) {
#if QLANE_ACLE_GCC_ASM
    uint32_t r;
    __asm__("pkhbt %0, %1, %2" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
#else
    return (lo & 0xFFFFu) | (hi & 0xFFFF0000u);
#endif
}

#if !defined(QLANE_ACLE_PORTABLE) && defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)

#include <arm_acle.h>
#define QLANE_ACLE_NATIVE 1

#else /* portable C99 versions */

#define QLANE_ACLE_NATIVE 0

/* Signed halfword 0 / 1 and signed / unsigned byte k of a packed word. */
static inline int32_t qlane_acle_lo16(uint32_t w) {
    return (int32_t)((w & 0xFFFFu) ^ 0x8000u) - 0x8000;
}
static inline int32_t qlane_acle_hi16(uint32_t w) {
    return qlane_acle_lo16(w >> 16);
}
static inline int32_t qlane_acle_sbyte(uint32_t w, unsigned k) {
    return (int32_t)(((w >> (8u * k)) & 0xFFu) ^ 0x80u) - 0x80;
}
static inline uint32_t qlane_acle_ubyte(uint32_t w, unsigned k) {
    return (w >> (8u * k)) & 0xFFu;
}
static inline int32_t qlane_acle_clamp(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}
/* Two halfwords (each taken modulo 2^16) packed into one word, h0 in the low half. */
static inline uint32_t qlane_acle_pack16(int32_t h0, int32_t h1) {
    return ((uint32_t)h0 & 0xFFFFu) | (((uint32_t)h1 & 0xFFFFu) << 16);
}
/* Four bytes (each taken modulo 2^8) packed into one word, b0 in the low byte. */
static inline uint32_t qlane_acle_pack8(int32_t b0, int32_t b1, int32_t b2, int32_t b3) {
    return ((uint32_t)b0 & 0xFFu) | (((uint32_t)b1 & 0xFFu) << 8) |
           (((uint32_t)b2 & 0xFFu) << 16) | (((uint32_t)b3 & 0xFFu) << 24);
}

/* SMLAD: acc + x.lo * y.lo + x.hi * y.hi, wrapping modulo 2^32. */
static inline int32_t qlane_acle_smlad(int32_t x, int32_t y, int32_t acc) {
    const uint32_t ux = (uint32_t)x, uy = (uint32_t)y;
    return qlane_acle_s32((uint32_t)acc + (uint32_t)(qlane_acle_lo16(ux) * qlane_acle_lo16(uy)) +
                          (uint32_t)(qlane_acle_hi16(ux) * qlane_acle_hi16(uy)));
}

/* SMLADX: acc + x.lo * y.hi + x.hi * y.lo, wrapping modulo 2^32. */
static inline int32_t qlane_acle_smladx(int32_t x, int32_t y, int32_t acc) {
    const uint32_t ux = (uint32_t)x, uy = (uint32_t)y;
    return qlane_acle_s32((uint32_t)acc + (uint32_t)(qlane_acle_lo16(ux) * qlane_acle_hi16(uy)) +
                          (uint32_t)(qlane_acle_hi16(ux) * qlane_acle_lo16(uy)));
}

/* SMLABB: acc + x.lo * y.lo, wrapping modulo 2^32. */
static inline int32_t qlane_acle_smlabb(int32_t x, int32_t y, int32_t acc) {
    return qlane_acle_s32((uint32_t)acc +
                          (uint32_t)(qlane_acle_lo16((uint32_t)x) * qlane_acle_lo16((uint32_t)y)));
}

/* SMLABT / SMLATB / SMLATT: acc + x.lo * y.hi / x.hi * y.lo / x.hi * y.hi, wrapping. */
static inline int32_t qlane_acle_smlabt(int32_t x, int32_t y, int32_t acc) {
    return qlane_acle_s32((uint32_t)acc +
                          (uint32_t)(qlane_acle_lo16((uint32_t)x) * qlane_acle_hi16((uint32_t)y)));
}

static inline int32_t qlane_acle_smlatb(int32_t x, int32_t y, int32_t acc) {
    return qlane_acle_s32((uint32_t)acc +
                          (uint32_t)(qlane_acle_hi16((uint32_t)x) * qlane_acle_lo16((uint32_t)y)));
}

static inline int32_t qlane_acle_smlatt(int32_t x, int32_t y, int32_t acc) {
    return qlane_acle_s32((uint32_t)acc +
                          (uint32_t)(qlane_acle_hi16((uint32_t)x) * qlane_acle_hi16((uint32_t)y)));
}

/* SMULBB: x.lo * y.lo (exact). */
static inline int32_t qlane_acle_smulbb(int32_t x, int32_t y) {
    return qlane_acle_lo16((uint32_t)x) * qlane_acle_lo16((uint32_t)y);
}

/* SXTB16: bytes 0 and 2 of x sign-extended into the two halfwords. */
static inline int32_t qlane_acle_sxtb16(int32_t x) {
    const uint32_t u = (uint32_t)x;
    return qlane_acle_s32(qlane_acle_pack16(qlane_acle_sbyte(u, 0), qlane_acle_sbyte(u, 2)));
}

/* UXTB16: bytes 0 and 2 of x zero-extended into the two halfwords. */
static inline uint32_t qlane_acle_uxtb16(uint32_t x) {
    return x & 0x00FF00FFu;
}

/* SXTAB16: x.lo + sext(y.byte0), x.hi + sext(y.byte2), each halfword wrapping modulo 2^16. */
static inline int32_t qlane_acle_sxtab16(int32_t x, int32_t y) {
    const uint32_t ux = (uint32_t)x, uy = (uint32_t)y;
    return qlane_acle_s32(qlane_acle_pack16(qlane_acle_lo16(ux) + qlane_acle_sbyte(uy, 0),
                                            qlane_acle_hi16(ux) + qlane_acle_sbyte(uy, 2)));
}

/* UXTAB16: x.lo + y.byte0, x.hi + y.byte2 (zero-extended), each halfword wrapping mod 2^16. */
static inline uint32_t qlane_acle_uxtab16(uint32_t x, uint32_t y) {
    return qlane_acle_pack16((int32_t)((x & 0xFFFFu) + qlane_acle_ubyte(y, 0)),
                             (int32_t)((x >> 16) + qlane_acle_ubyte(y, 2)));
}

/* QADD8: x + y in each of four int8 lanes, each clamped to [-128, 127]. */
static inline int32_t qlane_acle_qadd8(int32_t x, int32_t y) {
    const uint32_t ux = (uint32_t)x, uy = (uint32_t)y;
    int32_t r[4];
    unsigned k;
    for (k = 0; k < 4; ++k) {
        r[k] = qlane_acle_clamp(qlane_acle_sbyte(ux, k) + qlane_acle_sbyte(uy, k), -128, 127);
    }
    return qlane_acle_s32(qlane_acle_pack8(r[0], r[1], r[2], r[3]));
}

/* QSUB8: x - y in each of four int8 lanes, each clamped to [-128, 127]. */
static inline int32_t qlane_acle_qsub8(int32_t x, int32_t y) {
    const uint32_t ux = (uint32_t)x, uy = (uint32_t)y;
    int32_t r[4];
    unsigned k;
    for (k = 0; k < 4; ++k) {
        r[k] = qlane_acle_clamp(qlane_acle_sbyte(ux, k) - qlane_acle_sbyte(uy, k), -128, 127);
    }
    return qlane_acle_s32(qlane_acle_pack8(r[0], r[1], r[2], r[3]));
}

/* QADD16: x + y in each of two int16 lanes, each clamped to [-32768, 32767]. */
static inline int32_t qlane_acle_qadd16(int32_t x, int32_t y) {
    const uint32_t ux = (uint32_t)x, uy = (uint32_t)y;
    return qlane_acle_s32(qlane_acle_pack16(
        qlane_acle_clamp(qlane_acle_lo16(ux) + qlane_acle_lo16(uy), -32768, 32767),
        qlane_acle_clamp(qlane_acle_hi16(ux) + qlane_acle_hi16(uy), -32768, 32767)));
}

/* SSAT: x clamped to [-2^(bits-1), 2^(bits-1) - 1], 1 <= bits <= 32. */
static inline int32_t qlane_acle_ssat(int32_t x, unsigned int bits) {
    const int64_t hi = ((int64_t)1 << (bits - 1u)) - 1;
    const int64_t v = x;
    return (int32_t)(v > hi ? hi : (v < -hi - 1 ? -hi - 1 : v));
}

/* USAT: signed x clamped to [0, 2^bits - 1], 0 <= bits <= 31. */
static inline uint32_t qlane_acle_usat(int32_t x, unsigned int bits) {
    const int64_t hi = ((int64_t)1 << bits) - 1;
    const int64_t v = x;
    return (uint32_t)(v > hi ? hi : (v < 0 ? 0 : v));
}

#define __smlad(x, y, acc) qlane_acle_smlad((x), (y), (acc))
#define __smladx(x, y, acc) qlane_acle_smladx((x), (y), (acc))
#define __smlabb(x, y, acc) qlane_acle_smlabb((x), (y), (acc))
#define __smlabt(x, y, acc) qlane_acle_smlabt((x), (y), (acc))
#define __smlatb(x, y, acc) qlane_acle_smlatb((x), (y), (acc))
#define __smlatt(x, y, acc) qlane_acle_smlatt((x), (y), (acc))
#define __smulbb(x, y) qlane_acle_smulbb((x), (y))
#define __sxtb16(x) qlane_acle_sxtb16((x))
#define __uxtb16(x) qlane_acle_uxtb16((x))
#define __sxtab16(x, y) qlane_acle_sxtab16((x), (y))
#define __uxtab16(x, y) qlane_acle_uxtab16((x), (y))
#define __qadd8(x, y) qlane_acle_qadd8((x), (y))
#define __qsub8(x, y) qlane_acle_qsub8((x), (y))
#define __qadd16(x, y) qlane_acle_qadd16((x), (y))
#define __ssat(x, bits) qlane_acle_ssat((x), (bits))
#define __usat(x, bits) qlane_acle_usat((x), (bits))
#define __ror(x, n) qlane_ror((x), (n))

#endif /* QLANE_ACLE_PORTABLE / __ARM_FEATURE_DSP */

/* The low halfwords of a and b (PKHBT a, b, LSL #16) and their high halfwords (PKHTB b, a,
 * ASR #16), as (a's, b's). */
static inline uint32_t qlane_pack_lo16(uint32_t a, uint32_t b) {
#if QLANE_ACLE_GCC_ASM
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (a & 0xFFFFu) | (b << 16);
#endif
}

static inline uint32_t qlane_pack_hi16(uint32_t a, uint32_t b) {
#if QLANE_ACLE_GCC_ASM
    uint32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(b), "r"(a));
    return r;
#else
    return (b & 0xFFFF0000u) | (a >> 16);
#endif
}

/* UXTB16 / UXTAB16 on uint32 words whichever arm_acle.h declares them (Clang's: on int32). */
static inline uint32_t qlane_uxtb16(uint32_t x) {
#if QLANE_ACLE_NATIVE && defined(__clang__)
    return (uint32_t)__uxtb16(qlane_acle_s32(x));
#else
    return __uxtb16(x);
#endif
}

static inline uint32_t qlane_uxtab16(uint32_t a, uint32_t x) {
#if QLANE_ACLE_NATIVE && defined(__clang__)
    return (uint32_t)__uxtab16(qlane_acle_s32(a), qlane_acle_s32(x));
#else
    return __uxtab16(a, x);
#endif
}

/* SXTB16 / UXTB16 / SXTAB16 / UXTAB16 of x rotated right by 8 (bytes 1 and 3): one instruction
 * with its ROR #8 operand (GCC does not fold the rotation into the extension; Clang does). */
static inline int32_t qlane_sxtb16_ror8(uint32_t x) {
#if QLANE_ACLE_GCC_ASM
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
#else
    return __sxtb16(qlane_acle_s32(qlane_ror(x, 8)));
#endif
}

static inline int32_t qlane_sxtab16_ror8(int32_t a, uint32_t x) {
#if QLANE_ACLE_GCC_ASM
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
#else
    return __sxtab16(a, qlane_acle_s32(qlane_ror(x, 8)));
#endif
}

static inline uint32_t qlane_uxtb16_ror8(uint32_t x) {
#if QLANE_ACLE_GCC_ASM
    uint32_t r;
    __asm__("uxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
#else
    return qlane_uxtb16(qlane_ror(x, 8));
#endif
}

static inline uint32_t qlane_uxtab16_ror8(uint32_t a, uint32_t x) {
#if QLANE_ACLE_GCC_ASM
    uint32_t r;
    __asm__("uxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
#else
    return qlane_uxtab16(a, qlane_ror(x, 8));
#endif
}

#endif /* QLANE_ACLE_H */
