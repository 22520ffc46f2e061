// kto-ckpt forward: the check of a model against Hugging Face transformers.
//
// Reads `input_ids` (and optionally `attention_mask`, `completion_mask`) from a safetensors
// file — or tokenizes text (--text, --jsonl) with the model's tokenizer (kto/util/text_codec.h),
// right-padded, and writes those ids and mask beside the outputs — runs the model, writes `logits` [B, T, V]
// and `token_logprobs` [B, T] with token_logprobs[b, t] = log_softmax(logits[b, t-1])[input_ids[b, t]] (0 at
// t = 0), plus `completion_logprob_sum` [B] when a completion mask is given. fp32/fp64 runs write outputs in
// their dtype; bf16 runs write fp32 (the bf16 logits widened, log-probs computed in fp32).
// Padded positions are computed as Hugging Face does (padded keys masked), so whole tensors
// compare, not only the real positions.
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "ckpt_commands.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/io/safetensors.h"
#include "kto/model/hf_config.h"
#include "kto/model/logprob.h"
#include "kto/util/cli.h"
#include "kto/util/log.h"
#include "kto/util/memory.h"
#include "kto/util/text_codec.h"
#include "kto/util/version.h"

namespace kto::apps {
namespace {

using detail::str_cat;

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
  std::string model_dir, ids_path, out_path, dtype_name = "fp32", text, jsonl, tokenizer;
  int64_t threads = 0, chunk_rows = 0;
  bool allow_long = false, no_memory_check = false;
  cli::Args args("kto-ckpt forward",
                 "Runs a Hugging Face model on token ids and writes logits and token log-probs\n"
                 "(safetensors), to compare against transformers or inspect a trained model.");
  args.option("--model", &model_dir, "DIR", "Hugging Face directory (config.json + *.safetensors)",
              cli::required)
      .option("--ids", &ids_path, "FILE",
              "safetensors with input_ids [B,T] (+ attention_mask, completion_mask)")
      .option("--text", &text, "TEXT",
              "one sequence of text instead of --ids, tokenized with the model's tokenizer")
      .option("--jsonl", &jsonl, "FILE", "JSONL {\"text\": ...} lines instead of --ids: one sequence each")
      .option("--tokenizer", &tokenizer, "PATH",
              "tokenizer for --text/--jsonl (default: the model directory's)")
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
  if ((ids_path.empty() ? 0 : 1) + (text.empty() ? 0 : 1) + (jsonl.empty() ? 0 : 1) != 1)
    throw cli::UsageError("give one of --ids FILE, --text TEXT or --jsonl FILE");
  at::Tensor ids, mask, completion;
  const bool from_text = ids_path.empty();
  if (from_text) {
    if (tokenizer.empty()) tokenizer = model_tokenizer(model_dir);
    if (tokenizer.empty())
      throw Error(
          model_dir +
          " has no tokenizer (tokenizer.json or tokenizer.model) for --text/--jsonl: give --tokenizer");
    ids_path = text.empty() ? jsonl : "--text";
    std::vector<std::string> texts;
    if (!text.empty()) {
      texts.push_back(text);
    } else {
      for_each_jsonl_line(jsonl, [&](const nlohmann::json& row, int64_t n) {
        if (!row.is_object() || !row.contains("text") || !row["text"].is_string())
          throw Error(str_cat(jsonl, ":", n, ": expected {\"text\": TEXT}"));
        texts.push_back(row["text"].get<std::string>());
      });
      if (texts.empty()) throw Error(jsonl + ": no lines");
    }
    TextCodec codec(tokenizer);
    std::vector<std::vector<int64_t>> rows;
    int64_t longest = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      rows.push_back(codec.encode_text(texts[i]));
      if (rows.back().empty()) throw Error(str_cat(ids_path, ": sequence ", i + 1, " encodes to no tokens"));
      longest = std::max<int64_t>(longest, static_cast<int64_t>(rows.back().size()));
    }
    ids = at::zeros({static_cast<int64_t>(rows.size()), longest}, at::kLong);  // right-padded with 0
    mask = at::zeros_like(ids);
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto n = static_cast<int64_t>(rows[i].size());
      ids[static_cast<int64_t>(i)].narrow(0, 0, n).copy_(at::tensor(rows[i], at::kLong));
      mask[static_cast<int64_t>(i)].narrow(0, 0, n).fill_(1);
    }
  } else {
    const io::SafetensorsSet ids_file = io::SafetensorsSet::open_file(ids_path);
    ids = read_int_matrix(ids_file, "input_ids", true);
    mask = read_int_matrix(ids_file, "attention_mask", false);
    completion = read_int_matrix(ids_file, "completion_mask", false);
  }
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
  if (from_text) {  // what the text became
    outputs.emplace_back("input_ids", ids);
    outputs.emplace_back("attention_mask", mask);
  }
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
