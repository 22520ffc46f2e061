// The dataset file (writer, validating reader) and the sampler. (No LibTorch in this binary:
// libsentencepiece and LibTorch carry clashing protobuf copies; batches are tested in
// test_batch.cpp.)
#include <algorithm>
#include <catch2/catch.hpp>
#include <climits>
#include <cstdio>
#include <map>
#include <set>

#include "kto/data/dataset.h"
#include "kto/data/sampler.h"
#include "kto/util/check.h"
#include "kto/util/check_h5.h"
#include "kto/util/hdf5.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using kto::data::Dataset;
using kto::data::DatasetAttributes;
using kto::data::DatasetWriter;
using kto::data::Example;

namespace {

// Example i: prompt of (i % 3) + 1 tokens, completion of (i % 4) + 1 tokens, ids encode i.
std::vector<int32_t> tokens_of(int i) {
  std::vector<int32_t> t;
  for (int k = 0; k < i % 3 + 1; ++k) t.push_back(1000 + i);
  for (int k = 0; k < i % 4 + 1; ++k) t.push_back(2000 + i);
  return t;
}

std::string write_dataset(const std::string& path, int n, const std::string& sha = "abc") {
  DatasetAttributes a;
  a.tokenizer_sha256 = sha;
  a.pad_id = 0;
  DatasetWriter w(path, a);
  for (int i = 0; i < n; ++i) w.add(tokens_of(i), i % 3 + 1, i % 5 != 0);
  w.finish();
  return path;
}

// Rewrites one integer dataset of a file in place (to craft invalid files).
void poke(const std::string& path, const char* name, hid_t type, const void* values) {
  kto::h5::Handle f(KTO_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)));
  kto::h5::Handle d(KTO_H5_CHECK(H5Dopen2(f, name, H5P_DEFAULT)));
  KTO_H5_CHECK(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values));
}

std::string open_error(const std::vector<std::string>& paths, int64_t vocab = 0) {
  try {
    Dataset::open(paths, vocab);
  } catch (const kto::Error& e) {
    return e.what();
  }
  return "opened";
}

}  // namespace

TEST_CASE("dataset files round-trip and read examples by hyperslab", "[data]") {
  kto::test::TempDir tmp;
  const auto a = write_dataset(tmp.file("a.h5"), 7);
  const auto b = write_dataset(tmp.file("b.h5"), 5);
  const auto ds = Dataset::open({a, b}, 3000);
  REQUIRE(ds->size() == 12);
  int64_t tokens = 0;
  for (int64_t i = 0; i < 12; ++i) {
    const int local = static_cast<int>(i < 7 ? i : i - 7);
    const Example e = ds->read(i);
    CHECK(e.index == i);
    CHECK(e.tokens == tokens_of(local));
    CHECK(e.prompt_len == local % 3 + 1);
    CHECK(e.desirable == (local % 5 != 0));
    CHECK(ds->length(i) == static_cast<int64_t>(e.tokens.size()));
    tokens += static_cast<int64_t>(e.tokens.size());
  }
  CHECK(ds->num_tokens() == tokens);
  CHECK(ds->count(false) == 2 + 1);
  const auto attrs = kto::data::read_attributes(a);
  CHECK(attrs.n_examples == 7);
  CHECK(attrs.n_undesirable == 2);
  CHECK(attrs.max_token_id == 2006);
  CHECK(attrs.format_version == 1);
}

TEST_CASE("invalid dataset files are rejected naming the file and the problem", "[data]") {
  kto::test::TempDir tmp;
  auto fresh = [&](const std::string& name) { return write_dataset(tmp.file(name), 6); };
  CHECK_THAT(open_error({fresh("v.h5")}, 2000),
             Contains("v.h5") && Contains("token id 2005") && Contains("vocabulary of 2000"));
  CHECK_THAT(open_error({fresh("a.h5"), write_dataset(tmp.file("other.h5"), 3, "zzz")}),
             Contains("other.h5") && Contains("different tokenizer"));

  const std::string lab = fresh("label.h5");
  const int8_t labels[6] = {1, 0, 2, 1, 1, 0};
  poke(lab, "label", H5T_NATIVE_INT8, labels);
  CHECK_THAT(open_error({lab}), Contains("label.h5") && Contains("label of example 2 is 2"));

  const std::string off = fresh("offsets.h5");
  std::vector<int64_t> offsets = {0, 2, 6, 5, 17, 20, 25};  // true ends: 2 6 12 17 20 25
  poke(off, "offsets", H5T_NATIVE_INT64, offsets.data());
  CHECK_THAT(open_error({off}), Contains("offsets.h5") && Contains("not increasing at example 2"));

  const std::string pl = fresh("prompt.h5");
  const int32_t prompt_len[6] = {1, 2, 3, 1, 2, 3};      // valid: each leaves a completion
  const int32_t bad_prompt_len[6] = {2, 2, 3, 1, 2, 3};  // example 0: prompt covers all 2 tokens
  poke(pl, "prompt_len", H5T_NATIVE_INT32, prompt_len);
  CHECK(open_error({pl}) == "opened");
  poke(pl, "prompt_len", H5T_NATIVE_INT32, bad_prompt_len);
  CHECK_THAT(open_error({pl}),
             Contains("prompt.h5") && Contains("example 0 has prompt_len 2 of 2") && Contains("non-empty"));

  const std::string ver = fresh("version.h5");
  {
    kto::h5::Handle f(KTO_H5_CHECK(H5Fopen(ver.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)));
    kto::h5::Handle attr(KTO_H5_CHECK(H5Aopen(f, "format_version", H5P_DEFAULT)));
    const int64_t v = 7;
    KTO_H5_CHECK(H5Awrite(attr, H5T_NATIVE_INT64, &v));
  }
  CHECK_THAT(open_error({ver}), Contains("version.h5") && Contains("format_version 7"));

  const std::string missing = fresh("missing.h5");
  {
    kto::h5::Handle f(KTO_H5_CHECK(H5Fopen(missing.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)));
    KTO_H5_CHECK(H5Ldelete(f, "prompt_len", H5P_DEFAULT));
  }
  CHECK_THAT(open_error({missing}), Contains("missing.h5") && Contains("missing dataset prompt_len"));
  kto::test::write_bytes(tmp.file("junk.h5"), "not hdf5 at all");
  CHECK_THAT(open_error({tmp.file("junk.h5")}), Contains("junk.h5") && Contains("not an HDF5 file"));
  CHECK_THAT(open_error({tmp.file("nope.h5")}), Contains("nope.h5") && Contains("no such"));
}

TEST_CASE("a dataset writer that does not finish leaves no file", "[data]") {
  kto::test::TempDir tmp;
  {
    DatasetWriter w(tmp.file("partial.h5"), DatasetAttributes{});
    w.add({1, 2, 3}, 1, true);
  }
  std::string listing;
  kto::test::run_command("ls -A '" + tmp.path() + "'", &listing);
  CHECK(listing.empty());
  DatasetWriter w(tmp.file("x.h5"), DatasetAttributes{});
  CHECK_THROWS_WITH(w.add({1}, 1, true), Contains("completion must be non-empty"));
}

TEST_CASE("sampler: each epoch covers the dataset exactly once, at world sizes 1, 2 and 4",
          "[data][sampler]") {
  const int64_t n = 103;  // not a multiple of any global batch below: batches straddle epochs
  for (int world : {1, 2, 4}) {
    for (const auto& [micro, accum] : {std::pair<int64_t, int64_t>{2, 1}, {3, 2}, {4, 3}}) {
      std::vector<kto::data::BatchSampler> ranks;
      for (int r = 0; r < world; ++r) ranks.emplace_back(n, 42, micro, accum, world, r);
      std::map<int64_t, std::multiset<int64_t>> seen;  // epoch -> example ids
      const int64_t steps = 3 * n / ranks[0].global_batch() + 1;
      for (int64_t s = 0; s < steps; ++s) {
        for (auto& sampler : ranks) {
          const auto step = sampler.next_step();
          REQUIRE(step.size() == static_cast<size_t>(accum));
          for (const auto& mb : step) {
            REQUIRE(mb.size() == static_cast<size_t>(micro));
            for (const auto& e : mb) seen[e.epoch].insert(e.index);
          }
        }
      }
      INFO("world " << world << " micro " << micro << " accum " << accum);
      for (int64_t epoch : {0, 1}) {
        const auto& ids = seen[epoch];
        CHECK(ids.size() == static_cast<size_t>(n));  // no example twice
        CHECK(std::set<int64_t>(ids.begin(), ids.end()).size() == static_cast<size_t>(n));
        CHECK(*ids.begin() == 0);
        CHECK(*ids.rbegin() == n - 1);
      }
    }
  }
}

TEST_CASE("sampler: a restored state continues with the identical batch", "[data][sampler]") {
  kto::data::BatchSampler a(50, 9, 3, 2, 2, 1);
  for (int i = 0; i < 7; ++i) a.next_step();
  const auto saved = a.state();
  const auto expected = a.next_step();
  kto::data::BatchSampler b(50, 9, 3, 2, 2, 1);
  b.restore(saved);
  const auto got = b.next_step();
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    for (size_t j = 0; j < got[i].size(); ++j) {
      CHECK(got[i][j].index == expected[i][j].index);
      CHECK(got[i][j].epoch == expected[i][j].epoch);
    }
  }
  CHECK(a.state() == b.state());
  CHECK_THROWS_WITH(b.restore({0, 50}), Contains("does not fit"));
  // Permutations are deterministic, differ per epoch and per seed.
  const auto p0 = kto::data::BatchSampler::permutation(20, 1, 0);
  CHECK(p0 == kto::data::BatchSampler::permutation(20, 1, 0));
  CHECK(p0 != kto::data::BatchSampler::permutation(20, 1, 1));
  CHECK(p0 != kto::data::BatchSampler::permutation(20, 2, 0));
}

TEST_CASE(
    "sampler: length grouping keeps every epoch whole, fills microbatches with like lengths, "
    "does not depend on the world size and resumes exactly",
    "[data][sampler]") {
  const int64_t n = 203, micro = 4, accum = 2;  // 203 = 8 * 25 + 3: epochs begin mid-microbatch
  std::vector<int64_t> lengths(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) lengths[static_cast<size_t>(i)] = 10 + (i * 7919) % 500;  // spread out
  auto sampler = [&](int world, int rank) {
    kto::data::BatchSampler s(n, 5, micro, accum * 4 / world, world, rank);
    s.group_by_length(lengths, 8);
    return s;
  };
  // The global order at W = 1, and every rank's share at W = 2 and 4: the same stream.
  std::vector<kto::data::SampledExample> stream;
  auto one = sampler(1, 0);
  const int64_t steps = 3 * n / one.global_batch() + 1;
  for (int64_t st = 0; st < steps; ++st)
    for (const auto& mb : one.next_step()) stream.insert(stream.end(), mb.begin(), mb.end());
  for (int world : {2, 4}) {
    std::vector<kto::data::BatchSampler> ranks;
    for (int r = 0; r < world; ++r) ranks.push_back(sampler(world, r));
    size_t at = 0;
    for (int64_t st = 0; st < steps; ++st) {
      std::vector<kto::data::RankStep> per_rank;
      for (auto& s : ranks) per_rank.push_back(s.next_step());
      for (size_t a = 0; a < per_rank[0].size(); ++a)
        for (int r = 0; r < world; ++r)
          for (const auto& e : per_rank[static_cast<size_t>(r)][a]) {
            INFO("world " << world << " position " << at);
            REQUIRE(at < stream.size());
            CHECK(e.index == stream[at].index);
            ++at;
          }
    }
  }
  // Each epoch once; microbatches (runs of `micro` in the stream) far more even than unsorted.
  std::map<int64_t, std::set<int64_t>> seen;
  for (const auto& e : stream) CHECK(seen[e.epoch].insert(e.index).second);
  CHECK(seen[0].size() == static_cast<size_t>(n));
  CHECK(seen[1].size() == static_cast<size_t>(n));
  auto spread = [&](const std::vector<int64_t>& order) {  // mean (max - min) length per microbatch
    double sum = 0;
    int64_t count = 0;
    for (size_t b = 0; b + micro <= order.size(); b += micro, ++count) {
      int64_t lo = INT64_MAX, hi = 0;
      for (size_t k = b; k < b + micro; ++k) {
        lo = std::min(lo, lengths[static_cast<size_t>(order[k])]);
        hi = std::max(hi, lengths[static_cast<size_t>(order[k])]);
      }
      sum += static_cast<double>(hi - lo);
    }
    return sum / static_cast<double>(count);
  };
  std::vector<int64_t> grouped_ids, plain_ids;
  for (const auto& e : stream) grouped_ids.push_back(e.index);
  for (int64_t epoch : {0, 1, 2})
    for (int64_t i : kto::data::BatchSampler::permutation(n, 5, epoch)) plain_ids.push_back(i);
  plain_ids.resize(grouped_ids.size());
  CHECK(spread(grouped_ids) < 0.25 * spread(plain_ids));
  // Within a window the microbatches are shuffled, not longest first.
  const auto g = kto::data::BatchSampler::grouped(kto::data::BatchSampler::permutation(n, 5, 0), lengths,
                                                  micro, 8, 0, 5, 0);
  REQUIRE(g.size() == static_cast<size_t>(n));
  bool descending = true;
  for (size_t b = micro; b < 8 * micro; b += micro)
    descending =
        descending && lengths[static_cast<size_t>(g[b])] <= lengths[static_cast<size_t>(g[b - micro])];
  CHECK_FALSE(descending);
  // A restored state continues with the identical batch.
  auto a = sampler(2, 1);
  for (int i = 0; i < 9; ++i) a.next_step();
  const auto saved = a.state();
  const auto expected = a.next_step();
  auto b = sampler(2, 1);
  b.restore(saved);
  const auto got = b.next_step();
  for (size_t i = 0; i < got.size(); ++i)
    for (size_t j = 0; j < got[i].size(); ++j) CHECK(got[i][j].index == expected[i][j].index);
}

TEST_CASE("damaged dataset files: every error names the file and the dataset or attribute",
          "[data][bad_input]") {
  kto::test::TempDir tmp;
  auto fresh = [&](const std::string& name) { return write_dataset(tmp.file(name), 6); };
  auto set_attr = [](const std::string& path, const char* name, hid_t type, const void* value) {
    kto::h5::Handle f(KTO_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)));
    if (H5Aexists(f, name) > 0) KTO_H5_CHECK(H5Adelete(f, name));
    kto::h5::Handle space(KTO_H5_CHECK(H5Screate(H5S_SCALAR)));
    kto::h5::Handle attr(KTO_H5_CHECK(H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT)));
    KTO_H5_CHECK(H5Awrite(attr, type, value));
  };
  SECTION("truncated: HDF5's message alone did not say which file") {
    const std::string path = fresh("cut.h5");
    const std::string bytes = kto::test::read_bytes(path);
    kto::test::write_bytes(path, bytes.substr(0, bytes.size() / 2));
    CHECK_THAT(open_error({path}), Contains("cut.h5"));
  }
  SECTION("an attribute of the wrong type names the attribute") {
    const std::string path = fresh("attr.h5");
    const double v = 6.5;
    set_attr(path, "n_examples", H5T_NATIVE_DOUBLE, &v);
    CHECK_THAT(open_error({path}),
               Contains("attr.h5") && Contains("attribute 'n_examples' must be one integer"));
  }
  SECTION("attributes that do not describe the data") {
    const std::string path = fresh("count.h5");
    const int64_t wrong = 7;
    set_attr(path, "n_examples", H5T_NATIVE_INT64, &wrong);
    CHECK_THAT(open_error({path}),
               Contains("count.h5") && Contains("attribute n_examples is 7 but the data holds 6"));
    const std::string vocab = fresh("vocab.h5");
    const int64_t minus = -1;
    set_attr(vocab, "tokenizer_vocab_size", H5T_NATIVE_INT64, &minus);
    CHECK_THAT(open_error({vocab}), Contains("vocab.h5") && Contains("attribute tokenizer_vocab_size is -1"));
  }
  SECTION("float labels or tokens are not converted silently") {
    const std::string path = tmp.file("float.h5");
    write_dataset(path, 6);
    {
      kto::h5::Handle f(KTO_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)));
      KTO_H5_CHECK(H5Ldelete(f, "label", H5P_DEFAULT));
      const float labels[6] = {0, 1, 1, 1, 1, 0};
      kto::h5::write_vector(f, "label", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, labels, 6);
    }
    CHECK_THAT(open_error({path}), Contains("float.h5") && Contains("dataset label must hold integers") &&
                                       Contains("floating point"));
  }
  SECTION("bad token ids are found when the file opens, not when their batch is read") {
    const std::string path = fresh("ids.h5");
    {
      kto::h5::Handle f(KTO_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)));
      kto::h5::Handle d(KTO_H5_CHECK(H5Dopen2(f, "tokens", H5P_DEFAULT)));
      const hsize_t at = 3, one = 1;
      kto::h5::Handle space(KTO_H5_CHECK(H5Dget_space(d)));
      KTO_H5_CHECK(H5Sselect_hyperslab(space, H5S_SELECT_SET, &at, nullptr, &one, nullptr));
      kto::h5::Handle mem(KTO_H5_CHECK(H5Screate_simple(1, &one, nullptr)));
      const int32_t big = 999999;
      KTO_H5_CHECK(H5Dwrite(d, H5T_NATIVE_INT32, mem, space, H5P_DEFAULT, &big));
    }
    CHECK_THAT(open_error({path}), Contains("ids.h5") && Contains("max_token_id") && Contains("999999"));
    CHECK_THAT(open_error({path}, 5000),
               Contains("ids.h5") && Contains("token id 999999") && Contains("vocabulary of 5000"));
  }
  SECTION("an empty dataset names its file") {
    DatasetWriter w(tmp.file("empty.h5"), DatasetAttributes{});
    w.finish();
    CHECK_THAT(open_error({tmp.file("empty.h5")}), Contains("empty.h5") && Contains("holds no examples"));
  }
}

TEST_CASE("a dataset file damaged at any byte is refused naming it, or reads as written",
          "[data][bad_input]") {
  // Files are written in the HDF5 1.10 format: libhdf5 checks the checksum of every piece of
  // metadata before parsing it (it is not memory-safe on corrupt metadata it cannot check).
  kto::test::TempDir tmp;
  const std::string good = write_dataset(tmp.file("good.h5"), 6);
  const std::string bytes = kto::test::read_bytes(good);
  REQUIRE(bytes.size() > 48);
  CHECK(static_cast<int>(bytes[8]) >= 2);  // superblock version 2+: checksummed
  const std::string path = tmp.file("flipped.h5");
  int64_t refused = 0, by_checksum = 0, opened = 0;
  for (size_t at = 0; at < bytes.size(); ++at) {
    std::string damaged = bytes;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x24);
    kto::test::write_bytes(path, damaged);
    const std::string error = open_error({path}, 1 << 16);
    if (error == "opened") {
      ++opened;  // raw token bytes (checked by value, not by checksum) or unused space
      continue;
    }
    ++refused;
    by_checksum += error.find("checksum") != std::string::npos;
    INFO("byte " << at << ": " << error);
    CHECK(error.rfind(path, 0) == 0);
  }
  CHECK(refused > 0);
  CHECK(by_checksum > 0);
  std::printf("[data] %lld of %zu single-byte flips refused (%lld by a metadata checksum), %lld opened\n",
              static_cast<long long>(refused), bytes.size(), static_cast<long long>(by_checksum),
              static_cast<long long>(opened));
}
