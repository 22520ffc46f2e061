// Subcommands of kto-ckpt; each parses its own options from argv[2..].
#pragma once

#include <cstdint>

namespace kto::apps {

int ckpt_forward(int argc, char** argv);
int ckpt_generate(int argc, char** argv);
int ckpt_init(int argc, char** argv);
int ckpt_config(int argc, char** argv);
int ckpt_show(int argc, char** argv);
int ckpt_compare(int argc, char** argv);
int ckpt_export(int argc, char** argv);
int ckpt_inspect(int argc, char** argv);

// Sets LibTorch's intra-op threads: `threads` > 0, else OMP_NUM_THREADS, else all cores.
void set_compute_threads(int64_t threads);

}  // namespace kto::apps
