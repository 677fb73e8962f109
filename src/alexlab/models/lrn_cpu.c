/* The paper's LRN (Section 3.3) as one fused pass on a CPU, float32, NCHW-contiguous.

       d[i] = k + alpha * sum of a[j]^2 over channels j in [i-half, i+half], clipped to [0, C-1]
       b[i] = a[i] * d[i]^-beta
       dL/da[i] = g[i] * d[i]^-beta - 2*alpha*beta * a[i] * (window sum of g*a*d^(-beta-1))[i]

   Built and loaded by lrn_cpu.py (cc -O3 -march=native -ffast-math; glibc then vectorises expf
   and logf). Each step takes BLOCK pixel positions of one image, all channels, so the squares
   and partial products stay in L2 and every tensor is read or written once: ~2x faster than a
   dozen eager PyTorch passes. Steps are independent, so the result does not depend on the
   number of threads. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 256  /* pixel positions per step; 256 was fastest for 16..3025 positions and 24..256 channels */

/* acc[0:len] = sum over channels cc in [c-half, c+half] ∩ [0, C-1] of rows[cc][0:len] */
static void window_sum(const float *rows, float *acc, int64_t c, int64_t C, int64_t half, int64_t len) {
    int64_t lo = c - half < 0 ? 0 : c - half, hi = c + half > C - 1 ? C - 1 : c + half;
    for (int64_t j = 0; j < len; j++) acc[j] = 0.f;
    for (int64_t cc = lo; cc <= hi; cc++)
        for (int64_t j = 0; j < len; j++) acc[j] += rows[cc * BLOCK + j];
}

/* rows[c][0:len] = x[c][j0:j0+len]^2 for one image */
static void squares(const float *x, float *rows, int64_t C, int64_t HW, int64_t j0, int64_t len) {
    for (int64_t c = 0; c < C; c++)
        for (int64_t j = 0; j < len; j++) {
            float v = x[c * HW + j0 + j];
            rows[c * BLOCK + j] = v * v;
        }
}

/* One (image, block of positions) per iteration; OpenMP shares the iterations among `threads` of
   torch's own threads (lrn_cpu.py links the OpenMP runtime torch has loaded: a second runtime's
   idle threads would spin against torch's). Returns 1 if a buffer could not be allocated. */
int lrn_forward(const float *x, float *y, int64_t N, int64_t C, int64_t HW, int64_t half,
                float alpha, float beta, float k, int threads) {
    const int64_t blocks = (HW + BLOCK - 1) / BLOCK;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
        float *sq = malloc(sizeof(float) * (C + 1) * BLOCK);
        float *acc = sq ? sq + C * BLOCK : NULL;
        if (!sq) failed = 1;
        #pragma omp for schedule(static)
        for (int64_t it = 0; it < N * blocks; it++) {
            if (!sq) continue;
            const int64_t j0 = (it % blocks) * BLOCK, len = HW - j0 < BLOCK ? HW - j0 : BLOCK;
            const float *xn = x + (it / blocks) * C * HW;
            float *yn = y + (it / blocks) * C * HW;
            squares(xn, sq, C, HW, j0, len);
            for (int64_t c = 0; c < C; c++) {
                window_sum(sq, acc, c, C, half, len);
                const float *xc = xn + c * HW + j0;
                float *yc = yn + c * HW + j0;
                for (int64_t j = 0; j < len; j++) yc[j] = xc[j] * expf(-beta * logf(k + alpha * acc[j]));
            }
        }
        free(sq);
    }
    return failed;
}

int lrn_backward(const float *x, const float *g, float *dx, int64_t N, int64_t C, int64_t HW, int64_t half,
                 float alpha, float beta, float k, int threads) {
    const int64_t blocks = (HW + BLOCK - 1) / BLOCK;
    const float coef = -2.f * alpha * beta;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
        float *sq = malloc(sizeof(float) * (3 * C + 1) * BLOCK);
        float *p = sq ? sq + C * BLOCK : NULL, *t = p ? p + C * BLOCK : NULL, *acc = t ? t + C * BLOCK : NULL;
        if (!sq) failed = 1;
        #pragma omp for schedule(static)
        for (int64_t it = 0; it < N * blocks; it++) {
            if (!sq) continue;
            const int64_t j0 = (it % blocks) * BLOCK, len = HW - j0 < BLOCK ? HW - j0 : BLOCK;
            const int64_t offset = (it / blocks) * C * HW;
            const float *xn = x + offset, *gn = g + offset;
            float *dn = dx + offset;
            squares(xn, sq, C, HW, j0, len);
            for (int64_t c = 0; c < C; c++) {  /* p = d^-beta and t = g*a*p/d, per channel */
                window_sum(sq, acc, c, C, half, len);
                const float *xc = xn + c * HW + j0, *gc = gn + c * HW + j0;
                float *pc = p + c * BLOCK, *tc = t + c * BLOCK;
                for (int64_t j = 0; j < len; j++) {
                    float d = k + alpha * acc[j], pj = expf(-beta * logf(d));
                    pc[j] = pj;
                    tc[j] = gc[j] * xc[j] * pj / d;
                }
            }
            for (int64_t c = 0; c < C; c++) {  /* then the window sum of t */
                window_sum(t, acc, c, C, half, len);
                const float *xc = xn + c * HW + j0, *gc = gn + c * HW + j0, *pc = p + c * BLOCK;
                float *dc = dn + c * HW + j0;
                for (int64_t j = 0; j < len; j++) dc[j] = gc[j] * pc[j] + coef * xc[j] * acc[j];
            }
        }
        free(sq);
    }
    return failed;
}
