// Hugging Face tokenizer.json with a BPE model, following the `tokenizers` crate's pipeline:
//   added tokens (not normalized) split first -> normalizer -> added tokens (normalized) ->
//   pre-tokenizer -> BPE per piece -> post-processor.
#include <algorithm>
#include <climits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <set>
#include <unordered_map>

#include "hf_components.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/json.h"
#include "kto/util/sha256.h"
#include "text.h"
#include "tokenizer.h"

namespace kto::tok {
namespace {

using json = nlohmann::json;
using detail::str_cat;

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
};

// A piece of input: either text still to tokenize, or an added token already decided.
struct Segment {
  std::string text;
  int32_t added_id = -1;
};

bool is_word_char(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }

// A token id from the file: an integer in [0, limit), limit = 4 x the tokens the file defines
// + 1024 (ids index a table: an id of 2^40 must not allocate one; holes are allowed).
int32_t checked_id(const json& v, const std::string& name, size_t tokens, const std::string& where) {
  const int64_t limit = 4 * static_cast<int64_t>(tokens) + 1024;
  if (!v.is_number_integer())
    throw Error(where + ": " + name + ": the id must be an integer, got " + json_brief(v));
  const int64_t id = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                         ? INT64_MAX
                         : v.get<int64_t>();
  if (id < 0 || id >= limit) {
    throw Error(str_cat(where, ": ", name, ": id ", json_brief(v), " is outside [0, ", limit,
                        ") (ids must be non-negative and below 4 x the number of tokens + 1024)"));
  }
  return static_cast<int32_t>(id);
}
bool is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Leftmost-longest matching of a set of added tokens (as the crate's Aho-Corasick matcher).
class AddedTokenMatcher {
 public:
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
    std::sort(tokens_.begin(), tokens_.end(),
              [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    for (size_t i = 0; i < tokens_.size(); ++i) {
      if (!tokens_[i].content.empty())
        by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
    }
  }
  bool empty() const { return tokens_.empty(); }

  std::vector<Segment> split(const std::string& text) const {
    std::vector<Segment> out;
    if (tokens_.empty()) {
      out.push_back({text, -1});
      return out;
    }
    size_t plain_begin = 0;
    size_t i = 0;
    while (i < text.size()) {
      const AddedToken* hit = match_at(text, i);
      if (hit == nullptr) {
        ++i;
        continue;
      }
      size_t begin = i, end = i + hit->content.size();
      if (hit->lstrip) {
        while (begin > plain_begin && is_space(static_cast<unsigned char>(text[begin - 1]))) --begin;
      }
      if (hit->rstrip) {
        while (end < text.size() && is_space(static_cast<unsigned char>(text[end]))) ++end;
      }
      if (begin > plain_begin) out.push_back({text.substr(plain_begin, begin - plain_begin), -1});
      out.push_back({text.substr(begin, end - begin), hit->id});
      plain_begin = i = end;
    }
    if (plain_begin < text.size()) out.push_back({text.substr(plain_begin), -1});
    return out;
  }

 private:
  const AddedToken* match_at(const std::string& text, size_t i) const {
    auto it = by_first_byte_.find(static_cast<unsigned char>(text[i]));
    if (it == by_first_byte_.end()) return nullptr;
    for (size_t index : it->second) {  // longest first
      const AddedToken& t = tokens_[index];
      if (text.compare(i, t.content.size(), t.content) != 0) continue;
      if (t.single_word) {
        const size_t end = i + t.content.size();
        if (i > 0 && is_word_char(static_cast<unsigned char>(text[i - 1]))) continue;
        if (end < text.size() && is_word_char(static_cast<unsigned char>(text[end]))) continue;
      }
      return &t;
    }
    return nullptr;
  }

  std::vector<AddedToken> tokens_;
  std::unordered_map<unsigned char, std::vector<size_t>> by_first_byte_;
};

class BpeModel {
 public:
  BpeModel(const json& spec, const std::string& where) {
    if (spec.value("type", std::string("BPE")) != "BPE") {
      throw Error(where + ": model type '" + spec.value("type", std::string()) +
                  "' is not supported (BPE only)");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (spec.contains(key) && !spec[key].is_null() && !spec[key].get<std::string>().empty()) {
        throw Error(where + ": BPE '" + key + "' is not supported");
      }
    }
    if (spec.contains("dropout") && !spec["dropout"].is_null() && spec["dropout"].get<double>() > 0) {
      throw Error(where + ": BPE dropout is not supported (tokenization must be deterministic)");
    }
    ignore_merges_ = spec.value("ignore_merges", false);
    byte_fallback_ = spec.value("byte_fallback", false);
    const json& vocab = spec.at("vocab");
    if (!vocab.is_object())
      throw Error(where + ": model.vocab must be an object of token: id, got " + json_brief(vocab));
    std::unordered_map<int32_t, const std::string*> owner;  // id -> token, for duplicates
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int32_t id =
          checked_id(it.value(), str_cat("model.vocab['", it.key(), "']"), vocab.size(), where);
      if (it.key().empty()) throw Error(where + ": model.vocab has an empty token");
      const auto [seen, fresh] = owner.emplace(id, &it.key());
      if (!fresh) {
        throw Error(str_cat(where, ": model.vocab gives id ", id, " to both '", *seen->second, "' and '",
                            it.key(), "' (ids must be unique)"));
      }
      vocab_[it.key()] = id;
    }
    if (spec.contains("unk_token") && spec["unk_token"].is_string()) {
      auto it = vocab_.find(spec["unk_token"].get<std::string>());
      if (it != vocab_.end()) unk_id_ = it->second;
    }
    int32_t rank = 0;
    for (const json& m : spec.at("merges")) {
      std::string a, b;
      if (m.is_string()) {  // "a b"
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos) throw Error(where + ": merge '" + s + "' is not of the form 'a b'");
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else {  // ["a", "b"]
        a = m.at(0).get<std::string>();
        b = m.at(1).get<std::string>();
      }
      const int32_t ia = id_of(a, where), ib = id_of(b, where), merged = id_of(a + b, where);
      merges_.emplace(key(ia, ib), std::make_pair(rank++, merged));
    }
  }

  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }

  void encode_word(const std::string& word, std::vector<int32_t>& out) const {
    if (ignore_merges_) {
      auto it = vocab_.find(word);
      if (it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      auto it = cache_.find(word);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> symbols = initial_symbols(word);
    merge_all(symbols);
    out.insert(out.end(), symbols.begin(), symbols.end());
    if (word.size() > kMaxCachedWordBytes) return;  // pathological words are not worth keeping
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() > 200000) cache_.clear();
    cache_.emplace(word, std::move(symbols));
  }

 private:
  static constexpr size_t kMaxCachedWordBytes = 256;

  // Repeatedly merges the lowest-ranked adjacent pair (leftmost on ties), as the crate does, in
  // O(n log n): candidate pairs wait in a heap ordered by (rank, position) and are dropped when
  // popped if either side has changed since; merged symbols keep their left position, so
  // "leftmost" stays the order of positions. A word of n symbols takes n log n steps, not n^2.
  void merge_all(std::vector<int32_t>& symbols) const {
    KTO_CHECK(symbols.size() < UINT32_MAX, "a word of ", symbols.size(), " symbols");
    const auto n = static_cast<uint32_t>(symbols.size());
    if (n < 2) return;
    struct Candidate {  // 16 bytes: a long word has as many of these as symbols
      int32_t rank;
      uint32_t pos;
      int32_t left_id, right_id;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<uint32_t> next(n), prev(n);  // n: none; a dead symbol has next == its own index
    for (uint32_t i = 0; i < n; ++i) {
      next[i] = i + 1;
      prev[i] = i == 0 ? n : i - 1;
    }
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto offer = [&](uint32_t pos) {
      if (pos >= n || next[pos] >= n) return;
      auto it = merges_.find(key(symbols[pos], symbols[next[pos]]));
      if (it != merges_.end()) heap.push({it->second.first, pos, symbols[pos], symbols[next[pos]]});
    };
    for (uint32_t i = 0; i + 1 < n; ++i) offer(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      const uint32_t right = next[c.pos];
      // Stale when either side changed since it was offered (merged away, or merged with another).
      if (right == c.pos || right >= n || symbols[c.pos] != c.left_id || symbols[right] != c.right_id)
        continue;
      symbols[c.pos] = merges_.at(key(c.left_id, c.right_id)).second;
      next[c.pos] = next[right];
      next[right] = right;  // dead
      if (next[c.pos] < n) prev[next[c.pos]] = c.pos;
      offer(c.pos);
      if (prev[c.pos] < n) offer(prev[c.pos]);
    }
    uint32_t out = 0;
    for (uint32_t i = 0; i < n; i = next[i]) symbols[out++] = symbols[i];
    symbols.resize(out);
  }

  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  int32_t id_of(const std::string& token, const std::string& where) const {
    auto it = vocab_.find(token);
    if (it == vocab_.end())
      throw Error(where + ": merge refers to '" + token + "', which is not in the vocab");
    return it->second;
  }
  std::vector<int32_t> initial_symbols(const std::string& word) const {
    std::vector<int32_t> symbols;
    for (size_t i = 0; i < word.size();) {
      const size_t n = static_cast<size_t>(utf8_length(static_cast<unsigned char>(word[i])));
      const std::string ch = word.substr(i, n);
      auto it = vocab_.find(ch);
      if (it != vocab_.end()) {
        symbols.push_back(it->second);
      } else if (byte_fallback_) {
        for (unsigned char b : ch) {
          char name[8];
          std::snprintf(name, sizeof(name), "<0x%02X>", b);
          auto bt = vocab_.find(name);
          if (bt == vocab_.end())
            throw Error(str_cat("byte fallback token ", name, " missing from the vocab"));
          symbols.push_back(bt->second);
        }
      } else if (unk_id_ >= 0) {
        symbols.push_back(unk_id_);
      } else {
        throw Error("character '" + ch + "' is not in the vocabulary and the tokenizer has no unk token");
      }
      i += n;
    }
    return symbols;
  }

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // pair -> (rank, merged id)
  bool ignore_merges_ = false, byte_fallback_ = false;
  int32_t unk_id_ = -1;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// A special token named in tokenizer_config.json: a string or {"content": ...}.
std::string config_token(const json& config, const char* key) {
  if (!config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v["content"].get<std::string>();
  return "";
}

class HfTokenizer : public Tokenizer {
 public:
  explicit HfTokenizer(const std::string& path) {
    path_ = path;
    json spec;
    try {
      spec = parse_json(read_text_file(path), path);
    } catch (const json::exception& e) {
      throw Error(path + ": not valid JSON: " + e.what());
    }
    try {
      build(spec, path);
    } catch (const json::exception& e) {  // with JSON_DIAGNOSTICS the message names the key's path
      throw Error(path + ": unexpected tokenizer.json structure: " + e.what());
    } catch (const Error& e) {  // every error names the file (parts such as regexes do not know it)
      const std::string what = e.what();
      if (what.rfind(path, 0) == 0) throw;
      throw Error(path + ": " + what);
    }
    sha256_ = sha256_file(path);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    if (!is_valid_utf8(text)) throw Error("text is not valid UTF-8");
    std::vector<int32_t> ids;
    for (const Segment& raw : raw_matcher_.split(std::string(text))) {
      if (raw.added_id >= 0) {
        ids.push_back(raw.added_id);
        continue;
      }
      const std::string normalized = normalizer_ ? normalizer_->apply(raw.text) : raw.text;
      for (const Segment& seg : normalized_matcher_.split(normalized)) {
        if (seg.added_id >= 0) {
          ids.push_back(seg.added_id);
          continue;
        }
        std::vector<std::string> pieces{seg.text};
        if (pre_tokenizer_) pre_tokenizer_->split(pieces);
        for (const std::string& piece : pieces) model_->encode_word(piece, ids);
      }
    }
    if (add_special_tokens && post_processor_) post_processor_->apply(ids);
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    for (int32_t id : ids) {
      if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() ||
          id_to_token_[static_cast<size_t>(id)].empty()) {
        throw Error(str_cat(path_, ": token id ", id, " is not in the vocabulary"));
      }
      if (skip_special_tokens && special_ids_.count(id)) continue;
      tokens.push_back(id_to_token_[static_cast<size_t>(id)]);
    }
    if (decoder_) return decoder_->decode(tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return pad_; }
  int32_t token_to_id(const std::string& token) const override {
    auto it = token_to_id_.find(token);
    return it == token_to_id_.end() ? -1 : it->second;
  }
  const char* kind() const override { return "hf-bpe"; }

 private:
  void build(const json& spec, const std::string& where) {
    model_ = std::make_unique<BpeModel>(spec.at("model"), where);
    normalizer_ = make_normalizer(spec.value("normalizer", json()), where);
    pre_tokenizer_ = make_pre_tokenizer(spec.value("pre_tokenizer", json()), where);
    post_processor_ = make_post_processor(spec.value("post_processor", json()), where);
    decoder_ = make_decoder(spec.value("decoder", json()), where);

    token_to_id_ = model_->vocab();
    std::vector<AddedToken> raw, normalized;
    static const json no_added = json::array();
    // A reference, not a copy: JSON_DIAGNOSTICS error paths then start at the root.
    const json& added = spec.contains("added_tokens") ? spec.at("added_tokens") : no_added;
    if (!added.is_array()) throw Error(where + ": added_tokens must be an array, got " + json_brief(added));
    const size_t tokens = model_->vocab().size() + added.size();
    std::unordered_map<int32_t, std::string> added_ids;
    for (size_t i = 0; i < added.size(); ++i) {
      const json& a = added[i];
      const std::string name = str_cat("added_tokens[", i, "]");
      AddedToken t;
      t.content = a.at("content").get<std::string>();
      if (t.content.empty()) throw Error(str_cat(where, ": ", name, " has an empty content"));
      t.id = checked_id(a.at("id"), name + ".id", tokens, where);
      if (const auto [seen, fresh] = added_ids.emplace(t.id, t.content); !fresh) {
        throw Error(str_cat(where, ": ", name, " '", t.content, "' has id ", t.id,
                            ", already the id of added token '", seen->second, "'"));
      }
      t.special = a.value("special", false);
      t.single_word = a.value("single_word", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.normalized = a.value("normalized", !t.special);
      token_to_id_[t.content] = t.id;
      if (t.special) special_ids_.insert(t.id);
      (t.normalized ? normalized : raw).push_back(t);
    }
    raw_matcher_ = AddedTokenMatcher(std::move(raw));
    normalized_matcher_ = AddedTokenMatcher(std::move(normalized));
    int32_t max_id = -1;
    for (const auto& [token, id] : token_to_id_) max_id = std::max(max_id, id);
    id_to_token_.assign(static_cast<size_t>(max_id + 1), "");
    for (const auto& [token, id] : token_to_id_) id_to_token_[static_cast<size_t>(id)] = token;
    resolve_special_ids(where);
  }

  // BOS/EOS/PAD from tokenizer_config.json beside the file; else the post-processor's
  // template and well-known names.
  void resolve_special_ids(const std::string& where) {
    const size_t slash = where.find_last_of('/');
    const std::string config_path =
        (slash == std::string::npos ? std::string() : where.substr(0, slash + 1)) + "tokenizer_config.json";
    if (path_exists(config_path)) {
      try {
        const json config = parse_json(read_text_file(config_path), config_path);
        bos_ = token_to_id(config_token(config, "bos_token"));
        eos_ = token_to_id(config_token(config, "eos_token"));
        pad_ = token_to_id(config_token(config, "pad_token"));
      } catch (const json::exception& e) {
        throw Error(config_path + ": not valid JSON: " + e.what());
      }
    }
    auto first_known = [&](std::initializer_list<const char*> names) {
      for (const char* n : names) {
        if (const int32_t id = token_to_id(n); id >= 0) return id;
      }
      return int32_t{-1};
    };
    if (bos_ < 0 && post_processor_ && !post_processor_->prefix().empty())
      bos_ = post_processor_->prefix().front();
    if (eos_ < 0 && post_processor_ && !post_processor_->suffix().empty())
      eos_ = post_processor_->suffix().back();
    if (bos_ < 0) bos_ = first_known({"<s>", "<|begin_of_text|>", "<|endoftext|>"});
    if (eos_ < 0) eos_ = first_known({"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>"});
    if (pad_ < 0) pad_ = first_known({"<pad>", "<|padding|>", "<|finetune_right_pad_id|>"});
  }

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  AddedTokenMatcher raw_matcher_{{}}, normalized_matcher_{{}};
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::set<int32_t> special_ids_;
  int32_t bos_ = -1, eos_ = -1, pad_ = -1;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path) {
  return std::make_unique<HfTokenizer>(path);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  if (is_directory(path)) {
    if (path_exists(join_path(path, "tokenizer.json")))
      return load_hf_tokenizer(join_path(path, "tokenizer.json"));
    if (path_exists(join_path(path, "tokenizer.model")))
      return load_sentencepiece_tokenizer(join_path(path, "tokenizer.model"));
    throw Error(path + ": no tokenizer.json or tokenizer.model in this directory");
  }
  if (!path_exists(path)) throw Error(path + ": no such tokenizer file");
  if (ends_with(path, ".json")) return load_hf_tokenizer(path);
  return load_sentencepiece_tokenizer(path);
}

}  // namespace kto::tok
