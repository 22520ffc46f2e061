#include "kto/data/sampler.h"

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
