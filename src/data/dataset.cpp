#include "kto/data/dataset.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <tuple>

#include "kto/data/partners.h"
#include "kto/util/check_h5.h"
#include "kto/util/files.h"
#include "kto/util/hdf5.h"
#include "kto/util/log.h"
#include "kto/util/memory.h"
#include "kto/util/sha256.h"

namespace kto::data {

using detail::str_cat;

struct Dataset::Shard {
  std::string path;
  h5::Handle file;
  h5::Handle tokens;
  std::vector<int64_t> offsets;
};

Dataset::~Dataset() = default;

namespace {

// Runs `body`; an error that does not start with `path` gets it prefixed, so every problem with
// a dataset file names the file (HDF5's own messages name only the call).
template <class F>
auto naming_file(const std::string& path, F&& body) {
  try {
    return body();
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind(path, 0) == 0) throw;
    throw Error(path + ": " + what);
  }
}

// Checks the ids of /tokens in a streaming pass (bounded memory): all in [0, vocab) when vocab
// > 0, and the largest equal to the max_token_id attribute; hashes them into `hash` on the way.
// Returns the largest id.
int32_t check_token_ids(hid_t tokens, int64_t n_tokens, int64_t max_token_id, int64_t vocab, Sha256& hash) {
  constexpr int64_t kChunk = int64_t{1} << 22;
  std::vector<int32_t> buffer(static_cast<size_t>(std::min(kChunk, std::max<int64_t>(1, n_tokens))));
  int32_t lo = INT32_MAX, hi = -1;
  for (int64_t begin = 0; begin < n_tokens; begin += kChunk) {
    const int64_t count = std::min(kChunk, n_tokens - begin);
    h5::read_range(tokens, H5T_NATIVE_INT32, begin, count, buffer.data());
    hash.update(buffer.data(), static_cast<size_t>(count) * sizeof(int32_t));
    for (int64_t k = 0; k < count; ++k) {
      lo = std::min(lo, buffer[static_cast<size_t>(k)]);
      hi = std::max(hi, buffer[static_cast<size_t>(k)]);
    }
  }
  if (n_tokens > 0 && lo < 0) throw Error(str_cat("/tokens holds the negative token id ", lo));
  if (vocab > 0 && hi >= vocab) {
    throw Error(str_cat("holds token id ", hi, ", outside the model's vocabulary of ", vocab,
                        " (was it tokenized for another model?)"));
  }
  if (max_token_id >= 0 && hi != max_token_id) {
    throw Error(str_cat("attribute max_token_id is ", max_token_id, " but the largest id in /tokens is ", hi,
                        " (a damaged or edited file)"));
  }
  return hi;
}

// What a file's examples are, without scores (FileIdentity::data_sha256); `tokens_sha256` is
// the SHA-256 of /tokens as int32 little-endian.
std::string data_sha256(const std::vector<int64_t>& offsets, const std::vector<int32_t>& prompt_len,
                        const std::vector<int8_t>& labels, const std::string& tokens_sha256) {
  Sha256 h;
  h.update(offsets.data(), offsets.size() * sizeof(offsets[0]));
  h.update(prompt_len.data(), prompt_len.size() * sizeof(prompt_len[0]));
  h.update(labels.data(), labels.size());
  h.update(tokens_sha256.data(), tokens_sha256.size());
  return h.hex_digest();
}

}  // namespace

DatasetAttributes read_attributes(const std::string& path) {
  if (!path_exists(path)) throw Error(path + ": no such dataset file");
  if (H5Fis_hdf5(path.c_str()) <= 0) throw Error(path + ": not an HDF5 file");
  return naming_file(path, [&] {
    h5::Handle file(KTO_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)));
    DatasetAttributes a;
    a.format_version = h5::read_int_attr(file, "format_version", -1);
    a.tokenizer_name = h5::read_string_attr(file, "tokenizer_name");
    a.tokenizer_kind = h5::read_string_attr(file, "tokenizer_kind");
    a.tokenizer_sha256 = h5::read_string_attr(file, "tokenizer_sha256");
    a.tokenizer_path = h5::read_string_attr(file, "tokenizer_path");  // absent in older files: ""
    a.tokenizer_vocab_size = h5::read_int_attr(file, "tokenizer_vocab_size", 0);
    a.bos_id = h5::read_int_attr(file, "bos_id", -1);
    a.eos_id = h5::read_int_attr(file, "eos_id", -1);
    a.pad_id = h5::read_int_attr(file, "pad_id", -1);
    a.n_examples = h5::read_int_attr(file, "n_examples", -1);
    a.n_desirable = h5::read_int_attr(file, "n_desirable", -1);
    a.n_undesirable = h5::read_int_attr(file, "n_undesirable", -1);
    a.n_tokens = h5::read_int_attr(file, "n_tokens", -1);
    a.max_token_id = h5::read_int_attr(file, "max_token_id", -1);
    a.max_length = h5::read_int_attr(file, "max_length", 0);
    a.max_prompt_length = h5::read_int_attr(file, "max_prompt_length", 0);
    a.paired = h5::read_int_attr(file, "paired", 0);
    a.control_tokens = h5::read_string_attr(file, "control_tokens");  // absent in older files: none
    a.split = h5::read_string_attr(file, "split");
    a.shard_index = h5::read_int_attr(file, "shard_index", 0);
    a.num_shards = h5::read_int_attr(file, "num_shards", 1);
    a.source = h5::read_string_attr(file, "source");
    a.created = h5::read_string_attr(file, "created");
    a.producer = h5::read_string_attr(file, "producer");
    a.reference_identity = h5::read_string_attr(file, "reference_identity");  // "" when absent
    a.reference_dtype = h5::read_string_attr(file, "reference_dtype");
    a.kl_partner_seed = h5::read_int_attr(file, "kl_partner_seed", -1);
    a.kl_partner_set_sha256 = h5::read_string_attr(file, "kl_partner_set_sha256");
    for (const auto& [name, v] :
         {std::pair<const char*, int64_t>{"tokenizer_vocab_size", a.tokenizer_vocab_size},
          {"max_length", a.max_length},
          {"max_prompt_length", a.max_prompt_length}}) {
      if (v < 0) throw Error(str_cat("attribute ", name, " is ", v, "; it must be >= 0 (0: unknown)"));
    }
    if (a.tokenizer_vocab_size > 0 && a.max_token_id >= a.tokenizer_vocab_size) {
      throw Error(str_cat("attribute max_token_id ", a.max_token_id, " is not below tokenizer_vocab_size ",
                          a.tokenizer_vocab_size));
    }
    return a;
  });
}

std::shared_ptr<Dataset> Dataset::open(const std::vector<std::string>& paths, int64_t model_vocab_size) {
  if (paths.empty()) throw Error("no dataset files given");
  std::shared_ptr<Dataset> ds(new Dataset());
  ds->paths_ = paths;
  ds->model_vocab_size_ = model_vocab_size;
  for (const std::string& path : paths) naming_file(path, [&] { ds->open_shard(path); });
  if (ds->size() == 0) {
    throw Error(str_cat(paths.front(), paths.size() > 1 ? str_cat(" (and ", paths.size() - 1, " more)") : "",
                        ": the dataset holds no examples"));
  }
  ds->shard_begin_.push_back(ds->size());
  if (ds->has_partners_) ds->check_kl_partners();
  return ds;
}

void Dataset::open_shard(const std::string& path) {
  if (const int version = h5::superblock_version(path); version >= 0 && version < 2) {
    log::warn("data", path, ": HDF5 metadata without checksums (an older file format, e.g. from an earlier ",
              "kto or h5py's defaults): damage cannot be detected before libhdf5 parses it; ",
              "kto-data prepare writes checksummed files");
  }
  const DatasetAttributes a = read_attributes(path);
  if (a.format_version != kFormatVersion) {
    throw Error(str_cat(path, ": dataset format_version ", a.format_version, ", this kto reads version ",
                        kFormatVersion, " (re-run kto-data prepare)"));
  }
  if (shards_.empty()) {
    attributes_ = a;
  } else if (a.paired != attributes_.paired) {
    throw Error(str_cat(path, ": paired = ", a.paired, " but ", paths_.front(),
                        " has paired = ", attributes_.paired));
  } else if (a.control_tokens != attributes_.control_tokens) {
    throw Error(str_cat(path, ": control tokens '", a.control_tokens, "' but ", paths_.front(), " has '",
                        attributes_.control_tokens, "'"));
  } else if (a.tokenizer_sha256 != attributes_.tokenizer_sha256) {
    throw Error(str_cat(path, ": tokenized with a different tokenizer (sha256 ", a.tokenizer_sha256,
                        ") than ", paths_.front(), " (", attributes_.tokenizer_sha256, ")"));
  }
  if (model_vocab_size_ > 0 && a.max_token_id >= model_vocab_size_) {
    throw Error(str_cat(path, ": holds token id ", a.max_token_id, ", outside the model's vocabulary of ",
                        model_vocab_size_, " (was it tokenized for another model?)"));
  }
  auto shard = std::make_unique<Shard>();
  shard->path = path;
  shard->file = h5::Handle(KTO_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)));
  if (!h5::has_link(shard->file, "tokens")) throw Error(path + ": missing dataset /tokens");
  shard->tokens = h5::Handle(KTO_H5_CHECK(H5Dopen2(shard->file, "tokens", H5P_DEFAULT)));
  h5::check_integer_dataset(shard->tokens, path + ": dataset /tokens");
  const int64_t n_tokens = h5::dataset_length(shard->tokens, path + ": /tokens");
  auto labels = h5::read_vector<int8_t>(shard->file, "label", H5T_NATIVE_INT8, -1, path);
  const int64_t E = static_cast<int64_t>(labels.size());
  shard->offsets = h5::read_vector<int64_t>(shard->file, "offsets", H5T_NATIVE_INT64, E + 1, path);
  auto prompt_len = h5::read_vector<int32_t>(shard->file, "prompt_len", H5T_NATIVE_INT32, E, path);

  const auto& off = shard->offsets;
  if (off.front() != 0) throw Error(str_cat(path, ": offsets[0] is ", off.front(), ", expected 0"));
  if (off.back() != n_tokens) {
    throw Error(str_cat(path, ": offsets end at ", off.back(), " but /tokens has ", n_tokens, " entries"));
  }
  for (int64_t i = 0; i < E; ++i) {
    const size_t u = static_cast<size_t>(i);
    if (off[u + 1] <= off[u]) {
      throw Error(
          str_cat(path, ": offsets not increasing at example ", i, " (", off[u], " -> ", off[u + 1], ")"));
    }
    if (labels[u] != 0 && labels[u] != 1)
      throw Error(str_cat(path, ": label of example ", i, " is ", int(labels[u]), ", expected 0 or 1"));
    const int64_t len = off[u + 1] - off[u];
    if (prompt_len[u] < 0 || prompt_len[u] >= len) {
      throw Error(str_cat(path, ": example ", i, " has prompt_len ", prompt_len[u], " of ", len,
                          " tokens (the completion must be non-empty)"));
    }
    n_desirable_ += labels[u];
    if (a.paired && labels[u] != (i % 2 == 0 ? 1 : 0)) {
      throw Error(str_cat(path, ": paired dataset, but example ", i, " has label ", int(labels[u]),
                          " (pairs are stored chosen, rejected)"));
    }
  }
  if (a.paired && E % 2 != 0)
    throw Error(str_cat(path, ": paired dataset with an odd number of examples (", E, ")"));
  // The attributes kto-data wrote must describe the data (a mismatch means a damaged or edited file).
  int64_t desirable = 0;
  for (int8_t l : labels) desirable += l;
  for (const auto& [name, attr, actual] :
       {std::tuple<const char*, int64_t, int64_t>{"n_examples", a.n_examples, E},
        {"n_desirable", a.n_desirable, desirable},
        {"n_undesirable", a.n_undesirable, E - desirable},
        {"n_tokens", a.n_tokens, n_tokens}}) {
    if (attr >= 0 && attr != actual) {
      throw Error(str_cat(path, ": attribute ", name, " is ", attr, " but the data holds ", actual,
                          " (a damaged or edited file)"));
    }
  }
  Sha256 token_hash;
  check_token_ids(shard->tokens, n_tokens, a.max_token_id, model_vocab_size_, token_hash);
  const bool has_ref = h5::has_link(shard->file, "ref_logp");
  const bool has_ref_kl = h5::has_link(shard->file, "ref_kl_logp");
  const bool has_partners = h5::has_link(shard->file, "kl_partner");
  if (has_ref_kl && !has_partners) {
    throw Error(path +
                ": /ref_kl_logp without /kl_partner: KL scores whose partners are not recorded "
                "cannot match any KL pass (rescore with kto-train --score-reference)");
  }
  if (has_ref_kl && !has_ref) throw Error(path + ": /ref_kl_logp without /ref_logp");
  if (shards_.empty()) {
    has_ref_ = has_ref;
    has_ref_kl_ = has_ref_kl;
    has_partners_ = has_partners;
  }
  if (has_ref != has_ref_ || has_ref_kl != has_ref_kl_ || has_partners != has_partners_) {
    throw Error(str_cat(path, ": reference scores or KL partners present in some files only (",
                        paths_.front(), has_ref_ ? " has" : " has no", " /ref_logp, ",
                        has_ref_kl_ ? "has" : "no", " /ref_kl_logp, ", has_partners_ ? "has" : "no",
                        " /kl_partner)"));
  }
  if (!shards_.empty() && a.reference_identity != attributes_.reference_identity) {
    throw Error(str_cat(path, ": scored by reference '", a.reference_identity, "', but ", paths_.front(),
                        " by '", attributes_.reference_identity, "'"));
  }
  // The file's identity (resume checks): counts and a hash of everything but the tokens.
  FileIdentity id;
  id.data_sha256 = data_sha256(off, prompt_len, labels, token_hash.hex_digest());
  Sha256 content;
  content.update(off.data(), off.size() * sizeof(off[0]));
  content.update(prompt_len.data(), prompt_len.size() * sizeof(prompt_len[0]));
  content.update(labels.data(), labels.size());
  auto column = [&](const char* name, std::vector<double>& into) {
    auto v = h5::read_vector<double>(shard->file, name, H5T_NATIVE_DOUBLE, E, path);
    content.update(v.data(), v.size() * sizeof(double));
    into.insert(into.end(), v.begin(), v.end());
  };
  if (has_ref) column("ref_logp", ref_logp_);
  if (has_ref_kl) column("ref_kl_logp", ref_kl_logp_);
  if (has_partners) {
    auto v = h5::read_vector<int64_t>(shard->file, "kl_partner", H5T_NATIVE_INT64, E, path);
    content.update(v.data(), v.size() * sizeof(int64_t));
    kl_partner_.insert(kl_partner_.end(), v.begin(), v.end());
    kl_partner_sets_.push_back(a.kl_partner_set_sha256);
  }
  id.path = path;
  id.bytes = file_size(path);
  id.examples = E;
  id.desirable = desirable;
  id.tokens = n_tokens;
  id.sha256 = content.hex_digest();
  identities_.push_back(std::move(id));
  shard_begin_.push_back(size());
  labels_.insert(labels_.end(), labels.begin(), labels.end());
  prompt_len_.insert(prompt_len_.end(), prompt_len.begin(), prompt_len.end());
  n_tokens_ += n_tokens;
  shards_.push_back(std::move(shard));
}

void Dataset::check_kl_partners() const {
  const int64_t n = size();
  const std::string expected = partner_set_sha256(*this);
  for (size_t f = 0; f < paths_.size(); ++f) {
    const std::string& stored = kl_partner_sets_[f];
    if (!stored.empty() && stored != expected) {
      throw Error(str_cat(paths_[f], ": its KL partners (/kl_partner) were drawn for another set of files (",
                          "set sha256 ", stored.substr(0, 16), "), not for the ", paths_.size(),
                          " file(s) given here (", expected.substr(0, 16),
                          "): give the files it was scored with, in the same order"));
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = kl_partner_[static_cast<size_t>(i)];
    if (p < 0 || p >= n || p == i) {
      const size_t s = static_cast<size_t>(std::upper_bound(shard_begin_.begin(), shard_begin_.end(), i) -
                                           shard_begin_.begin() - 1);
      throw Error(str_cat(paths_[s], ": example ", i - shard_begin_[s], " has KL partner ", p,
                          p == i ? " (itself)" : str_cat(", outside the ", n, " examples of its file set")));
    }
  }
}

std::string FileIdentity::describe() const {
  return str_cat(examples, " examples (", desirable, " desirable), ", tokens, " tokens, ",
                 human_bytes(static_cast<double>(bytes)), ", content sha256 ", sha256.substr(0, 16));
}

int64_t Dataset::length(int64_t i) const {
  const size_t s = static_cast<size_t>(std::upper_bound(shard_begin_.begin(), shard_begin_.end(), i) -
                                       shard_begin_.begin() - 1);
  const auto& off = shards_[s]->offsets;
  const size_t local = static_cast<size_t>(i - shard_begin_[s]);
  return off[local + 1] - off[local];
}

Example Dataset::read(int64_t i) const {
  KTO_CHECK(i >= 0 && i < size(), "example ", i, " outside the dataset of ", size());
  const size_t s = static_cast<size_t>(std::upper_bound(shard_begin_.begin(), shard_begin_.end(), i) -
                                       shard_begin_.begin() - 1);
  const Shard& shard = *shards_[s];
  const size_t local = static_cast<size_t>(i - shard_begin_[s]);
  const hsize_t begin = static_cast<hsize_t>(shard.offsets[local]);
  const hsize_t count = static_cast<hsize_t>(shard.offsets[local + 1] - shard.offsets[local]);
  Example ex;
  ex.index = i;
  ex.tokens.resize(count);
  h5::Handle file_space(KTO_H5_CHECK(H5Dget_space(shard.tokens)));
  KTO_H5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &begin, nullptr, &count, nullptr));
  h5::Handle mem_space(KTO_H5_CHECK(H5Screate_simple(1, &count, nullptr)));
  KTO_H5_CHECK(H5Dread(shard.tokens, H5T_NATIVE_INT32, mem_space, file_space, H5P_DEFAULT, ex.tokens.data()));
  for (int32_t t : ex.tokens) {
    if (t < 0 || (model_vocab_size_ > 0 && t >= model_vocab_size_)) {
      throw Error(str_cat(shard.path, ": example ", local, " holds token id ", t,
                          " outside the vocabulary of ", model_vocab_size_));
    }
  }
  ex.prompt_len = prompt_len_[static_cast<size_t>(i)];
  ex.desirable = labels_[static_cast<size_t>(i)] != 0;
  if (has_ref_) ex.ref_logp = ref_logp_[static_cast<size_t>(i)];
  if (has_ref_kl_) ex.ref_kl_logp = ref_kl_logp_[static_cast<size_t>(i)];
  return ex;
}

// ---------------------------------------------------------------------------------------------

struct DatasetWriter::Impl {
  h5::Handle file;
  h5::Handle tokens;
  Sha256 token_hash;  // of every token written, for the file's data_sha256
  int64_t written = 0;
};

namespace {
constexpr hsize_t kTokenChunk = 1 << 20;  // elements per HDF5 chunk and per flush
}

DatasetWriter::DatasetWriter(std::string path, DatasetAttributes attributes, bool with_reference_logps)
    : path_(std::move(path)),
      attributes_(std::move(attributes)),
      with_ref_(with_reference_logps),
      impl_(std::make_unique<Impl>()) {
  tmp_path_ = str_cat(path_, ".tmp.", ::getpid());
  impl_->file = h5::Handle(h5::create_file(tmp_path_));
}

DatasetWriter::~DatasetWriter() {
  if (!finished_) {
    impl_.reset();  // close the file before removing it
    std::remove(tmp_path_.c_str());
  }
}

void DatasetWriter::add(const std::vector<int32_t>& tokens, int32_t prompt_len, bool desirable,
                        double ref_logp, double ref_kl_logp) {
  KTO_CHECK(!finished_, path_, ": add after finish");
  KTO_CHECK(prompt_len >= 0 && static_cast<size_t>(prompt_len) < tokens.size(), "example with prompt_len ",
            prompt_len, " of ", tokens.size(), " tokens: the completion must be non-empty");
  pending_tokens_.insert(pending_tokens_.end(), tokens.begin(), tokens.end());
  offsets_.push_back(offsets_.back() + static_cast<int64_t>(tokens.size()));
  prompt_len_.push_back(prompt_len);
  labels_.push_back(desirable ? 1 : 0);
  for (int32_t t : tokens) attributes_.max_token_id = std::max<int64_t>(attributes_.max_token_id, t);
  if (with_ref_) {
    ref_logp_.push_back(ref_logp);
    ref_kl_logp_.push_back(ref_kl_logp);
  }
  if (pending_tokens_.size() >= kTokenChunk) flush_tokens();
}

void DatasetWriter::flush_tokens() {
  if (impl_->tokens.get() < 0) {
    // Created at the first flush: a file whose tokens all fit in one flush gets one chunk of
    // exactly their size (HDF5 stores whole chunks; a 1M-token chunk for 200 tokens is 4 MB).
    const hsize_t zero = 0, unlimited = H5S_UNLIMITED;
    const hsize_t chunk = std::clamp<hsize_t>(pending_tokens_.size(), 1, kTokenChunk);
    h5::Handle space(KTO_H5_CHECK(H5Screate_simple(1, &zero, &unlimited)));
    h5::Handle props(KTO_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)));
    KTO_H5_CHECK(H5Pset_chunk(props, 1, &chunk));
    impl_->tokens = h5::Handle(KTO_H5_CHECK(
        H5Dcreate2(impl_->file, "tokens", H5T_STD_I32LE, space, H5P_DEFAULT, props, H5P_DEFAULT)));
  }
  if (pending_tokens_.empty()) return;
  impl_->token_hash.update(pending_tokens_.data(), pending_tokens_.size() * sizeof(int32_t));
  const hsize_t begin = static_cast<hsize_t>(impl_->written);
  const hsize_t count = pending_tokens_.size();
  const hsize_t new_size = begin + count;
  KTO_H5_CHECK(H5Dset_extent(impl_->tokens, &new_size));
  h5::Handle file_space(KTO_H5_CHECK(H5Dget_space(impl_->tokens)));
  KTO_H5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &begin, nullptr, &count, nullptr));
  h5::Handle mem_space(KTO_H5_CHECK(H5Screate_simple(1, &count, nullptr)));
  KTO_H5_CHECK(
      H5Dwrite(impl_->tokens, H5T_NATIVE_INT32, mem_space, file_space, H5P_DEFAULT, pending_tokens_.data()));
  impl_->written += static_cast<int64_t>(count);
  pending_tokens_.clear();
}

void DatasetWriter::finish() {
  KTO_CHECK(!finished_, path_, ": finished twice");
  flush_tokens();
  hid_t f = impl_->file;
  h5::write_vector(f, "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, offsets_.data(),
                   static_cast<int64_t>(offsets_.size()));
  h5::write_vector(f, "prompt_len", H5T_STD_I32LE, H5T_NATIVE_INT32, prompt_len_.data(),
                   static_cast<int64_t>(prompt_len_.size()));
  h5::write_vector(f, "label", H5T_STD_I8LE, H5T_NATIVE_INT8, labels_.data(),
                   static_cast<int64_t>(labels_.size()));
  const int64_t E = size();
  if (with_ref_) h5::write_vector(f, "ref_logp", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, ref_logp_.data(), E);
  DatasetAttributes& a = attributes_;
  if (!kl_partner_.empty()) {
    KTO_CHECK(static_cast<int64_t>(kl_partner_.size()) == E, path_, ": ", kl_partner_.size(),
              " KL partners for ", E, " examples");
    h5::write_vector(f, "kl_partner", H5T_STD_I64LE, H5T_NATIVE_INT64, kl_partner_.data(), E);
    if (with_ref_)
      h5::write_vector(f, "ref_kl_logp", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, ref_kl_logp_.data(), E);
    if (a.kl_partner_set_sha256.empty()) {  // this file alone
      a.kl_partner_set_sha256 =
          partner_set_sha256({data_sha256(offsets_, prompt_len_, labels_, impl_->token_hash.hex_digest())});
    }
  }
  a.format_version = kFormatVersion;
  a.n_examples = size();
  a.n_desirable = std::count(labels_.begin(), labels_.end(), 1);
  a.n_undesirable = a.n_examples - a.n_desirable;
  a.n_tokens = offsets_.back();
  h5::write_int_attr(f, "format_version", a.format_version);
  h5::write_string_attr(f, "tokenizer_name", a.tokenizer_name);
  h5::write_string_attr(f, "tokenizer_kind", a.tokenizer_kind);
  h5::write_string_attr(f, "tokenizer_sha256", a.tokenizer_sha256);
  if (!a.tokenizer_path.empty()) h5::write_string_attr(f, "tokenizer_path", a.tokenizer_path);
  h5::write_int_attr(f, "tokenizer_vocab_size", a.tokenizer_vocab_size);
  h5::write_int_attr(f, "bos_id", a.bos_id);
  h5::write_int_attr(f, "eos_id", a.eos_id);
  h5::write_int_attr(f, "pad_id", a.pad_id);
  h5::write_int_attr(f, "n_examples", a.n_examples);
  h5::write_int_attr(f, "n_desirable", a.n_desirable);
  h5::write_int_attr(f, "n_undesirable", a.n_undesirable);
  h5::write_int_attr(f, "n_tokens", a.n_tokens);
  h5::write_int_attr(f, "max_token_id", a.max_token_id);
  h5::write_int_attr(f, "max_length", a.max_length);
  h5::write_int_attr(f, "max_prompt_length", a.max_prompt_length);
  h5::write_int_attr(f, "paired", a.paired);
  if (!a.control_tokens.empty()) h5::write_string_attr(f, "control_tokens", a.control_tokens);
  h5::write_string_attr(f, "split", a.split);
  h5::write_int_attr(f, "shard_index", a.shard_index);
  h5::write_int_attr(f, "num_shards", a.num_shards);
  h5::write_string_attr(f, "source", a.source);
  h5::write_string_attr(f, "created", a.created);
  h5::write_string_attr(f, "producer", a.producer);
  if (!a.reference_identity.empty()) {
    h5::write_string_attr(f, "reference_identity", a.reference_identity);
    h5::write_string_attr(f, "reference_dtype", a.reference_dtype);
  }
  if (!kl_partner_.empty()) {
    h5::write_int_attr(f, "kl_partner_seed", a.kl_partner_seed);
    h5::write_string_attr(f, "kl_partner_set_sha256", a.kl_partner_set_sha256);
  }
  KTO_H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL));
  impl_.reset();  // closes the file
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    std::remove(tmp_path_.c_str());
    throw Error(str_cat(path_, ": cannot rename the finished dataset into place: ", std::strerror(errno)));
  }
  finished_ = true;
}

std::pair<double, double> recommended_class_weights(int64_t n_desirable, int64_t n_undesirable) {
  if (n_desirable <= 0 || n_undesirable <= 0) return {1.0, 1.0};
  const double ratio = static_cast<double>(n_desirable) / static_cast<double>(n_undesirable);
  if (ratio >= 1.0 && ratio <= 4.0 / 3.0) return {1.0, 1.0};
  if (ratio < 1.0) return {1.0 / ratio, 1.0};  // desirable minority: lift lambda_D to ratio 1
  return {1.0, ratio * 3.0 / 4.0};             // desirable majority: lift lambda_U to ratio 4/3
}

}  // namespace kto::data
