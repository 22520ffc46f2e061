// safetensors reader and writer (https://github.com/huggingface/safetensors, format v0.x).
//
// File layout: u64 little-endian header length N, N bytes of JSON header
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data bytes; offsets are relative to the start of the data.
//
// The reader parses and validates the whole header when it opens a file (offsets inside the
// data, no overlaps, shape x dtype size == byte span, known dtypes), so a malformed file fails
// at open with an error naming the file and the tensor, never later with a crash. Tensor data is
// read with pread on demand: a whole tensor, or a range of its flat elements (a rank reads only
// the slice it owns). Dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kto::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType dtype);
// Returns false when `name` is not a supported safetensors dtype.
bool dtype_from_name(const std::string& name, DType* out);
int64_t dtype_size(DType dtype);
at::ScalarType to_scalar_type(DType dtype);
// Throws kto::Error for scalar types safetensors cannot hold here (complex, quantized, ...).
DType from_scalar_type(at::ScalarType type);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
  int64_t numel() const;
};

class SafetensorsReader {
 public:
  explicit SafetensorsReader(std::string path);
  ~SafetensorsReader();
  SafetensorsReader(SafetensorsReader&& other) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&& other) noexcept;
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  // In the order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  // Throws kto::Error naming the file and the tensor when absent.
  const TensorInfo& info(const std::string& name) const;

  // The whole tensor, in its stored dtype and shape.
  at::Tensor read(const std::string& name) const;
  // Flat elements [first, first + count) of the tensor, as a 1-D tensor in its stored dtype.
  at::Tensor read_range(const std::string& name, int64_t first, int64_t count) const;

 private:
  void parse_header();
  void read_bytes(uint64_t offset, uint64_t size, void* out, const std::string& tensor) const;

  std::string path_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes `tensors` (CPU or not; made contiguous) in the given order. The file appears
// atomically: it is written under a temporary name in the same directory and renamed.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A set of safetensors files that together hold one checkpoint: a Hugging Face directory with
// `model.safetensors`, or `model.safetensors.index.json` naming the shard of every tensor.
class SafetensorsSet {
 public:
  // `dir` holds model.safetensors.index.json or model.safetensors (checked in that order).
  static SafetensorsSet open_dir(const std::string& dir);
  // One file.
  static SafetensorsSet open_file(const std::string& path);

  std::vector<std::string> names() const;
  const TensorInfo* find(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  const SafetensorsReader& file_of(const std::string& name) const;
  at::Tensor read(const std::string& name) const { return file_of(name).read(name); }
  at::Tensor read_range(const std::string& name, int64_t first, int64_t count) const {
    return file_of(name).read_range(name, first, count);
  }
  // A description for error messages: the directory or file.
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::vector<std::unique_ptr<SafetensorsReader>> files_;
  std::unordered_map<std::string, size_t> file_of_tensor_;
};

// Writes `dir`/model.safetensors.index.json for a weight set split over several files.
void write_safetensors_index(const std::string& dir,
                             const std::vector<std::pair<std::string, std::string>>& weight_map,
                             int64_t total_bytes);

// Writes a Hugging Face weight set into `dir`: `model.safetensors` when the tensors fit into
// `max_shard_bytes`, else `model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json`.
// Returns the file names written.
std::vector<std::string> write_safetensors_dir(const std::string& dir, const NamedTensors& tensors,
                                               int64_t max_shard_bytes,
                                               const std::map<std::string, std::string>& metadata);

}  // namespace kto::io
