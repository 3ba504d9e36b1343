/* 2x2 spatial max-pool (stride 2, odd edge dropped) on channels-last float32 data, for lstc_gait.
 *
 * x is (F, H, W, C) with F = N*T frames, y is (F, H/2, W/2, C). Like PyTorch's CPU max-pool, the
 * window is scanned row by row and a value replaces the running maximum when it is greater or
 * NaN, so the first maximum wins ties and NaN propagates. The backward recomputes that choice
 * from x (no index tensor) and, the windows being disjoint, writes every input gradient exactly
 * once (no zero-fill pass). Compiled and loaded at run time by native/build.py.
 */
#include <omp.h>
#include <stdint.h>

typedef int64_t i64;

/* Window maximum and which of its 4 values (0..3, row-major) is first to reach it, branch-free so
 * the channel loops vectorise; NaN compares unequal to itself, which is how it propagates. */
#define WINDOW_MAX(v0, v1, v2, v3, c, m, k)                                  \
    float m = v0[c], k = 0.0f;                                               \
    { const int t1 = (v1[c] > m) | (v1[c] != v1[c]); m = t1 ? v1[c] : m; k = t1 ? 1.0f : k; } \
    { const int t2 = (v2[c] > m) | (v2[c] != v2[c]); m = t2 ? v2[c] : m; k = t2 ? 2.0f : k; } \
    { const int t3 = (v3[c] > m) | (v3[c] != v3[c]); m = t3 ? v3[c] : m; k = t3 ? 3.0f : k; }

void maxpool2_forward(const float *restrict x, float *restrict y, i64 F, i64 H, i64 W, i64 C, i64 threads) {
    const i64 Ho = H / 2, Wo = W / 2;
    #pragma omp parallel for num_threads((int)threads) schedule(static)
    for (i64 fr = 0; fr < F * Ho; ++fr) {
        const i64 f = fr / Ho, i = fr % Ho;
        const float *r0 = x + ((f * H + 2 * i) * W) * C, *r1 = r0 + W * C;
        float *out = y + ((f * Ho + i) * Wo) * C;
        for (i64 j = 0; j < Wo; ++j) {
            const float *restrict v0 = r0 + 2 * j * C, *restrict v1 = v0 + C;
            const float *restrict v2 = r1 + 2 * j * C, *restrict v3 = v2 + C;
            float *restrict o = out + j * C;
            for (i64 c = 0; c < C; ++c) {
                WINDOW_MAX(v0, v1, v2, v3, c, m, k)
                (void)k;
                o[c] = m;
            }
        }
    }
}

typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef int v8i __attribute__((vector_size(32), aligned(4)));

/* Backward for one window over 8 channels, with vector masks (the scalar version's selects are
 * left as branches by the compiler): NaN != NaN marks NaN, the first maximum wins. */
static inline void window_grad8(const float *v0, const float *v1, const float *v2, const float *v3,
                                const float *g, float *d0, float *d1, float *d2, float *d3) {
    const v8 a0 = *(const v8 *)v0, a1 = *(const v8 *)v1, a2 = *(const v8 *)v2, a3 = *(const v8 *)v3;
    const v8i one = {1, 1, 1, 1, 1, 1, 1, 1};
    v8 m = a0;
    v8i k = {0};
    v8i t = (a1 > m) | (a1 != a1);
    m = (v8)(((v8i)a1 & t) | ((v8i)m & ~t));
    k = (one & t) | (k & ~t);
    t = (a2 > m) | (a2 != a2);
    m = (v8)(((v8i)a2 & t) | ((v8i)m & ~t));
    k = ((one + one) & t) | (k & ~t);
    t = (a3 > m) | (a3 != a3);
    k = ((one + one + one) & t) | (k & ~t);
    const v8i gv = *(const v8i *)g, zero = {0};
    *(v8 *)d0 = (v8)(gv & (k == zero));
    *(v8 *)d1 = (v8)(gv & (k == one));
    *(v8 *)d2 = (v8)(gv & (k == one + one));
    *(v8 *)d3 = (v8)(gv & (k == one + one + one));
}

void maxpool2_backward(const float *restrict x, const float *restrict gy, float *restrict gx,
                       i64 F, i64 H, i64 W, i64 C, i64 threads) {
    const i64 Ho = H / 2, Wo = W / 2;
    #pragma omp parallel for num_threads((int)threads) schedule(static)
    for (i64 fr = 0; fr < F * Ho; ++fr) {
        const i64 f = fr / Ho, i = fr % Ho;
        const float *r0 = x + ((f * H + 2 * i) * W) * C, *r1 = r0 + W * C;
        float *q0 = gx + ((f * H + 2 * i) * W) * C, *q1 = q0 + W * C;
        const float *g = gy + ((f * Ho + i) * Wo) * C;
        for (i64 j = 0; j < Wo; ++j) {
            const float *restrict v0 = r0 + 2 * j * C, *restrict v1 = v0 + C;
            const float *restrict v2 = r1 + 2 * j * C, *restrict v3 = v2 + C;
            float *restrict d0 = q0 + 2 * j * C, *restrict d1 = d0 + C;
            float *restrict d2 = q1 + 2 * j * C, *restrict d3 = d2 + C;
            const float *restrict gj = g + j * C;
            i64 c = 0;
            for (; c + 8 <= C; c += 8)
                window_grad8(v0 + c, v1 + c, v2 + c, v3 + c, gj + c, d0 + c, d1 + c, d2 + c, d3 + c);
            for (; c < C; ++c) {
                const float a0 = v0[c], a1 = v1[c], a2 = v2[c], a3 = v3[c];
                float m = a0, k = 0.0f;
                const int t1 = (a1 > m) | (a1 != a1);
                m = t1 ? a1 : m;
                k = t1 ? 1.0f : k;
                const int t2 = (a2 > m) | (a2 != a2);
                m = t2 ? a2 : m;
                k = t2 ? 2.0f : k;
                const int t3 = (a3 > m) | (a3 != a3);
                k = t3 ? 3.0f : k;
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
    /* an odd last row likewise */
    if (H % 2)
        for (i64 f = 0; f < F; ++f)
            for (i64 q = 0; q < W * C; ++q) gx[((f * H + H - 1) * W) * C + q] = 0.0f;
}
