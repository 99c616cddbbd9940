// SyntheticTokenizer (synthetic_model_artifact.h): a byte-level vocabulary of any size for
// synthetic artifacts, in the GGUF form formats::Tokenizer::FromGguf reads.
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "bitloom/engine/synthetic_model_artifact.h"

namespace bitloom::engine {
namespace {

constexpr uint32_t kByteTokens = 256;
constexpr uint32_t kMaxSpecialTokens = 256;
// The end-of-turn token is the tenth special token, as <|eot_id|> is in Llama 3.
constexpr uint32_t kEotOffset = 9;
constexpr int kGgufNormal = 1;
constexpr int kGgufControl = 3;
constexpr char kAlphanumerics[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr uint32_t kAlphabet = 62;
constexpr uint32_t kMaxFillers = kAlphabet * kAlphabet + kAlphabet * kAlphabet * kAlphabet;

// The byte-level (GPT-2) alphabet: the printable Latin-1 bytes stand for themselves; the other 68
// bytes, in increasing order, for the code points 256, 257, ... Returned as UTF-8.
std::string ByteLevelChar(uint8_t byte) {
  const bool printable =
      (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE);
  char32_t cp = byte;
  if (!printable) {
    cp = 256;
    for (int b = 0; b < byte; ++b) {
      const bool p = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      if (!p) ++cp;
    }
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {  // every code point here is below 0x800: two bytes
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

// Filler i: the 62² two-character strings, then the three-character ones, in alphabet order.
std::string Filler(uint32_t i) {
  std::string out;
  if (i < kAlphabet * kAlphabet) {
    out = {kAlphanumerics[i / kAlphabet], kAlphanumerics[i % kAlphabet]};
  } else {
    i -= kAlphabet * kAlphabet;
    out = {kAlphanumerics[i / (kAlphabet * kAlphabet)], kAlphanumerics[(i / kAlphabet) % kAlphabet],
           kAlphanumerics[i % kAlphabet]};
  }
  return out;
}

}  // namespace

absl::StatusOr<v1::TokenizerSpec> SyntheticTokenizer(uint32_t vocab_size,
                                                     SyntheticSpecialTokens* special) {
  if (vocab_size < kByteTokens + kEotOffset + 1) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size: ", vocab_size, " is below ",
                                                   kByteTokens + kEotOffset + 1,
                                                   " (256 bytes and 10 special tokens)"));
  }
  const uint32_t specials = std::min(kMaxSpecialTokens, vocab_size - kByteTokens);
  const uint32_t fillers = vocab_size - kByteTokens - specials;
  if (fillers > kMaxFillers) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size: ", vocab_size, " is above ",
                                                   kByteTokens + kMaxSpecialTokens + kMaxFillers,
                                                   ", the most a synthetic vocabulary names"));
  }
  const uint32_t first_special = kByteTokens + fillers;
  SyntheticSpecialTokens ids{first_special, first_special + 1, first_special + kEotOffset};

  v1::TokenizerSpec spec;
  v1::GgufTokenizer& g = *spec.mutable_gguf();
  g.set_model("gpt2");
  g.set_pre("llama-bpe");
  g.mutable_tokens()->Reserve(static_cast<int>(vocab_size));
  g.mutable_token_types()->Reserve(static_cast<int>(vocab_size));
  for (uint32_t b = 0; b < kByteTokens; ++b) {
    g.add_tokens(ByteLevelChar(static_cast<uint8_t>(b)));
    g.add_token_types(kGgufNormal);
  }
  for (uint32_t i = 0; i < fillers; ++i) {
    g.add_tokens(Filler(i));
    g.add_token_types(kGgufNormal);
  }
  for (uint32_t i = 0; i < specials; ++i) {
    const uint32_t id = first_special + i;
    if (id == ids.bos) {
      g.add_tokens("<|begin_of_text|>");
    } else if (id == ids.eos) {
      g.add_tokens("<|end_of_text|>");
    } else if (id == ids.eot) {
      g.add_tokens("<|eot_id|>");
    } else {
      g.add_tokens(absl::StrCat("<|reserved_special_token_", i, "|>"));
    }
    g.add_token_types(kGgufControl);
  }
  g.set_bos_token_id(ids.bos);
  g.set_eos_token_id(ids.eos);
  g.set_add_bos_token(true);
  g.add_eot_token_ids(ids.eot);
  if (special != nullptr) *special = ids;
  return spec;
}

}  // namespace bitloom::engine
