// NCCL collectives with exactly predictable results, and the sharded model on the GPU against
// the same model on the CPU.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "gpu_world.h"
#include "kto/comm/communicator.h"
#include "kto/fsdp/sharded_model.h"
#include "kto/model/dense_model.h"
#include "kto/model/logprob.h"

using kto::comm::ReduceOp;

TEST_CASE("NCCL: all_gather, reduce_scatter, all_reduce, broadcast are exact", "[gpu][nccl]") {
  const auto& w = kto::test::gpu_world();
  const at::Device device(at::kCUDA, w.local_rank());
  auto comm = kto::comm::make_communicator(w, device);
  CHECK(std::string(comm->backend()) == "nccl");
  const int R = w.size(), r = w.rank();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kDouble}) {
    const auto opts = at::TensorOptions().dtype(dtype).device(device);
    at::Tensor shard = (at::arange(5, at::kDouble) + 16 * r).to(opts);
    at::Tensor full = at::empty({5 * R}, opts);
    comm->all_gather(shard, full)->wait();
    const at::Tensor expected =
        (at::arange(5, at::kDouble).repeat({R}) + 16 * at::arange(R, at::kDouble).repeat_interleave(5))
            .to(opts);
    CHECK(at::equal(full, expected));
    at::Tensor contrib = (at::arange(5 * R, at::kDouble) * (r + 1)).to(opts);
    at::Tensor out = at::empty({5}, opts);
    comm->reduce_scatter(contrib, out, ReduceOp::sum)->wait();
    CHECK(at::equal(out, (at::arange(r * 5, (r + 1) * 5, at::kDouble) * (R * (R + 1) / 2)).to(opts)));
    at::Tensor x = at::full({3}, static_cast<double>(r + 1), opts);
    comm->all_reduce(x, ReduceOp::max)->wait();
    CHECK(at::equal(x, at::full({3}, static_cast<double>(R), opts)));
    at::Tensor b = r == 0 ? at::arange(4, opts) : at::zeros({4}, opts);
    comm->broadcast(b, 0)->wait();
    CHECK(at::equal(b, at::arange(4, opts)));
  }
}

TEST_CASE("sharded forward and backward on the GPU match the CPU", "[gpu][fsdp]") {
  const auto& w = kto::test::gpu_world();
  const at::Device device(at::kCUDA, w.local_rank());
  kto::model::ModelConfig c;
  c.vocab_size = 67;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.resolve_defaults();
  c.validate("gpu");
  kto::fsdp::FsdpOptions o;
  o.device = device;
  kto::fsdp::ShardedModel gpu(
      c, w, std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(w, device)), o);
  gpu.init_random(3, 0.2);
  kto::model::DenseModel cpu(c, at::kFloat);
  cpu.init_random(3, 0.2);
  const at::Tensor ids = at::arange(16, at::kLong).remainder(67).view({2, 8});
  at::Tensor loss_mask = at::ones_like(ids);
  const auto sel = kto::model::select_tokens(ids, loss_mask);
  const at::Tensor lp = gpu.sequence_logprobs(ids, {}, sel);
  lp.sum().backward();
  at::NoGradGuard no_grad;
  const at::Tensor expected =
      kto::model::sequence_logprob_sums(cpu.forward_hidden(ids, {}), cpu.lm_head(), sel);
  CHECK(at::allclose(lp.detach().cpu(), expected, 1e-4, 1e-4));
  CHECK(gpu.shards()[1].grad().is_cuda());
}
