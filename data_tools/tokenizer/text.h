// UTF-8 and Unicode helpers for the tokenizers: normalisation forms (utf8proc), code point
// iteration, and the GPT-2 byte-level alphabet.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kto::tok {

enum class NormalForm { nfc, nfd, nfkc, nfkd };

// Throws kto::Error on invalid UTF-8.
std::string normalize(std::string_view text, NormalForm form);
std::string lowercase(std::string_view text);

// True when `text` is well-formed UTF-8.
bool is_valid_utf8(std::string_view text);
// Byte length of the UTF-8 sequence starting with `lead` (1 for invalid lead bytes).
int utf8_length(unsigned char lead);
// The code points of valid UTF-8 `text`.
std::vector<char32_t> decode_utf8(std::string_view text);
void append_utf8(char32_t cp, std::string& out);

// GPT-2 byte-level alphabet: each byte 0..255 is one printable code point, as UTF-8.
const std::string& byte_to_unicode(unsigned char byte);
// Maps every byte of `text` through byte_to_unicode.
std::string bytes_to_unicode(std::string_view text);
// Inverse of bytes_to_unicode; characters outside the alphabet are copied as they are.
std::string unicode_to_bytes(std::string_view text);

}  // namespace kto::tok
