// A .safetensors file from anywhere: header JSON, offsets, dtypes, shapes, then tensor reads.
#include "fuzz_support.h"
#include "kto/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kto::fuzz::write_input(data, size, "model.safetensors");
  kto::fuzz::expect_clear_errors([&] {
    kto::io::SafetensorsReader reader(path);
    for (const kto::io::TensorInfo& t : reader.tensors()) {
      if (t.numel() <= 4096) {
        (void)reader.read(t.name);
      } else {
        (void)reader.read_range(t.name, t.numel() - 1, 1);
      }
    }
    (void)reader.info("model.embed_tokens.weight");
  });
  return 0;
}
