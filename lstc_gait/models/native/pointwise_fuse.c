/* Inference tail of an asymmetric block in one pass over memory, for lstc_gait.
 *
 * Per position p (channels-last rows): the joint branch's pointwise conv + folded BN + ReLU,
 *     z = relu(Wj^T * j[p] + bj)                       (skipped when wj is NULL: z = j[p])
 * then the fuse conv + folded BN + ReLU over the concatenation [a[p], b[p], z]:
 *     out[p] = relu(Wf^T * [a[p], b[p], z] + bf).
 * The library way writes z, copies all three into a concatenated tensor and reads it again; here
 * nothing but `out` is written. Weights are passed transposed, (inputs, outputs) row-major.
 * Positions go in blocks of PB through a small register-blocked matrix product (PB independent
 * accumulator chains per 8 output channels). Any of a, b, j may be absent (NULL, 0 channels).
 * Compiled and loaded at run time by native/build.py.
 */
#include <omp.h>
#include <stdint.h>
#include <string.h>

typedef int64_t i64;
typedef float v8 __attribute__((vector_size(32), aligned(4)));
#define LOAD8(p) (*(const v8 *)(p))
#define STORE8(p, v) (*(v8 *)(p) = (v))
#define PB 8 /* positions per block: 8 independent accumulator chains cover the FMA latency */
#define MAXC 1024

/* out[j, :] = act(bias + sum_k v[j, k] * wt[k, :]) for j < PB; v rows have stride K (PB rows,
 * unused ones zero), out rows stride ldo, only the first `rows` rows are stored. */
static void small_gemm(const float *restrict v, i64 K, const float *restrict wt, const float *restrict bias,
                       i64 N, float *restrict out, i64 ldo, i64 rows, int relu) {
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
            if (relu)
                for (int q = 0; q < 8; ++q) o[q] = o[q] > 0.0f ? o[q] : 0.0f;
        }
    }
    for (; ob < N; ++ob) { /* leftover output channels (N not a multiple of 8) */
        for (i64 j = 0; j < rows; ++j) {
            float s = bias[ob];
            for (i64 k = 0; k < K; ++k) s += v[j * K + k] * wt[k * N + ob];
            out[j * ldo + ob] = relu && s < 0.0f ? 0.0f : s;
        }
    }
}

void pointwise_fuse(const float *restrict a, i64 ca, const float *restrict b, i64 cb,
                    const float *restrict j, i64 cj, const float *restrict wj, const float *restrict bj,
                    i64 cz, const float *restrict wf, const float *restrict bf, i64 cout,
                    float *restrict out, i64 P, i64 threads) {
    const i64 K = ca + cb + cz;
    const i64 blocks = (P + PB - 1) / PB;
    #pragma omp parallel num_threads((int)threads)
    {
        float v[PB * MAXC], jin[PB * MAXC];
        memset(v, 0, sizeof(float) * PB * K);
        memset(jin, 0, sizeof(float) * PB * (cj > 0 ? cj : 1));
        #pragma omp for schedule(static)
        for (i64 blk = 0; blk < blocks; ++blk) {
            const i64 p0 = blk * PB, rows = P - p0 < PB ? P - p0 : PB;
            for (i64 r = 0; r < rows; ++r) {
                float *vr = v + r * K;
                if (ca) memcpy(vr, a + (p0 + r) * ca, sizeof(float) * ca);
                if (cb) memcpy(vr + ca, b + (p0 + r) * cb, sizeof(float) * cb);
                if (cj && !wj) memcpy(vr + ca + cb, j + (p0 + r) * cj, sizeof(float) * cj);
                if (cj && wj) memcpy(jin + r * cj, j + (p0 + r) * cj, sizeof(float) * cj);
            }
            if (cj && wj) /* z written straight into its slot of the concatenated rows */
                small_gemm(jin, cj, wj, bj, cz, v + ca + cb, K, rows, 1);
            small_gemm(v, K, wf, bf, cout, out + p0 * cout, cout, rows, 1);
        }
    }
}
