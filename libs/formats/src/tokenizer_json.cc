// Tokenizer::FromHfJson: maps a Hugging Face tokenizer.json (+ tokenizer_config.json) onto
// Tokenizer::Impl. Anything the pipeline cannot reproduce exactly is refused with UNIMPLEMENTED
// rather than tokenized approximately.
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/tokenizer.h"
#include "pretokenizer_internal.h"
#include "tokenizer_internal.h"

namespace bitloom::formats {
namespace {

using nlohmann::json;

bool IsSet(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && !it->is_null();
}

// tokenizer_config.json writes a token either as a string or as an AddedToken object.
std::optional<std::string> ConfigToken(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

absl::Status ParseDecoder(const json& j, DecodeRules& rules) {
  if (j.is_null()) return absl::OkStatus();
  if (!j.is_object()) return absl::InvalidArgumentError("decoder: expected an object");
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array()) {
      return absl::InvalidArgumentError("decoder Sequence: missing \"decoders\" array");
    }
    for (const json& sub : j["decoders"]) BITLOOM_RETURN_IF_ERROR(ParseDecoder(sub, rules));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    rules.byte_level = true;
  } else if (type == "ByteFallback") {
    rules.byte_fallback = true;
  } else if (type == "Fuse") {
    // Joining tokens is what Decode does anyway.
  } else if (type == "Replace") {
    const json& pattern = j.value("pattern", json());
    if (!pattern.is_object() || !pattern.contains("String") || !pattern["String"].is_string()) {
      return absl::UnimplementedError("decoder Replace: only string patterns are supported");
    }
    rules.replace.emplace_back(pattern["String"].get<std::string>(), j.value("content", ""));
  } else if (type == "Strip") {
    if (j.value("content", " ") != " " || j.value("stop", 0) != 0) {
      return absl::UnimplementedError("decoder Strip: only stripping leading spaces is supported");
    }
    rules.strip_leading_spaces = j.value("start", 0);
  } else if (type == "Metaspace") {
    rules.replace.emplace_back(j.value("replacement", "\xE2\x96\x81"), " ");
    std::string scheme = j.value("prepend_scheme", "");
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    rules.strip_leading_spaces = scheme == "never" ? 0 : 1;
  } else {
    return absl::UnimplementedError(absl::StrCat(
        "decoder type \"", type,
        "\" is not supported (Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace)"));
  }
  return absl::OkStatus();
}

// Reads the special tokens a post-processor adds around a single sequence.
absl::Status ParsePostProcessor(const json& j, Tokenizer::Impl& impl, bool& found) {
  if (j.is_null()) return absl::OkStatus();
  if (!j.is_object()) return absl::InvalidArgumentError("post_processor: expected an object");
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array()) {
      return absl::InvalidArgumentError("post_processor Sequence: missing \"processors\" array");
    }
    for (const json& sub : j["processors"]) {
      BITLOOM_RETURN_IF_ERROR(ParsePostProcessor(sub, impl, found));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();  // only adjusts offsets
  if (type != "TemplateProcessing") {
    return absl::UnimplementedError(absl::StrCat(
        "post_processor type \"", type, "\" is not supported (TemplateProcessing, ByteLevel)"));
  }
  found = true;
  const json& single = j.value("single", json::array());
  const json& specials = j.value("special_tokens", json::object());
  if (!single.is_array() || !specials.is_object()) {
    return absl::InvalidArgumentError("TemplateProcessing: malformed \"single\" or \"special_tokens\"");
  }
  bool after_sequence = false;
  for (const json& item : single) {
    if (item.contains("Sequence")) {
      after_sequence = true;
      continue;
    }
    if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id")) {
      return absl::InvalidArgumentError("TemplateProcessing: unknown item in \"single\"");
    }
    const std::string name = item["SpecialToken"]["id"].get<std::string>();
    auto it = specials.find(name);
    if (it == specials.end() || !it->contains("ids") || !(*it)["ids"].is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("TemplateProcessing: special token \"", name, "\" has no ids"));
    }
    for (const json& id : (*it)["ids"]) {
      (after_sequence ? impl.suffix_ids : impl.prefix_ids).push_back(id.get<int32_t>());
    }
  }
  return absl::OkStatus();
}

absl::Status ParseModel(const json& model, Tokenizer::Impl& impl) {
  if (!model.is_object()) return absl::InvalidArgumentError("tokenizer.json: \"model\" missing");
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") {
    return absl::UnimplementedError(
        absl::StrCat("tokenizer model \"", type, "\" is not supported (BPE)"));
  }
  if (IsSet(model, "dropout") || !model.value("continuing_subword_prefix", json()).is_null() ||
      !model.value("end_of_word_suffix", json()).is_null()) {
    const bool trivial = (!IsSet(model, "continuing_subword_prefix") ||
                          model["continuing_subword_prefix"] == "") &&
                         (!IsSet(model, "end_of_word_suffix") || model["end_of_word_suffix"] == "") &&
                         !IsSet(model, "dropout");
    if (!trivial) {
      return absl::UnimplementedError(
          "BPE dropout, continuing_subword_prefix and end_of_word_suffix are not supported");
    }
  }
  const json& vocab_json = model.value("vocab", json());
  if (!vocab_json.is_object()) return absl::InvalidArgumentError("BPE model: \"vocab\" missing");
  TokenIndex vocab;
  vocab.reserve(vocab_json.size());
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
    if (!it.value().is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat("vocab entry \"", it.key(), "\" has no id"));
    }
    vocab.emplace(it.key(), it.value().get<int32_t>());
  }
  std::vector<std::pair<std::string, std::string>> merges;
  const json& merges_json = model.value("merges", json::array());
  if (!merges_json.is_array()) return absl::InvalidArgumentError("BPE model: bad \"merges\"");
  merges.reserve(merges_json.size());
  for (const json& m : merges_json) {
    if (m.is_string()) {
      // Old form "left right": tokens never contain a raw space here, so the first one separates.
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("merge \"", s, "\" is not \"left right\""));
      }
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return absl::InvalidArgumentError("merge entries must be \"a b\" or [\"a\", \"b\"]");
    }
  }
  BpeOptions options;
  options.byte_fallback = model.value("byte_fallback", false);
  options.ignore_merges = model.value("ignore_merges", false);
  options.fuse_unk = model.value("fuse_unk", false);
  if (IsSet(model, "unk_token")) {
    const std::string unk = model["unk_token"].get<std::string>();
    auto it = vocab.find(unk);
    if (it == vocab.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unk_token \"", unk, "\" is not in the vocab"));
    }
    options.unk_id = it->second;
  }
  BITLOOM_ASSIGN_OR_RETURN(impl.model, BpeModel::FromMerges(std::move(vocab), merges, options));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer::Impl>> ParseHf(std::string_view tokenizer_json,
                                                         std::string_view config_json) {
  json root = json::parse(tokenizer_json.begin(), tokenizer_json.end(), nullptr, false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json is not a JSON object");
  }
  json config = json::object();
  if (!config_json.empty()) {
    config = json::parse(config_json.begin(), config_json.end(), nullptr, false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json is not a JSON object");
    }
  }
  auto impl = std::make_unique<Tokenizer::Impl>();
  BITLOOM_RETURN_IF_ERROR(ParseModel(root.value("model", json()), *impl));
  BITLOOM_ASSIGN_OR_RETURN(impl->normalizer,
                           internal::NormalizerFromJson(root.value("normalizer", json())));
  BITLOOM_ASSIGN_OR_RETURN(impl->pre_tokenizer,
                           internal::PreTokenizerFromJson(root.value("pre_tokenizer", json())));
  BITLOOM_RETURN_IF_ERROR(ParseDecoder(root.value("decoder", json()), impl->decode));

  const json& added = root.value("added_tokens", json::array());
  if (!added.is_array()) return absl::InvalidArgumentError("\"added_tokens\" is not an array");
  for (const json& a : added) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
        !a.contains("content") || !a["content"].is_string()) {
      return absl::InvalidArgumentError("added token without integer \"id\" and string \"content\"");
    }
    AddedToken t;
    t.id = a["id"].get<int32_t>();
    t.content = a["content"].get<std::string>();
    t.special = a.value("special", false);
    t.lstrip = a.value("lstrip", false);
    t.rstrip = a.value("rstrip", false);
    // normalized=true tokens are matched on the raw text too: for the supported normalizers
    // (space replacement) this differs only for added tokens that contain spaces.
    impl->added.push_back(std::move(t));
  }

  bool has_template = false;
  BITLOOM_RETURN_IF_ERROR(
      ParsePostProcessor(root.value("post_processor", json()), *impl, has_template));

  auto lookup = [&](const std::string& s) -> std::optional<int32_t> {
    for (const AddedToken& t : impl->added) {
      if (t.content == s) return t.id;
    }
    return impl->model->TokenId(s);
  };
  if (auto bos = ConfigToken(config, "bos_token")) impl->bos = lookup(*bos);
  if (auto eos = ConfigToken(config, "eos_token")) impl->eos = lookup(*eos);
  if (!impl->bos && impl->prefix_ids.size() == 1) impl->bos = impl->prefix_ids[0];
  if (!has_template) {
    // Without a post-processor, tokenizer_config.json's flags decide (slow-tokenizer behaviour).
    if (config.value("add_bos_token", false) && impl->bos) impl->prefix_ids.push_back(*impl->bos);
    if (config.value("add_eos_token", false) && impl->eos) impl->suffix_ids.push_back(*impl->eos);
  }
  BITLOOM_RETURN_IF_ERROR(impl->Finish());
  return impl;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromHfJson(std::string_view tokenizer_json,
                                                                 std::string_view config_json) {
  // nlohmann::json throws on type mismatches deep inside a malformed file; that must become a
  // Status here, never cross the library boundary.
  try {
    BITLOOM_ASSIGN_OR_RETURN(auto impl, ParseHf(tokenizer_json, config_json));
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed tokenizer.json: ", e.what()));
  }
}

}  // namespace bitloom::formats
