// Sharded model vs the plain unsharded model, under mpirun -np 1/2/4: same outputs, gathered
// gradients equal to unsharded autograd (1e-5 relative), and a few sharded optimizer steps
// giving the unsharded weights — in both reshard modes, for a Llama (GQA) and a GPT-NeoX, with
// unit sizes that do not divide by the world size, fully sharded and in every hybrid grouping
// (shard groups of 2 and of 1), with the traffic counted equal to fsdp::step_collective_bytes.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <catch2/catch.hpp>

#include "kto/ckpt/checkpoint.h"
#include "kto/fsdp/optimizer.h"
#include "kto/fsdp/sharded_model.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/model/dense_model.h"
#include "kto/model/logprob.h"
#include "kto/util/files.h"
#include "mpi_world.h"

using kto::model::ModelConfig;

namespace {

ModelConfig tiny(const std::string& arch) {
  ModelConfig c;
  c.arch = *kto::parse_choice(kto::model::kArchs, arch);
  c.vocab_size = 67;  // odd: 67 * 30 elements is not a multiple of 4
  c.hidden_size = 30;
  c.intermediate_size = 41;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 3;
  c.num_key_value_heads = arch == "gpt_neox" ? 3 : 1;
  c.max_position_embeddings = 64;
  if (arch == "gpt_neox") {
    c.partial_rotary_factor = 0.4;
    c.hidden_act = kto::model::Activation::gelu;
    c.parallel_residual = true;
    c.attention_bias = true;
  } else {
    c.tie_word_embeddings = true;  // the head reuses the embedding unit
  }
  c.resolve_defaults();
  c.validate("tiny");
  return c;
}

struct RankData {
  at::Tensor ids, mask, loss_mask, weights;
  kto::model::TokenSelection sel;
};

// Rank r's two sequences of the global batch: right-padded, different lengths.
RankData data_for(int rank, int64_t vocab, int step) {
  at::Generator gen = at::detail::createCPUGenerator(1000 + 17 * rank + step);
  RankData d;
  d.ids = at::randint(vocab, {2, 9}, gen, at::kLong);
  d.mask = at::ones({2, 9}, at::kLong);
  d.mask[1].narrow(0, 6 - rank % 3, 3 + rank % 3).fill_(0);
  d.loss_mask = at::zeros({2, 9}, at::kLong);
  d.loss_mask.narrow(1, 4, 5).fill_(1);
  d.loss_mask.mul_(d.mask);
  d.weights = at::randn({2}, gen);
  d.sel = kto::model::select_tokens(d.ids, d.loss_mask);
  return d;
}

// A nonlinear loss of the per-sequence log-probs, like KTO's sigmoid of rewards.
at::Tensor loss_of(const at::Tensor& logps, const at::Tensor& weights) {
  return (at::sigmoid(logps * 0.05) * weights.to(logps.scalar_type())).mean();
}

double rel_error(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs().max() /
          b.to(at::kDouble).abs().max().clamp_min(1e-30))
      .item<double>();
}

// Dense loss = the average over ranks of each rank's local loss (what sharded training optimises).
at::Tensor dense_loss(const kto::model::DenseModel& m, int world, int step, at::Tensor* rank_logps) {
  at::Tensor total;
  for (int r = 0; r < world; ++r) {
    const RankData d = data_for(r, m.config().vocab_size, step);
    const at::Tensor lp =
        kto::model::sequence_logprob_sums(m.forward_hidden(d.ids, d.mask), m.lm_head(), d.sel);
    if (r == kto::test::world().rank()) *rank_logps = lp.detach();
    const at::Tensor l = loss_of(lp, d.weights) / world;
    total = total.defined() ? total + l : l;
  }
  return total;
}

}  // namespace

TEST_CASE("sharded forward, gradients and optimizer steps equal the unsharded model", "[mpi][fsdp]") {
  const auto& world = kto::test::world();
  const int W = world.size(), rank = world.rank();
  auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
  // fp32: one step, forward and gradients to 1e-5 relative. fp64: three optimizer steps, where
  // the comparison isolates the sharded optimizer (Adam's g / sqrt(v) turns fp32 rounding of
  // near-zero gradients into lr-sized differences, in any two fp32 implementations).
  struct Run {
    at::ScalarType dtype;
    int steps;
    double tol;
  };
  std::vector<std::string> groupings = {"world"};
  for (int g = W / 2; g >= 1; g /= 2) groupings.push_back(std::to_string(g));  // 4: world, 2, 1
  for (const Run run : {Run{at::kFloat, 1, 1e-5}, Run{at::kDouble, 3, 1e-9}}) {
    for (const std::string arch : {"llama", "gpt_neox"}) {
      for (bool reshard : {true, false}) {
        for (const std::string& grouping : groupings) {
          DYNAMIC_SECTION(arch << (reshard ? " reshard_after_forward " : " kept ") << c10::toString(run.dtype)
                               << " W=" << W << " shard_group " << grouping) {
            const ModelConfig cfg = tiny(arch);
            kto::fsdp::FsdpOptions o;
            o.compute_dtype = run.dtype;
            o.reshard_after_forward = reshard;
            o.logprob_chunk_rows = 3;
            const auto mesh =
                kto::fsdp::Mesh::build(world, kto::fsdp::ShardGroupSpec::parse(grouping), at::kCPU, comm);
            const int S = mesh->shard().size(), R = mesh->replicas();
            REQUIRE(S * R == W);
            kto::fsdp::ShardedModel sharded(cfg, mesh, o);
            kto::comm::Communicator& shard_comm = sharded.shard_comm();
            sharded.init_random(11, 0.2);
            bool uneven = false;
            for (const auto& u : sharded.layout().units) uneven = uneven || u.numel % 4 != 0;
            REQUIRE(uneven);  // the test covers padding (at 4 ranks per group)

            kto::model::DenseModel dense(cfg, at::kFloat);
            dense.init_random(11, 0.2);
            if (run.dtype == at::kDouble) dense = dense.to(at::kDouble);
            const auto full = sharded.gather_full_units();
            for (size_t u = 0; u < full.size(); ++u)
              REQUIRE(at::equal(full[u], dense.units()[u].to(at::kFloat)));
            for (at::Tensor& t : dense.units()) t.requires_grad_(true);

            kto::fsdp::OptimizerOptions oo;
            oo.name = arch == "gpt_neox"
                          ? kto::fsdp::OptimizerName::rmsprop
                          : kto::fsdp::OptimizerName::adamw;  // both update rules, both sharded
            oo.weight_decay = 0.1;
            oo.max_grad_norm = 0.01;  // small enough to clip: exercises the global norm
            kto::fsdp::ShardedOptimizer opt_s(sharded.shards(), sharded.decay_segments(), oo, &shard_comm);
            std::vector<std::vector<kto::fsdp::Segment>> full_decay;
            for (const auto& unit : dense.layout().units)
              full_decay.push_back(kto::fsdp::decay_segments(unit, 0, unit.numel));
            kto::fsdp::ShardedOptimizer opt_d(dense.units(), full_decay, oo, nullptr);

            for (int step = 0; step < run.steps; ++step) {
              const RankData d = data_for(rank, cfg.vocab_size, step);
              sharded.reset_comm_stats();
              const at::Tensor lp_s = sharded.sequence_logprobs(d.ids, d.mask, d.sel);
              loss_of(lp_s, d.weights).backward();
              sharded.reduce_gradients_across_replicas();
              // What the step handed to collectives, by link, is what the formula says.
              const auto counted = kto::fsdp::counted_collective_bytes(sharded.comm_stats());
              const auto expected = kto::fsdp::step_collective_bytes(
                  sharded.layout(), S, R, static_cast<int>(c10::elementSize(run.dtype)),
                  static_cast<int>(c10::elementSize(run.dtype)), 1, /*with_reference=*/false, reshard);
              CHECK(counted.gathered == expected.gathered);
              CHECK(counted.reduced == expected.reduced);
              CHECK(counted.replica_reduced == expected.replica_reduced);
              CHECK((R > 1) == (counted.replica_reduced > 0));
              // Traffic per step: resharding gathers every unit twice (forward, then backward for the
              // recompute), a tied head gathers the embedding once more each time; kept units are
              // gathered once. One reduce-scatter per unit (plus the tied head's embedding gradient).
              const int64_t n = static_cast<int64_t>(sharded.layout().units.size());
              const int64_t tied = cfg.tie_word_embeddings ? 1 : 0;
              CHECK(sharded.comm_stats().all_gathers == (reshard ? 2 * (n + tied) : n));
              CHECK(sharded.comm_stats().reduce_scatters == (reshard ? n + tied : n));
              // Prefetch: every unit after the first was already being gathered when it was
              // needed, in forward (and, resharding, in backward after the head).
              CHECK(sharded.comm_stats().prefetch_hits >= (reshard ? 2 * (n - 1) - 1 : n - 1));
              at::Tensor lp_d;
              dense_loss(dense, W, step, &lp_d).backward();
              INFO("step " << step);
              CHECK(rel_error(lp_s.detach(), lp_d) < run.tol);
              for (size_t u = 0; u < sharded.shards().size(); ++u) {
                const auto r = sharded.range(u);
                at::Tensor g =
                    at::empty({r.padded_numel}, sharded.shards()[u].options().requires_grad(false));
                shard_comm.all_gather(sharded.shards()[u].grad().contiguous(), g)->wait();
                const double err = rel_error(g.narrow(0, 0, r.numel), dense.units()[u].grad());
                INFO("unit " << sharded.layout().units[u].name << " gradient relative error " << err);
                CHECK(err < run.tol);
              }
              const double norm_s = opt_s.grad_norm(), norm_d = opt_d.grad_norm();
              CHECK(norm_s == Approx(norm_d).epsilon(run.tol));
              CHECK(norm_s > oo.max_grad_norm);
              opt_s.step(1e-2, norm_s);
              opt_d.step(1e-2, norm_d);
              opt_s.zero_grad();
              opt_d.zero_grad();
            }
            if (run.dtype == at::kDouble) {
              const auto trained = sharded.gather_full_units();
              for (size_t u = 0; u < trained.size(); ++u) {
                INFO("unit " << u);
                CHECK(rel_error(trained[u], dense.units()[u].detach().to(at::kFloat)) < 1e-6);  // fp32 views
                CHECK_FALSE(at::equal(trained[u], full[u]));  // it did train
              }
              for (size_t u = 0; u < sharded.shards().size(); ++u) {  // the fp64 masters themselves
                const auto r = sharded.range(u);
                at::Tensor w = at::empty({r.padded_numel}, at::kDouble);
                shard_comm.all_gather(sharded.shards()[u].detach().contiguous(), w)->wait();
                CHECK(rel_error(w.narrow(0, 0, r.numel), dense.units()[u].detach()) < run.tol);
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("without prefetch nothing is gathered ahead", "[mpi][fsdp]") {
  const auto& world = kto::test::world();
  auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
  kto::fsdp::FsdpOptions o;
  o.prefetch = false;
  kto::fsdp::ShardedModel m(tiny("llama"), world, comm, o);
  m.init_random(1, 0.1);
  const RankData d = data_for(world.rank(), 67, 0);
  m.sequence_logprobs(d.ids, d.mask, d.sel).sum().backward();
  CHECK(m.comm_stats().prefetch_hits == 0);
  CHECK(m.comm_stats().all_gathers > 0);
}

TEST_CASE("a frozen sharded reference loads its slices from a Hugging Face directory", "[mpi][fsdp]") {
  const auto& world = kto::test::world();
  auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
  const ModelConfig cfg = tiny("gpt_neox");
  kto::model::DenseModel dense(cfg, at::kFloat);
  dense.init_random(5, 0.2);
  const std::string dir = kto::test::shared_temp_dir("kto-mpi-fsdp");
  if (world.rank() == 0) {
    kto::io::save_hf_model(dir, cfg, dense.layout(), dense.units(), at::kFloat, "", 20000);  // several files
  }
  world.barrier();  // rank 0 has written the files
  kto::fsdp::FsdpOptions o;
  o.trainable = false;
  kto::fsdp::ShardedModel ref(cfg, world, comm, o);
  ref.load(kto::io::SafetensorsSet::open_dir(dir));
  CHECK(ref.shards()[0].requires_grad() == false);
  const auto full = ref.gather_full_units();
  for (size_t u = 0; u < full.size(); ++u) CHECK(at::equal(full[u], dense.units()[u]));
  const RankData d = data_for(world.rank(), cfg.vocab_size, 0);
  const at::Tensor lp = ref.sequence_logprobs(d.ids, d.mask, d.sel);
  at::NoGradGuard no_grad;
  const at::Tensor expected =
      kto::model::sequence_logprob_sums(dense.forward_hidden(d.ids, d.mask), dense.lm_head(), d.sel);
  CHECK(rel_error(lp, expected) < 1e-5);
  // Traffic: one all-gather per unit for this forward, nothing reduced.
  CHECK(ref.comm_stats().all_gathers >= static_cast<int64_t>(ref.layout().units.size()));
  CHECK(ref.comm_stats().reduce_scatters == 0);
  world.barrier();
  if (world.rank() == 0) kto::remove_tree(dir);
}

TEST_CASE("the frozen reference scores two batches in one walk, each unit gathered once", "[mpi][fsdp]") {
  const auto& world = kto::test::world();
  auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
  for (const std::string arch : {"llama", "gpt_neox"}) {
    DYNAMIC_SECTION(arch) {
      kto::fsdp::FsdpOptions o;
      o.trainable = false;
      kto::fsdp::ShardedModel ref(tiny(arch), world, comm, o);
      ref.init_random(3, 0.2);
      const RankData a = data_for(world.rank(), 67, 0), b = data_for(world.rank(), 67, 1);
      const at::Tensor alone_a = ref.sequence_logprobs(a.ids, a.mask, a.sel);
      const at::Tensor alone_b = ref.sequence_logprobs(
          b.ids.narrow(1, 0, 7), b.mask.narrow(1, 0, 7),
          kto::model::select_tokens(b.ids.narrow(1, 0, 7), b.loss_mask.narrow(1, 0, 7)));
      ref.reset_comm_stats();
      const auto both = ref.sequence_logprobs_each(
          {{a.ids, a.mask, a.sel, nullptr},
           {b.ids.narrow(1, 0, 7), b.mask.narrow(1, 0, 7),
            kto::model::select_tokens(b.ids.narrow(1, 0, 7), b.loss_mask.narrow(1, 0, 7)), nullptr}});
      REQUIRE(both.size() == 2);
      CHECK(at::equal(both[0], alone_a));  // bit for bit: the same shapes through the same kernels
      CHECK(at::equal(both[1], alone_b));
      // Once per unit (a tied head takes the embedding's again), not once per batch.
      const int64_t gathered =
          static_cast<int64_t>(ref.layout().units.size()) + (ref.layout().tied_head() ? 1 : 0);
      CHECK(ref.comm_stats().all_gathers == gathered);
    }
  }
}

TEST_CASE("the policy's target (grad) and KL (no grad) batches in one walk give what two walks give",
          "[mpi][fsdp]") {
  const auto& world = kto::test::world();
  auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
  for (bool reshard : {false, true}) {
    DYNAMIC_SECTION((reshard ? "reshard_after_forward" : "kept") << " W=" << world.size()) {
      kto::fsdp::FsdpOptions o;
      o.reshard_after_forward = reshard;
      o.compute_dtype = at::kDouble;
      kto::fsdp::ShardedModel m(tiny("llama"), world, comm, o);
      m.init_random(5, 0.2);
      const RankData a = data_for(world.rank(), 67, 0), b = data_for(world.rank(), 67, 1);
      at::Tensor alone_b;
      {
        at::NoGradGuard no_grad;
        alone_b = m.sequence_logprobs(b.ids, b.mask, b.sel);
      }
      const at::Tensor alone_a = m.sequence_logprobs(a.ids, a.mask, a.sel);
      loss_of(alone_a, a.weights).backward();
      std::vector<at::Tensor> grads;
      for (at::Tensor& s : m.shards()) {
        grads.push_back(s.grad().clone());
        s.mutable_grad() = at::Tensor();
      }
      m.reset_comm_stats();
      const auto both =
          m.sequence_logprobs_each({{a.ids, a.mask, a.sel, nullptr}, {b.ids, b.mask, b.sel, nullptr}});
      REQUIRE(both.size() == 2);
      CHECK(both[0].requires_grad());
      CHECK_FALSE(both[1].requires_grad());
      CHECK(at::equal(both[0].detach(), alone_a.detach()));  // the same kernels on the same inputs
      CHECK(at::equal(both[1], alone_b));
      // Each unit gathered once for both batches in the forward (a kept tied head reuses the
      // embedding's buffer; a recomputed one gathers it again); recomputed units are gathered
      // again in backward, for the first batch only.
      const int64_t units = static_cast<int64_t>(m.layout().units.size());
      const int64_t tied = m.layout().tied_head() ? 1 : 0;
      CHECK(m.comm_stats().all_gathers == (reshard ? units + tied : units));
      loss_of(both[0], a.weights).backward();
      for (size_t u = 0; u < grads.size(); ++u) CHECK(at::equal(m.shards()[u].grad(), grads[u]));
    }
  }
}

TEST_CASE("gradients of accumulated backward passes land in the slices when each backward returns",
          "[mpi][fsdp]") {
  const auto& world = kto::test::world();
  auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
  for (bool reshard : {true, false}) {
    DYNAMIC_SECTION((reshard ? "reshard_after_forward" : "kept") << " W=" << world.size()) {
      kto::fsdp::FsdpOptions o;
      o.reshard_after_forward = reshard;
      o.compute_dtype = at::kDouble;
      kto::fsdp::ShardedModel m(tiny("llama"), world, comm, o);
      m.init_random(7, 0.2);
      const RankData d0 = data_for(world.rank(), 67, 0), d1 = data_for(world.rank(), 67, 1);
      loss_of(m.sequence_logprobs(d0.ids, d0.mask, d0.sel), d0.weights).backward();
      std::vector<at::Tensor> first;
      for (const at::Tensor& s : m.shards()) {
        REQUIRE(s.grad().defined());  // complete once backward() has returned
        first.push_back(s.grad().clone());
      }
      loss_of(m.sequence_logprobs(d1.ids, d1.mask, d1.sel), d1.weights).backward();
      std::vector<at::Tensor> both;
      for (const at::Tensor& s : m.shards()) both.push_back(s.grad().clone());
      for (at::Tensor& s : m.shards()) s.mutable_grad() = at::Tensor();
      loss_of(m.sequence_logprobs(d1.ids, d1.mask, d1.sel), d1.weights).backward();
      for (size_t u = 0; u < both.size(); ++u) {
        CHECK(rel_error(both[u], first[u] + m.shards()[u].grad()) < 1e-12);  // the sum of the two
      }
    }
  }
}

TEST_CASE("a checkpoint is refused when the replicas of a hybrid mesh hold different state",
          "[mpi][fsdp][ckpt]") {
  const auto& world = kto::test::world();
  const int W = world.size();
  if (W < 2) return;  // no replicas at one rank
  auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
  const auto mesh =
      kto::fsdp::Mesh::build(world, kto::fsdp::ShardGroupSpec::parse(std::to_string(W / 2)), at::kCPU, comm);
  REQUIRE(mesh->replicas() == 2);
  kto::fsdp::ShardedModel model(tiny("llama"), mesh, kto::fsdp::FsdpOptions{});
  model.init_random(3, 0.2);
  kto::fsdp::ShardedOptimizer opt(model.shards(), model.decay_segments(), kto::fsdp::OptimizerOptions{},
                                  &model.shard_comm());
  const std::string dir = kto::test::shared_temp_dir("kto-mpi-replicas");
  kto::ckpt::SaveRequest request;
  request.checkpoints_dir = dir;
  request.state.step = 1;
  const std::string saved = kto::ckpt::save(request, model, opt, world);
  const kto::ckpt::Manifest m = kto::ckpt::read_manifest(saved);
  CHECK(m.world_size == W);
  CHECK(m.shard_group_size == W / 2);
  CHECK(m.shards.size() == static_cast<size_t>(W / 2));
  // One replica's slice drifts: no rank saves, every rank says why.
  if (mesh->group_index() == 1 && model.group().rank() == 0) {
    at::NoGradGuard no_grad;
    model.shards()[1].narrow(0, 0, 1).add_(1e-3);
  }
  request.state.step = 2;
  CHECK_THROWS_WITH(kto::ckpt::save(request, model, opt, world),
                    Catch::Contains("replicas hold different weights or optimizer state"));
  world.barrier();
  CHECK_FALSE(kto::path_exists(dir + "/step_00000002"));
  world.barrier();
  if (world.is_root()) kto::remove_tree(dir);
}
