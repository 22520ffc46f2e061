// Text for kto-ckpt's commands: a model's tokenizer run by kto-data encode / decode in child
// processes (the C++ tokenizers that prepare the training data; SentencePiece's protobuf stays
// out of this process, which holds LibTorch's).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kto/util/coprocess.h"

namespace kto::apps {

// The tokenizer of a model directory: the directory when it has tokenizer.json or
// tokenizer.model, else "".
std::string model_tokenizer(const std::string& dir);

class TextCodec {
 public:
  // `tokenizer`: a file or directory; `template_name` / `template_file`: kto-data encode's.
  TextCodec(const std::string& tokenizer, const std::string& template_name = "",
            const std::string& template_file = "");
  // A prompt (text or messages) rendered as kto-data prepare renders prompts, tokenized.
  std::vector<int64_t> encode_prompt(const nlohmann::json& prompt);
  // Text as it is, tokenized with the tokenizer's special-token rule.
  std::vector<int64_t> encode_text(const std::string& text);
  // Special tokens left out.
  std::string decode(const std::vector<int64_t>& ids);

 private:
  Coprocess encoder_, decoder_;
};

}  // namespace kto::apps
