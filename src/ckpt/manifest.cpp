// manifest.yaml: writing, reading (with errors naming the file and key), verification.
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include "kto/ckpt/checkpoint.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/sha256.h"

namespace kto::ckpt {

using detail::str_cat;

std::string manifest_yaml(const Manifest& m) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "format_version" << YAML::Value << m.format_version;
  out << YAML::Key << "step" << YAML::Value << m.step;
  out << YAML::Key << "world_size" << YAML::Value << m.world_size;
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
  out << YAML::Key << "created" << YAML::Value << m.created;
  out << YAML::Key << "producer" << YAML::Value << m.producer;
  out << YAML::Key << "config" << YAML::Value << YAML::Literal << m.config_yaml;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

Manifest read_manifest(const std::string& dir) {
  const std::string path = join_path(dir, "manifest.yaml");
  if (!path_exists(path)) throw Error(dir + ": no manifest.yaml (an incomplete checkpoint)");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
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
    m.created = root["created"] ? root["created"].as<std::string>() : "";
    m.producer = root["producer"] ? root["producer"].as<std::string>() : "";
    m.config_yaml = need(root, "config").as<std::string>();
  } catch (const YAML::Exception& e) {
    throw Error(str_cat(path, ": malformed manifest: ", e.what()));
  }
  if (static_cast<int64_t>(m.shards.size()) != m.world_size) {
    throw Error(str_cat(path, ": ", m.shards.size(), " shards listed for world size ", m.world_size));
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
