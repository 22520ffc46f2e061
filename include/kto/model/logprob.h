// Log-probabilities of target tokens without materialising the logits of a whole batch.
//
// logits = hidden @ head^T is computed `chunk_rows` rows at a time, in forward and again in
// backward (a custom autograd function recomputes each chunk's logits from the saved hidden
// states), so peak memory is one chunk of [rows, V] instead of [B*T, V] in fp32 — at vocab 128k
// the latter alone is gigabytes. Log-sum-exp and the gathered logit are accumulated in fp32
// (fp64 for fp64 runs).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kto::model {

// Rows per chunk so one chunk's fp32 logits take about `budget_bytes`.
int64_t default_chunk_rows(int64_t vocab_size, int64_t budget_bytes = 64ll << 20);

// log softmax(hidden_NC @ head_VC^T)[n, targets_N[n]] for every row n: [N] in fp32 (fp64 when
// hidden is fp64). Differentiable with respect to hidden and head.
at::Tensor token_logprobs(const at::Tensor& hidden_NC, const at::Tensor& head_VC, const at::Tensor& targets_N,
                          int64_t chunk_rows = 0);

// Which hidden rows predict which target tokens, derived on the host from CPU tensors once per
// batch (no device sync on the hot path). Position t's token is predicted from hidden row t-1.
struct TokenSelection {
  at::Tensor rows;          // [N] int64: b * T + (t - 1) (packed: the predecessor's place in the stream)
  at::Tensor targets;       // [N] int64: input_ids[b, t]
  at::Tensor seq;           // [N] int64: b (packed: the sequence the token belongs to)
  int64_t batch = 0;        // sequences: the length of the per-sequence sums
  int64_t hidden_rows = 0;  // B * T of the hidden states `rows` index (packed: N)
  TokenSelection to(at::Device device) const;
};

// Tokens t >= 1 with loss_mask_BT[b, t] != 0 (e.g. completion tokens that are not padding).
TokenSelection select_tokens(const at::Tensor& input_ids_BT, const at::Tensor& loss_mask_BT);

// Per-sequence sums of selected token log-probs: [B] in fp32 (fp64 for fp64 runs).
// hidden_BTC is the final-normed hidden state.
at::Tensor sequence_logprob_sums(const at::Tensor& hidden_BTC, const at::Tensor& head_VC,
                                 const TokenSelection& selection, int64_t chunk_rows = 0);

// All logits [N, V] in hidden's dtype, computed chunk by chunk (for inspection tools).
at::Tensor chunked_logits(const at::Tensor& hidden_NC, const at::Tensor& head_VC, int64_t chunk_rows = 0);

}  // namespace kto::model
