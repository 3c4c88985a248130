/* qlane_neon.h: NEON intrinsics for qlane's generated kernels (part of qlane; copied verbatim
 * into generated projects).
 *
 * On Arm with NEON this is <arm_neon.h>. Elsewhere it is SIMDe's portable implementation with
 * native aliases, so the same kernels compile on x86 hosts: add SIMDe's include directory
 * (qlane.codegen.cprims.simde_include_dir()). Build host code at plain -O2: SIMDe 0.8.2 with
 * -mavx2 / -march=native gets vrshlq_s32 wrong at the edges. Host NEON is fast screening; the
 * emulator is the proof.
 */
#ifndef QLANE_NEON_H
#define QLANE_NEON_H

#if defined(__ARM_NEON) || defined(__aarch64__)

#include <arm_neon.h>
#define QLANE_NEON_NATIVE 1

#else

#ifndef SIMDE_ENABLE_NATIVE_ALIASES
#define SIMDE_ENABLE_NATIVE_ALIASES
#endif
/* SIMDe uses __int128 and _Float16: keep -pedantic quiet about the library, not our code. */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#endif
#include <simde/arm/neon.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#define QLANE_NEON_NATIVE 0

/* Exact replacements for the SIMDe operations qlane's requantization relies on. SIMDe 0.8.2:
 * - vqdmulh(q)_s32 returns INT32_MIN, not INT32_MAX, for INT32_MIN * INT32_MIN at -O1 and above
 *   (simde_vqdmulls_s32 negates INT32_MIN: undefined behaviour the optimizer uses);
 * - vrshlq_s32 overflows int32 when rounding values near INT32_MAX (UB; its AVX2 path returns
 *   -2^30 for vrshlq_s32(INT32_MAX, -1));
 * - vqrdmulh(q)_s32 and vshlq_s32 shift negative values left (UB in C99).
 * These lane-by-lane C versions follow the Arm ARM pseudocode (sim.simd) with no UB. */
static inline int32_t qlane_host_s32(uint32_t u) {
    return u <= 0x7FFFFFFFu ? (int32_t)u : -(int32_t)(~u) - 1;
}
static inline int32_t qlane_host_qdmulh(int32_t a, int32_t b, int rounding) {
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * (int64_t)b + (rounding ? ((int64_t)1 << 30) : 0)) >> 31);
}
/* SSHL / SRSHL of one int32 lane by the signed low byte of s. */
static inline int32_t qlane_host_shl(int32_t a, int32_t s, int rounding) {
    const int n = (int)(((uint32_t)s & 0xFFu) ^ 0x80u) - 0x80;
    int m;
    if (n >= 0) {
        return n >= 32 ? 0 : qlane_host_s32((uint32_t)a << n);
    }
    m = -n > 40 ? 40 : -n;
    if (!rounding) {
        return (int32_t)((int64_t)a >> m);
    }
    return (int32_t)(((int64_t)a + ((int64_t)1 << (m - 1))) >> m);
}
#define QLANE_HOST_LANES2(name, lanes, vt, load, store, expr)                                    \
    static inline vt name(vt va, vt vb) {                                                        \
        int32_t a[lanes], b[lanes];                                                              \
        int k;                                                                                   \
        store(a, va);                                                                            \
        store(b, vb);                                                                            \
        for (k = 0; k < lanes; ++k) {                                                            \
            a[k] = expr;                                                                         \
        }                                                                                        \
        return load(a);                                                                          \
    }
QLANE_HOST_LANES2(qlane_host_vqdmulh_s32, 2, int32x2_t, vld1_s32, vst1_s32,
                  qlane_host_qdmulh(a[k], b[k], 0))
QLANE_HOST_LANES2(qlane_host_vqdmulhq_s32, 4, int32x4_t, vld1q_s32, vst1q_s32,
                  qlane_host_qdmulh(a[k], b[k], 0))
QLANE_HOST_LANES2(qlane_host_vqrdmulh_s32, 2, int32x2_t, vld1_s32, vst1_s32,
                  qlane_host_qdmulh(a[k], b[k], 1))
QLANE_HOST_LANES2(qlane_host_vqrdmulhq_s32, 4, int32x4_t, vld1q_s32, vst1q_s32,
                  qlane_host_qdmulh(a[k], b[k], 1))
QLANE_HOST_LANES2(qlane_host_vshl_s32, 2, int32x2_t, vld1_s32, vst1_s32,
                  qlane_host_shl(a[k], b[k], 0))
QLANE_HOST_LANES2(qlane_host_vshlq_s32, 4, int32x4_t, vld1q_s32, vst1q_s32,
                  qlane_host_shl(a[k], b[k], 0))
QLANE_HOST_LANES2(qlane_host_vrshl_s32, 2, int32x2_t, vld1_s32, vst1_s32,
                  qlane_host_shl(a[k], b[k], 1))
QLANE_HOST_LANES2(qlane_host_vrshlq_s32, 4, int32x4_t, vld1q_s32, vst1q_s32,
                  qlane_host_shl(a[k], b[k], 1))
/* MUL on 32-bit lanes wraps (SIMDe multiplies as signed int: UB on overflow). */
#define QLANE_HOST_MUL32(name, lanes, vt, et, load, store)                                       \
    static inline vt name(vt va, vt vb) {                                                        \
        et a[lanes], b[lanes];                                                                   \
        int k;                                                                                   \
        store(a, va);                                                                            \
        store(b, vb);                                                                            \
        for (k = 0; k < lanes; ++k) {                                                            \
            a[k] = (et)((uint32_t)a[k] * (uint32_t)b[k]);                                        \
        }                                                                                        \
        return load(a);                                                                          \
    }
QLANE_HOST_MUL32(qlane_host_vmulq_u32, 4, uint32x4_t, uint32_t, vld1q_u32, vst1q_u32)
QLANE_HOST_MUL32(qlane_host_vmul_u32, 2, uint32x2_t, uint32_t, vld1_u32, vst1_u32)
#undef QLANE_HOST_MUL32
static inline int32x4_t qlane_host_vmulq_s32(int32x4_t va, int32x4_t vb) {
    return vreinterpretq_s32_u32(qlane_host_vmulq_u32(vreinterpretq_u32_s32(va),
                                                      vreinterpretq_u32_s32(vb)));
}
static inline int32x2_t qlane_host_vmul_s32(int32x2_t va, int32x2_t vb) {
    return vreinterpret_s32_u32(qlane_host_vmul_u32(vreinterpret_u32_s32(va),
                                                    vreinterpret_u32_s32(vb)));
}
#undef QLANE_HOST_LANES2
#undef vmulq_u32
#define vmulq_u32(a, b) qlane_host_vmulq_u32((a), (b))
#undef vmul_u32
#define vmul_u32(a, b) qlane_host_vmul_u32((a), (b))
#undef vmulq_s32
#define vmulq_s32(a, b) qlane_host_vmulq_s32((a), (b))
#undef vmul_s32
#define vmul_s32(a, b) qlane_host_vmul_s32((a), (b))
#undef vqdmulh_s32
#define vqdmulh_s32(a, b) qlane_host_vqdmulh_s32((a), (b))
#undef vqdmulhq_s32
#define vqdmulhq_s32(a, b) qlane_host_vqdmulhq_s32((a), (b))
#undef vqrdmulh_s32
#define vqrdmulh_s32(a, b) qlane_host_vqrdmulh_s32((a), (b))
#undef vqrdmulhq_s32
#define vqrdmulhq_s32(a, b) qlane_host_vqrdmulhq_s32((a), (b))
#undef vshl_s32
#define vshl_s32(a, b) qlane_host_vshl_s32((a), (b))
#undef vshlq_s32
#define vshlq_s32(a, b) qlane_host_vshlq_s32((a), (b))
#undef vrshl_s32
#define vrshl_s32(a, b) qlane_host_vrshl_s32((a), (b))
#undef vrshlq_s32
#define vrshlq_s32(a, b) qlane_host_vrshlq_s32((a), (b))

#endif

#endif /* QLANE_NEON_H */
