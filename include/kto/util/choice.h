// Typed choices: a fixed table gives each value of an enum the one name users write.
//
// Config keys with a fixed set of values are enums in the code; the config visitors
// (kto/config) read and write their names through these tables, once, at parse time, so hot
// code compares enums and never strings.
//
//   enum class Decay { constant, linear, cosine };
//   inline constexpr ChoiceTable<Decay, 3> kDecays{{{Decay::constant, "constant"}, ...}};
//   choice_name(kDecays, Decay::linear)  -> "linear"
//   parse_choice(kDecays, "cosine")      -> Decay::cosine (std::nullopt for an unknown name)
#pragma once

#include <array>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>

namespace kto {

template <class E>
struct Choice {
  E value;
  const char* name;
};

template <class E, size_t N>
using ChoiceTable = std::array<Choice<E>, N>;

template <class E, size_t N>
const char* choice_name(const ChoiceTable<E, N>& table, E value) {
  for (const Choice<E>& c : table) {
    if (c.value == value) return c.name;
  }
  return "?";
}

template <class E, size_t N>
std::optional<E> parse_choice(const ChoiceTable<E, N>& table, const std::string& name) {
  for (const Choice<E>& c : table) {
    if (name == c.name) return c.value;
  }
  return std::nullopt;
}

// "a, b, c" (or with another separator).
template <class E, size_t N>
std::string choice_names(const ChoiceTable<E, N>& table, const char* separator = ", ") {
  std::string out;
  for (const Choice<E>& c : table) out += (out.empty() ? "" : separator) + std::string(c.name);
  return out;
}

}  // namespace kto
