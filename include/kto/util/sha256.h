// SHA-256 of bytes and files (OpenSSL), as lowercase hex: tokenizer identities in datasets,
// per-shard checksums in checkpoints.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace kto {

std::string sha256_hex(const void* data, size_t size);
// Streams the file; throws kto::Error naming the path.
std::string sha256_file(const std::string& path);

// Incremental hashing.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  std::string hex_digest();  // finishes the hash

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kto
