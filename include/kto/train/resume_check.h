// What resuming may change. A checkpoint records the resolved config and the identity of what
// the run trained on (data files, tokenizer, architecture, reference); resuming compares both
// with the new run and refuses every difference that would make it a different experiment,
// unless the key is one resuming may change (kResumableKeys: more steps, cadence, threads,
// run-time paths whose content is checked by identity) or the user names it
// (`kto-train --allow-change KEY`). docs/checkpoints.md lists the same keys.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace kto::train {

// Flat keys and values: config keys ("loss.beta") and identity entries ("data.train[0]").
using RunFacts = std::map<std::string, std::string>;

struct RunChange {
  std::string key, before, after;
  std::string text() const;  // "loss.name: kto → dpo"
};

// Keys (or key prefixes: a section "run" covers "run.dir") a resumed run may change unasked.
const std::vector<std::string>& resumable_keys();

// True when `pattern` names `key`: equal, or a section or list above it ("loss" names
// "loss.beta", "data.train" names "data.train[1]").
bool key_matches(const std::string& key, const std::string& pattern);

// Every key whose value differs (absent on one side reads "(none)"), in key order.
std::vector<RunChange> run_changes(const RunFacts& before, const RunFacts& after);

// Splits `changes` into those resuming may make (returned) and the rest; throws kto::Error
// listing the rest as "key: old → new" with how to allow them, naming `checkpoint`. Patterns
// in `allowed` that name no changed key are refused too (a typo must not pass silently).
std::vector<RunChange> check_resume_changes(const std::vector<RunChange>& changes,
                                            const std::vector<std::string>& allowed,
                                            const std::string& checkpoint);

}  // namespace kto::train
