#include "kto/train/run_plan.h"

#include <cmath>

#include "kto/fsdp/sharded_model.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/model/hf_config.h"
#include "kto/model/layout.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"
#include "kto/util/memory.h"
#include "kto/util/sha256.h"

namespace kto::train {

using detail::str_cat;
using loss::LossName;

void check_files_exist(const std::vector<std::string>& files, const char* key) {
  for (const std::string& f : files) {
    if (!path_exists(f)) throw key_error("", key, "no such file '" + f + "'");
  }
}

namespace {

// CSFT learns from the control tokens at the end of each prompt; other losses should not see them.
void check_control_tokens(LossName name, const data::Dataset& train, const data::Dataset* eval) {
  const std::string& control = train.attributes().control_tokens;
  if (eval && eval->attributes().control_tokens != control) {
    throw key_error("", "data.eval",
                    str_cat("control tokens '", eval->attributes().control_tokens, "' but data.train has '",
                            control, "' (prepare both with the same --control-tokens)"));
  }
  if (name == LossName::csft && control.empty()) {
    log::warn("train",
              "loss.name csft, but the training data has no control tokens (kto-data prepare "
              "--control-tokens GOOD,BAD): this trains SFT on every completion, undesirable ones too");
  } else if (name != LossName::csft && !control.empty()) {
    log::warn("train", "the training data's prompts end with CSFT control tokens (", control,
              "), which only loss.name csft expects");
  }
}

// The paper's rule for imbalanced data: lambda_D n_D / (lambda_U n_U) in [1, 4/3].
void check_class_weights(const loss::LossOptions& l, const data::Dataset& train, double auto_d,
                         double auto_u) {
  if (!loss::is_kto(l.name) || l.desirable_weight.automatic || l.undesirable_weight.automatic) return;
  const double ratio = l.desirable_weight.value * static_cast<double>(train.count(true)) /
                       (l.undesirable_weight.value * static_cast<double>(train.count(false)));
  if (ratio < 1.0 - 1e-9 || ratio > 4.0 / 3.0 + 1e-9) {
    log::warn("train", "class weights give lambda_D*n_D/(lambda_U*n_U) = ", ratio,
              ", outside the paper's [1, 4/3];", " recommended: loss.desirable_weight=", auto_d,
              " loss.undesirable_weight=", auto_u, " (or auto)");
  }
}

}  // namespace

std::string batch_advice(const data::DataOptions& d, int64_t world_size) {
  // Micro batches that divide the global batch at this world size (up to twice today's, so
  // memory stays in reach), and the nearest global batches for today's micro batch.
  std::string micro;
  for (int64_t m = d.micro_batch * 2; m >= 1; --m) {
    if (d.global_batch % (m * world_size) == 0) micro += (micro.empty() ? "" : ", ") + std::to_string(m);
  }
  const int64_t unit = d.micro_batch * world_size;
  const int64_t below = d.global_batch / unit * unit, above = below + unit;
  std::string text = "at ";
  text += str_cat(world_size, " rank(s) the global batch is micro_batch x grad_accum x ", world_size, ": ");
  if (!micro.empty())
    text += str_cat("data.micro_batch ", micro, " fit(s) global_batch ", d.global_batch, ", or ");
  text += str_cat("data.global_batch ", below > 0 ? str_cat(below, " or ") : "", above,
                  " fit(s) micro_batch ", d.micro_batch);
  return text;
}

int64_t grad_accum_for(const data::DataOptions& d, int64_t world_size) {
  if (d.global_batch == 0) return d.grad_accum;
  if (d.global_batch % (d.micro_batch * world_size) != 0) {
    throw key_error("", "data.global_batch",
                    str_cat(d.global_batch, " is not divisible by micro_batch (", d.micro_batch,
                            ") x world size (", world_size, "); ", batch_advice(d, world_size)));
  }
  return d.global_batch / (d.micro_batch * world_size);
}

std::string reference_content_identity(const config::Config& c, const model::ModelConfig& policy) {
  const std::string& path = c.model.reference_dir();
  if (!path.empty()) return io::hf_directory_identity(path);
  const std::string arch = model::hf_config_json(policy, "float32");
  return str_cat("random init seed ", c.model.init_seed, " std ", c.model.init_std, " architecture ",
                 sha256_hex(arch.data(), arch.size()));
}

namespace {

// reference.precomputed, decided and checked (check_run).
bool use_precomputed(const config::Config& c, const model::ModelConfig& policy, const data::Dataset& train,
                     const data::Dataset* eval) {
  const LossName name = c.loss.name;
  const config::Precomputed want = c.reference.precomputed;
  if (!loss::uses_reference(name) || want == config::Precomputed::no) return false;
  const bool kl = loss::uses_kl(name);
  const auto scored = [&](const data::Dataset& ds) {
    return ds.has_reference_logps() && (!kl || ds.has_reference_kl_logps());
  };
  if (!scored(train)) {
    if (want == config::Precomputed::yes) {
      throw key_error("", "reference.precomputed",
                      str_cat("true, but ", train.paths().front(), " (data.train) has no reference ",
                              train.has_reference_logps() ? "KL scores (/ref_kl_logp)" : "scores (/ref_logp)",
                              "; write them with kto-train --score-reference"));
    }
    return false;
  }
  if (kl && c.data.pairing != data::Pairing::fixed) {
    throw key_error(
        "", "data.pairing",
        str_cat(choice_name(data::kPairings, c.data.pairing), ", but the reference scores of ",
                train.paths().front(),
                " were computed for its fixed KL partners (/kl_partner): set data.pairing: fixed, "
                "or reference.precomputed: false for a live reference"));
  }
  if (eval && !scored(*eval)) {
    throw key_error("", "data.eval",
                    str_cat(eval->paths().front(),
                            " has no reference scores, but the run uses data.train's "
                            "and loads no reference model: score data.eval too "
                            "(kto-train --score-reference scores both), or set "
                            "reference.precomputed: false"));
  }
  const std::string& stored = train.attributes().reference_identity;
  if (eval && eval->attributes().reference_identity != stored) {
    throw key_error(
        "", "data.eval",
        str_cat(eval->paths().front(), " was scored by reference '", eval->attributes().reference_identity,
                "', ", train.paths().front(), " (data.train) by '", stored, "'"));
  }
  if (stored.empty()) {
    log::warn("train", train.paths().front(),
              ": its reference scores record no reference identity; they are used as they are");
    return true;
  }
  const std::string configured = reference_content_identity(c, policy);
  if (configured != stored) {
    const std::string& path = c.model.reference_dir();
    throw key_error("", c.model.reference_path.empty() ? "model.path" : "model.reference_path",
                    str_cat("the reference ", path.empty() ? "(the random initialisation)" : path, " is '",
                            configured, "', but ", train.paths().front(), " was scored by '", stored,
                            "': point model.reference_path at the model that scored it, rescore, or set "
                            "reference.precomputed: false"));
  }
  return true;
}

}  // namespace

RunPlan check_run(const config::Config& config, const model::ModelConfig& model, const data::Dataset& train,
                  const data::Dataset* eval, int64_t world_size) {
  const data::DataOptions& d = config.data;
  RunPlan plan;
  plan.loss = config.loss;
  plan.grad_accum = grad_accum_for(d, world_size);
  const LossName name = config.loss.name;
  if (loss::uses_kl(name) && d.micro_batch < 2 && d.pairing != data::Pairing::fixed) {
    throw key_error(
        "", "data.micro_batch",
        str_cat(d.micro_batch, " leaves no mismatched pair for KTO's KL estimate; use 2 or more"));
  }
  if (loss::is_paired(name) != train.paired()) {
    throw key_error("", "loss.name",
                    loss::is_paired(name)
                        ? str_cat(loss::name(name), " needs paired data (kto-data prepare --keep-pairs)")
                        : str_cat(loss::name(name), " is an unpaired loss but data.train is paired"));
  }
  check_control_tokens(name, train, eval);
  plan.precomputed = use_precomputed(config, model, train, eval);
  for (const data::Dataset* ds : {&train, eval}) {
    if (ds == nullptr) continue;
    const int64_t max_length = ds->attributes().max_length;
    if (max_length > model.max_position_embeddings) {
      throw key_error("", ds == &train ? "data.train" : "data.eval",
                      str_cat(ds->paths().front(), " holds sequences of up to ", max_length,
                              " tokens (max_length), more than the model's max_position_embeddings (",
                              model.max_position_embeddings, "); prepare it with --max-length ",
                              model.max_position_embeddings, " or less"));
    }
  }
  const auto [auto_d, auto_u] = data::recommended_class_weights(train.count(true), train.count(false));
  loss::resolve_class_weights(plan.loss, auto_d, auto_u);
  check_class_weights(config.loss, train, auto_d, auto_u);

  const int64_t items = train.paired() ? train.size() / 2 : train.size();
  plan.total_steps = total_steps_for(config.train, items, d.micro_batch * plan.grad_accum * world_size);
  return plan;
}

int64_t total_steps_for(const config::TrainSection& train, int64_t items, int64_t global_batch) {
  if (train.steps > 0) return train.steps;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(train.epochs * static_cast<double>(items) /
                                                             static_cast<double>(global_batch))));
}

MemoryEstimate estimate_memory(const config::Config& config, const model::ModelConfig& model,
                               int64_t max_length, bool paired, int64_t shard_size, bool with_reference) {
  MemoryEstimate e;
  const int bytes = config::dtype_bytes(config.model.dtype);
  e.seq = max_length > 0 ? max_length : model.max_position_embeddings;
  e.state = fsdp::training_bytes_per_rank(model, model::ModelLayout::build(model),
                                          static_cast<int>(shard_size), bytes, config.optim.state_tensors(),
                                          with_reference, config.model.reshard_after_forward);
  e.activations = model::activation_bytes(model, config.data.micro_batch * (paired ? 2 : 1), e.seq, bytes,
                                          /*with_grad=*/true, config.model.reshard_after_forward);
  return e;
}

namespace {

std::string tokenizer_text(const data::Dataset& ds) {
  const data::DatasetAttributes& a = ds.attributes();
  return str_cat(a.tokenizer_name.empty() ? "?" : a.tokenizer_name, ", sha256 ", a.tokenizer_sha256);
}

void mismatch(const config::Config& c, const char* key, const std::string& what) {
  if (!c.data.allow_tokenizer_mismatch) {
    throw key_error("", key,
                    what +
                        "; prepare them with the same tokenizer, or set data.allow_tokenizer_mismatch: true "
                        "if the mix is intended");
  }
  log::warn("train", key, ": ", what, " (data.allow_tokenizer_mismatch)");
}

bool matches_data(const std::vector<std::pair<std::string, std::string>>& hashes,
                  const data::Dataset& train) {
  for (const auto& [path, sha] : hashes) {
    if (sha == train.attributes().tokenizer_sha256) return true;
  }
  return false;
}

std::string hashes_text(const std::vector<std::pair<std::string, std::string>>& hashes) {
  std::string text;
  for (const auto& [path, sha] : hashes) text += (text.empty() ? "" : ", ") + path + " (sha256 " + sha + ")";
  return text;
}

}  // namespace

void check_tokenizers(const config::Config& c, const data::Dataset& train, const data::Dataset* eval) {
  const std::string& sha = train.attributes().tokenizer_sha256;
  if (eval && eval->attributes().tokenizer_sha256 != sha) {
    mismatch(c, "data.eval",
             str_cat(eval->paths().front(), " was tokenized with ", tokenizer_text(*eval), ", but ",
                     train.paths().front(), " (data.train) with ", tokenizer_text(train)));
  }
  if (sha.empty() || c.model.path.empty()) return;
  const auto hashes = io::tokenizer_hashes(io::tokenizer_files_in(c.model.path));
  if (!hashes.empty() && !matches_data(hashes, train)) {
    mismatch(c, "model.path",
             str_cat("the model's tokenizer ", hashes_text(hashes), " is not the one ", train.paths().front(),
                     " (data.train) was prepared with (", tokenizer_text(train), ")"));
  }
}

std::vector<io::TokenizerFile> export_tokenizer_files(const config::Config& c, const data::Dataset& train) {
  const std::string& choice = c.train.export_tokenizer;
  if (!c.train.export_final || choice == "none") return {};
  const data::DatasetAttributes& a = train.attributes();
  if (choice != "auto") {
    auto files = io::tokenizer_files_at(choice);
    const auto hashes = io::tokenizer_hashes(files);
    if (!a.tokenizer_sha256.empty() && !matches_data(hashes, train)) {
      mismatch(c, "train.export_tokenizer",
               str_cat(hashes_text(hashes), " is not the tokenizer ", train.paths().front(),
                       " (data.train) was prepared with (", tokenizer_text(train), ")"));
    }
    return files;
  }
  if (auto files = io::tokenizer_files_in(c.model.path); !files.empty()) return files;
  if (a.tokenizer_sha256.empty()) {
    log::info("train",
              "the training data records no tokenizer (token ids only): final/ gets no tokenizer files");
    return {};
  }
  // The file the data was prepared with, where kto-data prepare found it, if it is still that file.
  const std::string& recorded = a.tokenizer_path;
  if (!recorded.empty() && path_exists(recorded) && !is_directory(recorded) &&
      sha256_file(recorded) == a.tokenizer_sha256) {
    std::vector<io::TokenizerFile> files = io::tokenizer_files_at(recorded);
    const size_t slash = recorded.find_last_of('/');
    const std::string name = recorded.substr(slash + 1);
    if (slash != std::string::npos && (name == "tokenizer.json" || name == "tokenizer.model")) {
      for (const io::TokenizerFile& f : io::tokenizer_files_in(recorded.substr(0, slash))) {
        if (f.name != "tokenizer.json" && f.name != "tokenizer.model") files.push_back(f);
      }
    }
    return files;
  }
  throw key_error(
      "", "train.export_tokenizer",
      str_cat("final/ would hold no tokenizer: model.path has no tokenizer files and the tokenizer ",
              train.paths().front(), " was prepared with (", tokenizer_text(train), ") is ",
              recorded.empty() ? "not recorded in the file (an older kto-data)"
                               : "no longer at " + recorded + " (moved or changed)",
              "; set train.export_tokenizer to that tokenizer's file or directory, or to none to "
              "export the model without one"));
}

fsdp::StepCollectiveBytes step_traffic(const config::Config& c, const model::ModelLayout& layout,
                                       int shard_size, int replicas, int64_t grad_accum,
                                       bool with_reference) {
  return fsdp::step_collective_bytes(layout, shard_size, replicas, config::dtype_bytes(c.model.dtype),
                                     c.model.dtype == config::Dtype::fp64 ? 8 : 4, grad_accum, with_reference,
                                     c.model.reshard_after_forward);
}

std::string traffic_text(const fsdp::StepCollectiveBytes& b, int shard_size, int replicas,
                         bool shard_spans_hosts, bool replica_spans_hosts) {
  std::string text =
      str_cat(human_bytes(b.shard_link_bytes(shard_size)), " sent per rank per step in the shard group (",
              shard_size > 1 ? "all-gathers and reduce-scatters, " : "one rank: nothing moves, ",
              shard_spans_hosts ? "across hosts" : "within a host", ")");
  if (replicas > 1) {
    text += str_cat(", ", human_bytes(b.replica_link_bytes(replicas)), " across ", replicas,
                    " replicas (gradient all-reduce, ",
                    replica_spans_hosts ? "across hosts" : "within a host", ")");
  }
  return text;
}

void check_run_memory(const config::Config& config, const model::ModelConfig& model,
                      const data::Dataset& train, int shard_size, int ranks_on_host, bool with_reference) {
  if (!config.run.check_memory) return;
  const MemoryEstimate e = estimate_memory(config, model, train.attributes().max_length, train.paired(),
                                           shard_size, with_reference);
  const double state = e.state, activations = e.activations;
  const int64_t seq = e.seq;
  const double per_host = (state + activations) * ranks_on_host;
  check_fits_in_memory(
      per_host, str_cat("this run (", ranks_on_host, " rank(s) on this host)"),
      str_cat(human_bytes(state), " of weights, gradients, optimizer state and gathered units and ",
              human_bytes(activations), " of activations per rank: ", model.num_parameters(),
              " parameters sharded over ", shard_size, " rank(s), data.micro_batch ", config.data.micro_batch,
              " x ", seq, " tokens, ", config::name(config.model.dtype)),
      "add ranks or hosts, lower data.micro_batch (raise data.grad_accum), or set run.check_memory: false "
      "to try anyway");
}

}  // namespace kto::train
