// bench_kto_step: one full KTO training step through the real trainer (KL pass, reference and
// policy log-probs, loss, backward, AdamW), on the model and batch of bench/peer_kto_step.py,
// at any world size (run under mpirun). Prints, as one JSON line: ms per step, tokens/s, model
// FLOP/s at the 12N-per-token convention (the peer's) and MFU; the FLOPs kto actually executes
// (the trainer's executed_flops metric: LM head on completion tokens only, its backward
// recomputing the logits, the recompute of --reshard 1 included; the KL pass on completions only
// with --layout shared_prompts) and their rate over the matmul peak measured at start-up (and
// over the same peak measured again after the timed steps: drift shows); peak RSS; whether
// the CPU has native bf16; with --precomputed 1 the reference's scoring throughput (tokens of the
// target and KL passes per second, loading and writing included), the timed steps then running
// on the scores with no reference model. With --turns GO,DONE (two FIFOs; one rank) it takes
// turns with another process — bench/compare_peer.sh --paired runs the peer beside it — waiting
// for a byte on GO before its set-up, each step and its closing peak measure, and writing one to
// DONE after each: the two alternate step by step, and each step's time is printed (step_ms).
// Asserts nothing.
//
//   mpirun -np 2 --oversubscribe build/bin/bench_kto_step --hidden 256 --layers 4 --reshard 0
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kto/comm/process_group.h"
#include "kto/config/config.h"
#include "kto/data/dataset.h"
#include "kto/model/cpu_allocator.h"
#include "kto/train/score.h"
#include "kto/train/trainer.h"
#include "kto/util/cli.h"
#include "kto/util/files.h"
#include "kto/util/log.h"

namespace {

bool native_bf16() {
  std::ifstream in("/proc/cpuinfo");
  std::string word;
  while (in >> word)
    if (word == "avx512_bf16") return true;
  return false;
}

// Turn-taking with another process through two FIFOs (--turns GO,DONE): begin() waits for one
// byte on GO, end() writes one to DONE. Without --turns both do nothing.
class Turns {
 public:
  explicit Turns(const std::string& spec) {
    if (spec.empty()) return;
    const size_t comma = spec.find(',');
    if (comma == std::string::npos || comma == 0 || comma + 1 == spec.size())
      throw kto::cli::UsageError("--turns: expected GO,DONE (two FIFO paths), got '" + spec + "'");
    go_ = open_fifo(spec.substr(0, comma), O_RDONLY);
    done_ = open_fifo(spec.substr(comma + 1), O_WRONLY);
  }
  ~Turns() {
    if (go_ >= 0) ::close(go_);
    if (done_ >= 0) ::close(done_);
  }
  Turns(const Turns&) = delete;
  Turns& operator=(const Turns&) = delete;

  void begin() const {
    if (go_ < 0) return;
    char c;
    ssize_t n;
    while ((n = ::read(go_, &c, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) throw kto::Error("--turns: the other side closed its end of the GO FIFO");
  }
  void end() const {
    if (done_ < 0) return;
    const char c = 'x';
    ssize_t n;
    while ((n = ::write(done_, &c, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) throw kto::Error("--turns: cannot write to the DONE FIFO");
  }

 private:
  static int open_fifo(const std::string& path, int mode) {
    const int fd = ::open(path.c_str(), mode | O_CLOEXEC);
    if (fd < 0) throw kto::Error("--turns: cannot open " + path + ": " + std::strerror(errno));
    return fd;
  }
  int go_ = -1, done_ = -1;
};

}  // namespace

int main(int argc, char** argv) {
  return kto::comm::run_distributed_main(
      "bench_kto_step", argc, argv, [&](const kto::comm::ProcessGroup& world) -> int {
        int64_t hidden = 256, layers = 4, heads = 8, kv_heads = 4, ffn = 688, vocab = 32000, seq = 256,
                batch = 8;
        int64_t steps = 6, warmup = 2, threads = 1, reshard = 0, precomputed = 0;
        int64_t peak_gflops = 0;
        std::string dtype = "fp32", profile, layout = "padded", shard_group = "world", turns_spec;
        kto::cli::Args args("bench_kto_step",
                            "Tokens/s and MFU of a full KTO step (the peer_kto_step.py setup).");
        args.option("--hidden", &hidden, "C", "width (256)")
            .option("--layers", &layers, "L", "blocks (4)")
            .option("--heads", &heads, "H", "query heads (8)")
            .option("--kv-heads", &kv_heads, "H", "kv heads (4)")
            .option("--ffn", &ffn, "I", "MLP width (688)")
            .option("--vocab", &vocab, "V", "vocabulary (32000)")
            .option("--seq", &seq, "T", "tokens per sequence, completion = second half (256)")
            .option("--batch", &batch, "B", "sequences per rank per step (8)")
            .option("--steps", &steps, "N", "timed steps, median reported (6)")
            .option("--warmup", &warmup, "N", "untimed steps first (2)")
            .option("--threads", &threads, "N", "threads per rank (1)")
            .option("--reshard", &reshard, "0|1", "reshard_after_forward: 1 recomputes units in backward (0)")
            .option("--dtype", &dtype, "fp32|bf16", "compute dtype (fp32)")
            .option("--shard-group", &shard_group, "G",
                    "dist.shard_group: world, node or a group size (world); prints the bytes per link")
            .option(
                "--precomputed", &precomputed, "0|1",
                "1: score the reference once first (kto-train --score-reference; its tokens/s printed) and "
                "train on the scores with no reference model (0)")
            .option("--layout", &layout, "L",
                    "data.layout: padded (the peer's work: every forward over whole sequences), packed or "
                    "shared_prompts (the KL pass continues the prompts) (padded)")
            .option("--peak-gflops", &peak_gflops, "G",
                    "the matmul peak per rank MFU divides by, GFLOP/s (0: measured at start-up; on a "
                    "GPU give the chip's datasheet figure)")
            .option("--profile", &profile, "FILE",
                    "write LibTorch's op trace of one extra step after the timed ones to FILE (Chrome trace "
                    "JSON; rank 0; "
                    "bench/op_profile.py sums it by op)")
            .option("--turns", &turns_spec, "GO,DONE",
                    "take turns with another process through two FIFOs: wait for a byte on GO before the "
                    "set-up, each step and the closing peak measure, write one to DONE after each (one rank; "
                    "bench/compare_peer.sh --paired)");
        if (!args.parse(argc, argv)) return 0;
        if (steps < 1) throw kto::cli::UsageError("--steps: at least 1 timed step");
        if (warmup < 0) throw kto::cli::UsageError("--warmup: must not be negative");
        if (threads < 1) throw kto::cli::UsageError("--threads: at least 1");
        if (batch < 1) throw kto::cli::UsageError("--batch: at least 1 sequence per rank");
        if (seq < 2) throw kto::cli::UsageError("--seq: at least 2 tokens (a prompt and a completion)");
        if (!turns_spec.empty() && (world.size() != 1 || !profile.empty() || precomputed))
          throw kto::cli::UsageError("--turns: one rank only, and not with --profile or --precomputed");
        const Turns turns(turns_spec);
        turns.begin();  // the set-up: dataset, trainer, the start-up peak measure
        at::set_num_threads(static_cast<int>(threads));
        kto::log::set_level(kto::log::Level::warn);

        // A dataset of random full-length sequences, written by rank 0.
        std::string dir;
        if (world.is_root()) {
          const char* tmp = std::getenv("TMPDIR");
          std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/kto-bench-XXXXXX";
          dir = ::mkdtemp(pattern.data());
          kto::data::DatasetAttributes attrs;
          attrs.pad_id = 0;
          attrs.max_length = seq;
          kto::data::DatasetWriter w(dir + "/d.h5", attrs);
          at::Generator gen = at::detail::createCPUGenerator(0);
          // Enough for the steps run (precomputed: each is scored first), else 64 steps' worth.
          const int64_t examples = (precomputed ? warmup + steps + 2 : 64) * batch * world.size();
          for (int64_t i = 0; i < examples; ++i) {
            const at::Tensor t = at::randint(vocab, {seq}, gen, at::kInt);
            w.add(std::vector<int32_t>(t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + seq),
                  static_cast<int32_t>(seq / 2), i % 2 == 0);
          }
          w.finish();
        }
        world.broadcast(dir, 0);

        auto config_yaml = [&](const std::string& train, const std::string& extra) {
          return kto::detail::str_cat(
              "model:\n  architecture: {arch: llama, vocab_size: ", vocab, ", hidden_size: ", hidden,
              ", intermediate_size: ", ffn, ", num_hidden_layers: ", layers, ", num_attention_heads: ", heads,
              ", num_key_value_heads: ", kv_heads, ", max_position_embeddings: ", seq, "}\n  dtype: ", dtype,
              "\n  reshard_after_forward: ", reshard ? "true" : "false", "\ndata:\n  train: [", train,
              "]\n  pairing: fixed\n  micro_batch: ", batch, "\n  pad_to_multiple_of: 1\n  layout: ", layout,
              "\noptim: {lr: 1e-6}\ntrain: {steps: ", warmup + steps + (profile.empty() ? 0 : 1),
              ", peak_gflops: ", peak_gflops, ", export_final: false}\nrun: {dir: ", dir,
              "/run, threads: ", threads, "}\ndist: {shard_group: '", shard_group, "'}\n", extra);
        };
        std::string yaml = config_yaml(dir + "/d.h5", "");
        double score_tokens_per_s = 0;
        if (precomputed) {
          at::set_num_threads(static_cast<int>(threads));
          const auto t0 = std::chrono::steady_clock::now();
          kto::train::score_reference(kto::config::parse_config(yaml, "bench"), world, dir + "/scored");
          const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          const auto scored = kto::data::Dataset::open({dir + "/scored/d.h5"});
          score_tokens_per_s = 2.0 * static_cast<double>(scored->num_tokens()) / sec;  // target + KL pass
          yaml = config_yaml(dir + "/scored/d.h5", "reference: {precomputed: true}\n");
        }
        const kto::config::Config config = kto::config::parse_config(yaml, "bench");
        const int64_t params = config.model.architecture.num_parameters();
        kto::train::Trainer trainer(config, world);
        turns.end();
        std::vector<double> times, tps, mfu, rss, flops, shard_link, replica_link;
        kto::model::CpuCacheStats cache_before;
        kto::fsdp::CommStats comm_before;
        for (int64_t s = 0; s < warmup + steps; ++s) {
          if (s == warmup) {
            cache_before = kto::model::cpu_cache_stats();
            comm_before = trainer.comm_stats();
          }
          turns.begin();
          const auto m = trainer.train_step();
          turns.end();
          if (s >= warmup) {
            times.push_back(m.at("step_seconds"));
            tps.push_back(m.at("tokens_per_s"));
            mfu.push_back(m.at("mfu"));
            rss.push_back(m.at("peak_rss_mib"));
            flops.push_back(m.at("executed_flops") / world.size());
            shard_link.push_back(m.at("comm_shard_mib"));
            replica_link.push_back(m.count("comm_replica_mib") ? m.at("comm_replica_mib") : 0.0);
          }
        }
        const kto::fsdp::CommStats comm = trainer.comm_stats();
        const double per_step = 1.0 / static_cast<double>(steps);
        // The slowest rank's host time blocked on collectives, and this rank's bytes received.
        const double wait_ms = world.all_reduce(
            (comm.wait_seconds - comm_before.wait_seconds) * 1e3 * per_step, kto::comm::ReduceOp::max);
        const double comm_mib =
            static_cast<double>(comm.all_gather_bytes - comm_before.all_gather_bytes +
                                comm.reduce_scatter_bytes - comm_before.reduce_scatter_bytes) *
            per_step / (1 << 20);
        if (!profile.empty()) {
          // One more step, recorded: the profiler's own overhead stays out of the timed steps.
          std::unique_ptr<torch::autograd::profiler::RecordProfile> record;
          if (world.is_root()) record = std::make_unique<torch::autograd::profiler::RecordProfile>(profile);
          trainer.train_step();
        }
        // The peak again, right after the timed steps: beside the start-up figure, a second
        // divisor that shows whether the machine's speed drifted while the bench ran.
        turns.begin();
        const double peak_after = trainer.measure_peak_gflops_now() * 1e9;
        auto median = [](std::vector<double> v) {
          std::sort(v.begin(), v.end());
          return v[v.size() / 2];
        };
        if (world.is_root()) {
          std::string step_ms;  // every timed step, in order: --paired pairs them with the peer's
          for (const double t : times) step_ms += kto::detail::str_cat(step_ms.empty() ? "" : ", ", t * 1e3);
          const double sec = median(times);
          const double executed = median(flops);
          const double peak_per_rank = trainer.peak_flops() / world.size();
          const kto::model::CpuCacheStats cache = kto::model::cpu_cache_stats();
          const double misses =
              static_cast<double>(cache.misses - cache_before.misses) / static_cast<double>(steps);
          const double model_per_rank =
              trainer.model_flops_per_token() * static_cast<double>(batch * seq) / sec;
          // The traffic formula (fsdp::step_collective_bytes) beside what the steps counted, and
          // this rank's share of the sharded state (policy masters + optimizer state + reference).
          const kto::fsdp::Mesh& mesh = trainer.policy().mesh();
          const int S = mesh.shard().size(), R = mesh.replicas();
          const int cbytes = dtype == "bf16" ? 2 : 4;
          const auto formula = kto::fsdp::step_collective_bytes(trainer.policy().layout(), S, R, cbytes, 4, 1,
                                                                !precomputed, reshard != 0);
          const double state_mib =
              kto::fsdp::training_bytes_per_rank(trainer.policy().config(), trainer.policy().layout(), S,
                                                 cbytes, 2, !precomputed, reshard != 0) /
              (1 << 20);
          std::printf(
              "{\"impl\": \"kto\", \"ranks\": %d, \"dtype\": \"%s\", \"native_bf16\": %s, "
              "\"threads_per_rank\": %ld, \"reshard\": %ld, \"layout\": \"%s\", \"hidden\": %ld, \"layers\": "
              "%ld, \"vocab\": "
              "%ld, "
              "\"seq\": %ld, \"batch_per_rank\": %ld, \"ms_per_step\": %.2f, \"tokens_per_s\": %.1f, "
              "\"model_gflops\": %.2f, \"mfu\": %.4f, \"executed_gflop_per_step\": %.2f, "
              "\"executed_gflops\": %.2f, \"peak_gflops\": %.2f, \"executed_vs_peak\": %.4f, "
              "\"peak_gflops_after\": %.2f, \"executed_vs_peak_after\": %.4f, "
              "\"params\": %ld, \"peak_rss_mib\": %.0f, \"precomputed\": %s, \"score_tokens_per_s\": %.1f, "
              "\"allocator_misses_per_step\": %.0f, \"comm_wait_ms_per_step\": %.1f, "
              "\"comm_mib_per_step\": %.1f, \"shard_group\": \"%s\", \"shard_size\": %d, \"replicas\": %d, "
              "\"shard_link_mib\": %.2f, \"shard_link_mib_formula\": %.2f, \"replica_link_mib\": %.2f, "
              "\"replica_link_mib_formula\": %.2f, \"state_mib_per_rank\": %.1f, \"step_ms\": [%s]}\n",
              world.size(), dtype.c_str(), native_bf16() ? "true" : "false", static_cast<long>(threads),
              static_cast<long>(reshard), layout.c_str(), static_cast<long>(hidden),
              static_cast<long>(layers), static_cast<long>(vocab), static_cast<long>(seq),
              static_cast<long>(batch), sec * 1e3, median(tps), model_per_rank / 1e9, median(mfu),
              executed / 1e9, executed / sec / 1e9, peak_per_rank / 1e9, executed / sec / peak_per_rank,
              peak_after / 1e9, executed / sec / peak_after, static_cast<long>(params), median(rss),
              precomputed ? "true" : "false", score_tokens_per_s, misses, wait_ms, comm_mib,
              shard_group.c_str(), S, R, median(shard_link), formula.shard_link_bytes(S) / (1 << 20),
              median(replica_link), formula.replica_link_bytes(R) / (1 << 20), state_mib, step_ms.c_str());
          std::fflush(stdout);
          kto::remove_tree(dir);
        }
        turns.end();
        return 0;
      });
}
