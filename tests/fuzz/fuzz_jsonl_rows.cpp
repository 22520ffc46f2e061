// A feedback input file as kto-data prepare reads it: gzip or not, JSON lines or one JSON array,
// every row shape (unpaired, conversational, paired, Anthropic HH) through a chat template.
#include "fuzz_support.h"
#include "prepare/inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* const templates[] = {"hh", "chatml", "llama3", "plain"};
  const std::string path = kto::fuzz::write_input(data, size, "rows.jsonl");
  kto::fuzz::expect_clear_errors([&] {
    kto::data_tools::PrepareOptions options;
    options.inputs = {path};
    options.chat_template = templates[size % 4];
    options.max_error_rate = 1.0;   // every row is parsed, none ends the file early
    options.max_line_bytes = 4096;  // long enough for the seeds, short enough to hit the cap
    options.keep_pairs = size % 3 == 0;
    kto::data_tools::PrepareSummary summary;
    std::string reasons;
    (void)kto::data_tools::read_inputs(options, summary, &reasons);
  });
  return 0;
}
