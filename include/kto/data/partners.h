// Fixed KL partners (data.pairing: fixed, DESIGN §3): each example of a dataset gets one partner
// whose completion its KL sequence borrows, chosen once from a seed instead of re-drawn in every
// microbatch — so that a reference's KL log-probs can be computed once and stored
// (kto-train --score-reference, /kl_partner and /ref_kl_logp in the dataset; docs/training.md).
//
// The rule: never the example itself and never an example with the same prompt (a preference
// pair's twin, or another completion of one prompt). The examples are shuffled with the seed,
// ordered by prompt group (largest first, then by first appearance in the shuffle), laid into
// one cycle alternately from the two halves of that order, and each example's partner is its
// successor in the cycle: every example is some other example's partner exactly once. Possible
// whenever no prompt holds more than half of the examples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kto::data {

class Dataset;
struct Example;

// The partner of every example of `dataset` (reads every example's prompt once). Throws
// kto::Error naming the dataset when no assignment exists (fewer than 2 examples, or one prompt
// shared by more than half of them).
std::vector<int64_t> draw_kl_partners(const Dataset& dataset, uint64_t seed);

// What a partner table was drawn for: a SHA-256 over the identities (offsets, prompt lengths,
// labels and tokens: FileIdentity::data_sha256) of the dataset's files, in order. Stored beside /kl_partner
// and checked when opened.
std::string partner_set_sha256(const Dataset& dataset);
std::string partner_set_sha256(const std::vector<std::string>& file_data_sha256);

// The KL partners of `examples` (table[e.index] each), read from `dataset`.
std::vector<Example> read_kl_partners(const Dataset& dataset, const std::vector<Example>& examples,
                                      const std::vector<int64_t>& table);

// The partners a run uses with pairing: fixed: the dataset's stored table when it has one,
// else drawn from `seed`.
std::vector<int64_t> fixed_kl_partners(const Dataset& dataset, uint64_t seed);

}  // namespace kto::data
