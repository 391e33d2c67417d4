// The LSTM time loops as XLA FFI calls: a probe for benchmarks/ffi_probe.py, not part of rnnkit.
// Forward, per step: gates = xp[t] + h @ w_h (OpenBLAS sgemm, one thread), then the gate math in
// one pass; saves h, c and the activated gates (i, f, g, o) of every step, as rnnkit's explicit
// BPTT does. Backward, per step: the gate math's gradient in one pass, then d_h = d_gates @ w_h^T;
// the weight gradients are left to XLA, after the loop. No sequence_length, no peepholes.
#include <algorithm>
#include <cstring>

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

// tanh as a rational function on [-7.9, 7.9] (the approximation XLA:CPU and Eigen use for
// float32); branch-free, so the gate loop vectorizes.
static inline float Tanh(float x) {
  x = std::min(std::max(x, -7.90531110763549805f), 7.90531110763549805f);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * p / q;
}

static inline float Sigmoid(float x) { return 0.5f * Tanh(0.5f * x) + 0.5f; }

// Each call runs on the thread XLA gives it: OpenBLAS must not start threads of its own.
static void UseOneBlasThread() {
  static const bool done = (scipy_openblas_set_num_threads(1), true);
  (void)done;
}

// xp [T, B, 4H] (x_t w_x + b), w_h [H, 4H], h0 and c0 [B, H] -> hs, cs [T, B, H], gates [T, B, 4H]
static ffi::Error LstmForwardImpl(float forget_bias, F32 xp, F32 w_h, F32 h0, F32 c0,
                                  F32Out hs, F32Out cs, F32Out gates) {
  UseOneBlasThread();
  const auto dims = xp.dimensions();
  const int T = dims[0], B = dims[1], G = dims[2], H = G / 4;
  const float* h = h0.typed_data();
  const float* c = c0.typed_data();
  for (int t = 0; t < T; ++t) {
    float* g = gates->typed_data() + static_cast<size_t>(t) * B * G;
    float* h_new = hs->typed_data() + static_cast<size_t>(t) * B * H;
    float* c_new = cs->typed_data() + static_cast<size_t>(t) * B * H;
    std::memcpy(g, xp.typed_data() + static_cast<size_t>(t) * B * G, sizeof(float) * B * G);
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, G, H, 1.0f, h, H,
                      w_h.typed_data(), G, 1.0f, g, G);
    for (int b = 0; b < B; ++b) {
      float* gb = g + static_cast<size_t>(b) * G;
      const float* cb = c + static_cast<size_t>(b) * H;
      // The rows written here never overlap the ones read: vectorize (needs -fopenmp-simd).
#pragma omp simd
      for (int j = 0; j < H; ++j) {
        const float i = Sigmoid(gb[j]), f = Sigmoid(gb[H + j] + forget_bias);
        const float u = Tanh(gb[2 * H + j]), o = Sigmoid(gb[3 * H + j]);
        gb[j] = i;
        gb[H + j] = f;
        gb[2 * H + j] = u;
        gb[3 * H + j] = o;
        const float cell = f * cb[j] + i * u;
        c_new[static_cast<size_t>(b) * H + j] = cell;
        h_new[static_cast<size_t>(b) * H + j] = o * Tanh(cell);
      }
    }
    h = h_new;
    c = c_new;
  }
  return ffi::Error::Success();
}

// gates [T, B, 4H] (activated), cs [T, B, H], c0 [B, H], w_h [H, 4H], d_hs [T, B, H] (the
// cotangent of every step's h), d_c_last [B, H] -> d_gates [T, B, 4H] (before the activations),
// d_h0 and d_c0 [B, H]
static ffi::Error LstmBackwardImpl(F32 gates, F32 cs, F32 c0, F32 w_h, F32 d_hs, F32 d_c_last,
                                   F32Out d_gates, F32Out d_h0, F32Out d_c0) {
  UseOneBlasThread();
  const auto dims = gates.dimensions();
  const int T = dims[0], B = dims[1], G = dims[2], H = G / 4;
  float* d_h = d_h0->typed_data();  // the carried d_h, then d_h0
  float* d_c = d_c0->typed_data();  // the carried d_c, then d_c0
  std::memset(d_h, 0, sizeof(float) * B * H);
  std::memcpy(d_c, d_c_last.typed_data(), sizeof(float) * B * H);
  for (int t = T - 1; t >= 0; --t) {
    const float* g = gates.typed_data() + static_cast<size_t>(t) * B * G;
    const float* c_t = cs.typed_data() + static_cast<size_t>(t) * B * H;
    const float* c_prev = t > 0 ? c_t - static_cast<size_t>(B) * H : c0.typed_data();
    const float* d_out = d_hs.typed_data() + static_cast<size_t>(t) * B * H;
    float* dg = d_gates->typed_data() + static_cast<size_t>(t) * B * G;
    for (int b = 0; b < B; ++b) {
      const size_t row = static_cast<size_t>(b) * H;
      const float* gb = g + static_cast<size_t>(b) * G;
      float* db = dg + static_cast<size_t>(b) * G;
#pragma omp simd
      for (int j = 0; j < H; ++j) {
        const float i = gb[j], f = gb[H + j], u = gb[2 * H + j], o = gb[3 * H + j];
        const float dh = d_out[row + j] + d_h[row + j];
        const float tc = Tanh(c_t[row + j]);
        const float dc = d_c[row + j] + dh * o * (1.0f - tc * tc);
        db[j] = dc * u * i * (1.0f - i);
        db[H + j] = dc * c_prev[row + j] * f * (1.0f - f);
        db[2 * H + j] = dc * i * (1.0f - u * u);
        db[3 * H + j] = dh * tc * o * (1.0f - o);
        d_c[row + j] = dc * f;
      }
    }
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, G, 1.0f, dg, G,
                      w_h.typed_data(), G, 0.0f, d_h, H);
  }
  return ffi::Error::Success();
}

// LstmBackward, then the weight gradients after the loop, each one sgemm over all T * B rows (on
// this thread, like the loops): the step's whole backward pass in one call.
// hs [T, B, H] and h0 [B, H] (the h each step read), xs [T, B, I] (the inputs) -> also
// d_w_h [H, 4H], d_w_x [I, 4H], d_b [4H]
static ffi::Error LstmBackwardWeightsImpl(F32 gates, F32 cs, F32 c0, F32 w_h, F32 d_hs,
                                          F32 d_c_last, F32 hs, F32 h0, F32 xs, F32Out d_gates,
                                          F32Out d_h0, F32Out d_c0, F32Out d_w_h, F32Out d_w_x,
                                          F32Out d_b) {
  ffi::Error loop = LstmBackwardImpl(gates, cs, c0, w_h, d_hs, d_c_last, d_gates, d_h0, d_c0);
  if (loop.failure()) return loop;
  const auto dims = gates.dimensions();
  const int T = dims[0], B = dims[1], G = dims[2], H = G / 4, I = xs.dimensions()[2];
  const float* dg = d_gates->typed_data();
  // d_w_h = h0^T d_gates[0] + hs[:-1]^T d_gates[1:]
  scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, G, B, 1.0f, h0.typed_data(), H,
                    dg, G, 0.0f, d_w_h->typed_data(), G);
  if (T > 1) {
    scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, G, (T - 1) * B, 1.0f,
                      hs.typed_data(), H, dg + static_cast<size_t>(B) * G, G, 1.0f,
                      d_w_h->typed_data(), G);
  }
  scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, I, G, T * B, 1.0f, xs.typed_data(),
                    I, dg, G, 0.0f, d_w_x->typed_data(), G);
  float* db = d_b->typed_data();
  std::memset(db, 0, sizeof(float) * G);
  for (size_t row = 0; row < static_cast<size_t>(T) * B; ++row) {
#pragma omp simd
    for (int j = 0; j < G; ++j) db[j] += dg[row * G + j];
  }
  return ffi::Error::Success();
}

// Six arrays in, three out.
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmBackward, LstmBackwardImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

// The forget bias, four arrays in, three out.
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmForward, LstmForwardImpl,
                              ffi::Ffi::Bind().Attr<float>("forget_bias").Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

// Nine arrays in, six out.
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmBackwardWeights, LstmBackwardWeightsImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Ret<F32>());
