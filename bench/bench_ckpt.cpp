// bench_ckpt: checkpoint write and read bandwidth (run under mpirun; prints, asserts nothing).
// Each rank writes its slices and optimizer state (fp32 masters + AdamW m, v: 12 bytes per
// parameter, divided by the world size), fsyncs and hashes its shard; loading reads them back
// (and re-slices when the world size differs — not here).
//
//   mpirun -np 2 --oversubscribe build/bin/bench_ckpt --hidden 768 --layers 6
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>

#include "bench_common.h"
#include "kto/ckpt/checkpoint.h"
#include "kto/comm/communicator.h"
#include "kto/fsdp/optimizer.h"
#include "kto/fsdp/sharded_model.h"
#include "kto/util/cli.h"
#include "kto/util/files.h"
#include "kto/util/log.h"

int main(int argc, char** argv) {
  return kto::comm::run_distributed_main(
      "bench_ckpt", argc, argv, [&](const kto::comm::ProcessGroup& world) -> int {
        int64_t hidden = 768, layers = 6, vocab = 32000;
        std::string dir = "/tmp/kto-bench-ckpt";
        kto::cli::Args args("bench_ckpt", "Checkpoint write and read bandwidth (run under mpirun).");
        args.option("--hidden", &hidden, "C", "model width (768)")
            .option("--layers", &layers, "L", "decoder blocks (6)")
            .option("--vocab", &vocab, "V", "vocabulary (32000)")
            .option("--dir", &dir, "DIR", "where to write (default /tmp/kto-bench-ckpt; removed afterwards)");
        if (!args.parse(argc, argv)) return 0;
        kto::log::set_level(kto::log::Level::warn);
        const auto cfg = kto::bench::llama_config(hidden, layers, vocab);
        auto comm = std::shared_ptr<kto::comm::Communicator>(kto::comm::make_communicator(world, at::kCPU));
        kto::fsdp::ShardedModel model(cfg, world, comm, {});
        {
          at::NoGradGuard no_grad;
          for (at::Tensor& s : model.shards()) s.normal_(0.0, 0.02);
        }
        kto::fsdp::ShardedOptimizer opt(model.shards(), model.decay_segments(), {}, comm.get());
        const double bytes = static_cast<double>(model.shard_bytes() + opt.state_bytes());
        const double total = world.all_reduce(bytes, kto::comm::ReduceOp::sum);

        world.barrier();
        auto t0 = std::chrono::steady_clock::now();
        kto::ckpt::SaveRequest request;
        request.checkpoints_dir = dir;
        request.state = {1, {}};
        request.reference_identity = "bench";
        request.keep = 1;
        const std::string saved = kto::ckpt::save(request, model, opt, world);
        const double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        world.barrier();
        t0 = std::chrono::steady_clock::now();
        kto::ckpt::load(saved, model, opt, world);
        const double read_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        world.barrier();
        t0 = std::chrono::steady_clock::now();
        const auto problems =
            kto::ckpt::verify(saved, kto::ckpt::read_manifest(saved), world.size(), world.rank());
        const double verify_s =
            world.all_reduce(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                             kto::comm::ReduceOp::max);
        if (world.is_root()) {
          std::printf("model: %.1fM parameters; checkpoint %.1f MiB over %d shard(s) (%.1f MiB per rank)\n",
                      cfg.num_parameters() / 1e6, total / 1048576.0, world.size(), bytes / 1048576.0);
          std::printf("save (write + fsync + sha256 + manifest): %.2f s, %.0f MB/s\n", write_s,
                      total / write_s / 1e6);
          std::printf("load (re-slicing reads):                  %.2f s, %.0f MB/s\n", read_s,
                      total / read_s / 1e6);
          std::printf("verify (sha256 of every shard):           %.2f s, %.0f MB/s%s\n", verify_s,
                      total / verify_s / 1e6, problems.empty() ? "" : " (PROBLEMS)");
          kto::remove_tree(dir);
        }
        return 0;
      });
}
