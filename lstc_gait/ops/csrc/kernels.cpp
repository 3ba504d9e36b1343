// CPU kernels of the lstc_gait custom ops (see lstc_gait/ops/__init__.py for the op schemas).
//
// Activations are channels_last_3d float32, i.e. (N, T, H, W, C) contiguous in memory, so every
// inner loop runs over channels, contiguous in all operands. Built just in time by
// lstc_gait/ops/build.py with torch.utils.cpp_extension (with -march=native, so the build cache is
// keyed by the CPU's flags too) and registered under the private namespace `lstc_gait_cpu`; the
// public ops in namespace `lstc_gait` call these on CPU float32 tensors and fall back to their
// PyTorch formulation elsewhere. Work is split with at::parallel_for over frames or rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

namespace {

typedef int64_t i64;
/* 8 floats, any alignment: one AVX register with -march=native on x86-64 (two SSE or NEON
 * registers elsewhere; the compiler lowers the vector extension for whatever it targets). */
typedef float v8 __attribute__((vector_size(32), aligned(4)));
#define LOAD8(p) (*(const v8 *)(p))
#define STORE8(p, v) (*(v8 *)(p) = (v))

static inline void stripe_rows(i64 r, i64 H, i64 S, i64 h, i64 *lo, i64 *hi) {
    i64 s = r / h;
    if (s > S - 1) s = S - 1;
    *lo = s * h;
    *hi = (s == S - 1) ? H : *lo + h;
}

static inline i64 max64(i64 a, i64 b) { return a > b ? a : b; }
static inline i64 min64(i64 a, i64 b) { return a < b ? a : b; }

/* V floats, any alignment. A struct, not a template argument on a typedef: GCC drops the
 * aligned(4) attribute of a vector typedef passed as a template argument. V = 16 is one AVX-512
 * register (with -march=native on such a CPU), V = 8 one AVX register. */
template <int V> struct fvec;
template <> struct fvec<8> {
    typedef float type __attribute__((vector_size(32), aligned(4)));
    typedef int mask __attribute__((vector_size(32)));
};
template <> struct fvec<16> {
    typedef float type __attribute__((vector_size(64), aligned(4)));
    typedef int mask __attribute__((vector_size(64)));
};
#ifdef __AVX512F__
#define WIDE_LANES 16 /* the widest vector the CPU has */
#else
#define WIDE_LANES 8
#endif

/* Swap the off-diagonal S x S blocks of every 2S x 2S block of a V x V tile held as V vectors
 * (row i = vector i): rows i and i + S (bit S of i clear) exchange lanes j with bit S set. */
template <int V, int S> static inline void transpose_stage(typename fvec<V>::type *r) {
    typename fvec<V>::mask lo, hi;
    for (int j = 0; j < V; ++j) {
        lo[j] = (j & S) ? V + j - S : j;  /* row i: its own lanes, then row i+S's low lanes */
        hi[j] = (j & S) ? V + j : j + S;  /* row i+S: row i's high lanes, then its own */
    }
    for (int i = 0; i < V; ++i) {
        if (i & S) continue;
        const typename fvec<V>::type a = r[i], b = r[i + S];
        r[i] = __builtin_shuffle(a, b, lo);
        r[i + S] = __builtin_shuffle(a, b, hi);
    }
}

/* Transpose a V x V tile in registers (log2 V stages of two-input shuffles). */
template <int V> static inline void transpose_tile(typename fvec<V>::type *r) {
    if constexpr (V >= 16) transpose_stage<V, 8>(r);
    transpose_stage<V, 4>(r);
    transpose_stage<V, 2>(r);
    transpose_stage<V, 1>(r);
}

/* y[n,t,r,w,:] = sum_{a,b,d} x[n, t+a-pt, r+b-ph, w+d-pw, :] * k[a,b,d,:] (same-stripe rows only);
 * `y` points at frame `begin`'s output. */
static void forward_any_c(const float *__restrict__ x, const float *__restrict__ k, float *__restrict__ y,
                 i64 N, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH, i64 kW, i64 S, i64 h,
                 i64 begin, i64 end) {
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    (void)N;
    for (i64 nt = begin; nt < end; ++nt) {
        const i64 n = nt / T, t = nt % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        for (i64 r = 0; r < H; ++r) {
            i64 lo, hi;
            stripe_rows(r, H, S, h, &lo, &hi);
            const i64 b0 = max64(0, lo - r + ph), b1 = min64(kH, hi - r + ph);
            float *__restrict__ out_row = y + (((nt - begin) * H + r) * W) * C;
            memset(out_row, 0, sizeof(float) * W * C);
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b) {
                    const float *__restrict__ x_row = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * C;
                    const float *__restrict__ k_row = k + ((a * kH + b) * kW) * C;
                    for (i64 w = 0; w < W; ++w) {
                        float *__restrict__ o = out_row + w * C;
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 d = d0; d < d1; ++d) {
                            const float *__restrict__ xp = x_row + (w + d - pw) * C;
                            const float *__restrict__ kp = k_row + d * C;
                            for (i64 c = 0; c < C; ++c) o[c] += xp[c] * kp[c];
                        }
                    }
                }
            }
        }
    }
}

/* acc[a,b,d,:] += sum over (n,t) in [begin, end) and all (r, w) of
 * x[n, t+a-pt, r+b-ph, w+d-pw, :] * g[n,t,r,w,:]. Each frame is summed in float into `scratch`
 * (kT*kH*kW*C floats), then added to the double accumulator `acc`, which bounds the rounding. */
static void weight_grad_any_c(const float *__restrict__ x, const float *__restrict__ g, double *__restrict__ acc,
                         float *__restrict__ scratch,
                         i64 N, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH, i64 kW, i64 S, i64 h,
                         i64 begin, i64 end) {
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    const i64 K = kT * kH * kW * C;
    (void)N;
    for (i64 nt = begin; nt < end; ++nt) {
        const i64 n = nt / T, t = nt % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        memset(scratch, 0, sizeof(float) * K);
        for (i64 r = 0; r < H; ++r) {
            i64 lo, hi;
            stripe_rows(r, H, S, h, &lo, &hi);
            const i64 b0 = max64(0, lo - r + ph), b1 = min64(kH, hi - r + ph);
            const float *__restrict__ g_row = g + ((nt * H + r) * W) * C;
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b) {
                    const float *__restrict__ x_row = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * C;
                    float *__restrict__ s_row = scratch + ((a * kH + b) * kW) * C;
                    for (i64 w = 0; w < W; ++w) {
                        const float *__restrict__ gp = g_row + w * C;
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 d = d0; d < d1; ++d) {
                            const float *__restrict__ xp = x_row + (w + d - pw) * C;
                            float *__restrict__ sp = s_row + d * C;
                            for (i64 c = 0; c < C; ++c) sp[c] += xp[c] * gp[c];
                        }
                    }
                }
            }
        }
        for (i64 i = 0; i < K; ++i) acc[i] += (double)scratch[i];
    }
}

#define WB 4  /* output columns per register block (any kW) */
#define WB3 8 /* output columns per register block when kW == 3 */

/* Forward for C % V == 0: per (frame, row, V-channel block, 4 or 8 columns), one accumulator per
 * column (V = 16: one AVX-512 register per 16 channels). `y` points at frame `begin`'s output. */
template <int V>
static void forward_cv(const float *__restrict__ x, const float *__restrict__ k, float *__restrict__ y,
                       i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH, i64 kW, i64 S, i64 h,
                       i64 begin, i64 end) {
    typedef typename fvec<V>::type vec;
#define LOADV(p) (*(const vec *)(p))
#define STOREV(p, v) (*(vec *)(p) = (v))
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    for (i64 nt = begin; nt < end; ++nt) {
        const i64 n = nt / T, t = nt % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        for (i64 r = 0; r < H; ++r) {
            i64 lo, hi;
            stripe_rows(r, H, S, h, &lo, &hi);
            const i64 b0 = max64(0, lo - r + ph), b1 = min64(kH, hi - r + ph);
            float *__restrict__ out_row = y + (((nt - begin) * H + r) * W) * C;
            for (i64 cb = 0; cb < C; cb += V) {
                i64 w = 0;
                for (; w < W; ) {
                    /* kW == 3 (every kernel of the default model): 8 columns per block, the 10
                     * input vectors of a kernel row loaded once for its 3 taps */
                    if (kW == 3 && w >= 1 && w + WB3 < W) {
                        vec acc[WB3] = {};
                        for (i64 a = a0; a < a1; ++a) {
                            for (i64 b = b0; b < b1; ++b) {
                                const float *xp = x + (((n * T + t + a - pt) * H + r + b - ph) * W + w - 1) * C + cb;
                                const float *k_row = k + ((a * kH + b) * 3) * C + cb;
                                const vec k0 = LOADV(k_row), k1 = LOADV(k_row + C), k2 = LOADV(k_row + 2 * C);
                                vec xv[WB3 + 2];
                                for (int j = 0; j < WB3 + 2; ++j) xv[j] = LOADV(xp + j * C);
                                for (int j = 0; j < WB3; ++j) acc[j] += xv[j] * k0 + xv[j + 1] * k1 + xv[j + 2] * k2;
                            }
                        }
                        for (int j = 0; j < WB3; ++j) STOREV(out_row + (w + j) * C + cb, acc[j]);
                        w += WB3;
                    } else if (w >= pw && w + WB - 1 + pw < W) { /* taps inside [0, W): no checks */
                        vec acc[WB] = {};
                        for (i64 a = a0; a < a1; ++a) {
                            for (i64 b = b0; b < b1; ++b) {
                                const float *x_row = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * C + cb;
                                const float *k_row = k + ((a * kH + b) * kW) * C + cb;
                                for (i64 d = 0; d < kW; ++d) {
                                    const vec kv = LOADV(k_row + d * C);
                                    const float *xp = x_row + (w + d - pw) * C;
                                    for (int j = 0; j < WB; ++j) acc[j] += LOADV(xp + j * C) * kv;
                                }
                            }
                        }
                        for (int j = 0; j < WB; ++j) STOREV(out_row + (w + j) * C + cb, acc[j]);
                        w += WB;
                    } else {
                        vec acc = {};
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 a = a0; a < a1; ++a) {
                            for (i64 b = b0; b < b1; ++b) {
                                const float *x_row = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * C + cb;
                                const float *k_row = k + ((a * kH + b) * kW) * C + cb;
                                for (i64 d = d0; d < d1; ++d)
                                    acc += LOADV(x_row + (w + d - pw) * C) * LOADV(k_row + d * C);
                            }
                        }
                        STOREV(out_row + w * C + cb, acc);
                        w += 1;
                    }
                }
            }
        }
    }
}
#undef LOADV
#undef STOREV

/* Weight gradient for C % 8 == 0: each (tap, 8-channel block) sums a whole row in two registers. */
static void weight_grad_c8(const float *__restrict__ x, const float *__restrict__ g, double *__restrict__ acc,
                           float *__restrict__ scratch,
                           i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH, i64 kW, i64 S, i64 h,
                           i64 begin, i64 end) {
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    const i64 K = kT * kH * kW * C;
    for (i64 nt = begin; nt < end; ++nt) {
        const i64 n = nt / T, t = nt % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        memset(scratch, 0, sizeof(float) * K);
        for (i64 r = 0; r < H; ++r) {
            i64 lo, hi;
            stripe_rows(r, H, S, h, &lo, &hi);
            const i64 b0 = max64(0, lo - r + ph), b1 = min64(kH, hi - r + ph);
            const float *g_row = g + ((nt * H + r) * W) * C;
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b) {
                    const float *x_row = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * C;
                    float *s_row = scratch + ((a * kH + b) * kW) * C;
                    for (i64 d = 0; d < kW; ++d) {
                        const i64 w0 = max64(0, pw - d), w1 = min64(W, W + pw - d);
                        for (i64 cb = 0; cb < C; cb += 8) {
                            v8 s0 = {}, s1 = {};
                            i64 w = w0;
                            for (; w + 1 < w1; w += 2) {
                                s0 += LOAD8(x_row + (w + d - pw) * C + cb) * LOAD8(g_row + w * C + cb);
                                s1 += LOAD8(x_row + (w + 1 + d - pw) * C + cb) * LOAD8(g_row + (w + 1) * C + cb);
                            }
                            if (w < w1) s0 += LOAD8(x_row + (w + d - pw) * C + cb) * LOAD8(g_row + w * C + cb);
                            STORE8(s_row + d * C + cb, LOAD8(s_row + d * C + cb) + s0 + s1);
                        }
                    }
                }
            }
        }
        for (i64 i = 0; i < K; ++i) acc[i] += (double)scratch[i];
    }
}
/* ---- Single-input-channel dense conv (the stem: 1 -> C channels, 'same' padding) ----------
 * y[n,t,r,w,:] = sum_{a,b,d} x[n, t+a-pt, r+b-ph, w+d-pw] * k[a,b,d,:]; x is (N, T, H, W) with
 * one channel, so every tap broadcasts one input value over the C output channels. No stripes. */

/* Stem row for C % V == 0, vectorised over V output columns: the input has one channel, so V
 * neighbouring columns of an input row are one vector load and every tap is V FMAs with a
 * broadcast weight per output channel. Each V x V tile (channels x columns) is transposed in
 * registers into channels-last rows, with bias and ReLU applied on the way. `pad` holds the
 * tap rows zero-padded to pw + ceil(W / V) * V + pw columns (reused across calls). */
template <int V>
static void stem_row_t(const float *__restrict__ x, const float *__restrict__ k, const float *__restrict__ bias,
                       i64 relu, float *__restrict__ out_row, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH,
                       i64 kW, i64 nt, i64 r, std::vector<float> &pad) {
    typedef typename fvec<V>::type vec;
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    const i64 n = nt / T, t = nt % T;
    const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
    const i64 b0 = max64(0, ph - r), b1 = min64(kH, H - r + ph);
    const i64 Wv = (W + V - 1) / V * V, L = Wv + kW - 1;
    pad.assign((size_t)(kT * kH * L), 0.0f);
    i64 taps = 0;
    for (i64 a = a0; a < a1; ++a)
        for (i64 b = b0; b < b1; ++b, ++taps)
            std::memcpy(pad.data() + taps * L + pw, x + ((n * T + t + a - pt) * H + r + b - ph) * W,
                        sizeof(float) * W);
    for (i64 g0 = 0; g0 < C; g0 += V) {
        for (i64 w0 = 0; w0 < Wv; w0 += V) {
            vec acc[V];
            for (int c = 0; c < V; ++c) acc[c] = (vec){};
            i64 q = 0;
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b, ++q) {
                    const float *xr = pad.data() + q * L + w0;
                    const float *kr = k + ((a * kH + b) * kW) * C + g0;
                    for (i64 d = 0; d < kW; ++d) {
                        const vec xv = *(const vec *)(xr + d);
                        for (int c = 0; c < V; ++c) acc[c] += xv * kr[d * C + c];
                    }
                }
            }
            for (int c = 0; c < V; ++c) {
                if (bias) acc[c] += bias[g0 + c];
                if (relu) acc[c] = acc[c] > 0.0f ? acc[c] : (vec){};
            }
            transpose_tile<V>(acc); /* acc[j] = the V channels of column w0 + j */
            const i64 cols = min64(V, W - w0);
            for (i64 j = 0; j < cols; ++j) *(vec *)(out_row + (w0 + j) * C + g0) = acc[j];
        }
    }
}

/* `y` points at frame `begin`'s output. */
static void stem_forward_range(const float *__restrict__ x, const float *__restrict__ k, const float *__restrict__ bias,
                               i64 relu, float *__restrict__ y, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH,
                               i64 kW, i64 begin, i64 end) {
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    std::vector<float> pad; /* zero-padded tap rows of the vectorised paths */
    for (i64 nt = begin; nt < end; ++nt) {
        const i64 n = nt / T, t = nt % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        for (i64 r = 0; r < H; ++r) {
            const i64 b0 = max64(0, ph - r), b1 = min64(kH, H - r + ph);
            float *__restrict__ out_row = y + (((nt - begin) * H + r) * W) * C;
            if (C % WIDE_LANES == 0) { /* bias and ReLU applied inside */
                stem_row_t<WIDE_LANES>(x, k, bias, relu, out_row, T, H, W, C, kT, kH, kW, nt, r, pad);
                continue;
            }
            if (C % 8 == 0) {
                stem_row_t<8>(x, k, bias, relu, out_row, T, H, W, C, kT, kH, kW, nt, r, pad);
                continue;
            }
            /* any other channel count: scalar loop, then the epilogue below */
            memset(out_row, 0, sizeof(float) * W * C);
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b) {
                    const float *__restrict__ x_row = x + ((n * T + t + a - pt) * H + r + b - ph) * W;
                    const float *__restrict__ k_row = k + ((a * kH + b) * kW) * C;
                    for (i64 w = 0; w < W; ++w) {
                        float *__restrict__ o = out_row + w * C;
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 d = d0; d < d1; ++d) {
                            const float xv = x_row[w + d - pw];
                            const float *__restrict__ kp = k_row + d * C;
                            for (i64 c = 0; c < C; ++c) o[c] += xv * kp[c];
                        }
                    }
                }
            }
            /* optional epilogue while the row is in L1: + bias, ReLU (a folded eval-mode BN) */
            if (bias)
                for (i64 w = 0; w < W; ++w)
                    for (i64 c = 0; c < C; ++c) out_row[w * C + c] += bias[c];
            if (relu)
                for (i64 i = 0; i < W * C; ++i) out_row[i] = out_row[i] > 0.0f ? out_row[i] : 0.0f;
        }
    }
}

/* acc[a,b,d,:] += sum over frames [begin, end) of x[.., t+a-pt, r+b-ph, w+d-pw] * g[n,t,r,w,:] */
static void stem_weight_grad_range(const float *__restrict__ x, const float *__restrict__ g, double *__restrict__ acc,
                                   float *__restrict__ scratch, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH,
                                   i64 kW, i64 begin, i64 end) {
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    const i64 K = kT * kH * kW * C;
    for (i64 nt = begin; nt < end; ++nt) {
        const i64 n = nt / T, t = nt % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        memset(scratch, 0, sizeof(float) * K);
        for (i64 r = 0; r < H; ++r) {
            const i64 b0 = max64(0, ph - r), b1 = min64(kH, H - r + ph);
            const float *__restrict__ g_row = g + ((nt * H + r) * W) * C;
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b) {
                    const float *__restrict__ x_row = x + ((n * T + t + a - pt) * H + r + b - ph) * W;
                    float *__restrict__ s_row = scratch + ((a * kH + b) * kW) * C;
                    if (C % 8 == 0) {
                        for (i64 d = 0; d < kW; ++d) {
                            const i64 w0 = max64(0, pw - d), w1 = min64(W, W + pw - d);
                            for (i64 cb = 0; cb < C; cb += 8) {
                                v8 s0 = {}, s1 = {};
                                i64 w = w0;
                                for (; w + 1 < w1; w += 2) {
                                    s0 += x_row[w + d - pw] * LOAD8(g_row + w * C + cb);
                                    s1 += x_row[w + 1 + d - pw] * LOAD8(g_row + (w + 1) * C + cb);
                                }
                                if (w < w1) s0 += x_row[w + d - pw] * LOAD8(g_row + w * C + cb);
                                STORE8(s_row + d * C + cb, LOAD8(s_row + d * C + cb) + s0 + s1);
                            }
                        }
                        continue;
                    }
                    for (i64 w = 0; w < W; ++w) {
                        const float *__restrict__ gp = g_row + w * C;
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 d = d0; d < d1; ++d) {
                            const float xv = x_row[w + d - pw];
                            float *__restrict__ sp = s_row + d * C;
                            for (i64 c = 0; c < C; ++c) sp[c] += xv * gp[c];
                        }
                    }
                }
            }
        }
        for (i64 i = 0; i < K; ++i) acc[i] += (double)scratch[i];
    }
}
#define ROWS 256

static inline float bn_affine(float x, float scale, float shift) { return x * scale + shift; }
/* Window maximum and which of its 4 values (0..3, row-major) is first to reach it, branch-free so
 * the channel loops vectorise; NaN compares unequal to itself, which is how it propagates. */
#define WINDOW_MAX(v0, v1, v2, v3, c, m, k)                                  \
    float m = v0[c], k = 0.0f;                                               \
    { const int t1 = (v1[c] > m) | (v1[c] != v1[c]); m = t1 ? v1[c] : m; k = t1 ? 1.0f : k; } \
    { const int t2 = (v2[c] > m) | (v2[c] != v2[c]); m = t2 ? v2[c] : m; k = t2 ? 2.0f : k; } \
    { const int t3 = (v3[c] > m) | (v3[c] != v3[c]); m = t3 ? v3[c] : m; k = t3 ? 3.0f : k; }
typedef int v8i __attribute__((vector_size(32), aligned(4)));

/* Backward for one window over 8 channels, with vector masks (the scalar version's selects are
 * left as branches by the compiler): NaN != NaN marks NaN, the first maximum wins. */
static inline void window_grad8(const float *v0, const float *v1, const float *v2, const float *v3,
                                const float *g, float *d0, float *d1, float *d2, float *d3) {
    const v8 a0 = *(const v8 *)v0, a1 = *(const v8 *)v1, a2 = *(const v8 *)v2, a3 = *(const v8 *)v3;
    const v8i one = {1, 1, 1, 1, 1, 1, 1, 1};
    v8 m = a0;
    v8i k = {};
    v8i t = (a1 > m) | (a1 != a1);
    m = (v8)(((v8i)a1 & t) | ((v8i)m & ~t));
    k = (one & t) | (k & ~t);
    t = (a2 > m) | (a2 != a2);
    m = (v8)(((v8i)a2 & t) | ((v8i)m & ~t));
    k = ((one + one) & t) | (k & ~t);
    t = (a3 > m) | (a3 != a3);
    k = ((one + one + one) & t) | (k & ~t);
    const v8i gv = *(const v8i *)g, zero = {};
    *(v8 *)d0 = (v8)(gv & (k == zero));
    *(v8 *)d1 = (v8)(gv & (k == one));
    *(v8 *)d2 = (v8)(gv & (k == one + one));
    *(v8 *)d3 = (v8)(gv & (k == one + one + one));
}

/* ---- tensor-level entry points ------------------------------------------------------------- */

constexpr auto kCL = at::MemoryFormat::ChannelsLast3d;

void check_float_cpu(const at::Tensor &t, const char *name) {
    TORCH_CHECK(t.device().is_cpu(), "lstc_gait_cpu: ", name, " must be a CPU tensor, got ", t.device());
    TORCH_CHECK(t.scalar_type() == at::kFloat, "lstc_gait_cpu: ", name, " must be float32, got ", t.scalar_type());
}

void check_depthwise(const at::Tensor &x, const at::Tensor &weight) {
    check_float_cpu(x, "x");
    check_float_cpu(weight, "weight");
    TORCH_CHECK(x.dim() == 5, "x must be (N, C, T, H, W), got ", x.sizes());
    TORCH_CHECK(weight.dim() == 5 && weight.size(1) == 1 && weight.size(0) == x.size(1),
                "weight must be (C, 1, kT, kH, kW) with C = x.size(1), got ", weight.sizes(), " for x ", x.sizes());
    TORCH_CHECK(weight.size(2) % 2 == 1 && weight.size(3) % 2 == 1 && weight.size(4) % 2 == 1,
                "kernel sizes must be odd, got ", weight.sizes());
}

/* (C, 1, kT, kH, kW) -> (kT, kH, kW, C) contiguous: channels innermost, like the data. */
at::Tensor kernel_channels_last(const at::Tensor &weight) {
    return weight.select(1, 0).permute({1, 2, 3, 0}).contiguous();
}

/* Independent work chunks: torch's intra-op thread count, at most one chunk per work item. */
i64 chunk_count(i64 items) { return std::max<i64>(1, std::min<i64>(at::get_num_threads(), items)); }

/* Sum the per-chunk float64 partial kernels (chunks, kT*kH*kW*C) into a (C, 1, kT, kH, kW) float32 gradient. */
at::Tensor kernel_from_partials(const at::Tensor &acc, i64 kT, i64 kH, i64 kW, i64 C) {
    return acc.sum(0).view({kT, kH, kW, C}).permute({3, 0, 1, 2}).unsqueeze(1).to(at::kFloat).contiguous();
}

at::Tensor stripe_depthwise_forward(const at::Tensor &x, const at::Tensor &weight, int64_t num_stripes) {
    check_depthwise(x, weight);
    const i64 N = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
    TORCH_CHECK(num_stripes >= 1 && H >= num_stripes, "need 1 <= num_stripes <= H, got num_stripes=", num_stripes,
                " for H=", H);
    const i64 kT = weight.size(2), kH = weight.size(3), kW = weight.size(4), S = num_stripes;
    const i64 h = std::max<i64>(1, H / S);
    const at::Tensor xc = x.contiguous(kCL), k = kernel_channels_last(weight);
    at::Tensor y = at::empty(x.sizes(), x.options().memory_format(kCL));
    if (y.numel() == 0) return y;
    const float *xp = xc.data_ptr<float>(), *kp = k.data_ptr<float>();
    float *yp = y.data_ptr<float>();
    at::parallel_for(0, N * T, 1, [&](i64 begin, i64 end) {
        if (C % WIDE_LANES == 0)
            forward_cv<WIDE_LANES>(xp, kp, yp + begin * H * W * C, T, H, W, C, kT, kH, kW, S, h, begin, end);
        else if (C % 8 == 0)
            forward_cv<8>(xp, kp, yp + begin * H * W * C, T, H, W, C, kT, kH, kW, S, h, begin, end);
        else
            forward_any_c(xp, kp, yp + begin * H * W * C, N, T, H, W, C, kT, kH, kW, S, h, begin, end);
    });
    return y;
}

at::Tensor stripe_depthwise_weight_grad(const at::Tensor &x, const at::Tensor &grad_out, at::IntArrayRef kernel_size,
                                        int64_t num_stripes) {
    check_float_cpu(x, "x");
    check_float_cpu(grad_out, "grad_out");
    TORCH_CHECK(x.dim() == 5 && grad_out.sizes() == x.sizes(), "grad_out must match x (N, C, T, H, W): ",
                grad_out.sizes(), " vs ", x.sizes());
    TORCH_CHECK(kernel_size.size() == 3, "kernel_size must be (kT, kH, kW)");
    const i64 N = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
    const i64 kT = kernel_size[0], kH = kernel_size[1], kW = kernel_size[2], S = num_stripes;
    TORCH_CHECK(kT % 2 == 1 && kH % 2 == 1 && kW % 2 == 1 && kT > 0 && kH > 0 && kW > 0,
                "kernel sizes must be odd and positive, got ", kernel_size);
    TORCH_CHECK(S >= 1 && H >= S, "need 1 <= num_stripes <= H, got num_stripes=", S, " for H=", H);
    const i64 h = std::max<i64>(1, H / S), K = kT * kH * kW * C, frames = N * T, chunks = chunk_count(frames);
    const at::Tensor xc = x.contiguous(kCL), g = grad_out.contiguous(kCL);
    at::Tensor acc = at::zeros({chunks, K}, x.options().dtype(at::kDouble));
    at::Tensor scratch = at::empty({chunks, K}, x.options());
    const float *xp = xc.data_ptr<float>(), *gp = g.data_ptr<float>();
    double *ap = acc.data_ptr<double>();
    float *sp = scratch.data_ptr<float>();
    at::parallel_for(0, chunks, 1, [&](i64 begin, i64 end) {
        for (i64 i = begin; i < end; ++i) {
            const i64 f0 = frames * i / chunks, f1 = frames * (i + 1) / chunks;
            if (C % 8 == 0)
                weight_grad_c8(xp, gp, ap + i * K, sp + i * K, T, H, W, C, kT, kH, kW, S, h, f0, f1);
            else
                weight_grad_any_c(xp, gp, ap + i * K, sp + i * K, N, T, H, W, C, kT, kH, kW, S, h, f0, f1);
        }
    });
    return kernel_from_partials(acc, kT, kH, kW, C);
}

at::Tensor stem_conv3d_forward(const at::Tensor &x, const at::Tensor &weight, const c10::optional<at::Tensor> &bias,
                               bool relu) {
    check_float_cpu(x, "x");
    check_float_cpu(weight, "weight");
    TORCH_CHECK(x.dim() == 5 && x.size(1) == 1, "x must be (N, 1, T, H, W), got ", x.sizes());
    TORCH_CHECK(weight.dim() == 5 && weight.size(1) == 1, "weight must be (C, 1, kT, kH, kW), got ", weight.sizes());
    TORCH_CHECK(weight.size(2) % 2 == 1 && weight.size(3) % 2 == 1 && weight.size(4) % 2 == 1,
                "kernel sizes must be odd, got ", weight.sizes());
    const i64 N = x.size(0), T = x.size(2), H = x.size(3), W = x.size(4), C = weight.size(0);
    const i64 kT = weight.size(2), kH = weight.size(3), kW = weight.size(4);
    at::Tensor b;
    if (bias.has_value()) {
        check_float_cpu(*bias, "bias");
        TORCH_CHECK(bias->dim() == 1 && bias->size(0) == C, "bias must be (", C, "), got ", bias->sizes());
        b = bias->contiguous();
    }
    const at::Tensor xc = x.contiguous(), k = kernel_channels_last(weight);
    at::Tensor y = at::empty({N, C, T, H, W}, x.options().memory_format(kCL));
    if (y.numel() == 0) return y;
    const float *xp = xc.data_ptr<float>(), *kp = k.data_ptr<float>(), *bp = b.defined() ? b.data_ptr<float>() : nullptr;
    float *yp = y.data_ptr<float>();
    at::parallel_for(0, N * T, 1, [&](i64 begin, i64 end) {
        stem_forward_range(xp, kp, bp, relu ? 1 : 0, yp + begin * H * W * C, T, H, W, C, kT, kH, kW, begin, end);
    });
    return y;
}

at::Tensor stem_conv3d_weight_grad(const at::Tensor &x, const at::Tensor &grad_out, at::IntArrayRef kernel_size) {
    check_float_cpu(x, "x");
    check_float_cpu(grad_out, "grad_out");
    TORCH_CHECK(x.dim() == 5 && x.size(1) == 1, "x must be (N, 1, T, H, W), got ", x.sizes());
    TORCH_CHECK(grad_out.dim() == 5 && grad_out.size(0) == x.size(0) && grad_out.size(2) == x.size(2) &&
                    grad_out.size(3) == x.size(3) && grad_out.size(4) == x.size(4),
                "grad_out must be (N, C, T, H, W) matching x, got ", grad_out.sizes(), " for x ", x.sizes());
    TORCH_CHECK(kernel_size.size() == 3, "kernel_size must be (kT, kH, kW)");
    const i64 N = x.size(0), T = x.size(2), H = x.size(3), W = x.size(4), C = grad_out.size(1);
    const i64 kT = kernel_size[0], kH = kernel_size[1], kW = kernel_size[2];
    TORCH_CHECK(kT % 2 == 1 && kH % 2 == 1 && kW % 2 == 1 && kT > 0 && kH > 0 && kW > 0,
                "kernel sizes must be odd and positive, got ", kernel_size);
    const i64 K = kT * kH * kW * C, frames = N * T, chunks = chunk_count(frames);
    const at::Tensor xc = x.contiguous(), g = grad_out.contiguous(kCL);
    at::Tensor acc = at::zeros({chunks, K}, x.options().dtype(at::kDouble));
    at::Tensor scratch = at::empty({chunks, K}, x.options());
    const float *xp = xc.data_ptr<float>(), *gp = g.data_ptr<float>();
    double *ap = acc.data_ptr<double>();
    float *sp = scratch.data_ptr<float>();
    at::parallel_for(0, chunks, 1, [&](i64 begin, i64 end) {
        for (i64 i = begin; i < end; ++i)
            stem_weight_grad_range(xp, gp, ap + i * K, sp + i * K, T, H, W, C, kT, kH, kW, frames * i / chunks,
                                   frames * (i + 1) / chunks);
    });
    return kernel_from_partials(acc, kT, kH, kW, C);
}

/* out[j, :] = max of the 2x2 window at columns 2j, 2j + 1 of rows r0 and r1 (C channels each). */
static void pool_row_pair(const float *r0, const float *r1, float *out, i64 Wo, i64 C) {
    for (i64 j = 0; j < Wo; ++j) {
        const float *__restrict__ v0 = r0 + 2 * j * C, *__restrict__ v1 = v0 + C;
        const float *__restrict__ v2 = r1 + 2 * j * C, *__restrict__ v3 = v2 + C;
        float *__restrict__ o = out + j * C;
        for (i64 c = 0; c < C; ++c) {
            WINDOW_MAX(v0, v1, v2, v3, c, m, k)
            (void)k;
            o[c] = m;
        }
    }
}

at::Tensor max_pool_hw2_forward(const at::Tensor &x) {
    check_float_cpu(x, "x");
    TORCH_CHECK(x.dim() == 5, "x must be (N, C, T, H, W), got ", x.sizes());
    const i64 N = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
    const i64 Ho = H / 2, Wo = W / 2, F = N * T;
    const at::Tensor xc = x.contiguous(kCL);
    at::Tensor y = at::empty({N, C, T, Ho, Wo}, x.options().memory_format(kCL));
    if (y.numel() == 0) return y;
    const float *xp = xc.data_ptr<float>();
    float *yp = y.data_ptr<float>();
    at::parallel_for(0, F * Ho, 1, [&](i64 begin, i64 end) {
        for (i64 fr = begin; fr < end; ++fr) {
            const i64 f = fr / Ho, i = fr % Ho;
            const float *r0 = xp + ((f * H + 2 * i) * W) * C;
            pool_row_pair(r0, r0 + W * C, yp + ((f * Ho + i) * Wo) * C, Wo, C);
        }
    });
    return y;
}

at::Tensor max_pool_hw2_backward(const at::Tensor &x, const at::Tensor &grad_out) {
    check_float_cpu(x, "x");
    check_float_cpu(grad_out, "grad_out");
    TORCH_CHECK(x.dim() == 5, "x must be (N, C, T, H, W), got ", x.sizes());
    const i64 N = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
    const i64 Ho = H / 2, Wo = W / 2, F = N * T;
    TORCH_CHECK(grad_out.dim() == 5 && grad_out.size(0) == N && grad_out.size(1) == C && grad_out.size(2) == T &&
                    grad_out.size(3) == Ho && grad_out.size(4) == Wo,
                "grad_out must be (N, C, T, H // 2, W // 2), got ", grad_out.sizes(), " for x ", x.sizes());
    const at::Tensor xc = x.contiguous(kCL), gy = grad_out.contiguous(kCL);
    at::Tensor gx = at::empty(x.sizes(), x.options().memory_format(kCL));
    if (gx.numel() == 0) return gx;
    if (Ho == 0 || Wo == 0) return gx.zero_();
    const float *xp = xc.data_ptr<float>(), *gp = gy.data_ptr<float>();
    float *gxp = gx.data_ptr<float>();
    at::parallel_for(0, F * Ho, 1, [&](i64 begin, i64 end) {
        for (i64 fr = begin; fr < end; ++fr) {
            const i64 f = fr / Ho, i = fr % Ho;
            const float *r0 = xp + ((f * H + 2 * i) * W) * C, *r1 = r0 + W * C;
            float *q0 = gxp + ((f * H + 2 * i) * W) * C, *q1 = q0 + W * C;
            const float *g = gp + ((f * Ho + i) * Wo) * C;
            for (i64 j = 0; j < Wo; ++j) {
                const float *v0 = r0 + 2 * j * C, *v1 = v0 + C, *v2 = r1 + 2 * j * C, *v3 = v2 + C;
                float *d0 = q0 + 2 * j * C, *d1 = d0 + C, *d2 = q1 + 2 * j * C, *d3 = d2 + C;
                const float *gj = g + j * C;
                i64 c = 0;
                for (; c + 8 <= C; c += 8)
                    window_grad8(v0 + c, v1 + c, v2 + c, v3 + c, gj + c, d0 + c, d1 + c, d2 + c, d3 + c);
                for (; c < C; ++c) {
                    WINDOW_MAX(v0, v1, v2, v3, c, m, k)
                    (void)m;
                    const float gv = gj[c];
                    d0[c] = k == 0.0f ? gv : 0.0f;
                    d1[c] = k == 1.0f ? gv : 0.0f;
                    d2[c] = k == 2.0f ? gv : 0.0f;
                    d3[c] = k == 3.0f ? gv : 0.0f;
                }
            }
            /* an odd last column is outside every window */
            for (i64 q = 2 * Wo * C; q < W * C; ++q) q0[q] = q1[q] = 0.0f;
        }
    });
    if (H % 2) gx.narrow(3, H - 1, 1).zero_();  /* an odd last row likewise */
    return gx;
}

/* ---- training BatchNorm + ReLU written into a concatenation ------------------------------- */

/* scale = weight / sqrt(var + eps), shift = bias - mean * scale: the one definition the forward and
 * the backward (which recomputes the ReLU mask from x) share, so both see the same mask. */
void bn_scale_shift(const at::Tensor &mean, const at::Tensor &var, double eps, const at::Tensor &weight,
                    const at::Tensor &bias, std::vector<float> &scale, std::vector<float> &shift,
                    std::vector<double> &invstd) {
    const i64 C = mean.numel();
    const float *m = mean.data_ptr<float>(), *v = var.data_ptr<float>();
    const at::Tensor w = weight.contiguous(), b = bias.contiguous();
    const float *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
    scale.resize(C);
    shift.resize(C);
    invstd.resize(C);
    for (i64 c = 0; c < C; ++c) {
        invstd[c] = 1.0 / std::sqrt((double)v[c] + eps);
        scale[c] = (float)((double)wp[c] * invstd[c]);
        shift[c] = bp[c] - m[c] * scale[c];
    }
}

/* Per-channel sums over P rows of C (row stride ld) in float64, from float partial sums over blocks
 * of ROWS rows: f(row_of_a, row_of_b, c, &s0, &s1) adds its two terms. */
template <typename Body>
std::pair<std::vector<double>, std::vector<double>> channel_sums(i64 P, i64 C, const Body &body) {
    const i64 chunks = chunk_count(P);
    std::vector<double> part0(chunks * C, 0.0), part1(chunks * C, 0.0);
    at::parallel_for(0, chunks, 1, [&](i64 cb, i64 ce) {
        std::vector<float> f0(C), f1(C);
        for (i64 ch = cb; ch < ce; ++ch) {
            const i64 begin = P * ch / chunks, end = P * (ch + 1) / chunks;
            double *s0 = part0.data() + ch * C, *s1 = part1.data() + ch * C;
            for (i64 p0 = begin; p0 < end; p0 += ROWS) {
                const i64 p1 = std::min<i64>(p0 + ROWS, end);
                std::fill(f0.begin(), f0.end(), 0.0f);
                std::fill(f1.begin(), f1.end(), 0.0f);
                for (i64 p = p0; p < p1; ++p) body(p, f0.data(), f1.data());
                for (i64 c = 0; c < C; ++c) {
                    s0[c] += f0[c];
                    s1[c] += f1[c];
                }
            }
        }
    });
    std::vector<double> sum0(C, 0.0), sum1(C, 0.0);
    for (i64 ch = 0; ch < chunks; ++ch)
        for (i64 c = 0; c < C; ++c) {
            sum0[c] += part0[ch * C + c];
            sum1[c] += part1[ch * C + c];
        }
    return {sum0, sum1};
}

void check_bn_args(at::TensorList inputs, at::TensorList weights, at::TensorList biases, at::ArrayRef<double> eps) {
    TORCH_CHECK(!inputs.empty(), "batch_norm_relu_concat needs at least one BatchNorm input");
    TORCH_CHECK(weights.size() == inputs.size() && biases.size() == inputs.size() && eps.size() == inputs.size(),
                "inputs, weights, biases and eps must have the same length");
    for (size_t i = 0; i < inputs.size(); ++i) {
        check_float_cpu(inputs[i], "inputs[i]");
        check_float_cpu(weights[i], "weights[i]");
        check_float_cpu(biases[i], "biases[i]");
        TORCH_CHECK(inputs[i].dim() == 5, "inputs must be (N, C, T, H, W), got ", inputs[i].sizes());
        TORCH_CHECK(weights[i].numel() == inputs[i].size(1) && biases[i].numel() == inputs[i].size(1),
                    "weights[i] and biases[i] must have one value per channel of inputs[i]");
        for (int d : {0, 2, 3, 4})
            TORCH_CHECK(inputs[i].size(d) == inputs[0].size(d), "all inputs must share N, T, H and W");
        TORCH_CHECK(inputs[i].numel() > inputs[i].size(1), "BatchNorm needs more than one value per channel");
    }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_relu_concat_forward(
    at::TensorList inputs, at::TensorList weights, at::TensorList biases, at::ArrayRef<double> eps,
    at::TensorList passthrough) {
    check_bn_args(inputs, weights, biases, eps);
    const at::Tensor &ref = inputs[0];
    const i64 N = ref.size(0), T = ref.size(2), H = ref.size(3), W = ref.size(4), P = N * T * H * W;
    i64 total = 0, bn_channels = 0;
    for (const auto &x : inputs) bn_channels += x.size(1);
    total = bn_channels;
    for (const auto &t : passthrough) {
        TORCH_CHECK(t.dim() == 5 && t.size(0) == N && t.size(2) == T && t.size(3) == H && t.size(4) == W,
                    "passthrough tensors must share N, T, H and W with the inputs, got ", t.sizes());
        total += t.size(1);
    }
    at::Tensor out = at::empty({N, total, T, H, W}, ref.options().memory_format(kCL));
    at::Tensor mean_all = at::empty({bn_channels}, ref.options()), var_all = at::empty({bn_channels}, ref.options());
    float *op = out.data_ptr<float>();
    i64 offset = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
        const at::Tensor x = inputs[i].contiguous(kCL);
        const i64 C = x.size(1);
        const float *xp = x.data_ptr<float>();
        std::vector<float> first(xp, xp + C);  // shift: no cancellation when |mean| >> std
        const float *rp = first.data();
        auto sums = channel_sums(P, C, [&](i64 p, float *s0, float *s1) {
            const float *row = xp + p * C;
            for (i64 c = 0; c < C; ++c) {
                const float d = row[c] - rp[c];
                s0[c] += d;
                s1[c] += d * d;
            }
        });
        at::Tensor mean = mean_all.narrow(0, offset, C), var = var_all.narrow(0, offset, C);
        float *mp = mean.data_ptr<float>(), *vp = var.data_ptr<float>();
        for (i64 c = 0; c < C; ++c) {
            const double sm = sums.first[c] / P;
            mp[c] = (float)(rp[c] + sm);
            vp[c] = (float)std::max(0.0, sums.second[c] / P - sm * sm);
        }
        std::vector<float> scale, shift;
        std::vector<double> invstd;
        bn_scale_shift(mean.contiguous(), var.contiguous(), eps[i], weights[i], biases[i], scale, shift, invstd);
        const float *sc = scale.data(), *sh = shift.data();
        const i64 off = offset;
        at::parallel_for(0, P, 2048, [&](i64 begin, i64 end) {
            for (i64 p = begin; p < end; ++p) {
                const float *__restrict__ row = xp + p * C;
                float *__restrict__ o = op + p * total + off;
                for (i64 c = 0; c < C; ++c) {
                    const float v = row[c] * sc[c] + sh[c];
                    o[c] = v > 0.0f ? v : 0.0f;
                }
            }
        });
        offset += C;
    }
    for (const auto &t : passthrough) {
        out.narrow(1, offset, t.size(1)).copy_(t);
        offset += t.size(1);
    }
    return {out, mean_all, var_all};
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> batch_norm_relu_concat_backward(
    const at::Tensor &grad_out, at::TensorList inputs, at::TensorList weights, at::TensorList biases,
    const at::Tensor &mean_all, const at::Tensor &var_all, at::ArrayRef<double> eps) {
    check_bn_args(inputs, weights, biases, eps);
    check_float_cpu(grad_out, "grad_out");
    const at::Tensor &ref = inputs[0];
    const i64 N = ref.size(0), T = ref.size(2), H = ref.size(3), W = ref.size(4), P = N * T * H * W;
    TORCH_CHECK(grad_out.dim() == 5 && grad_out.size(0) == N && grad_out.size(2) == T && grad_out.size(3) == H &&
                    grad_out.size(4) == W,
                "grad_out must be (N, C_total, T, H, W), got ", grad_out.sizes());
    const i64 total = grad_out.size(1);
    const at::Tensor g = grad_out.contiguous(kCL), mean_c = mean_all.contiguous(), var_c = var_all.contiguous();
    const float *gp = g.data_ptr<float>();
    std::vector<at::Tensor> grad_inputs;
    at::Tensor grad_weight = at::empty({mean_all.numel()}, ref.options());
    at::Tensor grad_bias = at::empty({mean_all.numel()}, ref.options());
    i64 offset = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
        const at::Tensor x = inputs[i].contiguous(kCL);
        const i64 C = x.size(1);
        TORCH_CHECK(offset + C <= total && offset + C <= mean_all.numel(), "grad_out has too few channels");
        const at::Tensor mean = mean_c.narrow(0, offset, C).contiguous(), var = var_c.narrow(0, offset, C).contiguous();
        std::vector<float> scale, shift;
        std::vector<double> invstd;
        bn_scale_shift(mean, var, eps[i], weights[i], biases[i], scale, shift, invstd);
        const float *xp = x.data_ptr<float>(), *sc = scale.data(), *sh = shift.data(), *mp = mean.data_ptr<float>();
        const i64 off = offset;
        // over positions where the ReLU passed: sum(g) and sum(g * (x - mean))
        auto sums = channel_sums(P, C, [&](i64 p, float *s0, float *s1) {
            const float *gr = gp + p * total + off, *xr = xp + p * C;
            for (i64 c = 0; c < C; ++c) {
                const float gm = xr[c] * sc[c] + sh[c] > 0.0f ? gr[c] : 0.0f;
                s0[c] += gm;
                s1[c] += gm * (xr[c] - mp[c]);
            }
        });
        // xhat = (x - mean) * invstd; dgamma = sum(g xhat), dbeta = sum(g);
        // dx = gamma * invstd * (g - dbeta / P - xhat * dgamma / P) = A g + B x + K per channel.
        const at::Tensor wc = weights[i].contiguous();
        const float *wp = wc.data_ptr<float>();
        std::vector<float> A(C), B(C), K(C);
        float *gw = grad_weight.data_ptr<float>() + offset, *gb = grad_bias.data_ptr<float>() + offset;
        for (i64 c = 0; c < C; ++c) {
            const double dgamma = invstd[c] * sums.second[c], a = (double)wp[c] * invstd[c];
            const double b = -a * invstd[c] * dgamma / P;
            A[c] = (float)a;
            B[c] = (float)b;
            K[c] = (float)(-a * sums.first[c] / P - b * (double)mp[c]);
            gw[c] = (float)dgamma;
            gb[c] = (float)sums.first[c];
        }
        at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(kCL));
        float *dp = dx.data_ptr<float>();
        const float *Ap = A.data(), *Bp = B.data(), *Kp = K.data();
        at::parallel_for(0, P, 2048, [&](i64 begin, i64 end) {
            for (i64 p = begin; p < end; ++p) {
                const float *__restrict__ gr = gp + p * total + off, *__restrict__ xr = xp + p * C;
                float *__restrict__ o = dp + p * C;
                for (i64 c = 0; c < C; ++c) {
                    const float gm = xr[c] * sc[c] + sh[c] > 0.0f ? gr[c] : 0.0f;
                    o[c] = gm * Ap[c] + xr[c] * Bp[c] + Kp[c];
                }
            }
        });
        grad_inputs.push_back(dx);
        offset += C;
    }
    return {grad_inputs, grad_weight, grad_bias};
}

/* ---- dense 'same' conv3d (stride 1, zero padding k // 2), + bias, + optional ReLU --------------
 * y[n, t, r, w, o] = act(bias[o] + sum_{a, b, d, i} x[n, t+a-pt, r+b-ph, w+d-pw, i] * k[a, b, d, i, o]).
 * Two schedules: per-frame column vectors (kT == 1, frames >= 16 wide, channels in multiples of 8)
 * and output-channel vectors (everything else: the narrow branches' temporal convs, 16x11 frames,
 * channel counts such as 10). oneDNN blocks output channels by 16 and runs these narrow convs at
 * a fraction of its speed (docs/performance.md). */

/* Column schedule, one frame: y[f, r, w, o] = act(bias[o] + sum_{b, d, i} x[f, r+b-ph, w+d-pw, i] * k[b, d, i, o]). Vectorised
 * over V output columns: each frame is first transposed (V x V register tiles) into zero-padded
 * channel-planar rows, so V neighbouring columns of one input channel are one vector load, and
 * every (tap, input channel) is one FMA per output channel with a broadcast weight; two column
 * blocks share each weight broadcast. Output tiles go back to channels-last through the same
 * in-register transpose, with bias and ReLU applied before. Needs C_in % V == 0 and
 * C_out % CG == 0. */
/* NB neighbouring column blocks of V columns (output row r, channels g0 .. g0 + CG) share every
 * weight broadcast: NB * CG accumulators, NB loads and CG broadcasts per (tap, input channel). */
template <int V, int CG, int NB>
static inline void frame_conv_block(const float *__restrict__ xT, const float *__restrict__ k,
                                    const float *__restrict__ bias, bool relu, float *__restrict__ y, i64 r, i64 w0,
                                    i64 g0, i64 H, i64 W, i64 Cin, i64 Cout, i64 kH, i64 kW, i64 L) {
    typedef typename fvec<V>::type vec;
    const i64 ph = kH / 2, b0 = max64(0, ph - r), b1 = min64(kH, H - r + ph);
    vec acc[NB][CG];
    for (int c = 0; c < CG; ++c)
        for (int q = 0; q < NB; ++q) acc[q][c] = (vec){} + (bias ? bias[g0 + c] : 0.0f);
    for (i64 b = b0; b < b1; ++b) {
        const float *xr = xT + ((r + b - ph) * Cin) * L + w0;
        const float *kb = k + (b * kW) * Cin * Cout + g0;
        for (i64 d = 0; d < kW; ++d) {
            for (i64 i = 0; i < Cin; ++i) {
                vec xv[NB];
                for (int q = 0; q < NB; ++q) xv[q] = *(const vec *)(xr + i * L + d + q * V);
                const float *kp = kb + (d * Cin + i) * Cout;
                for (int c = 0; c < CG; ++c) {
                    const float kc = kp[c];
                    for (int q = 0; q < NB; ++q) acc[q][c] += xv[q] * kc;
                }
            }
        }
    }
    for (int q = 0; q < NB; ++q) {
        vec t[V];
        for (int c = 0; c < V; ++c)
            t[c] = c >= CG ? (vec){} : (relu ? (acc[q][c] > 0.0f ? acc[q][c] : (vec){}) : acc[q][c]);
        transpose_tile<V>(t); /* t[j] = the channels g0.. of column w0 + q * V + j */
        const i64 wq = w0 + q * V, cols = min64(V, W - wq);
        float *yr = y + (r * W + wq) * Cout + g0;
        for (i64 j = 0; j < cols; ++j) std::memcpy(yr + j * Cout, &t[j], sizeof(float) * CG);
    }
}

/* The most column blocks that share a broadcast: NB * CG accumulators plus NB inputs fit the
 * 32 AVX-512 registers up to NB = 3 at CG = 8; the 16 AVX2 registers hold one block. */
#define FRAME_NB (WIDE_LANES == 16 ? 3 : 1)

template <int V, int CG>
static void frame_conv_frame(const float *__restrict__ x, const float *__restrict__ k, const float *__restrict__ bias,
                             bool relu, float *__restrict__ y, i64 H, i64 W, i64 Cin, i64 Cout, i64 kH, i64 kW,
                             float *__restrict__ xT, i64 L) {
    typedef typename fvec<V>::type vec;
    const i64 pw = kW / 2, Wv = (W + V - 1) / V * V;
    /* xT[(r * Cin + i) * L + pw + w] = x[r, w, i]; columns past W are written as zeros */
    for (i64 r = 0; r < H; ++r) {
        for (i64 w0 = 0; w0 < Wv; w0 += V) {
            const i64 cols = min64(V, W - w0);
            for (i64 c0 = 0; c0 < Cin; c0 += V) {
                vec t[V];
                for (int j = 0; j < V; ++j)
                    t[j] = j < cols ? *(const vec *)(x + (r * W + w0 + j) * Cin + c0) : (vec){};
                transpose_tile<V>(t);
                for (int c = 0; c < V; ++c) *(vec *)(xT + (r * Cin + c0 + c) * L + pw + w0) = t[c];
            }
        }
    }
    constexpr int NB = CG == 8 ? FRAME_NB : 1;
    for (i64 r = 0; r < H; ++r) {
        for (i64 g0 = 0; g0 < Cout; g0 += CG) {
            i64 w0 = 0;
            for (; w0 + NB * V <= Wv; w0 += NB * V)
                frame_conv_block<V, CG, NB>(xT, k, bias, relu, y, r, w0, g0, H, W, Cin, Cout, kH, kW, L);
            if constexpr (NB > 2)
                if (w0 + 2 * V <= Wv) {
                    frame_conv_block<V, CG, 2>(xT, k, bias, relu, y, r, w0, g0, H, W, Cin, Cout, kH, kW, L);
                    w0 += 2 * V;
                }
            if constexpr (NB > 1)
                if (w0 < Wv) frame_conv_block<V, CG, 1>(xT, k, bias, relu, y, r, w0, g0, H, W, Cin, Cout, kH, kW, L);
        }
    }
}

/* Frames [begin, end) of the column schedule; `y` points at frame `begin`'s output, `xT` is
 * zero-filled scratch of frame_conv_scratch() floats (only its columns [pw, pw + Wv) are written,
 * so its margins stay zero across frames). */
template <int V>
static void frame_conv_range(const float *x, const float *k, const float *bias, bool relu, float *y, i64 H, i64 W,
                             i64 Cin, i64 Cout, i64 kH, i64 kW, i64 begin, i64 end, float *xT) {
    const i64 L = (W + V - 1) / V * V + kW - 1;
    for (i64 f = begin; f < end; ++f) {
        const float *xf = x + f * H * W * Cin;
        float *yf = y + (f - begin) * H * W * Cout;
        if (Cout % 16 == 0 && V == 16)
            frame_conv_frame<V, 16>(xf, k, bias, relu, yf, H, W, Cin, Cout, kH, kW, xT, L);
        else
            frame_conv_frame<V, 8>(xf, k, bias, relu, yf, H, W, Cin, Cout, kH, kW, xT, L);
    }
}

/* Output-channel schedule: PB output columns of one row share every weight vector load; each
 * (column, tap, input channel) is one broadcast and G FMAs (G vectors of V output channels).
 * Taps outside the frame or the sequence read a zero row (or are skipped whole), so every
 * channel count and frame size works. `k` is (kT, kH, kW, Cin, Cp) and `bias` (Cp,), Cp = the
 * output channels rounded up to G * V with zeros; `y` points at frame `begin`'s output. */
template <int V, int G, int PB>
static void conv_cv_range(const float *__restrict__ x, const float *__restrict__ k, const float *__restrict__ bias,
                          bool relu, float *__restrict__ y, i64 T, i64 H, i64 W, i64 Cin, i64 Cout, i64 Cp, i64 kT,
                          i64 kH, i64 kW, const float *zeros, i64 begin, i64 end) {
    typedef typename fvec<V>::type vec;
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    for (i64 f = begin; f < end; ++f) {
        const i64 n = f / T, t = f % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        for (i64 r = 0; r < H; ++r) {
            const i64 b0 = max64(0, ph - r), b1 = min64(kH, H - r + ph);
            for (i64 w0 = 0; w0 < W; w0 += PB) {
                const i64 cols = min64(PB, W - w0);
                for (i64 o0 = 0; o0 < Cp; o0 += G * V) {
                    vec acc[PB][G];
                    for (int g = 0; g < G; ++g) {
                        const vec b = *(const vec *)(bias + o0 + g * V);
                        for (int j = 0; j < PB; ++j) acc[j][g] = b;
                    }
                    for (i64 a = a0; a < a1; ++a) {
                        for (i64 b = b0; b < b1; ++b) {
                            const float *xr = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * Cin;
                            for (i64 d = 0; d < kW; ++d) {
                                const float *px[PB];
                                for (int j = 0; j < PB; ++j) {
                                    const i64 c = w0 + j + d - pw;
                                    px[j] = (j < cols && c >= 0 && c < W) ? xr + c * Cin : zeros;
                                }
                                const float *kp = k + (((a * kH + b) * kW + d) * Cin) * Cp + o0;
                                for (i64 i = 0; i < Cin; ++i) {
                                    vec kv[G];
                                    for (int g = 0; g < G; ++g) kv[g] = *(const vec *)(kp + i * Cp + g * V);
                                    for (int j = 0; j < PB; ++j) {
                                        const float xs = px[j][i];
                                        for (int g = 0; g < G; ++g) acc[j][g] += xs * kv[g];
                                    }
                                }
                            }
                        }
                    }
                    for (i64 j = 0; j < cols; ++j) {
                        float *yo = y + (((f - begin) * H + r) * W + w0 + j) * Cout + o0;
                        for (int g = 0; g < G; ++g) {
                            const i64 m = min64(V, Cout - o0 - g * V);
                            if (m <= 0) break;
                            vec v = acc[j][g];
                            if (relu) v = v > 0.0f ? v : (vec){};
                            if (m == V)
                                *(vec *)(yo + g * V) = v;
                            else
                                std::memcpy(yo + g * V, &v, sizeof(float) * m);
                        }
                    }
                }
            }
        }
    }
}

/* Lanes and vectors per step of the output-channel schedule for Cout output channels. */
static void conv_cv_shape(i64 Cout, int *lanes, int *groups) {
    *lanes = Cout <= 8 ? 8 : WIDE_LANES;
    *groups = (int)min64(4, (Cout + *lanes - 1) / *lanes);
}

template <int V>
static void conv_cv_dispatch(int G, const float *x, const float *k, const float *bias, bool relu, float *y, i64 T,
                             i64 H, i64 W, i64 Cin, i64 Cout, i64 Cp, i64 kT, i64 kH, i64 kW, const float *zeros,
                             i64 begin, i64 end) {
    /* PB x G accumulators + G weight vectors stay within the 16 (AVX2) or 32 (AVX-512) registers */
    constexpr int R = V == 16 ? 24 : 12;
    switch (G) {
        case 1: conv_cv_range<V, 1, (R >= 8 ? 8 : R)>(x, k, bias, relu, y, T, H, W, Cin, Cout, Cp, kT, kH, kW, zeros, begin, end); break;
        case 2: conv_cv_range<V, 2, R / 2 / 2 * 2>(x, k, bias, relu, y, T, H, W, Cin, Cout, Cp, kT, kH, kW, zeros, begin, end); break;
        case 3: conv_cv_range<V, 3, R / 3>(x, k, bias, relu, y, T, H, W, Cin, Cout, Cp, kT, kH, kW, zeros, begin, end); break;
        default: conv_cv_range<V, 4, R / 4>(x, k, bias, relu, y, T, H, W, Cin, Cout, Cp, kT, kH, kW, zeros, begin, end); break;
    }
}

/* Lanes the frame conv vectorises over for these channel counts, 0 when it does not apply. */
static i64 frame_conv_lanes(i64 Cin, i64 Cout) {
    if (Cout % 8 != 0) return 0;
    if (Cin % WIDE_LANES == 0) return WIDE_LANES;
    return Cin % 8 == 0 ? 8 : 0;
}

/* ---- inference tail of a block: joint pointwise conv + ReLU, concatenation, fuse conv + ReLU -- */

#define PB 8 /* positions per block: 8 independent accumulator chains cover the FMA latency */

/* out[j, :] = act(bias + sum_k v[j, k] * wt[k, :]) for j < PB; v rows have stride K (PB rows,
 * unused ones zero), out rows stride ldo, only the first `rows` rows are stored. */
/* 8 lanes also on AVX-512: 16-lane blocks measured 15 % slower (each k step is load-bound on its
 * PB broadcasts either way, docs/performance.md) */
static void small_gemm(const float *__restrict__ v, i64 K, const float *__restrict__ wt,
                       const float *__restrict__ bias, i64 N, float *__restrict__ out, i64 ldo, i64 rows) {
    i64 ob = 0;
    for (; ob + 8 <= N; ob += 8) {
        const v8 b0 = LOAD8(bias + ob);
        v8 acc[PB];
        for (int j = 0; j < PB; ++j) acc[j] = b0;
        for (i64 k = 0; k < K; ++k) {
            const v8 w = LOAD8(wt + k * N + ob);
            for (int j = 0; j < PB; ++j) acc[j] += v[j * K + k] * w;
        }
        for (i64 j = 0; j < rows; ++j) {
            float *o = out + j * ldo + ob;
            STORE8(o, acc[j]);
            for (int q = 0; q < 8; ++q) o[q] = o[q] > 0.0f ? o[q] : 0.0f;
        }
    }
    for (; ob < N; ++ob) { /* leftover output channels (N not a multiple of 8) */
        for (i64 j = 0; j < rows; ++j) {
            float s = bias[ob];
            for (i64 k = 0; k < K; ++k) s += v[j * K + k] * wt[k * N + ob];
            out[j * ldo + ob] = s < 0.0f ? 0.0f : s;
        }
    }
}

/* A block's inference tail over positions: the direct branches' rows and the joint rows (through
 * the joint pointwise conv + ReLU when `wj` is set) concatenated, then the fuse conv + ReLU.
 * Position p of direct branch i is dp[i] + p * widths[i], of the joint jp + p * cj. */
struct Tail {
    std::vector<const float *> dp;
    std::vector<i64> widths;
    const float *jp;
    i64 cj;
    const float *wj, *bj;
    i64 cz;
    const float *wf, *bf;
    i64 K, cout;
    /* positions [p_begin, p_end) into out (out + p * cout); v: PB * K floats, jin: PB * max(cj, 1) */
    void rows(i64 p_begin, i64 p_end, float *out, float *v, float *jin) const {
        const i64 zoff = K - cz;
        for (i64 p0 = p_begin; p0 < p_end; p0 += PB) {
            const i64 nrows = std::min<i64>(PB, p_end - p0);
            for (i64 r = 0; r < nrows; ++r) {
                float *vr = v + r * K;
                i64 off = 0;
                for (size_t i = 0; i < dp.size(); ++i) {
                    std::memcpy(vr + off, dp[i] + (p0 + r) * widths[i], sizeof(float) * widths[i]);
                    off += widths[i];
                }
                if (cj && !wj) std::memcpy(vr + zoff, jp + (p0 + r) * cj, sizeof(float) * cj);
                if (cj && wj) std::memcpy(jin + r * cj, jp + (p0 + r) * cj, sizeof(float) * cj);
            }
            if (cj && wj) /* z written straight into its slot of the concatenated rows */
                small_gemm(jin, cj, wj, bj, cz, v + zoff, K, nrows);
            small_gemm(v, K, wf, bf, cout, out + p0 * cout, cout, nrows);
        }
    }
};

/* (out, in, 1, 1, 1) or (out, in) conv weight -> (in, out) contiguous */
at::Tensor transposed_matrix(const at::Tensor &w) { return w.reshape({w.size(0), -1}).t().contiguous(); }

/* The fuse conv of a block's tail, checked against the K concatenated branch channels: its
 * (K, C_out) matrix and (C_out,) bias. */
std::pair<at::Tensor, at::Tensor> fuse_matrix(const at::Tensor &fuse_weight, const at::Tensor &fuse_bias, i64 K) {
    check_float_cpu(fuse_weight, "fuse_weight");
    check_float_cpu(fuse_bias, "fuse_bias");
    TORCH_CHECK(fuse_weight.size(1) == K && fuse_weight.numel() == fuse_weight.size(0) * K,
                "fuse_weight takes ", fuse_weight.size(1), " channels, the branches give ", K);
    TORCH_CHECK(fuse_bias.numel() == fuse_weight.size(0), "fuse_bias must be (C_out,)");
    return {transposed_matrix(fuse_weight), fuse_bias.contiguous()};
}

at::Tensor block_tail_forward(at::TensorList direct, const c10::optional<at::Tensor> &joint,
                              const c10::optional<at::Tensor> &joint_weight,
                              const c10::optional<at::Tensor> &joint_bias, const at::Tensor &fuse_weight,
                              const at::Tensor &fuse_bias) {
    TORCH_CHECK(!direct.empty() || joint.has_value(), "block_tail needs at least one branch");
    const at::Tensor &ref = direct.empty() ? *joint : direct[0];
    check_float_cpu(ref, "branch output");
    TORCH_CHECK(ref.dim() == 5, "branch outputs must be (N, C, T, H, W), got ", ref.sizes());
    const i64 N = ref.size(0), T = ref.size(2), H = ref.size(3), W = ref.size(4), P = N * T * H * W;
    std::vector<at::Tensor> rows;
    std::vector<i64> widths;
    i64 K = 0;
    for (const auto &d : direct) {
        check_float_cpu(d, "direct[i]");
        TORCH_CHECK(d.dim() == 5 && d.size(0) == N && d.size(2) == T && d.size(3) == H && d.size(4) == W,
                    "direct branch outputs must share N, T, H, W, got ", d.sizes());
        rows.push_back(d.contiguous(kCL));
        widths.push_back(d.size(1));
        K += d.size(1);
    }
    at::Tensor j, wj, bj;
    i64 cj = 0, cz = 0;
    if (joint.has_value()) {
        check_float_cpu(*joint, "joint");
        TORCH_CHECK(joint->dim() == 5 && joint->size(0) == N && joint->size(2) == T && joint->size(3) == H &&
                        joint->size(4) == W, "joint must share N, T, H, W, got ", joint->sizes());
        j = joint->contiguous(kCL);
        cj = j.size(1);
        cz = cj;
        if (joint_weight.has_value()) {
            check_float_cpu(*joint_weight, "joint_weight");
            TORCH_CHECK(joint_weight->size(1) == cj && joint_weight->numel() == joint_weight->size(0) * cj,
                        "joint_weight must be (C_z, C_joint[, 1, 1, 1]), got ", joint_weight->sizes());
            TORCH_CHECK(joint_bias.has_value() && joint_bias->numel() == joint_weight->size(0),
                        "joint_bias must be (C_z,)");
            wj = transposed_matrix(*joint_weight);
            bj = joint_bias->contiguous();
            cz = joint_weight->size(0);
        }
    }
    K += cz;
    at::Tensor wf, bf;
    std::tie(wf, bf) = fuse_matrix(fuse_weight, fuse_bias, K);
    const i64 cout = wf.size(1);
    at::Tensor out = at::empty({N, cout, T, H, W}, ref.options().memory_format(kCL));
    if (P == 0) return out;
    std::vector<const float *> dp;
    for (const auto &r : rows) dp.push_back(r.data_ptr<float>());
    const float *jp = j.defined() ? j.data_ptr<float>() : nullptr, *wjp = wj.defined() ? wj.data_ptr<float>() : nullptr;
    const float *bjp = bj.defined() ? bj.data_ptr<float>() : nullptr;
    const float *wfp = wf.data_ptr<float>(), *bfp = bf.data_ptr<float>();
    float *op = out.data_ptr<float>();
    const i64 blocks = (P + PB - 1) / PB;
    const Tail tail{dp, widths, jp, cj, wjp, bjp, cz, wfp, bfp, K, cout};
    at::parallel_for(0, blocks, 16, [&](i64 begin, i64 end) {
        std::vector<float> v(PB * K, 0.0f), jin(PB * std::max<i64>(cj, 1), 0.0f);
        tail.rows(begin * PB, std::min<i64>(end * PB, P), op, v.data(), jin.data());
    });
    return out;
}

void check_conv_same(i64 Cin, const at::Tensor &weight, const c10::optional<at::Tensor> &bias, const char *name) {
    check_float_cpu(weight, name);
    TORCH_CHECK(weight.dim() == 5 && weight.size(1) == Cin, name, " must be (C_out, C_in, kT, kH, kW) with C_in = ",
                Cin, ", got ", weight.sizes());
    TORCH_CHECK(weight.size(2) % 2 == 1 && weight.size(3) % 2 == 1 && weight.size(4) % 2 == 1, name,
                ": kernel sizes must be odd, got ", weight.sizes());
    if (bias.has_value()) {
        check_float_cpu(*bias, "bias");
        TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "bias must be (", weight.size(0),
                    "), got ", bias->sizes());
    }
}

/* A 'same' conv3d prepared for its schedule (weights laid out once per call) on frames H x W. */
struct SameConv {
    i64 Cin, Cout, kT, kH, kW, H, W, V, lanes = 8, groups = 1, Cp = 0;
    bool relu;
    at::Tensor k, b;
    SameConv(const at::Tensor &weight, const c10::optional<at::Tensor> &bias, bool relu_, i64 H_, i64 W_)
        : Cin(weight.size(1)), Cout(weight.size(0)), kT(weight.size(2)), kH(weight.size(3)), kW(weight.size(4)),
          H(H_), W(W_), relu(relu_) {
        V = (kT == 1 && W >= 16) ? frame_conv_lanes(Cin, Cout) : 0;
        if (V > 0) { /* column schedule: (kH, kW, C_in, C_out) */
            k = weight.select(2, 0).permute({2, 3, 1, 0}).contiguous();
            if (bias.has_value()) b = bias->contiguous();
            return;
        }
        int l, g;
        conv_cv_shape(Cout, &l, &g);
        lanes = l;
        groups = g;
        const i64 step = lanes * groups;
        Cp = (Cout + step - 1) / step * step;
        /* (kT, kH, kW, C_in, Cp) and (Cp,), zero-padded past C_out */
        k = at::constant_pad_nd(weight.permute({2, 3, 4, 1, 0}), {0, Cp - Cout}).contiguous();
        b = bias.has_value() ? at::constant_pad_nd(*bias, {0, Cp - Cout}).contiguous() : at::zeros({Cp}, weight.options());
    }
    /* floats of per-thread scratch (zero-filled by the caller) */
    i64 scratch() const { return V > 0 ? H * Cin * ((W + V - 1) / V * V + kW - 1) : Cin; }
    /* output frames [begin, end) of a (N * T, H, W, C_in) input into y (frame begin's output first) */
    void frames(const float *x, i64 T, i64 begin, i64 end, float *y, float *scr) const {
        const float *kp = k.data_ptr<float>(), *bp = b.defined() ? b.data_ptr<float>() : nullptr;
        if (V == 16)
            frame_conv_range<16>(x, kp, bp, relu, y, H, W, Cin, Cout, kH, kW, begin, end, scr);
        else if (V == 8)
            frame_conv_range<8>(x, kp, bp, relu, y, H, W, Cin, Cout, kH, kW, begin, end, scr);
        else if (lanes == 16)
            conv_cv_dispatch<16>(groups, x, kp, bp, relu, y, T, H, W, Cin, Cout, Cp, kT, kH, kW, scr, begin, end);
        else
            conv_cv_dispatch<8>(groups, x, kp, bp, relu, y, T, H, W, Cin, Cout, Cp, kT, kH, kW, scr, begin, end);
    }
};

at::Tensor conv3d_same_forward(const at::Tensor &x, const at::Tensor &weight, const c10::optional<at::Tensor> &bias,
                               bool relu) {
    check_float_cpu(x, "x");
    TORCH_CHECK(x.dim() == 5, "x must be (N, C_in, T, H, W), got ", x.sizes());
    check_conv_same(x.size(1), weight, bias, "conv3d_same weight");
    const i64 N = x.size(0), T = x.size(2), H = x.size(3), W = x.size(4), Cout = weight.size(0);
    at::Tensor y = at::empty({N, Cout, T, H, W}, x.options().memory_format(kCL));
    if (y.numel() == 0) return y;
    const at::Tensor xc = x.contiguous(kCL);
    const SameConv conv(weight, bias, relu, H, W);
    const float *xp = xc.data_ptr<float>();
    float *yp = y.data_ptr<float>();
    at::parallel_for(0, N * T, 1, [&](i64 begin, i64 end) {
        std::vector<float> scr((size_t)conv.scratch(), 0.0f);
        conv.frames(xp, T, begin, end, yp + begin * H * W * Cout, scr.data());
    });
    return y;
}

/* A whole asymmetric block at inference (every BN folded), one frame at a time: the temporal and
 * spatial branches (conv + bias + ReLU), the LSTC joint's stripe depthwise conv, then the tail
 * (joint pointwise conv + ReLU, concatenation, fuse conv + ReLU), and with `pool` the 2x2 max-pool
 * that follows the first two blocks. A frame's branch outputs live in per-thread scratch
 * (cache-resident, reused frame after frame), so the block writes only its (pooled) output: no
 * branch tensors, no page faults on fresh branch buffers. */
at::Tensor lstc_block_forward(const at::Tensor &x, const c10::optional<at::Tensor> &stem_weight,
                              const c10::optional<at::Tensor> &stem_bias,
                              const c10::optional<at::Tensor> &temporal_weight,
                              const c10::optional<at::Tensor> &temporal_bias,
                              const c10::optional<at::Tensor> &spatial_weight,
                              const c10::optional<at::Tensor> &spatial_bias,
                              const c10::optional<at::Tensor> &joint_weight, int64_t num_stripes,
                              const c10::optional<at::Tensor> &joint_pw_weight,
                              const c10::optional<at::Tensor> &joint_pw_bias, const at::Tensor &fuse_weight,
                              const at::Tensor &fuse_bias, bool pool) {
    check_float_cpu(x, "x");
    TORCH_CHECK(x.dim() == 5, "x must be (N, C, T, H, W), got ", x.sizes());
    const i64 N = x.size(0), T = x.size(2), H = x.size(3), W = x.size(4), F = N * T, HW = H * W;
    /* with a stem, x is its 1-channel input and the block reads the stem's output */
    const bool stem = stem_weight.has_value();
    i64 C = x.size(1);
    at::Tensor ks, bs;
    if (stem) {
        check_float_cpu(*stem_weight, "stem_weight");
        TORCH_CHECK(x.size(1) == 1 && stem_weight->dim() == 5 && stem_weight->size(1) == 1,
                    "a stem takes x (N, 1, T, H, W) and stem_weight (C, 1, kT, kH, kW), got ", x.sizes(), " and ",
                    stem_weight->sizes());
        TORCH_CHECK(stem_weight->size(2) % 2 == 1 && stem_weight->size(3) % 2 == 1 && stem_weight->size(4) % 2 == 1,
                    "stem kernel sizes must be odd, got ", stem_weight->sizes());
        C = stem_weight->size(0);
        ks = kernel_channels_last(*stem_weight);
        if (stem_bias.has_value()) {
            check_float_cpu(*stem_bias, "stem_bias");
            TORCH_CHECK(stem_bias->numel() == C, "stem_bias must be (", C, "), got ", stem_bias->sizes());
            bs = stem_bias->contiguous();
        }
    }
    std::vector<SameConv> convs;
    i64 window = 1; /* frames of block input each output frame reads (odd) */
    for (const auto &wb : {std::make_pair(temporal_weight, temporal_bias), std::make_pair(spatial_weight, spatial_bias)}) {
        if (!wb.first.has_value()) continue;
        check_conv_same(C, *wb.first, wb.second, "branch weight");
        convs.emplace_back(*wb.first, wb.second, true, H, W);
        window = std::max(window, wb.first->size(2));
    }
    at::Tensor kdw, wj, bj;
    i64 S = num_stripes, h = 1, cz = 0;
    if (joint_weight.has_value()) {
        check_float_cpu(*joint_weight, "joint_weight");
        TORCH_CHECK(joint_weight->dim() == 5 && joint_weight->size(1) == 1 && joint_weight->size(0) == C,
                    "joint_weight must be (C, 1, kT, kH, kW) with C = ", C, ", got ", joint_weight->sizes());
        TORCH_CHECK(joint_weight->size(2) % 2 == 1 && joint_weight->size(3) % 2 == 1 && joint_weight->size(4) % 2 == 1,
                    "kernel sizes must be odd, got ", joint_weight->sizes());
        window = std::max(window, joint_weight->size(2));
        TORCH_CHECK(num_stripes >= 1 && H >= num_stripes, "need 1 <= num_stripes <= H, got num_stripes=",
                    num_stripes, " for H=", H);
        TORCH_CHECK(joint_pw_weight.has_value() && joint_pw_bias.has_value(),
                    "the joint branch needs joint_pw_weight and joint_pw_bias");
        check_float_cpu(*joint_pw_weight, "joint_pw_weight");
        check_float_cpu(*joint_pw_bias, "joint_pw_bias");
        TORCH_CHECK(joint_pw_weight->size(1) == C && joint_pw_weight->numel() == joint_pw_weight->size(0) * C &&
                        joint_pw_bias->numel() == joint_pw_weight->size(0),
                    "joint_pw_weight must be (C_z, C, 1, 1, 1) with joint_pw_bias (C_z,), got ",
                    joint_pw_weight->sizes(), " and ", joint_pw_bias->sizes());
        kdw = kernel_channels_last(*joint_weight);
        wj = transposed_matrix(*joint_pw_weight);
        bj = joint_pw_bias->contiguous();
        cz = joint_pw_weight->size(0);
        h = std::max<i64>(1, H / S);
    }
    TORCH_CHECK(!convs.empty() || kdw.defined(), "lstc_block needs at least one branch");
    i64 K = cz;
    std::vector<i64> widths;
    for (const auto &c : convs) {
        widths.push_back(c.Cout);
        K += c.Cout;
    }
    at::Tensor wf, bf;
    std::tie(wf, bf) = fuse_matrix(fuse_weight, fuse_bias, K);
    const i64 cout = wf.size(1);
    const i64 Ho = pool ? H / 2 : H, Wo = pool ? W / 2 : W;
    at::Tensor out = at::empty({N, cout, T, Ho, Wo}, x.options().memory_format(kCL));
    if (out.numel() == 0) return out;
    const at::Tensor xc = x.contiguous(kCL);
    const float *xp = xc.data_ptr<float>(), *kp = kdw.defined() ? kdw.data_ptr<float>() : nullptr;
    float *op = out.data_ptr<float>();
    const float *ksp = ks.defined() ? ks.data_ptr<float>() : nullptr, *bsp = bs.defined() ? bs.data_ptr<float>() : nullptr;
    const i64 kTs = stem ? stem_weight->size(2) : 1, kHs = stem ? stem_weight->size(3) : 1;
    const i64 kWs = stem ? stem_weight->size(4) : 1, mid = window / 2, R = 8, HWC = HW * C;
    at::parallel_for(0, F, 1, [&](i64 begin, i64 end) {
        /* With a stem: its output frames of one sequence slide through `win` (window + R - 1 frame
         * slots; the last window - 1 frames move back to the start once every R frames), each
         * computed once; frames outside the sequence are zero, like the convs' zero padding. */
        std::vector<float> win((size_t)(stem ? (window - 1 + R) * HWC : 0));
        i64 base = 0, wn = -1, wt = -2;
        auto stem_frame = [&](i64 n, i64 t, float *dst) {
            if (t < 0 || t >= T)
                std::memset(dst, 0, sizeof(float) * HWC);
            else
                stem_forward_range(xp, ksp, bsp, 1, dst, T, H, W, C, kTs, kHs, kWs, n * T + t, n * T + t + 1);
        };
        std::vector<std::vector<float>> branch;
        for (const auto &c : convs) branch.emplace_back((size_t)(HW * c.Cout));
        std::vector<float> joint((size_t)(kp ? HW * C : 0)), v(PB * K, 0.0f), jin(PB * std::max<i64>(C, 1), 0.0f);
        std::vector<float> full((size_t)(pool ? HW * cout : 0)); /* the frame's output before pooling */
        std::vector<std::vector<float>> scr;
        for (const auto &c : convs) scr.emplace_back((size_t)c.scratch(), 0.0f);
        std::vector<const float *> dp;
        for (const auto &b : branch) dp.push_back(b.data());
        const Tail tail{dp, widths, joint.data(), kp ? C : 0, wj.defined() ? wj.data_ptr<float>() : nullptr,
                        bj.defined() ? bj.data_ptr<float>() : nullptr, cz, wf.data_ptr<float>(),
                        bf.data_ptr<float>(), K, cout};
        for (i64 f = begin; f < end; ++f) {
            const float *xin = xp; /* the block input, read as frame fi of Tin-frame sequences */
            i64 Tin = T, fi = f;
            if (stem) {
                const i64 n = f / T, t = f % T;
                if (n == wn && t == wt + 1) { /* slide by one frame */
                    if (base + 2 > R) {
                        std::memmove(win.data(), win.data() + (base + 1) * HWC, sizeof(float) * (window - 1) * HWC);
                        base = 0;
                    } else {
                        ++base;
                    }
                    stem_frame(n, t + mid, win.data() + (base + window - 1) * HWC);
                } else {
                    base = 0;
                    for (i64 j = 0; j < window; ++j) stem_frame(n, t - mid + j, win.data() + j * HWC);
                }
                wn = n;
                wt = t;
                xin = win.data() + base * HWC;
                Tin = window;
                fi = mid;
            }
            for (size_t i = 0; i < convs.size(); ++i)
                convs[i].frames(xin, Tin, fi, fi + 1, branch[i].data(), scr[i].data());
            if (kp) {
                const i64 kT = joint_weight->size(2), kH = joint_weight->size(3), kW = joint_weight->size(4);
                if (C % WIDE_LANES == 0)
                    forward_cv<WIDE_LANES>(xin, kp, joint.data(), Tin, H, W, C, kT, kH, kW, S, h, fi, fi + 1);
                else if (C % 8 == 0)
                    forward_cv<8>(xin, kp, joint.data(), Tin, H, W, C, kT, kH, kW, S, h, fi, fi + 1);
                else
                    forward_any_c(xin, kp, joint.data(), N, Tin, H, W, C, kT, kH, kW, S, h, fi, fi + 1);
            }
            if (!pool) {
                tail.rows(0, HW, op + f * HW * cout, v.data(), jin.data());
                continue;
            }
            tail.rows(0, HW, full.data(), v.data(), jin.data());
            for (i64 i = 0; i < Ho; ++i) {
                const float *r0 = full.data() + 2 * i * W * cout;
                pool_row_pair(r0, r0 + W * cout, op + ((f * Ho + i) * Wo) * cout, Wo, cout);
            }
        }
    });
    return out;
}

}  // namespace

TORCH_LIBRARY(lstc_gait_cpu, m) {
    m.def("stripe_depthwise_conv3d(Tensor x, Tensor weight, int num_stripes) -> Tensor");
    m.def("stripe_depthwise_conv3d_weight_grad(Tensor x, Tensor grad_out, int[] kernel_size, int num_stripes) -> Tensor");
    m.def("stem_conv3d(Tensor x, Tensor weight, Tensor? bias, bool relu) -> Tensor");
    m.def("stem_conv3d_weight_grad(Tensor x, Tensor grad_out, int[] kernel_size) -> Tensor");
    m.def("conv3d_same(Tensor x, Tensor weight, Tensor? bias, bool relu) -> Tensor");
    m.def("max_pool_hw2(Tensor x) -> Tensor");
    m.def("max_pool_hw2_backward(Tensor x, Tensor grad_out) -> Tensor");
    m.def("batch_norm_relu_concat(Tensor[] inputs, Tensor[] weights, Tensor[] biases, float[] eps, "
          "Tensor[] passthrough) -> (Tensor, Tensor, Tensor)");
    m.def("batch_norm_relu_concat_backward(Tensor grad_out, Tensor[] inputs, Tensor[] weights, Tensor[] biases, "
          "Tensor mean, Tensor var, float[] eps) -> (Tensor[], Tensor, Tensor)");
    m.def("block_tail(Tensor[] direct, Tensor? joint, Tensor? joint_weight, Tensor? joint_bias, "
          "Tensor fuse_weight, Tensor fuse_bias) -> Tensor");
    m.def("lstc_block(Tensor x, Tensor? stem_weight, Tensor? stem_bias, Tensor? temporal_weight, Tensor? temporal_bias, Tensor? spatial_weight, "
          "Tensor? spatial_bias, Tensor? joint_weight, int num_stripes, Tensor? joint_pw_weight, "
          "Tensor? joint_pw_bias, Tensor fuse_weight, Tensor fuse_bias, bool pool) -> Tensor");
}

TORCH_LIBRARY_IMPL(lstc_gait_cpu, CPU, m) {
    m.impl("stripe_depthwise_conv3d", &stripe_depthwise_forward);
    m.impl("stripe_depthwise_conv3d_weight_grad", &stripe_depthwise_weight_grad);
    m.impl("stem_conv3d", &stem_conv3d_forward);
    m.impl("stem_conv3d_weight_grad", &stem_conv3d_weight_grad);
    m.impl("conv3d_same", &conv3d_same_forward);
    m.impl("max_pool_hw2", &max_pool_hw2_forward);
    m.impl("max_pool_hw2_backward", &max_pool_hw2_backward);
    m.impl("batch_norm_relu_concat", &batch_norm_relu_concat_forward);
    m.impl("batch_norm_relu_concat_backward", &batch_norm_relu_concat_backward);
    m.impl("block_tail", &block_tail_forward);
    m.impl("lstc_block", &lstc_block_forward);
}
