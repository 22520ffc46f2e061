#include "kto/train/dry_run.h"

#include <algorithm>
#include <cstdio>

#include "kto/data/dataset.h"
#include "kto/fsdp/mesh.h"
#include "kto/fsdp/sharded_model.h"
#include "kto/loss/options.h"
#include "kto/model/hf_config.h"
#include "kto/train/run_plan.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/memory.h"

namespace kto::train {

using detail::str_cat;

namespace {

void line(const std::string& key, const std::string& value) {
  std::printf("%-10s %s\n", (key + ":").c_str(), value.c_str());
}

}  // namespace

void dry_run(const config::Config& c, int64_t world_size, int64_t ranks_per_host) {
  if (world_size < 1) throw key_error("--world-size", "world size", "must be >= 1");
  ranks_per_host = std::max<int64_t>(1, std::min(ranks_per_host, world_size));
  const model::ModelConfig mc =
      c.model.path.empty() ? c.model.architecture : model::read_hf_config(c.model.path);
  const int64_t grad_accum = grad_accum_for(c.data, world_size);
  const int64_t global = c.data.micro_batch * grad_accum * world_size;

  // The data's headers, where the files are here: example counts, pairing, longest sequence.
  int64_t examples = 0, desirable = 0, max_length = 0;
  bool paired = false, found = true, scored = !c.data.train.empty();
  std::string tokenizer;
  for (const std::string& f : c.data.train) {
    if (!path_exists(f)) {
      found = false;
      continue;
    }
    const data::DatasetAttributes a = data::read_attributes(f);
    examples += a.n_examples;
    desirable += a.n_desirable;
    max_length = std::max(max_length, a.max_length);
    paired = a.paired != 0;
    tokenizer = a.tokenizer_name;
    scored = scored && !a.reference_identity.empty();  // kto-train --score-reference wrote it
  }
  const bool paired_loss = loss::is_paired(c.loss.name);
  const char* unit = paired_loss ? "pairs" : "examples";
  std::printf("kto-train --dry-run: nothing is trained, no weights are loaded\n");
  line("world", str_cat(world_size, " rank(s), ", ranks_per_host, " per host"));
  line("model", str_cat(model::name(mc.arch), ", ",
                        scaled_text(static_cast<double>(mc.num_parameters()), 1000, {"", "K", "M", "B", "T"}),
                        " parameters, ", config::name(c.model.dtype), " compute, ",
                        c.model.reshard_after_forward ? "resharded" : "kept", " units"));
  line("batch", str_cat("global ", global, " ", unit, " = ", c.data.micro_batch, " x ", grad_accum, " x ",
                        world_size, " (micro_batch x grad_accum x ranks)"));
  int64_t steps = c.train.steps;
  if (found && !c.data.train.empty()) {
    const int64_t items = paired ? examples / 2 : examples;
    line("data",
         str_cat(examples, " examples (", desirable, " desirable, ", examples - desirable, " undesirable)",
                 paired ? ", paired" : "", ", up to ", max_length, " tokens, tokenizer ", tokenizer));
    steps = total_steps_for(c.train, items, global);
  } else {
    line("data",
         "not found here (" + str_cat(c.data.train.size()) + " file(s) in data.train): counts unknown");
  }
  line("steps",
       steps > 0 ? str_cat(steps) : str_cat(c.train.epochs, " epoch(s) of a dataset not found here"));
  line("loss", str_cat(loss::name(c.loss.name), ": ", loss::describe(c.loss)));

  const bool precomputed = found && scored && c.reference.precomputed != config::Precomputed::no;
  const bool with_reference = loss::uses_reference(c.loss.name) && !precomputed;
  if (loss::uses_reference(c.loss.name))
    line("reference", precomputed ? "precomputed scores in data.train: no reference model" : "live model");
  // The grouping as Mesh::build would make it, with ranks_per_host ranks on every host.
  const int W = static_cast<int>(world_size), per_host = static_cast<int>(ranks_per_host);
  const int S = fsdp::ShardGroupSpec::parse(c.dist.shard_group).group_size(W, per_host), R = W / S;
  const bool shard_spans = S > per_host || per_host % S != 0, replica_spans = R > 1 && W > per_host;
  line("sharding", str_cat(fsdp::sharding_text(S, R, shard_spans, replica_spans),
                           " (dist.shard_group: ", c.dist.shard_group, ")"));
  const fsdp::StepCollectiveBytes traffic =
      step_traffic(c, model::ModelLayout::build(mc), S, R, grad_accum, with_reference);
  line("traffic", traffic_text(traffic, S, R, shard_spans, replica_spans));
  const MemoryEstimate e = estimate_memory(c, mc, max_length, paired_loss, S, with_reference);
  const double state = e.state, activations = e.activations;
  const int64_t seq = e.seq;
  line("memory", str_cat("~", human_bytes(state + activations), " per rank: ", human_bytes(state),
                         " weights, gradients, optimizer state", with_reference ? ", reference" : "",
                         " and gathered units + ", human_bytes(activations), " activations (micro_batch ",
                         c.data.micro_batch, " x ", seq, " tokens)"));
  const double host = (state + activations) * static_cast<double>(ranks_per_host);
  const double physical = static_cast<double>(physical_memory_bytes());
  line("host", str_cat("~", human_bytes(host), " for ", ranks_per_host, " rank(s) on CPU; this host has ",
                       human_bytes(physical),
                       host > physical ? " (more than it has: a CPU run would be refused)" : "",
                       "; on GPUs compare the per-rank figure with one GPU's memory"));
}

}  // namespace kto::train
