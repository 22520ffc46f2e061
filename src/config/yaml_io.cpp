#include "yaml_io.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace kto::config {

using detail::str_cat;

std::string Origin::where(const std::string& key, const YAML::Node& node) const {
  if (overridden.count(key)) return "--set " + key;
  // A key that only --set introduced (--set a.b.c=1 with no 'a' in the file) is the --set's fault.
  for (const std::string& o : overridden) {
    if (o.size() > key.size() && o.compare(0, key.size(), key) == 0 && o[key.size()] == '.' &&
        node.Mark().line < 0)
      return "--set " + o;
  }
  const YAML::Mark mark = node.Mark();
  if (mark.line >= 0) return str_cat(file, ":", mark.line + 1);
  return file;
}

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, key.size() / 3) + 1;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(key, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best.empty() ? "" : "did you mean '" + best + "'?";
}

std::string node_text(const YAML::Node& node) {
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a list";
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  return "nothing";
}

std::string shortest_double(double value) {
  char text[40];
  if (std::abs(value) < 1e15 && value == std::trunc(value)) {
    std::snprintf(text, sizeof(text), "%.0f", value);  // 10000, not 1e+04
    return text;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(text, sizeof(text), "%.*g", precision, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  return text;
}

bool read_scalar(const YAML::Node& node, bool& out) {
  if (!node.IsScalar()) return false;
  try {
    out = node.as<bool>();
    return true;
  } catch (const YAML::Exception&) {
    return false;
  }
}

bool read_scalar(const YAML::Node& node, int64_t& out) {
  if (!node.IsScalar()) return false;
  try {
    out = node.as<long long>();
    return true;
  } catch (const YAML::Exception&) {
    return false;
  }
}

bool read_scalar(const YAML::Node& node, double& out) {
  if (!node.IsScalar()) return false;
  try {
    out = node.as<double>();
    return true;
  } catch (const YAML::Exception&) {
    return false;
  }
}

bool read_scalar(const YAML::Node& node, std::string& out) {
  if (!node.IsScalar()) return false;
  out = node.Scalar();
  return true;
}

bool read_scalar(const YAML::Node& node, std::vector<std::string>& out) {
  out.clear();
  if (node.IsScalar()) {
    out.push_back(node.Scalar());
    return true;
  }
  if (!node.IsSequence()) return false;
  for (const YAML::Node& item : node) {
    if (!item.IsScalar()) return false;
    out.push_back(item.Scalar());
  }
  return true;
}

bool read_scalar(const YAML::Node& node, loss::ClassWeight& out) {
  if (!node.IsScalar()) return false;
  if (node.Scalar() == "auto") {
    out = {true, 1.0};
    return true;
  }
  out.automatic = false;
  return read_scalar(node, out.value);
}

const char* type_name(const std::vector<std::string>&) { return "list of strings"; }
const char* type_name(const loss::ClassWeight&) { return "number or auto"; }
const char* type_name(const bool&) { return "bool"; }
const char* type_name(const int64_t&) { return "int"; }
const char* type_name(const double&) { return "float"; }
const char* type_name(const std::string&) { return "string"; }

void YamlReader::fail(const std::string& key, const YAML::Node& at, const std::string& what) const {
  throw ConfigError(str_cat(origin_.where(prefix_ + key, at), ": key '", prefix_, key, "': ", what));
}

void YamlReader::finish() const {
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    const std::string key = it->first.Scalar();
    if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
    std::string message =
        str_cat(origin_.where(prefix_ + key, it->first), ": unknown key '", prefix_, key, "'");
    const std::string hint = did_you_mean(key, known_);
    if (!hint.empty()) message += " (" + hint + ")";
    std::string valid;
    for (const std::string& k : known_) valid += (valid.empty() ? "" : ", ") + k;
    message += "; valid keys" +
               (prefix_.empty() ? std::string() : " under '" + prefix_.substr(0, prefix_.size() - 1) + "'") +
               ": " + valid;
    throw ConfigError(message);
  }
  if (!missing_.empty()) fail(missing_, node_, "missing required key");
}

}  // namespace kto::config
