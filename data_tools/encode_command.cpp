// kto-data encode: the tokenizer as a filter, to check it against the reference tokenizers.
//   stdin:  one JSON object per line with a "text" string
//   stdout: one JSON object per line, {"ids": [...]}, in input order
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "kto/util/cli.h"
#include "tokenizer/tokenizer.h"

namespace kto::data_tools {

int encode_command(int argc, char** argv) {
  std::string tokenizer_path;
  bool add_special = false;
  cli::Args args(
      "kto-data encode",
      "Tokenizes JSONL lines {\"text\": ...} read from stdin and writes {\"ids\": [...]} lines to\n"
      "stdout, in order. Malformed lines are errors naming the line number.");
  args.option("--tokenizer", &tokenizer_path, "PATH",
              "tokenizer.json, tokenizer.model, or a directory with one", cli::required)
      .flag("--add-special-tokens", &add_special, "apply the tokenizer's special-token rule (e.g. BOS)");
  if (!args.parse(argc, argv, 2)) return 0;
  const auto tokenizer = tok::load_tokenizer(tokenizer_path);

  std::ios::sync_with_stdio(false);
  std::string line, out;
  int64_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (line.empty()) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(detail::str_cat("stdin:", line_no, ": not valid JSON: ", e.what()));
    }
    if (!row.is_object() || !row.contains("text") || !row["text"].is_string()) {
      throw Error(detail::str_cat("stdin:", line_no, ": expected an object with a string \"text\""));
    }
    const std::vector<int32_t> ids =
        tokenizer->encode(row["text"].get_ref<const std::string&>(), add_special);
    out = "{\"ids\": [";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ", ";
      out += std::to_string(ids[i]);
    }
    out += "]}\n";
    std::cout << out;
  }
  std::cout.flush();
  return 0;
}

}  // namespace kto::data_tools
