// Tokenizers for kto-data, in C++: Hugging Face `tokenizer.json` (byte-level BPE) and
// SentencePiece `tokenizer.model`. Both reproduce the reference implementations' ids exactly
// (tests/fixtures/tokenizers/cases.jsonl).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kto::tok {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text` (valid UTF-8). `add_special_tokens` applies the tokenizer's own rule:
  // the post-processor template of a tokenizer.json, BOS for SentencePiece.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const = 0;
  virtual int64_t vocab_size() const = 0;
  // -1 when the tokenizer has none.
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  // The id of a token string (a special token such as "</s>"), or -1.
  virtual int32_t token_to_id(const std::string& token) const = 0;
  // "hf-bpe" or "sentencepiece".
  virtual const char* kind() const = 0;

  // The file it was loaded from and its SHA-256 (recorded in every dataset).
  const std::string& path() const { return path_; }
  const std::string& sha256() const { return sha256_; }

 protected:
  std::string path_;
  std::string sha256_;
};

// Loads `path`: a tokenizer.json (HF), a tokenizer.model (SentencePiece), or a directory holding
// one of them (tokenizer.json preferred). Special-token names come from a tokenizer_config.json
// beside it when present. Errors name the file and the unsupported component.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path);

}  // namespace kto::tok
