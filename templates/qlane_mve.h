/* qlane_mve.h: the MVE (Helium) intrinsics qlane's generated kernels use (part of qlane; copied
 * verbatim into generated projects).
 *
 * On an Armv8.1-M core with MVE (Cortex-M55, Cortex-M85: __ARM_FEATURE_MVE) this is
 * <arm_mve.h>. Anywhere else (host builds, tests) it defines the vector types as structs of lane
 * arrays (int8x16_t is struct { int8_t val[16]; } ...), mve_pred16_t as uint16_t (one bit per
 * byte lane: an element is active when the bit of its lowest byte is set), and portable C99
 * versions of exactly the intrinsics below, with arm_mve.h's explicitly typed names, argument
 * orders and the Armv8.1-M semantics (qlane.sim.simd.MVE_INSTRUCTIONS), without undefined
 * behaviour. Predicated loads and stores do not touch the bytes of inactive lanes. They do not
 * model the sticky FPSCR.QC flag. Define QLANE_MVE_PORTABLE to force the portable versions on an
 * MVE core too.
 *
 * Loads and stores: vld1q_s8, vld1q_u8, vldrbq_s16, vldrbq_u16, vldrbq_s32, vldrbq_u32,
 * vldrwq_s32, vld1q_s32, vldrbq_z_s8, vldrbq_z_s16, vldrbq_z_u16, vldrbq_z_s32, vldrbq_z_u32,
 * vst1q_s8, vst1q_u8, vstrbq_s16, vstrbq_s32, vstrbq_u32, vstrbq_p_s8, vstrbq_p_s16,
 * vstrbq_p_s32, vstrwq_s32; gather and scatter: vldrbq_gather_offset_s32,
 * vstrbq_scatter_offset_s32, vstrbq_scatter_offset_s16, vstrbq_scatter_offset_p_s32 (offsets in
 * bytes). Predicates: vctp8q, vctp16q, vctp32q. Dot products: vmladavq_s8, vmladavaq_s8,
 * vmladavaq_p_s8, vmladavaq_u8, vmladavaq_s16, vmladavaq_p_s16. Lanes: vdupq_n_s8, vdupq_n_s16,
 * vdupq_n_s32, vaddq_s32, vaddq_n_s32, vaddq_s16, vsubq_s16, vsubq_n_s16, vmulq_s32,
 * vmulq_n_s32, vmlaq_n_s32, vmaxq_s32, vminq_s32, vmaxq_s16, vminq_s16, vmaxq_s8, vminq_s8,
 * vmaxq_u8, vminq_u8, vqaddq_s32, vqaddq_n_s16, vandq_s32, vshrq_n_s32, vshlq_n_s16, vshlq_s32,
 * vrshlq_s32, vrshlq_n_s32, vqshlq_s32, vqrdmulhq_s32, vqrdmulhq_n_s32, vqdmulhq_s32, vmulhq_s32,
 * vmulhq_u32, vrmulhq_s32. Widening: vshllbq_n_s16, vshlltq_n_s16, vshllbq_n_u16,
 * vshlltq_n_u16. Narrowing: vmovnbq_s32, vqmovnbq_s32, vqmovntq_s32, vmovnbq_s16, vqmovnbq_s16,
 * vqmovntq_s16 and twelve vreinterpretq casts. Reductions: vaddvq_s32, vaddvaq_s32, vaddvq_s8.
 * MVE has no vector-by-vector integer multiply-accumulate (no vmlaq_s32): write
 * vaddq_s32(acc, vmulq_s32(a, b)).
 *
 * Assumes >> of a negative integer is arithmetic (GCC, Clang, Arm Compiler) and, for the
 * vreinterpretq casts, a little-endian host. On a host it defines int8x16_t and friends: do not
 * include it with qlane_neon.h (SIMDe) in one translation unit.
 */
#ifndef QLANE_MVE_H
#define QLANE_MVE_H

#if defined(__ARM_FEATURE_MVE) && !defined(QLANE_MVE_PORTABLE)

#include <arm_mve.h>

#else /* portable C99 versions */

#include <stdint.h>
#include <stddef.h>

typedef struct { int8_t val[16]; } int8x16_t;
typedef struct { uint8_t val[16]; } uint8x16_t;
typedef struct { int16_t val[8]; } int16x8_t;
typedef struct { uint16_t val[8]; } uint16x8_t;
typedef struct { int32_t val[4]; } int32x4_t;
typedef struct { uint32_t val[4]; } uint32x4_t;
typedef uint16_t mve_pred16_t;

/* n bytes from s to d (the reinterpret casts; no <string.h>, whose memcpy a generated layer
 * maps to the compiler's builtin by a macro) */
static inline void qlane_mve_copy(void *d, const void *s, size_t n) {
    unsigned char *dd = (unsigned char *)d;
    const unsigned char *ss = (const unsigned char *)s;
    while (n--) {
        *dd++ = *ss++;
    }
}

/* The int32 / int16 / int8 with the bit pattern of u's low bits (two's complement), without
 * implementation-defined conversion; they compile to nothing. */
static inline int32_t qlane_mve_s32(uint32_t u) {
    return u <= 0x7FFFFFFFu ? (int32_t)u : -(int32_t)(~u) - 1;
}
static inline int16_t qlane_mve_s16(uint32_t u) {
    return (int16_t)((int32_t)((u & 0xFFFFu) ^ 0x8000u) - 0x8000);
}
static inline int8_t qlane_mve_s8(uint32_t u) {
    return (int8_t)((int32_t)((u & 0xFFu) ^ 0x80u) - 0x80);
}
/* v clamped to [lo, hi]. */
static inline int64_t qlane_mve_clamp(int64_t v, int64_t lo, int64_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}
/* Whether the element whose lowest byte is byte `bit` is active under p. */
static inline int qlane_mve_active(mve_pred16_t p, unsigned bit) {
    return (int)(((unsigned)p >> bit) & 1u);
}
/* VSHL / VRSHL / VQSHL (vector) of one int32 lane by the signed low byte of b. */
static inline int qlane_mve_shift_amount(int32_t b) {
    return (int)(((uint32_t)b & 0xFFu) ^ 0x80u) - 0x80;
}
static inline int32_t qlane_mve_shl(int32_t a, int32_t b, int rounding) {
    const int n = qlane_mve_shift_amount(b);
    int m;
    if (n >= 0) {
        return n >= 32 ? 0 : qlane_mve_s32((uint32_t)a << n);
    }
    m = -n > 40 ? 40 : -n;
    if (!rounding) {
        return (int32_t)((int64_t)a >> m);
    }
    return (int32_t)(((int64_t)a + ((int64_t)1 << (m - 1))) >> m);
}
static inline int32_t qlane_mve_qshl(int32_t a, int32_t b) {
    const int n = qlane_mve_shift_amount(b);
    if (n < 0) {
        return (int32_t)((int64_t)a >> (-n > 40 ? 40 : -n));
    }
    if (a == 0) {
        return 0;
    }
    if (n >= 32) {
        return a < 0 ? INT32_MIN : INT32_MAX;
    }
    return (int32_t)qlane_mve_clamp((int64_t)a * ((int64_t)1 << n), INT32_MIN, INT32_MAX);
}
/* (a * b + round) >> 31, saturated: VQDMULH (round 0) and VQRDMULH (round 2^30). */
static inline int32_t qlane_mve_qdmulh(int32_t a, int32_t b, int64_t round) {
    return (int32_t)qlane_mve_clamp(((int64_t)a * (int64_t)b + round) >> 31, INT32_MIN,
                                    INT32_MAX);
}

/* VLDRB.8: the 16 int8 at base. */
static inline int8x16_t vld1q_s8(int8_t const *base) {
    int8x16_t r;
    int k;
    for (k = 0; k < 16; ++k) {
        r.val[k] = base[k];
    }
    return r;
}

/* VLDRB.8: the 16 uint8 at base. */
static inline uint8x16_t vld1q_u8(uint8_t const *base) {
    uint8x16_t r;
    int k;
    for (k = 0; k < 16; ++k) {
        r.val[k] = base[k];
    }
    return r;
}

/* VLDRB.S16: the 8 int8 at base, sign-extended into int16 lanes. */
static inline int16x8_t vldrbq_s16(int8_t const *base) {
    int16x8_t r;
    int k;
    for (k = 0; k < 8; ++k) {
        r.val[k] = base[k];
    }
    return r;
}

/* VLDRB.U16: the 8 uint8 at base, zero-extended into uint16 lanes. */
static inline uint16x8_t vldrbq_u16(uint8_t const *base) {
    uint16x8_t r;
    int k;
    for (k = 0; k < 8; ++k) {
        r.val[k] = base[k];
    }
    return r;
}

/* VLDRB.S32: the 4 int8 at base, sign-extended into int32 lanes. */
static inline int32x4_t vldrbq_s32(int8_t const *base) {
    int32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = base[k];
    }
    return r;
}

/* VLDRB.U32: the 4 uint8 at base, zero-extended into uint32 lanes. */
static inline uint32x4_t vldrbq_u32(uint8_t const *base) {
    uint32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = base[k];
    }
    return r;
}

/* VLDRW.32: the 4 int32 at base. */
static inline int32x4_t vldrwq_s32(int32_t const *base) {
    int32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = base[k];
    }
    return r;
}

/* VLDRW.32: the 4 int32 at base (vldrwq_s32's alias). */
static inline int32x4_t vld1q_s32(int32_t const *base) {
    return vldrwq_s32(base);
}

/* VPST; VLDRBT.8: base[e] in the active lanes (bit e of p), 0 elsewhere; inactive bytes unread. */
static inline int8x16_t vldrbq_z_s8(int8_t const *base, mve_pred16_t p) {
    int8x16_t r;
    int k;
    for (k = 0; k < 16; ++k) {
        r.val[k] = qlane_mve_active(p, (unsigned)k) ? base[k] : 0;
    }
    return r;
}

/* VPST; VLDRBT.S16: base[e] sign-extended in active lanes (bit 2e of p), 0 elsewhere. */
static inline int16x8_t vldrbq_z_s16(int8_t const *base, mve_pred16_t p) {
    int16x8_t r;
    int k;
    for (k = 0; k < 8; ++k) {
        r.val[k] = qlane_mve_active(p, 2u * (unsigned)k) ? base[k] : 0;
    }
    return r;
}

/* VPST; VLDRBT.U16: base[e] zero-extended in active lanes (bit 2e of p), 0 elsewhere. */
static inline uint16x8_t vldrbq_z_u16(uint8_t const *base, mve_pred16_t p) {
    uint16x8_t r;
    int k;
    for (k = 0; k < 8; ++k) {
        r.val[k] = qlane_mve_active(p, 2u * (unsigned)k) ? base[k] : 0;
    }
    return r;
}

/* VPST; VLDRBT.S32: base[e] sign-extended in active lanes (bit 4e of p), 0 elsewhere. */
static inline int32x4_t vldrbq_z_s32(int8_t const *base, mve_pred16_t p) {
    int32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = qlane_mve_active(p, 4u * (unsigned)k) ? base[k] : 0;
    }
    return r;
}

/* VPST; VLDRBT.U32: base[e] zero-extended in active lanes (bit 4e of p), 0 elsewhere. */
static inline uint32x4_t vldrbq_z_u32(uint8_t const *base, mve_pred16_t p) {
    uint32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = qlane_mve_active(p, 4u * (unsigned)k) ? base[k] : 0u;
    }
    return r;
}

/* VSTRB.8: the 16 int8 lanes written at base. */
static inline void vst1q_s8(int8_t *base, int8x16_t value) {
    int k;
    for (k = 0; k < 16; ++k) {
        base[k] = value.val[k];
    }
}

/* VSTRB.8: the 16 uint8 lanes written at base. */
static inline void vst1q_u8(uint8_t *base, uint8x16_t value) {
    int k;
    for (k = 0; k < 16; ++k) {
        base[k] = value.val[k];
    }
}

/* VSTRB.32: the low byte of each int32 lane written at base (truncation, not saturation). */
static inline void vstrbq_s32(int8_t *base, int32x4_t value) {
    int k;
    for (k = 0; k < 4; ++k) {
        base[k] = qlane_mve_s8((uint32_t)value.val[k]);
    }
}

/* VSTRB.32: the low byte of each uint32 lane written at base (truncation). */
static inline void vstrbq_u32(uint8_t *base, uint32x4_t value) {
    int k;
    for (k = 0; k < 4; ++k) {
        base[k] = (uint8_t)(value.val[k] & 0xFFu);
    }
}

/* VPST; VSTRBT.32: the low byte of each active int32 lane (bit 4e of p) at base; others kept. */
static inline void vstrbq_p_s32(int8_t *base, int32x4_t value, mve_pred16_t p) {
    int k;
    for (k = 0; k < 4; ++k) {
        if (qlane_mve_active(p, 4u * (unsigned)k)) {
            base[k] = qlane_mve_s8((uint32_t)value.val[k]);
        }
    }
}

/* VSTRB.16: the low byte of each int16 lane written at base (truncation, not saturation). */
static inline void vstrbq_s16(int8_t *base, int16x8_t value) {
    int k;
    for (k = 0; k < 8; ++k) {
        base[k] = qlane_mve_s8((uint32_t)value.val[k]);
    }
}

/* VPST; VSTRBT.16: the low byte of each active int16 lane (bit 2e of p) at base; others kept. */
static inline void vstrbq_p_s16(int8_t *base, int16x8_t value, mve_pred16_t p) {
    int k;
    for (k = 0; k < 8; ++k) {
        if (qlane_mve_active(p, 2u * (unsigned)k)) {
            base[k] = qlane_mve_s8((uint32_t)value.val[k]);
        }
    }
}

/* VPST; VSTRBT.8: each active int8 lane (bit e of p) written at base; the others kept. */
static inline void vstrbq_p_s8(int8_t *base, int8x16_t value, mve_pred16_t p) {
    int k;
    for (k = 0; k < 16; ++k) {
        if (qlane_mve_active(p, (unsigned)k)) {
            base[k] = value.val[k];
        }
    }
}

/* VLDRB.S32 (gather): base[offset[e]] sign-extended into int32 lane e. */
static inline int32x4_t vldrbq_gather_offset_s32(int8_t const *base, uint32x4_t offset) {
    int32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = base[offset.val[k]];
    }
    return r;
}

/* VSTRB.32 (scatter): the low byte of lane e written at base + offset[e], lane 0 first. */
static inline void vstrbq_scatter_offset_s32(int8_t *base, uint32x4_t offset, int32x4_t value) {
    int k;
    for (k = 0; k < 4; ++k) {
        base[offset.val[k]] = qlane_mve_s8((uint32_t)value.val[k]);
    }
}

/* VSTRB.16 (scatter): the low byte of int16 lane e written at base + offset[e], lane 0 first. */
static inline void vstrbq_scatter_offset_s16(int8_t *base, uint16x8_t offset, int16x8_t value) {
    int k;
    for (k = 0; k < 8; ++k) {
        base[offset.val[k]] = qlane_mve_s8((uint32_t)(int32_t)value.val[k]);
    }
}

/* VPST; VSTRBT.32 (scatter): as vstrbq_scatter_offset_s32 for the active lanes (bit 4e of p). */
static inline void vstrbq_scatter_offset_p_s32(int8_t *base, uint32x4_t offset, int32x4_t value,
                                               mve_pred16_t p) {
    int k;
    for (k = 0; k < 4; ++k) {
        if (qlane_mve_active(p, 4u * (unsigned)k)) {
            base[offset.val[k]] = qlane_mve_s8((uint32_t)value.val[k]);
        }
    }
}

/* VSTRW.32: the 4 int32 lanes written at base. */
static inline void vstrwq_s32(int32_t *base, int32x4_t value) {
    int k;
    for (k = 0; k < 4; ++k) {
        base[k] = value.val[k];
    }
}

/* VCTP.8: the first min(a, 16) byte lanes active (a unsigned: any a >= 16 gives 0xFFFF). */
static inline mve_pred16_t vctp8q(uint32_t a) {
    return (mve_pred16_t)(a >= 16u ? 0xFFFFu : (1u << a) - 1u);
}

/* VCTP.16: the first min(a, 8) halfword lanes active, two predicate bits each. */
static inline mve_pred16_t vctp16q(uint32_t a) {
    return (mve_pred16_t)(a >= 8u ? 0xFFFFu : (1u << (2u * a)) - 1u);
}

/* VCTP.32: the first min(a, 4) word lanes active, four predicate bits each. */
static inline mve_pred16_t vctp32q(uint32_t a) {
    return (mve_pred16_t)(a >= 4u ? 0xFFFFu : (1u << (4u * a)) - 1u);
}

/* VMLADAVA.S8: add + sum of m1[e] * m2[e] over the 16 int8 lanes, wrapping modulo 2^32. */
static inline int32_t vmladavaq_s8(int32_t add, int8x16_t m1, int8x16_t m2) {
    uint32_t acc = (uint32_t)add;
    int k;
    for (k = 0; k < 16; ++k) {
        acc += (uint32_t)(m1.val[k] * m2.val[k]);
    }
    return qlane_mve_s32(acc);
}

/* VMLADAV.S8: sum of m1[e] * m2[e] over the 16 int8 lanes (exact: at most 16 * 2^14). */
static inline int32_t vmladavq_s8(int8x16_t m1, int8x16_t m2) {
    return vmladavaq_s8(0, m1, m2);
}

/* VPST; VMLADAVAT.S8: add + sum of m1[e] * m2[e] over the active lanes (bit e of p), wrapping. */
static inline int32_t vmladavaq_p_s8(int32_t add, int8x16_t m1, int8x16_t m2, mve_pred16_t p) {
    uint32_t acc = (uint32_t)add;
    int k;
    for (k = 0; k < 16; ++k) {
        if (qlane_mve_active(p, (unsigned)k)) {
            acc += (uint32_t)(m1.val[k] * m2.val[k]);
        }
    }
    return qlane_mve_s32(acc);
}

/* VMLADAVA.U8: add + sum of m1[e] * m2[e] over the 16 uint8 lanes, wrapping modulo 2^32. */
static inline uint32_t vmladavaq_u8(uint32_t add, uint8x16_t m1, uint8x16_t m2) {
    uint32_t acc = add;
    int k;
    for (k = 0; k < 16; ++k) {
        acc += (uint32_t)m1.val[k] * (uint32_t)m2.val[k];
    }
    return acc;
}

/* VMLADAVA.S16: add + sum of m1[e] * m2[e] over the 8 int16 lanes, wrapping modulo 2^32. */
static inline int32_t vmladavaq_s16(int32_t add, int16x8_t m1, int16x8_t m2) {
    uint32_t acc = (uint32_t)add;
    int k;
    for (k = 0; k < 8; ++k) {
        acc += (uint32_t)((int32_t)m1.val[k] * (int32_t)m2.val[k]);
    }
    return qlane_mve_s32(acc);
}

/* VPST; VMLADAVAT.S16: add + sum of m1[e] * m2[e] over active lanes (bit 2e of p), wrapping. */
static inline int32_t vmladavaq_p_s16(int32_t add, int16x8_t m1, int16x8_t m2, mve_pred16_t p) {
    uint32_t acc = (uint32_t)add;
    int k;
    for (k = 0; k < 8; ++k) {
        if (qlane_mve_active(p, 2u * (unsigned)k)) {
            acc += (uint32_t)((int32_t)m1.val[k] * (int32_t)m2.val[k]);
        }
    }
    return qlane_mve_s32(acc);
}

/* VDUP.8: a in all 16 int8 lanes. */
static inline int8x16_t vdupq_n_s8(int8_t a) {
    int8x16_t r;
    int k;
    for (k = 0; k < 16; ++k) {
        r.val[k] = a;
    }
    return r;
}

/* VDUP.16: a in all 8 int16 lanes. */
static inline int16x8_t vdupq_n_s16(int16_t a) {
    int16x8_t r;
    int k;
    for (k = 0; k < 8; ++k) {
        r.val[k] = a;
    }
    return r;
}

/* VDUP.32: a in all 4 int32 lanes. */
static inline int32x4_t vdupq_n_s32(int32_t a) {
    int32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = a;
    }
    return r;
}

/* VADD.I32: a + b per lane, wrapping modulo 2^32. */
static inline int32x4_t vaddq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = qlane_mve_s32((uint32_t)a.val[k] + (uint32_t)b.val[k]);
    }
    return a;
}

/* VADD.I32 (scalar): a + b with b in every lane, wrapping modulo 2^32. */
static inline int32x4_t vaddq_n_s32(int32x4_t a, int32_t b) {
    return vaddq_s32(a, vdupq_n_s32(b));
}

/* VADD.I16: a + b per lane, wrapping modulo 2^16. */
static inline int16x8_t vaddq_s16(int16x8_t a, int16x8_t b) {
    int k;
    for (k = 0; k < 8; ++k) {
        a.val[k] = qlane_mve_s16((uint32_t)((int32_t)a.val[k] + (int32_t)b.val[k]));
    }
    return a;
}

/* VSUB.I16: a - b per lane, wrapping modulo 2^16. */
static inline int16x8_t vsubq_s16(int16x8_t a, int16x8_t b) {
    int k;
    for (k = 0; k < 8; ++k) {
        a.val[k] = qlane_mve_s16((uint32_t)((int32_t)a.val[k] - (int32_t)b.val[k]));
    }
    return a;
}

/* VSUB.I16 (scalar): a - b with b in every lane (an input zero point), wrapping modulo 2^16. */
static inline int16x8_t vsubq_n_s16(int16x8_t a, int16_t b) {
    return vsubq_s16(a, vdupq_n_s16(b));
}

/* VMUL.I32: a * b per lane, the low 32 bits of the product (wraps). */
static inline int32x4_t vmulq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = qlane_mve_s32((uint32_t)a.val[k] * (uint32_t)b.val[k]);
    }
    return a;
}

/* VMUL.I32 (scalar): a * b with b in every lane, the low 32 bits (wraps). */
static inline int32x4_t vmulq_n_s32(int32x4_t a, int32_t b) {
    return vmulq_s32(a, vdupq_n_s32(b));
}

/* VMLA.S32: add + m1 * m2 per lane with the scalar m2, wrapping modulo 2^32. */
static inline int32x4_t vmlaq_n_s32(int32x4_t add, int32x4_t m1, int32_t m2) {
    int k;
    for (k = 0; k < 4; ++k) {
        add.val[k] = qlane_mve_s32((uint32_t)add.val[k] + (uint32_t)m1.val[k] * (uint32_t)m2);
    }
    return add;
}

/* VMAX.S32: max(a, b) per lane. */
static inline int32x4_t vmaxq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = a.val[k] > b.val[k] ? a.val[k] : b.val[k];
    }
    return a;
}

/* VMIN.S32: min(a, b) per lane. */
static inline int32x4_t vminq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = a.val[k] < b.val[k] ? a.val[k] : b.val[k];
    }
    return a;
}

/* VMAX.S16: max(a, b) per lane. */
static inline int16x8_t vmaxq_s16(int16x8_t a, int16x8_t b) {
    int k;
    for (k = 0; k < 8; ++k) {
        a.val[k] = a.val[k] > b.val[k] ? a.val[k] : b.val[k];
    }
    return a;
}

/* VMIN.S16: min(a, b) per lane. */
static inline int16x8_t vminq_s16(int16x8_t a, int16x8_t b) {
    int k;
    for (k = 0; k < 8; ++k) {
        a.val[k] = a.val[k] < b.val[k] ? a.val[k] : b.val[k];
    }
    return a;
}

/* VMAX.S8: max(a, b) per lane. */
static inline int8x16_t vmaxq_s8(int8x16_t a, int8x16_t b) {
    int k;
    for (k = 0; k < 16; ++k) {
        a.val[k] = a.val[k] > b.val[k] ? a.val[k] : b.val[k];
    }
    return a;
}

/* VMIN.S8: min(a, b) per lane. */
static inline int8x16_t vminq_s8(int8x16_t a, int8x16_t b) {
    int k;
    for (k = 0; k < 16; ++k) {
        a.val[k] = a.val[k] < b.val[k] ? a.val[k] : b.val[k];
    }
    return a;
}

/* VMAX.U8: max(a, b) per lane. */
static inline uint8x16_t vmaxq_u8(uint8x16_t a, uint8x16_t b) {
    int k;
    for (k = 0; k < 16; ++k) {
        a.val[k] = a.val[k] > b.val[k] ? a.val[k] : b.val[k];
    }
    return a;
}

/* VMIN.U8: min(a, b) per lane. */
static inline uint8x16_t vminq_u8(uint8x16_t a, uint8x16_t b) {
    int k;
    for (k = 0; k < 16; ++k) {
        a.val[k] = a.val[k] < b.val[k] ? a.val[k] : b.val[k];
    }
    return a;
}

/* VQADD.S32: a + b per lane, clamped to [INT32_MIN, INT32_MAX]. */
static inline int32x4_t vqaddq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = (int32_t)qlane_mve_clamp((int64_t)a.val[k] + b.val[k], INT32_MIN, INT32_MAX);
    }
    return a;
}

/* VQADD.S16 (scalar): a + b per lane with b in every lane, clamped to [-32768, 32767]. */
static inline int16x8_t vqaddq_n_s16(int16x8_t a, int16_t b) {
    int k;
    for (k = 0; k < 8; ++k) {
        a.val[k] = (int16_t)qlane_mve_clamp((int32_t)a.val[k] + b, -32768, 32767);
    }
    return a;
}

/* VAND: bitwise a AND b. */
static inline int32x4_t vandq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = a.val[k] & b.val[k];
    }
    return a;
}

/* VSHR.S32: floor(a / 2^imm) per lane, 1 <= imm <= 32 (imm >= 31: the sign mask 0 or -1). */
static inline int32x4_t vshrq_n_s32(int32x4_t a, const int imm) {
    const int n = imm > 31 ? 31 : imm;
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = a.val[k] >> n;
    }
    return a;
}

/* VSHL.I16: a << imm per lane, 0 <= imm <= 15, the low 16 bits (wraps). */
static inline int16x8_t vshlq_n_s16(int16x8_t a, const int imm) {
    int k;
    for (k = 0; k < 8; ++k) {
        a.val[k] = qlane_mve_s16((uint32_t)(int32_t)a.val[k] << imm);
    }
    return a;
}

/* VSHL.S32: a << s, s the signed low byte of b; s < 0 shifts right, floor; no saturation. */
static inline int32x4_t vshlq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = qlane_mve_shl(a.val[k], b.val[k], 0);
    }
    return a;
}

/* VRSHL.S32: a << s, s the signed low byte of b; s < 0: round(a / 2^-s), ties up, no overflow. */
static inline int32x4_t vrshlq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = qlane_mve_shl(a.val[k], b.val[k], 1);
    }
    return a;
}

/* VRSHL.S32 (scalar): vrshlq_s32 with the signed low byte of b as every lane's shift. */
static inline int32x4_t vrshlq_n_s32(int32x4_t a, int32_t b) {
    return vrshlq_s32(a, vdupq_n_s32(b));
}

/* VQSHL.S32: a << s, s the signed low byte of b, left shifts clamped to int32; s < 0: floor. */
static inline int32x4_t vqshlq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = qlane_mve_qshl(a.val[k], b.val[k]);
    }
    return a;
}

/* VQRDMULH.S32: round(a * b / 2^31), ties up; only INT32_MIN * INT32_MIN saturates (INT32_MAX). */
static inline int32x4_t vqrdmulhq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = qlane_mve_qdmulh(a.val[k], b.val[k], (int64_t)1 << 30);
    }
    return a;
}

/* VQRDMULH.S32 (scalar): round(a * b / 2^31) with b in every lane; saturates at INT32_MIN^2. */
static inline int32x4_t vqrdmulhq_n_s32(int32x4_t a, int32_t b) {
    return vqrdmulhq_s32(a, vdupq_n_s32(b));
}

/* VQDMULH.S32: floor(a * b / 2^31); only INT32_MIN * INT32_MIN saturates (to INT32_MAX). */
static inline int32x4_t vqdmulhq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = qlane_mve_qdmulh(a.val[k], b.val[k], 0);
    }
    return a;
}

/* VMULH.S32: floor(a * b / 2^32), the high word of the product; never saturates. */
static inline int32x4_t vmulhq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = (int32_t)(((int64_t)a.val[k] * (int64_t)b.val[k]) >> 32);
    }
    return a;
}

/* VMULH.U32: floor(a * b / 2^32), the high word of the unsigned product. */
static inline uint32x4_t vmulhq_u32(uint32x4_t a, uint32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = (uint32_t)(((uint64_t)a.val[k] * (uint64_t)b.val[k]) >> 32);
    }
    return a;
}

/* VRMULH.S32: round(a * b / 2^32), ties up, the rounded high word; never saturates. */
static inline int32x4_t vrmulhq_s32(int32x4_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[k] = (int32_t)(((int64_t)a.val[k] * (int64_t)b.val[k] + ((int64_t)1 << 31)) >> 32);
    }
    return a;
}

/* VSHLLB.S16: a's even lanes 2e sign-extended to int32 and shifted left by imm (1..16). */
static inline int32x4_t vshllbq_n_s16(int16x8_t a, const int imm) {
    int32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = (int32_t)((int64_t)a.val[2 * k] * ((int64_t)1 << imm));
    }
    return r;
}

/* VSHLLT.S16: a's odd lanes 2e + 1 sign-extended to int32 and shifted left by imm (1..16). */
static inline int32x4_t vshlltq_n_s16(int16x8_t a, const int imm) {
    int32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = (int32_t)((int64_t)a.val[2 * k + 1] * ((int64_t)1 << imm));
    }
    return r;
}

/* VSHLLB.U16: a's even lanes 2e zero-extended to uint32 and shifted left by imm (1..16). */
static inline uint32x4_t vshllbq_n_u16(uint16x8_t a, const int imm) {
    uint32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = (uint32_t)a.val[2 * k] << imm;
    }
    return r;
}

/* VSHLLT.U16: a's odd lanes 2e + 1 zero-extended to uint32 and shifted left by imm (1..16). */
static inline uint32x4_t vshlltq_n_u16(uint16x8_t a, const int imm) {
    uint32x4_t r;
    int k;
    for (k = 0; k < 4; ++k) {
        r.val[k] = (uint32_t)a.val[2 * k + 1] << imm;
    }
    return r;
}

/* VMOVNB.I32: the low 16 bits of b[e] into a's even (bottom) lanes 2e; a's odd lanes kept. */
static inline int16x8_t vmovnbq_s32(int16x8_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[2 * k] = qlane_mve_s16((uint32_t)b.val[k]);
    }
    return a;
}

/* VQMOVNB.S32: b[e] clamped to [-32768, 32767] into a's even lanes 2e; a's odd lanes kept. */
static inline int16x8_t vqmovnbq_s32(int16x8_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[2 * k] = (int16_t)qlane_mve_clamp(b.val[k], -32768, 32767);
    }
    return a;
}

/* VQMOVNT.S32: b[e] clamped to [-32768, 32767] into a's odd lanes 2e + 1; even lanes kept. */
static inline int16x8_t vqmovntq_s32(int16x8_t a, int32x4_t b) {
    int k;
    for (k = 0; k < 4; ++k) {
        a.val[2 * k + 1] = (int16_t)qlane_mve_clamp(b.val[k], -32768, 32767);
    }
    return a;
}

/* VMOVNB.I16: the low 8 bits of b[e] into a's even (bottom) lanes 2e; a's odd lanes kept. */
static inline int8x16_t vmovnbq_s16(int8x16_t a, int16x8_t b) {
    int k;
    for (k = 0; k < 8; ++k) {
        a.val[2 * k] = qlane_mve_s8((uint32_t)b.val[k]);
    }
    return a;
}

/* VQMOVNB.S16: b[e] clamped to [-128, 127] into a's even lanes 2e; a's odd lanes kept. */
static inline int8x16_t vqmovnbq_s16(int8x16_t a, int16x8_t b) {
    int k;
    for (k = 0; k < 8; ++k) {
        a.val[2 * k] = (int8_t)qlane_mve_clamp(b.val[k], -128, 127);
    }
    return a;
}

/* VQMOVNT.S16: b[e] clamped to [-128, 127] into a's odd lanes 2e + 1; a's even lanes kept. */
static inline int8x16_t vqmovntq_s16(int8x16_t a, int16x8_t b) {
    int k;
    for (k = 0; k < 8; ++k) {
        a.val[2 * k + 1] = (int8_t)qlane_mve_clamp(b.val[k], -128, 127);
    }
    return a;
}

/* (no instruction): the 128 bits of an int16x8_t as an int8x16_t, little-endian. */
static inline int8x16_t vreinterpretq_s8_s16(int16x8_t a) {
    int8x16_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of an int8x16_t as an int16x8_t, little-endian. */
static inline int16x8_t vreinterpretq_s16_s8(int8x16_t a) {
    int16x8_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of an int32x4_t as an int8x16_t, little-endian. */
static inline int8x16_t vreinterpretq_s8_s32(int32x4_t a) {
    int8x16_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of an int8x16_t as an int32x4_t, little-endian. */
static inline int32x4_t vreinterpretq_s32_s8(int8x16_t a) {
    int32x4_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of an int32x4_t as an int16x8_t, little-endian. */
static inline int16x8_t vreinterpretq_s16_s32(int32x4_t a) {
    int16x8_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of an int16x8_t as an int32x4_t, little-endian. */
static inline int32x4_t vreinterpretq_s32_s16(int16x8_t a) {
    int32x4_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of an int8x16_t as a uint8x16_t. */
static inline uint8x16_t vreinterpretq_u8_s8(int8x16_t a) {
    uint8x16_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of a uint8x16_t as an int8x16_t. */
static inline int8x16_t vreinterpretq_s8_u8(uint8x16_t a) {
    int8x16_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of an int16x8_t as a uint16x8_t. */
static inline uint16x8_t vreinterpretq_u16_s16(int16x8_t a) {
    uint16x8_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of a uint16x8_t as an int16x8_t. */
static inline int16x8_t vreinterpretq_s16_u16(uint16x8_t a) {
    int16x8_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of an int32x4_t as a uint32x4_t. */
static inline uint32x4_t vreinterpretq_u32_s32(int32x4_t a) {
    uint32x4_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* (no instruction): the 128 bits of a uint32x4_t as an int32x4_t. */
static inline int32x4_t vreinterpretq_s32_u32(uint32x4_t a) {
    int32x4_t r;
    qlane_mve_copy(&r, &a, sizeof r);
    return r;
}

/* VADDVA.S32: a + the sum of the 4 int32 lanes of b, wrapping modulo 2^32. */
static inline int32_t vaddvaq_s32(int32_t a, int32x4_t b) {
    uint32_t acc = (uint32_t)a;
    int k;
    for (k = 0; k < 4; ++k) {
        acc += (uint32_t)b.val[k];
    }
    return qlane_mve_s32(acc);
}

/* VADDV.S32: the sum of the 4 int32 lanes, wrapping modulo 2^32. */
static inline int32_t vaddvq_s32(int32x4_t a) {
    return vaddvaq_s32(0, a);
}

/* VADDV.S8: the sum of the 16 int8 lanes sign-extended to 32 bits (exact: |sum| <= 2048). */
static inline int32_t vaddvq_s8(int8x16_t a) {
    int32_t acc = 0;
    int k;
    for (k = 0; k < 16; ++k) {
        acc += a.val[k];
    }
    return acc;
}

#endif /* __ARM_FEATURE_MVE / QLANE_MVE_PORTABLE */

#endif /* QLANE_MVE_H */
