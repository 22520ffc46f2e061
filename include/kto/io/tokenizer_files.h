// The tokenizer files that travel with a model: found in a Hugging Face directory or given as
// one file, matched against a dataset's tokenizer (the SHA-256 of the file it was prepared with),
// copied into exported model directories (kto-train's final/, kto-ckpt export).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace kto::io {

struct TokenizerFile {
  std::string source;  // path to copy from
  std::string name;    // file name in the output directory
};

// Those of the tokenizer and generation files (tokenizer.json, tokenizer.model,
// tokenizer_config.json, special_tokens_map.json, added_tokens.json, generation_config.json)
// present in `dir`.
std::vector<TokenizerFile> tokenizer_files_in(const std::string& dir);

// `path` is a directory (its tokenizer files; a directory without tokenizer.json or
// tokenizer.model is an error) or one tokenizer file: a *.json file goes in as tokenizer.json,
// a *.model file as tokenizer.model, anything else is an error. Throws kto::Error naming `path`.
std::vector<TokenizerFile> tokenizer_files_at(const std::string& path);

// The vocabulary files among `files` (tokenizer.json, tokenizer.model) with their SHA-256, as a
// dataset records it: (path, sha256).
std::vector<std::pair<std::string, std::string>> tokenizer_hashes(const std::vector<TokenizerFile>& files);

// Copies the files into `dir` (created if needed); returns how many.
int copy_tokenizer_files(const std::vector<TokenizerFile>& files, const std::string& dir);

}  // namespace kto::io
