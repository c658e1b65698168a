/* The gated convolution window of a Mamba memory (MambaMixer.forward_gated), forward and backward, one
 * loop over the timesteps per call. K = d_conv - 1 window entries per channel: at step t, with gate g_t,
 * entry j takes a blend of itself and the entry after it (the newest entry: the input),
 *
 *   e_j <- (1 - g_t) e_j + g_t e_{j+1},   e_{K-1} <- (1 - g_t) e_{K-1} + g_t x_t,
 *
 * and step t convolves the window before it plus x_t. Float32, contiguous: x, grad_x (nb, L, D); g,
 * grad_g (nb, L); the window (nb, L, K + 1, D), entry K being x_t; states (nb, K, D). A closed gate
 * (g = 0) leaves every entry bit for bit. */
#include <stdint.h>
#include <string.h>

typedef int64_t i64;

void smt_gated_window_forward(i64 nb, i64 L, i64 D, i64 K, const float *x, const float *g, float *window,
                              float *e) {
    /* e: the start state on entry, the last state on return */
    for (i64 b = 0; b < nb; ++b) {
        float *eb = e + b * K * D;
        for (i64 t = 0; t < L; ++t) {
            const i64 row = b * L + t;
            const float gate = g[row], stay = 1.0f - gate;
            const float *restrict xt = x + row * D;
            float *restrict out = window + row * (K + 1) * D;
            memcpy(out, eb, K * D * sizeof(float));
            memcpy(out + K * D, xt, D * sizeof(float));
            for (i64 j = 0; j < K; ++j) {
                float *restrict ej = eb + j * D;
                const float *restrict src = out + (j + 1) * D; /* entry j + 1 before the step, or x_t */
                for (i64 d = 0; d < D; ++d) ej[d] = stay * ej[d] + gate * src[d];
            }
        }
    }
}

void smt_gated_window_backward(i64 nb, i64 L, i64 D, i64 K, const float *g, const float *window,
                               const float *grad_window, float *grad_e, float *grad_x, float *grad_g) {
    /* grad_e: dL/d last state on entry, dL/d start state on return */
    for (i64 b = 0; b < nb; ++b) {
        float *E = grad_e + b * K * D;
        for (i64 t = L - 1; t >= 0; --t) {
            const i64 row = b * L + t;
            const float gate = g[row], stay = 1.0f - gate;
            const float *restrict before = window + row * (K + 1) * D; /* entries 0..K-1, then x_t */
            const float *restrict gw = grad_window + row * (K + 1) * D;
            float *restrict gx = grad_x + row * D;
            float g_sum = 0.0f;
            for (i64 j = 0; j < K; ++j) {
                const float *restrict Ej = E + j * D, *restrict old = before + j * D, *restrict src = old + D;
                for (i64 d = 0; d < D; ++d) g_sum += Ej[d] * (src[d] - old[d]);
            }
            for (i64 d = 0; d < D; ++d) gx[d] = gw[K * D + d] + gate * E[(K - 1) * D + d];
            /* descending, so entry j - 1's adjoint is still the one after the step */
            for (i64 j = K - 1; j >= 0; --j) {
                float *restrict Ej = E + j * D;
                const float *restrict gwj = gw + j * D;
                if (j > 0) {
                    const float *restrict below = E + (j - 1) * D;
                    for (i64 d = 0; d < D; ++d) Ej[d] = gwj[d] + stay * Ej[d] + gate * below[d];
                } else {
                    for (i64 d = 0; d < D; ++d) Ej[d] = gwj[d] + stay * Ej[d];
                }
            }
            grad_g[row] = g_sum;
        }
    }
}
