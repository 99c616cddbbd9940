// The Jinja parse tree shared by the parser (jinja_parser.cc) and the evaluator (jinja_eval.cc).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bitloom/formats/jinja.h"

namespace bitloom::formats::jinja {

// One node type for both expressions and statements keeps the tree simple to build and walk; the
// fields a kind uses are listed beside it.
struct Node {
  enum class Kind {
    // Expressions.
    kLiteral,      // value
    kName,         // name
    kGetAttr,      // a . name
    kGetItem,      // a [ b ]
    kSlice,        // a [ b? : c? : d? ]  (children[1..3], null where omitted)
    kCall,         // a ( children[1..] ) with kwargs
    kFilter,       // a | name ( children[1..] ) with kwargs
    kTest,         // a is [not] name ( children[1..] ), negated
    kUnary,        // op a
    kBinary,       // a op b
    kConditional,  // b if a else c
    kList,         // [ children ]
    kDict,         // { keys[i] : children[i] }
    // Statements.
    kBody,      // children in order
    kText,      // name = the text
    kOutput,    // {{ a }}
    kIf,        // children: cond0, body0, cond1, body1, ..., [else body] (odd count -> else)
    kFor,       // targets; a = iterable, b = filter (may be null), c = body, d = else (may be null)
    kSet,       // targets[0] (and name = attribute for ns.attr); a = value or, for a block set, c
    kMacro,     // name, targets = parameters, children = defaults (null where none), c = body
    kBreak,
    kContinue,
  };

  Kind kind;
  int line = 0;
  Value value;
  std::string name;
  std::string op;
  bool negated = false;
  std::vector<std::string> targets;
  std::vector<std::string> keys;
  std::vector<std::unique_ptr<Node>> children;
  std::vector<std::pair<std::string, std::unique_ptr<Node>>> kwargs;
  std::unique_ptr<Node> a, b, c, d;

  Node(Kind k, int l) : kind(k), line(l) {}
};

absl::StatusOr<std::unique_ptr<Node>> ParseTemplate(std::string_view source,
                                                    const TemplateOptions& options);
absl::StatusOr<std::string> RenderTemplate(const Node& root, const Value& context);

}  // namespace bitloom::formats::jinja

namespace bitloom::formats::jinja {

// Built-ins (jinja_builtins.cc). Errors carry no line number; the evaluator adds it.
absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& v, const ValueList& args,
                                  const KwArgs& kwargs);
absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& v, const ValueList& args);
// Python methods of str, list and dict ("a b".split(), d.items(), ...). `found` is false when
// `obj` has no method `name`.
absl::StatusOr<Value> CallMethod(const Value& obj, std::string_view name, const ValueList& args,
                                 const KwArgs& kwargs, bool& found);
// range, namespace, dict, raise_exception, strftime_now; undefined for other names.
Value BuiltinGlobal(std::string_view name);
// Python's len(): code points of a string, items of a list or dict.
absl::StatusOr<int64_t> Length(const Value& v);
// The items a for loop visits: list items, dict keys, string characters.
absl::StatusOr<ValueList> Iterate(const Value& v);
// Python slicing of a list or string (by code points).
absl::StatusOr<Value> Slice(const Value& v, const Value& start, const Value& stop, const Value& step);
// Python subscription: list[int], dict[key], str[int]; undefined when out of range or missing.
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);

}  // namespace bitloom::formats::jinja
