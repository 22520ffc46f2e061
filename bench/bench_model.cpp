// bench_model: figures for the model core on this machine (no assertions).
//
//   * forward tokens/s and model FLOP/s (2N FLOPs per token) in fp32 and bf16;
//   * forward + backward of completion log-prob sums (the training path) tokens/s;
//   * causal attention without autograd: batched products vs one score matrix at a time;
//   * completion log-probs, chunked vs naive full-vocab log_softmax: time and peak resident
//     memory, each variant measured in a fresh child process.
//
// Usage: bench_model [--hidden 512] [--layers 8] [--vocab 32000] [--batch 4] [--seq 256]
//                    [--threads N] [--reps 3] [--logprob-rows 4096] [--bf16]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.h"
#include "kto/model/dense_model.h"
#include "kto/model/fused_cpu.h"
#include "kto/model/logprob.h"
#include "kto/util/cli.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

long peak_rss_kb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// Child mode: one log-prob variant over [rows, hidden] x [vocab, hidden] with backward; prints
// "<seconds> <peak_rss_kb>".
int run_logprob_variant(const std::string& variant, int64_t rows, int64_t hidden, int64_t vocab) {
  at::Generator gen = at::detail::createCPUGenerator(1);
  const at::Tensor h = (at::randn({rows, hidden}, gen) * 0.1).requires_grad_(true);
  const at::Tensor w = (at::randn({vocab, hidden}, gen) * 0.1).requires_grad_(true);
  const at::Tensor targets = at::randint(vocab, {rows}, gen, at::kLong);
  const long before = peak_rss_kb();
  const auto t0 = Clock::now();
  at::Tensor lp;
  if (variant == "chunked") {
    lp = kto::model::token_logprobs(h, w, targets);
  } else {
    lp = at::log_softmax(at::matmul(h, w.t()), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
  }
  lp.sum().backward();
  std::printf("%.4f %ld\n", seconds_since(t0), peak_rss_kb() - before);
  return 0;
}

// Runs this binary in child mode and parses its figures.
bool measure_child(const char* self, const std::string& variant, int64_t rows, int64_t hidden, int64_t vocab,
                   double* seconds, long* rss_kb) {
  const std::string cmd = std::string(self) + " --child " + variant + " " + std::to_string(rows) + " " +
                          std::to_string(hidden) + " " + std::to_string(vocab);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return false;
  const int n = std::fscanf(pipe, "%lf %ld", seconds, rss_kb);
  return pclose(pipe) == 0 && n == 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 6 && std::string(argv[1]) == "--child") {
    at::set_num_threads(1);
    return run_logprob_variant(argv[2], std::stoll(argv[3]), std::stoll(argv[4]), std::stoll(argv[5]));
  }
  return kto::cli::run_main("bench_model", [&]() -> int {
    int64_t hidden = 512, layers = 8, vocab = 32000, batch = 4, seq = 256, threads = 0, reps = 3,
            lp_rows = 4096;
    bool bf16 = false;
    kto::cli::Args args("bench_model", "Throughput and memory figures for kto's model core (CPU).");
    args.option("--hidden", &hidden, "C", "model width (default 512)")
        .option("--layers", &layers, "L", "decoder blocks (default 8)")
        .option("--vocab", &vocab, "V", "vocabulary (default 32000)")
        .option("--batch", &batch, "B", "sequences per batch (default 4)")
        .option("--seq", &seq, "T", "tokens per sequence (default 256)")
        .option("--threads", &threads, "N", "intra-op threads (default: all cores)")
        .option("--reps", &reps, "N", "timed repetitions, median reported (default 3)")
        .option("--logprob-rows", &lp_rows, "N",
                "rows of the chunked vs naive log-prob comparison (default 4096)")
        .flag("--bf16", &bf16, "also time bf16 (very slow on CPUs without native bf16 matmul)");
    if (!args.parse(argc, argv)) return 0;
    at::set_num_threads(static_cast<int>(threads > 0 ? threads : sysconf(_SC_NPROCESSORS_ONLN)));

    const kto::model::ModelConfig cfg = kto::bench::llama_config(hidden, layers, vocab);
    const int64_t n_params = cfg.num_parameters();
    const int64_t n_flop_params = n_params - vocab * hidden;  // embedding lookups are free
    std::printf(
        "model: llama hidden %ld layers %ld heads %ld/%ld vocab %ld, %.1fM parameters; batch %ld x %ld; "
        "%d threads\n",
        hidden, layers, cfg.num_attention_heads, cfg.kv_heads(), vocab, n_params / 1e6, batch, seq,
        at::get_num_threads());

    at::Generator gen = at::detail::createCPUGenerator(3);
    const at::Tensor ids = at::randint(vocab, {batch, seq}, gen, at::kLong);
    at::Tensor loss_mask = at::zeros_like(ids);
    loss_mask.narrow(1, seq / 2, seq - seq / 2).fill_(1);  // completion = second half
    const kto::model::TokenSelection sel = kto::model::select_tokens(ids, loss_mask);
    const double tokens = static_cast<double>(batch * seq);

    kto::model::DenseModel base(cfg, at::kFloat);
    base.init_random(1, 0.02);
    std::vector<at::ScalarType> dtypes = {at::kFloat};
    if (bf16) dtypes.push_back(at::kBFloat16);
    std::printf("\n%-6s %-22s %12s %14s %12s\n", "dtype", "pass", "ms/batch", "tokens/s", "GFLOP/s");
    for (at::ScalarType dtype : dtypes) {
      const kto::model::DenseModel m = dtype == at::kFloat ? base : base.to(dtype);
      std::vector<double> fwd, train;
      for (int64_t r = 0; r <= reps; ++r) {  // first repetition warms up
        auto t0 = Clock::now();
        {
          at::NoGradGuard no_grad;
          (void)kto::model::sequence_logprob_sums(m.forward_hidden(ids, {}), m.lm_head(), sel);
        }
        const double f = seconds_since(t0);
        for (at::Tensor& u : const_cast<kto::model::DenseModel&>(m).units()) u.requires_grad_(true);
        t0 = Clock::now();
        kto::model::sequence_logprob_sums(m.forward_hidden(ids, {}), m.lm_head(), sel).sum().backward();
        const double t = seconds_since(t0);
        for (at::Tensor& u : const_cast<kto::model::DenseModel&>(m).units()) {
          u.mutable_grad() = at::Tensor();
          u.requires_grad_(false);
        }
        if (r > 0) {
          fwd.push_back(f);
          train.push_back(t);
        }
      }
      const char* name = dtype == at::kFloat ? "fp32" : "bf16";
      const double f = median(fwd), t = median(train);
      std::printf("%-6s %-22s %12.1f %14.0f %12.1f\n", name, "forward (no grad)", f * 1e3, tokens / f,
                  2.0 * n_flop_params * tokens / f / 1e9);
      std::printf("%-6s %-22s %12.1f %14.0f %12.1f\n", name, "forward + backward", t * 1e3, tokens / t,
                  6.0 * n_flop_params * tokens / t / 1e9);
    }

    // Causal attention without autograd at this shape (fp32): the batched products around the
    // masked softmax (what a step with autograd runs) against fused::attention_no_grad (one score
    // matrix at a time, in cache), alternated.
    {
      const int64_t H = cfg.num_attention_heads, Hkv = cfg.kv_heads(), D = hidden / H, rep = H / Hkv;
      const at::Tensor q = at::randn({batch, Hkv, rep * seq, D}, gen),
                       k = at::randn({batch, Hkv, seq, D}, gen), v = at::randn({batch, Hkv, seq, D}, gen);
      const at::Tensor mask = at::full({seq, seq}, -INFINITY).triu(1);
      const double scale = 1.0 / std::sqrt(static_cast<double>(D));
      at::NoGradGuard no_grad;
      std::vector<double> batched, grouped;
      for (int64_t r = 0; r <= 2 * reps + 1; ++r) {  // the first pair warms up
        auto t0 = Clock::now();
        (void)at::matmul(
            kto::model::fused::masked_softmax(at::matmul(q, k.transpose(-2, -1)), scale, mask, true), v);
        const double a = seconds_since(t0);
        t0 = Clock::now();
        (void)kto::model::fused::attention_no_grad(q, k, v, scale, mask, true);
        const double b = seconds_since(t0);
        if (r > 0) {
          batched.push_back(a);
          grouped.push_back(b);
        }
      }
      const auto [bl, bh] = std::minmax_element(batched.begin(), batched.end());
      const auto [gl, gh] = std::minmax_element(grouped.begin(), grouped.end());
      std::printf(
          "\ncausal attention, no autograd, fp32, [%ld x %ld heads (%ld kv) x %ld x %ld], %zu alternated "
          "reps:\n"
          "  batched products + masked softmax  %8.1f ms (%.1f-%.1f)\n"
          "  one score matrix at a time         %8.1f ms (%.1f-%.1f)\n",
          batch, H, Hkv, seq, D, batched.size(), median(batched) * 1e3, *bl * 1e3, *bh * 1e3,
          median(grouped) * 1e3, *gl * 1e3, *gh * 1e3);
    }

    // Completion log-probs: chunked vs materialised logits.
    const int64_t rows = lp_rows;
    std::printf(
        "\ncompletion log-probs + backward, %ld rows x vocab %ld (fp32, 1 thread, fresh process each):\n",
        rows, vocab);
    std::printf("%-10s %10s %16s %22s\n", "variant", "ms", "peak RSS +MB", "full fp32 logits MB");
    for (const std::string variant : {"chunked", "naive"}) {
      double s = 0;
      long kb = 0;
      if (measure_child(argv[0], variant, rows, hidden, vocab, &s, &kb)) {
        std::printf("%-10s %10.1f %16.1f %22.1f\n", variant.c_str(), s * 1e3, kb / 1024.0,
                    rows * vocab * 4 / 1048576.0);
      } else {
        std::printf("%-10s (child failed)\n", variant.c_str());
      }
    }
    return 0;
  });
}
