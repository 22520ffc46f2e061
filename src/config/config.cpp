#include "kto/config/config.h"

#include "kto/fsdp/shard_group.h"
#include "kto/util/files.h"
#include "yaml_io.h"

namespace kto::config {

using detail::str_cat;

namespace {

// Applies "a.b.c=value" to the YAML tree. The value is parsed as YAML (so lists and numbers
// work); an empty value sets the empty string.
std::string apply_override(YAML::Node& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError("--set " + assignment + ": expected key=value (e.g. --set model.dtype=bf16)");
  }
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  YAML::Node value;
  try {
    value = text.empty() ? YAML::Node(std::string()) : YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError("--set " + assignment + ": value is not valid YAML: " + e.msg);
  }
  // yaml-cpp nodes are references: walk with reset(), never with assignment.
  YAML::Node cur;
  cur.reset(root);
  std::string path;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i].empty()) throw ConfigError("--set " + assignment + ": empty key component");
    path += (path.empty() ? "" : ".") + parts[i];
    YAML::Node next = cur[parts[i]];
    if (next && !next.IsNull() && !next.IsMap()) {
      throw ConfigError("--set " + assignment + ": '" + path + "' is a value, not a section");
    }
    if (!next || next.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = cur[parts[i]];
    }
    cur.reset(next);
  }
  cur[parts.back()] = value;
  return key;
}

}  // namespace

void Config::validate(const std::string& source) const {
  const bool has_architecture = model.architecture.vocab_size != 0 || model.architecture.hidden_size != 0;
  if (model.path.empty() && !has_architecture) {
    throw ConfigError(source +
                      ": section 'model': set 'path' (a Hugging Face directory) or an 'architecture' section "
                      "(random initialisation)");
  }
  if (!model.path.empty() && has_architecture) {
    throw ConfigError(source +
                      ": section 'model': 'path' and 'architecture' are exclusive (the checkpoint's "
                      "config.json defines the architecture)");
  }
  if (has_architecture) model.architecture.validate(source, "model.architecture.");
  auto fail = [&](const char* key, const std::string& what) { throw key_error(source, key, what); };
  if (!(model.init_std > 0 && model.init_std <= 10))
    fail("model.init_std", str_cat("must be in (0, 10], got ", model.init_std));
  data.validate(source, "data.");
  loss.validate(source, "loss.");
  optim.validate(source, "optim.");
  if (schedule.warmup_steps < 0) fail("schedule.warmup_steps", "must be >= 0");
  if (!(schedule.min_lr_ratio >= 0 && schedule.min_lr_ratio <= 1))
    fail("schedule.min_lr_ratio", "must be in [0, 1]");
  if (train.steps < 0) fail("train.steps", "must be >= 0 (0: derived from epochs)");
  if (!(train.epochs > 0 && train.epochs <= 1e6))
    fail("train.epochs", str_cat("must be in (0, 1e6], got ", train.epochs));
  if (!(train.peak_gflops >= 0 && train.peak_gflops <= 1e12))
    fail("train.peak_gflops", str_cat("must be in [0, 1e12] (0: measured), got ", train.peak_gflops));
  if (train.eval_every < 0) fail("train.eval_every", "must be >= 0");
  if (train.log_every < 1) fail("train.log_every", "must be >= 1");
  if (train.max_nonfinite_steps < 1) fail("train.max_nonfinite_steps", "must be >= 1");
  if (train.export_dtype != "auto" && train.export_dtype != "fp32" && train.export_dtype != "bf16")
    fail("train.export_dtype", "must be auto, fp32 or bf16, got '" + train.export_dtype + "'");
  if (train.export_tokenizer.empty())
    fail("train.export_tokenizer", "must be auto, none or a tokenizer file or directory");
  if (ckpt.every < 0) fail("ckpt.every", "must be >= 0 (0: only at the end)");
  if (ckpt.keep < 1) fail("ckpt.keep", "must be >= 1");
  if (ckpt.resume.empty()) fail("ckpt.resume", "must be auto, never or a checkpoint directory");
  if (run.threads < 0) fail("run.threads", str_cat("must be >= 0, got ", run.threads));
  if (run.dir.empty()) throw ConfigError(source + ": key 'run.dir': must not be empty");
  fsdp::ShardGroupSpec::parse(dist.shard_group, source);
  if (eval.samples < 0) fail("eval.samples", "must be >= 0 (0: none)");
  if (eval.sample_every < 1) fail("eval.sample_every", "must be >= 1");
  if (eval.max_new_tokens < 1) fail("eval.max_new_tokens", "must be >= 1");
  if (!(eval.temperature >= 0 && eval.temperature <= 1e4))
    fail("eval.temperature", "must be in [0, 1e4] (0: greedy)");
  if (!(eval.top_p > 0 && eval.top_p <= 1)) fail("eval.top_p", "must be in (0, 1]");
  if (eval.samples > 0 && data.eval.empty()) fail("eval.samples", "needs eval data (data.eval)");
}

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(str_cat(source, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError(source + ": expected a map of sections at the top level");

  Origin origin{source, {}};
  for (const std::string& assignment : overrides) origin.overridden.insert(apply_override(root, assignment));

  Config config;
  YamlReader reader(root, "", origin);
  config.visit(reader);
  reader.finish();
  config.model.architecture.resolve_defaults();
  try {
    config.validate(source);
  } catch (const ConfigError& e) {
    // A value that a --set gave is the --set's fault, not the file's.
    for (const std::string& assignment : overrides) {
      if (!e.key().empty() && assignment.compare(0, e.key().size() + 1, e.key() + "=") == 0) {
        throw key_error("--set " + assignment, e.key(), e.complaint());
      }
    }
    throw;
  }
  return config;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_config(read_text_file(path), path, overrides);
}

std::string dump_config(const Config& config, bool with_comments) {
  Config copy = config;  // visit() takes non-const references
  YAML::Emitter out;
  out << YAML::BeginMap;
  YamlWriter writer(out, with_comments);
  copy.visit(writer);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

namespace {

void flatten(const YAML::Node& node, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node)
      flatten(kv.second, prefix + (prefix.empty() ? "" : ".") + kv.first.Scalar(), out);
  } else if (node.IsSequence()) {
    std::string text = "[";
    for (size_t i = 0; i < node.size(); ++i)
      text += (i ? ", " : "") + (node[i].IsScalar() ? node[i].Scalar() : "?");
    out[prefix] = text + "]";
  } else {
    out[prefix] = node.IsScalar() ? node.Scalar() : "";
  }
}

}  // namespace

std::map<std::string, std::string> flatten_config(const std::string& yaml_text, const std::string& source) {
  std::map<std::string, std::string> keys;
  flatten(YAML::Load(dump_config(Config{})), "", keys);  // the defaults
  try {
    flatten(YAML::Load(yaml_text), "", keys);
  } catch (const YAML::Exception& e) {
    throw ConfigError(str_cat(source, ": invalid YAML: ", e.msg));
  }
  return keys;
}

std::string config_reference_markdown() {
  Config defaults;
  std::string text = "| key | type | default | description |\n|---|---|---|---|\n";
  MarkdownWriter writer(text);
  defaults.visit(writer);
  return text;
}

}  // namespace kto::config
