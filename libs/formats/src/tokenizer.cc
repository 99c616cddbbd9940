#include "bitloom/formats/tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/unicode.h"
#include "tokenizer_internal.h"

namespace bitloom::formats {
namespace {

// Whitespace as Rust's char::is_whitespace defines it (what lstrip/rstrip absorb in tokenizers).
bool IsWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Parses "<0xNN>" exactly.
int ByteTokenValue(std::string_view s) {
  if (s.size() != 6 || !s.starts_with("<0x") || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = s[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return -1;
    }
    v = v * 16 + d;
  }
  return v;
}

std::string TokenBytes(std::string_view token, const DecodeRules& rules) {
  if (rules.byte_level) {
    std::string out;
    for (size_t pos = 0; pos < token.size();) {
      const size_t start = pos;
      const char32_t cp = unicode::DecodeUtf8(token, pos);
      const int b = unicode::LevelCharToByte(cp);
      // Characters outside the byte alphabet (in added tokens) stand for themselves.
      if (b >= 0) {
        out.push_back(static_cast<char>(b));
      } else {
        out.append(token.substr(start, pos - start));
      }
    }
    return out;
  }
  if (rules.byte_fallback) {
    if (const int b = ByteTokenValue(token); b >= 0) return std::string(1, static_cast<char>(b));
  }
  std::string out(token);
  for (const auto& [from, to] : rules.replace) {
    if (from.empty()) continue;
    std::string replaced;
    size_t pos = 0;
    for (size_t hit; (hit = out.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
      replaced.append(out, pos, hit - pos);
      replaced.append(to);
    }
    replaced.append(out, pos, std::string::npos);
    out = std::move(replaced);
  }
  return out;
}

}  // namespace

// ---- AddedTokenMatcher ----

void AddedTokenMatcher::Build(const std::vector<AddedToken>& tokens) {
  nodes_.assign(1, Node{});
  special_.clear();
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (size_t t = 0; t < tokens.size(); ++t) {
    special_.push_back(tokens[t].special);
    const std::string& s = tokens[t].content;
    if (s.empty()) continue;
    first_byte_[static_cast<uint8_t>(s[0])] = true;
    int32_t node = 0;
    for (char c : s) {
      const auto b = static_cast<uint8_t>(c);
      auto& children = nodes_[node].children;
      auto it = std::find_if(children.begin(), children.end(),
                             [b](const auto& ch) { return ch.first == b; });
      if (it != children.end()) {
        node = it->second;
      } else {
        const auto child = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.emplace_back(b, child);
        nodes_.emplace_back();
        node = child;
      }
    }
    // Two added tokens with the same text: the first one listed wins, as in tokenizers.
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(t);
  }
}

bool AddedTokenMatcher::Find(std::string_view text, size_t from, bool parse_special,
                             size_t& begin, size_t& end, int& index) const {
  if (nodes_.size() <= 1) return false;
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (!first_byte_[static_cast<uint8_t>(text[pos])]) continue;
    int32_t node = 0;
    int best = -1;
    size_t best_end = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      const auto b = static_cast<uint8_t>(text[i]);
      const auto& children = nodes_[node].children;
      auto it = std::find_if(children.begin(), children.end(),
                             [b](const auto& ch) { return ch.first == b; });
      if (it == children.end()) break;
      node = it->second;
      const int32_t t = nodes_[node].token;
      if (t >= 0 && (parse_special || !special_[t])) {
        best = t;
        best_end = i + 1;
      }
    }
    if (best >= 0) {
      begin = pos;
      end = best_end;
      index = best;
      return true;
    }
  }
  return false;
}

// ---- Impl ----

absl::Status Tokenizer::Impl::Finish() {
  int32_t size = 0;
  for (const auto& [token, id] : model->vocab()) size = std::max(size, id + 1);
  for (const AddedToken& t : added) {
    if (t.id < 0) return absl::InvalidArgumentError(absl::StrCat("added token \"", t.content,
                                                                 "\" has a negative id"));
    size = std::max(size, t.id + 1);
  }
  token_strings.assign(size, std::string());
  present.assign(size, false);
  special.assign(size, false);
  eog.assign(size, false);
  for (const auto& [token, id] : model->vocab()) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("token \"", token,
                                                               "\" has a negative id"));
    token_strings[id] = token;
    present[id] = true;
  }
  for (const AddedToken& t : added) {
    token_strings[t.id] = t.content;
    present[t.id] = true;
    special[t.id] = t.special;
  }
  token_bytes.resize(size);
  for (int32_t id = 0; id < size; ++id) token_bytes[id] = TokenBytes(token_strings[id], decode);
  auto check = [&](std::optional<int32_t> id, const char* what) -> absl::Status {
    if (id && (*id < 0 || *id >= size || !present[*id])) {
      return absl::InvalidArgumentError(absl::StrCat(what, " id ", *id, " is not in the vocabulary"
                                                     " of ", size, " tokens"));
    }
    return absl::OkStatus();
  };
  BITLOOM_RETURN_IF_ERROR(check(bos, "BOS"));
  BITLOOM_RETURN_IF_ERROR(check(eos, "EOS"));
  for (int32_t id : prefix_ids) BITLOOM_RETURN_IF_ERROR(check(id, "post-processor token"));
  for (int32_t id : suffix_ids) BITLOOM_RETURN_IF_ERROR(check(id, "post-processor token"));
  if (eos) end_of_generation.push_back(*eos);
  // Chat models end a turn with a token of their own, which the metadata often leaves out.
  for (const char* name : {"<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|eom_id|>",
                           "<|endoftext|>"}) {
    if (auto id = model->TokenId(name)) end_of_generation.push_back(*id);
    for (const AddedToken& t : added) {
      if (t.content == name) end_of_generation.push_back(t.id);
    }
  }
  for (int32_t id : end_of_generation) {
    if (id >= 0 && id < size) eog[id] = true;
  }
  matcher.Build(added);
  return absl::OkStatus();
}

// ---- Tokenizer ----

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromSpec(const v1::TokenizerSpec& spec) {
  switch (spec.source_case()) {
    case v1::TokenizerSpec::kHfJson:
      return FromHfJson(spec.hf_json(), spec.hf_config_json());
    case v1::TokenizerSpec::kGguf:
      return FromGguf(spec.gguf());
    case v1::TokenizerSpec::SOURCE_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("TokenizerSpec: neither hf_json nor gguf is set");
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_bos,
                                                       bool parse_special) const {
  if (!unicode::IsValidUtf8(text)) {
    return absl::InvalidArgumentError("text to encode is not valid UTF-8");
  }
  const Impl& m = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (add_bos) ids.insert(ids.end(), m.prefix_ids.begin(), m.prefix_ids.end());
  std::vector<std::string> pieces;
  auto encode_segment = [&](size_t begin, size_t end) -> absl::Status {
    if (end <= begin) return absl::OkStatus();
    const std::string_view segment = text.substr(begin, end - begin);
    std::string normalized;
    std::string_view input = segment;
    if (!m.normalizer.empty()) {
      BITLOOM_ASSIGN_OR_RETURN(normalized, m.normalizer.Apply(segment));
      input = normalized;
    }
    pieces.clear();
    if (m.pre_tokenizer.empty()) {
      pieces.emplace_back(input);
    } else {
      BITLOOM_RETURN_IF_ERROR(m.pre_tokenizer.Apply(input, begin == 0, pieces));
    }
    for (const std::string& piece : pieces) m.model->Encode(piece, ids);
    return absl::OkStatus();
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t begin, end;
    int index;
    if (!m.matcher.Find(text, pos, parse_special, begin, end, index)) break;
    const AddedToken& token = m.added[index];
    if (token.lstrip) {
      while (begin > pos) {
        // Step back over one whole character if it is whitespace.
        size_t start = begin - 1;
        while (start > pos && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
        size_t p = start;
        if (!IsWhitespace(unicode::DecodeUtf8(text, p))) break;
        begin = start;
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t p = end;
        if (!IsWhitespace(unicode::DecodeUtf8(text, p))) break;
        end = p;
      }
    }
    BITLOOM_RETURN_IF_ERROR(encode_segment(pos, begin));
    ids.push_back(token.id);
    pos = end;
  }
  BITLOOM_RETURN_IF_ERROR(encode_segment(pos, text.size()));
  if (add_bos) ids.insert(ids.end(), m.suffix_ids.begin(), m.suffix_ids.end());
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special) const {
  const Impl& m = *impl_;
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || !m.present[id]) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary"
                                                     " of ", vocab_size(), " tokens"));
    }
    if (skip_special && m.special[id]) continue;
    bytes += m.token_bytes[id];
  }
  for (int i = 0; i < m.decode.strip_leading_spaces && !bytes.empty() && bytes[0] == ' '; ++i) {
    bytes.erase(0, 1);
  }
  return unicode::SanitizeUtf8(bytes);
}

std::string_view Tokenizer::TokenToPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return impl_->token_bytes[id];
}

std::string_view Tokenizer::TokenString(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return impl_->token_strings[id];
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token) const {
  for (const AddedToken& t : impl_->added) {
    if (t.content == token) return t.id;
  }
  return impl_->model->TokenId(token);
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->token_strings.size()); }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::adds_bos() const {
  return impl_->bos && std::find(impl_->prefix_ids.begin(), impl_->prefix_ids.end(), *impl_->bos) !=
                           impl_->prefix_ids.end();
}
bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special[id];
}
bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->eog[id];
}
bool Tokenizer::strips_leading_space() const { return impl_->decode.strip_leading_spaces > 0; }

// ---- IncrementalDecoder ----

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

absl::StatusOr<std::string> IncrementalDecoder::Push(int32_t id) {
  if (id < 0 || id >= tokenizer_->vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary"));
  }
  if (skip_special_ && tokenizer_->IsSpecial(id)) return std::string();
  pending_ += tokenizer_->TokenToPiece(id);
  if (at_start_ && !pending_.empty()) {
    // The SentencePiece dummy-prefix space belongs to the start of the text only.
    if (tokenizer_->strips_leading_space() && pending_[0] == ' ') pending_.erase(0, 1);
    at_start_ = false;
  }
  const size_t complete = unicode::CompleteUtf8Prefix(pending_);
  std::string out = unicode::SanitizeUtf8(std::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out = unicode::SanitizeUtf8(pending_);
  pending_.clear();
  at_start_ = true;
  return out;
}

}  // namespace bitloom::formats
