// kto-train: trains a policy with KTO (or another HALO) under mpirun, Slurm or alone.
//   kto-train --config configs/tiny.yaml [--set key=value]... [--print-config]
//   kto-train --config FILE --score-reference DIR   (precomputed reference scores)
#include <ATen/Parallel.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "kto/comm/process_group.h"
#include "kto/config/config.h"
#include "kto/train/dry_run.h"
#include "kto/train/score.h"
#include "kto/train/trainer.h"
#include "kto/util/cli.h"
#include "kto/util/log.h"
#include "kto/util/process.h"
#include "kto/util/signals.h"

int main(int argc, char** argv) {
  return kto::comm::run_distributed_main(
      "kto-train", argc, argv, [&](const kto::comm::ProcessGroup& world) -> int {
        std::string config_path;
        std::vector<std::string> overrides;
        bool print_config = false, dry = false;
        int64_t world_size = 0, ranks_per_host = 8;
        std::string resume, score_out;
        std::vector<std::string> allow_change;
        kto::cli::Args args(
            "kto-train",
            "Aligns a language model with KTO (or DPO, SLiC, SFT, ... — loss.name) on prepared HDF5\n"
            "data, fully sharded over all ranks. Writes metrics.jsonl, the resolved config and the\n"
            "trained model (final/) into run.dir.");
        args.option("--config", &config_path, "FILE", "YAML config (see configs/ and docs/configuration.md)",
                    kto::cli::required)
            .list("--set", &overrides, "KEY=VALUE",
                  "override a config key (repeatable), e.g. --set optim.lr=1e-6")
            .option(
                "--resume", &resume, "auto|never|DIR",
                "resume from the newest complete checkpoint (auto, the default), start over, or a given one")
            .list("--allow-change", &allow_change, "KEY",
                  "let a resumed run change this config key or section (repeatable; adds to "
                  "ckpt.allow_change); without it a resume refuses changes that make another experiment")
            .flag("--print-config", &print_config, "print the resolved config and exit")
            .flag("--dry-run", &dry,
                  "size the job: print the batch decomposition, steps and memory per rank for "
                  "--world-size ranks, then exit (reads config.json and the data headers only)")
            .option(
                "--score-reference", &score_out, "DIR",
                "score data.train and data.eval with the reference once (under mpirun: sharded over every "
                "rank) and write copies of the files with the scores and fixed KL partners into DIR, then "
                "exit; train on them with data.pairing: fixed (docs/training.md)")
            .option("--world-size", &world_size, "N", "ranks of the --dry-run (default: this launch's)")
            .option("--ranks-per-host", &ranks_per_host, "N",
                    "ranks sharing one host's memory in the --dry-run estimate (default 8)")
            .epilog(
                "Launch: launch/mpirun.sh or launch/slurm/*.sbatch (docs/launching.md), mpirun -np N\n"
                "kto-train --config FILE (one rank per GPU), or alone for one process.\n"
                "Signals: SIGUSR1 or SIGTERM (or a first Ctrl-C) finishes the current step on every rank,\n"
                "writes a checkpoint and exits with status 75; the next run resumes from it. A second\n"
                "Ctrl-C exits at once (status 130).\n"
                "Progress: one updating line on a terminal, plain lines in logs; KTO_PROGRESS=line|plain\n"
                "forces either. run.dir/status.json says running, stopped or done.");
        if (!args.parse(argc, argv)) return 0;
        if (!resume.empty()) overrides.push_back("ckpt.resume=" + resume);
        kto::config::Config config = kto::config::load_config(config_path, overrides);
        for (const std::string& key : allow_change) config.ckpt.allow_change.push_back(key);
        if (dry) {
          if (!world.is_root()) return 0;
          kto::train::dry_run(config, world_size > 0 ? world_size : world.size(), ranks_per_host);
          return 0;
        }
        if (print_config) {
          if (world.is_root()) std::cout << kto::config::dump_config(config, true);
          return 0;
        }
        kto::log::set_level(config.run.log_level);
        at::set_num_threads(
            kto::compute_threads(config.run.threads, world.local_size(), "key 'run.threads'"));
        if (!score_out.empty()) {
          kto::train::score_reference(config, world, score_out);
          return 0;
        }
        kto::signals::install_stop_handlers(/*announce=*/world.is_root());
        kto::train::Trainer trainer(config, world);
        trainer.fit();
        if (trainer.failed()) return 1;  // every rank alike: an orderly end, no abort
        return trainer.stopped() ? kto::signals::kExitStopped : 0;
      });
}
