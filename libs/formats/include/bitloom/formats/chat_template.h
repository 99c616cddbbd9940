// ChatTemplate: renders a model's own Jinja chat template for a conversation, as Hugging Face
// transformers' apply_chat_template does (trim_blocks and lstrip_blocks on, `raise_exception`
// available, `messages`, `add_generation_prompt`, `bos_token` and `eos_token` defined).
//
// The template source comes from GGUF `tokenizer.chat_template` or tokenizer_config.json. Parsing
// happens once; a template the interpreter cannot handle, or one that raises, is a Status error.
// Immutable after Parse: Apply is const and thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/formats/jinja.h"

namespace bitloom::formats {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

struct ChatTemplateOptions {
  // End with the header that opens the assistant's turn, so the model writes the reply.
  bool add_generation_prompt = true;
  // The special tokens' text, as the template writes them ("<|begin_of_text|>", "<bos>", ...).
  std::string bos_token;
  std::string eos_token;
  // Further template variables (for example "enable_thinking" for Qwen3), as strings or booleans.
  std::vector<std::pair<std::string, jinja::Value>> extra;
};

// bos_token/eos_token set from the tokenizer's BOS and EOS.
ChatTemplateOptions ChatTemplateOptionsFor(const Tokenizer& tokenizer);

class ChatTemplate {
 public:
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source);

  absl::StatusOr<std::string> Apply(absl::Span<const ChatMessage> messages,
                                    const ChatTemplateOptions& options) const;

 private:
  explicit ChatTemplate(jinja::Template t) : template_(std::move(t)) {}
  jinja::Template template_;
};

}  // namespace bitloom::formats
