// The dataset reader under mpirun: every rank reads its own examples (HDF5 hyperslabs) from a
// file written by rank 0, and over an epoch the ranks together see every example exactly once.

#include <catch2/catch.hpp>
#include <set>
#include <sstream>

#include "kto/data/dataset.h"
#include "kto/data/sampler.h"
#include "kto/util/files.h"
#include "mpi_world.h"

namespace {
std::vector<int32_t> tokens_of(int64_t i) {
  std::vector<int32_t> t(static_cast<size_t>(i % 5 + 2), static_cast<int32_t>(i));
  return t;
}
}  // namespace

TEST_CASE("ranks read disjoint examples that cover each epoch exactly", "[mpi][data]") {
  const auto& w = kto::test::world();
  const int64_t n = 37;
  const std::string dir = kto::test::shared_temp_dir("kto-mpi-data");
  if (w.rank() == 0) {
    kto::data::DatasetWriter writer(dir + "/d.h5", kto::data::DatasetAttributes{});
    for (int64_t i = 0; i < n; ++i) writer.add(tokens_of(i), 1, i % 2 == 0);
    writer.finish();
  }
  w.barrier();  // rank 0 has written the files
  const auto ds = kto::data::Dataset::open({dir + "/d.h5"});
  REQUIRE(ds->size() == n);

  kto::data::BatchSampler sampler(n, 5, 2, 3, w.size(), w.rank());
  std::ostringstream mine;
  const int64_t steps = 2 * n / sampler.global_batch() + 2;
  for (int64_t s = 0; s < steps; ++s) {
    for (const auto& micro : sampler.next_step()) {
      for (const auto& e : micro) {
        const auto ex = ds->read(e.index);
        CHECK(ex.tokens == tokens_of(e.index));
        CHECK(ex.desirable == (e.index % 2 == 0));
        if (e.epoch == 0) mine << e.index << " ";
      }
    }
  }
  std::multiset<int64_t> epoch0;
  for (const std::string& part : w.all_gather(mine.str())) {
    std::istringstream in(part);
    int64_t i = 0;
    while (in >> i) epoch0.insert(i);
  }
  CHECK(epoch0.size() == static_cast<size_t>(n));
  CHECK(std::set<int64_t>(epoch0.begin(), epoch0.end()).size() == static_cast<size_t>(n));
  w.barrier();
  if (w.rank() == 0) kto::remove_tree(dir);
}
