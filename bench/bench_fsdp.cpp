// bench_fsdp: what sharding buys and costs, per rank (run under mpirun; prints, asserts nothing).
//
//   * resident memory of the policy's parameters + AdamW state, and peak RSS, per rank;
//   * bytes all-gathered and reduce-scattered per training microbatch, per reshard mode;
//   * all-gather and reduce-scatter bandwidth of the largest unit;
//   * time of one microbatch forward + backward + optimizer step.
//
//   mpirun -np 4 --oversubscribe build/bin/bench_fsdp --hidden 1024 --layers 8
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "bench_common.h"
#include "kto/comm/communicator.h"
#include "kto/fsdp/optimizer.h"
#include "kto/fsdp/sharded_model.h"
#include "kto/model/logprob.h"
#include "kto/util/cli.h"

namespace {

using Clock = std::chrono::steady_clock;

double mib(double bytes) { return bytes / 1048576.0; }

int64_t current_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

}  // namespace

int main(int argc, char** argv) {
  return kto::comm::run_distributed_main(
      "bench_fsdp", argc, argv, [&](const kto::comm::ProcessGroup& world) -> int {
        int64_t hidden = 1024, layers = 8, vocab = 32000, batch = 2, seq = 128, threads = 1;
        kto::cli::Args args("bench_fsdp",
                            "Memory and traffic of the fully sharded model, per rank (run under mpirun).");
        args.option("--hidden", &hidden, "C", "model width (default 1024)")
            .option("--layers", &layers, "L", "decoder blocks (default 8)")
            .option("--vocab", &vocab, "V", "vocabulary (default 32000)")
            .option("--batch", &batch, "B", "sequences per microbatch per rank (default 2)")
            .option("--seq", &seq, "T", "tokens per sequence (default 128)")
            .option("--threads", &threads, "N", "intra-op threads per rank (default 1)");
        if (!args.parse(argc, argv)) return 0;
        at::set_num_threads(static_cast<int>(threads));

        const kto::model::ModelConfig cfg = kto::bench::llama_config(hidden, layers, vocab);

        auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
        const int64_t rss0 = current_rss_bytes();
        std::ostringstream report;
        for (bool reshard : {true, false}) {
          kto::fsdp::FsdpOptions o;
          o.reshard_after_forward = reshard;
          kto::fsdp::ShardedModel model(cfg, world, comm, o);
          {
            at::NoGradGuard no_grad;  // random slices straight away: no full model on any rank
            for (at::Tensor& s : model.shards()) s.normal_(0.0, 0.02);
          }
          kto::fsdp::ShardedOptimizer opt(model.shards(), model.decay_segments(), {}, comm.get());
          const int64_t rss_state = current_rss_bytes() - rss0;

          at::Tensor ids = at::randint(vocab, {batch, seq}, at::kLong);
          at::Tensor loss_mask = at::zeros_like(ids);
          loss_mask.narrow(1, seq / 2, seq - seq / 2).fill_(1);
          const auto sel = kto::model::select_tokens(ids, loss_mask);
          double step_seconds = 0;
          for (int rep = 0; rep < 2; ++rep) {  // the first repetition warms up
            model.reset_comm_stats();
            world.barrier();
            const auto t0 = Clock::now();
            model.sequence_logprobs(ids, {}, sel).mean().backward();
            opt.step(1e-5, opt.grad_norm());
            opt.zero_grad();
            world.barrier();
            step_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
          }
          const auto stats = model.comm_stats();

          if (reshard) {
            // Bandwidth of the largest unit (the embedding), gathered and reduce-scattered.
            const size_t u = 0;
            const auto r = model.range(u);
            at::Tensor send = model.shards()[u].detach().contiguous(), full = at::empty({r.padded_numel});
            at::Tensor shard = at::empty({r.shard_numel});
            double ag = 0, rs = 0;
            for (int rep = 0; rep < 3; ++rep) {
              world.barrier();
              auto t0 = Clock::now();
              comm->all_gather(send, full)->wait();
              ag += std::chrono::duration<double>(Clock::now() - t0).count();
              world.barrier();
              t0 = Clock::now();
              comm->reduce_scatter(full, shard, kto::comm::ReduceOp::sum)->wait();
              rs += std::chrono::duration<double>(Clock::now() - t0).count();
            }
            const double bytes = static_cast<double>(r.padded_numel) * 4;
            report << "bandwidth of the embedding unit (" << mib(bytes) << " MiB fp32): all-gather "
                   << bytes * 3 / ag / 1e9 << " GB/s, reduce-scatter " << bytes * 3 / rs / 1e9 << " GB/s\n";
          }
          char line[512];
          std::snprintf(
              line, sizeof(line),
              "rank %d  %-22s params+AdamW %8.1f MiB (slices %7.1f + state %7.1f)  peak RSS %8.1f MiB  "
              "gathered %7.1f MiB  reduced %7.1f MiB per microbatch  step %.2f s\n",
              world.rank(), reshard ? "reshard_after_forward" : "kept", mib(rss_state),
              mib(model.shard_bytes()), mib(opt.state_bytes()), mib(peak_rss_bytes()),
              mib(stats.all_gather_bytes), mib(stats.reduce_scatter_bytes), step_seconds);
          report << line;
        }
        const auto all = world.all_gather(report.str());
        if (world.is_root()) {
          std::printf(
              "model: llama hidden %ld, %ld layers, vocab %ld: %.1fM parameters (%.1f MiB fp32); %d rank(s), "
              "microbatch %ld x %ld per rank\n",
              static_cast<long>(hidden), static_cast<long>(layers), static_cast<long>(vocab),
              cfg.num_parameters() / 1e6, mib(cfg.num_parameters() * 4.0), world.size(),
              static_cast<long>(batch), static_cast<long>(seq));
          for (const std::string& r : all) std::printf("%s", r.c_str());
        }
        return 0;
      });
}
