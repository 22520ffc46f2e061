// kto-train end to end, on a synthetic task with a known rule (tests/support/synthetic.h):
// KTO learns it, also with 90% of the desirable examples dropped and auto weights; DPO learns
// its paired version; CSFT learns to follow its control token; a second run with the same seed is
// bit-identical; the whole objective is world-size invariant (1, 2, 4 ranks); bad configs fail naming the
// key; every loss learns with the default layout (packed, shared prompts), and the padded, packed
// and shared-prompt layouts train the same curves and weights (fp64, 1e-9).
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kto/io/safetensors.h"
#include "kto/util/files.h"
#include "runs.h"
#include "synthetic.h"
#include "test_support.h"

using json = nlohmann::json;
using Catch::Matchers::Contains;

namespace {

std::string train_bin() { return kto::test::bin_dir() + "/kto-train"; }

// Runs kto-train (under mpirun when ranks > 1); returns its exit status, output in `log`.
int train(const std::string& config, const std::vector<std::string>& sets, int ranks, std::string* log) {
  std::string cmd =
      ranks > 1 ? std::string(KTO_MPIEXEC) + " -np " + std::to_string(ranks) + " --oversubscribe " : "";
  cmd += train_bin() + " --config " + config;
  for (const std::string& s : sets) cmd += " --set " + s;
  return kto::test::run_command(cmd, log);
}

// The synthetic task with a balanced held-out set of 256 examples.
struct Task : kto::test::SyntheticTask {
  explicit Task(const kto::test::SyntheticSpec& spec, const std::string& extra_yaml = "")
      : SyntheticTask(spec, /*with_eval=*/true, extra_yaml, 256) {}
};

}  // namespace

TEST_CASE("KTO learns the rule: held-out accuracy >= 0.9 and desirable rewards above undesirable",
          "[e2e][train]") {
  Task task({});
  std::string log;
  REQUIRE(train(task.config, {}, 1, &log) == 0);
  INFO(log);
  const auto eval = kto::test::read_metrics(task.run(), "eval");
  REQUIRE_FALSE(eval.empty());
  CHECK(eval.back()["eval/accuracy"].get<double>() >= 0.9);
  CHECK(eval.back()["eval/rewards/desirable"].get<double>() >
        eval.back()["eval/rewards/undesirable"].get<double>());
  const auto steps = kto::test::read_metrics(task.run(), "train");
  REQUIRE(steps.size() == 60);
  CHECK(steps.back()["rewards/desirable"].get<double>() > steps.back()["rewards/undesirable"].get<double>());
  CHECK_THAT(log, Contains("step 60/60") && Contains("tok/s") && Contains("ETA"));
  CHECK(kto::path_exists(task.run() + "/config.yaml"));
}

TEST_CASE("KTO with 90% of desirable examples dropped and auto weights still separates the classes",
          "[e2e][train]") {
  kto::test::SyntheticSpec spec;
  spec.examples = 1024;
  spec.keep_desirable = 0.1;
  Task task(spec, "loss: {desirable_weight: auto, undesirable_weight: auto}\n");
  // An imbalanced held-out set too (~1 desirable in 9), where accuracy alone flatters.
  kto::test::SyntheticSpec eval_spec = spec;
  eval_spec.seed = spec.seed + 1000;
  eval_spec.examples = 256;
  eval_spec.keep_desirable = 0.125;
  kto::test::write_synthetic_dataset(task.dir.file("eval.h5"), eval_spec);
  std::string log;
  REQUIRE(train(task.config, {"train.steps=80"}, 1, &log) == 0);
  INFO(log);
  CHECK_THAT(log, Contains("lambda_D 8.8"));  // auto lifts lambda_D to n_U / n_D = 512 / 58
  const auto eval = kto::test::read_metrics(task.run(), "eval");
  REQUIRE_FALSE(eval.empty());
  CHECK(eval.back()["eval/rewards/desirable"].get<double>() >
        eval.back()["eval/rewards/undesirable"].get<double>());
  CHECK(eval.back()["eval/accuracy"].get<double>() >= 0.9);
  CHECK(eval.back()["eval/balanced_accuracy"].get<double>() >= 0.9);
  CHECK(eval.back()["eval/accuracy/desirable"].get<double>() >= 0.8);
  CHECK(eval.back()["eval/auc"].get<double>() >= 0.9);
  // Step 0, before any update: every reward is 0 = beta z0, so every example reads as
  // undesirable. Accuracy alone is the undesirable share (~0.89 here); balanced accuracy and AUC
  // show there is nothing learnt yet.
  const auto& start = eval.front();
  REQUIRE(start["step"].get<double>() == 0);
  const double nd = start["eval/count/desirable"].get<double>(),
               nu = start["eval/count/undesirable"].get<double>();
  CHECK(nu / (nd + nu) > 0.85);
  CHECK(start["eval/accuracy"].get<double>() == Approx(nu / (nd + nu)));
  CHECK(start["eval/accuracy/desirable"].get<double>() == 0);
  CHECK(start["eval/accuracy/undesirable"].get<double>() == 1);
  CHECK(start["eval/balanced_accuracy"].get<double>() == 0.5);
  CHECK(start["eval/auc"].get<double>() == 0.5);
}

TEST_CASE("DPO learns the paired version of the task", "[e2e][train]") {
  kto::test::SyntheticSpec spec;
  spec.paired = true;
  spec.examples = 256;
  Task task(spec, "loss: {name: dpo}\n");
  std::string log;
  REQUIRE(train(task.config, {"data.micro_batch=4", "data.global_batch=8"}, 1, &log) == 0);
  INFO(log);
  const auto eval = kto::test::read_metrics(task.run(), "eval");
  REQUIRE_FALSE(eval.empty());
  CHECK(eval.back()["eval/preference_accuracy"].get<double>() >= 0.9);  // chosen reward above rejected
  CHECK(eval.back()["eval/auc"].get<double>() >= 0.9);
  CHECK(eval.back().count("eval/accuracy") == 0);  // no z0 threshold in DPO: preference accuracy it is
  // The banner and the progress line show what DPO uses: beta, no lambda, z0 or KL.
  CHECK_THAT(log, Contains("loss: dpo: beta 0.1") && Contains(" pairs = 4 x 2 x 1"));
  CHECK_THAT(log, !Contains("lambda_D") && !Contains("| kl "));
  CHECK(eval.back()["eval/rewards/margin"].get<double>() > 0);
}

TEST_CASE("two runs with the same seed produce bit-identical metrics", "[e2e][train]") {
  Task task({});
  std::string log;
  REQUIRE(train(task.config, {"train.steps=15", "run.dir=" + task.dir.file("a")}, 1, &log) == 0);
  REQUIRE(train(task.config, {"train.steps=15", "run.dir=" + task.dir.file("b")}, 1, &log) == 0);
  const auto a = kto::test::read_metrics(task.dir.file("a"), "train"),
             b = kto::test::read_metrics(task.dir.file("b"), "train");
  REQUIRE(a.size() == 15);
  REQUIRE(b.size() == 15);
  for (size_t i = 0; i < a.size(); ++i) {
    for (const std::string key : {"loss", "kl", "grad_norm", "rewards/desirable", "rewards/undesirable",
                                  "logps/desirable", "logps/undesirable", "count/desirable"}) {
      if (!a[i].contains(key)) continue;
      INFO("step " << i + 1 << " " << key);
      CHECK(a[i][key].get<double>() == b[i][key].get<double>());  // exact, not approximate
    }
  }
}

TEST_CASE("the same config at 1, 2 and 4 ranks gives the same curves and weights", "[e2e][train][mpi]") {
  // 3:1 desirable, so mismatched pairs lean desirable and z0 is positive: the curves then
  // depend on the global z0 assembly. The global microbatch is 16 at every world size. fp64,
  // so that the comparison measures the algorithm, not fp32 summation order amplified by Adam.
  kto::test::SyntheticSpec spec;
  spec.keep_undesirable = 0.35;
  Task task(spec);
  std::map<int, std::vector<json>> curves;
  std::map<int, kto::io::SafetensorsSet> weights;
  for (int ranks : {1, 2, 4}) {
    const std::string dir = task.dir.file("w" + std::to_string(ranks));
    std::string log;
    const int rc =
        train(task.config,
              {"train.steps=20", "run.dir=" + dir, "data.micro_batch=" + std::to_string(16 / ranks),
               "train.export_final=true", "model.dtype=fp64"},
              ranks, &log);
    INFO(log);
    REQUIRE(rc == 0);
    curves[ranks] = kto::test::read_metrics(dir, "train");
    weights.emplace(ranks, kto::io::SafetensorsSet::open_dir(dir + "/final"));
  }
  bool positive_kl = false;
  for (int ranks : {2, 4}) {
    REQUIRE(curves[ranks].size() == 20);
    for (const std::string key : {"loss", "kl", "rewards/desirable", "rewards/undesirable", "grad_norm"}) {
      double scale = 0;  // relative to the curve's magnitude (early rewards are near 0)
      for (const json& m : curves[1]) scale = std::max(scale, std::abs(m[key].get<double>()));
      for (size_t i = 0; i < 20; ++i) {
        const double x = curves[1][i][key], y = curves[ranks][i][key];
        INFO(ranks << " ranks, step " << i + 1 << " " << key << ": " << x << " vs " << y);
        CHECK(std::abs(x - y) <= 1e-5 * scale);
      }
    }
    for (const json& m : curves[1]) positive_kl = positive_kl || m["kl"].get<double>() > 0;
    for (const std::string& name : weights.at(1).names()) {
      const at::Tensor a = weights.at(1).read(name), b = weights.at(ranks).read(name);
      const double err = ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item<double>();
      INFO(name << " relative difference " << err);
      CHECK(err <= 1e-5);
    }
  }
  CHECK(positive_kl);  // z0 was active, so its global assembly was exercised
}

TEST_CASE("bad training configs fail fast naming the key", "[e2e][train]") {
  Task task({});
  std::string log;
  CHECK(train(task.config, {"loss.beta=-0.1"}, 1, &log) == 1);
  CHECK_THAT(log, Contains("loss.beta"));
  CHECK(train(task.config, {"data.micro_batch=1", "data.global_batch=0"}, 1, &log) == 1);
  CHECK_THAT(log, Contains("data.micro_batch"));
  CHECK(train(task.config, {"data.global_batch=20"}, 1, &log) == 1);
  CHECK_THAT(log, Contains("data.global_batch") && Contains("not divisible"));
  CHECK(train(task.config, {"data.train=" + task.dir.file("missing.h5")}, 1, &log) == 1);
  CHECK_THAT(log, Contains("data.train") && Contains("missing.h5"));
  CHECK(train(task.config, {"loss.name=dpo"}, 1, &log) == 1);
  CHECK_THAT(log, Contains("loss.name") && Contains("paired"));
  CHECK(train(task.config, {"loss.desirable_weight=heavy"}, 1, &log) == 1);
  CHECK_THAT(log, Contains("loss.desirable_weight"));
  CHECK(train(task.config, {"optim.lrr=1"}, 1, &log) == 1);
  CHECK_THAT(log, Contains("unknown key 'optim.lrr'"));
}

TEST_CASE("CSFT and control tokens: warnings for a mismatch, an error for train/eval disagreeing",
          "[e2e][train]") {
  std::string log;
  {
    Task plain({});
    CHECK(train(plain.config, {"loss.name=csft", "train.steps=1"}, 1, &log) == 0);
    CHECK_THAT(log, Contains("loss.name csft, but the training data has no control tokens"));
  }
  kto::test::SyntheticSpec spec;
  spec.control_tokens = "<|good|>,<|bad|>";
  Task conditioned(spec);
  CHECK(train(conditioned.config, {"loss.name=csft", "train.steps=1"}, 1, &log) == 0);
  CHECK_THAT(log, !Contains("control tokens"));
  CHECK(train(conditioned.config, {"train.steps=1", "run.dir=" + conditioned.dir.file("kto")}, 1, &log) == 0);
  CHECK_THAT(log, Contains("prompts end with CSFT control tokens (<|good|>,<|bad|>)"));
  kto::test::write_synthetic_dataset(conditioned.dir.file("plain_eval.h5"), {});
  CHECK(train(conditioned.config,
              {"loss.name=csft", "data.eval=[" + conditioned.dir.file("plain_eval.h5") + "]"}, 1, &log) == 1);
  CHECK_THAT(log, Contains("data.eval") && Contains("control tokens"));
}

TEST_CASE("CSFT learns to condition on the control token: good -> the rule, bad -> its opposite",
          "[e2e][train]") {
  kto::test::SyntheticSpec spec;
  spec.control_tokens = "<|good|>,<|bad|>";  // prompts end with id 62 (desirable) or 63
  Task task(spec);
  std::string log;
  REQUIRE(train(task.config, {"loss.name=csft", "train.export_final=true"}, 1, &log) == 0);
  INFO(log);
  // Held-out prompts, each with both control tokens and both kinds of completion (even ids
  // follow the rule, odd ids break it): [good, even], [good, odd], [bad, even], [bad, odd].
  const int64_t prompts = 64, P = spec.prompt_len, C = spec.completion_len + 1, T = P + C;
  const int32_t good = static_cast<int32_t>(spec.vocab - 2), bad = static_cast<int32_t>(spec.vocab - 1);
  at::Tensor ids = at::zeros({4 * prompts, T}, at::kLong), mask = at::zeros({4 * prompts, T}, at::kLong);
  mask.narrow(1, P, C).fill_(1);
  uint64_t state = 12345;
  auto draw = [&](uint64_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int64_t>((state >> 33) % n);
  };
  for (int64_t p = 0; p < prompts; ++p) {
    std::vector<int64_t> prompt(static_cast<size_t>(P - 1)), even, odd;
    for (auto& t : prompt) t = 2 + draw(static_cast<uint64_t>(spec.vocab - 4));
    for (int64_t k = 0; k < C - 1; ++k) {
      even.push_back(2 + 2 * draw(30));
      odd.push_back(3 + 2 * draw(30));
    }
    int64_t row = 4 * p;
    for (int32_t control : {good, bad}) {
      for (const auto* completion : {&even, &odd}) {
        auto r = ids[row++];
        for (int64_t t = 0; t < P - 1; ++t) r[t] = prompt[static_cast<size_t>(t)];
        r[P - 1] = control;
        for (int64_t t = 0; t < C - 1; ++t) r[P + t] = (*completion)[static_cast<size_t>(t)];
        r[T - 1] = 1;  // eos
      }
    }
  }
  kto::io::write_safetensors(task.dir.file("probe.safetensors"),
                             {{"input_ids", ids}, {"completion_mask", mask}});
  REQUIRE(kto::test::run_command(kto::test::bin_dir() + "/kto-ckpt forward --model " + task.run() +
                                     "/final --ids " + task.dir.file("probe.safetensors") + " --out " +
                                     task.dir.file("probe_out.safetensors"),
                                 &log) == 0);
  const at::Tensor lp = kto::io::SafetensorsSet::open_file(task.dir.file("probe_out.safetensors"))
                            .read("completion_logprob_sum")
                            .view({prompts, 4});
  // After "good" the model prefers completions that follow the rule; after "bad", ones that break it.
  const double follows_good = lp.select(1, 0).gt(lp.select(1, 1)).to(at::kDouble).mean().item<double>();
  const double breaks_bad = lp.select(1, 3).gt(lp.select(1, 2)).to(at::kDouble).mean().item<double>();
  CHECK(follows_good >= 0.9);
  CHECK(breaks_bad >= 0.9);
}

TEST_CASE("bf16 compute trains with fp32 masters", "[e2e][train][bf16]") {
  Task task({});
  std::string log;
  REQUIRE(train(task.config, {"train.steps=3", "model.dtype=bf16", "train.export_final=true"}, 1, &log) == 0);
  INFO(log);
  const auto steps = kto::test::read_metrics(task.run(), "train");
  REQUIRE(steps.size() == 3);
  for (const json& s : steps) CHECK(s["skipped"].get<double>() == 0.0);
  // The exported weights come from the fp32 masters.
  const auto final_weights = kto::io::SafetensorsSet::open_dir(task.run() + "/final");
  CHECK(final_weights.info("model.layers.0.mlp.up_proj.weight").dtype == kto::io::DType::F32);
}

TEST_CASE("every shipped config loads and validates", "[e2e][configs]") {
  const std::string dir = kto::test::fixtures_dir() + "/../../configs";
  std::string listing;
  REQUIRE(kto::test::run_command("ls " + dir + "/*.yaml", &listing) == 0);
  std::istringstream files(listing);
  std::string file;
  int checked = 0;
  while (std::getline(files, file)) {
    std::string out;
    INFO(file);
    CHECK(kto::test::run_command(kto::test::bin_dir() + "/kto-ckpt config --config " + file, &out) == 0);
    CHECK_THAT(out, Contains("loss:") && Contains("optim:"));
    ++checked;
  }
  CHECK(checked >= 6);
}

TEST_CASE("trains a policy loaded from a Hugging Face directory, reference from another", "[e2e][train]") {
  Task task({});
  // Two HF directories with the task's architecture: the policy and a different reference.
  const std::string arch =
      "model:\n  architecture: {arch: llama, vocab_size: 64, hidden_size: 32, intermediate_size: 64,\n"
      "    num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: "
      "64}\n";
  kto::write_text_file(task.dir.file("arch.yaml"), arch);
  std::string log;
  const std::string ckpt = kto::test::bin_dir() + "/kto-ckpt init --config " + task.dir.file("arch.yaml");
  REQUIRE(kto::test::run_command(ckpt + " --out " + task.dir.file("policy") + " --set model.init_seed=7",
                                 &log) == 0);
  REQUIRE(kto::test::run_command(ckpt + " --out " + task.dir.file("reference") + " --set model.init_seed=8",
                                 &log) == 0);
  std::string yaml = kto::read_text_file(task.config);
  yaml = yaml.substr(yaml.find("data:"));  // drop the architecture: the directory defines the model
  yaml = "model:\n  path: " + task.dir.file("policy") + "\n  reference_path: " + task.dir.file("reference") +
         "\n" + yaml;
  kto::write_text_file(task.config, yaml);
  REQUIRE(train(task.config, {"train.steps=30", "train.export_final=true"}, 2, &log) == 0);
  INFO(log);
  const auto steps = kto::test::read_metrics(task.run(), "train");
  REQUIRE(steps.size() == 30);
  // The reference differs from the policy, so rewards are nonzero from the first step.
  CHECK(steps.front()["rewards/desirable"].get<double>() != 0.0);
  CHECK(steps.back()["rewards/desirable"].get<double>() > steps.back()["rewards/undesirable"].get<double>());
  const auto exported = kto::io::SafetensorsSet::open_dir(task.run() + "/final");
  CHECK(kto::read_text_file(task.run() + "/final/config.json").find("\"model_type\": \"llama\"") !=
        std::string::npos);
  CHECK(exported.names().size() == kto::io::SafetensorsSet::open_dir(task.dir.file("policy")).names().size());
}

TEST_CASE("every loss learns the task with the default layout of packed batches and shared prompts",
          "[e2e][train]") {
  // CSFT needs control tokens: its own test above. Paired losses train on the paired task.
  for (const std::string loss :
       {"kto", "kto_logsigmoid", "kto_zero", "apo_zero", "sft", "dpo", "cdpo", "ipo", "simpo", "slic"}) {
    DYNAMIC_SECTION(loss) {
      const bool paired =
          loss == "dpo" || loss == "cdpo" || loss == "ipo" || loss == "simpo" || loss == "slic";
      kto::test::SyntheticSpec spec;
      spec.paired = paired;
      if (paired) spec.examples = 256;
      Task task(spec, "loss: {name: " + loss + "}\n");
      std::string log;
      std::vector<std::string> sets;
      if (paired) sets = {"data.micro_batch=4", "data.global_batch=8"};
      REQUIRE(train(task.config, sets, 1, &log) == 0);
      INFO(log);
      CHECK_THAT(log, Contains("steps; layout shared_prompts"));  // the banner says which
      const auto eval = kto::test::read_metrics(task.run(), "eval");
      REQUIRE(eval.size() >= 2);
      if (loss == "sft") {  // no reward: the held-out NLL of the desirable completions falls
        CHECK(eval.back()["eval/loss"].get<double>() < 0.85 * eval.front()["eval/loss"].get<double>());
      } else {  // held out, the policy's rewards rank desirable (chosen) above undesirable (rejected)
        CHECK(eval.back()["eval/auc"].get<double>() >= 0.9);
        CHECK(eval.back()["eval/auc"].get<double>() > eval.front()["eval/auc"].get<double>());
      }
      const auto steps = kto::test::read_metrics(task.run(), "train");
      REQUIRE_FALSE(steps.empty());
      CHECK(steps.back()["padding"].get<double>() == 0.0);  // packed: nothing computed is padding
    }
  }
}

TEST_CASE("padded and packed batches with or without shared prompts train the same curves and weights",
          "[e2e][train]") {
  // fp64, so that the comparison measures the layouts, not fp32 rounding amplified by Adam.
  for (const bool paired : {false, true}) {
    DYNAMIC_SECTION((paired ? "dpo" : "kto")) {
      kto::test::SyntheticSpec spec;
      spec.paired = paired;
      spec.examples = 256;
      spec.keep_undesirable = paired ? 1.0 : 0.35;  // z0 positive: the KL batch matters
      Task task(spec, paired ? "loss: {name: dpo}\n" : "");
      std::map<std::string, std::vector<json>> curves;
      std::map<std::string, kto::io::SafetensorsSet> weights;
      for (const std::string layout : {"padded", "packed", "shared_prompts"}) {
        const std::string dir = task.dir.file(layout);
        std::string log;
        const int rc = train(task.config,
                             {"train.steps=12", "run.dir=" + dir, "data.layout=" + layout, "model.dtype=fp64",
                              "train.export_final=true", "data.micro_batch=4", "data.global_batch=8"},
                             1, &log);
        INFO(log);
        REQUIRE(rc == 0);
        curves[layout] = kto::test::read_metrics(dir, "train");
        weights.emplace(layout, kto::io::SafetensorsSet::open_dir(dir + "/final"));
      }
      CHECK(curves["padded"].back()["padding"].get<double>() > 0);  // the KL batch pads its borrowed lengths
      for (const std::string layout : {"packed", "shared_prompts"}) {
        REQUIRE(curves[layout].size() == 12);
        CHECK(curves[layout].back()["padding"].get<double>() == 0.0);
        for (const std::string key :
             {"loss", "kl", "rewards/desirable", "rewards/undesirable", "grad_norm"}) {
          if (!curves["padded"][0].contains(key)) continue;
          double scale = 0;
          for (const json& m : curves["padded"]) scale = std::max(scale, std::abs(m[key].get<double>()));
          for (size_t i = 0; i < 12; ++i) {
            const double x = curves["padded"][i][key], y = curves[layout][i][key];
            INFO(layout << ", step " << i + 1 << " " << key << ": " << x << " vs " << y);
            CHECK(std::abs(x - y) <= 1e-9 * scale);
          }
        }
        // Fewer positions computed for the same tokens.
        CHECK(curves[layout].back()["executed_flops"].get<double>() <
              curves["padded"].back()["executed_flops"].get<double>());
        for (const std::string& name : weights.at("padded").names()) {
          const at::Tensor a = weights.at("padded").read(name), b = weights.at(layout).read(name);
          const double err = ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item<double>();
          INFO(layout << " " << name << " relative difference " << err);
          CHECK(err <= 1e-9);
        }
      }
      if (!paired)  // the KL pass continues the prompts: fewer FLOPs than packing alone
        CHECK(curves["shared_prompts"].back()["executed_flops"].get<double>() <
              curves["packed"].back()["executed_flops"].get<double>());
    }
  }
}
