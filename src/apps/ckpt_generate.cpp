// kto-ckpt generate: text from a Hugging Face model directory (a trained run's final/, or any
// supported model), with a KV cache (kto/model/generate.h).
//
// Text goes through the model's tokenizer in a kto-data child process (kto-data encode /
// decode): the byte-level BPE and SentencePiece tokenizers are kto-data's, and SentencePiece's
// protobuf never shares this process with LibTorch's. Prompts given as ids need no tokenizer.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "ckpt_commands.h"
#include "kto/io/hf_checkpoint.h"
#include "kto/model/generate.h"
#include "kto/model/hf_config.h"
#include "kto/util/cli.h"
#include "kto/util/files.h"
#include "kto/util/log.h"
#include "kto/util/text_codec.h"

namespace kto::apps {
namespace {

using detail::str_cat;
using json = nlohmann::json;

double parse_number(const std::string& text, const char* flag) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw cli::UsageError(str_cat(flag, ": '", text, "' is not a number"));
}

// A prompt as given: text (or messages) to render and tokenize, or token ids.
struct Prompt {
  json text;  // null when given as ids
  std::vector<int64_t> ids;
};

std::vector<Prompt> read_prompts(const std::string& prompt, const std::string& path) {
  std::vector<Prompt> out;
  if (!prompt.empty()) {
    out.push_back({json(prompt), {}});
    return out;
  }
  for_each_jsonl_line(path, [&](const json& row, int64_t n) {
    if (row.is_object() && row.contains("prompt_ids")) {
      if (!row["prompt_ids"].is_array())
        throw Error(str_cat(path, ":", n, ": prompt_ids must be a list of token ids"));
      Prompt p;
      for (const json& v : row["prompt_ids"]) {
        if (!v.is_number_integer())
          throw Error(str_cat(path, ":", n, ": prompt_ids must be a list of token ids"));
        p.ids.push_back(v.get<int64_t>());
      }
      if (p.ids.empty()) throw Error(str_cat(path, ":", n, ": prompt_ids is empty"));
      out.push_back(p);
    } else if (row.is_object() && row.contains("prompt") &&
               (row["prompt"].is_string() || row["prompt"].is_array())) {
      out.push_back({row["prompt"], {}});
    } else {
      throw Error(str_cat(
          path, ":", n, ": expected {\"prompt\": TEXT or a list of messages} or {\"prompt_ids\": [ids...]}"));
    }
  });
  if (out.empty()) throw Error(path + ": no prompts");
  return out;
}

}  // namespace

int ckpt_generate(int argc, char** argv) {
  std::string model_dir, prompt, prompts_path, out_path, dtype_name = "fp32", template_name, template_file,
                                                         tokenizer, temperature = "1", top_p = "1";
  int64_t max_new = 64, top_k = 0, seed = 0, batch = 8, eos_id = -2, threads = 0;
  bool greedy = false, no_cache = false;
  std::vector<std::string> stops;
  cli::Args args("kto-ckpt generate",
                 "Generates continuations of prompts with a KV cache and writes one JSON line per prompt,\n"
                 "in input order: prompt, completion, generated_ids (the new tokens), finish_reason (eos,\n"
                 "stop or length) and tokens_per_s (new tokens per second of the prompt's batch).");
  args.option("--model", &model_dir, "DIR", "Hugging Face directory (config.json + *.safetensors)",
              cli::required)
      .option("--prompt", &prompt, "TEXT", "one prompt")
      .option("--prompts", &prompts_path, "FILE",
              "JSONL: {\"prompt\": TEXT or [messages]} or, without a tokenizer, {\"prompt_ids\": [ids]}")
      .option("--max-new-tokens", &max_new, "N", "new tokens per prompt at most (64)")
      .option("--temperature", &temperature, "T", "divide logits by T before sampling (1)")
      .option("--top-p", &top_p, "P", "sample from the fewest most likely tokens reaching probability P (1)")
      .option("--top-k", &top_k, "K", "sample from the K most likely tokens (0: all)")
      .flag("--greedy", &greedy, "take the most likely token (ignores temperature, top-p, top-k)")
      .option("--seed", &seed, "S", "sampling seed (0); prompt i draws from its own stream")
      .option("--template", &template_name, "NAME",
              "chat template (hh, chatml, llama3, plain): a text prompt becomes its user turn, followed by "
              "the assistant's opener, as kto-data prepare renders prompts; default: text as it is")
      .option("--template-file", &template_file, "FILE",
              "a chat template from a JSON file (kto-data prepare)")
      .option("--tokenizer", &tokenizer, "PATH",
              "tokenizer file or directory (default: the model directory's)")
      .option("--batch", &batch, "N", "prompts generated together (8)")
      .option("--dtype", &dtype_name, "fp32|bf16|fp64", "compute dtype (fp32)")
      .option("--eos-id", &eos_id, "ID", "end-of-sequence id (default: config.json's eos_token_id; -1: none)")
      .list("--stop", &stops, "TEXT", "stop when the completion contains TEXT, cut before it (repeatable)")
      .option("--out", &out_path, "FILE", "output JSONL (default: stdout)")
      .option("--threads", &threads, "N", "CPU threads (default: OMP_NUM_THREADS or all cores)")
      .flag("--no-cache", &no_cache, "recompute every whole sequence at every step (the check of the cache)");
  if (!args.parse(argc, argv, 2)) return 0;
  if (prompt.empty() == prompts_path.empty()) throw cli::UsageError("give --prompt TEXT or --prompts FILE");
  if (batch < 1) throw cli::UsageError(str_cat("--batch: must be >= 1, got ", batch));
  if (max_new < 0) throw cli::UsageError(str_cat("--max-new-tokens: must be >= 0, got ", max_new));
  if (eos_id < -2) throw cli::UsageError(str_cat("--eos-id: a token id, or -1 for none; got ", eos_id));
  model::GenerateOptions o;
  o.max_new_tokens = max_new;
  o.sampling.greedy = greedy;
  o.sampling.temperature = parse_number(temperature, "--temperature");
  o.sampling.top_p = parse_number(top_p, "--top-p");
  o.sampling.top_k = top_k;
  o.seed = static_cast<uint64_t>(seed);
  o.kv_cache = !no_cache;
  try {
    o.sampling.validate();
  } catch (const Error& e) {
    throw cli::UsageError(e.what());
  }
  const at::ScalarType dtype = parse_dtype(dtype_name);
  set_compute_threads(threads);

  const model::ModelConfig cfg = model::read_hf_config(model_dir);
  o.eos_id = eos_id == -2 ? cfg.eos_token_id : eos_id;
  std::vector<Prompt> prompts = read_prompts(prompt, prompts_path);
  if (tokenizer.empty()) tokenizer = model_tokenizer(model_dir);
  bool any_text = false;
  for (const Prompt& p : prompts) any_text = any_text || !p.text.is_null();
  if (tokenizer.empty() && (any_text || !stops.empty())) {
    throw Error(str_cat(model_dir, " has no tokenizer (tokenizer.json or tokenizer.model)",
                        any_text ? " to encode text prompts" : " to decode for --stop",
                        ": give --tokenizer, or prompts as {\"prompt_ids\": [...]}"));
  }
  // The tokenizer's child processes, when there is one.
  std::unique_ptr<TextCodec> codec;
  if (!tokenizer.empty()) codec = std::make_unique<TextCodec>(tokenizer, template_name, template_file);
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].text.is_null()) continue;
    prompts[i].ids = codec->encode_prompt(prompts[i].text);
    if (prompts[i].ids.empty()) throw Error(str_cat("prompt ", i + 1, " encodes to no tokens"));
  }
  auto decode = [&](const std::vector<int64_t>& ids) { return codec->decode(ids); };
  // --stop: the completion so far, decoded, contains a stop text.
  auto stop_at = [&](const std::string& text) {
    size_t cut = std::string::npos;
    for (const std::string& s : stops)
      if (!s.empty()) cut = std::min(cut, text.find(s));
    return cut;
  };
  if (!stops.empty()) {
    o.stop = [&](size_t, const std::vector<int64_t>& ids) {
      return stop_at(decode(ids)) != std::string::npos;
    };
  }

  const model::DenseModel model = io::load_hf_model(model_dir, dtype);
  FILE* out = out_path.empty() ? stdout : std::fopen(out_path.c_str(), "w");
  if (out == nullptr) throw Error(out_path + ": cannot open for writing");
  int64_t total_new = 0;
  const auto start = std::chrono::steady_clock::now();
  for (size_t first = 0; first < prompts.size(); first += static_cast<size_t>(batch)) {
    const size_t end = std::min(prompts.size(), first + static_cast<size_t>(batch));
    std::vector<std::vector<int64_t>> ids;
    for (size_t i = first; i < end; ++i) ids.push_back(prompts[i].ids);
    o.first_index = static_cast<int64_t>(first);
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<model::Generation> gens = model::generate(model, ids, o);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int64_t batch_new = 0;
    for (const model::Generation& g : gens) batch_new += static_cast<int64_t>(g.ids.size());
    total_new += batch_new;
    for (size_t j = 0; j < gens.size(); ++j) {
      const Prompt& p = prompts[first + j];
      json line;
      line["prompt"] = p.text.is_null() ? json(nullptr) : p.text;
      if (p.text.is_null()) line["prompt_ids"] = p.ids;
      if (codec) {
        std::string text = decode(gens[j].ids);
        if (gens[j].finish_reason == "stop") text = text.substr(0, stop_at(text));
        line["completion"] = text;
      } else {
        line["completion"] = nullptr;  // no tokenizer: the ids are the completion
      }
      line["generated_ids"] = gens[j].ids;
      line["finish_reason"] = gens[j].finish_reason;
      line["tokens_per_s"] = sec > 0 ? static_cast<double>(batch_new) / sec : 0.0;
      const std::string text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
      std::fwrite(text.data(), 1, text.size(), out);
    }
    std::fflush(out);
  }
  if (out != stdout && std::fclose(out) != 0) throw Error(out_path + ": write failed");
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log::info("generate", prompts.size(), " prompt(s), ", total_new, " new tokens in ", sec, " s (",
            sec > 0 ? static_cast<double>(total_new) / sec : 0.0, " tokens/s, ",
            o.kv_cache ? "KV cache" : "no cache", ")", out_path.empty() ? "" : "; wrote " + out_path);
  return 0;
}

}  // namespace kto::apps
