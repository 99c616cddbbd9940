// Jinja built-ins: the filters, tests, globals and Python methods that chat templates use, each with
// the behaviour of jinja2 3.1 / CPython so that rendered text matches byte for byte.
#include <algorithm>
#include <cmath>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/unicode.h"
#include "jinja_internal.h"

namespace bitloom::formats::jinja {
namespace {

constexpr int64_t kMaxRange = 1 << 20;  // range() longer than this is refused

absl::Status TypeError(std::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

std::u32string ToU32(const std::string& s) {
  std::u32string out;
  for (size_t pos = 0; pos < s.size();) out.push_back(unicode::DecodeUtf8(s, pos));
  return out;
}

std::string FromU32(std::u32string_view s) {
  std::string out;
  for (char32_t c : s) unicode::AppendUtf8(c, out);
  return out;
}

// str.isspace() for the characters that occur in practice.
bool IsPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string Strip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::u32string u = ToU32(s);
  std::u32string set;
  const bool use_set = chars != nullptr && chars->is_string();
  if (use_set) set = ToU32(chars->AsString());
  auto strip_it = [&](char32_t c) {
    return use_set ? set.find(c) != std::u32string::npos : IsPySpace(c);
  };
  size_t b = 0, e = u.size();
  if (left) {
    while (b < e && strip_it(u[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(u[e - 1])) --e;
  }
  return FromU32(std::u32string_view(u).substr(b, e - b));
}

char32_t AsciiUpper(char32_t c) { return c >= 'a' && c <= 'z' ? c - 32 : c; }
char32_t AsciiLower(char32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
bool IsAlpha(char32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0xC0; }

std::string MapChars(const std::string& s, char32_t (*f)(char32_t)) {
  std::u32string u = ToU32(s);
  for (char32_t& c : u) c = f(c);
  return FromU32(u);
}

std::string Title(const std::string& s) {
  std::u32string u = ToU32(s);
  bool prev_alpha = false;
  for (char32_t& c : u) {
    c = prev_alpha ? AsciiLower(c) : AsciiUpper(c);
    prev_alpha = IsAlpha(c);
  }
  return FromU32(u);
}

std::string Capitalize(const std::string& s) {
  std::u32string u = ToU32(s);
  for (size_t i = 0; i < u.size(); ++i) u[i] = i == 0 ? AsciiUpper(u[i]) : AsciiLower(u[i]);
  return FromU32(u);
}

ValueList Split(const std::string& s, const Value* sep, int64_t maxsplit) {
  ValueList out;
  if (sep == nullptr || sep->is_none()) {
    // Runs of whitespace separate; empty strings are never produced.
    const std::u32string u = ToU32(s);
    size_t i = 0;
    while (i < u.size()) {
      while (i < u.size() && IsPySpace(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        std::u32string rest = u.substr(i);
        while (!rest.empty() && IsPySpace(rest.back())) rest.pop_back();
        out.emplace_back(FromU32(rest));
        return out;
      }
      size_t j = i;
      while (j < u.size() && !IsPySpace(u[j])) ++j;
      out.emplace_back(FromU32(std::u32string_view(u).substr(i, j - i)));
      i = j;
    }
    return out;
  }
  const std::string& d = sep->AsString();
  size_t pos = 0;
  while (true) {
    const size_t hit = (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit)
                           ? std::string::npos
                           : s.find(d, pos);
    if (hit == std::string::npos) {
      out.emplace_back(s.substr(pos));
      return out;
    }
    out.emplace_back(s.substr(pos, hit - pos));
    pos = hit + d.size();
  }
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to,
                    int64_t count) {
  if (from.empty()) {
    // Python inserts `to` between every character (and at both ends).
    const std::u32string u = ToU32(s);
    std::string out;
    int64_t n = 0;
    for (size_t i = 0; i <= u.size(); ++i) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      if (i < u.size()) unicode::AppendUtf8(u[i], out);
    }
    return out;
  }
  std::string out;
  size_t pos = 0;
  int64_t n = 0;
  for (size_t hit; (count < 0 || n < count) && (hit = s.find(from, pos)) != std::string::npos;
       ++n) {
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  return out;
}

const Value* Kw(const KwArgs& kwargs, std::string_view name) {
  for (const auto& [k, v] : kwargs) {
    if (k == name) return &v;
  }
  return nullptr;
}

// Positional argument i, else keyword `name`, else nullptr.
const Value* Arg(const ValueList& args, const KwArgs& kwargs, size_t i, std::string_view name) {
  if (i < args.size()) return &args[i];
  return Kw(kwargs, name);
}

absl::Status JsonString(const std::string& s, std::string& out) {
  out += '"';
  for (size_t pos = 0; pos < s.size();) {
    const size_t start = pos;
    const char32_t c = unicode::DecodeUtf8(s, pos);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out.append(s, start, pos - start);  // ensure_ascii=False keeps UTF-8 as is
        }
    }
  }
  out += '"';
  return absl::OkStatus();
}

// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort_keys) with Python's default
// separators: ", " and ": " without indent, "," and ": " with it.
absl::Status ToJson(const Value& v, int indent, bool sort_keys, int depth, std::string& out) {
  if (depth > 128) return TypeError("tojson: value nested too deeply");
  const std::string item_sep = indent >= 0 ? "," : ", ";
  auto newline = [&](int d) {
    if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent) * d, ' ');
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      out += "null";
      return absl::OkStatus();
    case Value::Kind::kBool:
      out += v.AsBool() ? "true" : "false";
      return absl::OkStatus();
    case Value::Kind::kInt:
    case Value::Kind::kFloat: {
      std::string r = v.Repr();
      if (r == "nan") r = "NaN";
      if (r == "inf") r = "Infinity";
      if (r == "-inf") r = "-Infinity";
      out += r;
      return absl::OkStatus();
    }
    case Value::Kind::kString:
      return JsonString(v.AsString(), out);
    case Value::Kind::kList: {
      const ValueList& list = v.AsList();
      if (list.empty()) {
        out += "[]";
        return absl::OkStatus();
      }
      out += '[';
      for (size_t i = 0; i < list.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        BITLOOM_RETURN_IF_ERROR(ToJson(list[i], indent, sort_keys, depth + 1, out));
      }
      newline(depth);
      out += ']';
      return absl::OkStatus();
    }
    case Value::Kind::kDict: {
      ValueDict items = v.AsDict();
      if (items.empty()) {
        out += "{}";
        return absl::OkStatus();
      }
      if (sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      }
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        BITLOOM_RETURN_IF_ERROR(JsonString(items[i].first, out));
        out += ": ";
        BITLOOM_RETURN_IF_ERROR(ToJson(items[i].second, indent, sort_keys, depth + 1, out));
      }
      newline(depth);
      out += '}';
      return absl::OkStatus();
    }
    default:
      return TypeError("tojson: value is not JSON serializable");
  }
}

absl::StatusOr<int> Compare(const Value& a, const Value& b) {
  if ((a.is_number() || a.kind() == Value::Kind::kBool) &&
      (b.is_number() || b.kind() == Value::Kind::kBool)) {
    const double x = a.kind() == Value::Kind::kBool ? a.AsBool() : a.AsDouble();
    const double y = b.kind() == Value::Kind::kBool ? b.AsBool() : b.AsDouble();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.AsString().compare(b.AsString());
  return TypeError("'<' not supported between these types");
}

absl::StatusOr<Value> Attribute(const Value& v, const std::string& path) {
  Value cur = v;
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t dot = path.find('.', pos);
    const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    const Value* next = cur.Find(part);
    cur = next ? *next : Value();
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return cur;
}

}  // namespace

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kString:
      return static_cast<int64_t>(ToU32(v.AsString()).size());
    case Value::Kind::kList:
      return static_cast<int64_t>(v.AsList().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.AsDict().size());
    case Value::Kind::kUndefined:
      return 0;
    default:
      return TypeError("object has no len()");
  }
}

absl::StatusOr<ValueList> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kList:
      return v.AsList();
    case Value::Kind::kDict: {
      ValueList keys;
      for (const auto& [k, unused] : v.AsDict()) keys.emplace_back(k);
      return keys;
    }
    case Value::Kind::kString: {
      ValueList chars;
      for (char32_t c : ToU32(v.AsString())) chars.emplace_back(FromU32(std::u32string(1, c)));
      return chars;
    }
    case Value::Kind::kUndefined:
      return ValueList();
    default:
      return TypeError(absl::StrCat("'", v.Repr(), "' is not iterable"));
  }
}

absl::StatusOr<Value> Slice(const Value& v, const Value& start, const Value& stop,
                            const Value& step) {
  for (const Value* p : {&start, &stop, &step}) {
    if (!p->is_undefined() && !p->is_none() && p->kind() != Value::Kind::kInt) {
      return TypeError("slice indices must be integers or None");
    }
  }
  const int64_t st = step.kind() == Value::Kind::kInt ? step.AsInt() : 1;
  if (st == 0) return TypeError("slice step cannot be zero");
  auto take = [&](int64_t n, auto&& at) {
    auto clamp = [&](const Value& x, int64_t def) {
      if (x.kind() != Value::Kind::kInt) return def;
      int64_t i = x.AsInt();
      if (i < 0) i += n;
      if (st > 0) return std::clamp<int64_t>(i, 0, n);
      return std::clamp<int64_t>(i, -1, n - 1);
    };
    const int64_t b = clamp(start, st > 0 ? 0 : n - 1);
    const int64_t e = clamp(stop, st > 0 ? n : -1);
    for (int64_t i = b; st > 0 ? i < e : i > e; i += st) at(i);
  };
  if (v.is_list()) {
    const ValueList& list = v.AsList();
    ValueList out;
    take(static_cast<int64_t>(list.size()), [&](int64_t i) { out.push_back(list[i]); });
    return Value(std::move(out));
  }
  if (v.is_string()) {
    const std::u32string u = ToU32(v.AsString());
    std::u32string out;
    take(static_cast<int64_t>(u.size()), [&](int64_t i) { out.push_back(u[i]); });
    return Value(FromU32(out));
  }
  return TypeError("object is not sliceable");
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  if (obj.is_dict()) {
    if (!key.is_string()) return Value();
    const Value* v = obj.Find(key.AsString());
    return v ? *v : Value();
  }
  if (obj.is_list() || obj.is_string()) {
    if (key.kind() != Value::Kind::kInt) return Value();
    int64_t i = key.AsInt();
    if (obj.is_list()) {
      const int64_t n = static_cast<int64_t>(obj.AsList().size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();
      return obj.AsList()[i];
    }
    const std::u32string u = ToU32(obj.AsString());
    const int64_t n = static_cast<int64_t>(u.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value();
    return Value(FromU32(std::u32string(1, u[i])));
  }
  if (obj.is_undefined()) return TypeError("cannot subscript an undefined value");
  return Value();
}

absl::StatusOr<Value> CallMethod(const Value& obj, std::string_view name, const ValueList& args,
                                 const KwArgs& kwargs, bool& found) {
  found = true;
  if (obj.is_string()) {
    const std::string& s = obj.AsString();
    const Value* a0 = Arg(args, kwargs, 0, "chars");
    if (name == "strip") return Value(Strip(s, a0, true, true));
    if (name == "lstrip") return Value(Strip(s, a0, true, false));
    if (name == "rstrip") return Value(Strip(s, a0, false, true));
    if (name == "upper") return Value(MapChars(s, AsciiUpper));
    if (name == "lower") return Value(MapChars(s, AsciiLower));
    if (name == "title") return Value(Title(s));
    if (name == "capitalize") return Value(Capitalize(s));
    if (name == "startswith" || name == "endswith") {
      if (args.empty()) return TypeError(absl::StrCat(std::string(name), "() takes an argument"));
      ValueList options = args[0].is_list() ? args[0].AsList() : ValueList{args[0]};
      for (const Value& o : options) {
        if (!o.is_string()) return TypeError(absl::StrCat(std::string(name), "() needs strings"));
        const std::string& p = o.AsString();
        if (name == "startswith" ? s.starts_with(p) : s.ends_with(p)) return Value(true);
      }
      return Value(false);
    }
    if (name == "split" || name == "rsplit") {
      const Value* sep = Arg(args, kwargs, 0, "sep");
      const Value* max = Arg(args, kwargs, 1, "maxsplit");
      if (sep && !sep->is_none() && (!sep->is_string() || sep->AsString().empty())) {
        return TypeError("split(): bad separator");
      }
      if (name == "rsplit" && max && max->AsInt() >= 0) {
        return TypeError("rsplit() with maxsplit is not supported");
      }
      return Value(Split(s, sep, max && max->kind() == Value::Kind::kInt ? max->AsInt() : -1));
    }
    if (name == "replace") {
      if (args.size() < 2 || !args[0].is_string() || !args[1].is_string()) {
        return TypeError("replace() takes two strings");
      }
      const int64_t count = args.size() > 2 && args[2].kind() == Value::Kind::kInt ? args[2].AsInt() : -1;
      return Value(Replace(s, args[0].AsString(), args[1].AsString(), count));
    }
    if (name == "find") {
      if (args.empty() || !args[0].is_string()) return TypeError("find() takes a string");
      const size_t hit = s.find(args[0].AsString());
      if (hit == std::string::npos) return Value(int64_t{-1});
      return Value(static_cast<int64_t>(ToU32(s.substr(0, hit)).size()));
    }
    if (name == "join") {
      if (args.empty()) return TypeError("join() takes an iterable");
      BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(args[0]));
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!items[i].is_string()) return TypeError("join(): sequence item is not a string");
        if (i) out += s;
        out += items[i].AsString();
      }
      return Value(std::move(out));
    }
  } else if (obj.is_dict() && !obj.is_namespace()) {
    if (name == "items") {
      ValueList out;
      for (const auto& [k, v] : obj.AsDict()) out.emplace_back(ValueList{Value(k), v});
      return Value(std::move(out));
    }
    if (name == "keys") return Value(*Iterate(obj));
    if (name == "values") {
      ValueList out;
      for (const auto& [k, v] : obj.AsDict()) out.push_back(v);
      return Value(std::move(out));
    }
    if (name == "get") {
      if (args.empty()) return TypeError("get() takes a key");
      const Value* v = args[0].is_string() ? obj.Find(args[0].AsString()) : nullptr;
      if (v) return *v;
      return args.size() > 1 ? args[1] : Value::None();
    }
  } else if (obj.is_list()) {
    if (name == "append") {
      if (args.size() != 1) return TypeError("append() takes one argument");
      obj.AsList().push_back(args[0]);
      return Value::None();
    }
  }
  found = false;
  return Value();
}

Value BuiltinGlobal(std::string_view name) {
  if (name == "raise_exception") {
    return Value::MakeFunction([](const ValueList& args, const KwArgs&) -> absl::StatusOr<Value> {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template raised an exception: ", args.empty() ? "" : args[0].ToString()));
    });
  }
  if (name == "namespace") {
    return Value::MakeFunction([](const ValueList& args, const KwArgs& kwargs) -> absl::StatusOr<Value> {
      ValueDict d;
      if (!args.empty() && args[0].is_dict()) d = args[0].AsDict();
      for (const auto& [k, v] : kwargs) d.emplace_back(k, v);
      return Value::MakeNamespace(std::move(d));
    });
  }
  if (name == "dict") {
    return Value::MakeFunction([](const ValueList& args, const KwArgs& kwargs) -> absl::StatusOr<Value> {
      ValueDict d;
      if (!args.empty() && args[0].is_dict()) d = args[0].AsDict();
      Value out(std::move(d));
      for (const auto& [k, v] : kwargs) out.Set(k, v);
      return out;
    });
  }
  if (name == "range") {
    return Value::MakeFunction([](const ValueList& args, const KwArgs&) -> absl::StatusOr<Value> {
      for (const Value& a : args) {
        if (a.kind() != Value::Kind::kInt) return TypeError("range() takes integers");
      }
      int64_t start = 0, stop = 0, step = 1;
      if (args.size() == 1) {
        stop = args[0].AsInt();
      } else if (args.size() == 2 || args.size() == 3) {
        start = args[0].AsInt();
        stop = args[1].AsInt();
        if (args.size() == 3) step = args[2].AsInt();
      } else {
        return TypeError("range() takes 1 to 3 arguments");
      }
      if (step == 0) return TypeError("range() step must not be zero");
      ValueList out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (static_cast<int64_t>(out.size()) >= kMaxRange) {
          return absl::ResourceExhaustedError("range() is too long");
        }
        out.emplace_back(i);
      }
      return Value(std::move(out));
    });
  }
  if (name == "strftime_now") {
    return Value::MakeFunction([](const ValueList& args, const KwArgs&) -> absl::StatusOr<Value> {
      if (args.empty() || !args[0].is_string()) return TypeError("strftime_now() takes a format");
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof(buf), args[0].AsString().c_str(), &tm);
      return Value(std::string(buf, n));
    });
  }
  return Value();
}

absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& v, const ValueList& args) {
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind() == K::kBool;
  if (name == "true") return v.kind() == K::kBool && v.AsBool();
  if (name == "false") return v.kind() == K::kBool && !v.AsBool();
  if (name == "integer") return v.kind() == K::kInt;
  if (name == "float") return v.kind() == K::kFloat;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "callable") return v.kind() == K::kFunction;
  if (name == "lower") return v.is_string() && MapChars(v.AsString(), AsciiLower) == v.AsString();
  if (name == "upper") return v.is_string() && MapChars(v.AsString(), AsciiUpper) == v.AsString();
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (v.kind() != K::kInt) return TypeError(absl::StrCat("test '", std::string(name), "' needs an integer"));
    if (name == "odd") return v.AsInt() % 2 != 0;
    if (name == "even") return v.AsInt() % 2 == 0;
    if (args.empty() || args[0].kind() != K::kInt || args[0].AsInt() == 0) {
      return TypeError("divisibleby needs a non-zero integer");
    }
    return v.AsInt() % args[0].AsInt() == 0;
  }
  if (args.empty() && name != "sameas") {
    return TypeError(absl::StrCat("unknown test '", std::string(name), "'"));
  }
  const Value other = args.empty() ? Value::None() : args[0];
  if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") return Equals(v, other);
  if (name == "ne" || name == "!=") return !Equals(v, other);
  if (name == "in") {
    if (other.is_string() && v.is_string()) return other.AsString().find(v.AsString()) != std::string::npos;
    if (other.is_dict()) return v.is_string() && other.Find(v.AsString()) != nullptr;
    BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(other));
    for (const Value& x : items) {
      if (Equals(x, v)) return true;
    }
    return false;
  }
  if (name == "lt" || name == "<" || name == "gt" || name == ">" || name == "le" || name == "<=" ||
      name == "ge" || name == ">=") {
    BITLOOM_ASSIGN_OR_RETURN(int c, Compare(v, other));
    if (name == "lt" || name == "<") return c < 0;
    if (name == "gt" || name == ">") return c > 0;
    if (name == "le" || name == "<=") return c <= 0;
    return c >= 0;
  }
  return TypeError(absl::StrCat("unknown test '", std::string(name), "'"));
}

absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& v, const ValueList& args,
                                  const KwArgs& kwargs) {
  using K = Value::Kind;
  if (name == "default" || name == "d") {
    const Value* def = Arg(args, kwargs, 0, "default_value");
    const Value* boolean = Arg(args, kwargs, 1, "boolean");
    const bool use_default = v.is_undefined() || (boolean && boolean->Truthy() && !v.Truthy());
    if (use_default) return def ? *def : Value(std::string());
    return v;
  }
  if (v.is_undefined() && name != "length" && name != "count" && name != "list" &&
      name != "string" && name != "tojson") {
    return TypeError(absl::StrCat("filter '", std::string(name), "' applied to an undefined value"));
  }
  if (name == "trim") {
    if (!v.is_string()) return Value(v.ToString());
    return Value(Strip(v.AsString(), Arg(args, kwargs, 0, "chars"), true, true));
  }
  if (name == "length" || name == "count") {
    BITLOOM_ASSIGN_OR_RETURN(int64_t n, Length(v));
    return Value(n);
  }
  if (name == "string") return Value(v.ToString());
  if (name == "safe" || name == "e" || name == "escape" || name == "forceescape") {
    // Autoescaping is off in chat templates; escape is refused rather than half-implemented.
    if (name == "safe") return v;
    return TypeError("the escape filter is not supported");
  }
  if (name == "upper") return Value(MapChars(v.ToString(), AsciiUpper));
  if (name == "lower") return Value(MapChars(v.ToString(), AsciiLower));
  if (name == "title") return Value(Title(v.ToString()));
  if (name == "capitalize") return Value(Capitalize(v.ToString()));
  if (name == "replace") {
    if (args.size() < 2 || !args[0].is_string() || !args[1].is_string()) {
      return TypeError("replace filter takes two strings");
    }
    const int64_t count = args.size() > 2 && args[2].kind() == K::kInt ? args[2].AsInt() : -1;
    return Value(Replace(v.ToString(), args[0].AsString(), args[1].AsString(), count));
  }
  if (name == "tojson") {
    if (v.is_undefined()) return TypeError("tojson: value is undefined");
    const Value* indent = Arg(args, kwargs, 0, "indent");
    const Value* sort = Kw(kwargs, "sort_keys");
    std::string out;
    BITLOOM_RETURN_IF_ERROR(ToJson(v, indent && indent->kind() == K::kInt ? static_cast<int>(indent->AsInt()) : -1,
                                   sort && sort->Truthy(), 0, out));
    return Value(std::move(out));
  }
  if (name == "int") {
    if (v.kind() == K::kInt) return v;
    if (v.kind() == K::kFloat) return Value(static_cast<int64_t>(v.AsDouble()));
    if (v.kind() == K::kBool) return Value(int64_t{v.AsBool()});
    if (v.is_string()) {
      try {
        return Value(static_cast<int64_t>(std::stoll(Strip(v.AsString(), nullptr, true, true))));
      } catch (const std::exception&) {
      }
    }
    return args.empty() ? Value(int64_t{0}) : args[0];
  }
  if (name == "float") {
    if (v.is_number()) return Value(v.AsDouble());
    if (v.is_string()) {
      try {
        return Value(std::stod(v.AsString()));
      } catch (const std::exception&) {
      }
    }
    return Value(0.0);
  }
  if (name == "abs") {
    if (v.kind() == K::kInt) return Value(v.AsInt() < 0 ? -v.AsInt() : v.AsInt());
    if (v.kind() == K::kFloat) return Value(std::fabs(v.AsDouble()));
    return TypeError("abs needs a number");
  }
  if (name == "list") {
    BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    return Value(std::move(items));
  }
  if (name == "first" || name == "last") {
    BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string u = ToU32(v.AsString());
      std::reverse(u.begin(), u.end());
      return Value(FromU32(u));
    }
    BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "join") {
    BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    const Value* sep = Arg(args, kwargs, 0, "d");
    const Value* attr = Arg(args, kwargs, 1, "attribute");
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i && sep) out += sep->ToString();
      Value item = items[i];
      if (attr && attr->is_string()) {
        BITLOOM_ASSIGN_OR_RETURN(item, Attribute(item, attr->AsString()));
      }
      out += item.ToString();
    }
    return Value(std::move(out));
  }
  if (name == "items") {
    bool found;
    return CallMethod(v, "items", {}, {}, found);
  }
  if (name == "dictsort") {
    if (!v.is_dict()) return TypeError("dictsort needs a dict");
    ValueDict items = v.AsDict();
    std::stable_sort(items.begin(), items.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    ValueList out;
    for (auto& [k, x] : items) out.emplace_back(ValueList{Value(k), x});
    return Value(std::move(out));
  }
  if (name == "map") {
    BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    ValueList out;
    const Value* attr = Kw(kwargs, "attribute");
    for (const Value& item : items) {
      if (attr && attr->is_string()) {
        BITLOOM_ASSIGN_OR_RETURN(Value x, Attribute(item, attr->AsString()));
        if (x.is_undefined()) {
          if (const Value* def = Kw(kwargs, "default")) x = *def;
        }
        out.push_back(std::move(x));
      } else if (!args.empty() && args[0].is_string()) {
        const ValueList rest(args.begin() + 1, args.end());
        BITLOOM_ASSIGN_OR_RETURN(Value x, ApplyFilter(args[0].AsString(), item, rest, {}));
        out.push_back(std::move(x));
      } else {
        return TypeError("map needs a filter name or attribute=");
      }
    }
    return Value(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep_if = name == "select" || name == "selectattr";
    BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    size_t ai = 0;
    std::string attr;
    if (by_attr) {
      if (args.empty() || !args[0].is_string()) return TypeError("selectattr needs an attribute");
      attr = args[0].AsString();
      ai = 1;
    }
    std::string test;
    if (ai < args.size()) {
      if (!args[ai].is_string()) return TypeError("select needs a test name");
      test = args[ai].AsString();
    }
    const ValueList test_args(args.begin() + std::min(args.size(), ai + 1), args.end());
    ValueList out;
    for (const Value& item : items) {
      Value x = item;
      if (by_attr) {
        BITLOOM_ASSIGN_OR_RETURN(x, Attribute(item, attr));
      }
      bool pass;
      if (test.empty()) {
        pass = x.Truthy();
      } else {
        BITLOOM_ASSIGN_OR_RETURN(pass, ApplyTest(test, x, test_args));
      }
      if (pass == keep_if) out.push_back(item);
    }
    return Value(std::move(out));
  }
  if (name == "unique") {
    BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    ValueList out;
    for (const Value& x : items) {
      if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return Equals(x, y); })) {
        out.push_back(x);
      }
    }
    return Value(std::move(out));
  }
  if (name == "min" || name == "max" || name == "sum") {
    BITLOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    if (name == "sum") {
      Value total(int64_t{0});
      for (const Value& x : items) {
        if (!x.is_number()) return TypeError("sum needs numbers");
        total = total.kind() == K::kInt && x.kind() == K::kInt ? Value(total.AsInt() + x.AsInt())
                                                               : Value(total.AsDouble() + x.AsDouble());
      }
      return total;
    }
    if (items.empty()) return Value();
    Value best = items[0];
    for (const Value& x : items) {
      BITLOOM_ASSIGN_OR_RETURN(int c, Compare(x, best));
      if (name == "min" ? c < 0 : c > 0) best = x;
    }
    return best;
  }
  if (name == "indent") {
    const Value* width = Arg(args, kwargs, 0, "width");
    const Value* first = Arg(args, kwargs, 1, "first");
    const Value* blank = Arg(args, kwargs, 2, "blank");
    const std::string pad = width && width->is_string()
                                ? width->AsString()
                                : std::string(width && width->kind() == K::kInt ? width->AsInt() : 4, ' ');
    const std::string s = v.ToString();
    std::string out;
    size_t pos = 0;
    bool first_line = true;
    while (pos <= s.size()) {
      size_t nl = s.find('\n', pos);
      const std::string line = s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      const bool indent_it = first_line ? (first && first->Truthy())
                                        : (!line.empty() || (blank && blank->Truthy()));
      if (indent_it) out += pad;
      out += line;
      if (nl == std::string::npos) break;
      out += '\n';
      pos = nl + 1;
      first_line = false;
    }
    return Value(std::move(out));
  }
  return TypeError(absl::StrCat("unknown filter '", std::string(name), "'"));
}

}  // namespace bitloom::formats::jinja
