#include "prepare.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include "inputs.h"
#include "kto/data/dataset.h"
#include "kto/data/sampler.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"
#include "kto/util/version.h"
#include "tokenizer/text.h"
#include "tokenizer/tokenizer.h"

namespace kto::data_tools {

using detail::str_cat;
using json = nlohmann::json;

namespace {

struct Tokenized {
  std::vector<int32_t> tokens;
  int32_t prompt_len = 0;
  bool desirable = false;
  bool prompt_truncated = false, completion_truncated = false;
  bool eval = false;
};

// The ids each prompt ends with, by label ([0] undesirable, [1] desirable); empty without
// --control-tokens.
using ControlIds = std::array<std::vector<int32_t>, 2>;

ControlIds control_ids(const tok::Tokenizer& tok, const PrepareOptions& o) {
  ControlIds ids;
  if (o.control_tokens.empty()) return ids;
  const size_t comma = o.control_tokens.find(',');
  const std::string good = o.control_tokens.substr(0, comma);
  const std::string bad = comma == std::string::npos ? "" : o.control_tokens.substr(comma + 1);
  if (good.empty() || bad.empty() || bad.find(',') != std::string::npos || good == bad) {
    throw Error("--control-tokens '" + o.control_tokens + "': give two different tokens, GOOD,BAD");
  }
  for (const auto& [label, text] : {std::pair<int, std::string>{1, good}, {0, bad}}) {
    const int32_t id = tok.token_to_id(text);
    ids[label] = id >= 0 ? std::vector<int32_t>{id} : tok.encode(text, false);
    if (ids[label].empty()) throw Error("--control-tokens: '" + text + "' encodes to no tokens");
    if (id < 0) {
      log::warn("prepare", "control token '", text, "' is not a token of ", o.tokenizer,
                ": encoded as text (", ids[label].size(), " ids)");
    }
  }
  if (static_cast<int64_t>(std::max(ids[0].size(), ids[1].size())) + 1 > o.max_prompt_length) {
    throw Error("--control-tokens: the control tokens do not fit in --max-prompt-length");
  }
  return ids;
}

// An example's ids before truncation.
struct Encoded {
  std::vector<int32_t> prompt, completion;
};

Encoded encode(const Located& e, const tok::Tokenizer& tok, bool add_bos, int32_t eos,
               const ControlIds& control) {
  Encoded x;
  x.prompt = tok.encode(e.text.prompt, false);
  if (add_bos) x.prompt.insert(x.prompt.begin(), tok.bos_id());
  // At the end: prompt truncation keeps the end, so the control tokens always survive it.
  const auto& cond = control[e.text.desirable ? 1 : 0];
  x.prompt.insert(x.prompt.end(), cond.begin(), cond.end());
  x.completion = tok.encode(e.text.completion, false);
  if (eos >= 0) x.completion.push_back(eos);
  return x;
}

// Truncates: the prompt from the left first (to --max-prompt-length, BOS kept) when it and the
// longest completion that goes with it exceed --max-length, then the completion from the right.
// `longest_completion` is the example's own length, or for a kept pair the longer of the two, so
// that both halves keep the same prompt (as TRL's DPO data collator does).
Tokenized truncate(Encoded x, const Located& e, const PrepareOptions& o, bool add_bos,
                   size_t longest_completion) {
  Tokenized t;
  t.desirable = e.text.desirable;
  std::vector<int32_t>& prompt = x.prompt;
  std::vector<int32_t>& completion = x.completion;
  const int64_t total = static_cast<int64_t>(prompt.size() + longest_completion);
  if (total > o.max_length && static_cast<int64_t>(prompt.size()) > o.max_prompt_length) {
    const size_t keep_from = prompt.size() - static_cast<size_t>(o.max_prompt_length - (add_bos ? 1 : 0));
    std::vector<int32_t> cut;
    if (add_bos) cut.push_back(prompt.front());
    cut.insert(cut.end(), prompt.begin() + static_cast<std::ptrdiff_t>(keep_from), prompt.end());
    prompt = std::move(cut);
    t.prompt_truncated = true;
  }
  if (static_cast<int64_t>(prompt.size() + completion.size()) > o.max_length) {
    completion.resize(static_cast<size_t>(o.max_length - static_cast<int64_t>(prompt.size())));
    t.completion_truncated = true;
  }
  t.prompt_len = static_cast<int32_t>(prompt.size());
  t.tokens = std::move(prompt);
  t.tokens.insert(t.tokens.end(), completion.begin(), completion.end());
  t.eval = o.eval_fraction > 0 && unit_hash(o.seed, 2, static_cast<uint64_t>(e.row)) < o.eval_fraction;
  return t;
}

void validate(const PrepareOptions& o) {
  if (o.inputs.empty()) throw Error("give at least one --input");
  if (o.max_length < 2) throw Error(str_cat("--max-length must be >= 2, got ", o.max_length));
  if (o.max_prompt_length < 1 || o.max_prompt_length >= o.max_length) {
    throw Error(str_cat("--max-prompt-length must be in [1, --max-length), got ", o.max_prompt_length));
  }
  for (double k : {o.keep_desirable, o.keep_undesirable}) {
    if (!(k > 0 && k <= 1))
      throw Error(str_cat("--keep-desirable/--keep-undesirable must be in (0, 1], got ", k));
  }
  if (!(o.eval_fraction >= 0 && o.eval_fraction < 1)) throw Error("--eval-fraction must be in [0, 1)");
  if (o.shards < 1 || o.shards > 100000)
    throw Error(str_cat("--shards must be in [1, 100000], got ", o.shards));
  if (o.max_line_bytes < 1024)
    throw Error(str_cat("--max-line-bytes must be >= 1024, got ", o.max_line_bytes));
  if (o.threads < 0 || o.threads > 4096)
    throw Error(str_cat("--threads must be in [0, 4096], got ", o.threads));
  if (o.add_bos != "auto" && o.add_bos != "yes" && o.add_bos != "no")
    throw Error("--add-bos must be auto, yes or no");
  if (o.keep_pairs && (o.keep_desirable < 1 || o.keep_undesirable < 1)) {
    throw Error("--keep-pairs cannot be combined with per-class subsampling (it would break pairs)");
  }
  if (path_exists(o.out_dir) && !o.overwrite) {
    throw Error(o.out_dir + " already exists (use --overwrite to replace it)");
  }
}

// ---- the stages of run_prepare, in order ----

// The tokenizer and what it decides for every example: BOS, EOS and the CSFT control ids.
struct Encoding {
  std::unique_ptr<tok::Tokenizer> tok;
  bool add_bos = false;
  int32_t eos = -1;  // appended to completions; -1: none
  ControlIds control;
};

Encoding load_encoding(const PrepareOptions& o) {
  Encoding enc;
  enc.tok = tok::load_tokenizer(o.tokenizer);
  const tok::Tokenizer& tok = *enc.tok;
  // The tokenizer's own rule decides BOS unless told: HF templates and SentencePiece add it.
  const std::vector<int32_t> special_empty = tok.encode("", true);
  enc.add_bos = o.add_bos == "yes" || (o.add_bos == "auto" && !special_empty.empty() && tok.bos_id() >= 0 &&
                                       special_empty.front() == tok.bos_id());
  if (enc.add_bos && tok.bos_id() < 0)
    throw Error(o.tokenizer + ": --add-bos yes, but the tokenizer has no BOS token");
  // ChatML spells turns with <|im_start|> / <|im_end|>: special tokens in the tokenizers made for
  // it, plain text (many tokens, unlike anything the model saw) in the others.
  const bool chatml = o.template_file.empty() && o.chat_template == "chatml";
  const int32_t im_end = chatml ? tok.token_to_id("<|im_end|>") : -1;
  if (chatml && tok.token_to_id("<|im_start|>") < 0) {
    log::warn(
        "prepare", o.tokenizer,
        " has no <|im_start|> token: --template chatml spells it as text, several tokens per turn; use the "
        "template the model was trained with (--template hh, llama3, plain or --template-file)");
  }
  if (o.append_eos) {
    // A chatml completion ends its turn with <|im_end|> where the tokenizer has it.
    enc.eos = !o.eos_token.empty() ? tok.token_to_id(o.eos_token) : im_end >= 0 ? im_end : tok.eos_id();
    if (enc.eos < 0) {
      throw Error(o.eos_token.empty()
                      ? o.tokenizer + ": the tokenizer has no EOS token; give --eos-token or --no-eos"
                      : o.tokenizer + ": --eos-token '" + o.eos_token + "' is not a token");
    }
  }
  enc.control = control_ids(tok, o);
  return enc;
}

// Runs fn(0) .. fn(n - 1) on `threads` threads; the first exception is rethrown after all join.
void parallel_for(size_t n, int64_t threads, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  std::exception_ptr failure;
  std::mutex failure_mutex;
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      try {
        for (size_t i = next++; i < n; i = next++) fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
}

// Tokenizes and truncates in parallel; the result does not depend on the thread count. A kept
// pair (chosen at 2k, rejected at 2k+1) is one unit of work: its halves are truncated together.
std::vector<Tokenized> tokenize(const std::vector<Located>& texts, const Encoding& enc,
                                const PrepareOptions& o) {
  std::vector<Tokenized> examples(texts.size());
  const size_t unit = o.keep_pairs ? 2 : 1;
  KTO_CHECK(texts.size() % unit == 0, "kept pairs must come as chosen, rejected");
  const int64_t threads =
      o.threads > 0 ? o.threads : std::max<int64_t>(1, std::thread::hardware_concurrency());
  parallel_for(texts.size() / unit, threads, [&](size_t u) {
    const size_t first = u * unit;
    std::vector<Encoded> encoded;
    size_t longest = 0;
    for (size_t i = first; i < first + unit; ++i) {
      encoded.push_back(encode(texts[i], *enc.tok, enc.add_bos, enc.eos, enc.control));
      longest = std::max(longest, encoded.back().completion.size());
    }
    for (size_t i = first; i < first + unit; ++i) {
      const size_t budget = unit == 1 ? encoded[i - first].completion.size() : longest;
      examples[i] = truncate(std::move(encoded[i - first]), texts[i], o, enc.add_bos, budget);
    }
  });
  return examples;
}

struct Split {
  std::vector<int64_t> train, eval;  // example indices, in output order
};

// The output order (shuffled whole pairs when pairs are kept) split into train and eval; the
// counts and the recommended class weights go into `s`.
Split split_examples(const std::vector<Tokenized>& examples, const PrepareOptions& o, PrepareSummary& s) {
  std::vector<int64_t> order(examples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  if (o.shuffle && o.keep_pairs) {  // shuffle whole pairs: chosen stays right before its rejected
    const auto pairs = data::BatchSampler::permutation(static_cast<int64_t>(examples.size() / 2), o.seed, -1);
    for (size_t p = 0; p < pairs.size(); ++p) {
      order[2 * p] = 2 * pairs[p];
      order[2 * p + 1] = 2 * pairs[p] + 1;
    }
  } else if (o.shuffle) {
    order = data::BatchSampler::permutation(static_cast<int64_t>(examples.size()), o.seed, -1);
  }
  Split split;
  for (int64_t i : order) {
    const Tokenized& e = examples[static_cast<size_t>(i)];
    (e.eval ? split.eval : split.train).push_back(i);
    s.examples++;
    (e.desirable ? s.desirable : s.undesirable)++;
    s.tokens += static_cast<int64_t>(e.tokens.size());
    s.prompt_truncated += e.prompt_truncated;
    s.completion_truncated += e.completion_truncated;
  }
  if (split.train.empty()) throw Error("the eval split took every example; lower --eval-fraction");
  if (o.eval_fraction > 0 && split.eval.empty()) {
    log::warn("prepare", "--eval-fraction ", o.eval_fraction, " drew no eval example from ", order.size(),
              " (each is drawn with that probability): no eval split is written; give more data or a larger "
              "fraction");
  }
  const int64_t units = static_cast<int64_t>(split.train.size()) / (o.keep_pairs ? 2 : 1);
  if (o.shards > units) {
    throw Error(str_cat("--shards ", o.shards, " is more than the ", units,
                        o.keep_pairs ? " pairs" : " examples",
                        " of the train split: every shard needs at least one"));
  }
  s.train_examples = static_cast<int64_t>(split.train.size());
  s.eval_examples = static_cast<int64_t>(split.eval.size());
  int64_t train_desirable = 0;
  for (int64_t i : split.train) train_desirable += examples[static_cast<size_t>(i)].desirable;
  std::tie(s.lambda_desirable, s.lambda_undesirable) =
      data::recommended_class_weights(train_desirable, s.train_examples - train_desirable);
  return split;
}

data::DatasetAttributes dataset_attributes(const Encoding& enc, const PrepareOptions& o) {
  const tok::Tokenizer& tok = *enc.tok;
  data::DatasetAttributes attrs;
  const std::string tok_path = tok.path();
  const size_t slash = tok_path.find_last_of('/');
  const size_t parent =
      slash == std::string::npos || slash == 0 ? std::string::npos : tok_path.find_last_of('/', slash - 1);
  attrs.tokenizer_name = parent == std::string::npos ? tok_path : tok_path.substr(parent + 1);
  attrs.tokenizer_kind = tok.kind();
  attrs.tokenizer_sha256 = tok.sha256();
  attrs.tokenizer_path = absolute_path(tok_path);
  attrs.tokenizer_vocab_size = tok.vocab_size();
  attrs.bos_id = tok.bos_id();
  attrs.eos_id = enc.eos >= 0 ? enc.eos : tok.eos_id();
  attrs.pad_id = tok.pad_id() >= 0 ? tok.pad_id() : attrs.eos_id;
  attrs.max_length = o.max_length;
  attrs.max_prompt_length = o.max_prompt_length;
  attrs.paired = o.keep_pairs ? 1 : 0;
  attrs.control_tokens = o.control_tokens;
  for (const std::string& in : o.inputs) attrs.source += (attrs.source.empty() ? "" : ", ") + in;
  attrs.created = utc_now();
  attrs.producer = build_summary();
  return attrs;
}

// One split as `shards` files (train.h5, or train-00000-of-00004.h5 ...) in `dir`; shard
// boundaries fall between pairs when pairs are kept. The file names go into s.files.
void write_split(const std::vector<Tokenized>& examples, const std::vector<int64_t>& ids,
                 const std::string& split, int64_t shards, data::DatasetAttributes attrs,
                 const PrepareOptions& o, const std::string& dir, PrepareSummary& s) {
  for (int64_t shard = 0; shard < shards; ++shard) {
    const size_t unit = o.keep_pairs ? 2 : 1, units = ids.size() / unit;
    const size_t begin = unit * (units * static_cast<size_t>(shard) / static_cast<size_t>(shards));
    const size_t end = unit * (units * static_cast<size_t>(shard + 1) / static_cast<size_t>(shards));
    char name[64];
    if (shards == 1) {
      std::snprintf(name, sizeof(name), "%s.h5", split.c_str());
    } else {
      std::snprintf(name, sizeof(name), "%s-%05ld-of-%05ld.h5", split.c_str(), static_cast<long>(shard),
                    static_cast<long>(shards));
    }
    attrs.split = split;
    attrs.shard_index = shard;
    attrs.num_shards = shards;
    data::DatasetWriter writer(join_path(dir, name), attrs);
    for (size_t k = begin; k < end; ++k) {
      const Tokenized& e = examples[static_cast<size_t>(ids[k])];
      writer.add(e.tokens, e.prompt_len, e.desirable);
    }
    writer.finish();
    s.files.push_back(name);
  }
}

json summary_json(const PrepareSummary& s, const Encoding& enc, const PrepareOptions& o) {
  return {{"rows", s.rows},
          {"rows_skipped", s.rows_skipped},
          {"skipped_by_reason", s.skipped_by_reason},
          {"rows_by_format", s.rows_by_format},
          {"subsampled_away", s.subsampled_away},
          {"examples", s.examples},
          {"desirable", s.desirable},
          {"undesirable", s.undesirable},
          {"tokens", s.tokens},
          {"prompt_truncated", s.prompt_truncated},
          {"completion_truncated", s.completion_truncated},
          {"train_examples", s.train_examples},
          {"eval_examples", s.eval_examples},
          {"recommended_lambda_desirable", s.lambda_desirable},
          {"recommended_lambda_undesirable", s.lambda_undesirable},
          {"files", s.files},
          {"tokenizer", enc.tok->path()},
          {"tokenizer_sha256", enc.tok->sha256()},
          {"add_bos", enc.add_bos},
          {"paired", o.keep_pairs},
          {"control_tokens", o.control_tokens},
          {"eos_id", enc.eos},
          {"seed", o.seed},
          {"inputs", o.inputs}};
}

// Renames the finished `tmp_dir` to `out_dir`, replacing an old output only once the new one is
// complete (the old one is restored if the move fails).
void move_into_place(const std::string& tmp_dir, const std::string& out_dir) {
  if (path_exists(out_dir)) {
    const std::string old = str_cat(out_dir, ".old.", ::getpid());
    if (std::rename(out_dir.c_str(), old.c_str()) != 0)
      throw Error(out_dir + ": cannot move the old output aside");
    if (std::rename(tmp_dir.c_str(), out_dir.c_str()) != 0) {
      std::rename(old.c_str(), out_dir.c_str());
      throw Error(out_dir + ": cannot move the new output into place");
    }
    remove_tree(old);
  } else if (std::rename(tmp_dir.c_str(), out_dir.c_str()) != 0) {
    throw Error(out_dir + ": cannot move the output into place: " + std::strerror(errno));
  }
}

// Writes the splits and summary.json into a temporary directory, then moves it into place:
// nothing is left behind on failure.
void write_output(const std::vector<Tokenized>& examples, const Split& split, const Encoding& enc,
                  const PrepareOptions& o, PrepareSummary& s) {
  const std::string tmp_dir = str_cat(o.out_dir, ".tmp.", ::getpid());
  remove_tree(tmp_dir);
  make_directories(tmp_dir);
  try {
    const data::DatasetAttributes attrs = dataset_attributes(enc, o);
    write_split(examples, split.train, "train", o.shards, attrs, o, tmp_dir, s);
    if (!split.eval.empty()) write_split(examples, split.eval, "eval", 1, attrs, o, tmp_dir, s);
    write_text_file(join_path(tmp_dir, "summary.json"), summary_json(s, enc, o).dump(2) + "\n");
    move_into_place(tmp_dir, o.out_dir);
  } catch (...) {
    remove_tree(tmp_dir);
    throw;
  }
}

void log_summary(const PrepareSummary& s, const std::string& reasons, const std::string& out_dir) {
  const double error_rate = s.rows ? static_cast<double>(s.rows_skipped) / static_cast<double>(s.rows) : 0.0;
  std::string formats;
  for (const auto& [f, n] : s.rows_by_format) formats += str_cat(formats.empty() ? "" : ", ", n, " ", f);
  log::info("prepare", s.rows, " rows (", formats, "); skipped ", s.rows_skipped, " (", percent(error_rate),
            ")", reasons.empty() ? "" : ": " + reasons);
  if (s.subsampled_away) log::info("prepare", "subsampling removed ", s.subsampled_away, " examples");
  log::info("prepare", s.examples, " examples: ", s.desirable, " desirable, ", s.undesirable,
            " undesirable; ", s.tokens, " tokens; truncated: ", s.prompt_truncated, " prompts, ",
            s.completion_truncated, " completions");
  log::info("prepare", "train ", s.train_examples, ", eval ", s.eval_examples,
            "; recommended class weights for the train split: "
            "lambda_D = ",
            s.lambda_desirable, ", lambda_U = ", s.lambda_undesirable,
            " (lambda_D*n_D / (lambda_U*n_U) in [1, 4/3])");
  for (const std::string& f : s.files) log::info("prepare", "wrote ", join_path(out_dir, f));
}

}  // namespace

PrepareSummary run_prepare(const PrepareOptions& o) {
  validate(o);
  const Encoding enc = load_encoding(o);
  PrepareSummary s;
  std::string reasons;  // why rows were skipped, for the summary
  const std::vector<Located> texts = read_inputs(o, s, &reasons);
  const std::vector<Tokenized> examples = tokenize(texts, enc, o);
  const Split split = split_examples(examples, o, s);
  write_output(examples, split, enc, o, s);
  log_summary(s, reasons, o.out_dir);
  return s;
}

}  // namespace kto::data_tools
