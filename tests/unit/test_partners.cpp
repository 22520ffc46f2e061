// Fixed KL partners (kto/data/partners.h) and their storage in a dataset (/kl_partner): the
// rule (never itself, never its own prompt, every example some other's partner once),
// determinism from the seed, the refusal when no assignment exists, and the checks on open.
#include <catch2/catch.hpp>
#include <map>
#include <set>

#include "kto/data/dataset.h"
#include "kto/data/partners.h"
#include "kto/util/check.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using kto::data::Dataset;
using kto::data::DatasetWriter;

namespace {

// Examples whose prompt is {group, 7}; `sizes[g]` examples share prompt g; completion {i + 2}.
std::string write_groups(const kto::test::TempDir& dir, const std::string& name,
                         const std::vector<int>& sizes, const std::vector<int64_t>& partners = {}) {
  const std::string path = dir.file(name);
  DatasetWriter w(path, {});
  int32_t i = 0;
  for (size_t g = 0; g < sizes.size(); ++g) {
    for (int k = 0; k < sizes[g]; ++k, ++i) w.add({static_cast<int32_t>(g), 7, i + 2}, 2, i % 2 == 0);
  }
  if (!partners.empty()) w.set_kl_partners(partners);
  w.finish();
  return path;
}

}  // namespace

TEST_CASE("fixed KL partners: never itself nor its own prompt, each example once, from the seed",
          "[partners]") {
  kto::test::TempDir dir;
  for (const std::vector<int>& sizes : std::vector<std::vector<int>>{{1, 1},
                                                                     {2, 1, 1},
                                                                     {2, 2, 2, 2, 2},
                                                                     {3, 3},
                                                                     {1, 4, 2, 1, 1, 3, 1},
                                                                     std::vector<int>(101, 1),
                                                                     {5, 4, 1, 1, 1, 1, 1, 1}}) {
    const std::string path = write_groups(dir, "d.h5", sizes);
    const auto ds = Dataset::open({path});
    std::vector<int64_t> group;
    for (size_t g = 0; g < sizes.size(); ++g) group.insert(group.end(), static_cast<size_t>(sizes[g]), g);
    for (uint64_t seed : {0, 1, 2}) {
      const std::vector<int64_t> p = kto::data::draw_kl_partners(*ds, seed);
      REQUIRE(p.size() == group.size());
      std::set<int64_t> taken;
      for (size_t i = 0; i < p.size(); ++i) {
        INFO(sizes.size() << " prompts, seed " << seed << ", example " << i << " -> " << p[i]);
        CHECK(p[i] != static_cast<int64_t>(i));
        CHECK(group[static_cast<size_t>(p[i])] != group[i]);
        taken.insert(p[i]);
      }
      CHECK(taken.size() == p.size());                     // a permutation
      CHECK(kto::data::draw_kl_partners(*ds, seed) == p);  // deterministic
    }
    if (group.size() > 8) CHECK(kto::data::draw_kl_partners(*ds, 1) != kto::data::draw_kl_partners(*ds, 2));
    std::remove(path.c_str());
  }
}

TEST_CASE("fixed KL partners are refused where none exist", "[partners]") {
  kto::test::TempDir dir;
  const auto crowded = Dataset::open({write_groups(dir, "a.h5", {4, 1, 1})});
  CHECK_THROWS_WITH(kto::data::draw_kl_partners(*crowded, 0),
                    Contains("a.h5") && Contains("4 of its 6 examples share one prompt"));
  const auto single = Dataset::open({write_groups(dir, "b.h5", {1})});
  CHECK_THROWS_WITH(kto::data::draw_kl_partners(*single, 0), Contains("at least 2 examples"));
}

TEST_CASE("stored KL partners are read back and checked against the files they were drawn for",
          "[partners]") {
  kto::test::TempDir dir;
  const std::string a = write_groups(dir, "a.h5", {1, 1, 1}, {1, 2, 0});
  const auto ds = Dataset::open({a});
  REQUIRE(ds->has_kl_partners());
  CHECK(ds->kl_partners() == std::vector<int64_t>{1, 2, 0});
  CHECK(kto::data::fixed_kl_partners(*ds, 99) == ds->kl_partners());  // stored wins over the seed
  // Opened beside another file, the indices would mean other examples.
  const std::string b = write_groups(dir, "b.h5", {1, 1}, {1, 0});
  CHECK_THROWS_WITH(Dataset::open({a, b}), Contains("a.h5") && Contains("drawn for another set of files"));
  // An example paired with itself, or outside the set.
  CHECK_THROWS_WITH(Dataset::open({write_groups(dir, "c.h5", {1, 1, 1}, {1, 1, 0})}),
                    Contains("c.h5: example 1 has KL partner 1 (itself)"));
  CHECK_THROWS_WITH(Dataset::open({write_groups(dir, "d.h5", {1, 1}, {1, 5})}),
                    Contains("d.h5: example 1 has KL partner 5, outside the 2 examples"));
  // Partners in one file of a set only.
  CHECK_THROWS_WITH(Dataset::open({a, write_groups(dir, "e.h5", {1, 1})}), Contains("in some files only"));
}
