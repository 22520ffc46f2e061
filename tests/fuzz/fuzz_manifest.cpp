// A checkpoint's manifest.yaml. A mutated manifest fails its checksum almost always, so for half
// the inputs the harness appends the right checksum line and the YAML and range checks are
// reached with any content.
#include "fuzz_support.h"
#include "kto/ckpt/checkpoint.h"
#include "kto/util/sha256.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  if (size > 0 && (data[0] & 1)) {
    text += "manifest_sha256: " + kto::sha256_hex(text.data(), text.size()) + "\n";
  }
  const std::string path =
      kto::fuzz::write_input(reinterpret_cast<const uint8_t*>(text.data()), text.size(), "manifest.yaml");
  kto::fuzz::expect_clear_errors([&] { (void)kto::ckpt::read_manifest(kto::fuzz::work_dir()); });
  (void)path;
  return 0;
}
