// kto-data: turns feedback data into tokenized HDF5 datasets for kto-train.
//   prepare  feedback JSONL/JSON + tokenizer -> tokenized HDF5 dataset
//   inspect  what a dataset file holds
//   encode   JSONL {"text"} on stdin -> JSONL {"ids"} on stdout (tokenizer check)
#include <cstring>
#include <iostream>

#include "commands.h"
#include "kto/util/cli.h"
#include "kto/util/version.h"

namespace {

const char* kUsage =
    "usage: kto-data <command> [options]\n"
    "\n"
    "commands:\n"
    "  prepare   JSONL/JSON feedback + tokenizer -> tokenized HDF5 dataset (train/eval, shards)\n"
    "  inspect   schema, counts, length histogram and examples of a dataset file\n"
    "  encode    tokenize JSONL {\"text\": ...} lines from stdin to JSONL {\"ids\": [...]} on stdout\n"
    "\n"
    "`kto-data <command> --help` describes each command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  return kto::cli::run_main("kto-data", [&]() -> int {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
      std::cout << kUsage;
      return argc < 2 ? 2 : 0;
    }
    const std::string command = argv[1];
    if (command == "--version") {
      std::cout << kto::build_summary() << "\n";
      return 0;
    }
    if (command == "encode") return kto::data_tools::encode_command(argc, argv);
    if (command == "prepare") return kto::data_tools::prepare_command(argc, argv);
    if (command == "inspect") return kto::data_tools::inspect_command(argc, argv);
    throw kto::cli::UsageError("kto-data: unknown command '" + command + "'\n" + kUsage);
  });
}
