#include "kto/data/sampler.h"

#include <algorithm>

#include "kto/util/check.h"

namespace kto::data {

using detail::str_cat;

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, bound) without modulo bias (rejection sampling).
uint64_t uniform_below(uint64_t bound, uint64_t& state) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  for (;;) {
    const uint64_t x = splitmix64(state);
    if (x < limit) return x % bound;
  }
}

}  // namespace

std::vector<int64_t> BatchSampler::permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  uint64_t state = seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(epoch + 1));
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(uniform_below(static_cast<uint64_t>(i + 1), state));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

std::vector<int64_t> BatchSampler::grouped(const std::vector<int64_t>& perm,
                                           const std::vector<int64_t>& lengths, int64_t micro,
                                           int64_t window_microbatches, int64_t first_run, uint64_t seed,
                                           int64_t epoch) {
  const int64_t n = static_cast<int64_t>(perm.size());
  KTO_CHECK(micro > 0 && window_microbatches > 0 && first_run >= 0 && first_run < micro,
            "bad length grouping: micro ", micro, ", window ", window_microbatches, ", first run ",
            first_run);
  std::vector<int64_t> out;
  out.reserve(perm.size());
  auto longer = [&lengths](int64_t a, int64_t b) {
    return lengths[static_cast<size_t>(a)] > lengths[static_cast<size_t>(b)];
  };
  // The microbatch the previous epoch began: its rest, sorted, stays first.
  const int64_t head = std::min(first_run, n);
  out.insert(out.end(), perm.begin(), perm.begin() + head);
  std::stable_sort(out.begin(), out.end(), longer);
  const int64_t window = micro * window_microbatches;
  for (int64_t begin = head, w = 0; begin < n; begin += window, ++w) {
    const int64_t end = std::min(n, begin + window);
    std::vector<int64_t> win(perm.begin() + begin, perm.begin() + end);
    std::stable_sort(win.begin(), win.end(), longer);
    const int64_t full_runs = static_cast<int64_t>(win.size()) / micro;
    std::vector<int64_t> order(static_cast<size_t>(full_runs));
    for (int64_t r = 0; r < full_runs; ++r) order[static_cast<size_t>(r)] = r;
    uint64_t state = seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch + 1)) ^
                     (0xC2B2AE3D27D4EB4Full * static_cast<uint64_t>(w + 1));
    for (int64_t i = full_runs - 1; i > 0; --i) {
      const int64_t j = static_cast<int64_t>(uniform_below(static_cast<uint64_t>(i + 1), state));
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
    for (int64_t r : order) out.insert(out.end(), win.begin() + r * micro, win.begin() + (r + 1) * micro);
    out.insert(out.end(), win.begin() + full_runs * micro, win.end());  // a partial run: the epoch's last
  }
  return out;
}

void BatchSampler::group_by_length(std::vector<int64_t> lengths, int64_t window_microbatches) {
  KTO_CHECK(static_cast<int64_t>(lengths.size()) == n_, "group_by_length: ", lengths.size(), " lengths for ",
            n_, " examples");
  KTO_CHECK(window_microbatches > 0, "group_by_length: window of ", window_microbatches, " microbatches");
  lengths_ = std::move(lengths);
  window_microbatches_ = window_microbatches;
  cached_epoch_ = -1;
}

BatchSampler::BatchSampler(int64_t num_examples, uint64_t seed, int64_t micro_batch, int64_t grad_accum,
                           int world_size, int rank)
    : n_(num_examples),
      seed_(seed),
      micro_(micro_batch),
      accum_(grad_accum),
      world_(world_size),
      rank_(rank) {
  if (n_ <= 0) throw Error("the dataset is empty");
  KTO_CHECK(micro_ > 0 && accum_ > 0 && world_ > 0 && rank_ >= 0 && rank_ < world_,
            "bad sampler geometry: micro ", micro_, " accum ", accum_, " world ", world_, " rank ", rank_);
}

const std::vector<int64_t>& BatchSampler::perm(int64_t epoch) {
  if (epoch != cached_epoch_) {
    cached_perm_ = permutation(n_, seed_, epoch);
    if (!lengths_.empty()) {
      // Stream position epoch * n of the first example: how much of a microbatch is left to fill.
      const int64_t into = (epoch % micro_) * (n_ % micro_) % micro_;
      const int64_t first_run = into == 0 ? 0 : micro_ - into;
      cached_perm_ = grouped(cached_perm_, lengths_, micro_, window_microbatches_, first_run, seed_, epoch);
    }
    cached_epoch_ = epoch;
  }
  return cached_perm_;
}

RankStep BatchSampler::next_step() {
  RankStep step = next_global_step();
  for (auto& micro : step) {
    micro = std::vector<SampledExample>(micro.begin() + rank_ * micro_, micro.begin() + (rank_ + 1) * micro_);
  }
  return step;
}

RankStep BatchSampler::next_global_step() {
  RankStep step(static_cast<size_t>(accum_));
  for (int64_t j = 0; j < global_batch(); ++j) {
    step[static_cast<size_t>(j / (micro_ * world_))].push_back(
        {perm(state_.epoch)[static_cast<size_t>(state_.position)], state_.epoch});
    if (++state_.position == n_) {
      state_.position = 0;
      ++state_.epoch;
    }
  }
  return step;
}

void BatchSampler::restore(const SamplerState& s) {
  if (s.epoch < 0 || s.position < 0 || s.position >= n_) {
    throw Error(str_cat("sampler state (epoch ", s.epoch, ", position ", s.position,
                        ") does not fit a dataset of ", n_, " examples"));
  }
  state_ = s;
}

}  // namespace kto::data
