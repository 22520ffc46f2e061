// The KL pass as the trainer computes it (loader -> padded KL batch -> sharded model) equals
// running the model on "prompt of i + completion of j" directly, one unpadded sequence at a
// time — with prompts and completions of different lengths, pairs crossing rank boundaries.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "kto/data/loader.h"
#include "kto/fsdp/sharded_model.h"
#include "kto/model/dense_model.h"
#include "kto/model/logprob.h"
#include "kto/util/files.h"
#include "mpi_world.h"

TEST_CASE("mismatched-pair log-probs from token batches equal the concatenated sequences run directly",
          "[mpi][train]") {
  const auto& world = kto::test::world();
  const int W = world.size(), rank = world.rank();
  kto::model::ModelConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.resolve_defaults();
  c.validate("test");

  const std::string dir = kto::test::shared_temp_dir("kto-mpi-kl");
  if (world.is_root()) {
    kto::data::DatasetAttributes attrs;
    attrs.pad_id = 0;
    kto::data::DatasetWriter w(dir + "/d.h5", attrs);
    for (int i = 0; i < 24; ++i) {  // prompt 1..5 tokens, completion 1..4 tokens
      std::vector<int32_t> t;
      for (int k = 0; k < 1 + i % 5; ++k) t.push_back(2 + (7 * i + k) % 48);
      for (int k = 0; k < 1 + (i * 3) % 4; ++k) t.push_back(2 + (11 * i + 5 * k) % 48);
      w.add(t, 1 + i % 5, i % 3 != 0);
    }
    w.finish();
  }
  world.barrier();  // rank 0 has written the files
  const auto ds = kto::data::Dataset::open({dir + "/d.h5"});

  using kto::data::BatchLayout;
  for (const auto layout : {BatchLayout::padded, BatchLayout::packed, BatchLayout::shared_prompts})
    for (const auto scope : {kto::data::PairScope::global, kto::data::PairScope::rank}) {
      for (const auto pairing : {kto::data::Pairing::next, kto::data::Pairing::prev}) {
        kto::data::DataOptions lo;
        lo.layout = layout;
        lo.seed = 3;
        lo.micro_batch = 3;
        lo.pair_scope = scope;
        lo.pairing = pairing;
        lo.pad_to_multiple_of = 4;
        kto::data::DataLoader loader(
            ds, lo, 2, kto::data::batch_options(lo, *ds, /*kl_pass=*/true, /*use_scores=*/false), W, rank);
        kto::data::BatchSampler sampler(ds->size(), 3, 3, 2, W, rank);  // the same stream, to know the pairs

        auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
        kto::fsdp::FsdpOptions o;
        o.trainable = false;
        kto::fsdp::ShardedModel sharded(c, world, comm, o);
        sharded.init_random(9, 0.3);
        kto::model::DenseModel dense(c, at::kFloat);
        dense.init_random(9, 0.3);

        for (int step = 0; step < 2; ++step) {
          const auto mbs = loader.next_step();
          const auto global = sampler.next_global_step();
          for (size_t a = 0; a < mbs.size(); ++a) {
            const auto& mb = mbs[a];
            // The KL batch in a walk of its own, or continuing the target batch's prompts.
            const auto batch = [](const kto::data::TokenBatch& t) {
              return kto::fsdp::ShardedModel::Batch{t.input_ids, t.attention_mask, t.selection, t.packed};
            };
            const at::Tensor got = layout == BatchLayout::shared_prompts
                                       ? sharded.sequence_logprobs_each({batch(mb.target), batch(mb.kl)})[1]
                                       : sharded.sequence_logprobs(batch(mb.kl));
            const int64_t n =
                scope == kto::data::PairScope::global ? static_cast<int64_t>(global[a].size()) : 3;
            for (int64_t k = 0; k < 3; ++k) {
              const int64_t slot = rank * 3 + k;
              const int64_t j_slot = scope == kto::data::PairScope::global
                                         ? kto::data::paired_index(pairing, slot, n)
                                         : rank * 3 + kto::data::paired_index(pairing, k, 3);
              const auto ei = ds->read(global[a][static_cast<size_t>(slot)].index);
              const auto ej = ds->read(global[a][static_cast<size_t>(j_slot)].index);
              CHECK(mb.example_ids[static_cast<size_t>(k)] == ei.index);
              std::vector<int64_t> seq(ei.tokens.begin(), ei.tokens.begin() + ei.prompt_len);
              seq.insert(seq.end(), ej.tokens.begin() + ej.prompt_len, ej.tokens.end());
              const at::Tensor ids = at::tensor(seq, at::kLong).unsqueeze(0);
              at::Tensor loss_mask = at::zeros_like(ids);
              loss_mask.narrow(1, ei.prompt_len, ej.completion_len()).fill_(1);
              at::NoGradGuard no_grad;
              const at::Tensor expected = kto::model::sequence_logprob_sums(
                  dense.forward_hidden(ids, {}), dense.lm_head(), kto::model::select_tokens(ids, loss_mask));
              INFO("layout " << static_cast<int>(layout) << " step " << step << " accum " << a << " slot "
                             << slot << " paired with " << j_slot);
              CHECK(got[k].item<double>() == Approx(expected[0].item<double>()).epsilon(1e-5));
            }
          }
        }
      }
    }
  world.barrier();
  if (world.is_root()) kto::remove_tree(dir);
}
