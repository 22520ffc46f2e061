// Tokenized KTO datasets in HDF5 (DESIGN §7), schema version 1:
//
//   /tokens      int32 [T]    all examples' tokens, concatenated (prompt then completion)
//   /offsets     int64 [E+1]  example i is tokens[offsets[i], offsets[i+1])
//   /prompt_len  int32 [E]    the first prompt_len[i] tokens of example i are the prompt
//   /label       int8  [E]    1 desirable, 0 undesirable
//   /ref_logp    float64 [E], optional: the reference's log-prob of each example's completion
//   /kl_partner  int64 [E], optional: each example's fixed KL partner (kto/data/partners.h), an
//                index across the dataset's files; with it, optionally
//   /ref_kl_logp float64 [E]: the reference's log-prob of the partner's completion after the
//                example's prompt (files from older kto: float32 scores, read as float64)
//   attributes on /: format_version, tokenizer (name, kind, sha256, vocab_size, path), bos_id,
//   eos_id, pad_id, n_examples, n_desirable, n_undesirable, n_tokens, max_token_id,
//   max_length, max_prompt_length, paired, split, shard_index, num_shards, source, created,
//   producer; with scores reference_identity and reference_dtype; with partners
//   kl_partner_seed and kl_partner_set_sha256 (partner_set_sha256 of the files they index). A paired dataset
//   (paired = 1) stores each pair as examples 2k (chosen, label 1) and 2k+1 (rejected, label 0).
//
// A dataset is one file or several shards with the same tokenizer; examples are numbered
// across shards in the order given. Opening validates everything that can be checked without
// reading the tokens (which are checked as they are read); errors name the file and problem.
// Only offsets, prompt lengths and labels are held in memory; tokens are read per example with
// HDF5 hyperslabs, so a rank reads only the examples it trains on.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kto::data {

constexpr int64_t kFormatVersion = 1;

struct DatasetAttributes {
  int64_t format_version = kFormatVersion;
  std::string tokenizer_name, tokenizer_kind, tokenizer_sha256;
  std::string tokenizer_path;  // absolute path of the file at prepare time ("" in older files)
  int64_t tokenizer_vocab_size = 0;
  int64_t bos_id = -1, eos_id = -1, pad_id = -1;
  int64_t n_examples = 0, n_desirable = 0, n_undesirable = 0, n_tokens = 0;
  int64_t max_token_id = -1;
  int64_t max_length = 0, max_prompt_length = 0;
  int64_t paired = 0;          // 1: examples 2k (desirable) and 2k+1 (undesirable) are a pair
  std::string control_tokens;  // "GOOD,BAD" when prompts end with CSFT control tokens, else ""
  std::string split = "train";
  int64_t shard_index = 0, num_shards = 1;
  std::string source, created, producer;
  std::string reference_identity;  // what scored /ref_logp (kto-train --score-reference), else ""
  std::string reference_dtype;     // its compute dtype
  int64_t kl_partner_seed = -1;    // the seed /kl_partner was drawn from
  std::string kl_partner_set_sha256;
};

struct Example {
  int64_t index = -1;           // across shards
  std::vector<int32_t> tokens;  // prompt then completion
  int32_t prompt_len = 0;
  bool desirable = false;
  double ref_logp = 0, ref_kl_logp = 0;  // valid when the dataset has reference log-probs
  int64_t completion_len() const { return static_cast<int64_t>(tokens.size()) - prompt_len; }
};

// What one file of a dataset is, for checks that it is the same data (resume): its size and
// counts, and a SHA-256 of its offsets, prompt lengths, labels (and reference log-probs, if any)
// — cheap (no token is read) yet changed by any edit that moves an example's boundaries or label.
struct FileIdentity {
  std::string path;
  int64_t bytes = 0, examples = 0, desirable = 0, tokens = 0;
  std::string sha256;       // offsets, prompt lengths, labels, and any scores and partners
  std::string data_sha256;  // offsets, prompt lengths, labels and tokens (the same for a scored copy)
  // "400 examples (57 desirable), 61234 tokens, 1.2 MB, content sha256 1f2e3d4c5b6a7980" (no path)
  std::string describe() const;
};

class Dataset {
 public:
  // Opens and validates the shards. `model_vocab_size` > 0 also checks every token id of the
  // dataset against the model's vocabulary (from the max_token_id attribute).
  static std::shared_ptr<Dataset> open(const std::vector<std::string>& paths, int64_t model_vocab_size = 0);
  ~Dataset();

  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  int64_t count(bool desirable) const { return desirable ? n_desirable_ : size() - n_desirable_; }
  bool paired() const { return attributes_.paired != 0; }
  int64_t num_tokens() const { return n_tokens_; }
  bool desirable(int64_t i) const { return labels_[static_cast<size_t>(i)] != 0; }
  int64_t length(int64_t i) const;
  int32_t prompt_len(int64_t i) const { return prompt_len_[static_cast<size_t>(i)]; }
  // /ref_logp in every file; /ref_kl_logp (with /kl_partner) in every file.
  bool has_reference_logps() const { return has_ref_; }
  bool has_reference_kl_logps() const { return has_ref_kl_; }
  // /kl_partner in every file, checked against the files it was drawn for.
  bool has_kl_partners() const { return has_partners_; }
  const std::vector<int64_t>& kl_partners() const { return kl_partner_; }
  // Attributes of the first shard (all shards share tokenizer and special ids).
  const DatasetAttributes& attributes() const { return attributes_; }
  const std::vector<std::string>& paths() const { return paths_; }
  // One per file, in the order given.
  const std::vector<FileIdentity>& identities() const { return identities_; }

  // Example i: a hyperslab read of its tokens from its shard.
  Example read(int64_t i) const;

 private:
  struct Shard;
  Dataset() = default;
  void open_shard(const std::string& path);  // validates and appends one file
  void check_kl_partners() const;            // after the last file
  std::vector<std::string> paths_;
  std::vector<FileIdentity> identities_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<int64_t> shard_begin_;  // first example index of each shard, plus the total
  std::vector<int32_t> prompt_len_;
  std::vector<int8_t> labels_;
  std::vector<double> ref_logp_, ref_kl_logp_;
  std::vector<int64_t> kl_partner_;
  std::vector<std::string> kl_partner_sets_;  // each file's kl_partner_set_sha256
  bool has_ref_ = false, has_ref_kl_ = false, has_partners_ = false;
  int64_t n_desirable_ = 0, n_tokens_ = 0;
  DatasetAttributes attributes_;
  int64_t model_vocab_size_ = 0;
};

// Reads the attributes of one file (kto-data inspect, resume checks).
DatasetAttributes read_attributes(const std::string& path);

// Writes a dataset file atomically: tokens stream to HDF5 in chunks as examples are added;
// the file appears at `path` only when finish() succeeds.
class DatasetWriter {
 public:
  // With `with_reference_logps` every add() gives the example's scores: /ref_logp is written,
  // and /ref_kl_logp too once set_kl_partners() has been called.
  DatasetWriter(std::string path, DatasetAttributes attributes, bool with_reference_logps = false);
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  void add(const std::vector<int32_t>& tokens, int32_t prompt_len, bool desirable, double ref_logp = 0,
           double ref_kl_logp = 0);
  // /kl_partner: indices across the set of files this one belongs to (one per example added);
  // the attributes' kl_partner_seed and kl_partner_set_sha256 say for what (empty set sha: this
  // file alone, computed at finish()).
  void set_kl_partners(std::vector<int64_t> partners) { kl_partner_ = std::move(partners); }
  // Fills the counts into the attributes, writes them and renames the file into place.
  void finish();
  int64_t size() const { return static_cast<int64_t>(labels_.size()); }

 private:
  void flush_tokens();
  struct Impl;
  std::string path_, tmp_path_;
  DatasetAttributes attributes_;
  bool with_ref_;
  std::unique_ptr<Impl> impl_;
  std::vector<int32_t> pending_tokens_;
  std::vector<int64_t> offsets_{0};
  std::vector<int32_t> prompt_len_;
  std::vector<int8_t> labels_;
  std::vector<double> ref_logp_, ref_kl_logp_;
  std::vector<int64_t> kl_partner_;
  bool finished_ = false;
};

// The paper's rule for imbalanced data: weights with lambda_D n_D / (lambda_U n_U) in [1, 4/3],
// one of them kept at 1, moved as little as possible (the ratio lands on the nearest end of the
// band). Returns {lambda_D, lambda_U}; {1, 1} when a class is empty.
std::pair<double, double> recommended_class_weights(int64_t n_desirable, int64_t n_undesirable);

}  // namespace kto::data
