// A kto HDF5 dataset file: open and validate (attributes, dtypes, shapes, offsets, counts, token
// ids), then read its examples as the loader does.
#include "fuzz_support.h"
#include "kto/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kto::fuzz::write_input(data, size, "data.h5");
  kto::fuzz::expect_clear_errors([&] {
    (void)kto::data::read_attributes(path);
    const auto dataset = kto::data::Dataset::open({path}, 1 << 16);
    for (int64_t i = 0; i < dataset->size() && i < 64; ++i) (void)dataset->read(i);
  });
  return 0;
}
