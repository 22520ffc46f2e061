// safetensors: bit-exact round trips for every dtype, ranged reads, sharded directories, and
// clear errors (naming the file and the tensor) for malformed files.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "kto/io/safetensors.h"
#include "kto/util/check.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using kto::io::DType;
using kto::io::SafetensorsReader;
using kto::io::SafetensorsSet;

namespace {

// Raw bytes of a tensor, to compare bit patterns (NaN payloads, -0.0, bf16 subnormals).
std::string raw(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()),
                     static_cast<size_t>(c.numel() * c.element_size()));
}

// A tensor of `dtype` whose bytes are a fixed pseudo-random pattern (every bit pattern of the
// dtype can occur, including NaNs and infinities for floats).
at::Tensor pattern_tensor(at::ScalarType dtype, std::vector<int64_t> shape, uint8_t seed) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  auto* bytes = static_cast<uint8_t*>(t.data_ptr());
  uint32_t state = seed * 2654435761u + 1;
  for (int64_t i = 0; i < t.numel() * t.element_size(); ++i) {
    state = state * 1664525u + 1013904223u;
    bytes[i] = static_cast<uint8_t>(state >> 24);
  }
  if (dtype == at::kBool) t = at::ne(t.view(at::kByte), 0);  // only 0/1 are valid bools
  return t;
}

// A safetensors file from a literal header and `data_bytes` bytes of zeros.
std::string craft(const std::string& header, size_t data_bytes, int64_t header_len_override = -1) {
  uint64_t len = header_len_override >= 0 ? static_cast<uint64_t>(header_len_override) : header.size();
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &len, 8);
  return bytes + header + std::string(data_bytes, '\0');
}

}  // namespace

TEST_CASE("safetensors round trip is bit-exact for every dtype", "[safetensors]") {
  kto::test::TempDir dir;
  const std::vector<at::ScalarType> types = {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong,
                                             at::kInt,    at::kShort, at::kChar, at::kByte,     at::kBool};
  kto::io::NamedTensors tensors;
  uint8_t seed = 1;
  for (at::ScalarType t : types) {
    tensors.emplace_back(std::string("t_") + c10::toString(t), pattern_tensor(t, {3, 5, 2}, seed++));
  }
  tensors.emplace_back("scalar", pattern_tensor(at::kFloat, {}, 99));
  tensors.emplace_back("empty", at::empty({0, 4}, at::kFloat));
  tensors.emplace_back("noncontiguous", at::arange(24, at::kFloat).view({4, 6}).t());
  const std::string path = dir.file("all.safetensors");
  kto::io::write_safetensors(path, tensors, {{"format", "pt"}, {"note", "round trip"}});

  SafetensorsReader reader(path);
  REQUIRE(reader.tensors().size() == tensors.size());
  CHECK(reader.metadata().at("note") == "round trip");
  for (const auto& [name, expected] : tensors) {
    const at::Tensor got = reader.read(name);
    INFO(name);
    CHECK(got.scalar_type() == expected.scalar_type());
    CHECK(got.sizes() == expected.sizes());
    CHECK(raw(got) == raw(expected));
  }
  // Data section starts 8-byte aligned, as the reference writer does.
  const std::string bytes = kto::test::read_bytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK((8 + header_len) % 8 == 0);
}

TEST_CASE("safetensors ranged reads return exactly the requested elements", "[safetensors]") {
  kto::test::TempDir dir;
  const at::Tensor w = at::arange(1000, at::kDouble).view({10, 100});
  const at::Tensor b = at::arange(7, at::kBFloat16);
  kto::io::write_safetensors(dir.file("r.safetensors"), {{"w", w}, {"b", b}});
  SafetensorsReader reader(dir.file("r.safetensors"));
  CHECK(at::equal(reader.read_range("w", 123, 456), at::arange(123, 123 + 456, at::kDouble)));
  CHECK(at::equal(reader.read_range("b", 6, 1), b.narrow(0, 6, 1)));
  CHECK(reader.read_range("w", 1000, 0).numel() == 0);
  CHECK_THROWS_WITH(reader.read_range("w", 990, 11),
                    Contains("r.safetensors") && Contains("'w'") && Contains("outside"));
  CHECK_THROWS_WITH(reader.read("nope"), Contains("r.safetensors") && Contains("no tensor 'nope'"));
}

TEST_CASE("sharded safetensors directories round trip through the index", "[safetensors]") {
  kto::test::TempDir dir;
  kto::io::NamedTensors tensors;
  for (int i = 0; i < 5; ++i)
    tensors.emplace_back("layer." + std::to_string(i), at::full({100}, i, at::kFloat));
  // 400 bytes per tensor, 900 per shard -> shards of 2, 2 and 1 tensors.
  const auto files = kto::io::write_safetensors_dir(dir.path(), tensors, 900, {{"format", "pt"}});
  REQUIRE(files.size() == 4);
  CHECK(files.back() == "model.safetensors.index.json");
  CHECK(files[0] == "model-00001-of-00003.safetensors");
  const SafetensorsSet set = SafetensorsSet::open_dir(dir.path());
  CHECK(set.names().size() == 5);
  for (const auto& [name, t] : tensors) CHECK(at::equal(set.read(name), t));
  CHECK(set.file_of("layer.4").path() == dir.file("model-00003-of-00003.safetensors"));

  // Rewriting as a single file removes the stale index so the directory stays consistent.
  kto::io::write_safetensors_dir(dir.path(), tensors, 1 << 20, {});
  CHECK(SafetensorsSet::open_dir(dir.path()).file_of("layer.0").path() == dir.file("model.safetensors"));
}

TEST_CASE("a sharded index that points at the wrong file is an error naming both", "[safetensors]") {
  kto::test::TempDir dir;
  kto::io::write_safetensors(dir.file("a.safetensors"), {{"x", at::zeros({2})}});
  kto::test::write_bytes(dir.file("model.safetensors.index.json"),
                         R"({"metadata": {}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors"}})");
  CHECK_THROWS_WITH(SafetensorsSet::open_dir(dir.path()), Contains("'y'") && Contains("a.safetensors"));
  kto::test::TempDir empty;
  CHECK_THROWS_WITH(SafetensorsSet::open_dir(empty.path()), Contains("model.safetensors"));
}

TEST_CASE("malformed safetensors files fail with the file and tensor named", "[safetensors]") {
  kto::test::TempDir dir;
  struct Case {
    const char* what;
    std::string bytes;
    std::vector<std::string> expected;  // substrings of the error
  };
  const std::string good = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  const std::vector<Case> cases = {
      {"too short", std::string("abc"), {"too short"}},
      {"header length past end", craft(good, 16, 1 << 20), {"header length", "past the end"}},
      {"truncated data", craft(good, 8), {"tensor 'a'", "past the end of the data"}},
      {"not JSON", craft("{not json", 0), {"not valid JSON"}},
      {"not an object", craft("[1,2]", 0), {"not a JSON object"}},
      {"unknown dtype",
       craft(R"({"a":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", 2),
       {"tensor 'a'", "unknown dtype 'F8'"}},
      {"shape/bytes mismatch",
       craft(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "needs 12 bytes", "span 8"}},
      {"overlap",
       craft(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
           12),
       {"'a'", "'b'", "overlap"}},
      {"offsets reversed",
       craft(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8),
       {"tensor 'a'", "end before"}},
      {"negative dim",
       craft(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
       {"tensor 'a'", "non-negative"}},
      {"missing offsets", craft(R"({"a":{"dtype":"F32","shape":[1]}})", 4), {"tensor 'a'", "data_offsets"}},
      {"bad metadata", craft(R"({"__metadata__":{"k":1}})", 0), {"__metadata__"}},
  };
  for (const Case& c : cases) {
    const std::string path =
        dir.file(std::string("bad_") + std::to_string(&c - cases.data()) + ".safetensors");
    kto::test::write_bytes(path, c.bytes);
    INFO(c.what);
    try {
      SafetensorsReader reader(path);
      FAIL("no error for " << c.what);
    } catch (const kto::Error& e) {
      const std::string message = e.what();
      CHECK_THAT(message, Contains(path));
      for (const std::string& part : c.expected) CHECK_THAT(message, Contains(part));
    }
  }
  CHECK_THROWS_WITH(SafetensorsReader(dir.file("missing.safetensors")),
                    Contains("missing.safetensors") && Contains("cannot open"));
}

TEST_CASE("dtype names map both ways", "[safetensors]") {
  DType d{};
  for (const char* name : {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}) {
    REQUIRE(kto::io::dtype_from_name(name, &d));
    CHECK(std::string(kto::io::dtype_name(d)) == name);
    CHECK(kto::io::from_scalar_type(kto::io::to_scalar_type(d)) == d);
  }
  CHECK_FALSE(kto::io::dtype_from_name("F8_E4M3", &d));
  CHECK_THROWS_AS(kto::io::from_scalar_type(at::kComplexFloat), kto::Error);
}
