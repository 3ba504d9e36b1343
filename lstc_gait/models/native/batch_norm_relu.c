/* Training-mode BatchNorm + ReLU passes over channels-last float32 activations, for lstc_gait.
 *
 * The activation x is viewed as P rows x C (rows = N*T*H*W positions, channels innermost). The
 * output y and the gradient g may be channel slices of wider rows (row strides ldy, ldg): that
 * is how a block writes its branches straight into the concatenated tensor its fuse conv reads.
 * The ReLU mask is recomputed from x (relu passes where x * scale + shift > 0, with the same
 * inline expression as the forward), so the output need not be kept for the backward. Each
 * function is one pass over memory, split by rows over OpenMP threads; per-channel sums are
 * accumulated in float over blocks of ROWS rows and then in double, which bounds the rounding.
 * Compiled and loaded at run time by native/build.py; math in models/bn_relu.py.
 */
#include <omp.h>
#include <stdint.h>
#include <string.h>

typedef int64_t i64;
#define ROWS 256

static inline float bn_affine(float x, float scale, float shift) { return x * scale + shift; }

/* Shifted sums: sum[c] = sum_p (x[p,c] - ref[c]), sumsq[c] = sum_p (x[p,c] - ref[c])^2, with ref a
 * value near the mean (the caller passes the first row): the variance is then sumsq/P - (sum/P)^2
 * without the cancellation E[x^2] - mean^2 suffers when |mean| >> std. Out arrays: (threads, C)
 * doubles, zeroed. */
void bnr_stats(const float *restrict x, const float *restrict ref, double *restrict sum,
               double *restrict sumsq, i64 P, i64 C, i64 threads) {
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
                    const float d = row[c] - ref[c];
                    fs[c] += d;
                    fq[c] += d * d;
                }
            }
            for (i64 c = 0; c < C; ++c) {
                s[c] += fs[c];
                q[c] += fq[c];
            }
        }
    }
}

/* y[p, c] (row stride ldy) = max(x[p, c] * scale[c] + shift[c], 0). */
void bnr_forward(const float *restrict x, float *restrict y, i64 ldy, const float *restrict scale,
                 const float *restrict shift, i64 P, i64 C, i64 threads) {
    #pragma omp parallel for num_threads((int)threads) schedule(static)
    for (i64 p = 0; p < P; ++p) {
        const float *restrict row = x + p * C;
        float *restrict out = y + p * ldy;
        for (i64 c = 0; c < C; ++c) {
            const float v = bn_affine(row[c], scale[c], shift[c]);
            out[c] = v > 0.0f ? v : 0.0f;
        }
    }
}

/* Over positions where the ReLU passed: sum_g[c] += g, sum_gx[c] += g * (x - ref) (g row stride
 * ldg; ref as in bnr_stats, against the same cancellation). Out arrays: (threads, C) doubles, zeroed. */
void bnr_backward_reduce(const float *restrict g, i64 ldg, const float *restrict x, const float *restrict ref,
                         const float *restrict scale, const float *restrict shift,
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
                const float *restrict gr = g + p * ldg, *restrict xr = x + p * C;
                for (i64 c = 0; c < C; ++c) {
                    const float gm = bn_affine(xr[c], scale[c], shift[c]) > 0.0f ? gr[c] : 0.0f;
                    fs[c] += gm;
                    fq[c] += gm * (xr[c] - ref[c]);
                }
            }
            for (i64 c = 0; c < C; ++c) {
                s[c] += fs[c];
                q[c] += fq[c];
            }
        }
    }
}

/* dx = (relu passed ? g : 0) * a + x * b + k per channel (g row stride ldg, dx rows of C). */
void bnr_backward_dx(const float *restrict g, i64 ldg, const float *restrict x, const float *restrict scale,
                     const float *restrict shift, float *restrict dx, const float *restrict a,
                     const float *restrict b, const float *restrict k, i64 P, i64 C, i64 threads) {
    #pragma omp parallel for num_threads((int)threads) schedule(static)
    for (i64 p = 0; p < P; ++p) {
        const float *restrict gr = g + p * ldg, *restrict xr = x + p * C;
        float *restrict out = dx + p * C;
        for (i64 c = 0; c < C; ++c) {
            const float gm = bn_affine(xr[c], scale[c], shift[c]) > 0.0f ? gr[c] : 0.0f;
            out[c] = gm * a[c] + xr[c] * b[c] + k[c];
        }
    }
}
