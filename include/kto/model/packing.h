// Packed batches: the sequences of one forward back to back in a single row, no padding
// (DESIGN §4, docs/training.md "Packed batches and shared prompts").
//
// A packed batch is a stream of N tokens ([1, N] ids) cut into groups. Attention never crosses
// a group. A group is a trunk followed by zero or more branches: every token sees the tokens
// before it in its own part and the whole trunk, never another branch; positions restart at
// each group (the trunk at `prefix_length`, every branch right after the trunk, as if it were
// the only one). A plain sequence is a group with no branches; a prompt with its two paired
// completions (DPO's chosen and rejected) is a trunk with two branches.
//
// A group may also continue a sequence of another batch of the same walk, the provider (the
// walk's first batch): it first attends that batch's keys and values of tokens
// [prefix_start, prefix_start + prefix_length) — a prompt computed once — then its own. The
// provider's keys and values are detached: a continuation never sends gradient into them.
// That is how the KL batch reuses the prompts of the target batch.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace kto::model {

struct PackedGroup {
  int64_t start = 0;              // first token in the stream
  int64_t trunk = 0;              // tokens every branch sees
  std::vector<int64_t> branches;  // lengths of the branches after the trunk, in stream order
  int64_t prefix_start = 0;       // the provider's tokens this group attends first
  int64_t prefix_length = 0;
  int64_t length() const {
    int64_t n = trunk;
    for (int64_t b : branches) n += b;
    return n;
  }
};

struct PackedLayout {
  std::vector<PackedGroup> groups;  // back to back, covering the stream
  int64_t tokens = 0;               // N
  bool has_prefixes() const {
    for (const PackedGroup& g : groups)
      if (g.prefix_length > 0) return true;
    return false;
  }
  // Each token's position: [N] int64 (CPU).
  at::Tensor positions() const;
  // Throws kto::Error unless the groups cover [0, tokens) in order.
  void check() const;
};

// Keys and values of one block over a whole batch after RoPE, before any GQA repetition:
// [1, Hkv, N, D] each. What a provider leaves for the continuations of its walk.
struct BlockKV {
  at::Tensor k, v;
};

}  // namespace kto::model
