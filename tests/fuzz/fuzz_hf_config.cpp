// A Hugging Face config.json: the architecture a model is built from.
#include "fuzz_support.h"
#include "kto/model/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  kto::fuzz::expect_clear_errors([&] {
    const kto::model::ModelConfig config = kto::model::parse_hf_config(text, "config.json");
    (void)kto::model::hf_config_with_dtype(text, "bfloat16");  // export rewrites the user's file
    (void)kto::model::hf_config_json(config, "float32");
  });
  return 0;
}
