// The pipeline stages of a Hugging Face tokenizer.json, built from its JSON: normalizers,
// pre-tokenizers, post-processors and decoders. Each type kto does not implement is an error
// naming the component and its type, never a silent difference in ids.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace kto::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string apply(std::string_view text) const = 0;
};

// Turns pieces of text into smaller pieces (each later becomes one BPE word).
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void split(std::vector<std::string>& pieces) const = 0;
};

// Adds special tokens around an encoded sequence.
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void apply(std::vector<int32_t>& ids) const = 0;
  // Ids it adds (for the BOS/EOS guess when no tokenizer_config.json exists).
  virtual std::vector<int32_t> prefix() const { return {}; }
  virtual std::vector<int32_t> suffix() const { return {}; }
};

// Token strings -> text.
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual std::string decode(const std::vector<std::string>& tokens) const = 0;
};

// `where` names the file for error messages. A JSON null gives nullptr (no stage).
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& spec, const std::string& where);
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& spec, const std::string& where);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& spec, const std::string& where);

}  // namespace kto::tok
