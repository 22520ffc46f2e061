// Precomputed reference scores (kto-train --score-reference, reference.precomputed): scoring
// writes the same scores at 1, 2 and 4 ranks; training on them equals training with the live
// reference and fixed KL partners (KTO and DPO, fp64, 1 and 2 ranks, 20 steps); the refusals
// (the reference's identity, eval data without scores, partners drawn for other files, pairing
// not fixed, scores required but absent).
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <map>

#include "kto/data/dataset.h"
#include "kto/data/partners.h"
#include "kto/io/safetensors.h"
#include "kto/util/files.h"
#include "runs.h"
#include "synthetic.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {

// kto-train (under mpirun when ranks > 1) with `args` after the binary.
int kto_train(int ranks, const std::string& args, std::string* log) {
  const std::string launch =
      ranks > 1 ? std::string(KTO_MPIEXEC) + " -np " + std::to_string(ranks) + " --oversubscribe " : "";
  return kto::test::run_command(launch + kto::test::bin_dir() + "/kto-train " + args, log);
}

std::string sets(const std::vector<std::string>& s) {
  std::string out;
  for (const std::string& x : s) out += " --set " + x;
  return out;
}

std::vector<double> column(const kto::data::Dataset& ds, bool kl) {
  std::vector<double> v;
  for (int64_t i = 0; i < ds.size(); ++i) {
    const kto::data::Example e = ds.read(i);
    v.push_back(kl ? e.ref_kl_logp : e.ref_logp);
  }
  return v;
}

}  // namespace

TEST_CASE("scoring the reference at 1, 2 and 4 ranks writes the same scores and partners",
          "[e2e][precomputed][mpi]") {
  kto::test::SyntheticSpec spec;
  spec.examples = 96;
  kto::test::SyntheticTask task(spec, /*with_eval=*/true, "", 40);
  for (const std::string dtype : {"fp64", "fp32"}) {
    DYNAMIC_SECTION(dtype) {
      std::map<int, std::shared_ptr<kto::data::Dataset>> train, eval;
      for (int ranks : {1, 2, 4}) {
        const std::string out = task.dir.file(dtype + std::to_string(ranks));
        std::string log;
        const int rc =
            kto_train(ranks,
                      "--config " + task.config + sets({"model.dtype=" + dtype, "data.micro_batch=5"}) +
                          " --score-reference " + out,
                      &log);
        INFO(log);
        REQUIRE(rc == 0);
        CHECK_THAT(log, Contains("data.train: 96/96 examples") && Contains("tok/s"));
        train[ranks] = kto::data::Dataset::open({out + "/train.h5"});
        eval[ranks] = kto::data::Dataset::open({out + "/eval.h5"});
        for (const auto& ds : {train[ranks], eval[ranks]}) {
          REQUIRE(ds->has_reference_logps());
          REQUIRE(ds->has_reference_kl_logps());
          CHECK(ds->attributes().reference_identity.find("random init seed 7") == 0);
          CHECK(ds->attributes().reference_dtype == dtype);
        }
      }
      // The inputs were copied example by example, scores beside them.
      const auto original = kto::data::Dataset::open({task.dir.file("train.h5")});
      REQUIRE(train[1]->size() == original->size());
      CHECK(train[1]->identities()[0].data_sha256 == original->identities()[0].data_sha256);
      CHECK(train[1]->kl_partners() == kto::data::draw_kl_partners(*original, 0));  // data.seed 0
      for (int ranks : {2, 4}) {
        INFO(ranks << " ranks");
        CHECK(train[ranks]->kl_partners() == train[1]->kl_partners());
        CHECK(eval[ranks]->kl_partners() == eval[1]->kl_partners());
        // The microbatches are the same at every world size (every W-th goes to a rank), and a
        // rank computes its own exactly as one rank would: identical scores, bit for bit.
        for (bool kl : {false, true}) {
          CHECK(column(*train[1], kl) == column(*train[ranks], kl));
          CHECK(column(*eval[1], kl) == column(*eval[ranks], kl));
        }
      }
    }
  }
}

TEST_CASE("training on precomputed scores equals the live reference with fixed partners",
          "[e2e][precomputed][mpi]") {
  for (const bool paired : {false, true}) {
    kto::test::SyntheticSpec spec;
    spec.paired = paired;
    spec.examples = 128;
    spec.keep_undesirable = paired ? 1.0 : 0.5;  // KTO: z0 positive, so the KL scores matter
    kto::test::SyntheticTask task(spec, /*with_eval=*/true, paired ? "loss: {name: dpo}\n" : "", 40);
    const std::vector<std::string> common = {
        "model.dtype=fp64",   "train.steps=20",      "train.export_final=true", "data.pairing=fixed",
        "data.micro_batch=4", "data.global_batch=8", "train.eval_every=10"};
    std::string log;
    const std::string scored = task.dir.file("scored");
    REQUIRE(kto_train(1, "--config " + task.config + sets(common) + " --score-reference " + scored, &log) ==
            0);
    for (int ranks : {1, 2}) {
      DYNAMIC_SECTION((paired ? "dpo" : "kto") << " at " << ranks << " rank(s)") {
        const std::string live = task.dir.file("live" + std::to_string(ranks)),
                          pre = task.dir.file("pre" + std::to_string(ranks));
        std::vector<std::string> l = common, p = common;
        l.push_back("run.dir=" + live);
        l.push_back("reference.precomputed=false");
        p.push_back("run.dir=" + pre);
        p.push_back("reference.precomputed=true");
        p.push_back("data.train=[" + scored + "/train.h5]");
        p.push_back("data.eval=[" + scored + "/eval.h5]");
        REQUIRE(kto_train(ranks, "--config " + task.config + sets(l), &log) == 0);
        CHECK_THAT(log, !Contains("no reference model"));
        REQUIRE(kto_train(ranks, "--config " + task.config + sets(p), &log) == 0);
        INFO(log);
        CHECK_THAT(log, Contains("precomputed reference scores") && !Contains(", reference and gathered"));
        for (const std::string split : {"train", "eval"}) {
          const auto a = kto::test::read_metrics(live, split), b = kto::test::read_metrics(pre, split);
          REQUIRE(a.size() == b.size());
          REQUIRE_FALSE(a.empty());
          for (size_t i = 0; i < a.size(); ++i) {
            for (auto it = a[i].begin(); it != a[i].end(); ++it) {
              const std::string& key = it.key();
              // Accuracies count signs of rewards, which are 0 up to rounding before any update.
              const bool accuracy = key.find("accuracy") != std::string::npos && a[i]["step"] != 0;
              if (!it.value().is_number() ||
                  (key.find("loss") == std::string::npos && key.find("kl") == std::string::npos &&
                   key.find("rewards") == std::string::npos && !accuracy))
                continue;
              const double x = it.value(), y = b[i][key];
              INFO(split << " record " << i << " " << key << ": " << x << " vs " << y);
              CHECK(std::abs(x - y) <= 1e-9 * std::max(1.0, std::abs(x)));
            }
          }
        }
        const auto wa = kto::io::SafetensorsSet::open_dir(live + "/final"),
                   wb = kto::io::SafetensorsSet::open_dir(pre + "/final");
        for (const std::string& name : wa.names()) {
          const at::Tensor x = wa.read(name), y = wb.read(name);
          INFO(name);
          CHECK(((x - y).abs().max() / x.abs().max().clamp_min(1e-12)).item<double>() <= 1e-9);
        }
      }
    }
  }
}

TEST_CASE("precomputed scores are refused when they do not fit the run", "[e2e][precomputed][trust]") {
  kto::test::SyntheticSpec spec;
  spec.examples = 64;
  kto::test::SyntheticTask task(spec, /*with_eval=*/true, "", 24);
  kto::test::SyntheticSpec other = spec;
  other.seed = 77;
  kto::test::write_synthetic_dataset(task.dir.file("more.h5"), other);
  std::string log;
  const std::string scored = task.dir.file("scored"), both = task.dir.file("both");
  const std::string base =
      "--config " + task.config + " --set train.steps=2 --set run.dir=" + task.dir.file("run");
  REQUIRE(kto_train(1, base + " --score-reference " + scored, &log) == 0);
  const std::string on_scores = base + sets({"data.train=[" + scored + "/train.h5]",
                                             "data.eval=[" + scored + "/eval.h5]", "data.pairing=fixed"});
  REQUIRE(kto_train(1, on_scores, &log) == 0);
  CHECK_THAT(log, Contains("precomputed reference scores"));

  SECTION("the output directory must be new or empty, never an input's") {
    CHECK(kto_train(1, base + " --score-reference " + scored, &log) == 1);
    CHECK_THAT(log, Contains(scored + ": not empty"));
    CHECK(kto_train(1, base + " --score-reference " + task.dir.path(), &log) == 1);
    CHECK_THAT(log, Contains("not empty"));
  }
  SECTION("another reference than the one that scored the data") {
    CHECK(kto_train(1, on_scores + " --set model.init_seed=8", &log) == 1);
    CHECK_THAT(log, Contains("random init seed 8") && Contains("random init seed 7") &&
                        Contains("reference.precomputed: false"));
  }
  SECTION("a checkpoint of a run on scores resumes only on those scores") {
    CHECK(kto_train(1, on_scores + " --set train.steps=4 --set reference.precomputed=false", &log) == 1);
    CHECK_THAT(log, Contains("model.reference") && Contains("precomputed scores of random init seed 7"));
    REQUIRE(kto_train(1, on_scores + " --set train.steps=4", &log) == 0);
    CHECK_THAT(log, Contains("resuming at step 2"));
  }
  SECTION("eval data without scores while no reference model is loaded") {
    CHECK(kto_train(1, on_scores + " --set data.eval=[" + task.dir.file("eval.h5") + "]", &log) == 1);
    CHECK_THAT(log, Contains("key 'data.eval'") && Contains(task.dir.file("eval.h5")) &&
                        Contains("has no reference scores"));
  }
  SECTION("KTO on precomputed KL scores needs their fixed partners") {
    CHECK(kto_train(1, on_scores + " --set data.pairing=next", &log) == 1);
    CHECK_THAT(log, Contains("key 'data.pairing'") && Contains("data.pairing: fixed"));
  }
  SECTION("scores required but absent") {
    CHECK(kto_train(1, base + " --set reference.precomputed=true", &log) == 1);
    CHECK_THAT(log, Contains("key 'reference.precomputed'") && Contains("--score-reference"));
  }
  SECTION("partners drawn for another set of files") {
    REQUIRE(
        kto_train(
            1,
            base + sets({"data.train=[" + task.dir.file("train.h5") + "," + task.dir.file("more.h5") + "]"}) +
                " --score-reference " + both,
            &log) == 0);
    CHECK(kto_train(1, on_scores + " --set data.train=[" + both + "/train.h5]", &log) == 1);
    CHECK_THAT(log, Contains(both + "/train.h5") && Contains("drawn for another set of files"));
    CHECK(kto_train(1, on_scores + " --set data.train=[" + both + "/more.h5," + both + "/train.h5]", &log) ==
          1);
    CHECK_THAT(log, Contains("drawn for another set of files"));
    REQUIRE(kto_train(1,
                      on_scores + " --set data.train=[" + both + "/train.h5," + both +
                          "/more.h5] --set run.dir=" + task.dir.file("run_both"),
                      &log) == 0);
  }
}
