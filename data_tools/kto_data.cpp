// kto-data: turns feedback data into tokenized HDF5 datasets for kto-train.
//   prepare  feedback JSONL/JSON + tokenizer -> tokenized HDF5 dataset
//   inspect  what a dataset file holds
//   encode   JSONL {"text"} or {"prompt"} on stdin -> JSONL {"ids"} on stdout
//   decode   JSONL {"ids"} on stdin -> JSONL {"text"} on stdout

#include "commands.h"
#include "kto/util/cli.h"

int main(int argc, char** argv) {
  using namespace kto::data_tools;
  return kto::cli::run_subcommands(
      "kto-data",
      {{"prepare", "JSONL/JSON feedback + tokenizer -> tokenized HDF5 dataset (train/eval, shards)",
        prepare_command},
       {"inspect", "schema, counts, length histogram and examples of a dataset file", inspect_command},
       {"encode",
        "tokenize JSONL {\"text\": ...} or {\"prompt\": ...} lines from stdin to JSONL {\"ids\": [...]} on "
        "stdout",
        encode_command},
       {"decode", "JSONL {\"ids\": [...]} lines from stdin to JSONL {\"text\": ...} on stdout",
        decode_command}},
      argc, argv);
}
