// Golden test against real Hugging Face transformers outputs (tests/fixtures/hf_models).
//
// Data-driven: every case listed in DIR/index.json is checked, DIR = $KTO_HF_CASES or the
// fixture copy, so further cases in the same format need no code. For each case, in fp32 and
// fp64: logits, per-token log-probs and completion log-prob sums (through the trainer's chunked
// path) at every real position, within 1e-4 of HF's fp32 run and 1e-9 of its strict fp64 run.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "kto/io/hf_checkpoint.h"
#include "kto/io/safetensors.h"
#include "kto/model/logprob.h"
#include "kto/util/files.h"
#include "test_support.h"
#include "tiny_models.h"

namespace {

struct Run {
  const char* name;
  at::ScalarType dtype;
  const char* suffix;  // reference tensor suffix
  double tolerance;
};

constexpr Run kRuns[] = {
    {"fp32", at::kFloat, "f32", 1e-4},
    {"fp64", at::kDouble, "f64_strict", 1e-9},
};

double max_abs_diff(const at::Tensor& a, const at::Tensor& b, const at::Tensor& where) {
  const at::Tensor d = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
  return d.masked_select(where).max().item<double>();
}

}  // namespace

TEST_CASE("forward matches Hugging Face transformers on every reference case", "[hf_reference]") {
  kto::test::for_each_hf_case([](const std::string& name, const std::string& case_dir,
                                 const kto::io::SafetensorsSet& ref) {
    const at::Tensor ids = ref.read("input_ids");
    const at::Tensor mask = ref.read("attention_mask");
    const at::Tensor completion = ref.read("completion_mask");
    const int64_t B = ids.size(0), T = ids.size(1);
    const at::Tensor real = mask.ne(0);
    const at::Tensor real_after_first = real.clone();
    real_after_first.select(1, 0).fill_(false);

    for (const Run& run : kRuns) {
      DYNAMIC_SECTION(name << " " << run.name) {
        at::NoGradGuard no_grad;
        const kto::model::DenseModel model = kto::io::load_hf_model(case_dir, run.dtype);
        const at::Tensor hidden = model.forward_hidden(ids, mask);
        const at::Tensor head = model.lm_head();
        const int64_t V = head.size(0);
        const at::Tensor logits = at::matmul(hidden, head.t());

        const double logit_err = max_abs_diff(logits, ref.read(std::string("logits_") + run.suffix),
                                              real.unsqueeze(-1).expand({B, T, V}));
        INFO("max |logits - HF| at real positions = " << logit_err);
        CHECK(logit_err <= run.tolerance);

        // Token log-probs through the chunked path (tiny chunks exercise the chunking).
        const kto::model::TokenSelection all = kto::model::select_tokens(ids, at::ones_like(ids));
        const at::Tensor flat = hidden.reshape({B * T, -1});
        const at::Tensor lp =
            kto::model::token_logprobs(flat.index_select(0, all.rows), head, all.targets, 3);
        const at::Tensor token_lp =
            at::zeros({B * T}, lp.options()).index_copy(0, all.rows + 1, lp).view({B, T});
        const double token_err =
            max_abs_diff(token_lp, ref.read(std::string("token_logprobs_") + run.suffix), real_after_first);
        INFO("max |token_logprobs - HF| = " << token_err);
        CHECK(token_err <= run.tolerance);

        const at::Tensor sums = kto::model::sequence_logprob_sums(
            hidden, head, kto::model::select_tokens(ids, completion.mul(mask)), 4);
        const at::Tensor ref_sums = ref.read(std::string("completion_logprob_sum_") + run.suffix);
        const double sum_err = (sums.to(at::kDouble) - ref_sums.to(at::kDouble)).abs().max().item<double>();
        INFO("completion sums " << sums << " vs HF " << ref_sums);
        CHECK(sum_err <= run.tolerance);

        if (run.dtype == at::kFloat) {
          // HF's own loss: mean next-token NLL over real positions t >= 1.
          const double loss = -token_lp.masked_select(real_after_first).mean().item<double>();
          CHECK(loss == Approx(ref.read("hf_loss_f32").item<double>()).margin(1e-4));
        }
      }
    }
  });
}
