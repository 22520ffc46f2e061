#include "kto/model/logprob.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "kto/util/check.h"

namespace kto::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::ScalarType accum_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Autograd function: forward keeps only (hidden, head, targets, lse); backward recomputes the
// logits chunk by chunk: d/dlogits = g * (onehot(target) - softmax).
class ChunkedTokenLogprob : public torch::autograd::Function<ChunkedTokenLogprob> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& head,
                            const at::Tensor& targets, int64_t chunk_rows) {
    const int64_t N = hidden.size(0);
    const at::ScalarType acc = accum_dtype(hidden);
    at::Tensor out = at::empty({N}, hidden.options().dtype(acc));
    at::Tensor lse = at::empty({N}, hidden.options().dtype(acc));
    for (int64_t begin = 0; begin < N; begin += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, N - begin);
      const at::Tensor logits = at::matmul(hidden.narrow(0, begin, rows), head.t()).to(acc);
      const at::Tensor chunk_lse = at::logsumexp(logits, -1);
      const at::Tensor picked = logits.gather(1, targets.narrow(0, begin, rows).unsqueeze(1)).squeeze(1);
      out.narrow(0, begin, rows).copy_(picked - chunk_lse);
      lse.narrow(0, begin, rows).copy_(chunk_lse);
    }
    ctx->save_for_backward({hidden, head, targets, lse});
    ctx->saved_data["chunk_rows"] = chunk_rows;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& hidden = saved[0];
    const at::Tensor& head = saved[1];
    const at::Tensor& targets = saved[2];
    const at::Tensor& lse = saved[3];
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const at::Tensor grad_out = grads[0];
    const int64_t N = hidden.size(0);
    const at::ScalarType acc = lse.scalar_type();
    const bool need_hidden = ctx->needs_input_grad(0);
    const bool need_head = ctx->needs_input_grad(1);

    at::Tensor grad_hidden = need_hidden ? at::empty_like(hidden) : at::Tensor();
    at::Tensor grad_head = need_head ? at::zeros(head.sizes(), head.options().dtype(acc)) : at::Tensor();
    for (int64_t begin = 0; begin < N; begin += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, N - begin);
      const at::Tensor h = hidden.narrow(0, begin, rows);
      const at::Tensor g = grad_out.narrow(0, begin, rows).to(acc).unsqueeze(1);  // [rows, 1]
      // dlogits = g * (onehot - softmax), built in place in the recomputed logits buffer.
      at::Tensor dlogits = at::matmul(h, head.t()).to(acc);
      dlogits.sub_(lse.narrow(0, begin, rows).unsqueeze(1)).exp_().mul_(-g);
      dlogits.scatter_add_(1, targets.narrow(0, begin, rows).unsqueeze(1), g);
      if (need_head) grad_head.addmm_(dlogits.t(), h.to(acc));  // no [V, C] temporary
      if (need_hidden) {
        at::Tensor rows_out = grad_hidden.narrow(0, begin, rows);
        at::matmul_out(rows_out, dlogits.to(hidden.scalar_type()), head);
      }
    }
    if (need_head) grad_head = grad_head.to(head.scalar_type());
    return {grad_hidden, grad_head, at::Tensor(), at::Tensor()};
  }
};

int64_t resolve_chunk(int64_t chunk_rows, int64_t vocab) {
  return chunk_rows > 0 ? chunk_rows : default_chunk_rows(vocab);
}

}  // namespace

int64_t default_chunk_rows(int64_t vocab_size, int64_t budget_bytes) {
  return std::max<int64_t>(1, budget_bytes / (4 * std::max<int64_t>(1, vocab_size)));
}

at::Tensor token_logprobs(const at::Tensor& hidden_NC, const at::Tensor& head_VC, const at::Tensor& targets_N,
                          int64_t chunk_rows) {
  KTO_CHECK(hidden_NC.dim() == 2 && head_VC.dim() == 2 && hidden_NC.size(1) == head_VC.size(1),
            "token_logprobs: hidden ", hidden_NC.sizes(), " and head ", head_VC.sizes(), " do not match");
  KTO_CHECK(targets_N.dim() == 1 && targets_N.size(0) == hidden_NC.size(0), "token_logprobs: targets ",
            targets_N.sizes(), " for ", hidden_NC.size(0), " rows");
  return ChunkedTokenLogprob::apply(hidden_NC, head_VC, targets_N.to(at::kLong),
                                    resolve_chunk(chunk_rows, head_VC.size(0)));
}

TokenSelection TokenSelection::to(at::Device device) const {
  TokenSelection out = *this;
  out.rows = rows.to(device);
  out.targets = targets.to(device);
  out.seq = seq.to(device);
  return out;
}

TokenSelection select_tokens(const at::Tensor& input_ids_BT, const at::Tensor& loss_mask_BT) {
  KTO_CHECK(input_ids_BT.device().is_cpu() && loss_mask_BT.device().is_cpu(),
            "select_tokens works on CPU tensors (the batch before it is moved to the device)");
  KTO_CHECK(input_ids_BT.dim() == 2 && input_ids_BT.sizes() == loss_mask_BT.sizes(), "input_ids ",
            input_ids_BT.sizes(), " and loss_mask ", loss_mask_BT.sizes(), " differ");
  const int64_t B = input_ids_BT.size(0), T = input_ids_BT.size(1);
  TokenSelection s;
  s.batch = B;
  s.hidden_rows = B * T;
  at::Tensor mask = loss_mask_BT.ne(0);
  if (T > 0) mask.select(1, 0).fill_(false);  // position 0 has no predecessor
  const at::Tensor where = mask.nonzero();    // [N, 2] (b, t)
  const at::Tensor b = where.select(1, 0).contiguous();
  const at::Tensor t = where.select(1, 1).contiguous();
  s.seq = b;
  s.rows = b * T + (t - 1);
  s.targets = input_ids_BT.to(at::kLong).index({b, t});
  return s;
}

at::Tensor sequence_logprob_sums(const at::Tensor& hidden_BTC, const at::Tensor& head_VC,
                                 const TokenSelection& sel, int64_t chunk_rows) {
  KTO_CHECK(hidden_BTC.dim() == 3 && hidden_BTC.size(0) * hidden_BTC.size(1) == sel.hidden_rows, "hidden ",
            hidden_BTC.sizes(), " does not match the selection's ", sel.hidden_rows, " rows");
  const at::Tensor rows = hidden_BTC.reshape({-1, hidden_BTC.size(2)}).index_select(0, sel.rows);
  const at::Tensor lp = token_logprobs(rows, head_VC, sel.targets, chunk_rows);
  return at::zeros({sel.batch}, lp.options()).index_add(0, sel.seq, lp);
}

at::Tensor chunked_logits(const at::Tensor& hidden_NC, const at::Tensor& head_VC, int64_t chunk_rows) {
  const int64_t N = hidden_NC.size(0);
  const int64_t chunk = resolve_chunk(chunk_rows, head_VC.size(0));
  at::Tensor out = at::empty({N, head_VC.size(0)}, hidden_NC.options());
  for (int64_t begin = 0; begin < N; begin += chunk) {
    const int64_t rows = std::min(chunk, N - begin);
    out.narrow(0, begin, rows).copy_(at::matmul(hidden_NC.narrow(0, begin, rows), head_VC.t()));
  }
  return out;
}

}  // namespace kto::model
