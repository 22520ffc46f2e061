// kto-ckpt forward: the check of a model against Hugging Face transformers.
//
// Reads `input_ids` (and optionally `attention_mask`, `completion_mask`) from a safetensors
// file, runs the model, writes `logits` [B, T, V] and `token_logprobs` [B, T] with
// token_logprobs[b, t] = log_softmax(logits[b, t-1])[input_ids[b, t]] (0 at t = 0), plus
// `completion_logprob_sum` [B] when a completion mask is given. fp32/fp64 runs write outputs in
// their dtype; bf16 runs write fp32 (the bf16 logits widened, log-probs computed in fp32).
// Padded positions are computed as Hugging Face does (padded keys masked), so whole tensors
// compare, not only the real positions.
#include <ATen/ATen.h>

#include "ckpt_commands.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/io/safetensors.h"
#include "kto/model/hf_config.h"
#include "kto/model/logprob.h"
#include "kto/util/cli.h"
#include "kto/util/log.h"
#include "kto/util/memory.h"
#include "kto/util/version.h"

namespace kto::apps {
namespace {

using detail::str_cat;

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "fp32") return at::kFloat;
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp64") return at::kDouble;
  throw cli::UsageError("--dtype: expected fp32, bf16 or fp64, got '" + name + "'");
}

// An integer [B, T] tensor from the ids file, as int64; `required` false returns undefined.
at::Tensor read_int_matrix(const io::SafetensorsSet& file, const std::string& name, bool required) {
  const io::TensorInfo* info = file.find(name);
  if (info == nullptr) {
    if (required) throw Error(str_cat(file.source(), ": no tensor '", name, "'"));
    return {};
  }
  if (info->dtype != io::DType::I64 && info->dtype != io::DType::I32 && info->dtype != io::DType::BOOL &&
      info->dtype != io::DType::U8 && info->dtype != io::DType::I8) {
    throw Error(str_cat(file.source(), ": tensor '", name, "' has dtype ", io::dtype_name(info->dtype),
                        ", expected an integer type (I64)"));
  }
  if (info->shape.size() != 2) {
    throw Error(str_cat(file.source(), ": tensor '", name, "' must be [batch, seq_len], has ",
                        info->shape.size(), " dims"));
  }
  if (info->shape[0] < 1 || info->shape[1] < 1) {
    throw Error(str_cat(file.source(), ": tensor '", name, "' is empty ([", info->shape[0], ", ",
                        info->shape[1], "]): give at least one sequence of at least one token"));
  }
  return file.read(name).to(at::kLong);
}

// A mask holds only 0 and 1.
void check_binary(const at::Tensor& mask, const std::string& source, const char* name) {
  if (!mask.defined()) return;
  const int64_t lo = mask.min().item<int64_t>(), hi = mask.max().item<int64_t>();
  if (lo < 0 || hi > 1) {
    throw Error(str_cat(source, ": tensor '", name, "' holds values in [", lo, ", ", hi,
                        "]; a mask is 0 (padding / not selected) or 1"));
  }
}

}  // namespace

int ckpt_forward(int argc, char** argv) {
  std::string model_dir, ids_path, out_path, dtype_name = "fp32";
  int64_t threads = 0, chunk_rows = 0;
  bool allow_long = false, no_memory_check = false;
  cli::Args args("kto-ckpt forward",
                 "Runs a Hugging Face model on token ids and writes logits and token log-probs\n"
                 "(safetensors), to compare against transformers or inspect a trained model.");
  args.option("--model", &model_dir, "DIR", "Hugging Face directory (config.json + *.safetensors)",
              cli::required)
      .option("--ids", &ids_path, "FILE",
              "safetensors with input_ids [B,T] (+ attention_mask, completion_mask)", cli::required)
      .option("--out", &out_path, "FILE",
              "output safetensors: logits, token_logprobs[, completion_logprob_sum]", cli::required)
      .option("--dtype", &dtype_name, "fp32|bf16|fp64", "compute dtype (default fp32)")
      .option("--threads", &threads, "N", "CPU threads (default: OMP_NUM_THREADS or all cores)")
      .option("--chunk-rows", &chunk_rows, "N", "rows of logits computed at once (default 0: ~64 MB of fp32)")
      .flag("--allow-long-sequences", &allow_long, "run sequences longer than max_position_embeddings")
      .flag("--no-memory-check", &no_memory_check,
            "run even when the estimated memory exceeds this machine's physical memory");
  if (!args.parse(argc, argv, 2)) return 0;
  if (chunk_rows < 0 || chunk_rows > (int64_t{1} << 24)) {
    throw cli::UsageError(str_cat("--chunk-rows: ", chunk_rows, " is outside [0, 2^24] (0: automatic)"));
  }
  const at::ScalarType dtype = parse_dtype(dtype_name);
  set_compute_threads(threads);

  // The inputs' sizes first: they decide whether the model and its outputs fit at all.
  const model::ModelConfig cfg = model::read_hf_config(model_dir);
  const io::SafetensorsSet ids_file = io::SafetensorsSet::open_file(ids_path);
  const at::Tensor ids = read_int_matrix(ids_file, "input_ids", true);
  at::Tensor mask = read_int_matrix(ids_file, "attention_mask", false);
  const at::Tensor completion = read_int_matrix(ids_file, "completion_mask", false);
  check_binary(mask, ids_path, "attention_mask");
  check_binary(completion, ids_path, "completion_mask");
  if (!mask.defined()) mask = at::ones_like(ids);
  for (const auto& [name, t] :
       {std::pair<const char*, at::Tensor>{"attention_mask", mask}, {"completion_mask", completion}}) {
    if (t.defined() && t.sizes() != ids.sizes()) {
      throw Error(
          str_cat(ids_path, ": tensor '", name, "' has shape ", t.sizes(), ", input_ids has ", ids.sizes()));
    }
  }
  const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= cfg.vocab_size) {
    throw Error(str_cat(ids_path, ": input_ids hold ids in [", lo, ", ", hi, "], outside the vocabulary [0, ",
                        cfg.vocab_size, ")"));
  }
  const int64_t B = ids.size(0), T = ids.size(1), V = cfg.vocab_size;
  if (T > cfg.max_position_embeddings && !allow_long) {
    throw Error(str_cat(ids_path, ": input_ids has ", T,
                        " positions, more than the model's max_position_embeddings (",
                        cfg.max_position_embeddings, ", ", model_dir,
                        "/config.json); pass --allow-long-sequences to run them anyway"));
  }
  if (!no_memory_check) {
    const int bytes = static_cast<int>(c10::elementSize(dtype));
    const double weights = static_cast<double>(cfg.num_parameters()) * bytes;
    const double activations = model::activation_bytes(cfg, B, T, bytes, /*with_grad=*/false, false);
    const double outputs = static_cast<double>(B * T) * static_cast<double>(V) * 4.0 * 2.0;  // logits, copy
    check_fits_in_memory(weights + activations + outputs, str_cat("kto-ckpt forward on ", ids_path),
                         str_cat("weights ", human_bytes(weights), ", activations ", human_bytes(activations),
                                 ", logits [", B, ", ", T, ", ", V, "] ", human_bytes(outputs)),
                         "give fewer or shorter sequences, or pass --no-memory-check to try anyway");
  }
  const model::DenseModel model = io::load_hf_model(model_dir, dtype);

  at::NoGradGuard no_grad;
  const at::Tensor hidden =
      model.forward_hidden(ids, mask, /*mask_padded_keys=*/true).reshape({B * T, cfg.hidden_size});
  const at::Tensor head = model.lm_head();
  const at::ScalarType out_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor logits = model::chunked_logits(hidden, head, chunk_rows).to(out_dtype).view({B, T, V});

  // Every position t >= 1 predicts input_ids[b, t] from hidden row t - 1.
  at::Tensor all = at::ones_like(ids);
  const model::TokenSelection sel = model::select_tokens(ids, all);
  at::Tensor token_lp = at::zeros({B * T}, at::TensorOptions().dtype(out_dtype));
  const at::Tensor lp =
      model::token_logprobs(hidden.index_select(0, sel.rows), head, sel.targets, chunk_rows);
  token_lp.index_copy_(0, sel.rows + 1, lp.to(out_dtype));
  token_lp = token_lp.view({B, T});

  io::NamedTensors outputs = {{"logits", logits}, {"token_logprobs", token_lp}};
  if (completion.defined()) {
    outputs.emplace_back("completion_logprob_sum", (token_lp * completion.ne(0).to(out_dtype)).sum(1));
  }
  io::write_safetensors(out_path, outputs,
                        {{"model", model_dir}, {"dtype", dtype_name}, {"producer", build_summary()}});
  log::info("forward", "wrote ", out_path, ": logits [", B, ", ", T, ", ", V, "], token_logprobs",
            completion.defined() ? ", completion_logprob_sum" : "");
  return 0;
}

}  // namespace kto::apps
