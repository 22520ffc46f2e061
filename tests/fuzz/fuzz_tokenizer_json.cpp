// A Hugging Face tokenizer.json: vocabulary, merges, added tokens, normalizer, pre-tokenizer
// regexes, post-processor and decoder; then encoding and decoding with what was built.
#include "fuzz_support.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kto::fuzz::write_input(data, size, "tokenizer.json");
  kto::fuzz::expect_clear_errors([&] {
    const auto tok = kto::tok::load_hf_tokenizer(path);
    for (const char* text :
         {"Hello world!  It's 2024\n\n\tok", "\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 caf\xc3\xa9",
          "<s></s><|endoftext|>[INST]", ""}) {
      const std::vector<int32_t> ids = tok->encode(text, true);
      (void)tok->decode(ids, false);
      (void)tok->decode(ids, true);
    }
    std::vector<int32_t> every;
    for (int64_t id = 0; id < tok->vocab_size() && id < 512; ++id) every.push_back(static_cast<int32_t>(id));
    (void)tok->decode(every, false);
    (void)tok->token_to_id("</s>");
  });
  return 0;
}
