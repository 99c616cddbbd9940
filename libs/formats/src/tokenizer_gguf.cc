// Tokenizer::FromGguf: maps GGUF `tokenizer.ggml.*` metadata onto Tokenizer::Impl so that a GGUF model
// tokenizes exactly as the tokenizer.json it was converted from.
//
// "gpt2" models are byte-level BPE with explicit merges; `pre` names the pre-tokenizer the converter
// recognised (llama.cpp's names), which fixes the regexes. "llama" models are SentencePiece BPE: the
// merges are implied by the scores (a pair merges into the highest-scoring normal token it forms),
// spaces become U+2581, and characters outside the vocabulary fall back to <0xNN> byte tokens.
// Token types follow llama.cpp: 3 (control) and 2 (unknown) become special added tokens, 4
// (user-defined) non-special added tokens, which are matched in raw text before BPE.
#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/tokenizer.h"
#include "bitloom/formats/unicode.h"
#include "tokenizer_internal.h"

namespace bitloom::formats {
namespace {

enum TokenType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct PreSpec {
  std::vector<std::string_view> names;
  // Split patterns applied in order (each Isolated), then the byte-level mapping.
  std::vector<std::string_view> splits;
  bool digits_first = false;  // Digits(individual_digits) before the GPT-2 ByteLevel regex
  bool ignore_merges = false;
};

// llama.cpp's tokenizer.ggml.pre names for the byte-level families Bitloom supports, and the
// tokenizer.json pre-tokenizer each stands for.
const std::vector<PreSpec>& PreSpecs() {
  static const auto* specs = new std::vector<PreSpec>{
      // GPT-2: ByteLevel(use_regex=true).
      {{"default", "gpt-2", "gpt2", "phi-2", "roberta-bpe"}, {kGpt2Pattern}, false, false},
      // Llama 3: Split(llama3 pattern) + ByteLevel(use_regex=false), model ignore_merges=true.
      {{"llama-bpe", "llama3", "smaug-bpe"}, {kLlama3Pattern}, false, true},
      // Qwen2/2.5/3: Split(qwen2 pattern) + ByteLevel(use_regex=false).
      {{"qwen2", "deepseek-r1-qwen"}, {kQwen2Pattern}, false, false},
      // SmolLM/StarCoder: Digits(individual_digits=true) + ByteLevel(use_regex=true).
      {{"smollm", "starcoder", "refact"}, {kGpt2Pattern}, true, false},
  };
  return *specs;
}

absl::Status BuildBytePairPipeline(const v1::GgufTokenizer& g, Tokenizer::Impl& impl,
                                   BpeOptions& options) {
  const std::string pre = g.pre().empty() ? "default" : g.pre();
  const PreSpec* spec = nullptr;
  for (const PreSpec& s : PreSpecs()) {
    for (std::string_view n : s.names) {
      if (n == pre) spec = &s;
    }
  }
  if (spec == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "GGUF tokenizer.ggml.pre \"", pre,
        "\" is not supported (default, gpt2, llama-bpe, llama3, qwen2, smollm, starcoder, ...)"));
  }
  if (spec->digits_first) {
    PreTokenizer::Step digits;
    digits.kind = PreTokenizer::Step::Kind::kDigits;
    BITLOOM_ASSIGN_OR_RETURN(digits.pattern, Regex::Compile(R"(\p{N})"));
    digits.behavior = SplitBehavior::kIsolated;
    impl.pre_tokenizer.Add(std::move(digits));
  }
  const bool gpt2_in_byte_level = spec->splits.size() == 1 && spec->splits[0] == kGpt2Pattern;
  if (!gpt2_in_byte_level) {
    for (std::string_view pattern : spec->splits) {
      PreTokenizer::Step split;
      split.kind = PreTokenizer::Step::Kind::kSplit;
      BITLOOM_ASSIGN_OR_RETURN(split.pattern, Regex::Compile(pattern));
      split.behavior = SplitBehavior::kIsolated;
      impl.pre_tokenizer.Add(std::move(split));
    }
  }
  PreTokenizer::Step byte_level;
  byte_level.kind = PreTokenizer::Step::Kind::kByteLevel;
  byte_level.add_prefix_space = false;
  if (gpt2_in_byte_level) {
    BITLOOM_ASSIGN_OR_RETURN(byte_level.pattern, Regex::Compile(kGpt2Pattern));
  }
  impl.pre_tokenizer.Add(std::move(byte_level));
  impl.decode.byte_level = true;
  options.ignore_merges = spec->ignore_merges;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const v1::GgufTokenizer& g) {
  const int n = g.tokens_size();
  if (n == 0) return absl::InvalidArgumentError("GGUF tokenizer.ggml.tokens is empty");
  if (g.token_types_size() != 0 && g.token_types_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF tokenizer.ggml.token_type has ",
                                                   g.token_types_size(), " entries for ", n,
                                                   " tokens"));
  }
  auto type_of = [&](int id) { return g.token_types_size() ? g.token_types(id) : kNormal; };
  auto impl = std::make_unique<Tokenizer::Impl>();
  TokenIndex vocab;
  vocab.reserve(n);
  for (int id = 0; id < n; ++id) {
    if (!unicode::IsValidUtf8(g.tokens(id))) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF token ", id, " is not valid UTF-8"));
    }
    vocab.emplace(g.tokens(id), id);  // a duplicate keeps its first id
    const int type = type_of(id);
    if (type == kControl || type == kUnknown || type == kUserDefined) {
      AddedToken t;
      t.id = id;
      t.content = g.tokens(id);
      t.special = type != kUserDefined;
      impl->added.push_back(std::move(t));
    }
  }
  BpeOptions options;
  if (g.has_unknown_token_id()) options.unk_id = static_cast<int32_t>(g.unknown_token_id());
  if (g.has_bos_token_id()) impl->bos = static_cast<int32_t>(g.bos_token_id());
  if (g.has_eos_token_id()) impl->eos = static_cast<int32_t>(g.eos_token_id());
  bool add_bos;
  if (g.model() == "gpt2") {
    BITLOOM_RETURN_IF_ERROR(BuildBytePairPipeline(g, *impl, options));
    std::vector<std::pair<std::string, std::string>> merges;
    merges.reserve(g.merges_size());
    for (int i = 0; i < g.merges_size(); ++i) {
      const std::string& m = g.merges(i);
      const size_t space = m.find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("GGUF merge ", i, " \"", m,
                                                       "\" is not \"left right\""));
      }
      merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
    BITLOOM_ASSIGN_OR_RETURN(impl->model,
                             BpeModel::FromMerges(std::move(vocab), merges, options));
    add_bos = g.has_add_bos_token() ? g.add_bos_token() : false;
  } else if (g.model() == "llama") {
    if (g.scores_size() != n) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF tokenizer.ggml.scores has ",
                                                     g.scores_size(), " entries for ", n,
                                                     " tokens"));
    }
    const bool add_space_prefix = g.has_add_space_prefix() ? g.add_space_prefix() : true;
    // Spaces become U+2581; with a dummy prefix, one more goes in front of the text, the way
    // tokenizer.json's Metaspace(prepend_scheme="first", split=false) does it.
    PreTokenizer::Step metaspace;
    metaspace.kind = PreTokenizer::Step::Kind::kMetaspace;
    metaspace.replacement = std::string(unicode::kSpaceMarker);
    metaspace.prepend_scheme = add_space_prefix ? "first" : "never";
    metaspace.split = false;
    impl->pre_tokenizer.Add(std::move(metaspace));
    impl->decode.replace.emplace_back(std::string(unicode::kSpaceMarker), " ");
    impl->decode.byte_fallback = true;
    impl->decode.strip_leading_spaces = add_space_prefix ? 1 : 0;
    options.byte_fallback = true;
    options.fuse_unk = true;
    std::vector<float> scores(g.scores().begin(), g.scores().end());
    std::vector<bool> eligible(n);
    for (int id = 0; id < n; ++id) eligible[id] = type_of(id) == kNormal;
    BITLOOM_ASSIGN_OR_RETURN(impl->model,
                             BpeModel::FromScores(std::move(vocab), scores, eligible, options));
    add_bos = g.has_add_bos_token() ? g.add_bos_token() : true;
  } else {
    return absl::UnimplementedError(absl::StrCat("GGUF tokenizer.ggml.model \"", g.model(),
                                                 "\" is not supported (gpt2, llama)"));
  }
  if (add_bos) {
    if (!impl->bos) return absl::InvalidArgumentError("GGUF add_bos_token is set but no BOS id");
    impl->prefix_ids.push_back(*impl->bos);
  }
  if (g.has_add_eos_token() && g.add_eos_token()) {
    if (!impl->eos) return absl::InvalidArgumentError("GGUF add_eos_token is set but no EOS id");
    impl->suffix_ids.push_back(*impl->eos);
  }
  for (uint32_t id : g.eot_token_ids()) impl->end_of_generation.push_back(static_cast<int32_t>(id));
  BITLOOM_RETURN_IF_ERROR(impl->Finish());
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

}  // namespace bitloom::formats
