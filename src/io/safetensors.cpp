#include "kto/io/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "kto/util/check.h"
#include "kto/util/files.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors is little-endian; kto reads it without byte swapping");

namespace kto::io {
namespace {

using detail::str_cat;
using json = nlohmann::json;

// The safetensors reference implementation refuses headers above 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeEntry {
  DType dtype;
  const char* name;
  int64_t size;
  at::ScalarType scalar;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8, at::kDouble}, {DType::F32, "F32", 4, at::kFloat},
    {DType::F16, "F16", 2, at::kHalf},   {DType::BF16, "BF16", 2, at::kBFloat16},
    {DType::I64, "I64", 8, at::kLong},   {DType::I32, "I32", 4, at::kInt},
    {DType::I16, "I16", 2, at::kShort},  {DType::I8, "I8", 1, at::kChar},
    {DType::U8, "U8", 1, at::kByte},     {DType::BOOL, "BOOL", 1, at::kBool},
};

const DTypeEntry& entry(DType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  KTO_CHECK(false, "unhandled DType ", static_cast<int>(dtype));
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? "," : "") + std::to_string(shape[i]);
  return text + "]";
}

}  // namespace

const char* dtype_name(DType dtype) { return entry(dtype).name; }
int64_t dtype_size(DType dtype) { return entry(dtype).size; }
at::ScalarType to_scalar_type(DType dtype) { return entry(dtype).scalar; }

bool dtype_from_name(const std::string& name, DType* out) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

DType from_scalar_type(at::ScalarType type) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.scalar == type) return e.dtype;
  }
  throw Error(str_cat("safetensors: unsupported tensor dtype ", c10::toString(type)));
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Reader

SafetensorsReader::SafetensorsReader(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error(str_cat(path_, ": cannot open: ", std::strerror(errno)));
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw Error(str_cat(path_, ": cannot stat: ", std::strerror(errno)));
    file_size_ = static_cast<uint64_t>(st.st_size);
    parse_header();
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

SafetensorsReader::SafetensorsReader(SafetensorsReader&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      file_size_(other.file_size_),
      data_start_(other.data_start_),
      tensors_(std::move(other.tensors_)),
      index_(std::move(other.index_)),
      metadata_(std::move(other.metadata_)) {}

SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    file_size_ = other.file_size_;
    data_start_ = other.data_start_;
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

void SafetensorsReader::parse_header() {
  auto fail = [&](const std::string& what) -> Error { return Error(path_ + ": " + what); };
  if (file_size_ < 8) {
    throw fail(str_cat("not a safetensors file: ", file_size_, " bytes, too short for the header"));
  }
  uint64_t header_len = 0;
  read_bytes(0, 8, &header_len, "");
  if (header_len > file_size_ - 8) {
    throw fail(str_cat("header length ", header_len, " runs past the end of the file (", file_size_,
                       " bytes): truncated or not a safetensors file"));
  }
  if (header_len > kMaxHeaderBytes) {
    throw fail(str_cat("header length ", header_len, " exceeds the 100 MB limit"));
  }
  std::string text(header_len, '\0');
  read_bytes(8, header_len, text.data(), "");
  data_start_ = 8 + header_len;
  const uint64_t data_size = file_size_ - data_start_;

  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    throw fail(str_cat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) throw fail("header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& value = it.value();
    if (name == "__metadata__") {
      if (!value.is_object()) throw fail("__metadata__ is not an object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string()) throw fail("__metadata__['" + m.key() + "'] is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { return fail("tensor '" + name + "': " + what); };
    if (!value.is_object()) throw bad("entry is not an object");
    const auto dtype_it = value.find("dtype");
    const auto shape_it = value.find("shape");
    const auto offsets_it = value.find("data_offsets");
    if (dtype_it == value.end() || !dtype_it->is_string()) throw bad("missing or non-string 'dtype'");
    if (shape_it == value.end() || !shape_it->is_array()) throw bad("missing or non-array 'shape'");
    if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      throw bad("'data_offsets' must be an array [begin, end]");
    }
    TensorInfo info;
    info.name = name;
    if (!dtype_from_name(dtype_it->get<std::string>(), &info.dtype)) {
      throw bad("unknown dtype '" + dtype_it->get<std::string>() +
                "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    }
    uint64_t bytes = static_cast<uint64_t>(dtype_size(info.dtype));
    for (const json& d : *shape_it) {
      if (!d.is_number_unsigned()) throw bad("shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (__builtin_mul_overflow(bytes, dim, &bytes)) throw bad("shape overflows 64 bits");
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const json& o : *offsets_it) {
      if (!o.is_number_unsigned()) throw bad("data_offsets must be non-negative integers");
    }
    info.begin = (*offsets_it)[0].get<uint64_t>();
    info.end = (*offsets_it)[1].get<uint64_t>();
    if (info.end < info.begin) {
      throw bad(str_cat("data_offsets [", info.begin, ", ", info.end, "] end before they begin"));
    }
    if (info.end > data_size) {
      throw bad(str_cat("data_offsets [", info.begin, ", ", info.end, "] run past the end of the data (",
                        data_size, " bytes): truncated file?"));
    }
    if (info.end - info.begin != bytes) {
      throw bad(str_cat("shape ", shape_text(info.shape), " ", dtype_name(info.dtype), " needs ", bytes,
                        " bytes but data_offsets span ", info.end - info.begin));
    }
    tensors_.push_back(std::move(info));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < tensors_.size(); ++i) {
    const TensorInfo& prev = tensors_[i - 1];
    const TensorInfo& cur = tensors_[i];
    if (cur.begin < prev.end) {
      throw fail(str_cat("tensors '", prev.name, "' [", prev.begin, ", ", prev.end, ") and '", cur.name,
                         "' [", cur.begin, ", ", cur.end, ") overlap"));
    }
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

void SafetensorsReader::read_bytes(uint64_t offset, uint64_t size, void* out,
                                   const std::string& tensor) const {
  read_exact(fd_, offset, size, out, tensor.empty() ? path_ : path_ + ": tensor '" + tensor + "'");
}

const TensorInfo* SafetensorsReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsReader::info(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) throw Error(path_ + ": no tensor '" + name + "'");
  return *info;
}

at::Tensor SafetensorsReader::read(const std::string& name) const {
  const TensorInfo& meta = info(name);
  at::Tensor out = at::empty(meta.shape, at::TensorOptions().dtype(to_scalar_type(meta.dtype)));
  read_bytes(data_start_ + meta.begin, meta.end - meta.begin, out.data_ptr(), name);
  return out;
}

at::Tensor SafetensorsReader::read_range(const std::string& name, int64_t first, int64_t count) const {
  const TensorInfo& meta = info(name);
  if (first < 0 || count < 0 || first + count > meta.numel()) {
    throw Error(str_cat(path_, ": tensor '", name, "': element range [", first, ", ", first + count,
                        ") outside its ", meta.numel(), " elements"));
  }
  const int64_t elem = dtype_size(meta.dtype);
  at::Tensor out = at::empty({count}, at::TensorOptions().dtype(to_scalar_type(meta.dtype)));
  read_bytes(data_start_ + meta.begin + static_cast<uint64_t>(first * elem),
             static_cast<uint64_t>(count * elem), out.data_ptr(), name);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writer

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::vector<at::Tensor> data;
  data.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    KTO_CHECK(tensor.defined(), path, ": tensor '", name, "' is undefined");
    if (header.contains(name) || name == "__metadata__") {
      throw Error(str_cat(path, ": duplicate or reserved tensor name '", name, "'"));
    }
    at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
    const DType dtype = from_scalar_type(cpu.scalar_type());
    const uint64_t bytes = static_cast<uint64_t>(cpu.numel()) * dtype_size(dtype);
    header[name] = {{"dtype", dtype_name(dtype)},
                    {"shape", cpu.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(cpu));
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, like the reference writer.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');

  AtomicFile file(path);
  const uint64_t header_len = text.size();
  file.write(&header_len, sizeof(header_len));
  file.write(text.data(), text.size());
  for (const at::Tensor& t : data) {
    file.write(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  file.commit();
}

}  // namespace kto::io
