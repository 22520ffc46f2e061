// Text for the tools that hold LibTorch (kto-ckpt generate / forward --text, kto-report's
// samples): a tokenizer run by kto-data encode / decode in child processes, started on first
// use. Those are the C++ tokenizers that prepare the training data, and SentencePiece's protobuf
// stays out of the process that holds LibTorch's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kto/util/coprocess.h"

namespace kto {

// The tokenizer of a model directory: the directory when it has tokenizer.json or
// tokenizer.model, else "".
std::string model_tokenizer(const std::string& dir);

class TextCodec {
 public:
  // `tokenizer`: a file or directory; `template_name` / `template_file`: kto-data encode's.
  explicit TextCodec(std::string tokenizer, std::string template_name = "", std::string template_file = "");
  ~TextCodec();
  // A prompt (text or messages) rendered as kto-data prepare renders prompts, tokenized.
  std::vector<int64_t> encode_prompt(const nlohmann::json& prompt);
  // Text as it is, tokenized with the tokenizer's special-token rule.
  std::vector<int64_t> encode_text(const std::string& text);
  // Special tokens left out; ids past the tokenizer's vocabulary become U+FFFD.
  std::string decode(const std::vector<int64_t>& ids);

 private:
  Coprocess& encoder();
  std::string tokenizer_, template_name_, template_file_;
  std::unique_ptr<Coprocess> encoder_, decoder_;
};

// Calls each(row, line) for every non-blank line of a JSONL file, parsed with parse_json (errors
// name "path:line"). Throws kto::Error naming the file when it cannot be opened.
void for_each_jsonl_line(const std::string& path,
                         const std::function<void(const nlohmann::json&, int64_t)>& each);

}  // namespace kto
