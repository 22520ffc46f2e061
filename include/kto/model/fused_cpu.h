// Fused CPU kernels of the decoder's memory-bound steps (used by blocks.cpp).
//
// Each replaces a chain of ATen ops that makes several passes over an activation with one pass
// of our own (docs/performance.md has what each saves). rope_heads computes exactly what its
// chain computes — the same operations in the same order, each rounded where the chain rounds —
// and gives identical bits; masked_softmax agrees with its chain to a few ulps (its own exp, sums
// in lanes). tests/unit/test_fused_cpu.cpp checks both against the chains, and a whole model
// with the kernels on against off. Devices other than the CPU keep the ATen chains.
//
// On by default; KTO_FUSED_CPU=0 in the environment (read once) or set_enabled(false) turns
// them off everywhere — for comparisons and diagnosis.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>

namespace kto::model::fused {

// Where a head's q, k and v sit in a row of the qkv projection: `llama` rows are
// [q heads (H*D) | k heads (Hkv*D) | v heads (Hkv*D)]; `neox` rows are per head [q k v].
enum class QkvLayout { llama, neox };

bool enabled();
void set_enabled(bool on);

// exp as masked_softmax computes it, element by element (fp32), for tests.
at::Tensor exp_as_fused(const at::Tensor& x);

// Whether rope_heads() serves these inputs (a CPU tensor of fp32, fp64 or bf16).
bool rope_heads_supported(const at::Tensor& qkv);

// qkv [B, T, W] -> q [B, H, T, D], k [B, Hkv, T, D], v [B, Hkv, T, D], each contiguous, with
// the first R = cos.size(-1) dims of every q and k head rotated: x*cos + rotate_half(x)*sin
// (Hugging Face's apply_rotary_pos_emb); cos, sin [T, R] in qkv's dtype. Differentiable in
// qkv. Replaces split, view, transpose, the rotation's five ops on q and k, and, in backward,
// their gradients and the concatenation of q/k/v's gradient pieces.
std::array<at::Tensor, 3> rope_heads(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                     int64_t heads, int64_t kv_heads, int64_t head_dim, QkvLayout layout);

// Whether masked_softmax() serves these scores (a contiguous CPU tensor of fp32 or bf16).
bool masked_softmax_supported(const at::Tensor& scores);

// softmax(scores * scale + mask[r % Tq]) over the last dim of scores [..., R, Tk] (row r is
// query position r % Tq: R may stack several query heads' rows), computed in fp32 and returned
// in scores' dtype; mask [Tq, Tk] additive, fp32. `causal`: mask is the plain causal mask
// (Tq == Tk), so the keys past each query come out exactly 0 and are not computed at all.
// Differentiable in scores. Replaces the widening copy, the scale, the mask add, softmax and
// the narrowing copy, and their gradients. Unlike rope_heads, not bit-identical to that chain:
// exp is our own (a Cephes-style polynomial, within 1 ulp of the exact value) and sums are
// taken in 16 lanes — the results agree to a few ulps.
at::Tensor masked_softmax(const at::Tensor& scores, double scale, const at::Tensor& mask, bool causal);

// Whether attention_no_grad() serves these operands: fp32 CPU tensors, q [B, G, R, D], k and
// v [B, G, Tk, D], and each product at least the 400 multiply-adds under which ATen's CPU bmm
// uses a loop of its own instead of a GEMM.
bool attention_no_grad_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// masked_softmax(q k^T, scale, mask, causal) v without autograd (grad mode must be off), one
// [R, Tk] score matrix at a time in a scratch buffer that stays in cache (the batched path writes
// all B * G of them out to memory, then reads them twice). q [B, G, R, D] (R may stack several
// query heads' rows, as in masked_softmax), k, v [B, G, Tk, D]; returns [B, G, R, D], contiguous.
// The same GEMM calls (ATen 1.x's CPU bmm without MKL runs one GEMM per matrix) and the same
// softmax rows as the batched path: the same bits (with MKL's batched GEMM, within rounding).
at::Tensor attention_no_grad(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                             const at::Tensor& mask, bool causal);

// Whether swiglu() and rms_norm() serve x (a CPU tensor of fp32 or bf16).
bool elementwise_supported(const at::Tensor& x);

// gate_up [..., 2I] -> silu(gate) * up [..., I] (Llama's gated MLP on the fused gate/up
// projection). Differentiable; backward writes [..., 2I] at once (no concatenation of the two
// halves' gradients) and recomputes silu instead of keeping it. Within an ulp or two of the
// chain (its own exp).
at::Tensor swiglu(const at::Tensor& gate_up);

// Hugging Face LlamaRMSNorm: w * round(x * rsqrt(mean(x^2) + eps)), statistics in fp32.
// Differentiable in x and w; agrees with the chain to float rounding (sums in lanes).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace kto::model::fused
