// A kto-train YAML config: every section, key types, ranges and the cross-key checks.
#include "fuzz_support.h"
#include "kto/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  kto::fuzz::expect_clear_errors([&] {
    const kto::config::Config config = kto::config::parse_config(text, "config.yaml");
    (void)kto::config::parse_config(kto::config::dump_config(config), "resolved config");
  });
  return 0;
}
