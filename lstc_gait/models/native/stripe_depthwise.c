/* Stripe-local depthwise 3D convolution on channels-last float32 data, for lstc_gait.
 *
 * Layout: activations are (N, T, H, W, C) contiguous (PyTorch channels_last_3d), the kernel is
 * (kT, kH, kW, C) contiguous. Padding is 'same' (k // 2 on each side, odd kernels) and the zero
 * padding applies at every height-stripe edge: output row r only reads rows of its own stripe.
 * Stripe s covers rows [s*h, (s+1)*h) and the last stripe also takes the leftover rows.
 *
 * The workers handle a range [begin, end) of flattened (n, t) frames; the entry points at the end
 * split all frames over OpenMP threads. The innermost loops run over channels, contiguous in both operands,
 * in blocks of 8 when C is a multiple of 8 (register accumulators over all taps), otherwise
 * plain loops the compiler vectorises. The input gradient of this conv is the same conv of the
 * output gradient with the kernel flipped in all three axes (odd kernels, 'same' padding, and
 * 'same stripe' is a symmetric relation), so there is no separate kernel for it.
 * Compiled and loaded at run time by native/build.py.
 */
#include <omp.h>
#include <stdint.h>
#include <string.h>

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

/* y[n,t,r,w,:] = sum_{a,b,d} x[n, t+a-pt, r+b-ph, w+d-pw, :] * k[a,b,d,:] (same-stripe rows only) */
static void forward_any_c(const float *restrict x, const float *restrict k, float *restrict y,
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
            float *restrict out_row = y + ((nt * H + r) * W) * C;
            memset(out_row, 0, sizeof(float) * W * C);
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b) {
                    const float *restrict x_row = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * C;
                    const float *restrict k_row = k + ((a * kH + b) * kW) * C;
                    for (i64 w = 0; w < W; ++w) {
                        float *restrict o = out_row + w * C;
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 d = d0; d < d1; ++d) {
                            const float *restrict xp = x_row + (w + d - pw) * C;
                            const float *restrict kp = k_row + d * C;
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
static void weight_grad_any_c(const float *restrict x, const float *restrict g, double *restrict acc,
                         float *restrict scratch,
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
            const float *restrict g_row = g + ((nt * H + r) * W) * C;
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b) {
                    const float *restrict x_row = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * C;
                    float *restrict s_row = scratch + ((a * kH + b) * kW) * C;
                    for (i64 w = 0; w < W; ++w) {
                        const float *restrict gp = g_row + w * C;
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 d = d0; d < d1; ++d) {
                            const float *restrict xp = x_row + (w + d - pw) * C;
                            float *restrict sp = s_row + d * C;
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

/* Forward for C % 8 == 0: per (frame, row, 8-channel block, 4 columns), 4 accumulators. */
static void forward_c8(const float *restrict x, const float *restrict k, float *restrict y,
                       i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH, i64 kW, i64 S, i64 h,
                       i64 begin, i64 end) {
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    for (i64 nt = begin; nt < end; ++nt) {
        const i64 n = nt / T, t = nt % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        for (i64 r = 0; r < H; ++r) {
            i64 lo, hi;
            stripe_rows(r, H, S, h, &lo, &hi);
            const i64 b0 = max64(0, lo - r + ph), b1 = min64(kH, hi - r + ph);
            float *restrict out_row = y + ((nt * H + r) * W) * C;
            for (i64 cb = 0; cb < C; cb += 8) {
                i64 w = 0;
                for (; w < W; ) {
                    /* kW == 3 (every kernel of the default model): 8 columns per block, the 10
                     * input vectors of a kernel row loaded once for its 3 taps */
                    if (kW == 3 && w >= 1 && w + WB3 < W) {
                        v8 acc[WB3] = {0};
                        for (i64 a = a0; a < a1; ++a) {
                            for (i64 b = b0; b < b1; ++b) {
                                const float *xp = x + (((n * T + t + a - pt) * H + r + b - ph) * W + w - 1) * C + cb;
                                const float *k_row = k + ((a * kH + b) * 3) * C + cb;
                                const v8 k0 = LOAD8(k_row), k1 = LOAD8(k_row + C), k2 = LOAD8(k_row + 2 * C);
                                v8 xv[WB3 + 2];
                                for (int j = 0; j < WB3 + 2; ++j) xv[j] = LOAD8(xp + j * C);
                                for (int j = 0; j < WB3; ++j) acc[j] += xv[j] * k0 + xv[j + 1] * k1 + xv[j + 2] * k2;
                            }
                        }
                        for (int j = 0; j < WB3; ++j) STORE8(out_row + (w + j) * C + cb, acc[j]);
                        w += WB3;
                    } else if (w >= pw && w + WB - 1 + pw < W) { /* taps inside [0, W): no checks */
                        v8 acc[WB] = {0};
                        for (i64 a = a0; a < a1; ++a) {
                            for (i64 b = b0; b < b1; ++b) {
                                const float *x_row = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * C + cb;
                                const float *k_row = k + ((a * kH + b) * kW) * C + cb;
                                for (i64 d = 0; d < kW; ++d) {
                                    const v8 kv = LOAD8(k_row + d * C);
                                    const float *xp = x_row + (w + d - pw) * C;
                                    for (int j = 0; j < WB; ++j) acc[j] += LOAD8(xp + j * C) * kv;
                                }
                            }
                        }
                        for (int j = 0; j < WB; ++j) STORE8(out_row + (w + j) * C + cb, acc[j]);
                        w += WB;
                    } else {
                        v8 acc = {0};
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 a = a0; a < a1; ++a) {
                            for (i64 b = b0; b < b1; ++b) {
                                const float *x_row = x + (((n * T + t + a - pt) * H + r + b - ph) * W) * C + cb;
                                const float *k_row = k + ((a * kH + b) * kW) * C + cb;
                                for (i64 d = d0; d < d1; ++d)
                                    acc += LOAD8(x_row + (w + d - pw) * C) * LOAD8(k_row + d * C);
                            }
                        }
                        STORE8(out_row + w * C + cb, acc);
                        w += 1;
                    }
                }
            }
        }
    }
}

/* Weight gradient for C % 8 == 0: each (tap, 8-channel block) sums a whole row in two registers. */
static void weight_grad_c8(const float *restrict x, const float *restrict g, double *restrict acc,
                           float *restrict scratch,
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
                            v8 s0 = {0}, s1 = {0};
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

/* Public entry points: all frames, split over `threads` OpenMP threads (loaded into a process that
 * already holds PyTorch's libgomp, the library binds to that same runtime and thread pool). The
 * blocked versions run when the channel count allows it. */
void sdw_forward(const float *restrict x, const float *restrict k, float *restrict y,
                 i64 N, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH, i64 kW, i64 S, i64 h, i64 threads) {
    const i64 frames = N * T;
    #pragma omp parallel num_threads((int)threads)
    {
        const i64 nth = omp_get_num_threads(), id = omp_get_thread_num();
        const i64 begin = frames * id / nth, end = frames * (id + 1) / nth;
        if (C % 8 == 0)
            forward_c8(x, k, y, T, H, W, C, kT, kH, kW, S, h, begin, end);
        else
            forward_any_c(x, k, y, N, T, H, W, C, kT, kH, kW, S, h, begin, end);
    }
}

/* acc: (threads, kT*kH*kW*C) doubles, zeroed by the caller; scratch: same shape in floats. */
void sdw_backward_weight(const float *restrict x, const float *restrict g, double *restrict acc,
                         float *restrict scratch,
                         i64 N, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH, i64 kW, i64 S, i64 h, i64 threads) {
    const i64 frames = N * T, K = kT * kH * kW * C;
    #pragma omp parallel num_threads((int)threads)
    {
        const i64 nth = omp_get_num_threads(), id = omp_get_thread_num();
        const i64 begin = frames * id / nth, end = frames * (id + 1) / nth;
        if (C % 8 == 0)
            weight_grad_c8(x, g, acc + id * K, scratch + id * K, T, H, W, C, kT, kH, kW, S, h, begin, end);
        else
            weight_grad_any_c(x, g, acc + id * K, scratch + id * K, N, T, H, W, C, kT, kH, kW, S, h, begin, end);
    }
}

/* ---- Single-input-channel dense conv (the stem: 1 -> C channels, 'same' padding) ----------
 * y[n,t,r,w,:] = sum_{a,b,d} x[n, t+a-pt, r+b-ph, w+d-pw] * k[a,b,d,:]; x is (N, T, H, W) with
 * one channel, so every tap broadcasts one input value over the C output channels. No stripes. */

/* Blocked stem forward for C % 8 == 0 (same structure as forward_c8, input values broadcast). */
static void stem_forward_c8(const float *restrict x, const float *restrict k, float *restrict y,
                            i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH, i64 kW, i64 nt, i64 r) {
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    const i64 n = nt / T, t = nt % T;
    const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
    const i64 b0 = max64(0, ph - r), b1 = min64(kH, H - r + ph);
    float *restrict out_row = y + ((nt * H + r) * W) * C;
    for (i64 cb = 0; cb < C; cb += 8) {
        for (i64 w = 0; w < W; ) {
            if (w >= pw && w + WB - 1 + pw < W) {
                v8 acc[WB] = {0};
                for (i64 a = a0; a < a1; ++a) {
                    for (i64 b = b0; b < b1; ++b) {
                        const float *x_row = x + ((n * T + t + a - pt) * H + r + b - ph) * W;
                        const float *k_row = k + ((a * kH + b) * kW) * C + cb;
                        for (i64 d = 0; d < kW; ++d) {
                            const v8 kv = LOAD8(k_row + d * C);
                            const float *xp = x_row + w + d - pw;
                            for (int j = 0; j < WB; ++j) acc[j] += xp[j] * kv;
                        }
                    }
                }
                for (int j = 0; j < WB; ++j) STORE8(out_row + (w + j) * C + cb, acc[j]);
                w += WB;
            } else {
                v8 acc = {0};
                const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                for (i64 a = a0; a < a1; ++a) {
                    for (i64 b = b0; b < b1; ++b) {
                        const float *x_row = x + ((n * T + t + a - pt) * H + r + b - ph) * W;
                        const float *k_row = k + ((a * kH + b) * kW) * C + cb;
                        for (i64 d = d0; d < d1; ++d) acc += x_row[w + d - pw] * LOAD8(k_row + d * C);
                    }
                }
                STORE8(out_row + w * C + cb, acc);
                w += 1;
            }
        }
    }
}

static void stem_forward_range(const float *restrict x, const float *restrict k, const float *restrict bias,
                               i64 relu, float *restrict y, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH,
                               i64 kW, i64 begin, i64 end) {
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    for (i64 nt = begin; nt < end; ++nt) {
        const i64 n = nt / T, t = nt % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        for (i64 r = 0; r < H; ++r) {
            const i64 b0 = max64(0, ph - r), b1 = min64(kH, H - r + ph);
            float *restrict out_row = y + ((nt * H + r) * W) * C;
            if (C % 8 == 0) {
                stem_forward_c8(x, k, y, T, H, W, C, kT, kH, kW, nt, r);
                goto epilogue;
            }
            memset(out_row, 0, sizeof(float) * W * C);
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b) {
                    const float *restrict x_row = x + ((n * T + t + a - pt) * H + r + b - ph) * W;
                    const float *restrict k_row = k + ((a * kH + b) * kW) * C;
                    for (i64 w = 0; w < W; ++w) {
                        float *restrict o = out_row + w * C;
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 d = d0; d < d1; ++d) {
                            const float xv = x_row[w + d - pw];
                            const float *restrict kp = k_row + d * C;
                            for (i64 c = 0; c < C; ++c) o[c] += xv * kp[c];
                        }
                    }
                }
            }
        epilogue:
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
static void stem_weight_grad_range(const float *restrict x, const float *restrict g, double *restrict acc,
                                   float *restrict scratch, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH,
                                   i64 kW, i64 begin, i64 end) {
    const i64 pt = kT / 2, ph = kH / 2, pw = kW / 2;
    const i64 K = kT * kH * kW * C;
    for (i64 nt = begin; nt < end; ++nt) {
        const i64 n = nt / T, t = nt % T;
        const i64 a0 = max64(0, pt - t), a1 = min64(kT, T - t + pt);
        memset(scratch, 0, sizeof(float) * K);
        for (i64 r = 0; r < H; ++r) {
            const i64 b0 = max64(0, ph - r), b1 = min64(kH, H - r + ph);
            const float *restrict g_row = g + ((nt * H + r) * W) * C;
            for (i64 a = a0; a < a1; ++a) {
                for (i64 b = b0; b < b1; ++b) {
                    const float *restrict x_row = x + ((n * T + t + a - pt) * H + r + b - ph) * W;
                    float *restrict s_row = scratch + ((a * kH + b) * kW) * C;
                    if (C % 8 == 0) {
                        for (i64 d = 0; d < kW; ++d) {
                            const i64 w0 = max64(0, pw - d), w1 = min64(W, W + pw - d);
                            for (i64 cb = 0; cb < C; cb += 8) {
                                v8 s0 = {0}, s1 = {0};
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
                        const float *restrict gp = g_row + w * C;
                        const i64 d0 = max64(0, pw - w), d1 = min64(kW, W - w + pw);
                        for (i64 d = d0; d < d1; ++d) {
                            const float xv = x_row[w + d - pw];
                            float *restrict sp = s_row + d * C;
                            for (i64 c = 0; c < C; ++c) sp[c] += xv * gp[c];
                        }
                    }
                }
            }
        }
        for (i64 i = 0; i < K; ++i) acc[i] += (double)scratch[i];
    }
}

/* bias: C floats or NULL; relu: 0 or 1. */
void stem_forward(const float *restrict x, const float *restrict k, const float *restrict bias, i64 relu,
                  float *restrict y, i64 N, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH, i64 kW, i64 threads) {
    const i64 frames = N * T;
    #pragma omp parallel num_threads((int)threads)
    {
        const i64 nth = omp_get_num_threads(), id = omp_get_thread_num();
        stem_forward_range(x, k, bias, relu, y, T, H, W, C, kT, kH, kW, frames * id / nth,
                           frames * (id + 1) / nth);
    }
}

/* acc, scratch: (threads, kT*kH*kW*C), acc zeroed by the caller. */
void stem_backward_weight(const float *restrict x, const float *restrict g, double *restrict acc,
                          float *restrict scratch, i64 N, i64 T, i64 H, i64 W, i64 C, i64 kT, i64 kH,
                          i64 kW, i64 threads) {
    const i64 frames = N * T, K = kT * kH * kW * C;
    #pragma omp parallel num_threads((int)threads)
    {
        const i64 nth = omp_get_num_threads(), id = omp_get_thread_num();
        stem_weight_grad_range(x, g, acc + id * K, scratch + id * K, T, H, W, C, kT, kH, kW,
                               frames * id / nth, frames * (id + 1) / nth);
    }
}
