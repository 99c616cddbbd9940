// UTF-8 helpers shared by the tokenizers and the chat-template interpreter.
//
// Tokenizers work on bytes, but several of their rules are defined on code points (byte-level BPE's
// byte<->code point table, SentencePiece's U+2581 space marker, streaming decode that must never cut a
// character in half). These are small pure functions with no state: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bitloom::formats::unicode {

// U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible stand-in for a space.
inline constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";

// Length in bytes of the UTF-8 sequence announced by lead byte `b`; 0 for a continuation byte or a
// byte that can never start a sequence.
size_t Utf8SequenceLength(uint8_t b);

// Decodes the code point starting at s[pos] and advances `pos`. An invalid or truncated sequence
// yields U+FFFD and advances by one byte, so callers always make progress.
char32_t DecodeUtf8(std::string_view s, size_t& pos);

void AppendUtf8(char32_t cp, std::string& out);

// True when `s` is entirely well-formed UTF-8 (no overlongs, surrogates, or values past U+10FFFF).
bool IsValidUtf8(std::string_view s);

// Length of the longest prefix of `s` that ends on a character boundary, given that `s` is a
// stream that may continue: a well-formed but incomplete sequence at the end is held back; an
// ill-formed one is not (it can never become valid, so waiting for more bytes would not help).
size_t CompleteUtf8Prefix(std::string_view s);

// `s` with every ill-formed subsequence replaced by U+FFFD (one per maximal invalid subpart, the
// Unicode-recommended practice that Rust's String::from_utf8_lossy also follows).
std::string SanitizeUtf8(std::string_view s);

// GPT-2's byte-level alphabet: every byte maps to one printable code point so that BPE vocabularies
// never contain raw control bytes or spaces. Returns the UTF-8 encoding of the code point for `b`.
const std::string& ByteToLevelChar(uint8_t b);
// Inverse of ByteToLevelChar; -1 when `cp` is not in the alphabet.
int LevelCharToByte(char32_t cp);

}  // namespace bitloom::formats::unicode
