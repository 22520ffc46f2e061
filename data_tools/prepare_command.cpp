// kto-data prepare: CLI for run_prepare (see prepare/prepare.h and docs/data.md).
#include <cstdlib>
#include <string>

#include "commands.h"
#include "kto/util/cli.h"
#include "prepare/prepare.h"

namespace kto::data_tools {

namespace {
double parse_number(const std::string& name, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0') throw cli::UsageError(name + ": expected a number, got '" + text + "'");
  return v;
}
}  // namespace

int prepare_command(int argc, char** argv) {
  PrepareOptions o;
  std::string keep_d = "1", keep_u = "1", eval_fraction = "0", max_error_rate = "0.01";
  int64_t seed = 0;
  bool no_shuffle = false, no_eos = false;
  cli::Args args(
      "kto-data prepare",
      "Tokenizes feedback data into an HDF5 dataset directory: train.h5 (or train-0000i-of-0000n.h5),\n"
      "eval.h5 with --eval-fraction, and summary.json. Rows that cannot be used are skipped and\n"
      "counted by reason; the run fails, writing nothing, above --max-error-rate.");
  args.list("--input", &o.inputs, "FILE", "JSONL or JSON-array file, optionally .gz (repeatable)")
      .option("--tokenizer", &o.tokenizer, "PATH", "tokenizer.json, tokenizer.model, or a model directory",
              cli::required)
      .option("--out", &o.out_dir, "DIR", "output directory (must not exist unless --overwrite)",
              cli::required)
      .option("--max-length", &o.max_length, "N", "tokens per example, prompt + completion (default 1024)")
      .option("--max-prompt-length", &o.max_prompt_length, "N",
              "prompt tokens kept when truncating (default 512)")
      .option("--template", &o.chat_template, "NAME",
              "chat template for message lists: hh (default), chatml, llama3, plain")
      .option("--template-file", &o.template_file, "FILE",
              "custom chat template (JSON: system, user, assistant, generation, completion_prefix)")
      .option("--add-bos", &o.add_bos, "auto|yes|no",
              "prepend BOS to prompts (auto: when the tokenizer's rule adds it)")
      .option("--eos-token", &o.eos_token, "TOKEN",
              "token appended to completions (default: the tokenizer's EOS)")
      .flag("--no-eos", &no_eos, "do not append EOS to completions")
      .option("--control-tokens", &o.control_tokens, "GOOD,BAD",
              "end every prompt with GOOD (desirable) or BAD (undesirable): conditioning for loss.name csft")
      .option("--keep-desirable", &keep_d, "P", "keep this fraction of desirable examples (default 1)")
      .option("--keep-undesirable", &keep_u, "P", "keep this fraction of undesirable examples (default 1)")
      .option("--seed", &seed, "N", "seed of subsampling, shuffling and the eval split (default 0)")
      .flag("--no-shuffle", &no_shuffle,
            "keep input order (by default examples are shuffled after unpairing)")
      .flag("--keep-pairs", &o.keep_pairs,
            "keep preference pairs, chosen right before its rejected (for dpo, cdpo, ipo, simpo, slic)")
      .option("--eval-fraction", &eval_fraction, "P", "fraction of rows held out as eval.h5 (default 0)")
      .option("--shards", &o.shards, "N", "split the train set into N files (default 1)")
      .option("--max-error-rate", &max_error_rate, "P",
              "fail when more than this fraction of rows is skipped (default 0.01)")
      .option("--report-errors", &o.report_errors, "N",
              "print the first N skipped rows with file:line (default 5)")
      .option("--threads", &o.threads, "N", "tokenization threads (default: all cores)")
      .option("--max-line-bytes", &o.max_line_bytes, "N",
              "skip input lines longer than this, reason line_too_long (default 33554432 = 32 MiB)")
      .flag("--overwrite", &o.overwrite, "replace an existing output directory");
  if (!args.parse(argc, argv, 2)) return 0;
  o.keep_desirable = parse_number("--keep-desirable", keep_d);
  o.keep_undesirable = parse_number("--keep-undesirable", keep_u);
  o.eval_fraction = parse_number("--eval-fraction", eval_fraction);
  o.max_error_rate = parse_number("--max-error-rate", max_error_rate);
  o.seed = static_cast<uint64_t>(seed);
  o.shuffle = !no_shuffle;
  o.append_eos = !no_eos;
  run_prepare(o);
  return 0;
}

}  // namespace kto::data_tools
