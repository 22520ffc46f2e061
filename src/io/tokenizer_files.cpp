#include "kto/io/tokenizer_files.h"

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/sha256.h"

namespace kto::io {

namespace {

constexpr const char* kFiles[] = {"tokenizer.json",          "tokenizer.model",   "tokenizer_config.json",
                                  "special_tokens_map.json", "added_tokens.json", "generation_config.json"};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_vocabulary(const std::string& name) { return name == "tokenizer.json" || name == "tokenizer.model"; }

}  // namespace

std::vector<TokenizerFile> tokenizer_files_in(const std::string& dir) {
  std::vector<TokenizerFile> files;
  if (dir.empty()) return files;
  for (const char* f : kFiles) {
    const std::string path = join_path(dir, f);
    if (path_exists(path)) files.push_back({path, f});
  }
  return files;
}

std::vector<TokenizerFile> tokenizer_files_at(const std::string& path) {
  if (is_directory(path)) {
    std::vector<TokenizerFile> files = tokenizer_files_in(path);
    for (const TokenizerFile& f : files) {
      if (is_vocabulary(f.name)) return files;
    }
    throw Error(path + ": a directory without tokenizer.json or tokenizer.model");
  }
  if (!path_exists(path)) throw Error(path + ": no such tokenizer file or directory");
  if (ends_with(path, ".json")) return {{path, "tokenizer.json"}};
  if (ends_with(path, ".model")) return {{path, "tokenizer.model"}};
  throw Error(path +
              ": not a tokenizer file (expected a tokenizer.json or a SentencePiece .model) or directory");
}

std::vector<std::pair<std::string, std::string>> tokenizer_hashes(const std::vector<TokenizerFile>& files) {
  std::vector<std::pair<std::string, std::string>> hashes;
  for (const TokenizerFile& f : files) {
    if (is_vocabulary(f.name)) hashes.emplace_back(f.source, sha256_file(f.source));
  }
  return hashes;
}

int copy_tokenizer_files(const std::vector<TokenizerFile>& files, const std::string& dir) {
  if (!files.empty()) make_directories(dir);
  for (const TokenizerFile& f : files) copy_file(f.source, join_path(dir, f.name));
  return static_cast<int>(files.size());
}

}  // namespace kto::io
