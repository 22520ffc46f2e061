// bench_tokenizer: single-thread encode throughput (tokens/s, MB/s) of kto's tokenizers on the
// Anthropic HH-RLHF transcripts (both sides of every pair), as `kto-data prepare` runs them.
//
// Usage: bench_tokenizer [--data FILE.jsonl.gz] [--tokenizer PATH]... [--reps N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "kto/util/cli.h"
#include "prepare/line_reader.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  return kto::cli::run_main("bench_tokenizer", [&]() -> int {
    std::string data =
        std::string(KTO_SOURCE_DIR) + "/tests/fixtures/data/hh-rlhf/harmless-base/test.jsonl.gz";
    std::vector<std::string> tokenizers;
    int64_t reps = 3;
    kto::cli::Args args("bench_tokenizer", "Single-thread encode throughput on HH-RLHF transcripts.");
    args.option("--data", &data, "FILE",
                "JSONL(.gz) with chosen/rejected strings (default: bundled HH-RLHF test)")
        .list("--tokenizer", &tokenizers, "PATH",
              "tokenizer to time (default: the bundled GPT-NeoX and Llama 2)")
        .option("--reps", &reps, "N", "timed passes, best reported (default 3)");
    if (!args.parse(argc, argv)) return 0;
    if (tokenizers.empty()) {
      tokenizers = {std::string(KTO_SOURCE_DIR) + "/tests/fixtures/tokenizers/gpt-neox-20b/tokenizer.json",
                    std::string(KTO_SOURCE_DIR) + "/tests/fixtures/tokenizers/llama2/tokenizer.model"};
    }
    std::vector<std::string> texts;
    size_t bytes = 0;
    kto::data_tools::LineReader reader(data);
    std::string line;
    while (reader.next(line)) {
      const auto row = nlohmann::json::parse(line);
      for (const char* key : {"chosen", "rejected"}) {
        texts.push_back(row.at(key).get<std::string>());
        bytes += texts.back().size();
      }
    }
    std::printf("%zu texts, %.1f MB of UTF-8 from %s; 1 thread\n\n", texts.size(), bytes / 1e6, data.c_str());
    std::printf("%-16s %10s %12s %14s %10s\n", "tokenizer", "tokens", "seconds", "tokens/s", "MB/s");
    for (const std::string& path : tokenizers) {
      const auto tok = kto::tok::load_tokenizer(path);
      double best = 1e30;
      size_t tokens = 0;
      for (int64_t r = 0; r < reps; ++r) {
        tokens = 0;
        const auto t0 = std::chrono::steady_clock::now();
        for (const std::string& t : texts) tokens += tok->encode(t, false).size();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::printf("%-16s %10zu %12.3f %14.0f %10.2f\n", tok->kind(), tokens, best, tokens / best,
                  bytes / best / 1e6);
    }
    return 0;
  });
}
