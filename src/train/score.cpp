#include "kto/train/score.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <set>

#include "kto/data/batch.h"
#include "kto/data/dataset.h"
#include "kto/data/partners.h"
#include "kto/model/cpu_allocator.h"
#include "kto/model/hf_config.h"
#include "kto/train/run_plan.h"
#include "kto/train/trainer.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"

namespace kto::train {

using detail::str_cat;

namespace {

using Clock = std::chrono::steady_clock;

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// OUT must be new or empty (so no input is ever overwritten); the output names must differ.
std::vector<std::string> output_paths(const std::vector<std::string>& inputs, const std::string& out_dir) {
  namespace fs = std::filesystem;
  if (path_exists(out_dir)) {
    if (!is_directory(out_dir))
      throw Error(out_dir + ": --score-reference needs a directory, this is a file");
    if (!fs::is_empty(out_dir))
      throw Error(out_dir + ": not empty; --score-reference writes into a new or empty directory");
  }
  std::vector<std::string> out;
  std::set<std::string> names;
  for (const std::string& in : inputs) {
    const std::string name = base_name(in);
    if (!names.insert(name).second)
      throw Error(str_cat(in, ": two input files are named ", name, "; --score-reference keeps file names"));
    out.push_back(join_path(out_dir, name));
  }
  return out;
}

struct Scores {
  std::vector<double> target, kl;  // per example
  std::vector<int64_t> partners;   // unpaired data: each example's fixed KL partner
};

Scores score_dataset(const config::Config& c, const data::Dataset& ds, fsdp::ShardedModel& reference,
                     const comm::ProcessGroup& world, const char* what) {
  at::NoGradGuard no_grad;
  const int64_t E = ds.size(), W = world.size(), r = world.rank();
  const bool kl = !ds.paired();
  Scores s;
  if (kl) {
    comm::SameOnEveryRank same;  // drawn alike on every rank (or refused alike)
    s.partners = data::fixed_kl_partners(ds, static_cast<uint64_t>(c.data.seed));
  }
  data::BatchOptions bo = data::batch_options(c.data, ds, kl, /*use_scores=*/false);
  bo.paired = false;  // chosen and rejected rows scored as the sequences they are
  const int64_t m = c.data.micro_batch;
  const int64_t groups = (E + m - 1) / m, rounds = (groups + W - 1) / W;
  at::Tensor all = at::zeros({2, E}, at::kDouble);  // target, KL; each example one rank's
  double* target = all.data_ptr<double>();
  double* klp = target + E;
  const auto start = Clock::now();
  auto last = start;
  int64_t tokens = 0;
  for (int64_t k = 0; k < rounds; ++k) {
    const int64_t g = k * W + r;  // a rank out of microbatches repeats the first one, discarded
    const bool real = g < groups;
    const int64_t begin = real ? g * m : 0, end = std::min(E, begin + m);
    std::vector<data::Example> examples;
    for (int64_t i = begin; i < end; ++i) examples.push_back(ds.read(i));
    const data::Microbatch mb =
        kl ? data::assemble_microbatch(examples, data::read_kl_partners(ds, examples, s.partners), bo)
           : data::assemble_microbatch(examples, bo);
    std::vector<at::Tensor> lp =
        kl ? reference.sequence_logprobs_each({model_batch(mb.target), model_batch(mb.kl)})
           : std::vector<at::Tensor>{reference.sequence_logprobs(model_batch(mb.target))};
    if (!real) continue;
    const at::Tensor t = lp[0].to(at::kDouble).cpu().contiguous();
    for (int64_t i = begin; i < end; ++i) target[i] = t.data_ptr<double>()[i - begin];
    if (kl) {
      const at::Tensor q = lp[1].to(at::kDouble).cpu().contiguous();
      for (int64_t i = begin; i < end; ++i) klp[i] = q.data_ptr<double>()[i - begin];
    }
    tokens += mb.target.num_tokens + (kl ? mb.kl.num_tokens : 0);
    const auto now = Clock::now();
    if (world.is_root() && (now - last > std::chrono::seconds(10) || k + 1 == rounds)) {
      last = now;
      const double seconds = std::chrono::duration<double>(now - start).count();
      const int64_t done = std::min(E, (k + 1) * W * m);
      log::status("score",
                  str_cat(what, ": ", done, "/", E, " examples | ",
                          static_cast<int64_t>(static_cast<double>(tokens * W) / seconds), " tok/s | ETA ",
                          static_cast<int64_t>(seconds / static_cast<double>(k + 1) *
                                               static_cast<double>(rounds - k - 1)),
                          "s"));
    }
  }
  // Summed over ranks: every example's score was written by one rank, the others hold 0.
  world.all_reduce(target, static_cast<int>(2 * E), comm::ReduceOp::sum);
  s.target.assign(target, target + E);
  if (kl) s.kl.assign(klp, klp + E);
  return s;
}

// Rank 0: a copy of each of the dataset's files with its scores.
void write_scored(const data::Dataset& ds, const Scores& s, const std::vector<std::string>& outputs,
                  const std::string& identity, const config::Config& c) {
  int64_t first = 0;
  const std::string set_sha = data::partner_set_sha256(ds);
  for (size_t f = 0; f < ds.paths().size(); ++f) {
    data::DatasetAttributes a = data::read_attributes(ds.paths()[f]);
    a.reference_identity = identity;
    a.reference_dtype = std::string(config::name(c.model.dtype));
    a.producer = str_cat("kto-train --score-reference (from ", a.producer.empty() ? "?" : a.producer, ")");
    const int64_t n = ds.identities()[f].examples;
    if (!s.partners.empty()) {
      a.kl_partner_seed = c.data.seed;
      a.kl_partner_set_sha256 = set_sha;
    }
    data::DatasetWriter w(outputs[f], a, /*with_reference_logps=*/true);
    if (!s.partners.empty())
      w.set_kl_partners(std::vector<int64_t>(s.partners.begin() + first, s.partners.begin() + first + n));
    for (int64_t i = first; i < first + n; ++i) {
      const data::Example e = ds.read(i);
      w.add(e.tokens, e.prompt_len, e.desirable, s.target[static_cast<size_t>(i)],
            s.kl.empty() ? 0.0 : s.kl[static_cast<size_t>(i)]);
    }
    w.finish();
    log::info("score", "wrote ", outputs[f], " (", n, " examples)");
    first += n;
  }
}

}  // namespace

void score_reference(const config::Config& config, const comm::ProcessGroup& world,
                     const std::string& out_dir) {
  const config::Config& c = config;
  c.validate("the config");
  if (c.data.train.empty()) throw key_error("", "data.train", "no training files given");
  const at::Device device = pick_device(world);
  if (device.is_cpu()) model::install_caching_cpu_allocator();
  std::shared_ptr<comm::Communicator> comm(comm::make_communicator(world, device));
  model::ModelConfig mc = c.model.architecture;
  if (!c.model.path.empty()) mc = model::read_hf_config(c.model.path);
  std::shared_ptr<data::Dataset> train, eval;
  std::vector<std::string> train_out, eval_out;
  {
    comm::SameOnEveryRank same;  // the config, the data's headers and the output directory
    std::vector<std::string> inputs = c.data.train;
    inputs.insert(inputs.end(), c.data.eval.begin(), c.data.eval.end());
    const std::vector<std::string> outputs = output_paths(inputs, out_dir);
    train_out.assign(outputs.begin(), outputs.begin() + static_cast<std::ptrdiff_t>(c.data.train.size()));
    eval_out.assign(outputs.begin() + static_cast<std::ptrdiff_t>(c.data.train.size()), outputs.end());
    train = data::Dataset::open(c.data.train, mc.vocab_size);
    if (!c.data.eval.empty()) eval = data::Dataset::open(c.data.eval, mc.vocab_size);
    // The reference's tokenizer files (when it has any) against the data's.
    config::Config rc = c;
    rc.model.path = c.model.reference_dir();
    check_tokenizers(rc, *train, eval.get());
  }
  const std::string identity = reference_content_identity(c, mc);
  std::unique_ptr<fsdp::ShardedModel> reference =
      load_reference(c, mc, fsdp::Mesh::full(world, comm), device);
  log::info("score", "reference ", identity, ", ", config::name(c.model.dtype), ", ", world.size(),
            " rank(s); KL partners from data.seed ", c.data.seed);
  const Scores st = score_dataset(c, *train, *reference, world, "data.train");
  Scores se;
  if (eval) se = score_dataset(c, *eval, *reference, world, "data.eval");
  std::string error;  // rank 0 writes; every rank learns how that went
  if (world.is_root()) {
    try {
      make_directories(out_dir);
      write_scored(*train, st, train_out, identity, c);
      if (eval) write_scored(*eval, se, eval_out, identity, c);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  world.broadcast(error, 0);
  comm::SameOnEveryRank same;
  if (!error.empty()) throw Error(error);
}

}  // namespace kto::train
