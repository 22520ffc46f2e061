// kto-data inspect: what a dataset file holds.
#include <algorithm>
#include <cstdio>

#include "commands.h"
#include "kto/data/dataset.h"
#include "kto/util/cli.h"
#include "kto/util/files.h"
#include "tokenizer/tokenizer.h"

namespace kto::data_tools {

int inspect_command(int argc, char** argv) {
  std::vector<std::string> files;
  std::string tokenizer_path;
  int64_t show = 3;
  cli::Args args("kto-data inspect",
                 "Prints a dataset's schema version, attributes, class counts, a length histogram and a few\n"
                 "examples (decoded with --tokenizer, else as ids).");
  args.list("--file", &files, "FILE.h5", "dataset file or shard (repeatable)")
      .option("--tokenizer", &tokenizer_path, "PATH", "tokenizer to decode examples with")
      .option("--examples", &show, "N", "examples to print (default 3)");
  if (!args.parse(argc, argv, 2)) return 0;
  if (files.empty()) throw cli::UsageError("kto-data inspect: give --file FILE.h5");
  const auto ds = data::Dataset::open(files);
  const data::DatasetAttributes& a = ds->attributes();
  std::printf("dataset: %zu file(s), format version %ld\n", files.size(),
              static_cast<long>(a.format_version));
  std::printf("tokenizer: %s (%s), sha256 %s, vocab %ld; bos %ld eos %ld pad %ld\n", a.tokenizer_name.c_str(),
              a.tokenizer_kind.c_str(), a.tokenizer_sha256.c_str(), static_cast<long>(a.tokenizer_vocab_size),
              static_cast<long>(a.bos_id), static_cast<long>(a.eos_id), static_cast<long>(a.pad_id));
  std::printf("split: %s; max_length %ld, max_prompt_length %ld; created %s by %s\nsource: %s\n",
              a.split.c_str(), static_cast<long>(a.max_length), static_cast<long>(a.max_prompt_length),
              a.created.c_str(), a.producer.c_str(), a.source.c_str());
  std::printf("examples: %ld (desirable %ld, undesirable %ld), tokens %ld%s\n", static_cast<long>(ds->size()),
              static_cast<long>(ds->count(true)), static_cast<long>(ds->count(false)),
              static_cast<long>(ds->num_tokens()),
              ds->has_reference_logps() ? ", with reference log-probs" : "");
  if (a.paired) std::printf("paired: examples 2k (desirable) and 2k+1 (undesirable) are a pair\n");
  if (!a.control_tokens.empty()) std::printf("control tokens (CSFT): %s\n", a.control_tokens.c_str());
  // Length histogram in powers of two.
  std::vector<int64_t> buckets(32, 0);
  int64_t longest = 0;
  for (int64_t i = 0; i < ds->size(); ++i) {
    const int64_t len = ds->length(i);
    longest = std::max(longest, len);
    int b = 0;
    while ((int64_t{1} << (b + 1)) <= len) ++b;
    ++buckets[static_cast<size_t>(b)];
  }
  std::printf("length histogram (tokens per example, longest %ld):\n", static_cast<long>(longest));
  for (size_t b = 0; b < buckets.size(); ++b) {
    if (buckets[b] == 0) continue;
    const int bar =
        static_cast<int>(50.0 * static_cast<double>(buckets[b]) / static_cast<double>(ds->size()) + 0.5);
    std::printf("  [%6ld, %6ld) %7ld %s\n", 1L << b, 1L << (b + 1), static_cast<long>(buckets[b]),
                std::string(static_cast<size_t>(bar), '#').c_str());
  }
  std::unique_ptr<tok::Tokenizer> tok;
  if (!tokenizer_path.empty()) tok = tok::load_tokenizer(tokenizer_path);
  for (int64_t i = 0; i < std::min<int64_t>(show, ds->size()); ++i) {
    const data::Example e = ds->read(i);
    const std::vector<int32_t> prompt(e.tokens.begin(), e.tokens.begin() + e.prompt_len);
    const std::vector<int32_t> completion(e.tokens.begin() + e.prompt_len, e.tokens.end());
    std::printf("\n--- example %ld: %s, %d prompt + %ld completion tokens\n", static_cast<long>(i),
                e.desirable ? "desirable" : "undesirable", e.prompt_len,
                static_cast<long>(e.completion_len()));
    if (tok) {
      std::printf("[prompt] %s\n[completion] %s\n", tok->decode(prompt).c_str(),
                  tok->decode(completion).c_str());
    } else {
      std::string ids;
      for (int32_t t : e.tokens) ids += std::to_string(t) + " ";
      std::printf("[ids] %s\n", ids.c_str());
    }
  }
  return 0;
}

}  // namespace kto::data_tools
