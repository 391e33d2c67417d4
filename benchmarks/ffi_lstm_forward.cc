// The LSTM forward time loop as one XLA FFI call: a probe for benchmarks/ffi_probe.py, not part
// of rnnkit. Per step: gates = xp[t] + h @ w_h (OpenBLAS sgemm, one thread), then the gate math
// in one pass; saves h, c and the activated gates (i, f, g, o) of every step, as rnnkit's
// explicit BPTT does. No sequence_length, no peepholes.
#include <algorithm>
#include <cstring>

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

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

// xp [T, B, 4H] (x_t w_x + b), w_h [H, 4H], h0 and c0 [B, H] -> hs, cs [T, B, H], gates [T, B, 4H]
static ffi::Error LstmForwardImpl(float forget_bias, ffi::Buffer<ffi::F32> xp,
                                  ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> h0,
                                  ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs,
                                  ffi::ResultBuffer<ffi::F32> cs,
                                  ffi::ResultBuffer<ffi::F32> gates) {
  static const bool one_thread = (scipy_openblas_set_num_threads(1), true);
  (void)one_thread;
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmForward, LstmForwardImpl,
                              ffi::Ffi::Bind()
                                  .Attr<float>("forget_bias")
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
