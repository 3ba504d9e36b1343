/* Training-mode BatchNorm + ReLU passes over channels-last float32 activations, for lstc_gait.
 *
 * The activation is viewed as rows x C (rows = N*T*H*W positions, channels innermost). Each
 * function is one pass over memory, split by rows over OpenMP threads; per-channel sums are
 * accumulated in float over blocks of ROWS rows and then in double, which bounds the rounding.
 * Compiled and loaded at run time by native/build.py; math in native/batch_norm_relu.py.
 */
#include <omp.h>
#include <stdint.h>
#include <string.h>

typedef int64_t i64;
#define ROWS 256

/* sum[c] = sum_p x[p,c], sumsq[c] = sum_p x[p,c]^2; out arrays: (threads, C) doubles, zeroed. */
void bnr_stats(const float *restrict x, double *restrict sum, double *restrict sumsq,
               i64 P, i64 C, i64 threads) {
    #pragma omp parallel num_threads((int)threads)
    {
        const i64 nth = omp_get_num_threads(), id = omp_get_thread_num();
        const i64 begin = P * id / nth, end = P * (id + 1) / nth;
        double *restrict s = sum + id * C, *restrict q = sumsq + id * C;
        float fs[C], fq[C];
        for (i64 p0 = begin; p0 < end; p0 += ROWS) {
            const i64 p1 = p0 + ROWS < end ? p0 + ROWS : end;
            memset(fs, 0, sizeof(float) * C);
            memset(fq, 0, sizeof(float) * C);
            for (i64 p = p0; p < p1; ++p) {
                const float *restrict row = x + p * C;
                for (i64 c = 0; c < C; ++c) {
                    fs[c] += row[c];
                    fq[c] += row[c] * row[c];
                }
            }
            for (i64 c = 0; c < C; ++c) {
                s[c] += fs[c];
                q[c] += fq[c];
            }
        }
    }
}

/* y = max(x * scale + shift, 0) per channel. */
void bnr_forward(const float *restrict x, float *restrict y, const float *restrict scale,
                 const float *restrict shift, i64 P, i64 C, i64 threads) {
    #pragma omp parallel for num_threads((int)threads) schedule(static)
    for (i64 p = 0; p < P; ++p) {
        const float *restrict row = x + p * C;
        float *restrict out = y + p * C;
        for (i64 c = 0; c < C; ++c) {
            const float v = row[c] * scale[c] + shift[c];
            out[c] = v > 0.0f ? v : 0.0f;
        }
    }
}

/* Over positions where y > 0 (ReLU passed): sum_g[c] += g, sum_gx[c] += g * x.
 * Out arrays: (threads, C) doubles, zeroed. */
void bnr_backward_reduce(const float *restrict g, const float *restrict y, const float *restrict x,
                         double *restrict sum_g, double *restrict sum_gx, i64 P, i64 C, i64 threads) {
    #pragma omp parallel num_threads((int)threads)
    {
        const i64 nth = omp_get_num_threads(), id = omp_get_thread_num();
        const i64 begin = P * id / nth, end = P * (id + 1) / nth;
        double *restrict s = sum_g + id * C, *restrict q = sum_gx + id * C;
        float fs[C], fq[C];
        for (i64 p0 = begin; p0 < end; p0 += ROWS) {
            const i64 p1 = p0 + ROWS < end ? p0 + ROWS : end;
            memset(fs, 0, sizeof(float) * C);
            memset(fq, 0, sizeof(float) * C);
            for (i64 p = p0; p < p1; ++p) {
                const float *restrict gr = g + p * C, *restrict yr = y + p * C, *restrict xr = x + p * C;
                for (i64 c = 0; c < C; ++c) {
                    const float gm = yr[c] > 0.0f ? gr[c] : 0.0f;
                    fs[c] += gm;
                    fq[c] += gm * xr[c];
                }
            }
            for (i64 c = 0; c < C; ++c) {
                s[c] += fs[c];
                q[c] += fq[c];
            }
        }
    }
}

/* dx = (y > 0 ? g : 0) * a + x * b + k per channel. */
void bnr_backward_dx(const float *restrict g, const float *restrict y, const float *restrict x,
                     float *restrict dx, const float *restrict a, const float *restrict b,
                     const float *restrict k, i64 P, i64 C, i64 threads) {
    #pragma omp parallel for num_threads((int)threads) schedule(static)
    for (i64 p = 0; p < P; ++p) {
        const float *restrict gr = g + p * C, *restrict yr = y + p * C, *restrict xr = x + p * C;
        float *restrict out = dx + p * C;
        for (i64 c = 0; c < C; ++c) {
            const float gm = yr[c] > 0.0f ? gr[c] : 0.0f;
            out[c] = gm * a[c] + xr[c] * b[c] + k[c];
        }
    }
}
