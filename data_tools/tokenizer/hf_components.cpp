#include "hf_components.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "kto/util/check.h"
#include "regex.h"
#include "text.h"

namespace kto::tok {
namespace {

using json = nlohmann::json;
using detail::str_cat;

// GPT-2's split pattern, the default of the ByteLevel pre-tokenizer (use_regex: true).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

[[noreturn]] void unsupported(const std::string& where, const char* stage, const std::string& type) {
  throw Error(str_cat(where, ": ", stage, " type '", type, "' is not supported by kto's tokenizer"));
}

std::string type_of(const json& spec, const std::string& where, const char* stage) {
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    throw Error(str_cat(where, ": ", stage, " without a 'type'"));
  }
  return spec["type"].get<std::string>();
}

// A pattern object {"String": "..."} or {"Regex": "..."} as a regex.
std::string pattern_of(const json& spec, const std::string& where) {
  const json& p = spec.at("pattern");
  if (p.contains("Regex")) return p["Regex"].get<std::string>();
  if (p.contains("String")) {
    std::string quoted;  // literal string -> escaped regex
    for (char c : p["String"].get<std::string>()) {
      if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) quoted += '\\';
      quoted += c;
    }
    return quoted;
  }
  throw Error(where + ": pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

// ---- normalizers ----------------------------------------------------------------------------

class FormNormalizer : public Normalizer {
 public:
  explicit FormNormalizer(NormalForm f) : form_(f) {}
  std::string apply(std::string_view text) const override { return normalize(text, form_); }

 private:
  NormalForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  std::string apply(std::string_view text) const override { return lowercase(text); }
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(const std::string& pattern, std::string content)
      : regex_(pattern), content_(std::move(content)) {}
  std::string apply(std::string_view text) const override {
    std::string out;
    size_t last = 0;
    for (const auto& [b, e] : regex_.find_all(text)) {
      out.append(text.substr(last, b - last));
      out += content_;
      last = e;
    }
    out.append(text.substr(last));
    return out;
  }

 private:
  Regex regex_;
  std::string content_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prefix_(std::move(p)) {}
  std::string apply(std::string_view text) const override {
    return text.empty() ? std::string() : prefix_ + std::string(text);
  }

 private:
  std::string prefix_;
};

class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> stages;
  std::string apply(std::string_view text) const override {
    std::string s(text);
    for (const auto& n : stages) s = n->apply(s);
    return s;
  }
};

// ---- pre-tokenizers -------------------------------------------------------------------------

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

SplitBehavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  throw Error(where + ": unknown Split behavior '" + name + "'");
}

// Splits each piece at the regex matches, keeping them according to `behavior` (HF semantics).
void split_pieces(std::vector<std::string>& pieces, const Regex& regex, SplitBehavior behavior, bool invert) {
  std::vector<std::string> out;
  for (const std::string& piece : pieces) {
    // Alternating (range, is_delimiter) spans covering the piece.
    std::vector<std::pair<std::string, bool>> spans;
    size_t last = 0;
    for (const auto& [b, e] : regex.find_all(piece)) {
      if (b > last) spans.emplace_back(piece.substr(last, b - last), invert);
      spans.emplace_back(piece.substr(b, e - b), !invert);
      last = e;
    }
    if (last < piece.size()) spans.emplace_back(piece.substr(last), invert);

    if (behavior == SplitBehavior::merged_with_next) {
      // Mirror image of merged_with_previous (HF folds the spans in reverse).
      std::reverse(spans.begin(), spans.end());
    }
    std::vector<std::string> result;
    bool last_was_delim = false;
    for (auto& [text, delim] : spans) {
      switch (behavior) {
        case SplitBehavior::removed:
          if (!delim) result.push_back(std::move(text));
          break;
        case SplitBehavior::isolated: result.push_back(std::move(text)); break;
        case SplitBehavior::merged_with_previous:
          if (delim && !last_was_delim && !result.empty()) {
            result.back() += text;
          } else {
            result.push_back(std::move(text));
          }
          break;
        case SplitBehavior::merged_with_next:
          if (delim && !last_was_delim && !result.empty()) {
            result.back() = text + result.back();
          } else {
            result.push_back(std::move(text));
          }
          break;
        case SplitBehavior::contiguous:
          if (delim && last_was_delim && !result.empty()) {
            result.back() += text;
          } else {
            result.push_back(std::move(text));
          }
          break;
      }
      last_was_delim = delim;
    }
    if (behavior == SplitBehavior::merged_with_next) std::reverse(result.begin(), result.end());
    for (auto& r : result) {
      if (!r.empty()) out.push_back(std::move(r));
    }
  }
  pieces = std::move(out);
}

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space),
        regex_(use_regex ? std::make_unique<Regex>(kGpt2Pattern) : nullptr) {}
  void split(std::vector<std::string>& pieces) const override {
    if (add_prefix_space_) {
      for (std::string& p : pieces) {
        if (!p.empty() && p[0] != ' ') p.insert(p.begin(), ' ');
      }
    }
    if (regex_) split_pieces(pieces, *regex_, SplitBehavior::isolated, false);
    for (std::string& p : pieces) p = bytes_to_unicode(p);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(const std::string& pattern, SplitBehavior behavior, bool invert)
      : regex_(pattern), behavior_(behavior), invert_(invert) {}
  void split(std::vector<std::string>& pieces) const override {
    split_pieces(pieces, regex_, behavior_, invert_);
  }

 private:
  Regex regex_;
  SplitBehavior behavior_;
  bool invert_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> stages;
  void split(std::vector<std::string>& pieces) const override {
    for (const auto& s : stages) s->split(pieces);
  }
};

// ---- post-processors ------------------------------------------------------------------------

class TemplatePostProcessor : public PostProcessor {
 public:
  TemplatePostProcessor(const json& spec, const std::string& where) {
    const json& single = spec.at("single");
    const json& specials = spec.contains("special_tokens") ? spec["special_tokens"] : json::object();
    bool seen_sequence = false;
    for (const json& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken"))
        throw Error(where + ": TemplateProcessing item is neither Sequence nor SpecialToken");
      const std::string name = item["SpecialToken"].at("id").get<std::string>();
      if (!specials.contains(name))
        throw Error(where + ": TemplateProcessing uses undefined special token '" + name + "'");
      for (const json& id : specials[name].at("ids"))
        (seen_sequence ? suffix_ : prefix_).push_back(id.get<int32_t>());
    }
  }
  void apply(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  }
  std::vector<int32_t> prefix() const override { return prefix_; }
  std::vector<int32_t> suffix() const override { return suffix_; }

 private:
  std::vector<int32_t> prefix_, suffix_;
};

class NoOpPostProcessor : public PostProcessor {
 public:
  void apply(std::vector<int32_t>&) const override {}
};

class SequencePostProcessor : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> stages;
  void apply(std::vector<int32_t>& ids) const override {
    for (const auto& s : stages) s->apply(ids);
  }
  std::vector<int32_t> prefix() const override {
    std::vector<int32_t> out;
    for (const auto& s : stages) {
      auto p = s->prefix();
      out.insert(out.begin(), p.begin(), p.end());
    }
    return out;
  }
  std::vector<int32_t> suffix() const override {
    std::vector<int32_t> out;
    for (const auto& s : stages) {
      auto p = s->suffix();
      out.insert(out.end(), p.begin(), p.end());
    }
    return out;
  }
};

// ---- decoders -------------------------------------------------------------------------------

class ByteLevelDecoder : public Decoder {
 public:
  std::string decode(const std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& t : tokens) joined += t;
    return unicode_to_bytes(joined);
  }
};

class SequenceDecoder : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> stages;
  std::string decode(const std::vector<std::string>& tokens) const override {
    std::vector<std::string> current = tokens;
    for (const auto& s : stages) current = {s->decode(current)};
    std::string out;
    for (const auto& t : current) out += t;
    return out;
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(const std::string& pattern, std::string content)
      : normalizer_(pattern, std::move(content)) {}
  std::string decode(const std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const auto& t : tokens) joined += t;
    return normalizer_.apply(joined);
  }

 private:
  ReplaceNormalizer normalizer_;
};

// <0xAB> tokens -> the byte 0xAB (SentencePiece-style byte fallback in tokenizer.json form).
class ByteFallbackDecoder : public Decoder {
 public:
  std::string decode(const std::vector<std::string>& tokens) const override {
    std::string out;
    for (const auto& t : tokens) {
      if (t.size() == 6 && t.rfind("<0x", 0) == 0 && t.back() == '>') {
        out += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
      } else {
        out += t;
      }
    }
    return out;
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  std::string decode(const std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const auto& t : tokens) joined += t;
    for (int i = 0; i < start_ && joined.rfind(content_, 0) == 0; ++i) joined.erase(0, content_.size());
    for (int i = 0; i < stop_ && joined.size() >= content_.size() &&
                    joined.compare(joined.size() - content_.size(), content_.size(), content_) == 0;
         ++i) {
      joined.resize(joined.size() - content_.size());
    }
    return joined;
  }

 private:
  std::string content_;
  int start_, stop_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, where, "normalizer");
  if (type == "NFC") return std::make_unique<FormNormalizer>(NormalForm::nfc);
  if (type == "NFD") return std::make_unique<FormNormalizer>(NormalForm::nfd);
  if (type == "NFKC") return std::make_unique<FormNormalizer>(NormalForm::nfkc);
  if (type == "NFKD") return std::make_unique<FormNormalizer>(NormalForm::nfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(pattern_of(spec, where),
                                               spec.at("content").get<std::string>());
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(spec.at("prepend").get<std::string>());
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    for (const json& s : spec.at("normalizers")) {
      if (auto n = make_normalizer(s, where)) seq->stages.push_back(std::move(n));
    }
    return seq;
  }
  unsupported(where, "normalizer", type);
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, where, "pre_tokenizer");
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(spec.value("add_prefix_space", true),
                                                   spec.value("use_regex", true));
  }
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(pattern_of(spec, where),
                                               parse_behavior(spec.at("behavior").get<std::string>(), where),
                                               spec.value("invert", false));
  }
  if (type == "Digits") {
    const bool individual = spec.value("individual_digits", false);
    return std::make_unique<SplitPreTokenizer>(individual ? "\\p{N}" : "\\p{N}+", SplitBehavior::isolated,
                                               false);
  }
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePreTokenizer>();
    for (const json& s : spec.at("pretokenizers")) {
      if (auto p = make_pre_tokenizer(s, where)) seq->stages.push_back(std::move(p));
    }
    return seq;
  }
  unsupported(where, "pre_tokenizer", type);
}

std::unique_ptr<PostProcessor> make_post_processor(const json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, where, "post_processor");
  if (type == "ByteLevel") return std::make_unique<NoOpPostProcessor>();  // offsets only
  if (type == "TemplateProcessing") return std::make_unique<TemplatePostProcessor>(spec, where);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePostProcessor>();
    for (const json& s : spec.at("processors")) {
      if (auto p = make_post_processor(s, where)) seq->stages.push_back(std::move(p));
    }
    return seq;
  }
  unsupported(where, "post_processor", type);
}

std::unique_ptr<Decoder> make_decoder(const json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = type_of(spec, where, "decoder");
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<SequenceDecoder>();  // joining is what every stage does
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(pattern_of(spec, where), spec.at("content").get<std::string>());
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(spec.at("content").get<std::string>(), spec.value("start", 0),
                                          spec.value("stop", 0));
  }
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    for (const json& s : spec.at("decoders")) {
      if (auto d = make_decoder(s, where)) seq->stages.push_back(std::move(d));
    }
    return seq;
  }
  unsupported(where, "decoder", type);
}

}  // namespace kto::tok
