// The speed kit's CPU GRU kernel: marlopt.models.fast_gru's sequence and its adjoint as C++ loops.
//
// The same equations as fast_gru.py's module docstring (PyTorch's GRU gates), float32, CPU,
// contiguous inputs; one ATen batched matmul per step (the recurrent map, MKL/oneDNN) and one fused
// elementwise loop per step that the compiler vectorises (-O3 -fopenmp-simd: glibc's
// vector expf/tanhf). Built and loaded by marlopt/models/gru_kernel.py; registered as the ops
// torch.ops.marlopt_gru.forward / .backward.
//
// Layout: G weight groups, R rows per group, H hidden units.
//   gx[L, G, R, 3H]   the input gates x W_iᵀ + b_i (computed outside, ordinary autograd)
//   h0[G, R, H]       the state before step 0
//   w_t[G, H, 3H]     the recurrent weights, transposed; b[G, 1, 3H] their bias
//   keep[L, G, R]     1 - starts (the state is multiplied by it before step t); empty = no resets
// Saved for the backward: ht[G, L, R, H] (the state entering each step, after keep), rz[L, G, R, 2H]
// (the gates r and z), n[L, G, R, H], gn[L, G, R, H] (h̃ W_hnᵀ + b_hn).

#include <ATen/core/Tensor.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) && defined(__GLIBC__)
// glibc's vector maths library (libmvec) has SIMD versions of expf and tanhf; its header declares
// them only under -ffast-math, which would also let the compiler drop NaNs. Declared here instead,
// so the elementwise loops vectorise with IEEE semantics kept (linked with -lmvec).
extern "C" float expf(float) __attribute__((__simd__("notinbranch")));
extern "C" float tanhf(float) __attribute__((__simd__("notinbranch")));
#endif

namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// outputs[L, G, R, H] and the saved tensors (ht, rz, n, gn).
std::vector<at::Tensor> gru_forward(const at::Tensor& gx, const at::Tensor& h0, const at::Tensor& w_t,
                                    const at::Tensor& b, const at::Tensor& keep) {
  const int64_t L = gx.size(0), G = gx.size(1), R = gx.size(2), H3 = gx.size(3), H = H3 / 3, GR = G * R;
  const auto opt = gx.options();
  at::Tensor out = at::empty({L, G, R, H}, opt), ht = at::empty({G, L, R, H}, opt);
  at::Tensor rz = at::empty({L, G, R, 2 * H}, opt), n = at::empty({L, G, R, H}, opt);
  at::Tensor gn = at::empty({L, G, R, H}, opt), g = at::empty({G, R, H3}, opt);
  const bool has_keep = keep.numel() > 0;
  const float* kp = has_keep ? keep.data_ptr<float>() : nullptr;
  const float *gxp = gx.data_ptr<float>(), *h0p = h0.data_ptr<float>(), *gp = g.data_ptr<float>();
  float *outp = out.data_ptr<float>(), *htp = ht.data_ptr<float>(), *rzp = rz.data_ptr<float>();
  float *np = n.data_ptr<float>(), *gnp = gn.data_ptr<float>();
  for (int64_t t = 0; t < L; ++t) {
    // h̃ = keep_t ⊙ h_{t-1}
    for (int64_t row = 0; row < GR; ++row) {
      const int64_t gi = row / R, r = row % R;
      const float* src = (t == 0 ? h0p : outp + (t - 1) * GR * H) + row * H;
      float* dst = htp + ((gi * L + t) * R + r) * H;
      const float k = has_keep ? kp[t * GR + row] : 1.0f;
      for (int64_t j = 0; j < H; ++j) dst[j] = k * src[j];
    }
    at::baddbmm_out(g, b, ht.select(1, t), w_t);  // g = h̃ W_hᵀ + b_h
    for (int64_t row = 0; row < GR; ++row) {
      const int64_t gi = row / R, r = row % R, base = t * GR + row;
      const float *x = gxp + base * H3, *gg = gp + row * H3, *hh = htp + ((gi * L + t) * R + r) * H;
      float *rzr = rzp + base * 2 * H, *nr = np + base * H, *gnr = gnp + base * H, *o = outp + base * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float rr = sigmoid(x[j] + gg[j]), zz = sigmoid(x[H + j] + gg[H + j]), gnv = gg[2 * H + j];
        const float nn = tanhf(x[2 * H + j] + rr * gnv);
        rzr[j] = rr;
        rzr[H + j] = zz;
        nr[j] = nn;
        gnr[j] = gnv;
        o[j] = nn + zz * (hh[j] - nn);  // h_t = n + z (h̃ - n)
      }
    }
  }
  return {out, ht, rz, n, gn};
}

// (d_out[L, G, R, H], d_last[G, R, H], w_h[G, 3H, H], keep, saved) -> d_gx, d_h0, d_w_h[G, 3H, H], d_b[G, 3H].
std::vector<at::Tensor> gru_backward(const at::Tensor& d_out, const at::Tensor& d_last, const at::Tensor& w_h,
                                     const at::Tensor& keep, const at::Tensor& ht, const at::Tensor& rz,
                                     const at::Tensor& n, const at::Tensor& gn) {
  const int64_t L = d_out.size(0), G = d_out.size(1), R = d_out.size(2), H = d_out.size(3), H3 = 3 * H;
  const int64_t GR = G * R;
  const auto opt = d_out.options();
  at::Tensor d_x = at::empty({L, G, R, H3}, opt), d_g = at::empty({G, L, R, H3}, opt);
  at::Tensor carry = at::empty({G, R, H}, opt);  // δ_t ⊙ z_t + ∂g_t W_h: δ_{t-1} before keep and d_out
  at::Tensor delta = at::empty({G, R, H}, opt);  // δ_t = ∂L/∂h_t
  const bool has_keep = keep.numel() > 0;
  const float* kp = has_keep ? keep.data_ptr<float>() : nullptr;
  const float *dop = d_out.data_ptr<float>(), *dlp = d_last.data_ptr<float>(), *htp = ht.data_ptr<float>();
  const float *rzp = rz.data_ptr<float>(), *np = n.data_ptr<float>(), *gnp = gn.data_ptr<float>();
  float *dxp = d_x.data_ptr<float>(), *dgp = d_g.data_ptr<float>(), *cp = carry.data_ptr<float>();
  float* dp = delta.data_ptr<float>();
  for (int64_t t = L - 1; t >= 0; --t) {
    for (int64_t row = 0; row < GR; ++row) {
      const int64_t gi = row / R, r = row % R, base = t * GR + row;
      const float* dout = dop + base * H;
      float *d = dp + row * H, *c = cp + row * H;
      if (t == L - 1) {
        const float* dl = dlp + row * H;
        for (int64_t j = 0; j < H; ++j) d[j] = dout[j] + dl[j];
      } else {  // δ_t = keep_{t+1} ⊙ carry + ∂L/∂h_t from the output at t
        const float k = has_keep ? kp[(t + 1) * GR + row] : 1.0f;
        for (int64_t j = 0; j < H; ++j) d[j] = k * c[j] + dout[j];
      }
      const float *rzr = rzp + base * 2 * H, *nr = np + base * H, *gnr = gnp + base * H;
      const float* hh = htp + ((gi * L + t) * R + r) * H;
      float *dx = dxp + base * H3, *dg = dgp + ((gi * L + t) * R + r) * H3;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float rr = rzr[j], zz = rzr[H + j], nn = nr[j], dl = d[j];
        const float dn = dl * (1.0f - zz) * (1.0f - nn * nn);
        const float dz = dl * (hh[j] - nn) * zz * (1.0f - zz);
        const float dr = dn * gnr[j] * rr * (1.0f - rr);
        dx[j] = dr;
        dx[H + j] = dz;
        dx[2 * H + j] = dn;
        dg[j] = dr;
        dg[H + j] = dz;
        dg[2 * H + j] = dn * rr;
        c[j] = dl * zz;
      }
    }
    carry.baddbmm_(d_g.select(1, t), w_h);  // + ∂g_t W_h
  }
  at::Tensor d_h0 = has_keep ? carry.mul(keep.select(0, 0).unsqueeze(-1)) : carry;  // δ_{-1} = keep_0 ⊙ carry
  const at::Tensor flat_g = d_g.view({G, L * R, H3});
  return {d_x, d_h0, at::bmm(flat_g.transpose(1, 2), ht.view({G, L * R, H})), flat_g.sum(1)};
}

}  // namespace

TORCH_LIBRARY(marlopt_gru, m) {
  m.def("forward", &gru_forward);
  m.def("backward", &gru_backward);
}
