// The HALO objectives against reference vectors that follow TRL's and the HALOs code's
// semantics (tests/fixtures/loss/kto_vectors_public.json; KTO_LOSS_VECTORS=FILE checks any file
// in that schema). Every case, implementation mode and variant: z0 (clamped and unclamped),
// per-example losses, microbatch and effective losses, metrics, and gradients with respect to
// the policy log-probs by autograd, within 1e-9 in fp64; no gradient reaches the KL terms.
// Multi-rank, multi-step cases are simulated in one process: every rank's KL statistics are
// summed per accumulation step, exactly what the all-reduce does in training, and z0 follows.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>

#include "kto/data/batch.h"
#include "kto/loss/halo.h"
#include "kto/util/check.h"
#include "kto/util/files.h"
#include "test_support.h"

using json = nlohmann::json;
using kto::loss::Estimator;

namespace {

constexpr double kTol = 1e-9;

struct Mode {
  kto::loss::LossName loss;
  Estimator estimator;
  kto::data::Pairing pairing;
  bool scaled_rewards;
  double w_d, w_u;
};

// Maps an implementation/variant of the vectors onto our options; false if unknown.
bool mode_for(const json& result, const json& c, Mode& m, std::string& why) {
  const std::string impl = result.at("impl"), variant = result.value("variant", "kto");
  const std::string pairing = result.at("pairing_scheme");
  if (pairing == "trl_rotate")
    m.pairing = kto::data::Pairing::prev;
  else if (pairing == "halos_next")
    m.pairing = kto::data::Pairing::next;
  else if (pairing == "trl_reverse")
    m.pairing = kto::data::Pairing::reverse;
  else
    return why = "pairing scheme " + pairing, false;
  if (impl == "trl" || impl == "halos_legacy")
    m.estimator = Estimator::trl;
  else if (impl == "halos_main")
    m.estimator = Estimator::halos;
  else
    return why = "implementation " + impl, false;
  m.w_d = c.at("desirable_weight");
  m.w_u = c.at("undesirable_weight");
  using kto::loss::LossName;
  if (variant == "kto")
    m.loss = LossName::kto;
  else if (variant == "kto_logsigmoid")
    m.loss = LossName::kto_logsigmoid;
  else if (variant == "apo_zero_unpaired")
    m.loss = LossName::apo_zero;
  else if (variant == "kto_zero")
    m.loss = LossName::kto_zero, m.w_d = m.w_u = 1.0;
  else
    return why = "variant " + variant, false;
  m.scaled_rewards = result.at("reward_metric_scale").get<std::string>() == "beta*r";
  return true;
}

at::Tensor vec(const std::vector<double>& v) { return at::tensor(v, at::kDouble); }

void check_unpaired_case(const json& c, const std::string& label, const json& result) {
  Mode mode;
  std::string why;
  INFO(c["name"].get<std::string>() << " / " << label);
  if (!mode_for(result, c, mode, why)) FAIL("unsupported " << why << " in the reference vectors");
  kto::loss::LossOptions o;
  o.name = mode.loss;
  o.beta = c.at("beta");
  o.desirable_weight.value = mode.w_d;
  o.undesirable_weight.value = mode.w_u;
  o.estimator = mode.estimator;
  const int64_t W = c.at("world_size"), GA = c.at("grad_accum");

  // Inputs per (rank, ga_step).
  struct Micro {
    at::Tensor logp, ref, kl_logp, kl_ref, desirable;
    std::vector<int64_t> pair;
  };
  std::map<std::pair<int64_t, int64_t>, Micro> micros;
  for (const json& mb : c.at("microbatches")) {
    const auto P = mb.at("policy_logps_matrix").get<std::vector<std::vector<double>>>();
    const auto R = mb.at("ref_logps_matrix").get<std::vector<std::vector<double>>>();
    const auto labels = mb.at("labels").get<std::vector<bool>>();
    const int64_t n = static_cast<int64_t>(labels.size());
    Micro m;
    std::vector<double> logp, ref, kl_logp, kl_ref, des;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = kto::data::paired_index(mode.pairing, i, n);
      m.pair.push_back(j);
      logp.push_back(P[i][i]);
      ref.push_back(R[i][i]);
      kl_logp.push_back(P[i][j]);
      kl_ref.push_back(R[i][j]);
      des.push_back(labels[i] ? 1 : 0);
    }
    m.logp = vec(logp).requires_grad_(true);
    m.ref = vec(ref);
    m.kl_logp = vec(kl_logp).requires_grad_(true);  // must receive no gradient
    m.kl_ref = vec(kl_ref);
    m.desirable = vec(des).to(at::kBool);
    micros[{mb.at("rank").get<int64_t>(), mb.at("ga_step").get<int64_t>()}] = std::move(m);
  }
  // All-reduce simulation: per ga_step, the sum of every rank's KL statistics. The KL terms
  // carry requires_grad here, so the checks below also show that no gradient reaches them.
  std::map<int64_t, at::Tensor> totals;
  for (auto& [key, m] : micros) {
    if (!kto::loss::uses_kl(o.name)) break;
    const at::Tensor mine = kto::loss::kl_statistics(m.kl_logp - m.kl_ref, o.estimator);
    totals[key.second] = totals.count(key.second) ? totals[key.second] + mine : mine;
  }

  double effective = 0, sum_reward_d = 0, sum_reward_u = 0, sum_logp_d = 0, sum_logp_u = 0, sum_loss = 0;
  int64_t n_d = 0, n_u = 0, n_all = 0;
  for (const json& expected_mb : result.at("microbatches")) {
    const int64_t rank = expected_mb.at("rank"), ga = expected_mb.at("ga_step");
    Micro& m = micros.at({rank, ga});
    // Losses without a reference point get z0 = 0 (they do not read it).
    const kto::loss::ReferencePoint z =
        totals.count(ga) ? kto::loss::reference_point(totals[ga], o.estimator)
                         : kto::loss::ReferencePoint{at::zeros({}, at::kDouble), at::zeros({}, at::kDouble)};
    kto::loss::UnpairedInputs in{m.logp, m.ref, m.desirable, {}};
    const auto out = kto::loss::unpaired_loss(in, z.z0, o);
    out.loss.backward();
    INFO("rank " << rank << " ga_step " << ga);
    CHECK(z.z0.item<double>() == Approx(expected_mb.at("z0").get<double>()).margin(kTol));
    CHECK(z.z0_unclamped.item<double>() == Approx(expected_mb.at("z0_unclamped").get<double>()).margin(kTol));
    CHECK(out.loss.item<double>() == Approx(expected_mb.at("microbatch_loss").get<double>()).margin(kTol));
    effective += out.loss.item<double>() / static_cast<double>(W * GA);
    const json& examples = expected_mb.at("examples");
    for (size_t k = 0; k < examples.size(); ++k) {
      const json& e = examples[k];
      const auto i = static_cast<int64_t>(e.at("i").get<int64_t>());
      INFO("example " << i);
      CHECK(m.pair[static_cast<size_t>(i)] == e.at("kl_pair_j").get<int64_t>());
      const double r = (m.logp[i] - m.ref[i]).item<double>();
      CHECK(r == Approx(e.at("logratio").get<double>()).margin(kTol));
      CHECK((m.kl_logp[i] - m.kl_ref[i]).item<double>() == Approx(e.at("kl_i").get<double>()).margin(kTol));
      CHECK(out.per_example[i].item<double>() == Approx(e.at("loss").get<double>()).margin(kTol));
      const double reward = mode.scaled_rewards ? out.rewards[i].item<double>() : r;
      CHECK(reward == Approx(e.at("reward_metric").get<double>()).margin(kTol));
      const double g = m.logp.grad()[i].item<double>();
      CHECK(g == Approx(e.at("dloss_microbatch_d_policy_logp").get<double>()).margin(kTol));
      CHECK(g / static_cast<double>(W * GA) ==
            Approx(e.at("dloss_effective_d_policy_logp").get<double>()).margin(kTol));
      const double kl_grad = m.kl_logp.grad().defined() ? m.kl_logp.grad()[i].item<double>() : 0.0;
      CHECK(kl_grad == 0.0);
      CHECK(e.at("dloss_d_kl_policy_logp").get<double>() == 0.0);
      const bool d = m.desirable[i].item<bool>();
      (d ? sum_reward_d : sum_reward_u) += reward;
      (d ? sum_logp_d : sum_logp_u) += m.logp[i].item<double>();
      (d ? n_d : n_u) += 1;
      sum_loss += out.per_example[i].item<double>();
      ++n_all;
    }
  }
  CHECK(effective == Approx(result.at("effective_loss").get<double>()).margin(kTol));
  const json& metrics = result.at("metrics");
  if (n_d) CHECK(sum_reward_d / n_d == Approx(metrics.at("rewards/chosen").get<double>()).margin(kTol));
  if (n_u) CHECK(sum_reward_u / n_u == Approx(metrics.at("rewards/rejected").get<double>()).margin(kTol));
  if (n_d) CHECK(sum_logp_d / n_d == Approx(metrics.at("logps/chosen").get<double>()).margin(kTol));
  if (n_u) CHECK(sum_logp_u / n_u == Approx(metrics.at("logps/rejected").get<double>()).margin(kTol));
  if (n_d && n_u) {
    CHECK(sum_reward_d / n_d - sum_reward_u / n_u ==
          Approx(metrics.at("rewards/margins").get<double>()).margin(kTol));
  }
  if (metrics.contains("loss_metric_mean_over_all_examples")) {
    CHECK(sum_loss / n_all ==
          Approx(metrics["loss_metric_mean_over_all_examples"].get<double>()).margin(kTol));
  }
}

void check_paired_case(const json& c) {
  INFO(c["name"].get<std::string>());
  const json& examples = c.at("examples");
  const json& results = c.at("results");
  REQUIRE(examples.size() == results.size());
  for (size_t k = 0; k < examples.size(); ++k) {
    const json& e = examples[k];
    for (auto it = results[k].begin(); it != results[k].end(); ++it) {
      kto::loss::LossOptions o;
      const auto name = kto::parse_choice(kto::loss::kLossNames, it.key());
      if (!name) FAIL("unknown paired loss " << it.key() << " in the reference vectors");
      o.name = *name;
      o.beta = c.value("dpo_beta", 0.1);
      o.cdpo_epsilon = c.value("cdpo_epsilon", 0.2);
      o.ipo_tau = c.value("ipo_tau", 0.1);
      if (o.name == kto::loss::LossName::simpo) {
        o.beta = c.at("simpo_beta");
        o.simpo_gamma_beta_ratio = c.at("simpo_gamma_beta_ratio");
      }
      INFO("example " << k << " loss " << it.key());
      kto::loss::PairedInputs in;
      in.policy_chosen = vec({e.at("policy_chosen")}).requires_grad_(true);
      in.policy_rejected = vec({e.at("policy_rejected")}).requires_grad_(true);
      in.ref_chosen = vec({e.at("ref_chosen")});
      in.ref_rejected = vec({e.at("ref_rejected")});
      in.len_chosen = vec({e.at("len_chosen")});
      in.len_rejected = vec({e.at("len_rejected")});
      const auto out = kto::loss::paired_loss(in, o);
      out.loss.backward();
      const json& x = it.value();
      CHECK(out.loss.item<double>() == Approx(x.at("loss").get<double>()).margin(kTol));
      CHECK(in.policy_chosen.grad()[0].item<double>() ==
            Approx(x.at("d_policy_chosen").get<double>()).margin(kTol));
      CHECK(in.policy_rejected.grad()[0].item<double>() ==
            Approx(x.at("d_policy_rejected").get<double>()).margin(kTol));
      if (x.contains("chosen_reward_metric")) {
        CHECK(out.rewards[0].item<double>() == Approx(x["chosen_reward_metric"].get<double>()).margin(kTol));
        CHECK(out.rewards[1].item<double>() ==
              Approx(x["rejected_reward_metric"].get<double>()).margin(kTol));
      }
    }
  }
}

}  // namespace

TEST_CASE("HALO losses reproduce the reference vectors in fp64", "[loss]") {
  const std::string file =
      kto::test::env_or("KTO_LOSS_VECTORS", kto::test::fixtures_dir() + "/loss/kto_vectors_public.json");
  const json vectors = json::parse(kto::read_text_file(file));
  REQUIRE_FALSE(vectors.at("cases").empty());
  int checked = 0;
  for (const json& c : vectors.at("cases")) {
    if (c.contains("microbatches")) {
      for (auto it = c.at("results").begin(); it != c.at("results").end(); ++it)
        check_unpaired_case(c, it.key(), it.value());
      const json variants = c.value("variants", json::object());
      for (auto it = variants.begin(); it != variants.end(); ++it)
        check_unpaired_case(c, it.key(), it.value());
    } else if (c.contains("examples")) {
      check_paired_case(c);
    } else {
      FAIL("case " << c.value("name", "?") << " has neither microbatches nor examples");
    }
    ++checked;
  }
  CHECK(checked == static_cast<int>(vectors["cases"].size()));
}

TEST_CASE("loss options are validated with the key named", "[loss]") {
  kto::loss::LossOptions o;
  o.beta = -0.1;
  CHECK_THROWS_WITH(o.validate("cfg.yaml", "loss."), Catch::Contains("'loss.beta'"));
  o = {};
  o.desirable_weight.value = 0;
  CHECK_THROWS_WITH(o.validate("cfg.yaml", "loss."), Catch::Contains("'loss.desirable_weight'"));
  CHECK_FALSE(kto::parse_choice(kto::loss::kLossNames, "kto2"));
  CHECK_FALSE(kto::parse_choice(kto::loss::kEstimators, "median"));
  CHECK(kto::loss::is_paired(kto::loss::LossName::dpo));
  CHECK_FALSE(kto::loss::is_paired(kto::loss::LossName::kto));
}

TEST_CASE("SFT and CSFT are token-mean negative log-likelihoods", "[loss]") {
  kto::loss::LossOptions o;
  o.name = kto::loss::LossName::sft;
  kto::loss::UnpairedInputs in;
  in.policy_logps = at::tensor({-10.0, -20.0}, at::kDouble).requires_grad_(true);
  in.desirable = at::tensor({1, 0}, at::kLong).to(at::kBool);
  in.num_tokens = at::tensor({5.0, 4.0}, at::kDouble);
  const at::Tensor no_z0 = at::zeros({}, at::kDouble);
  auto out = kto::loss::unpaired_loss(in, no_z0, o);
  CHECK(out.loss.item<double>() == Approx((2.0 + 0.0) / 2));  // undesirable: no loss
  o.name = kto::loss::LossName::csft;
  out = kto::loss::unpaired_loss(in, no_z0, o);
  CHECK(out.loss.item<double>() == Approx((2.0 + 5.0) / 2));
}
