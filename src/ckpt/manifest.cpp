// manifest.yaml: writing, reading (with errors naming the file and key), verification.
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <cstring>

#include "kto/ckpt/checkpoint.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/log.h"
#include "kto/util/sha256.h"

namespace kto::ckpt {

using detail::str_cat;

constexpr const char* kChecksumKey = "manifest_sha256: ";

std::string manifest_yaml(const Manifest& m) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "format_version" << YAML::Value << m.format_version;
  // 2: the manifest ends with its checksum (below); 1 (older) had none.
  out << YAML::Key << "manifest_version" << YAML::Value << 2;
  out << YAML::Key << "step" << YAML::Value << m.step;
  out << YAML::Key << "world_size" << YAML::Value << m.world_size;
  out << YAML::Key << "shard_group_size" << YAML::Value << m.shard_group_size;
  out << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap << YAML::Key << "name" << YAML::Value
      << m.optimizer << YAML::Key << "steps" << YAML::Value << m.optimizer_steps << YAML::Key
      << "state_tensors" << YAML::Value << m.state_tensors << YAML::Key << "master_dtype" << YAML::Value
      << m.master_dtype << YAML::EndMap;
  out << YAML::Key << "sampler" << YAML::Value << YAML::BeginMap << YAML::Key << "epoch" << YAML::Value
      << m.sampler.epoch << YAML::Key << "position" << YAML::Value << m.sampler.position << YAML::EndMap;
  out << YAML::Key << "units" << YAML::Value << YAML::BeginSeq;
  for (const UnitEntry& u : m.units) {
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << u.name << YAML::Key
        << "numel" << YAML::Value << u.numel << YAML::Key << "padded_numel" << YAML::Value << u.padded_numel
        << YAML::Key << "shard_numel" << YAML::Value << u.shard_numel << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::Key << "shards" << YAML::Value << YAML::BeginSeq;
  for (const ShardEntry& s : m.shards) {
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "file" << YAML::Value << s.file << YAML::Key
        << "sha256" << YAML::Value << s.sha256 << YAML::Key << "bytes" << YAML::Value << s.bytes
        << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::Key << "reference_identity" << YAML::Value << m.reference_identity;
  out << YAML::Key << "model_source" << YAML::Value << m.model_source;
  if (!m.identity.empty()) {
    out << YAML::Key << "identity" << YAML::Value << YAML::BeginMap;
    for (const auto& [key, value] : m.identity) out << YAML::Key << key << YAML::Value << value;
    out << YAML::EndMap;
  }
  out << YAML::Key << "created" << YAML::Value << m.created;
  out << YAML::Key << "producer" << YAML::Value << m.producer;
  out << YAML::Key << "config" << YAML::Value << YAML::Literal << m.config_yaml;
  out << YAML::EndMap;
  // Last: the checksum of everything above, so a manifest cut short anywhere (inside the
  // embedded config, say, where what is left still parses) is detected.
  const std::string body = std::string(out.c_str()) + "\n";
  return body + kChecksumKey + sha256_hex(body.data(), body.size()) + "\n";
}

namespace {

// The body of a manifest after its checksum line has been verified and removed. A manifest of
// version 2 (it says so near its top) must end with its checksum; one written before checksums
// (no manifest_version) is returned as it is, with *had_checksum false.
std::string verified_body(const std::string& text, const std::string& path, bool* had_checksum) {
  const size_t at = text.rfind(kChecksumKey);
  *had_checksum = at != std::string::npos && (at == 0 || text[at - 1] == '\n');
  if (!*had_checksum) {
    if (text.find("\nmanifest_version: ") != std::string::npos) {
      throw Error(path + ": the manifest ends before its checksum line (cut short: an interrupted copy?)");
    }
    return text;
  }
  const std::string body = text.substr(0, at);
  std::string sha = text.substr(at + std::strlen(kChecksumKey));
  while (!sha.empty() && (sha.back() == '\n' || sha.back() == '\r')) sha.pop_back();
  if (sha != sha256_hex(body.data(), body.size())) {
    throw Error(path + ": the manifest does not match its checksum (damaged or edited)");
  }
  return body;
}

// The manifest's numbers, each within what a checkpoint of this kto can hold.
void check_values(const Manifest& m, const std::string& path) {
  auto fail = [&](const std::string& key, const std::string& what) {
    throw Error(str_cat(path, ": key '", key, "': ", what));
  };
  auto in_range = [&](const std::string& key, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) fail(key, str_cat(v, " is outside [", lo, ", ", hi, "]"));
  };
  constexpr int64_t kMaxElements = int64_t{1} << 40;  // per unit: far above any real block or embedding
  in_range("step", m.step, 0, int64_t{1} << 40);
  in_range("world_size", m.world_size, 1, int64_t{1} << 20);
  in_range("shard_group_size", m.shard_group_size, 1, m.world_size);
  if (m.world_size % m.shard_group_size != 0)
    fail("shard_group_size", str_cat(m.shard_group_size, " does not divide world_size ", m.world_size));
  const int64_t S = m.shard_group_size;
  in_range("optimizer.steps", m.optimizer_steps, 0, m.step);
  if (m.optimizer != "adamw" && m.optimizer != "rmsprop")
    fail("optimizer.name", "'" + m.optimizer + "' is not adamw or rmsprop");
  in_range("optimizer.state_tensors", m.state_tensors, m.optimizer == "adamw" ? 2 : 1,
           m.optimizer == "adamw" ? 2 : 1);
  if (m.master_dtype != "float32" && m.master_dtype != "float64")
    fail("optimizer.master_dtype", "'" + m.master_dtype + "' is not float32 or float64");
  in_range("sampler.epoch", m.sampler.epoch, 0, int64_t{1} << 40);
  in_range("sampler.position", m.sampler.position, 0, int64_t{1} << 40);
  if (m.units.empty()) fail("units", "no units listed");
  for (size_t i = 0; i < m.units.size(); ++i) {
    const UnitEntry& u = m.units[i];
    const std::string key = str_cat("units[", i, "] (", u.name, ")");
    in_range(key + ".numel", u.numel, 1, kMaxElements);
    in_range(key + ".shard_numel", u.shard_numel, 1, kMaxElements);
    if (u.padded_numel != u.shard_numel * S || u.padded_numel < u.numel || u.padded_numel - u.numel >= S) {
      fail(key, str_cat("padded_numel ", u.padded_numel, " is not numel ", u.numel,
                        " rounded up to a multiple of ", S, " (= shard_numel ", u.shard_numel,
                        " x shard_group_size)"));
    }
  }
  for (size_t i = 0; i < m.shards.size(); ++i) {
    const ShardEntry& s = m.shards[i];
    const std::string key = str_cat("shards[", i, "]");
    if (s.file.empty() || s.file.find('/') != std::string::npos)
      fail(key + ".file", "'" + s.file + "' is not a file name");
    in_range(key + ".bytes", s.bytes, 0, int64_t{1} << 50);
    if (s.sha256.size() != 64 || s.sha256.find_first_not_of("0123456789abcdef") != std::string::npos)
      fail(key + ".sha256", "'" + s.sha256 + "' is not a sha256 (64 hex digits)");
  }
}

}  // namespace

Manifest read_manifest(const std::string& dir) {
  const std::string path = join_path(dir, "manifest.yaml");
  if (!path_exists(path)) throw Error(dir + ": no manifest.yaml (an incomplete checkpoint)");
  bool had_checksum = false;
  const std::string body = verified_body(read_text_file(path), path, &had_checksum);
  if (!had_checksum) {
    log::warn("ckpt", path,
              ": a manifest without a checksum (written by an older kto): it cannot be checked for "
              "damage");
  }
  YAML::Node root;
  try {
    root = YAML::Load(body);
  } catch (const YAML::Exception& e) {
    throw Error(str_cat(path, ": invalid YAML: ", e.what()));
  }
  auto need = [&](const YAML::Node& node, const char* key) {
    if (!node[key]) throw Error(str_cat(path, ": missing key '", key, "'"));
    return node[key];
  };
  Manifest m;
  try {
    m.format_version = need(root, "format_version").as<int64_t>();
    if (m.format_version != kFormatVersion) {
      throw Error(
          str_cat(path, ": checkpoint format ", m.format_version, ", this kto reads ", kFormatVersion));
    }
    m.step = need(root, "step").as<int64_t>();
    m.world_size = need(root, "world_size").as<int64_t>();
    // Absent before hybrid sharding: every rank wrote a shard.
    m.shard_group_size = root["shard_group_size"] ? root["shard_group_size"].as<int64_t>() : m.world_size;
    const YAML::Node opt = need(root, "optimizer");
    m.optimizer = need(opt, "name").as<std::string>();
    m.optimizer_steps = need(opt, "steps").as<int64_t>();
    m.state_tensors = need(opt, "state_tensors").as<int64_t>();
    m.master_dtype = need(opt, "master_dtype").as<std::string>();
    const YAML::Node sampler = need(root, "sampler");
    m.sampler.epoch = need(sampler, "epoch").as<int64_t>();
    m.sampler.position = need(sampler, "position").as<int64_t>();
    for (const YAML::Node& u : need(root, "units")) {
      m.units.push_back({need(u, "name").as<std::string>(), need(u, "numel").as<int64_t>(),
                         need(u, "padded_numel").as<int64_t>(), need(u, "shard_numel").as<int64_t>()});
    }
    for (const YAML::Node& s : need(root, "shards")) {
      m.shards.push_back({need(s, "file").as<std::string>(), need(s, "sha256").as<std::string>(),
                          need(s, "bytes").as<int64_t>()});
    }
    m.reference_identity = need(root, "reference_identity").as<std::string>();
    m.model_source = need(root, "model_source").as<std::string>();
    if (const YAML::Node identity = root["identity"]) {  // absent in checkpoints of an older kto
      if (!identity.IsMap()) throw Error(path + ": 'identity' is not a map");
      for (const auto& kv : identity) m.identity[kv.first.as<std::string>()] = kv.second.as<std::string>();
    }
    m.created = root["created"] ? root["created"].as<std::string>() : "";
    m.producer = root["producer"] ? root["producer"].as<std::string>() : "";
    m.config_yaml = need(root, "config").as<std::string>();
  } catch (const YAML::Exception& e) {
    throw Error(str_cat(path, ": malformed manifest: ", e.what()));
  }
  check_values(m, path);
  if (static_cast<int64_t>(m.shards.size()) != m.shard_group_size) {
    throw Error(str_cat(path, ": ", m.shards.size(), " shards listed for a shard group of ",
                        m.shard_group_size, " (world size ", m.world_size, ")"));
  }
  return m;
}

std::vector<std::string> verify(const std::string& dir, const Manifest& m, int stride, int offset) {
  std::vector<std::string> problems;
  for (size_t i = static_cast<size_t>(offset); i < m.shards.size(); i += static_cast<size_t>(stride)) {
    const ShardEntry& s = m.shards[i];
    const std::string path = join_path(dir, s.file);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      problems.push_back(path + ": missing");
      continue;
    }
    if (st.st_size != s.bytes) {
      problems.push_back(
          str_cat(path, ": ", st.st_size, " bytes, the manifest says ", s.bytes, " (truncated?)"));
      continue;
    }
    const std::string sha = sha256_file(path);
    if (sha != s.sha256)
      problems.push_back(path + ": checksum mismatch (sha256 " + sha + ", expected " + s.sha256 + ")");
  }
  return problems;
}

}  // namespace kto::ckpt
