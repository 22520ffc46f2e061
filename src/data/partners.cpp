#include "kto/data/partners.h"

#include <algorithm>
#include <string>
#include <unordered_map>

#include "kto/data/dataset.h"
#include "kto/data/sampler.h"
#include "kto/util/check.h"
#include "kto/util/sha256.h"

namespace kto::data {

using detail::str_cat;

std::vector<int64_t> draw_kl_partners(const Dataset& dataset, uint64_t seed) {
  const int64_t n = dataset.size();
  const std::string name = dataset.paths().empty() ? "dataset" : dataset.paths().front();
  if (n < 2) throw Error(str_cat(name, ": fixed KL partners need at least 2 examples, it has ", n));
  // Prompt groups: equal prompt tokens, one id each.
  std::unordered_map<std::string, int64_t> ids;
  std::vector<int64_t> group(static_cast<size_t>(n));
  std::vector<int64_t> group_size;
  for (int64_t i = 0; i < n; ++i) {
    const Example e = dataset.read(i);
    const std::string prompt(reinterpret_cast<const char*>(e.tokens.data()),
                             static_cast<size_t>(e.prompt_len) * sizeof(int32_t));
    const auto [it, added] = ids.emplace(prompt, static_cast<int64_t>(group_size.size()));
    if (added) group_size.push_back(0);
    group[static_cast<size_t>(i)] = it->second;
    ++group_size[static_cast<size_t>(it->second)];
  }
  const int64_t largest = *std::max_element(group_size.begin(), group_size.end());
  if (2 * largest > n) {
    throw Error(str_cat(name, ": ", largest, " of its ", n,
                        " examples share one prompt: no fixed KL partners avoid pairing an example with "
                        "another completion of its own prompt (use data.pairing next or prev)"));
  }
  // Seeded shuffle (a stream of its own: not the sampler's epoch orders), then by group.
  const std::vector<int64_t> perm = BatchSampler::permutation(n, seed ^ 0x6B4C5F706172746Eull, 0);
  std::vector<int64_t> rank(static_cast<size_t>(n)), first(group_size.size(), n);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = perm[static_cast<size_t>(k)];
    rank[static_cast<size_t>(i)] = k;
    int64_t& f = first[static_cast<size_t>(group[static_cast<size_t>(i)])];
    f = std::min(f, k);
  }
  std::vector<int64_t> order = perm;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const int64_t ga = group[static_cast<size_t>(a)], gb = group[static_cast<size_t>(b)];
    if (group_size[static_cast<size_t>(ga)] != group_size[static_cast<size_t>(gb)])
      return group_size[static_cast<size_t>(ga)] > group_size[static_cast<size_t>(gb)];
    if (ga != gb) return first[static_cast<size_t>(ga)] < first[static_cast<size_t>(gb)];
    return rank[static_cast<size_t>(a)] < rank[static_cast<size_t>(b)];
  });
  // The first half on even places of the cycle, the second on odd ones.
  const int64_t half = (n + 1) / 2;
  std::vector<int64_t> cycle(static_cast<size_t>(n));
  for (int64_t m = 0; m < n; ++m) {
    const int64_t place = m < half ? 2 * m : 2 * (m - half) + 1;
    cycle[static_cast<size_t>(place)] = order[static_cast<size_t>(m)];
  }
  std::vector<int64_t> partner(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) {
    const int64_t a = cycle[static_cast<size_t>(p)], b = cycle[static_cast<size_t>((p + 1) % n)];
    KTO_CHECK(a != b && group[static_cast<size_t>(a)] != group[static_cast<size_t>(b)], name,
              ": KL partner assignment failed at example ", a);
    partner[static_cast<size_t>(a)] = b;
  }
  return partner;
}

std::string partner_set_sha256(const std::vector<std::string>& file_data_sha256) {
  Sha256 h;
  for (const std::string& s : file_data_sha256) {
    h.update(s.data(), s.size());
    h.update("\n", 1);
  }
  return h.hex_digest();
}

std::string partner_set_sha256(const Dataset& dataset) {
  std::vector<std::string> shas;
  for (const FileIdentity& id : dataset.identities()) shas.push_back(id.data_sha256);
  return partner_set_sha256(shas);
}

std::vector<Example> read_kl_partners(const Dataset& dataset, const std::vector<Example>& examples,
                                      const std::vector<int64_t>& table) {
  std::vector<Example> partners;
  partners.reserve(examples.size());
  for (const Example& e : examples) partners.push_back(dataset.read(table[static_cast<size_t>(e.index)]));
  return partners;
}

std::vector<int64_t> fixed_kl_partners(const Dataset& dataset, uint64_t seed) {
  if (dataset.has_kl_partners()) return dataset.kl_partners();
  return draw_kl_partners(dataset, seed);
}

}  // namespace kto::data
