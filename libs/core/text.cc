#include "libs/core/text.h"

#include <cstddef>

namespace mkt {
namespace {

// Returns the length in bytes of the well-formed UTF-8 sequence at s[i], or 0.
size_t SequenceLength(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t extra;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c < 0x80) {
    return 1;
  } else if (c >= 0xc2 && c <= 0xdf) {
    extra = 1;
  } else if (c >= 0xe0 && c <= 0xef) {
    extra = 2;
    if (c == 0xe0) lo = 0xa0;  // no overlong forms
    if (c == 0xed) hi = 0x9f;  // no UTF-16 surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    extra = 3;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() - i <= extra) return 0;
  for (size_t k = 1; k <= extra; ++k) {
    const auto next = static_cast<unsigned char>(s[i + k]);
    if (next < (k == 1 ? lo : 0x80) || next > (k == 1 ? hi : 0xbf)) return 0;
  }
  return extra + 1;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

bool IsWellFormedUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '\0') return false;
    size_t len = SequenceLength(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

int PrintableUtf8Length(std::string_view s) {
  int count = 0;
  for (size_t i = 0; i < s.size(); ++count) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return -1;
    size_t len = SequenceLength(s, i);
    if (len == 0) return -1;
    i += len;
  }
  return count;
}

std::string StorableText(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(text.size() < max_bytes ? text.size() : max_bytes);
  for (size_t i = 0; i < text.size();) {
    const size_t n = text[i] == '\0' ? 0 : SequenceLength(text, i);
    const std::string_view piece = n == 0 ? kReplacement : text.substr(i, n);
    if (out.size() + piece.size() > max_bytes) break;
    out += piece;
    i += n == 0 ? 1 : n;
  }
  return out;
}

}  // namespace mkt
