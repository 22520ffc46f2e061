// Turning one input row (a JSON value) into KTO examples: text prompt, text completion, label.
//
// Accepted row shapes (auto-detected per row):
//   unpaired       {"prompt", "completion", "label"}  (also "input"/"output"; label bool or 0/1;
//                  prompt/completion may be message lists, TRL's conversational form)
//   conversational {"messages" | "conversations": [...], "label"}  (the last assistant turn is
//                  the completion; role/content or ShareGPT from/value messages)
//   paired         {"prompt", "chosen", "rejected"}  -> one desirable + one undesirable example
//   Anthropic HH   {"chosen", "rejected"} transcripts, split at the last "\n\nAssistant:"; a pair
//                  whose parts before that point differ is skipped, never mis-split.
// Message lists are rendered through a ChatTemplate.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace kto::data_tools {

struct ChatTemplate {
  std::string name;
  std::string system = "{content}";
  std::string user;
  std::string assistant;
  std::string generation;         // appended to a rendered prompt (the assistant's turn opener)
  std::string completion_prefix;  // put before a completion taken from a message
  // Built-ins: hh, chatml, llama3, plain. Throws kto::Error listing them otherwise.
  static ChatTemplate builtin(const std::string& name);
  // A JSON file {"system","user","assistant","generation","completion_prefix"}; {content} and
  // {role} are substituted.
  static ChatTemplate from_file(const std::string& path);
};

enum class RowFormat { unpaired, conversational, paired, hh };
const char* format_name(RowFormat f);

struct TextExample {
  std::string prompt;
  std::string completion;
  bool desirable = false;
};

// Why a row was skipped; `reason` is a stable short key used in the summary, `detail` says more.
struct RowError {
  std::string reason;
  std::string detail;
};

struct ParsedRow {
  RowFormat format = RowFormat::unpaired;
  std::vector<TextExample> examples;  // empty when skipped
  RowError error;
  bool ok() const { return error.reason.empty(); }
};

ParsedRow parse_row(const nlohmann::json& row, const ChatTemplate& tmpl);

// The text a model continues for a prompt, as kto-data prepare renders prompts: a list of
// messages through the template followed by its generation opener; a string as it is, or —
// `wrap_string` — as one user message through the template. Throws kto::Error for anything else.
std::string generation_prompt(const nlohmann::json& prompt, const ChatTemplate& tmpl, bool wrap_string);

}  // namespace kto::data_tools
