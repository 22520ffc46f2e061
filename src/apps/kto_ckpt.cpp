// kto-ckpt: model and checkpoint tools.
//   forward  run a Hugging Face model on token ids; write logits and token log-probs
//   init     write a randomly initialised model (from a config's model.architecture) as a HF dir
//   config   print a resolved config, or the reference of every config key
//   show     list the tensors of a safetensors file or HF directory
//   compare  max abs/rel differences between two safetensors files
#include <ATen/Parallel.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include "ckpt_commands.h"
#include "kto/util/cli.h"
#include "kto/util/version.h"

namespace kto::apps {

void set_compute_threads(int64_t threads) {
  if (threads <= 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    threads = omp != nullptr && std::atoi(omp) > 0
                  ? std::atoi(omp)
                  : static_cast<int64_t>(std::thread::hardware_concurrency());
  }
  at::set_num_threads(static_cast<int>(std::max<int64_t>(1, threads)));
}

}  // namespace kto::apps

namespace {

const char* kUsage =
    "usage: kto-ckpt <command> [options]\n"
    "\n"
    "commands:\n"
    "  forward   run a Hugging Face model on token ids; write logits and token log-probs\n"
    "  init      write a randomly initialised model (a config's model.architecture) as a HF directory\n"
    "  config    print a resolved config (--config FILE [--set k=v]...) or the key reference\n"
    "  show      list the tensors of a safetensors file or HF directory (values or statistics)\n"
    "  compare   max abs/rel differences between two safetensors files (checks against HF)\n"
    "\n"
    "`kto-ckpt <command> --help` describes each command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  return kto::cli::run_main("kto-ckpt", [&]() -> int {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
      std::cout << kUsage;
      return argc < 2 ? 2 : 0;
    }
    const std::string command = argv[1];
    if (command == "--version") {
      std::cout << kto::build_summary() << "\n";
      return 0;
    }
    if (command == "forward") return kto::apps::ckpt_forward(argc, argv);
    if (command == "init") return kto::apps::ckpt_init(argc, argv);
    if (command == "config") return kto::apps::ckpt_config(argc, argv);
    if (command == "show") return kto::apps::ckpt_show(argc, argv);
    if (command == "compare") return kto::apps::ckpt_compare(argc, argv);
    throw kto::cli::UsageError("kto-ckpt: unknown command '" + command + "'\n" + kUsage);
  });
}
