// Hybrid sharding (dist.shard_group) end to end: 4 ranks in 2 shard groups train the same curves
// and weights as full sharding at 4 ranks and as 1 rank (fp64 1e-9, fp32 1e-5 relative), with
// and without resharding; a hybrid checkpoint holds one group's shards, resumes exactly at 4
// ranks hybrid and loads bit for bit at 2 ranks fully sharded; a grouping that does not divide the
// world is refused naming the key; kto-train --dry-run shows the grouping and the traffic by link.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "kto/ckpt/checkpoint.h"
#include "kto/io/safetensors.h"
#include "kto/util/files.h"
#include "runs.h"
#include "synthetic.h"
#include "test_support.h"

using json = nlohmann::json;
using Catch::Matchers::Contains;

namespace {

kto::test::SyntheticSpec z0_spec() {
  kto::test::SyntheticSpec spec;
  spec.keep_undesirable = 0.35;  // 3:1 desirable: z0 > 0, so its world-wide assembly matters
  return spec;
}

struct Task : kto::test::SyntheticTask {
  Task() : SyntheticTask(z0_spec()) {}
  // kto-train at `ranks` ranks (global microbatch 16 at every world size).
  int train(const std::string& run_dir, int ranks, const std::vector<std::string>& sets,
            std::string* log) const {
    std::string cmd;
    if (ranks > 1) cmd += std::string(KTO_MPIEXEC) + " -np " + std::to_string(ranks) + " --oversubscribe ";
    cmd += kto::test::bin_dir() + "/kto-train --config " + config + " --set run.dir=" + run_dir +
           " --set data.micro_batch=" + std::to_string(16 / ranks);
    for (const std::string& s : sets) cmd += " --set " + s;
    return kto::test::run_command(cmd, log);
  }
};

// Every step's loss, z0 (kl), rewards and gradient norm, and every exported weight, agree with
// `reference`'s within `tolerance` relative to the curve's (the tensor's) magnitude.
void check_same_run(const std::string& reference, const std::string& other, double tolerance) {
  const auto a = kto::test::read_metrics(reference), b = kto::test::read_metrics(other);
  REQUIRE(a.size() == 20);
  REQUIRE(b.size() == 20);
  for (const std::string key : {"loss", "kl", "rewards/desirable", "rewards/undesirable", "grad_norm"}) {
    double scale = 0;
    for (const json& m : a) scale = std::max(scale, std::abs(m[key].get<double>()));
    for (size_t i = 0; i < 20; ++i) {
      const double x = a[i][key], y = b[i][key];
      INFO(other << " step " << i + 1 << " " << key << ": " << x << " vs " << y);
      CHECK(std::abs(x - y) <= tolerance * scale);
    }
  }
  const auto wa = kto::io::SafetensorsSet::open_dir(reference + "/final");
  const auto wb = kto::io::SafetensorsSet::open_dir(other + "/final");
  for (const std::string& name : wa.names()) {
    const at::Tensor x = wa.read(name).to(at::kDouble), y = wb.read(name).to(at::kDouble);
    const double err = ((x - y).abs().max() / x.abs().max().clamp_min(1e-12)).item<double>();
    INFO(other << " " << name << " relative difference " << err);
    CHECK(err <= tolerance);
  }
}

}  // namespace

TEST_CASE("hybrid sharding (2 groups of 2 ranks) trains as full sharding at 4 ranks and as 1 rank",
          "[e2e][train][mpi][hybrid]") {
  Task task;
  for (const bool reshard : {true, false}) {
    for (const std::string dtype : {"fp64", "fp32"}) {
      DYNAMIC_SECTION(dtype << (reshard ? " resharded" : " kept")) {
        const std::vector<std::string> common = {
            "train.steps=20", "train.export_final=true", "train.export_dtype=fp32", "model.dtype=" + dtype,
            std::string("model.reshard_after_forward=") + (reshard ? "true" : "false")};
        auto with = [&](std::vector<std::string> extra) {
          extra.insert(extra.begin(), common.begin(), common.end());
          return extra;
        };
        const std::string tag = dtype + (reshard ? "r" : "k");
        const std::string one = task.dir.file("one" + tag), full = task.dir.file("full" + tag),
                          hybrid = task.dir.file("hybrid" + tag);
        std::string log;
        REQUIRE(task.train(one, 1, with({}), &log) == 0);
        REQUIRE(task.train(full, 4, with({}), &log) == 0);
        const int rc = task.train(hybrid, 4, with({"dist.shard_group=2"}), &log);
        INFO(log);
        REQUIRE(rc == 0);
        CHECK_THAT(log, Contains("hybrid: 2 shard groups of 2 rank(s)"));
        const double tolerance = dtype == "fp64" ? 1e-9 : 1e-5;
        check_same_run(one, full, tolerance);
        check_same_run(one, hybrid, tolerance);
        // The hybrid run moved gradients across its replicas every step; full sharding did not.
        for (const json& m : kto::test::read_metrics(hybrid)) CHECK(m["comm_replica_mib"].get<double>() > 0);
        for (const json& m : kto::test::read_metrics(full)) CHECK_FALSE(m.contains("comm_replica_mib"));
      }
    }
  }
}

TEST_CASE("a hybrid checkpoint holds one group's shards and resumes exactly, hybrid or fully sharded",
          "[e2e][ckpt][hybrid]") {
  Task task;
  std::string log;
  const std::string straight = task.dir.file("straight"), resumed = task.dir.file("resumed");
  const std::vector<std::string> hybrid = {"dist.shard_group=2", "train.export_final=true"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), hybrid.begin(), hybrid.end());
    return extra;
  };
  REQUIRE(task.train(straight, 4, with({"train.steps=20"}), &log) == 0);
  REQUIRE(task.train(resumed, 4, with({"train.steps=10", "ckpt.keep=5"}), &log) == 0);
  const std::string ckpt = kto::test::step_dir(resumed, 10);
  const kto::ckpt::Manifest manifest = kto::ckpt::read_manifest(ckpt);
  CHECK(manifest.world_size == 4);
  CHECK(manifest.shard_group_size == 2);
  REQUIRE(manifest.shards.size() == 2);  // one group wrote; its replicas were checked to agree
  CHECK(kto::path_exists(ckpt + "/shard_00000-of-00002.h5"));
  CHECK_FALSE(kto::path_exists(ckpt + "/shard_00002-of-00004.h5"));
  std::string inspect;
  CHECK(kto::test::run_command(kto::test::bin_dir() + "/kto-ckpt inspect --checkpoint " + ckpt, &inspect) ==
        0);
  CHECK_THAT(inspect, Contains("world size 4") &&
                          Contains("hybrid sharding: 2 shards written by one of 2 shard groups"));

  SECTION("10 + 10 hybrid steps equal 20 straight, bit for bit") {
    const int rc = task.train(resumed, 4, with({"train.steps=20"}), &log);
    INFO(log);
    REQUIRE(rc == 0);
    CHECK_THAT(log, Contains("resumed from") && Contains("step_00000010"));
    const auto a = kto::test::read_metrics(straight), b = kto::test::read_metrics(resumed);
    REQUIRE(a.size() == 20);
    REQUIRE(b.size() == 20);
    for (size_t i = 0; i < 20; ++i) {
      for (const std::string key : {"loss", "kl", "grad_norm", "rewards/desirable", "rewards/undesirable"}) {
        INFO("step " << i + 1 << " " << key);
        CHECK(a[i][key].get<double>() == b[i][key].get<double>());
      }
    }
    kto::test::check_same_final_weights(straight, resumed);
  }
  SECTION("loaded at 2 ranks fully sharded: the same state and data position, bit for bit") {
    const std::string two = task.dir.file("two");
    const int rc = task.train(two, 2, {"train.steps=10", "ckpt.resume=" + ckpt}, &log);
    INFO(log);
    REQUIRE(rc == 0);
    CHECK_THAT(log, Contains("full sharding over 2 rank(s)"));
    const auto saved = kto::test::saved_tensors(ckpt),
               resaved = kto::test::saved_tensors(kto::test::step_dir(two, 10));
    REQUIRE(resaved.size() == saved.size());
    for (size_t i = 0; i < saved.size(); ++i) CHECK(at::equal(resaved[i], saved[i]));
    const auto m = kto::ckpt::read_manifest(kto::test::step_dir(two, 10));
    CHECK(m.world_size == 2);
    CHECK(m.shard_group_size == 2);
    CHECK(m.sampler == manifest.sampler);
    CHECK(m.optimizer_steps == manifest.optimizer_steps);
  }
}

TEST_CASE("a shard group that does not divide the world is refused naming dist.shard_group",
          "[e2e][hybrid]") {
  Task task;
  std::string log;
  CHECK(task.train(task.dir.file("bad"), 4, {"dist.shard_group=3", "train.steps=2"}, &log) != 0);
  CHECK_THAT(log, Contains("dist.shard_group") && Contains("does not divide the world of 4"));
  CHECK(task.train(task.dir.file("bad2"), 1, {"dist.shard_group=nodes"}, &log) != 0);
  CHECK_THAT(log, Contains("dist.shard_group") && Contains("'nodes' is not a shard group"));
}

TEST_CASE("kto-train --dry-run shows the grouping, the memory per rank and the traffic on each link",
          "[e2e][hybrid]") {
  Task task;
  std::string full, hybrid;
  const std::string cmd = kto::test::bin_dir() + "/kto-train --config " + task.config +
                          " --dry-run --world-size 16 --ranks-per-host 8 --set data.micro_batch=1";
  REQUIRE(kto::test::run_command(cmd, &full) == 0);
  REQUIRE(kto::test::run_command(cmd + " --set dist.shard_group=node", &hybrid) == 0);
  INFO(full << hybrid);
  CHECK_THAT(full, Contains("full sharding over 16 rank(s) (across hosts)"));
  CHECK_THAT(
      hybrid,
      Contains("hybrid: 2 shard groups of 8 rank(s) (sharded within a host, replicated across hosts)"));
  CHECK_THAT(hybrid, Contains("across 2 replicas (gradient all-reduce, across hosts)"));
  CHECK_FALSE(full.find("replicas (gradient") != std::string::npos);
  // A group of 8 holds twice the state per rank that 16 ranks do: the memory line says so.
  const auto per_rank = [](const std::string& text) {
    const size_t at = text.find("memory:");
    return text.substr(at, text.find('\n', at) - at);
  };
  CHECK(per_rank(full) != per_rank(hybrid));
}

TEST_CASE("two nodes on this machine: node grouping, local ranks and launch/mpirun.sh's hostfile path",
          "[e2e][hybrid][multinode]") {
  Task task;
  std::string log;
  const std::vector<std::string> common = {"train.steps=20", "train.export_final=true",
                                           "train.export_dtype=fp32", "model.dtype=fp64"};
  const std::string one = task.dir.file("one"), two_nodes = task.dir.file("two_nodes");
  REQUIRE(task.train(one, 1, common, &log) == 0);

  const kto::test::TwoNodes nodes(task.dir.file("nodes"));
  std::string cmd = nodes.on_first_node(kto::test::fixtures_dir() + "/../../launch/mpirun.sh --hostfile " +
                                        nodes.dir() + "/hosts --threads 1 -- " + kto::test::bin_dir() +
                                        "/kto-train --config " + task.config + " --set run.dir=" + two_nodes +
                                        " --set data.micro_batch=4 --set dist.shard_group=node");
  for (const std::string& s : common) cmd += " --set " + s;
  const int rc = kto::test::run_command(cmd, &log);
  INFO(log);
  REQUIRE(rc == 0);
  // Ranks 0-1 on the first node, 2-3 on the second, each node's local ranks 0 and 1; the node
  // grouping made each node a shard group and the replicas span the nodes.
  CHECK_THAT(log, Contains("4 rank(s), 2 per node, 1 thread(s) each"));
  CHECK_THAT(log, Contains("rank 0: kto-node-") && Contains("-a, cpu, 1 thread(s), local rank 0"));
  CHECK_THAT(log, Contains("rank 3: kto-node-") && Contains("-b, cpu, 1 thread(s), local rank 1"));
  CHECK_THAT(
      log, Contains("hybrid: 2 shard groups of 2 rank(s) (sharded within a host, replicated across hosts)"));
  check_same_run(one, two_nodes, 1e-9);
}
