// Building blocks of the fused CPU kernels (fused_rope.cpp, fused_softmax.cpp, fused_cpu.cpp;
// private to kto_model): storage types, 16-lane fp32 vectors, exp, bf16 rounding as c10 rounds.
//
// The translation units including this are built with -ffp-contract=off (src/CMakeLists.txt):
// a*b + c*d must round like ATen's separate multiply and add kernels, not fuse into an FMA.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace kto::model::fused::detail {

// Compiled for AVX-512, AVX2 and baseline x86-64, chosen at load time by the CPU. Every clone
// calls its always-inline templates (clang refuses a 64-byte vector argument in a call made
// directly from the clones that lack AVX-512).
#define KTO_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// Arithmetic on one storage type: values are loaded into C, every operation's result rounded
// back to the storage precision (a no-op for fp32 and fp64; round-to-nearest-even to bf16, as
// c10::BFloat16 does, for bf16).
template <typename S>
struct Num {
  using C = S;
  static inline C load(S v) { return v; }
  static inline S store(C v) { return v; }
  static inline C round(C v) { return v; }
};

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint16_t bf16_bits(float f) {
  if (f != f) return UINT16_C(0x7FC0);  // c10's NaN
  const uint32_t u = float_bits(f);
  return static_cast<uint16_t>((u + UINT32_C(0x7FFF) + ((u >> 16) & 1)) >> 16);
}

template <>
struct Num<uint16_t> {  // bf16 bits
  using C = float;
  static inline C load(uint16_t v) { return bits_float(static_cast<uint32_t>(v) << 16); }
  static inline uint16_t store(C v) { return bf16_bits(v); }
  static inline C round(C v) { return load(bf16_bits(v)); }
};

// 16 fp32 lanes: one AVX-512 register, two AVX2 ones, four SSE ones in the baseline clone.
inline constexpr int64_t kLanes = 16;
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntLanes __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline __attribute__((always_inline)) Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline __attribute__((always_inline)) void store_lanes(float* p, Lanes v) { std::memcpy(p, &v, sizeof v); }
inline __attribute__((always_inline)) Lanes splat(float f) { return Lanes{} + f; }

// exp(x) lane-wise: x = n ln2 + r, |r| <= ln2/2, e^r by Cephes' degree-7 polynomial, times 2^n
// (as 2^(n-1) * 2 at n = 128, the top of the float range); within 1 ulp of the exact value over
// [-87, 88.7] (tests/unit/test_fused_cpu.cpp); 0 below -87.3, +inf above 88.72, NaN for NaN.
// NaN lanes are set aside before the float-to-int conversions (undefined for NaN).
inline __attribute__((always_inline)) Lanes exp_lanes(Lanes in) {
  const auto nan = in != in;
  const auto tiny = in < -87.3f;
  const auto huge = in > 88.72f;
  Lanes x = nan ? splat(0.0f) : in;
  x = tiny ? splat(-87.3f) : x;
  x = huge ? splat(88.72f) : x;
  const Lanes t = x * 1.44269504088896341f + 0.5f;
  Lanes n = __builtin_convertvector(__builtin_convertvector(t, IntLanes), Lanes);
  n = n > t ? n - 1.0f : n;  // floor
  Lanes r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Lanes p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Lanes e = p * r * r + r + 1.0f;
  IntLanes ni = __builtin_convertvector(n, IntLanes);
  const auto top = ni > 127;
  ni = top ? ni - 1 : ni;
  const IntLanes bits = (ni + 127) << 23;
  Lanes scale;
  std::memcpy(&scale, &bits, sizeof scale);
  Lanes out = e * scale;
  out = top ? out * 2.0f : out;
  out = tiny ? splat(0.0f) : out;
  out = huge ? splat(INFINITY) : out;
  return nan ? in : out;
}

typedef uint32_t UintLanes __attribute__((vector_size(kLanes * sizeof(uint32_t))));

// Each lane rounded to the nearest bf16 (ties to even), NaN kept: c10::BFloat16's rounding.
inline __attribute__((always_inline)) Lanes round_bf16_lanes(Lanes v) {
  UintLanes u;
  std::memcpy(&u, &v, sizeof u);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  Lanes r;
  std::memcpy(&r, &u, sizeof r);
  return v != v ? splat(std::numeric_limits<float>::quiet_NaN()) : r;  // c10's 0x7FC0
}

typedef uint16_t HalfLanes __attribute__((vector_size(kLanes * sizeof(uint16_t))));

// n (<= 16) elements from p as fp32 lanes (the rest 0), and back; whole chunks of 16 as
// vector loads and stores (bf16 widened and narrowed in registers).
template <typename S>
inline __attribute__((always_inline)) Lanes load_n(const S* p, int64_t n) {
  if (n == kLanes) {
    if constexpr (std::is_same_v<S, float>) {
      return load_lanes(p);
    } else {
      HalfLanes h;
      std::memcpy(&h, p, sizeof h);
      const UintLanes u = __builtin_convertvector(h, UintLanes) << 16;
      Lanes v;
      std::memcpy(&v, &u, sizeof v);
      return v;
    }
  }
  float f[kLanes] = {};
  for (int64_t k = 0; k < n; ++k) f[k] = Num<S>::load(p[k]);
  return load_lanes(f);
}
template <typename S>
inline __attribute__((always_inline)) void store_n(S* p, Lanes v, int64_t n) {
  if constexpr (std::is_same_v<S, uint16_t>) {
    v = round_bf16_lanes(v);
    UintLanes u;
    std::memcpy(&u, &v, sizeof u);
    const HalfLanes h = __builtin_convertvector(u >> 16, HalfLanes);
    if (n == kLanes) {
      std::memcpy(p, &h, sizeof h);
    } else {
      for (int64_t k = 0; k < n; ++k) p[k] = h[k];
    }
  } else {
    if (n == kLanes) {
      store_lanes(p, v);
    } else {
      for (int64_t k = 0; k < n; ++k) p[k] = v[k];
    }
  }
}
// Rounded to S's precision in fp32 lanes (bf16: to bf16; fp32: as is).
template <typename S>
inline __attribute__((always_inline)) Lanes rnd(Lanes v) {
  if constexpr (std::is_same_v<S, uint16_t>) return round_bf16_lanes(v);
  return v;
}

template <typename S>
S* ptr(const at::Tensor& t) {
  return t.defined() ? static_cast<S*>(t.data_ptr()) : nullptr;
}

inline constexpr int64_t kRowGrain = 16;

// f(S{}) with S the storage type of `t`: float, double or uint16_t (bf16 bits).
template <typename F>
void by_storage(at::ScalarType t, F&& f) {
  if (t == at::kFloat)
    f(float{});
  else if (t == at::kDouble)
    f(double{});
  else
    f(uint16_t{});
}

// The same for the kernels that take fp32 and bf16 only.
template <typename F>
void by_float_storage(at::ScalarType t, F&& f) {
  if (t == at::kBFloat16)
    f(uint16_t{});
  else
    f(float{});
}

}  // namespace kto::model::fused::detail
