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
#include <utility>

namespace kto::model::fused::detail {

// Compiled for AVX-512, AVX2 and baseline x86-64, chosen at load time by the CPU. Every clone
// calls its always-inline templates (clang refuses a 64-byte vector argument in a call made
// directly from the clones that lack AVX-512). For kernels without lane vectors (RoPE).
#define KTO_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// The same three targets, each its own body (GCC/clang function multiversioning: the loader
// picks the CPU's), with `W` — the fp32 lanes of the target's registers: 16, 8, 4 — in scope
// for the kernel the body calls. `decl` is the function's declaration; the rest is its body.
// (clang counts the versions it dispatches to as unused functions, and refuses `unused` on them.)
#if defined(__clang__)
#define KTO_PER_ISA_PUSH \
  _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wunused-function\"")
#define KTO_PER_ISA_POP _Pragma("clang diagnostic pop")
#else
#define KTO_PER_ISA_PUSH
#define KTO_PER_ISA_POP
#endif
#define KTO_PER_ISA(decl, ...)              \
  KTO_PER_ISA_PUSH                          \
  __attribute__((target("avx512f"))) decl { \
    [[maybe_unused]] constexpr int W = 16;  \
    __VA_ARGS__;                            \
  }                                         \
  __attribute__((target("avx2"))) decl {    \
    [[maybe_unused]] constexpr int W = 8;   \
    __VA_ARGS__;                            \
  }                                         \
  __attribute__((target("default"))) decl { \
    [[maybe_unused]] constexpr int W = 4;   \
    __VA_ARGS__;                            \
  }                                         \
  KTO_PER_ISA_POP

#define KTO_INLINE inline __attribute__((always_inline))

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
inline __attribute__((always_inline)) Lanes splat(float f) { return Lanes{} + f; }

// ---- Native-width parts -----------------------------------------------------------------
// GCC lowers arithmetic on a 16-lane vector to whatever registers the target has, but a compare
// or a select wider than them element by element: on AVX2 (GCC 12) one 16-lane compare became
// ~100 scalar instructions, and the kernels ran several times slower than on AVX-512. So every
// compare and select runs on parts of the target's width W (16 AVX-512, 8 AVX2, 4 SSE2; see
// KTO_PER_ISA), the arithmetic around them on the whole 16 lanes. The 16 logical lanes, and with
// them every sum's order, are the same at every width: each target computes the same bits.
template <int W>
struct Part {
  typedef float F __attribute__((vector_size(W * sizeof(float))));
  typedef int32_t I __attribute__((vector_size(W * sizeof(int32_t))));
  typedef uint32_t U __attribute__((vector_size(W * sizeof(uint32_t))));
};

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define KTO_HAS_SHUFFLEVECTOR 1
#endif
#endif

// Lanes [P*W, (P+1)*W) of v.
template <int W, int P, size_t... J>
KTO_INLINE typename Part<W>::F part_of(Lanes v, std::index_sequence<J...>) {
#ifdef KTO_HAS_SHUFFLEVECTOR
  return __builtin_shufflevector(v, v, (P * W + static_cast<int>(J))...);
#else  // GCC before 12: through memory
  typename Part<W>::F r;
  std::memcpy(&r, reinterpret_cast<const float*>(&v) + P * W, sizeof r);
  return r;
#endif
}
template <int W, int P>
KTO_INLINE typename Part<W>::F part(Lanes v) {
  if constexpr (W == kLanes) {
    return v;
  } else {
    return part_of<W, P>(v, std::make_index_sequence<W>{});
  }
}

// Two parts side by side.
template <typename F2, typename F>
KTO_INLINE F2 concat(F a, F b) {
#ifdef KTO_HAS_SHUFFLEVECTOR
  if constexpr (sizeof(F) == 16)
    return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7);
  else
    return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
  F2 r;
  std::memcpy(&r, &a, sizeof a);
  std::memcpy(reinterpret_cast<char*>(&r) + sizeof a, &b, sizeof b);
  return r;
#endif
}

// f applied to each W-wide part of its 16-lane arguments, the results joined.
template <int W, typename Fn, typename... A>
KTO_INLINE Lanes by_parts(Fn f, A... a) {
  if constexpr (W == kLanes) {
    return f(a...);
  } else if constexpr (W == 8) {
    return concat<Lanes>(f(part<8, 0>(a)...), f(part<8, 1>(a)...));
  } else {
    static_assert(W == 4, "parts of 16, 8 or 4 lanes");
    using F8 = typename Part<8>::F;
    return concat<Lanes>(concat<F8>(f(part<4, 0>(a)...), f(part<4, 1>(a)...)),
                         concat<F8>(f(part<4, 2>(a)...), f(part<4, 3>(a)...)));
  }
}

// 16 lanes to p, part by part (a whole 16-lane store of a joined vector went through the stack).
template <int W>
KTO_INLINE void store_lanes(float* p, Lanes v) {
  if constexpr (W == kLanes) {
    std::memcpy(p, &v, sizeof v);
  } else if constexpr (W == 8) {
    const auto a = part<8, 0>(v), b = part<8, 1>(v);
    std::memcpy(p, &a, sizeof a);
    std::memcpy(p + 8, &b, sizeof b);
  } else {
    const auto a = part<4, 0>(v), b = part<4, 1>(v), c = part<4, 2>(v), d = part<4, 3>(v);
    std::memcpy(p, &a, sizeof a);
    std::memcpy(p + 4, &b, sizeof b);
    std::memcpy(p + 8, &c, sizeof c);
    std::memcpy(p + 12, &d, sizeof d);
  }
}

// exp(x) lane-wise: x = n ln2 + r, |r| <= ln2/2, e^r by Cephes' degree-7 polynomial, times 2^n
// (as 2^(n-1) * 2 at n = 128, the top of the float range); within 1 ulp of the exact value over
// [-87, 88.7] (tests/unit/test_fused_cpu.cpp); 0 below -87.3, +inf above 88.72, NaN for NaN.
// NaN lanes are set aside before the float-to-int conversions (undefined for NaN).
template <int W>
struct ExpPart {
  using F = typename Part<W>::F;
  using I = typename Part<W>::I;
  KTO_INLINE F operator()(F in) const {
    const I nan = in != in;
    const I tiny = in < -87.3f;
    const I huge = in > 88.72f;
    F x = nan ? F{} : in;
    x = tiny ? F{} - 87.3f : x;
    x = huge ? F{} + 88.72f : x;
    const F t = x * 1.44269504088896341f + 0.5f;
    F n = __builtin_convertvector(__builtin_convertvector(t, I), F);
    n = n > t ? n - 1.0f : n;  // floor
    F r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    F p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const F e = p * r * r + r + 1.0f;
    I ni = __builtin_convertvector(n, I);
    const I top = ni > 127;
    ni = top ? ni - 1 : ni;
    const I bits = (ni + 127) << 23;
    F scale;
    std::memcpy(&scale, &bits, sizeof scale);
    F out = e * scale;
    out = top ? out * 2.0f : out;
    out = tiny ? F{} : out;
    out = huge ? F{} + INFINITY : out;
    return nan ? in : out;
  }
};
template <int W>
KTO_INLINE Lanes exp_lanes(Lanes in) {
  return by_parts<W>(ExpPart<W>{}, in);
}

// a > b ? a : b lane-wise (b where either is NaN).
template <int W>
struct MaxPart {
  using F = typename Part<W>::F;
  KTO_INLINE F operator()(F a, F b) const { return a > b ? a : b; }
};
template <int W>
KTO_INLINE Lanes max_lanes(Lanes a, Lanes b) {
  return by_parts<W>(MaxPart<W>{}, a, b);
}

typedef uint32_t UintLanes __attribute__((vector_size(kLanes * sizeof(uint32_t))));

// Each lane rounded to the nearest bf16 (ties to even), NaN kept: c10::BFloat16's rounding.
template <int W>
struct RoundBf16Part {
  using F = typename Part<W>::F;
  using U = typename Part<W>::U;
  KTO_INLINE F operator()(F v) const {
    U u;
    std::memcpy(&u, &v, sizeof u);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    F r;
    std::memcpy(&r, &u, sizeof r);
    return v != v ? F{} + std::numeric_limits<float>::quiet_NaN() : r;  // c10's 0x7FC0
  }
};
template <int W>
KTO_INLINE Lanes round_bf16_lanes(Lanes v) {
  return by_parts<W>(RoundBf16Part<W>{}, v);
}

typedef uint16_t HalfLanes __attribute__((vector_size(kLanes * sizeof(uint16_t))));

// n (<= 16) elements from p as fp32 lanes (the rest 0), and back; whole chunks of 16 as
// vector loads and stores (bf16 widened and narrowed in registers).
template <typename S>
KTO_INLINE Lanes load_n(const S* p, int64_t n) {
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
template <int W, typename S>
KTO_INLINE void store_n(S* p, Lanes v, int64_t n) {
  if constexpr (std::is_same_v<S, uint16_t>) {
    v = round_bf16_lanes<W>(v);
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
      store_lanes<W>(p, v);
    } else {
      for (int64_t k = 0; k < n; ++k) p[k] = v[k];
    }
  }
}
// Rounded to S's precision in fp32 lanes (bf16: to bf16; fp32: as is).
template <int W, typename S>
KTO_INLINE Lanes rnd(Lanes v) {
  if constexpr (std::is_same_v<S, uint16_t>) return round_bf16_lanes<W>(v);
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
