// Subcommands of kto-ckpt; each parses its own options from argv[2..].
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

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
// --dtype fp32|bf16|fp64 as a ScalarType; cli::UsageError otherwise.
c10::ScalarType parse_dtype(const std::string& name);

}  // namespace kto::apps
