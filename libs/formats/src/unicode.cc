#include "bitloom/formats/unicode.h"

#include <array>

namespace bitloom::formats::unicode {
namespace {

// Length of the well-formed sequence at s[pos] (Unicode Table 3-7), or the length of its maximal
// invalid subpart negated (at least -1). `complete` is set false when the sequence is a valid
// prefix cut short by the end of `s`.
int ScanSequence(std::string_view s, size_t pos, bool& truncated) {
  truncated = false;
  const auto b0 = static_cast<uint8_t>(s[pos]);
  if (b0 < 0x80) return 1;
  const size_t need = Utf8SequenceLength(b0);
  if (need == 0) return -1;
  // Allowed range of the second byte depends on the lead byte (excludes overlongs and surrogates).
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 == 0xE0) lo = 0xA0;
  if (b0 == 0xED) hi = 0x9F;
  if (b0 == 0xF0) lo = 0x90;
  if (b0 == 0xF4) hi = 0x8F;
  for (size_t i = 1; i < need; ++i) {
    if (pos + i >= s.size()) {
      truncated = true;
      return -static_cast<int>(i);
    }
    const auto b = static_cast<uint8_t>(s[pos + i]);
    const uint8_t l = i == 1 ? lo : 0x80;
    const uint8_t h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) return -static_cast<int>(i);
  }
  return static_cast<int>(need);
}

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_char;
  std::array<int, 324> char_to_byte;  // code points used by the alphabet are all below 0x144
  ByteLevelTables() {
    char_to_byte.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the other 68 bytes are shifted to U+0100.. in
    // byte order. This is the table every GPT-2-derived vocabulary was built with.
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const int cp = printable ? b : next++;
      AppendUtf8(static_cast<char32_t>(cp), byte_to_char[b]);
      char_to_byte[cp] = b;
    }
  }
};

const ByteLevelTables& Tables() {
  static const ByteLevelTables* tables = new ByteLevelTables();
  return *tables;
}

}  // namespace

size_t Utf8SequenceLength(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

char32_t DecodeUtf8(std::string_view s, size_t& pos) {
  bool truncated;
  const int n = ScanSequence(s, pos, truncated);
  if (n <= 0) {
    ++pos;
    return 0xFFFD;
  }
  const auto b0 = static_cast<uint8_t>(s[pos]);
  char32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (int i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<uint8_t>(s[pos + i]) & 0x3F);
  pos += n;
  return cp;
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view s) {
  bool truncated;
  for (size_t pos = 0; pos < s.size();) {
    const int n = ScanSequence(s, pos, truncated);
    if (n <= 0) return false;
    pos += n;
  }
  return true;
}

size_t CompleteUtf8Prefix(std::string_view s) {
  bool truncated;
  size_t pos = 0;
  while (pos < s.size()) {
    const int n = ScanSequence(s, pos, truncated);
    if (n > 0) {
      pos += n;
    } else if (truncated) {
      return pos;  // a valid beginning; more bytes may complete it
    } else {
      pos += -n;  // ill-formed: emitting it now (as U+FFFD later) loses nothing
    }
  }
  return pos;
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool truncated;
  for (size_t pos = 0; pos < s.size();) {
    const int n = ScanSequence(s, pos, truncated);
    if (n > 0) {
      out.append(s.substr(pos, n));
      pos += n;
    } else {
      out.append("\xEF\xBF\xBD");
      pos += -n;
    }
  }
  return out;
}

const std::string& ByteToLevelChar(uint8_t b) { return Tables().byte_to_char[b]; }

int LevelCharToByte(char32_t cp) {
  if (cp >= Tables().char_to_byte.size()) return -1;
  return Tables().char_to_byte[cp];
}

}  // namespace bitloom::formats::unicode
