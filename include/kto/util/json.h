// JSON from untrusted files (config.json, tokenizer.json, JSONL rows, templates, indexes):
// parsing with a nesting limit, and bounded descriptions of values for error messages.
//
// nlohmann's parser is iterative, but dump(), comparisons and copies recurse through nested
// values: 100,000 nested arrays overflow the stack. parse_json() refuses nesting deeper than a
// limit before any of that can happen, and json_brief() describes a value without dumping it
// whole. Inline on purpose: targets that define JSON_DIAGNOSTICS=1 (type errors then name the
// value's JSON pointer) get nlohmann's diagnostic json type, a different type in 3.11's ABI
// namespace, and these functions compile for whichever type the including file uses.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "kto/util/check.h"

namespace kto {

constexpr int kMaxJsonDepth = 64;

// Throws kto::Error naming `source`: not valid JSON (with nlohmann's reason and position), or
// nested deeper than `max_depth`.
inline nlohmann::json parse_json(std::string_view text, const std::string& source,
                                 int max_depth = kMaxJsonDepth) {
  using json = nlohmann::json;
  bool too_deep = false;
  // Values nested past the limit are discarded as they are parsed (the parser is iterative),
  // then the whole input is refused.
  const json::parser_callback_t limit = [&](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= max_depth) {
      too_deep = true;
      return false;
    }
    return true;
  };
  json value;
  try {
    value = json::parse(text.begin(), text.end(), limit);
  } catch (const json::exception& e) {
    throw Error(source + ": not valid JSON: " + e.what());
  }
  if (too_deep) throw Error(detail::str_cat(source, ": JSON nested deeper than ", max_depth, " levels"));
  return value;
}

// A value for an error message: numbers, booleans and null as JSON; strings quoted and cut at 60
// bytes; arrays and objects by kind and size ("an array of 3 values"). Never recursive.
inline std::string json_brief(const nlohmann::json& v) {
  using json = nlohmann::json;
  switch (v.type()) {
    case json::value_t::array:
      return detail::str_cat("an array of ", v.size(), v.size() == 1 ? " value" : " values");
    case json::value_t::object:
      return detail::str_cat("an object with ", v.size(), v.size() == 1 ? " key" : " keys");
    case json::value_t::string: {
      const std::string& s = v.get_ref<const std::string&>();
      return s.size() <= 60 ? json(s).dump() : json(s.substr(0, 60)).dump() + "...";
    }
    default: return v.dump();  // a scalar: no recursion
  }
}

}  // namespace kto
