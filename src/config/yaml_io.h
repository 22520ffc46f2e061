// Visitors that walk a config struct's visit() list: YAML in, YAML out, Markdown reference.
// Private to src/config.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kto/loss/options.h"
#include "kto/util/check.h"
#include "kto/util/choice.h"

namespace kto::config {

// Where values came from: a file, plus the keys that --set replaced.
struct Origin {
  std::string file;
  std::set<std::string> overridden;
  // "file:line" or "--set key" for error messages.
  std::string where(const std::string& key, const YAML::Node& node) const;
};

// "did you mean 'x'?" for the closest candidate within a small edit distance, else "".
std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates);

// Scalar conversions with the expected type for error messages. Return false on mismatch.
bool read_scalar(const YAML::Node& node, bool& out);
bool read_scalar(const YAML::Node& node, int64_t& out);
bool read_scalar(const YAML::Node& node, double& out);
bool read_scalar(const YAML::Node& node, std::string& out);
// A list of strings (a single string is a one-element list).
bool read_scalar(const YAML::Node& node, std::vector<std::string>& out);
// A positive number or `auto`.
bool read_scalar(const YAML::Node& node, loss::ClassWeight& out);
const char* type_name(const bool&);
const char* type_name(const int64_t&);
const char* type_name(const double&);
const char* type_name(const std::string&);
const char* type_name(const std::vector<std::string>&);
const char* type_name(const loss::ClassWeight&);
std::string node_text(const YAML::Node& node);
// The shortest decimal text that reads back as exactly `value` ("1e-05", not 1.0000000000000001e-05).
std::string shortest_double(double value);
// Values as YAML emits them; doubles in their shortest exact form.
template <class T>
const T& emit_form(const T& value) {
  return value;
}
inline std::string emit_form(const double& value) { return shortest_double(value); }
inline std::string emit_form(const loss::ClassWeight& w) {
  return w.automatic ? "auto" : shortest_double(w.value);
}

class YamlReader {
 public:
  YamlReader(const YAML::Node& node, std::string prefix, const Origin& origin)
      : node_(node), prefix_(std::move(prefix)), origin_(origin) {}

  template <class T>
  void field(const char* key, T& value, const char* /*doc*/) {
    read(key, value, false);
  }
  template <class T>
  void required(const char* key, T& value, const char* /*doc*/) {
    read(key, value, true);
  }
  template <class E, size_t N>
  void choice(const char* key, E& value, const ChoiceTable<E, N>& table, const char* /*doc*/) {
    std::string text;
    if (!read(key, text, false)) return;
    if (const std::optional<E> parsed = parse_choice(table, text)) {
      value = *parsed;
      return;
    }
    fail(key, node_[key], "'" + text + "' is not one of: " + choice_names(table));
  }
  template <class S>
  void section(const char* key, S& sub, const char* /*doc*/) {
    known_.push_back(key);
    const YAML::Node child = node_[key];
    if (!child || child.IsNull()) return;  // absent sections keep their defaults
    if (!child.IsMap()) fail(key, child, "expected a section (a map of keys), got " + node_text(child));
    YamlReader reader(child, prefix_ + key + ".", origin_);
    sub.visit(reader);
    reader.finish();
  }
  // Unknown keys in this map are errors.
  void finish() const;

 private:
  template <class T>
  bool read(const char* key, T& value, bool is_required) {
    known_.push_back(key);
    const YAML::Node child = node_[key];
    if (!child || child.IsNull()) {
      // Reported by finish(), after unknown keys: a misspelt key explains a missing one.
      if (is_required && missing_.empty()) missing_ = key;
      return false;
    }
    if (!read_scalar(child, value)) {
      fail(key, child, std::string("expected ") + type_name(value) + ", got " + node_text(child));
    }
    return true;
  }
  [[noreturn]] void fail(const std::string& key, const YAML::Node& at, const std::string& what) const;

  YAML::Node node_;
  std::string prefix_;
  const Origin& origin_;
  std::vector<std::string> known_;
  std::string missing_;  // first required key that was absent
};

class YamlWriter {
 public:
  YamlWriter(YAML::Emitter& out, bool comments) : out_(out), comments_(comments) {}
  template <class T>
  void field(const char* key, T& value, const char* doc) {
    out_ << YAML::Key << key << YAML::Value << emit_form(value);
    if (comments_) out_ << YAML::Comment(doc);
  }
  template <class T>
  void required(const char* key, T& value, const char* doc) {
    field(key, value, doc);
  }
  template <class E, size_t N>
  void choice(const char* key, E& value, const ChoiceTable<E, N>& table, const char* doc) {
    std::string text = choice_name(table, value);
    field(key, text, doc);
  }
  template <class S>
  void section(const char* key, S& sub, const char* doc) {
    out_ << YAML::Key << key;
    if (comments_) out_ << YAML::Comment(doc);
    out_ << YAML::Value << YAML::BeginMap;
    sub.visit(*this);
    out_ << YAML::EndMap;
  }

 private:
  YAML::Emitter& out_;
  bool comments_;
};

class MarkdownWriter {
 public:
  explicit MarkdownWriter(std::string& out, std::string prefix = "")
      : out_(out), prefix_(std::move(prefix)) {}
  template <class T>
  void field(const char* key, T& value, const char* doc) {
    row(key, type_name(value), default_text(value), doc);
  }
  template <class T>
  void required(const char* key, T& value, const char* doc) {
    row(key, type_name(value), "required", doc);
  }
  template <class E, size_t N>
  void choice(const char* key, E& value, const ChoiceTable<E, N>& table, const char* doc) {
    row(key, choice_names(table, " \\| "), default_text(std::string(choice_name(table, value))), doc);
  }
  template <class S>
  void section(const char* key, S& sub, const char* doc) {
    out_ += "| **`" + prefix_ + key + "`** | section | | " + doc + " |\n";
    MarkdownWriter child(out_, prefix_ + key + ".");
    sub.visit(child);
  }

 private:
  template <class T>
  static std::string default_text(const T& value) {
    YAML::Emitter e;
    e << emit_form(value);
    const std::string text = e.c_str();
    return text.empty() || text == "\"\"" || text == "''" ? "\"\"" : "`" + text + "`";
  }
  void row(const char* key, const std::string& type, const std::string& dflt, const char* doc) {
    out_ += "| `" + prefix_ + key + "` | " + type + " | " + dflt + " | " + doc + " |\n";
  }
  std::string& out_;
  std::string prefix_;
};

}  // namespace kto::config
