// Jinja lexer and parser: source -> Node tree.
//
// Lexing is two-level. The template is first cut into text, {{ expression }}, {% statement %} and
// {# comment #} segments, applying whitespace control ("-" and "+" markers, trim_blocks,
// lstrip_blocks) exactly where jinja2's lexer applies it. The inside of each tag is then tokenized
// separately and parsed by recursive descent with jinja2's operator precedence.
#include <cctype>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "jinja_internal.h"

namespace bitloom::formats::jinja {
namespace {

constexpr int kMaxDepth = 256;  // nesting of blocks and expressions; deeper is refused

struct Segment {
  enum class Kind { kText, kExpr, kStmt } kind;
  std::string text;
  int line;
};

bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

int LineAt(std::string_view s, size_t pos) {
  int line = 1;
  for (size_t i = 0; i < pos && i < s.size(); ++i) line += s[i] == '\n';
  return line;
}

absl::Status Error(int line, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("chat template line ", line, ": ",
                                                 std::string(message)));
}

absl::StatusOr<std::vector<Segment>> Segment_(std::string_view src, const TemplateOptions& opt) {
  std::vector<Segment> out;
  size_t pos = 0;
  bool strip_next_text = false;  // a "-" closed the previous tag
  while (pos <= src.size()) {
    size_t at = pos;
    while (true) {
      at = src.find('{', at);
      if (at == std::string_view::npos || at + 1 >= src.size()) {
        at = std::string_view::npos;
        break;
      }
      const char k = src[at + 1];
      if (k == '{' || k == '%' || k == '#') break;
      ++at;
    }
    std::string text(src.substr(pos, at == std::string_view::npos ? std::string_view::npos : at - pos));
    if (strip_next_text) {
      size_t i = 0;
      while (i < text.size() && IsSpace(text[i])) ++i;
      text.erase(0, i);
    }
    if (at == std::string_view::npos) {
      if (!text.empty()) out.push_back({Segment::Kind::kText, text, LineAt(src, pos)});
      break;
    }
    const char kind = src[at + 1];
    size_t inner = at + 2;
    const char marker = inner < src.size() ? src[inner] : '\0';
    if (marker == '-') {
      while (!text.empty() && IsSpace(text.back())) text.pop_back();
      ++inner;
    } else if (marker == '+') {
      ++inner;
    } else if (kind != '{' && opt.lstrip_blocks) {
      // Only blanks between the start of the line and the tag: drop them.
      const size_t nl = text.rfind('\n');
      const size_t line_start = nl == std::string::npos ? 0 : nl + 1;
      const bool at_line_start = nl != std::string::npos || at - text.size() == 0 ||
                                 (pos > 0 && src[pos - 1] == '\n');
      bool blank = true;
      for (size_t i = line_start; i < text.size(); ++i) blank = blank && IsBlank(text[i]);
      if (blank && at_line_start) text.erase(line_start);
    }
    if (!text.empty()) out.push_back({Segment::Kind::kText, text, LineAt(src, pos)});
    const int line = LineAt(src, at);
    // Find the closing delimiter, skipping string literals (which may contain "}}").
    const char close = kind == '{' ? '}' : kind;
    size_t end = inner;
    char quote = 0;
    for (; end + 1 < src.size(); ++end) {
      const char c = src[end];
      if (kind == '#') {
        if (c == '#' && src[end + 1] == '}') break;
        continue;
      }
      if (quote) {
        if (c == '\\') {
          ++end;
        } else if (c == quote) {
          quote = 0;
        }
      } else if (c == '\'' || c == '"') {
        quote = c;
      } else if (c == close && src[end + 1] == '}') {
        break;
      }
    }
    if (end + 1 >= src.size()) return Error(line, "unclosed tag");
    size_t content_end = end;
    strip_next_text = false;
    bool keep_newline = false;
    if (content_end > inner && src[content_end - 1] == '-') {
      strip_next_text = true;
      --content_end;
    } else if (content_end > inner && src[content_end - 1] == '+') {
      keep_newline = true;
      --content_end;
    }
    std::string content(src.substr(inner, content_end - inner));
    pos = end + 2;
    if (kind != '{' && opt.trim_blocks && !strip_next_text && !keep_newline) {
      if (pos < src.size() && src[pos] == '\n') {
        ++pos;
      } else if (pos + 1 < src.size() && src[pos] == '\r' && src[pos + 1] == '\n') {
        pos += 2;
      }
    }
    if (kind == '{') out.push_back({Segment::Kind::kExpr, std::move(content), line});
    if (kind == '%') out.push_back({Segment::Kind::kStmt, std::move(content), line});
    if (pos == src.size()) break;
  }
  return out;
}

struct Token {
  enum class Kind { kName, kString, kInt, kFloat, kOp, kEnd } kind;
  std::string text;
  Value value;
};

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view s, int line) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (IsSpace(c)) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Token::Kind::kName, std::string(s.substr(i, j - i)), Value()});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool is_float = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          is_float = true;
          j = k;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string num;
      for (size_t k = i; k < j; ++k) {
        if (s[k] != '_') num += s[k];
      }
      Token t{is_float ? Token::Kind::kFloat : Token::Kind::kInt, num, Value()};
      try {
        t.value = is_float ? Value(std::stod(num)) : Value(static_cast<int64_t>(std::stoll(num)));
      } catch (const std::exception&) {
        return Error(line, absl::StrCat("bad number literal ", num));
      }
      out.push_back(std::move(t));
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string str;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 >= s.size()) {
          str += s[j];
          continue;
        }
        const char e = s[++j];
        switch (e) {
          case 'n': str += '\n'; break;
          case 't': str += '\t'; break;
          case 'r': str += '\r'; break;
          case '\\': str += '\\'; break;
          case '\'': str += '\''; break;
          case '"': str += '"'; break;
          case '0': str += '\0'; break;
          case '\n': break;  // line continuation
          default:  // Python keeps unknown escapes verbatim
            str += '\\';
            str += e;
        }
      }
      if (j >= s.size()) return Error(line, "unterminated string literal");
      out.push_back({Token::Kind::kString, "", Value(std::move(str))});
      i = j + 1;
      continue;
    }
    static const char* kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%",
                                 "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ".", ",",
                                 ":", "|"};
    bool matched = false;
    for (const char* op : kOps) {
      const std::string_view o(op);
      if (s.substr(i, o.size()) == o) {
        out.push_back({Token::Kind::kOp, std::string(o), Value()});
        i += o.size();
        matched = true;
        break;
      }
    }
    if (!matched) return Error(line, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }
  out.push_back({Token::Kind::kEnd, "", Value()});
  return out;
}

class Parser {
 public:
  explicit Parser(std::vector<Segment> segments) : segs_(std::move(segments)) {}

  absl::StatusOr<std::unique_ptr<Node>> ParseAll() {
    std::string found;
    BITLOOM_ASSIGN_OR_RETURN(auto body, ParseBody({}, found));
    return body;
  }

 private:
  using NodePtr = std::unique_ptr<Node>;

  // ---- statements ----

  // Parses segments until a {% keyword %} from `terminators`; `found` gets that keyword, with the
  // rest of its tag left in toks_ for the caller.
  absl::StatusOr<NodePtr> ParseBody(const std::vector<std::string>& terminators, std::string& found) {
    if (++depth_ > kMaxDepth) return Error(line_, "blocks nested too deeply");
    auto body = std::make_unique<Node>(Node::Kind::kBody, line_);
    found.clear();
    while (si_ < segs_.size()) {
      const Segment& seg = segs_[si_++];
      line_ = seg.line;
      if (seg.kind == Segment::Kind::kText) {
        auto text = std::make_unique<Node>(Node::Kind::kText, line_);
        text->name = seg.text;
        body->children.push_back(std::move(text));
        continue;
      }
      BITLOOM_ASSIGN_OR_RETURN(toks_, Tokenize(seg.text, line_));
      ti_ = 0;
      if (seg.kind == Segment::Kind::kExpr) {
        auto out = std::make_unique<Node>(Node::Kind::kOutput, line_);
        BITLOOM_ASSIGN_OR_RETURN(out->a, ParseExpr());
        BITLOOM_RETURN_IF_ERROR(ExpectEnd());
        body->children.push_back(std::move(out));
        continue;
      }
      if (Peek().kind != Token::Kind::kName) return Error(line_, "expected a statement keyword");
      const std::string kw = Next().text;
      for (const std::string& t : terminators) {
        if (kw == t) {
          found = kw;
          --depth_;
          return body;
        }
      }
      NodePtr stmt;
      if (kw == "if") {
        BITLOOM_ASSIGN_OR_RETURN(stmt, ParseIf());
      } else if (kw == "for") {
        BITLOOM_ASSIGN_OR_RETURN(stmt, ParseFor());
      } else if (kw == "set") {
        BITLOOM_ASSIGN_OR_RETURN(stmt, ParseSet());
      } else if (kw == "macro") {
        BITLOOM_ASSIGN_OR_RETURN(stmt, ParseMacro());
      } else if (kw == "break" || kw == "continue") {
        if (loop_depth_ == 0) return Error(line_, absl::StrCat("'", kw, "' outside a loop"));
        stmt = std::make_unique<Node>(kw == "break" ? Node::Kind::kBreak : Node::Kind::kContinue,
                                      line_);
        BITLOOM_RETURN_IF_ERROR(ExpectEnd());
      } else {
        return Error(line_, absl::StrCat("unexpected or unsupported tag '", kw, "'"));
      }
      body->children.push_back(std::move(stmt));
    }
    if (!terminators.empty()) {
      return Error(line_, absl::StrCat("missing {% ", terminators.back(), " %}"));
    }
    --depth_;
    return body;
  }

  absl::StatusOr<NodePtr> ParseIf() {
    auto node = std::make_unique<Node>(Node::Kind::kIf, line_);
    while (true) {
      BITLOOM_ASSIGN_OR_RETURN(auto cond, ParseExpr());
      BITLOOM_RETURN_IF_ERROR(ExpectEnd());
      std::string found;
      BITLOOM_ASSIGN_OR_RETURN(auto body, ParseBody({"elif", "else", "endif"}, found));
      node->children.push_back(std::move(cond));
      node->children.push_back(std::move(body));
      if (found == "elif") continue;
      if (found == "else") {
        BITLOOM_RETURN_IF_ERROR(ExpectEnd());
        BITLOOM_ASSIGN_OR_RETURN(auto else_body, ParseBody({"endif"}, found));
        node->children.push_back(std::move(else_body));
      }
      BITLOOM_RETURN_IF_ERROR(ExpectEnd());
      return node;
    }
  }

  absl::StatusOr<NodePtr> ParseFor() {
    auto node = std::make_unique<Node>(Node::Kind::kFor, line_);
    do {
      if (Peek().kind != Token::Kind::kName) return Error(line_, "expected a loop variable");
      node->targets.push_back(Next().text);
    } while (Accept(","));
    if (!AcceptName("in")) return Error(line_, "expected 'in' in for loop");
    BITLOOM_ASSIGN_OR_RETURN(node->a, ParseOr());  // no conditional: "if" filters the loop
    if (AcceptName("if")) {
      BITLOOM_ASSIGN_OR_RETURN(node->b, ParseOr());
    }
    if (AcceptName("recursive")) return Error(line_, "recursive loops are not supported");
    BITLOOM_RETURN_IF_ERROR(ExpectEnd());
    ++loop_depth_;
    std::string found;
    BITLOOM_ASSIGN_OR_RETURN(node->c, ParseBody({"else", "endfor"}, found));
    --loop_depth_;
    if (found == "else") {
      BITLOOM_RETURN_IF_ERROR(ExpectEnd());
      BITLOOM_ASSIGN_OR_RETURN(node->d, ParseBody({"endfor"}, found));
    }
    BITLOOM_RETURN_IF_ERROR(ExpectEnd());
    return node;
  }

  absl::StatusOr<NodePtr> ParseSet() {
    auto node = std::make_unique<Node>(Node::Kind::kSet, line_);
    if (Peek().kind != Token::Kind::kName) return Error(line_, "expected a name after 'set'");
    node->targets.push_back(Next().text);
    if (Accept(".")) {
      if (Peek().kind != Token::Kind::kName) return Error(line_, "expected an attribute name");
      node->name = Next().text;
    }
    if (Accept("=")) {
      BITLOOM_ASSIGN_OR_RETURN(node->a, ParseExpr());
      BITLOOM_RETURN_IF_ERROR(ExpectEnd());
      return node;
    }
    BITLOOM_RETURN_IF_ERROR(ExpectEnd());
    std::string found;
    BITLOOM_ASSIGN_OR_RETURN(node->c, ParseBody({"endset"}, found));
    BITLOOM_RETURN_IF_ERROR(ExpectEnd());
    return node;
  }

  absl::StatusOr<NodePtr> ParseMacro() {
    auto node = std::make_unique<Node>(Node::Kind::kMacro, line_);
    if (Peek().kind != Token::Kind::kName) return Error(line_, "expected a macro name");
    node->name = Next().text;
    if (!Accept("(")) return Error(line_, "expected '(' after the macro name");
    if (!Accept(")")) {
      do {
        if (Peek().kind != Token::Kind::kName) return Error(line_, "expected a parameter name");
        node->targets.push_back(Next().text);
        NodePtr def;
        if (Accept("=")) {
          BITLOOM_ASSIGN_OR_RETURN(def, ParseExpr());
        }
        node->children.push_back(std::move(def));
      } while (Accept(","));
      if (!Accept(")")) return Error(line_, "expected ')' after macro parameters");
    }
    BITLOOM_RETURN_IF_ERROR(ExpectEnd());
    std::string found;
    BITLOOM_ASSIGN_OR_RETURN(node->c, ParseBody({"endmacro"}, found));
    BITLOOM_RETURN_IF_ERROR(ExpectEnd());
    return node;
  }

  // ---- expressions (jinja2 precedence, loosest first) ----

  absl::StatusOr<NodePtr> ParseExpr() {
    if (++depth_ > kMaxDepth) return Error(line_, "expression nested too deeply");
    BITLOOM_ASSIGN_OR_RETURN(auto expr, ParseOr());
    while (AcceptName("if")) {
      auto cond = std::make_unique<Node>(Node::Kind::kConditional, line_);
      BITLOOM_ASSIGN_OR_RETURN(cond->a, ParseOr());
      cond->b = std::move(expr);
      if (AcceptName("else")) {
        BITLOOM_ASSIGN_OR_RETURN(cond->c, ParseExpr());
      }
      expr = std::move(cond);
    }
    --depth_;
    return expr;
  }

  NodePtr Binary(std::string op, NodePtr l, NodePtr r) {
    auto n = std::make_unique<Node>(Node::Kind::kBinary, line_);
    n->op = std::move(op);
    n->a = std::move(l);
    n->b = std::move(r);
    return n;
  }

  absl::StatusOr<NodePtr> ParseOr() {
    BITLOOM_ASSIGN_OR_RETURN(auto l, ParseAnd());
    while (AcceptName("or")) {
      BITLOOM_ASSIGN_OR_RETURN(auto r, ParseAnd());
      l = Binary("or", std::move(l), std::move(r));
    }
    return l;
  }

  absl::StatusOr<NodePtr> ParseAnd() {
    BITLOOM_ASSIGN_OR_RETURN(auto l, ParseNot());
    while (AcceptName("and")) {
      BITLOOM_ASSIGN_OR_RETURN(auto r, ParseNot());
      l = Binary("and", std::move(l), std::move(r));
    }
    return l;
  }

  absl::StatusOr<NodePtr> ParseNot() {
    if (AcceptName("not")) {
      if (++depth_ > kMaxDepth) return Error(line_, "expression nested too deeply");
      auto n = std::make_unique<Node>(Node::Kind::kUnary, line_);
      n->op = "not";
      BITLOOM_ASSIGN_OR_RETURN(n->a, ParseNot());
      --depth_;
      return n;
    }
    return ParseCompare();
  }

  absl::StatusOr<NodePtr> ParseCompare() {
    BITLOOM_ASSIGN_OR_RETURN(auto l, ParseMath1());
    while (true) {
      std::string op;
      const Token& t = Peek();
      if (t.kind == Token::Kind::kOp &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == ">" || t.text == "<=" ||
           t.text == ">=")) {
        op = Next().text;
      } else if (AcceptName("in")) {
        op = "in";
      } else if (t.kind == Token::Kind::kName && t.text == "not" && ti_ + 1 < toks_.size() &&
                 toks_[ti_ + 1].kind == Token::Kind::kName && toks_[ti_ + 1].text == "in") {
        ti_ += 2;
        op = "not in";
      } else {
        return l;
      }
      BITLOOM_ASSIGN_OR_RETURN(auto r, ParseMath1());
      l = Binary(op, std::move(l), std::move(r));
    }
  }

  absl::StatusOr<NodePtr> ParseMath1() {
    BITLOOM_ASSIGN_OR_RETURN(auto l, ParseConcat());
    while (Peek().kind == Token::Kind::kOp && (Peek().text == "+" || Peek().text == "-")) {
      std::string op = Next().text;
      BITLOOM_ASSIGN_OR_RETURN(auto r, ParseConcat());
      l = Binary(op, std::move(l), std::move(r));
    }
    return l;
  }

  absl::StatusOr<NodePtr> ParseConcat() {
    BITLOOM_ASSIGN_OR_RETURN(auto l, ParseMath2());
    while (Accept("~")) {
      BITLOOM_ASSIGN_OR_RETURN(auto r, ParseMath2());
      l = Binary("~", std::move(l), std::move(r));
    }
    return l;
  }

  absl::StatusOr<NodePtr> ParseMath2() {
    BITLOOM_ASSIGN_OR_RETURN(auto l, ParsePow());
    while (Peek().kind == Token::Kind::kOp &&
           (Peek().text == "*" || Peek().text == "/" || Peek().text == "//" || Peek().text == "%")) {
      std::string op = Next().text;
      BITLOOM_ASSIGN_OR_RETURN(auto r, ParsePow());
      l = Binary(op, std::move(l), std::move(r));
    }
    return l;
  }

  absl::StatusOr<NodePtr> ParsePow() {
    BITLOOM_ASSIGN_OR_RETURN(auto l, ParseUnary());
    while (Accept("**")) {
      BITLOOM_ASSIGN_OR_RETURN(auto r, ParseUnary());
      l = Binary("**", std::move(l), std::move(r));
    }
    return l;
  }

  absl::StatusOr<NodePtr> ParseUnary() {
    if (Peek().kind == Token::Kind::kOp && (Peek().text == "-" || Peek().text == "+")) {
      if (++depth_ > kMaxDepth) return Error(line_, "expression nested too deeply");
      auto n = std::make_unique<Node>(Node::Kind::kUnary, line_);
      n->op = Next().text;
      BITLOOM_ASSIGN_OR_RETURN(n->a, ParseUnary());
      --depth_;
      return n;
    }
    BITLOOM_ASSIGN_OR_RETURN(auto e, ParsePrimary());
    return ParsePostfix(std::move(e));
  }

  absl::Status ParseArgs(Node& call) {
    // After "(": positional args, then name=value keyword args, then ")".
    if (Accept(")")) return absl::OkStatus();
    do {
      if (Peek().kind == Token::Kind::kName && ti_ + 1 < toks_.size() &&
          toks_[ti_ + 1].kind == Token::Kind::kOp && toks_[ti_ + 1].text == "=") {
        std::string key = Next().text;
        Next();
        BITLOOM_ASSIGN_OR_RETURN(auto v, ParseExpr());
        call.kwargs.emplace_back(std::move(key), std::move(v));
      } else {
        if (!call.kwargs.empty()) return Error(line_, "positional argument after keyword argument");
        BITLOOM_ASSIGN_OR_RETURN(auto v, ParseExpr());
        call.children.push_back(std::move(v));
      }
    } while (Accept(","));
    if (!Accept(")")) return Error(line_, "expected ')'");
    return absl::OkStatus();
  }

  absl::StatusOr<NodePtr> ParsePostfix(NodePtr e) {
    while (true) {
      if (Accept(".")) {
        if (Peek().kind != Token::Kind::kName && Peek().kind != Token::Kind::kInt) {
          return Error(line_, "expected an attribute name after '.'");
        }
        auto n = std::make_unique<Node>(Node::Kind::kGetAttr, line_);
        const Token t = Next();
        n->name = t.kind == Token::Kind::kInt ? t.text : t.text;
        n->a = std::move(e);
        e = std::move(n);
      } else if (Accept("[")) {
        NodePtr parts[3];
        int colons = 0;
        while (true) {
          if (Peek().kind == Token::Kind::kOp && (Peek().text == ":" || Peek().text == "]")) {
            if (Accept(":")) {
              if (++colons > 2) return Error(line_, "too many ':' in slice");
              continue;
            }
            break;
          }
          if (parts[colons]) return Error(line_, "expected ':' or ']'");
          BITLOOM_ASSIGN_OR_RETURN(parts[colons], ParseExpr());
        }
        if (!Accept("]")) return Error(line_, "expected ']'");
        if (colons == 0) {
          if (!parts[0]) return Error(line_, "empty subscript");
          auto n = std::make_unique<Node>(Node::Kind::kGetItem, line_);
          n->a = std::move(e);
          n->b = std::move(parts[0]);
          e = std::move(n);
        } else {
          auto n = std::make_unique<Node>(Node::Kind::kSlice, line_);
          n->a = std::move(e);
          for (auto& p : parts) n->children.push_back(std::move(p));
          e = std::move(n);
        }
      } else if (Accept("(")) {
        auto n = std::make_unique<Node>(Node::Kind::kCall, line_);
        n->a = std::move(e);
        BITLOOM_RETURN_IF_ERROR(ParseArgs(*n));
        e = std::move(n);
      } else if (Accept("|")) {
        if (Peek().kind != Token::Kind::kName) return Error(line_, "expected a filter name");
        auto n = std::make_unique<Node>(Node::Kind::kFilter, line_);
        n->name = Next().text;
        n->a = std::move(e);
        if (Accept("(")) BITLOOM_RETURN_IF_ERROR(ParseArgs(*n));
        e = std::move(n);
      } else if (AcceptName("is")) {
        auto n = std::make_unique<Node>(Node::Kind::kTest, line_);
        n->negated = AcceptName("not");
        if (Peek().kind != Token::Kind::kName) return Error(line_, "expected a test name");
        n->name = Next().text;
        n->a = std::move(e);
        if (Accept("(")) {
          BITLOOM_RETURN_IF_ERROR(ParseArgs(*n));
        } else if (Peek().kind == Token::Kind::kString || Peek().kind == Token::Kind::kInt ||
                   Peek().kind == Token::Kind::kFloat) {
          // "x is divisibleby 3", "x is sameas none": one argument without parentheses.
          BITLOOM_ASSIGN_OR_RETURN(auto arg, ParsePrimary());
          n->children.push_back(std::move(arg));
        }
        e = std::move(n);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<NodePtr> ParsePrimary() {
    const Token t = Next();
    switch (t.kind) {
      case Token::Kind::kString: {
        // Adjacent string literals concatenate, as in Python.
        std::string s = t.value.AsString();
        while (Peek().kind == Token::Kind::kString) s += Next().value.AsString();
        auto n = std::make_unique<Node>(Node::Kind::kLiteral, line_);
        n->value = Value(std::move(s));
        return n;
      }
      case Token::Kind::kInt:
      case Token::Kind::kFloat: {
        auto n = std::make_unique<Node>(Node::Kind::kLiteral, line_);
        n->value = t.value;
        return n;
      }
      case Token::Kind::kName: {
        auto n = std::make_unique<Node>(Node::Kind::kLiteral, line_);
        if (t.text == "true" || t.text == "True") {
          n->value = Value(true);
        } else if (t.text == "false" || t.text == "False") {
          n->value = Value(false);
        } else if (t.text == "none" || t.text == "None") {
          n->value = Value::None();
        } else {
          n->kind = Node::Kind::kName;
          n->name = t.text;
        }
        return n;
      }
      case Token::Kind::kOp:
        if (t.text == "(") {
          BITLOOM_ASSIGN_OR_RETURN(auto e, ParseExpr());
          if (Accept(",")) {  // a tuple: treated as a list
            auto list = std::make_unique<Node>(Node::Kind::kList, line_);
            list->children.push_back(std::move(e));
            while (!(Peek().kind == Token::Kind::kOp && Peek().text == ")")) {
              BITLOOM_ASSIGN_OR_RETURN(auto item, ParseExpr());
              list->children.push_back(std::move(item));
              if (!Accept(",")) break;
            }
            e = std::move(list);
          }
          if (!Accept(")")) return Error(line_, "expected ')'");
          return e;
        }
        if (t.text == "[") {
          auto list = std::make_unique<Node>(Node::Kind::kList, line_);
          while (!Accept("]")) {
            BITLOOM_ASSIGN_OR_RETURN(auto item, ParseExpr());
            list->children.push_back(std::move(item));
            if (!Accept(",")) {
              if (!Accept("]")) return Error(line_, "expected ']' after list items");
              break;
            }
          }
          return list;
        }
        if (t.text == "{") {
          auto dict = std::make_unique<Node>(Node::Kind::kDict, line_);
          while (!Accept("}")) {
            if (Peek().kind != Token::Kind::kString) {
              return Error(line_, "dict literal keys must be strings");
            }
            dict->keys.push_back(Next().value.AsString());
            if (!Accept(":")) return Error(line_, "expected ':' in dict literal");
            BITLOOM_ASSIGN_OR_RETURN(auto v, ParseExpr());
            dict->children.push_back(std::move(v));
            if (!Accept(",")) {
              if (!Accept("}")) return Error(line_, "expected '}' after dict items");
              break;
            }
          }
          return dict;
        }
        break;
      case Token::Kind::kEnd:
        return Error(line_, "unexpected end of expression");
    }
    return Error(line_, absl::StrCat("unexpected '", t.text, "'"));
  }

  // ---- token helpers ----

  const Token& Peek() const { return toks_[ti_]; }
  Token Next() {
    const Token& t = toks_[ti_];
    if (t.kind != Token::Kind::kEnd) ++ti_;
    return t;
  }
  bool Accept(std::string_view op) {
    if (Peek().kind == Token::Kind::kOp && Peek().text == op) {
      ++ti_;
      return true;
    }
    return false;
  }
  bool AcceptName(std::string_view name) {
    if (Peek().kind == Token::Kind::kName && Peek().text == name) {
      ++ti_;
      return true;
    }
    return false;
  }
  absl::Status ExpectEnd() {
    if (Peek().kind != Token::Kind::kEnd) {
      return Error(line_, absl::StrCat("unexpected '", Peek().kind == Token::Kind::kString
                                                           ? Peek().value.AsString()
                                                           : Peek().text,
                                       "' at the end of a tag"));
    }
    return absl::OkStatus();
  }

  std::vector<Segment> segs_;
  size_t si_ = 0;
  std::vector<Token> toks_;
  size_t ti_ = 0;
  int line_ = 1;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Node>> ParseTemplate(std::string_view source,
                                                    const TemplateOptions& options) {
  BITLOOM_ASSIGN_OR_RETURN(auto segments, Segment_(source, options));
  Parser parser(std::move(segments));
  return parser.ParseAll();
}

}  // namespace bitloom::formats::jinja
