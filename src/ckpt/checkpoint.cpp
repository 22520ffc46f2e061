#include "kto/ckpt/checkpoint.h"

#include <ATen/ATen.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/hdf5.h"
#include "kto/util/log.h"
#include "kto/util/sha256.h"
#include "kto/util/version.h"

namespace kto::ckpt {

std::string manifest_yaml(const Manifest& m);  // manifest.cpp

using detail::str_cat;

namespace {

std::string step_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08ld", static_cast<long>(step));
  return name;
}

std::string shard_name(int rank, int world) {
  char name[64];
  std::snprintf(name, sizeof(name), "shard_%05d-of-%05d.h5", rank, world);
  return name;
}

// Checkpoint directories under `dir` (complete or not) with their steps, newest first.
std::vector<std::pair<int64_t, std::string>> list_steps(const std::string& dir, bool temporary) {
  std::vector<std::pair<int64_t, std::string>> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const bool tmp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0;
    if (name.rfind("step_", 0) != 0 || tmp != temporary) continue;
    out.emplace_back(std::atoll(name.c_str() + 5), join_path(dir, name));
  }
  ::closedir(d);
  std::sort(out.rbegin(), out.rend());
  return out;
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(str_cat(path, ": cannot open to sync: ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(str_cat(path, ": fsync failed: ", std::strerror(errno)));
}

hid_t file_type_of(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? H5T_IEEE_F64LE : H5T_IEEE_F32LE;
}
hid_t mem_type_of(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
}

// Writes this rank's slices; returns the shard's entry of the manifest.
ShardEntry write_shard(const std::string& path, const fsdp::ShardedModel& policy,
                       const fsdp::ShardedOptimizer& optimizer, int64_t step, int rank, int world) {
  {
    h5::Handle file(h5::create_file(path));
    h5::write_int_attr(file, "format_version", kFormatVersion);
    h5::write_int_attr(file, "rank", rank);
    h5::write_int_attr(file, "world_size", world);
    h5::write_int_attr(file, "step", step);
    h5::Handle units(KTO_H5_CHECK(H5Gcreate2(file, "units", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
    const auto& state = optimizer.state();
    for (size_t u = 0; u < policy.shards().size(); ++u) {
      h5::Handle group(KTO_H5_CHECK(
          H5Gcreate2(units, policy.layout().units[u].name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
      const at::Tensor p = policy.shards()[u].detach().cpu().contiguous();
      h5::write_vector(group, "param", file_type_of(p), mem_type_of(p), p.data_ptr(), p.numel());
      for (size_t k = 0; k < state[u].size(); ++k) {
        const at::Tensor s = state[u][k].cpu().contiguous();
        h5::write_vector(group, ("state" + std::to_string(k)).c_str(), file_type_of(s), mem_type_of(s),
                         s.data_ptr(), s.numel());
      }
    }
    KTO_H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL));  // surfaces write errors (disk full) here
  }
  fsync_path(path);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error(str_cat(path, ": cannot stat: ", std::strerror(errno)));
  return {shard_name(rank, world), sha256_file(path), static_cast<int64_t>(st.st_size)};
}

// The test seam documented at ckpt::save: the one place a fault is injected.
void fault_point_between_shards_and_manifest(int64_t step, const comm::ProcessGroup& group) {
  const char* kill_at = std::getenv("KTO_FAULT_KILL_IN_CHECKPOINT");
  if (kill_at != nullptr && std::atoll(kill_at) == step && group.is_root()) std::raise(SIGKILL);
}

// Every rank's shard entry, in rank order (on every rank).
std::vector<ShardEntry> gather_entries(const ShardEntry& mine, const comm::ProcessGroup& group) {
  const std::vector<std::string> sha = group.all_gather(mine.sha256);
  std::vector<int64_t> bytes(static_cast<size_t>(group.size()), 0);
  bytes[static_cast<size_t>(group.rank())] = mine.bytes;
  group.all_reduce(bytes.data(), group.size(), comm::ReduceOp::sum);  // each rank fills its own slot
  std::vector<ShardEntry> out;
  for (int r = 0; r < group.size(); ++r)
    out.push_back({shard_name(r, group.size()), sha[static_cast<size_t>(r)], bytes[static_cast<size_t>(r)]});
  return out;
}

// A cheap fingerprint of this rank's training state: over the 32-bit words of every slice and
// optimizer state tensor, their sum and a position-weighted sum (wrapping int64), on the
// tensors' device. Replicas holding the same bits have the same fingerprint; a flipped,
// changed or moved word changes it.
std::array<int64_t, 2> state_fingerprint(const fsdp::ShardedModel& policy,
                                         const fsdp::ShardedOptimizer& optimizer) {
  at::NoGradGuard no_grad;
  std::array<int64_t, 2> f{0, 0};
  auto add = [&](const at::Tensor& t) {
    const at::Tensor words = t.detach().contiguous().view({-1}).view(at::kInt).to(at::kLong);
    const at::Tensor weights = at::arange(words.numel(), words.options()).remainder_(65521).add_(1);
    f[0] += words.sum().item<int64_t>();
    f[1] += words.mul(weights).sum().item<int64_t>();
  };
  for (size_t u = 0; u < policy.shards().size(); ++u) {
    add(policy.shards()[u]);
    for (const at::Tensor& s : optimizer.state()[u]) add(s);
  }
  f[1] += optimizer.step_count();
  return f;
}

// Refuses to save when a replica set's members do not hold the same state (every rank alike).
void check_replicas_agree(const fsdp::ShardedModel& policy, const fsdp::ShardedOptimizer& optimizer,
                          int64_t step, const comm::ProcessGroup& world) {
  const comm::ProcessGroup* replicas = policy.mesh().replica();
  if (replicas == nullptr) return;
  const std::array<int64_t, 2> f = state_fingerprint(policy, optimizer);
  int64_t lo[2] = {f[0], f[1]}, hi[2] = {f[0], f[1]};
  replicas->all_reduce(lo, 2, comm::ReduceOp::min);
  replicas->all_reduce(hi, 2, comm::ReduceOp::max);
  const bool same = lo[0] == hi[0] && lo[1] == hi[1];
  if (!same) {
    log::warn_all("ckpt", "shard ", policy.group().rank(), " of group ", policy.mesh().group_index(),
                  ": its state differs from its replicas' (fingerprints ", f[0], "/", f[1], ")");
  }
  if (!world.all_true(same)) {
    throw Error(
        str_cat("checkpoint of step ", step,
                ": the shard groups' replicas hold different weights or optimizer state (they must be "
                "identical under hybrid sharding; the ranks that differ are listed above): nothing "
                "was saved, the previous checkpoints are untouched"));
  }
}

}  // namespace

std::string save(const SaveRequest& request, const fsdp::ShardedModel& policy,
                 const fsdp::ShardedOptimizer& optimizer, const comm::ProcessGroup& group) {
  const std::string& checkpoints_dir = request.checkpoints_dir;
  const TrainingState& state = request.state;
  check_replicas_agree(policy, optimizer, state.step, group);
  // One shard group writes (the group holding world rank 0, whose shard 0 is the world's root).
  const comm::ProcessGroup& writers = policy.group();
  const bool writes = policy.mesh().group_index() == 0;
  const int S = writers.size(), r = writers.rank();
  const std::string final_dir = join_path(checkpoints_dir, step_name(state.step));
  const std::string tmp_dir = final_dir + ".tmp";
  if (group.is_root()) {
    make_directories(checkpoints_dir);
    remove_tree(tmp_dir);
    make_directories(tmp_dir);
  }
  group.barrier();
  std::vector<ShardEntry> entries;
  if (writes) {
    const std::string path = join_path(tmp_dir, shard_name(r, S));
    ShardEntry entry;
    try {
      entry = write_shard(path, policy, optimizer, state.step, r, S);
    } catch (const std::exception& e) {
      throw Error(str_cat("checkpoint ", final_dir, ": writing ", path, " failed (disk full or quota?): ",
                          e.what(), "; the previous checkpoints are untouched"));
    }
    fault_point_between_shards_and_manifest(state.step, group);
    entries = gather_entries(entry, writers);  // every shard's checksum
  }
  if (group.is_root()) {
    Manifest m;
    m.step = state.step;
    m.world_size = group.size();
    m.shard_group_size = S;
    m.optimizer = choice_name(fsdp::kOptimizerNames, optimizer.options().name);
    m.optimizer_steps = optimizer.step_count();
    m.state_tensors = static_cast<int64_t>(optimizer.state().front().size());
    m.master_dtype = policy.shards().front().scalar_type() == at::kDouble ? "float64" : "float32";
    m.sampler = state.sampler;
    for (size_t u = 0; u < policy.layout().units.size(); ++u) {
      const fsdp::ShardRange& range = policy.range(u);
      m.units.push_back({policy.layout().units[u].name, range.numel, range.padded_numel, range.shard_numel});
    }
    m.shards = entries;
    m.reference_identity = request.reference_identity;
    m.model_source = request.model_source;
    m.identity = request.identity;
    m.config_yaml = request.config_yaml;
    m.created = utc_now();
    m.producer = build_summary();
    write_text_file(join_path(tmp_dir, "manifest.yaml"), manifest_yaml(m));
    fsync_path(tmp_dir);
    remove_tree(final_dir);  // a re-save of the same step replaces it
    if (std::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) {
      throw Error(
          str_cat(final_dir, ": cannot rename the finished checkpoint into place: ", std::strerror(errno)));
    }
    fsync_path(checkpoints_dir);
    const auto complete = list_steps(checkpoints_dir, false);
    for (size_t i = static_cast<size_t>(std::max<int64_t>(request.keep, 1)); i < complete.size(); ++i)
      remove_tree(complete[i].second);
  }
  group.barrier();
  log::info("ckpt", "saved ", final_dir);
  return final_dir;
}

std::string find_latest(const std::string& checkpoints_dir, const comm::ProcessGroup& group) {
  std::string listing;
  if (group.is_root()) {
    for (const auto& [step, dir] : list_steps(checkpoints_dir, true)) {
      log::warn("ckpt", "removing ", dir, ": an unfinished checkpoint (the writer was interrupted)");
      remove_tree(dir);
    }
    for (const auto& [step, dir] : list_steps(checkpoints_dir, false)) listing += dir + "\n";
  }
  group.broadcast(listing, 0);
  std::istringstream candidates(listing);
  std::string dir;
  while (std::getline(candidates, dir)) {
    std::vector<std::string> problems;
    try {
      problems = verify(dir, read_manifest(dir), group.size(), group.rank());  // each rank checks a share
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
    for (const std::string& p : problems) log::warn_all("ckpt", "skipping ", dir, ": ", p);
    if (group.all_true(problems.empty())) return dir;
  }
  return "";
}

// ---------------------------------------------------------------------------------------------

struct Reader::Files {
  std::map<int64_t, h5::Handle> open;
};

Reader::Reader(std::string dir)
    : dir_(std::move(dir)), manifest_(read_manifest(dir_)), files_(std::make_unique<Files>()) {}
Reader::~Reader() = default;

void Reader::read(size_t unit, const std::string& what, int64_t begin, at::Tensor& out) {
  KTO_CHECK(out.dim() == 1 && out.is_contiguous() && out.device().is_cpu(),
            "Reader::read needs a contiguous CPU vector");
  const UnitEntry& u = manifest_.units.at(unit);
  const int64_t end = begin + out.numel();
  out.zero_();  // padding
  const hid_t mem = out.scalar_type() == at::kDouble ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
  KTO_CHECK(out.scalar_type() == at::kDouble || out.scalar_type() == at::kFloat,
            "checkpoint reads are fp32/fp64");
  for (int64_t lo = begin; lo < std::min(end, u.numel);) {
    const int64_t k = lo / u.shard_numel;  // the old shard holding element lo
    const int64_t hi = std::min({end, u.numel, (k + 1) * u.shard_numel});
    auto it = files_->open.find(k);
    if (it == files_->open.end()) {
      const std::string path = join_path(dir_, manifest_.shards.at(static_cast<size_t>(k)).file);
      if (!path_exists(path)) throw Error(path + ": missing checkpoint shard");
      it = files_->open
               .emplace(k, h5::Handle(KTO_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT))))
               .first;
    }
    const std::string name = "units/" + u.name + "/" + what;
    if (!h5::has_link(it->second, "units") || H5Lexists(it->second, name.c_str(), H5P_DEFAULT) <= 0) {
      throw Error(str_cat(manifest_.shards[static_cast<size_t>(k)].file, ": missing dataset ", name));
    }
    h5::Handle dset(KTO_H5_CHECK(H5Dopen2(it->second, name.c_str(), H5P_DEFAULT)));
    h5::read_range(dset, mem, lo - k * u.shard_numel, hi - lo,
                   static_cast<char*>(out.data_ptr()) + (lo - begin) * out.element_size());
    lo = hi;
  }
}

TrainingState load(const std::string& dir, fsdp::ShardedModel& policy, fsdp::ShardedOptimizer& optimizer,
                   const comm::ProcessGroup& group) {
  Reader reader(dir);
  const Manifest& m = reader.manifest();
  const auto& units = policy.layout().units;
  if (m.units.size() != units.size()) {
    throw Error(str_cat(dir, ": the checkpoint has ", m.units.size(), " units, the configured model ",
                        units.size(), " (a different architecture?)"));
  }
  for (size_t u = 0; u < units.size(); ++u) {
    if (m.units[u].name != units[u].name || m.units[u].numel != units[u].numel) {
      throw Error(str_cat(dir, ": unit ", m.units[u].name, " holds ", m.units[u].numel,
                          " elements, the model's ", units[u].name, " ", units[u].numel,
                          " (a different architecture?)"));
    }
  }
  auto& state = optimizer.state();
  const char* optimizer_name = choice_name(fsdp::kOptimizerNames, optimizer.options().name);
  if (m.optimizer != optimizer_name || m.state_tensors != static_cast<int64_t>(state.front().size())) {
    throw Error(str_cat(dir, ": saved with optimizer ", m.optimizer, ", this run uses ", optimizer_name));
  }
  at::NoGradGuard no_grad;
  for (size_t u = 0; u < units.size(); ++u) {
    const int64_t begin = policy.range(u).begin;
    at::Tensor buffer = at::empty({policy.range(u).shard_numel},
                                  policy.shards()[u].options().device(at::kCPU).requires_grad(false));
    reader.read(u, "param", begin, buffer);
    policy.shards()[u].copy_(buffer);
    for (size_t k = 0; k < state[u].size(); ++k) {
      reader.read(u, "state" + std::to_string(k), begin, buffer);
      state[u][k].copy_(buffer);
    }
  }
  optimizer.set_step_count(m.optimizer_steps);
  group.barrier();
  log::info("ckpt", "resumed from ", dir, " (step ", m.step, ", saved by ", m.world_size,
            " rank(s), loaded by ", group.size(), ")");
  return {m.step, m.sampler};
}

}  // namespace kto::ckpt
