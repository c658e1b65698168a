/* The gated scan of a Mamba memory (smt.models.components.scan), forward and backward, as one loop
 * over the timesteps per call: the native path of `scan.gated_scan` on CPU. Plain C, float32, every
 * array contiguous and time-major: u, delta, grad_u, grad_delta (L, nb, D); Bm, Cm, grad_B, grad_C
 * (L, nb, N); g, grad_g (L, nb). The state and A are kept state-major, (nb, N, D) and (N, D), so the
 * innermost loops run over d_inner with unit stride and vectorise.
 *
 *   stepped_t = exp(delta_t A) s_{t-1} + delta_t u_t B_t       (what output t reads: y_t = C_t . stepped_t)
 *   s_t       = lerp(s_{t-1}, stepped_t, g_t)                   (torch.lerp's two forms: g = 0 keeps s bit for bit)
 *
 * The forward keeps the state at the start of every `block` steps; the backward recomputes a block's
 * states from it and runs the adjoints P_t = G_t + g_t H_t, H_{t-1} = (1 - g_t) H_t + exp(delta_t A) P_t.
 * exp is a polynomial the compiler can vectorise (the C library's expf would not be, short of
 * -ffast-math, which would also set flush-to-zero for the whole process). */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef int64_t i64;

/* exp(x) for x <= 0 (delta > 0, A < 0), about 1 ulp: x = k ln2 + r, |r| <= ln2 / 2, exp(r) by Cephes'
 * expf polynomial, 2^k through the exponent bits. Inputs below -87 give exp(-87) ~ 1.6e-38 instead of a
 * denormal or zero. */
static inline float smt_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float k = floorf(x * 1.44269504088896341f + 0.5f);
    const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* One step of one batch row, in place: h (N, D) from s_{t-1} to s_t; adds output t into y (D), zeroed by
 * the caller, unless y is NULL. du (D) is delta_t u_t. */
static void step_row(i64 D, i64 N, const float *restrict delta, const float *restrict du,
                     const float *restrict A, const float *restrict Bt, const float *restrict Ct, float gate,
                     float *restrict h, float *restrict y) {
    /* torch.lerp: start + w (end - start) for w < 0.5, else end - (1 - w) (end - start) */
    const int from_start = gate < 0.5f;
    const float weight = from_start ? gate : -(1.0f - gate);
    for (i64 n = 0; n < N; ++n) {
        const float *restrict a = A + n * D;
        float *restrict hn = h + n * D;
        const float b = Bt[n], c = Ct[n];
        for (i64 d = 0; d < D; ++d) {
            const float before = hn[d];
            const float stepped = smt_exp(delta[d] * a[d]) * before + du[d] * b;
            if (y) y[d] += c * stepped;
            hn[d] = (from_start ? before : stepped) + weight * (stepped - before);
        }
    }
}

static void drive_row(i64 D, const float *restrict u, const float *restrict delta, float *restrict du) {
    for (i64 d = 0; d < D; ++d) du[d] = delta[d] * u[d];
}

void smt_gated_scan_forward(i64 L, i64 nb, i64 D, i64 N, i64 block, const float *u, const float *delta,
                            const float *A, const float *Bm, const float *Cm, const float *g, float *y,
                            float *h, float *starts, float *du) {
    /* A (N, D); h (nb, N, D): the start state on entry, the last state on return; starts
     * (ceil(L / block), nb, N, D); du: scratch of D floats */
    const i64 S = D * N;
    for (i64 b = 0; b < nb; ++b) {
        float *hb = h + b * S;
        for (i64 t = 0; t < L; ++t) {
            const i64 row = t * nb + b;
            if (t % block == 0) memcpy(starts + ((t / block) * nb + b) * S, hb, S * sizeof(float));
            drive_row(D, u + row * D, delta + row * D, du);
            memset(y + row * D, 0, D * sizeof(float));
            step_row(D, N, delta + row * D, du, A, Bm + row * N, Cm + row * N, g[row], hb, y + row * D);
        }
    }
}

/* The adjoint of one step of one batch row: H (N, D) from dL/ds_t to dL/ds_{t-1}; prev is s_{t-1}. */
static void adjoint_row(i64 D, i64 N, const float *restrict u, const float *restrict delta,
                        const float *restrict du, const float *restrict A, const float *restrict Bt,
                        const float *restrict Ct, float gate, const float *restrict prev,
                        const float *restrict gy, float *restrict H, float *restrict gA,
                        float *restrict gdt, float *restrict gdu, float *restrict gBt, float *restrict gCt,
                        float *restrict gg, float *restrict gu, float *restrict gdelta) {
    const float stay = 1.0f - gate;
    float g_sum = 0.0f;
    for (i64 d = 0; d < D; ++d) gdt[d] = gdu[d] = 0.0f;
    for (i64 n = 0; n < N; ++n) {
        const float *restrict a = A + n * D, *restrict p = prev + n * D;
        float *restrict Hn = H + n * D, *restrict gAn = gA + n * D;
        const float b = Bt[n], c = Ct[n];
        float gb = 0.0f, gc = 0.0f;
        for (i64 d = 0; d < D; ++d) {
            const float decay = smt_exp(delta[d] * a[d]);
            const float stepped = decay * p[d] + du[d] * b;
            const float held = Hn[d];
            const float P = gy[d] * c + gate * held;
            const float Q = P * p[d] * decay;
            g_sum += held * (stepped - p[d]);
            gc += gy[d] * stepped;
            gb += P * du[d];
            gAn[d] += Q * delta[d];
            gdt[d] += Q * a[d];
            gdu[d] += P * b;
            Hn[d] = stay * held + decay * P;
        }
        gBt[n] = gb;
        gCt[n] = gc;
    }
    for (i64 d = 0; d < D; ++d) {
        gu[d] = gdu[d] * delta[d];
        gdelta[d] = gdt[d] + gdu[d] * u[d];
    }
    *gg = g_sum;
}

void smt_gated_scan_backward(i64 L, i64 nb, i64 D, i64 N, i64 block, const float *u, const float *delta,
                             const float *A, const float *Bm, const float *Cm, const float *g,
                             const float *starts, const float *grad_y, float *grad_h, float *grad_u,
                             float *grad_delta, float *grad_A, float *grad_B, float *grad_C, float *grad_g,
                             float *scratch) {
    /* grad_h (nb, N, D): dL/d last state on entry, dL/d start state on return; grad_A (nb, N, D), zeroed
     * by the caller, gets one slice per batch row (the caller sums them); scratch: block x N x D + 3 D */
    const i64 S = D * N;
    float *du = scratch + block * S, *gdt = du + D, *gdu = gdt + D;
    if (L <= 0) return;
    for (i64 b = 0; b < nb; ++b) {
        float *H = grad_h + b * S, *gA = grad_A + b * S;
        for (i64 t0 = ((L - 1) / block) * block; t0 >= 0; t0 -= block) {
            const i64 t1 = t0 + block < L ? t0 + block : L;
            /* scratch + j S: the state before step t0 + j */
            memcpy(scratch, starts + ((t0 / block) * nb + b) * S, S * sizeof(float));
            for (i64 t = t0; t < t1 - 1; ++t) {
                const i64 row = t * nb + b;
                float *next = scratch + (t - t0 + 1) * S;
                memcpy(next, next - S, S * sizeof(float));
                drive_row(D, u + row * D, delta + row * D, du);
                step_row(D, N, delta + row * D, du, A, Bm + row * N, Cm + row * N, g[row], next, NULL);
            }
            for (i64 t = t1 - 1; t >= t0; --t) {
                const i64 row = t * nb + b;
                drive_row(D, u + row * D, delta + row * D, du);
                adjoint_row(D, N, u + row * D, delta + row * D, du, A, Bm + row * N, Cm + row * N, g[row],
                            scratch + (t - t0) * S, grad_y + row * D, H, gA, gdt, gdu, grad_B + row * N,
                            grad_C + row * N, grad_g + row, grad_u + row * D, grad_delta + row * D);
            }
        }
    }
}
