// Samples during evaluation (eval.samples): the policy completes the first eval prompts, rank 0
// writes them to run.dir/samples.jsonl with the implied reward of each completion. The sharded
// policy (and reference) are gathered unit by unit into dense copies on rank 0 (the others hold
// one unit at a time), and rank 0 generates while the others go on to the next collective:
// simple and exact, at the cost of a whole model (each, in the compute dtype) on rank 0 for the
// moment of sampling (docs/training.md).
#include <ATen/ATen.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "kto/model/generate.h"
#include "kto/model/logprob.h"
#include "kto/train/trainer.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"

namespace kto::train {

namespace {

// A dense copy of `model` on rank 0 (in `dtype` on `device`), gathered unit by unit: the other
// ranks hold one unit at a time. Collective; empty (nullptr) on the other ranks.
std::unique_ptr<model::DenseModel> dense_on_root(const fsdp::ShardedModel& model,
                                                 const comm::ProcessGroup& world, at::ScalarType dtype,
                                                 at::Device device) {
  std::unique_ptr<model::DenseModel> m;
  if (world.is_root()) m = std::make_unique<model::DenseModel>(model.config(), dtype, device);
  model.gather_full_units([&](size_t u, const at::Tensor& full) {
    if (m) m->units()[u].copy_(full);
  });
  return m;
}

// Sum of log-probs of the tokens after `prompt_len` in `ids`.
double completion_logprob(const model::DenseModel& m, const std::vector<int64_t>& ids, int64_t prompt_len) {
  const at::Tensor t = at::tensor(ids, at::kLong).view({1, -1});
  at::Tensor mask = at::zeros_like(t);
  mask.narrow(1, prompt_len, t.size(1) - prompt_len).fill_(1);
  const at::Tensor hidden = m.forward_hidden(t, {});
  return model::sequence_logprob_sums(hidden, m.lm_head(),
                                      model::select_tokens(t, mask).to(hidden.device()))[0]
      .item<double>();
}

}  // namespace

bool Trainer::samples_due() const {
  const config::EvalSection& e = config_.eval;
  if (e.samples == 0 || !eval_data_) return false;
  if (step_ == 0 || step_ == total_steps_) return true;
  const int64_t every = config_.train.eval_every;
  return every > 0 && (step_ / every) % e.sample_every == 0;
}

void Trainer::write_samples() {
  at::NoGradGuard no_grad;
  const config::EvalSection& e = config_.eval;
  const data::Dataset& ds = *eval_data_;
  const at::ScalarType dtype = policy_->options().compute_dtype;
  const std::unique_ptr<model::DenseModel> dense_policy = dense_on_root(*policy_, world_, dtype, device_);
  const std::unique_ptr<model::DenseModel> dense_reference =
      reference_ ? dense_on_root(*reference_, world_, dtype, device_) : nullptr;
  if (!world_.is_root()) return;
  const model::DenseModel& policy = *dense_policy;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<data::Example> examples;
  for (int64_t i = 0; i < std::min(e.samples, ds.size()); ++i) {
    examples.push_back(ds.read(i));
    const data::Example& x = examples.back();
    prompts.emplace_back(x.tokens.begin(), x.tokens.begin() + x.prompt_len);
  }
  model::GenerateOptions o;
  o.max_new_tokens = e.max_new_tokens;
  o.sampling.greedy = e.temperature == 0;
  if (!o.sampling.greedy) {
    o.sampling.temperature = e.temperature;
    o.sampling.top_p = e.top_p;
  }
  o.seed = static_cast<uint64_t>(e.seed);
  o.eos_id = policy.config().eos_token_id;
  const std::vector<model::Generation> gens = model::generate(policy, prompts, o);
  // The implied reward beta * log(pi / pi_ref) of each completion, with a live reference.
  std::vector<double> rewards(gens.size(), 0.0);
  const bool with_reward = reference_ != nullptr;
  if (with_reward) {
    const model::DenseModel& reference = *dense_reference;
    for (size_t i = 0; i < gens.size(); ++i) {
      if (gens[i].ids.empty()) continue;
      std::vector<int64_t> seq = prompts[i];
      seq.insert(seq.end(), gens[i].ids.begin(), gens[i].ids.end());
      const auto P = static_cast<int64_t>(prompts[i].size());
      rewards[i] = loss_.beta * (completion_logprob(policy, seq, P) - completion_logprob(reference, seq, P));
    }
  }
  const std::string tokenizer = ds.attributes().tokenizer_path;
  std::string text;
  for (size_t i = 0; i < gens.size(); ++i) {
    nlohmann::json line = {{"step", step_},
                           {"sample", i},
                           {"example", examples[i].index},
                           {"label", examples[i].desirable ? "desirable" : "undesirable"},
                           {"prompt_ids", prompts[i]},
                           {"generated_ids", gens[i].ids},
                           {"finish_reason", gens[i].finish_reason}};
    if (with_reward) line["reward"] = rewards[i];
    if (!tokenizer.empty() && path_exists(tokenizer)) line["tokenizer"] = tokenizer;  // for kto-report
    text += line.dump() + "\n";
  }
  const std::string path = join_path(config_.run.dir, "samples.jsonl");
  FILE* f = std::fopen(path.c_str(), "a");
  const bool written = f != nullptr && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (f == nullptr || std::fclose(f) != 0 || !written) throw Error(path + ": cannot append the samples");
  log::info("eval", "step ", step_, ": ", gens.size(), " sample(s) in ", path);
}

}  // namespace kto::train
