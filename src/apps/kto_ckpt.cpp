// kto-ckpt: model and checkpoint tools.
//   forward  run a Hugging Face model on token ids; write logits and token log-probs
//   generate text (or ids) from a model: KV cache, sampling, chat templates
//   init     write a randomly initialised model (from a config's model.architecture) as a HF dir
//   config   print a resolved config, or the reference of every config key
//   show     list the tensors of a safetensors file or HF directory
//   compare  max abs/rel differences between two safetensors files
//   export   a checkpoint -> Hugging Face directory
//   inspect  a checkpoint's facts; checksums verified
#include <ATen/Parallel.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "ckpt_commands.h"
#include "kto/util/cli.h"
#include "kto/util/process.h"

namespace kto::apps {

void set_compute_threads(int64_t threads) { at::set_num_threads(compute_threads(threads, 1, "--threads")); }

c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "fp32") return at::kFloat;
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp64") return at::kDouble;
  throw cli::UsageError("--dtype: expected fp32, bf16 or fp64, got '" + name + "'");
}

}  // namespace kto::apps

int main(int argc, char** argv) {
  using namespace kto::apps;
  return kto::cli::run_subcommands(
      "kto-ckpt",
      {{"forward", "run a Hugging Face model on token ids; write logits and token log-probs", ckpt_forward},
       {"generate", "generate text from a Hugging Face model (KV cache; greedy, temperature, top-p/k)",
        ckpt_generate},
       {"init", "write a randomly initialised model (a config's model.architecture) as a HF directory",
        ckpt_init},
       {"config", "print a resolved config (--config FILE [--set k=v]...) or the key reference", ckpt_config},
       {"show", "list the tensors of a safetensors file or HF directory (values or statistics)", ckpt_show},
       {"compare", "max abs/rel differences between two safetensors files (checks against HF)", ckpt_compare},
       {"export", "a checkpoint (any world size) -> Hugging Face directory (safetensors, config, tokenizer)",
        ckpt_export},
       {"inspect", "a checkpoint's step, world size, layouts; verifies every shard's checksum",
        ckpt_inspect}},
      argc, argv);
}
