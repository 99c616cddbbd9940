// Jinja evaluator: walks the Node tree against a context and writes the output.
//
// Scoping follows jinja2: a for loop body runs in its own scope (so {% set %} inside a loop does not
// leak out, which is why templates use namespace()), if blocks do not open one. A step budget and an
// output cap bound the work a template can make the process do.
#include <cmath>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "jinja_internal.h"

namespace bitloom::formats::jinja {
namespace {

constexpr size_t kMaxOutputBytes = 64u << 20;
constexpr int64_t kMaxSteps = 50'000'000;
constexpr int kMaxCallDepth = 64;

enum class Flow { kNormal, kBreak, kContinue };

absl::Status AtLine(const absl::Status& s, int line) {
  if (s.ok() || absl::StrContains(s.message(), "chat template")) return s;
  return absl::Status(s.code(), absl::StrCat("chat template line ", line, ": ", s.message()));
}

class Renderer {
 public:
  explicit Renderer(const Value& context) : context_(context) { scopes_.emplace_back(); }

  absl::StatusOr<Flow> Exec(const Node& n, std::string& out) {
    if (++steps_ > kMaxSteps) return absl::ResourceExhaustedError("chat template ran too long");
    switch (n.kind) {
      case Node::Kind::kBody:
        for (const auto& child : n.children) {
          BITLOOM_ASSIGN_OR_RETURN(Flow f, Exec(*child, out));
          if (f != Flow::kNormal) return f;
        }
        return Flow::kNormal;
      case Node::Kind::kText:
        return Write(n.name, out, n.line);
      case Node::Kind::kOutput: {
        BITLOOM_ASSIGN_OR_RETURN(Value v, Eval(*n.a));
        return Write(v.ToString(), out, n.line);
      }
      case Node::Kind::kIf: {
        const size_t pairs = n.children.size() / 2;
        for (size_t i = 0; i < pairs; ++i) {
          BITLOOM_ASSIGN_OR_RETURN(Value cond, Eval(*n.children[2 * i]));
          if (cond.Truthy()) return Exec(*n.children[2 * i + 1], out);
        }
        if (n.children.size() % 2 == 1) return Exec(*n.children.back(), out);
        return Flow::kNormal;
      }
      case Node::Kind::kFor:
        return ExecFor(n, out);
      case Node::Kind::kSet: {
        Value v;
        if (n.a) {
          BITLOOM_ASSIGN_OR_RETURN(v, Eval(*n.a));
        } else {
          std::string captured;
          BITLOOM_ASSIGN_OR_RETURN(Flow f, Exec(*n.c, captured));
          (void)f;
          v = Value(std::move(captured));
        }
        if (n.name.empty()) {
          scopes_.back()[n.targets[0]] = std::move(v);
          return Flow::kNormal;
        }
        Value target = Lookup(n.targets[0]);
        if (!target.is_namespace()) {
          return AtLine(absl::InvalidArgumentError(absl::StrCat(
                            "cannot assign attribute '", n.name, "' on '", n.targets[0],
                            "': not a namespace")),
                        n.line);
        }
        target.Set(n.name, std::move(v));
        return Flow::kNormal;
      }
      case Node::Kind::kMacro:
        scopes_.back()[n.name] = MakeMacro(n);
        return Flow::kNormal;
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
      default:
        return AtLine(absl::InternalError("expression node in statement position"), n.line);
    }
  }

 private:
  absl::StatusOr<Flow> Write(const std::string& s, std::string& out, int line) {
    if (out.size() + s.size() > kMaxOutputBytes) {
      return AtLine(absl::ResourceExhaustedError("rendered output exceeds 64 MiB"), line);
    }
    out += s;
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> ExecFor(const Node& n, std::string& out) {
    BITLOOM_ASSIGN_OR_RETURN(Value iterable, Eval(*n.a));
    if (iterable.is_none()) {
      return AtLine(absl::InvalidArgumentError("'NoneType' object is not iterable"), n.line);
    }
    auto items_or = Iterate(iterable);
    if (!items_or.ok()) return AtLine(items_or.status(), n.line);
    ValueList items = std::move(items_or).value();
    scopes_.emplace_back();
    auto bind = [&](const Value& item) -> absl::Status {
      if (n.targets.size() == 1) {
        scopes_.back()[n.targets[0]] = item;
        return absl::OkStatus();
      }
      if (!item.is_list() || item.AsList().size() != n.targets.size()) {
        return AtLine(absl::InvalidArgumentError(absl::StrCat(
                          "cannot unpack into ", n.targets.size(), " loop variables")),
                      n.line);
      }
      for (size_t i = 0; i < n.targets.size(); ++i) scopes_.back()[n.targets[i]] = item.AsList()[i];
      return absl::OkStatus();
    };
    if (n.b) {  // {% for x in xs if cond %}: filter first, so loop.* counts kept items only
      ValueList kept;
      for (const Value& item : items) {
        BITLOOM_RETURN_IF_ERROR(bind(item));
        BITLOOM_ASSIGN_OR_RETURN(Value keep, Eval(*n.b));
        if (keep.Truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    const auto len = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < len; ++i) {
      BITLOOM_RETURN_IF_ERROR(bind(items[i]));
      ValueDict loop = {{"index", Value(i + 1)},
                        {"index0", Value(i)},
                        {"revindex", Value(len - i)},
                        {"revindex0", Value(len - i - 1)},
                        {"first", Value(i == 0)},
                        {"last", Value(i == len - 1)},
                        {"length", Value(len)},
                        {"previtem", i > 0 ? items[i - 1] : Value()},
                        {"nextitem", i + 1 < len ? items[i + 1] : Value()}};
      const int64_t index = i;
      loop.emplace_back("cycle", Value::MakeFunction(
                                     [index](const ValueList& args, const KwArgs&) -> absl::StatusOr<Value> {
                                       if (args.empty()) return absl::InvalidArgumentError("cycle() needs arguments");
                                       return args[index % static_cast<int64_t>(args.size())];
                                     }));
      scopes_.back()["loop"] = Value(std::move(loop));
      BITLOOM_ASSIGN_OR_RETURN(Flow f, Exec(*n.c, out));
      if (f == Flow::kBreak) break;
    }
    scopes_.pop_back();
    if (len == 0 && n.d) return Exec(*n.d, out);
    return Flow::kNormal;
  }

  Value MakeMacro(const Node& n) {
    const Node* node = &n;
    return Value::MakeFunction([this, node](const ValueList& args, const KwArgs& kwargs) -> absl::StatusOr<Value> {
      if (++call_depth_ > kMaxCallDepth) {
        --call_depth_;
        return absl::ResourceExhaustedError("macro calls nested too deeply");
      }
      std::unordered_map<std::string, Value> scope;
      for (size_t i = 0; i < node->targets.size(); ++i) {
        Value v;
        if (i < args.size()) {
          v = args[i];
        } else if (node->children[i]) {
          BITLOOM_ASSIGN_OR_RETURN(v, Eval(*node->children[i]));
        }
        scope[node->targets[i]] = v;
      }
      for (const auto& [k, v] : kwargs) scope[k] = v;
      scopes_.push_back(std::move(scope));
      std::string out;
      auto flow = Exec(*node->c, out);
      scopes_.pop_back();
      --call_depth_;
      if (!flow.ok()) return flow.status();
      return Value(std::move(out));
    });
  }

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto hit = it->find(name);
      if (hit != it->end()) return hit->second;
    }
    if (const Value* v = context_.Find(name)) return *v;
    return BuiltinGlobal(name);
  }

  absl::StatusOr<Value> Eval(const Node& n) {
    auto v = EvalInner(n);
    if (!v.ok()) return AtLine(v.status(), n.line);
    return v;
  }

  absl::Status EvalArgs(const Node& n, ValueList& args, KwArgs& kwargs) {
    for (size_t i = 0; i < n.children.size(); ++i) {
      BITLOOM_ASSIGN_OR_RETURN(Value v, Eval(*n.children[i]));
      args.push_back(std::move(v));
    }
    for (const auto& [k, e] : n.kwargs) {
      BITLOOM_ASSIGN_OR_RETURN(Value v, Eval(*e));
      kwargs.emplace_back(k, std::move(v));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Value> EvalInner(const Node& n) {
    if (++steps_ > kMaxSteps) return absl::ResourceExhaustedError("chat template ran too long");
    switch (n.kind) {
      case Node::Kind::kLiteral:
        return n.value;
      case Node::Kind::kName:
        return Lookup(n.name);
      case Node::Kind::kList: {
        ValueList items;
        for (const auto& c : n.children) {
          BITLOOM_ASSIGN_OR_RETURN(Value v, Eval(*c));
          items.push_back(std::move(v));
        }
        return Value(std::move(items));
      }
      case Node::Kind::kDict: {
        Value d{ValueDict{}};
        for (size_t i = 0; i < n.keys.size(); ++i) {
          BITLOOM_ASSIGN_OR_RETURN(Value v, Eval(*n.children[i]));
          d.Set(n.keys[i], std::move(v));
        }
        return d;
      }
      case Node::Kind::kGetAttr: {
        BITLOOM_ASSIGN_OR_RETURN(Value obj, Eval(*n.a));
        if (obj.is_undefined()) {
          return absl::InvalidArgumentError(absl::StrCat("'", n.name, "' of an undefined value"));
        }
        if (obj.is_dict()) {
          const Value* v = obj.Find(n.name);
          return v ? *v : Value();
        }
        return Value();
      }
      case Node::Kind::kGetItem: {
        BITLOOM_ASSIGN_OR_RETURN(Value obj, Eval(*n.a));
        BITLOOM_ASSIGN_OR_RETURN(Value key, Eval(*n.b));
        return GetItem(obj, key);
      }
      case Node::Kind::kSlice: {
        BITLOOM_ASSIGN_OR_RETURN(Value obj, Eval(*n.a));
        Value parts[3];
        for (int i = 0; i < 3; ++i) {
          if (n.children[i]) {
            BITLOOM_ASSIGN_OR_RETURN(parts[i], Eval(*n.children[i]));
          }
        }
        return Slice(obj, parts[0], parts[1], parts[2]);
      }
      case Node::Kind::kCall: {
        ValueList args;
        KwArgs kwargs;
        if (n.a->kind == Node::Kind::kGetAttr) {
          BITLOOM_ASSIGN_OR_RETURN(Value obj, Eval(*n.a->a));
          BITLOOM_RETURN_IF_ERROR(EvalArgs(n, args, kwargs));
          bool found = false;
          BITLOOM_ASSIGN_OR_RETURN(Value r, CallMethod(obj, n.a->name, args, kwargs, found));
          if (found) return r;
          const Value* member = obj.Find(n.a->name);
          if (member && member->kind() == Value::Kind::kFunction) {
            return member->AsFunction()(args, kwargs);
          }
          return absl::InvalidArgumentError(absl::StrCat("no method '", n.a->name, "' on '",
                                                         obj.Repr().substr(0, 40), "'"));
        }
        BITLOOM_ASSIGN_OR_RETURN(Value fn, Eval(*n.a));
        if (fn.kind() != Value::Kind::kFunction) {
          return absl::InvalidArgumentError(
              absl::StrCat("'", n.a->kind == Node::Kind::kName ? n.a->name : "expression",
                           "' is not callable"));
        }
        BITLOOM_RETURN_IF_ERROR(EvalArgs(n, args, kwargs));
        return fn.AsFunction()(args, kwargs);
      }
      case Node::Kind::kFilter: {
        BITLOOM_ASSIGN_OR_RETURN(Value v, Eval(*n.a));
        ValueList args;
        KwArgs kwargs;
        BITLOOM_RETURN_IF_ERROR(EvalArgs(n, args, kwargs));
        return ApplyFilter(n.name, v, args, kwargs);
      }
      case Node::Kind::kTest: {
        BITLOOM_ASSIGN_OR_RETURN(Value v, Eval(*n.a));
        ValueList args;
        KwArgs kwargs;
        BITLOOM_RETURN_IF_ERROR(EvalArgs(n, args, kwargs));
        BITLOOM_ASSIGN_OR_RETURN(bool r, ApplyTest(n.name, v, args));
        return Value(r != n.negated);
      }
      case Node::Kind::kUnary: {
        BITLOOM_ASSIGN_OR_RETURN(Value v, Eval(*n.a));
        if (n.op == "not") return Value(!v.Truthy());
        if (v.kind() == Value::Kind::kBool) v = Value(int64_t{v.AsBool()});
        if (v.kind() == Value::Kind::kInt) return n.op == "-" ? Value(-v.AsInt()) : v;
        if (v.kind() == Value::Kind::kFloat) return n.op == "-" ? Value(-v.AsDouble()) : v;
        return absl::InvalidArgumentError(absl::StrCat("bad operand for unary ", n.op));
      }
      case Node::Kind::kConditional: {
        BITLOOM_ASSIGN_OR_RETURN(Value cond, Eval(*n.a));
        if (cond.Truthy()) return Eval(*n.b);
        if (n.c) return Eval(*n.c);
        return Value();
      }
      case Node::Kind::kBinary:
        return EvalBinary(n);
      default:
        return absl::InternalError("statement node in expression position");
    }
  }

  absl::StatusOr<Value> EvalBinary(const Node& n) {
    const std::string& op = n.op;
    BITLOOM_ASSIGN_OR_RETURN(Value l, Eval(*n.a));
    if (op == "and") return l.Truthy() ? Eval(*n.b) : l;
    if (op == "or") return l.Truthy() ? l : Eval(*n.b);
    BITLOOM_ASSIGN_OR_RETURN(Value r, Eval(*n.b));
    if (op == "==") return Value(Equals(l, r));
    if (op == "!=") return Value(!Equals(l, r));
    if (op == "~") return Value(l.ToString() + r.ToString());
    if (op == "in" || op == "not in") {
      BITLOOM_ASSIGN_OR_RETURN(bool in, ApplyTest("in", l, {r}));
      return Value(in == (op == "in"));
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      BITLOOM_ASSIGN_OR_RETURN(bool b, ApplyTest(op, l, {r}));
      return Value(b);
    }
    if (l.is_undefined() || r.is_undefined()) {
      return absl::InvalidArgumentError(absl::StrCat("undefined value in '", op, "'"));
    }
    if (op == "+") {
      if (l.is_string() && r.is_string()) return Value(l.AsString() + r.AsString());
      if (l.is_list() && r.is_list()) {
        ValueList out = l.AsList();
        out.insert(out.end(), r.AsList().begin(), r.AsList().end());
        return Value(std::move(out));
      }
    }
    if (op == "*") {
      // Sequence repetition: "=" * 10.
      const Value* seq = l.is_string() || l.is_list() ? &l : r.is_string() || r.is_list() ? &r : nullptr;
      const Value* count = seq == &l ? &r : &l;
      if (seq && count->kind() == Value::Kind::kInt) {
        const int64_t k = std::max<int64_t>(0, count->AsInt());
        if (k * static_cast<int64_t>(seq->is_string() ? seq->AsString().size() : seq->AsList().size()) >
            static_cast<int64_t>(kMaxOutputBytes)) {
          return absl::ResourceExhaustedError("repetition result too large");
        }
        if (seq->is_string()) {
          std::string out;
          for (int64_t i = 0; i < k; ++i) out += seq->AsString();
          return Value(std::move(out));
        }
        ValueList out;
        for (int64_t i = 0; i < k; ++i) out.insert(out.end(), seq->AsList().begin(), seq->AsList().end());
        return Value(std::move(out));
      }
    }
    auto numeric = [](Value v) {
      return v.kind() == Value::Kind::kBool ? Value(int64_t{v.AsBool()}) : v;
    };
    l = numeric(l);
    r = numeric(r);
    if (!l.is_number() || !r.is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("unsupported operand types for '", op, "': ",
                                                     l.Repr().substr(0, 30), " and ",
                                                     r.Repr().substr(0, 30)));
    }
    const bool ints = l.kind() == Value::Kind::kInt && r.kind() == Value::Kind::kInt;
    const double x = l.AsDouble(), y = r.AsDouble();
    if (op == "+") return ints ? Value(l.AsInt() + r.AsInt()) : Value(x + y);
    if (op == "-") return ints ? Value(l.AsInt() - r.AsInt()) : Value(x - y);
    if (op == "*") return ints ? Value(l.AsInt() * r.AsInt()) : Value(x * y);
    if (op == "**") {
      if (ints && r.AsInt() >= 0) {
        int64_t out = 1;
        for (int64_t i = 0; i < r.AsInt() && i < 64; ++i) out *= l.AsInt();
        return Value(out);
      }
      return Value(std::pow(x, y));
    }
    if (y == 0) return absl::InvalidArgumentError("division by zero");
    if (op == "/") return Value(x / y);
    if (op == "//") {
      if (ints) {
        int64_t q = l.AsInt() / r.AsInt();
        if ((l.AsInt() % r.AsInt() != 0) && ((l.AsInt() < 0) != (r.AsInt() < 0))) --q;
        return Value(q);
      }
      return Value(std::floor(x / y));
    }
    if (op == "%") {
      if (ints) {
        int64_t m = l.AsInt() % r.AsInt();
        if (m != 0 && ((m < 0) != (r.AsInt() < 0))) m += r.AsInt();
        return Value(m);
      }
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value(m);
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown operator '", op, "'"));
  }

  const Value& context_;
  std::vector<std::unordered_map<std::string, Value>> scopes_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
};

}  // namespace

absl::StatusOr<std::string> RenderTemplate(const Node& root, const Value& context) {
  if (!context.is_dict()) return absl::InvalidArgumentError("template context must be a dict");
  Renderer renderer(context);
  std::string out;
  BITLOOM_ASSIGN_OR_RETURN(Flow f, renderer.Exec(root, out));
  (void)f;
  return out;
}

Template::Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;
Template::~Template() = default;

absl::StatusOr<Template> Template::Parse(std::string_view source, TemplateOptions options) {
  Template t;
  BITLOOM_ASSIGN_OR_RETURN(t.root_, ParseTemplate(source, options));
  return t;
}

absl::StatusOr<std::string> Template::Render(const Value& context) const {
  return RenderTemplate(*root_, context);
}

}  // namespace bitloom::formats::jinja
