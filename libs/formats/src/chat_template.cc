#include "bitloom/formats/chat_template.h"

#include "bitloom/core/status_macros.h"
#include "bitloom/formats/tokenizer.h"

namespace bitloom::formats {

ChatTemplateOptions ChatTemplateOptionsFor(const Tokenizer& tokenizer) {
  ChatTemplateOptions options;
  if (auto bos = tokenizer.bos_id()) options.bos_token = std::string(tokenizer.TokenString(*bos));
  if (auto eos = tokenizer.eos_id()) options.eos_token = std::string(tokenizer.TokenString(*eos));
  return options;
}

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source) {
  // transformers renders chat templates with trim_blocks and lstrip_blocks on.
  BITLOOM_ASSIGN_OR_RETURN(jinja::Template t,
                           jinja::Template::Parse(source, {.trim_blocks = true,
                                                           .lstrip_blocks = true}));
  return ChatTemplate(std::move(t));
}

absl::StatusOr<std::string> ChatTemplate::Apply(absl::Span<const ChatMessage> messages,
                                                const ChatTemplateOptions& options) const {
  jinja::ValueList list;
  list.reserve(messages.size());
  for (const ChatMessage& m : messages) {
    list.emplace_back(jinja::ValueDict{{"role", jinja::Value(m.role)},
                                       {"content", jinja::Value(m.content)}});
  }
  jinja::Value context{jinja::ValueDict{}};
  context.Set("messages", jinja::Value(std::move(list)));
  context.Set("add_generation_prompt", jinja::Value(options.add_generation_prompt));
  context.Set("bos_token", jinja::Value(options.bos_token));
  context.Set("eos_token", jinja::Value(options.eos_token));
  // transformers always passes these two, as None when the caller has none.
  context.Set("tools", jinja::Value::None());
  context.Set("documents", jinja::Value::None());
  for (const auto& [name, value] : options.extra) context.Set(name, value);
  return template_.Render(context);
}

}  // namespace bitloom::formats
