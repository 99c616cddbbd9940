// A small Jinja2 interpreter for chat templates: the subset that Hugging Face chat templates use,
// rendering byte-for-byte what Python's jinja2 renders for them.
//
// Template::Parse lexes and parses once (whitespace control "-", trim_blocks and lstrip_blocks as
// transformers' apply_chat_template configures them); Render evaluates the tree against a context.
// Supported: {{ }}, {% if/elif/else %}, {% for x in xs [if c] %} with loop.* and {% else %},
// {% set %} (names, namespace attributes, blocks), {% macro %}, break/continue, comments; literals,
// lists, dicts, attribute/item access, slices with steps, calls with keyword arguments, filters
// and tests, `+ - * / // % ** ~`, comparisons, `in`, `and/or/not`, `a if c else b`; Python string,
// list and dict methods (strip, split, startswith, items, get, ...). Unknown names are undefined,
// as in Jinja; everything else that jinja2 would reject is a Status error, never a crash. Limits on
// nesting, loop length and output size keep a hostile template from exhausting the process.
//
// A parsed Template is immutable: Render is const and thread-safe. Values share lists and dicts by
// reference (as Python does), so a Value must not be mutated by two renders at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace bitloom::formats::jinja {

class Value;
using ValueList = std::vector<Value>;
// Insertion-ordered, like a Python dict.
using ValueDict = std::vector<std::pair<std::string, Value>>;
using KwArgs = std::vector<std::pair<std::string, Value>>;
using Function = std::function<absl::StatusOr<Value>(const ValueList& args, const KwArgs& kwargs)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // undefined
  static Value None();
  Value(bool b);  // NOLINT: literals convert implicitly, as in Python
  Value(int v) : Value(static_cast<int64_t>(v)) {}  // NOLINT
  Value(int64_t v);                                  // NOLINT
  Value(double v);                                   // NOLINT
  Value(std::string s);                              // NOLINT
  Value(const char* s) : Value(std::string(s)) {}    // NOLINT
  Value(ValueList list);                             // NOLINT
  Value(ValueDict dict);                             // NOLINT
  static Value MakeFunction(Function fn);
  // A jinja2 namespace(): a dict whose attributes can be assigned with {% set ns.x = ... %}.
  static Value MakeNamespace(ValueDict dict);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kDict && namespace_; }

  bool AsBool() const { return b_; }
  int64_t AsInt() const { return i_; }
  double AsDouble() const { return kind_ == Kind::kInt ? static_cast<double>(i_) : d_; }
  const std::string& AsString() const { return *s_; }
  ValueList& AsList() const { return *list_; }
  ValueDict& AsDict() const { return *dict_; }
  const Function& AsFunction() const { return *fn_; }

  // Python truthiness.
  bool Truthy() const;
  // Dict lookup; nullptr when absent or not a dict.
  const Value* Find(std::string_view key) const;
  // Dict insert-or-assign.
  void Set(const std::string& key, Value v);
  // str(value) as jinja2 prints it: None -> "None", True -> "True", 1.0 -> "1.0", lists as Python
  // repr; undefined -> "".
  std::string ToString() const;
  // Python repr (strings quoted), used inside list/dict printing.
  std::string Repr() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool namespace_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<ValueList> list_;
  std::shared_ptr<ValueDict> dict_;
  std::shared_ptr<const Function> fn_;
};

// Python equality (1 == 1.0, lists and dicts element-wise).
bool Equals(const Value& a, const Value& b);

struct TemplateOptions {
  bool trim_blocks = true;    // drop the first newline after a block tag
  bool lstrip_blocks = true;  // drop spaces/tabs before a block tag at the start of a line
};

struct Node;  // parse tree, private to the implementation

class Template {
 public:
  static absl::StatusOr<Template> Parse(std::string_view source, TemplateOptions options = {});
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;
  ~Template();

  // `context` must be a dict; its entries are the template's global names (beside the built-in
  // range, namespace, dict and raise_exception).
  absl::StatusOr<std::string> Render(const Value& context) const;

 private:
  Template();
  std::unique_ptr<Node> root_;
};

}  // namespace bitloom::formats::jinja
