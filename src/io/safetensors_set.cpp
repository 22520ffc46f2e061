// SafetensorsSet (one checkpoint spread over one or more files) and the sharded HF writer.
#include <ATen/ATen.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "kto/io/safetensors.h"
#include "kto/util/check.h"
#include "kto/util/files.h"

namespace kto::io {

using detail::str_cat;
using json = nlohmann::json;

namespace {
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
}  // namespace

SafetensorsSet SafetensorsSet::open_file(const std::string& path) {
  SafetensorsSet set;
  set.source_ = path;
  set.files_.push_back(std::make_unique<SafetensorsReader>(path));
  for (const TensorInfo& t : set.files_[0]->tensors()) set.file_of_tensor_[t.name] = 0;
  return set;
}

SafetensorsSet SafetensorsSet::open_dir(const std::string& dir) {
  const std::string index_path = join_path(dir, kIndexName);
  if (!path_exists(index_path)) {
    const std::string single = join_path(dir, kSingleName);
    if (!path_exists(single)) {
      throw Error(str_cat(dir, ": no ", kIndexName, " and no ", kSingleName,
                          " (not a Hugging Face checkpoint directory?)"));
    }
    SafetensorsSet set = open_file(single);
    set.source_ = dir;
    return set;
  }

  json index;
  try {
    index = json::parse(read_text_file(index_path));
  } catch (const json::exception& e) {
    throw Error(str_cat(index_path, ": not valid JSON: ", e.what()));
  }
  const auto map = index.find("weight_map");
  if (!index.is_object() || map == index.end() || !map->is_object()) {
    throw Error(index_path + ": missing object 'weight_map'");
  }
  SafetensorsSet set;
  set.source_ = dir;
  std::map<std::string, size_t> file_ids;
  for (auto it = map->begin(); it != map->end(); ++it) {
    if (!it.value().is_string()) throw Error(index_path + ": weight_map['" + it.key() + "'] is not a string");
    const std::string file = it.value().get<std::string>();
    if (file.find('/') != std::string::npos) {
      throw Error(index_path + ": weight_map['" + it.key() + "'] = '" + file +
                  "' is not a file name in the directory");
    }
    auto [pos, inserted] = file_ids.emplace(file, set.files_.size());
    if (inserted) set.files_.push_back(std::make_unique<SafetensorsReader>(join_path(dir, file)));
    const SafetensorsReader& reader = *set.files_[pos->second];
    if (reader.find(it.key()) == nullptr) {
      throw Error(
          str_cat(index_path, ": tensor '", it.key(), "' is mapped to ", file, " which does not contain it"));
    }
    set.file_of_tensor_[it.key()] = pos->second;
  }
  return set;
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  for (const auto& file : files_) {
    for (const TensorInfo& t : file->tensors()) {
      auto it = file_of_tensor_.find(t.name);
      if (it != file_of_tensor_.end() && files_[it->second].get() == file.get()) out.push_back(t.name);
    }
  }
  return out;
}

const TensorInfo* SafetensorsSet::find(const std::string& name) const {
  auto it = file_of_tensor_.find(name);
  return it == file_of_tensor_.end() ? nullptr : files_[it->second]->find(name);
}

const TensorInfo& SafetensorsSet::info(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) throw Error(source_ + ": no tensor '" + name + "'");
  return *info;
}

const SafetensorsReader& SafetensorsSet::file_of(const std::string& name) const {
  auto it = file_of_tensor_.find(name);
  if (it == file_of_tensor_.end()) throw Error(source_ + ": no tensor '" + name + "'");
  return *files_[it->second];
}

void write_safetensors_index(const std::string& dir,
                             const std::vector<std::pair<std::string, std::string>>& weight_map,
                             int64_t total_bytes) {
  json map = json::object();
  for (const auto& [tensor, file] : weight_map) map[tensor] = file;
  json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", map}};
  write_text_file(join_path(dir, kIndexName), index.dump(2) + "\n");
}

std::vector<std::string> write_safetensors_dir(const std::string& dir, const NamedTensors& tensors,
                                               int64_t max_shard_bytes,
                                               const std::map<std::string, std::string>& metadata) {
  KTO_CHECK(max_shard_bytes > 0, "max_shard_bytes must be positive");
  make_directories(dir);
  // Greedy packing in the given order; a tensor larger than the limit gets a shard of its own.
  std::vector<NamedTensors> shards(1);
  int64_t shard_bytes = 0;
  int64_t total_bytes = 0;
  for (const auto& named : tensors) {
    const int64_t bytes = named.second.numel() * named.second.element_size();
    if (!shards.back().empty() && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(named);
    shard_bytes += bytes;
    total_bytes += bytes;
  }

  std::vector<std::string> written;
  if (shards.size() == 1) {
    write_safetensors(join_path(dir, kSingleName), shards[0], metadata);
    std::remove(join_path(dir, kIndexName).c_str());  // a stale index would shadow the new file
    written.push_back(kSingleName);
    return written;
  }
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    write_safetensors(join_path(dir, name), shards[i], metadata);
    for (const auto& named : shards[i]) weight_map.emplace_back(named.first, name);
    written.push_back(name);
  }
  write_safetensors_index(dir, weight_map, total_bytes);
  std::remove(join_path(dir, kSingleName).c_str());
  written.push_back(kIndexName);
  return written;
}

}  // namespace kto::io
