// Microbatch assembly: padding, masks, KL pairs and their truncation.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "kto/data/batch.h"
#include "kto/data/loader.h"
#include "kto/util/check.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using kto::data::Example;

TEST_CASE("microbatches: padded targets and mismatched KL pairs of the right lengths", "[data][batch]") {
  std::vector<Example> ex(3);
  // prompt lengths 2, 1, 3; completion lengths 1, 3, 2.
  ex[0].tokens = {11, 12, 13};
  ex[0].prompt_len = 2;
  ex[0].desirable = true;
  ex[1].tokens = {21, 22, 23, 24};
  ex[1].prompt_len = 1;
  ex[2].tokens = {31, 32, 33, 34, 35};
  ex[2].prompt_len = 3;
  ex[2].desirable = true;
  for (int i = 0; i < 3; ++i) ex[static_cast<size_t>(i)].index = 100 + i;
  kto::data::BatchOptions o;
  o.pad_id = 7;
  const auto mb = kto::data::assemble_microbatch(ex, o);
  CHECK(mb.example_ids == std::vector<int64_t>{100, 101, 102});
  CHECK(at::equal(mb.desirable, at::tensor({1, 0, 1}, at::kLong).to(at::kBool)));
  CHECK(mb.target.input_ids.sizes() == at::IntArrayRef({3, 5}));
  CHECK(at::equal(mb.target.input_ids[0], at::tensor({11, 12, 13, 7, 7}, at::kLong)));
  CHECK(at::equal(mb.target.loss_mask[2], at::tensor({0, 0, 0, 1, 1}, at::kLong)));
  CHECK(at::equal(mb.target.attention_mask[1], at::tensor({1, 1, 1, 1, 0}, at::kLong)));
  CHECK(mb.target.num_tokens == 12);
  // next pairing: KL row i = prompt_i + completion_{i+1 mod 3}
  CHECK(at::equal(mb.kl.input_ids[0].narrow(0, 0, 5), at::tensor({11, 12, 22, 23, 24}, at::kLong)));
  CHECK(at::equal(mb.kl.input_ids[1].narrow(0, 0, 3), at::tensor({21, 34, 35}, at::kLong)));
  CHECK(at::equal(mb.kl.input_ids[2].narrow(0, 0, 4), at::tensor({31, 32, 33, 13}, at::kLong)));
  CHECK(at::equal(mb.kl.loss_mask[2], at::tensor({0, 0, 0, 1, 0}, at::kLong)));
  CHECK(mb.kl.selection.rows.size(0) == 3 + 2 + 1);

  o.pairing = kto::data::Pairing::prev;
  o.max_length =
      4;  // row 0 = prompt_0 (2) + completion_2 (2) fits; row 2 = prompt_2 (3) + completion_1 (3) -> 1
  const auto prev = kto::data::assemble_microbatch(ex, o);
  CHECK(at::equal(prev.kl.input_ids[0].narrow(0, 0, 4), at::tensor({11, 12, 34, 35}, at::kLong)));
  CHECK(at::equal(prev.kl.input_ids[2].narrow(0, 0, 4), at::tensor({31, 32, 33, 22}, at::kLong)));
  CHECK(at::equal(prev.kl.loss_mask.sum(1), at::tensor({2, 1, 1}, at::kLong)));
  o.max_length = 3;  // prompt_2 alone fills it: its KL completion is empty (no selected token)
  const auto empty = kto::data::assemble_microbatch(ex, o);
  CHECK(at::equal(empty.kl.loss_mask.sum(1), at::tensor({1, 1, 0}, at::kLong)));
  CHECK((empty.kl.selection.seq == 2).sum().item<int64_t>() == 0);

  CHECK_THROWS_WITH(kto::data::assemble_microbatch({ex[0]}, o), Contains("micro_batch >= 2"));
  CHECK_FALSE(kto::parse_choice(kto::data::kPairings, "random"));
}

TEST_CASE("the data loader reads this rank's microbatches and resumes exactly", "[data][batch]") {
  kto::test::TempDir tmp;
  kto::data::DatasetAttributes attrs;
  attrs.pad_id = 5;
  kto::data::DatasetWriter w(tmp.file("d.h5"), attrs);
  for (int i = 0; i < 20; ++i) w.add({100 + i, 200 + i, 300 + i}, 1 + i % 2, i % 3 == 0);
  w.finish();
  const auto ds = kto::data::Dataset::open({tmp.file("d.h5")});
  kto::data::DataOptions o;
  o.seed = 4;
  o.micro_batch = 3;
  o.pad_to_multiple_of = 1;
  o.layout = kto::data::BatchLayout::padded;  // rows to inspect
  const kto::data::BatchOptions bo = kto::data::batch_options(o, *ds, /*kl_pass=*/true, /*use_scores=*/false);
  CHECK(bo.pad_id == 5);  // the dataset's
  kto::data::DataLoader a(ds, o, 2, bo, 2, 1), b(ds, o, 2, bo, 2, 1);
  const auto first = a.next_step();
  REQUIRE(first.size() == 2);
  CHECK(first[0].size() == 3);
  CHECK(first[0].target.input_ids.sizes() == at::IntArrayRef({3, 3}));
  for (const auto& mb : first) {
    for (int64_t k = 0; k < mb.size(); ++k) {
      const int64_t id = mb.example_ids[static_cast<size_t>(k)];
      CHECK(mb.target.input_ids[k][0].item<int64_t>() == 100 + id);  // the example itself was read
    }
  }
  a.next_step();
  b.restore(a.state());
  const auto x = a.next_step(), y = b.next_step();
  for (size_t m = 0; m < x.size(); ++m) CHECK(x[m].example_ids == y[m].example_ids);
  o.micro_batch = 1;
  CHECK_THROWS_WITH(kto::data::DataLoader(ds, o, 2, bo, 1, 0), Contains("at least 2"));
}
