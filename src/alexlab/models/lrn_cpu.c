/* The paper's LRN (Section 3.3) as one fused pass on a CPU: float32 or bfloat16, NCHW or NHWC.

       d[i] = k + alpha * sum of a[j]^2 over channels j in [i-half, i+half], clipped to [0, C-1]
       b[i] = a[i] * d[i]^-beta
       dL/da[i] = g[i] * d[i]^-beta - 2*alpha*beta * a[i] * (window sum of g*a*d^(-beta-1))[i]

   Built and loaded by lrn_cpu.py (cc -O3 -march=native -ffast-math; glibc then vectorises expf
   and logf). Everything is computed in float32. A bfloat16 tensor is converted a row at a time
   into a small float32 buffer as it is read, and results are rounded to bfloat16 (to nearest,
   ties to even, as torch does) as they are written: the same numbers as converting the whole
   tensor to float32, normalising and converting back, without those full-size float32 copies
   (nor keeping one of the input for the backward pass).

   NCHW: each step takes BLOCK pixel positions of one image, all channels, so the squares and
   partial products stay in L2 and every tensor is read or written once; the loops run along
   the positions. NHWC (channels_last): a pixel's channels are contiguous, so each step takes
   whole pixels (~PIXEL_BLOCK values), sums each pixel's windows along its channels and runs the
   elementwise loops along the whole step. Either way each window is summed directly, never as
   a running sum (whose subtractions would make it inexact). Steps are fixed by the shape alone
   and each is computed the same way whichever thread takes it, so the result does not depend
   on the number of threads. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 256  /* NCHW pixel positions per step; 256 was fastest for 16..3025 positions and 24..256 channels */

/* ---- float32 views of float32 or bfloat16 rows ---- */

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;  /* exact: bfloat16 is the top half of a float32 */
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f) {  /* round to nearest, ties to even; integer tests survive -ffast-math */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  /* NaN stays NaN (rounding could make it inf) */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* t[at : at+len] as float32: a pointer into t when it is float32, else its values converted into buf */
static const float *in_row(const void *t, int64_t at, int64_t len, int bf16, float *buf) {
    if (!bf16) return (const float *)t + at;
    const uint16_t *h = (const uint16_t *)t + at;
    for (int64_t j = 0; j < len; j++) buf[j] = bf16_to_f32(h[j]);
    return buf;
}

/* Where to put len float32 results bound for t[at:]: t itself when it is float32, else buf (then out_done) */
static float *out_row(void *t, int64_t at, int bf16, float *buf) {
    return bf16 ? buf : (float *)t + at;
}

static void out_done(void *t, int64_t at, int64_t len, int bf16, const float *buf) {
    if (!bf16) return;
    uint16_t *h = (uint16_t *)t + at;
    for (int64_t j = 0; j < len; j++) h[j] = f32_to_bf16(buf[j]);
}

/* ---- NCHW: a block of positions, all channels; rows of the buffers are BLOCK apart ---- */

/* acc[0:len] = sum over channels cc in [c-half, c+half] ∩ [0, C-1] of rows[cc][0:len] */
static void window_sum(const float *rows, float *acc, int64_t c, int64_t C, int64_t half, int64_t len) {
    int64_t lo = c - half < 0 ? 0 : c - half, hi = c + half > C - 1 ? C - 1 : c + half;
    for (int64_t j = 0; j < len; j++) acc[j] = 0.f;
    for (int64_t cc = lo; cc <= hi; cc++)
        for (int64_t j = 0; j < len; j++) acc[j] += rows[cc * BLOCK + j];
}

/* One iteration of an (image, block of positions) loop: where its image starts, its first position
   and how many positions it holds */
struct block { int64_t base, j0, len; };

/* Iteration `it`'s block, with rows[c][0:len] = x[c][j0:j0+len]^2 */
static struct block block_squares(const void *x, int64_t it, int64_t blocks, int64_t C, int64_t HW, float *rows,
                                  int bf16, float *buf) {
    struct block b = {(it / blocks) * C * HW, (it % blocks) * BLOCK, 0};
    b.len = HW - b.j0 < BLOCK ? HW - b.j0 : BLOCK;
    for (int64_t c = 0; c < C; c++) {
        const float *xc = in_row(x, b.base + c * HW + b.j0, b.len, bf16, buf);
        for (int64_t j = 0; j < b.len; j++) rows[c * BLOCK + j] = xc[j] * xc[j];
    }
    return b;
}

/* y = x * (k + alpha * window sum of x^2)^-beta over one block, channel by channel */
static void normalise_block(const void *x, void *y, const float *sq, float *acc, struct block b, int64_t C,
                            int64_t HW, int64_t half, float alpha, float beta, float k, int bf16, float *xbuf,
                            float *ybuf) {
    for (int64_t c = 0; c < C; c++) {
        const int64_t at = b.base + c * HW + b.j0;
        window_sum(sq, acc, c, C, half, b.len);
        const float *xc = in_row(x, at, b.len, bf16, xbuf);
        float *yc = out_row(y, at, bf16, ybuf);
        for (int64_t j = 0; j < b.len; j++) yc[j] = xc[j] * expf(-beta * logf(k + alpha * acc[j]));
        out_done(y, at, b.len, bf16, ybuf);
    }
}

/* One (image, block of positions) per iteration; OpenMP shares the iterations among `threads` of
   torch's own threads (lrn_cpu.py links the OpenMP runtime torch has loaded: a second runtime's
   idle threads would spin against torch's). Returns 1 if a buffer could not be allocated. */
static int nchw_forward(const void *x, void *y, int64_t N, int64_t C, int64_t HW, int64_t half,
                        float alpha, float beta, float k, int bf16, int threads) {
    const int64_t blocks = (HW + BLOCK - 1) / BLOCK;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
        float *sq = malloc(sizeof(float) * (C + 3) * BLOCK);  /* squares, window sum, bf16 row in, row out */
        float *acc = sq ? sq + C * BLOCK : NULL, *xbuf = acc ? acc + BLOCK : NULL, *ybuf = xbuf ? xbuf + BLOCK : NULL;
        if (!sq) failed = 1;
        #pragma omp for schedule(static)
        for (int64_t it = 0; it < N * blocks; it++) {
            if (!sq) continue;
            const struct block b = block_squares(x, it, blocks, C, HW, sq, bf16, xbuf);
            normalise_block(x, y, sq, acc, b, C, HW, half, alpha, beta, k, bf16, xbuf, ybuf);
        }
        free(sq);
    }
    return failed;
}

static int nchw_backward(const void *x, const void *g, void *dx, int64_t N, int64_t C, int64_t HW, int64_t half,
                         float alpha, float beta, float k, int bf16, int threads) {
    const int64_t blocks = (HW + BLOCK - 1) / BLOCK;
    const float coef = -2.f * alpha * beta;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
        float *sq = malloc(sizeof(float) * (3 * C + 4) * BLOCK);  /* squares, p, t; window sum, bf16 rows */
        float *p = sq ? sq + C * BLOCK : NULL, *t = p ? p + C * BLOCK : NULL, *acc = t ? t + C * BLOCK : NULL;
        float *xbuf = acc ? acc + BLOCK : NULL, *gbuf = xbuf ? xbuf + BLOCK : NULL, *dbuf = gbuf ? gbuf + BLOCK : NULL;
        if (!sq) failed = 1;
        #pragma omp for schedule(static)
        for (int64_t it = 0; it < N * blocks; it++) {
            if (!sq) continue;
            const struct block b = block_squares(x, it, blocks, C, HW, sq, bf16, xbuf);
            const int64_t base = b.base, j0 = b.j0, len = b.len;
            for (int64_t c = 0; c < C; c++) {  /* p = d^-beta and t = g*a*p/d, per channel */
                const int64_t at = base + c * HW + j0;
                window_sum(sq, acc, c, C, half, len);
                const float *xc = in_row(x, at, len, bf16, xbuf), *gc = in_row(g, at, len, bf16, gbuf);
                float *pc = p + c * BLOCK, *tc = t + c * BLOCK;
                for (int64_t j = 0; j < len; j++) {
                    float d = k + alpha * acc[j], pj = expf(-beta * logf(d));
                    pc[j] = pj;
                    tc[j] = gc[j] * xc[j] * pj / d;
                }
            }
            for (int64_t c = 0; c < C; c++) {  /* then the window sum of t */
                const int64_t at = base + c * HW + j0;
                window_sum(t, acc, c, C, half, len);
                const float *xc = in_row(x, at, len, bf16, xbuf), *gc = in_row(g, at, len, bf16, gbuf);
                const float *pc = p + c * BLOCK;
                float *dc = out_row(dx, at, bf16, dbuf);
                for (int64_t j = 0; j < len; j++) dc[j] = gc[j] * pc[j] + coef * xc[j] * acc[j];
                out_done(dx, at, len, bf16, dbuf);
            }
        }
        free(sq);
    }
    return failed;
}

/* ---- NHWC: a run of whole pixels, each with its C channels contiguous ---- */

/* Values per step (whole pixels): the elementwise loops (expf, logf) then run ~this long, not C at a
   time; 256 was fastest for 24..256 channels (PIXEL_BLOCK / C pixels, at least one) */
#define PIXEL_BLOCK 256

/* acc[c] = padded[c] + ... + padded[c + 2*half] for c in [0, C): padded holds one pixel's values with
   `half` zeros on either side, so this is the clipped window (adding a zero changes no float) */
static inline void window_sum_unrolled(const float *padded, float *acc, int64_t C, int64_t half) {
    for (int64_t c = 0; c < C; c++) {
        float sum = 0.f;
        for (int64_t o = 0; o <= 2 * half; o++) sum += padded[c + o];
        acc[c] = sum;
    }
}

static void window_sum_padded(const float *padded, float *acc, int64_t C, int64_t half) {
    switch (half) {  /* a constant half unrolls into one vectorised pass over the channels (kernel 1.1-1.3x faster) */
    case 1: window_sum_unrolled(padded, acc, C, 1); return;
    case 2: window_sum_unrolled(padded, acc, C, 2); return;
    case 3: window_sum_unrolled(padded, acc, C, 3); return;
    }
    for (int64_t c = 0; c < C; c++) acc[c] = 0.f;  /* any other: 2*half+1 passes (a runtime-length inner
                                                       loop would be vectorised as a reduction, far slower) */
    for (int64_t o = 0; o <= 2 * half; o++)
        for (int64_t c = 0; c < C; c++) acc[c] += padded[c + o];
}

/* acc[q*C : (q+1)*C] = window sums of rows[q*C : (q+1)*C] (squared if `square`), for each pixel q;
   pad: C + 2*half floats whose ends stay zero */
static void pixel_window_sums(const float *rows, float *acc, int64_t pixels, int64_t C, int64_t half, int square,
                              float *pad) {
    for (int64_t q = 0; q < pixels; q++) {
        const float *r = rows + q * C;
        if (square) for (int64_t c = 0; c < C; c++) pad[half + c] = r[c] * r[c];
        else for (int64_t c = 0; c < C; c++) pad[half + c] = r[c];
        window_sum_padded(pad, acc + q * C, C, half);
    }
}

/* One step (PIXEL_BLOCK values) per iteration, shared among threads as for NCHW. calloc: the pad's ends
   stay zero, only pad[half : half+C] is ever written */
static int nhwc_forward(const void *x, void *y, int64_t pixels, int64_t C, int64_t half,
                        float alpha, float beta, float k, int bf16, int threads) {
    const int64_t per_step = C >= PIXEL_BLOCK ? 1 : PIXEL_BLOCK / C, steps = (pixels + per_step - 1) / per_step;
    const int64_t most = per_step * C;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
        float *pad = calloc(C + 2 * half + 3 * most, sizeof(float));  /* pad, window sums, bf16 in, out */
        float *acc = pad ? pad + C + 2 * half : NULL, *xbuf = acc ? acc + most : NULL;
        float *ybuf = xbuf ? xbuf + most : NULL;
        if (!pad) failed = 1;
        #pragma omp for schedule(static)
        for (int64_t s = 0; s < steps; s++) {
            if (!pad) continue;
            const int64_t at = s * most, len = (pixels * C - at < most ? pixels * C - at : most);
            const float *xr = in_row(x, at, len, bf16, xbuf);
            pixel_window_sums(xr, acc, len / C, C, half, 1, pad);
            float *yr = out_row(y, at, bf16, ybuf);
            for (int64_t i = 0; i < len; i++) yr[i] = xr[i] * expf(-beta * logf(k + alpha * acc[i]));
            out_done(y, at, len, bf16, ybuf);
        }
        free(pad);
    }
    return failed;
}

static int nhwc_backward(const void *x, const void *g, void *dx, int64_t pixels, int64_t C, int64_t half,
                         float alpha, float beta, float k, int bf16, int threads) {
    const int64_t per_step = C >= PIXEL_BLOCK ? 1 : PIXEL_BLOCK / C, steps = (pixels + per_step - 1) / per_step;
    const int64_t most = per_step * C;
    const float coef = -2.f * alpha * beta;
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
        float *pad = calloc(C + 2 * half + 6 * most, sizeof(float));  /* pad, window sums, p, t, bf16 rows */
        float *acc = pad ? pad + C + 2 * half : NULL, *p = acc ? acc + most : NULL, *t = p ? p + most : NULL;
        float *xbuf = t ? t + most : NULL, *gbuf = xbuf ? xbuf + most : NULL, *dbuf = gbuf ? gbuf + most : NULL;
        if (!pad) failed = 1;
        #pragma omp for schedule(static)
        for (int64_t s = 0; s < steps; s++) {
            if (!pad) continue;
            const int64_t at = s * most, len = (pixels * C - at < most ? pixels * C - at : most);
            const float *xr = in_row(x, at, len, bf16, xbuf), *gr = in_row(g, at, len, bf16, gbuf);
            pixel_window_sums(xr, acc, len / C, C, half, 1, pad);
            for (int64_t i = 0; i < len; i++) {  /* p = d^-beta and t = g*a*p/d */
                float d = k + alpha * acc[i], pi = expf(-beta * logf(d));
                p[i] = pi;
                t[i] = gr[i] * xr[i] * pi / d;
            }
            pixel_window_sums(t, acc, len / C, C, half, 0, pad);
            float *dr = out_row(dx, at, bf16, dbuf);
            for (int64_t i = 0; i < len; i++) dr[i] = gr[i] * p[i] + coef * xr[i] * acc[i];
            out_done(dx, at, len, bf16, dbuf);
        }
        free(pad);
    }
    return failed;
}

/* ---- entry points (lrn_cpu.py): x, y/g/dx of one dtype (bf16: 0 float32, 1 bfloat16), N images of
   C channels and HW positions, channels_last: 0 NCHW, 1 NHWC ---- */

int lrn_forward(const void *x, void *y, int64_t N, int64_t C, int64_t HW, int64_t half,
                float alpha, float beta, float k, int channels_last, int bf16, int threads) {
    if (half > C - 1) half = C - 1;  /* a wider window sees the same channels; keeps the NHWC pads small */
    return channels_last ? nhwc_forward(x, y, N * HW, C, half, alpha, beta, k, bf16, threads)
                         : nchw_forward(x, y, N, C, HW, half, alpha, beta, k, bf16, threads);
}

int lrn_backward(const void *x, const void *g, void *dx, int64_t N, int64_t C, int64_t HW, int64_t half,
                 float alpha, float beta, float k, int channels_last, int bf16, int threads) {
    if (half > C - 1) half = C - 1;
    return channels_last ? nhwc_backward(x, g, dx, N * HW, C, half, alpha, beta, k, bf16, threads)
                         : nchw_backward(x, g, dx, N, C, HW, half, alpha, beta, k, bf16, threads);
}
