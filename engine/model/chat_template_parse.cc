// Template text -> AST: splits text from {{ }}, {% %} and {# #} tags (with whitespace
// control), lexes and parses expressions by recursive descent, and nests blocks.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/model/chat_template_internal.h"

namespace compressd::chat_template_internal {
namespace {

// ---- Lexer for expressions inside tags ---------------------------------------------------

struct Tok {
  enum class Type : uint8_t { kName, kInt, kFloat, kString, kOp, kEnd } type;
  std::string text;
};
using T = Tok::Type;

absl::StatusOr<std::vector<Tok>> LexExpr(std::string_view src) {
  std::vector<Tok> toks;
  size_t p = 0;
  while (p < src.size()) {
    const char c = src[p];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++p;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t q = p;
      while (q < src.size() && (std::isalnum(static_cast<unsigned char>(src[q])) || src[q] == '_')) ++q;
      toks.push_back({T::kName, std::string(src.substr(p, q - p))});
      p = q;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t q = p;
      while (q < src.size() && std::isdigit(static_cast<unsigned char>(src[q]))) ++q;
      bool is_float = q + 1 < src.size() && src[q] == '.' &&
                      std::isdigit(static_cast<unsigned char>(src[q + 1]));
      if (is_float) {
        ++q;
        while (q < src.size() && std::isdigit(static_cast<unsigned char>(src[q]))) ++q;
      }
      toks.push_back({is_float ? T::kFloat : T::kInt, std::string(src.substr(p, q - p))});
      p = q;
    } else if (c == '\'' || c == '"') {
      std::string s;
      size_t q = p + 1;
      while (q < src.size() && src[q] != c) {
        if (src[q] == '\\' && q + 1 < src.size()) {
          const char e = src[++q];
          s.push_back(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e);
        } else {
          s.push_back(src[q]);
        }
        ++q;
      }
      if (q >= src.size()) return Bad("unterminated string literal");
      toks.push_back({T::kString, std::move(s)});
      p = q + 1;
    } else {
      static const char* const kOps[] = {"==", "!=", "<=", ">=", "//", "**", "(", ")", "[", "]",
                                         "{", "}", ".", ",", ":", "|", "~", "+", "-", "*", "/",
                                         "%", "<", ">", "="};
      bool found = false;
      for (const char* op : kOps) {
        const size_t n = std::char_traits<char>::length(op);
        if (src.substr(p, n) == op) {
          toks.push_back({T::kOp, op});
          p += n;
          found = true;
          break;
        }
      }
      if (!found) return Bad(absl::StrCat("unexpected character '", std::string(1, c), "'"));
    }
  }
  toks.push_back({T::kEnd, ""});
  return toks;
}

// ---- Parser ----------------------------------------------------------------------------

class ExprParser {
 public:
  ExprParser(std::vector<Tok> toks) : toks_(std::move(toks)) {}

  const Tok& Peek(size_t ahead = 0) const { return toks_[std::min(pos_ + ahead, toks_.size() - 1)]; }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).type == T::kOp && Peek(ahead).text == op;
  }
  bool IsName(const char* n, size_t ahead = 0) const {
    return Peek(ahead).type == T::kName && Peek(ahead).text == n;
  }
  bool AtEnd() const { return Peek().type == T::kEnd; }
  Tok Next() { Tok t = Peek(); if (pos_ < toks_.size() - 1) ++pos_; return t; }
  absl::Status Expect(const char* op) {
    if (!IsOp(op)) return Bad(absl::StrCat("expected '", op, "' before '", Peek().text, "'"));
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().type != T::kName) return Bad(absl::StrCat("expected a name, got '", Peek().text, "'"));
    return Next().text;
  }

  absl::StatusOr<ExprPtr> Parse() { return Ternary(0); }
  // An expression without the trailing `if` (for `for ... in X if cond`).
  absl::StatusOr<ExprPtr> ParseNoTernary() { return Or(0); }

 private:
  static ExprPtr Make(EK kind, std::string name = "") {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->name = std::move(name);
    return e;
  }
  absl::Status Deeper(int depth) const {
    return depth > kMaxDepth ? Bad("expression nested too deeply") : absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> Ternary(int d) {
    RETURN_IF_ERROR(Deeper(d));
    ASSIGN_OR_RETURN(ExprPtr e, Or(d + 1));
    if (!IsName("if")) return e;
    Next();
    ASSIGN_OR_RETURN(ExprPtr cond, Or(d + 1));
    ExprPtr other = Make(EK::kLiteral);  // undefined when there is no else
    if (IsName("else")) {
      Next();
      ASSIGN_OR_RETURN(other, Ternary(d + 1));
    }
    ExprPtr c = Make(EK::kCond);
    c->args.push_back(std::move(cond));
    c->args.push_back(std::move(e));
    c->args.push_back(std::move(other));
    return c;
  }
  ExprPtr Binary(std::string op, ExprPtr a, ExprPtr b) {
    ExprPtr e = Make(EK::kBinary, std::move(op));
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }
  absl::StatusOr<ExprPtr> Or(int d) {
    RETURN_IF_ERROR(Deeper(d));
    ASSIGN_OR_RETURN(ExprPtr e, And(d + 1));
    for (int n = 1; IsName("or"); ++n) {
      RETURN_IF_ERROR(Deeper(d + n));
      Next();
      ASSIGN_OR_RETURN(ExprPtr r, And(d + 1));
      e = Binary("or", std::move(e), std::move(r));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> And(int d) {
    ASSIGN_OR_RETURN(ExprPtr e, Not(d + 1));
    for (int n = 1; IsName("and"); ++n) {
      RETURN_IF_ERROR(Deeper(d + n));
      Next();
      ASSIGN_OR_RETURN(ExprPtr r, Not(d + 1));
      e = Binary("and", std::move(e), std::move(r));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> Not(int d) {
    RETURN_IF_ERROR(Deeper(d));
    if (!IsName("not")) return Compare(d + 1);
    Next();
    ASSIGN_OR_RETURN(ExprPtr inner, Not(d + 1));
    ExprPtr e = Make(EK::kUnary, "not");
    e->args.push_back(std::move(inner));
    return e;
  }
  absl::StatusOr<ExprPtr> Compare(int d) {
    ASSIGN_OR_RETURN(ExprPtr e, Arith(d + 1, 0));
    for (int n = 1;; ++n) {
      RETURN_IF_ERROR(Deeper(d + n));
      std::string op;
      if (Peek().type == T::kOp && (Peek().text == "==" || Peek().text == "!=" ||
                                    Peek().text == "<" || Peek().text == "<=" ||
                                    Peek().text == ">" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "not in";
      } else {
        return e;
      }
      ASSIGN_OR_RETURN(ExprPtr r, Arith(d + 1, 0));
      e = Binary(op, std::move(e), std::move(r));
    }
  }
  // Levels: 0 = + -, 1 = ~, 2 = * / // %, then unary.
  absl::StatusOr<ExprPtr> Arith(int d, int level) {
    RETURN_IF_ERROR(Deeper(d));
    static const std::vector<std::vector<std::string>> kLevels = {
        {"+", "-"}, {"~"}, {"*", "/", "//", "%"}};
    if (level == 3) return Unary(d + 1);
    ASSIGN_OR_RETURN(ExprPtr e, Arith(d + 1, level + 1));
    for (int n = 1; Peek().type == T::kOp; ++n) {
      RETURN_IF_ERROR(Deeper(d + n));
      const auto& ops = kLevels[level];
      if (std::find(ops.begin(), ops.end(), Peek().text) == ops.end()) break;
      std::string op = Next().text;
      ASSIGN_OR_RETURN(ExprPtr r, Arith(d + 1, level + 1));
      e = Binary(op, std::move(e), std::move(r));
    }
    return e;
  }
  absl::StatusOr<ExprPtr> Unary(int d) {
    RETURN_IF_ERROR(Deeper(d));
    if (IsOp("-") || IsOp("+")) {
      std::string op = Next().text;
      ASSIGN_OR_RETURN(ExprPtr inner, Unary(d + 1));
      ExprPtr e = Make(EK::kUnary, op);
      e->args.push_back(std::move(inner));
      return e;
    }
    ASSIGN_OR_RETURN(ExprPtr e, Primary(d + 1));
    return Postfix(d + 1, std::move(e));
  }
  absl::Status Args(int d, Expr* call) {
    RETURN_IF_ERROR(Expect("("));
    while (!IsOp(")")) {
      if (AtEnd()) return Bad("unterminated argument list");
      if (Peek().type == T::kName && IsOp("=", 1)) {
        call->kwargs.push_back(Next().text);
        Next();
      } else if (!call->kwargs.empty()) {
        return Bad("positional argument after keyword argument");
      }
      ASSIGN_OR_RETURN(ExprPtr a, Ternary(d + 1));
      call->args.push_back(std::move(a));
      if (!IsOp(")")) RETURN_IF_ERROR(Expect(","));
    }
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<ExprPtr> Postfix(int d, ExprPtr e) {
    for (int n = 0;; ++n) {
      RETURN_IF_ERROR(Deeper(d + n));
      if (IsOp(".")) {
        Next();
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        ExprPtr a = Make(EK::kAttr, name);
        a->args.push_back(std::move(e));
        e = std::move(a);
      } else if (IsOp("[")) {
        Next();
        ExprPtr parts[3];
        int colons = 0;
        while (!IsOp("]")) {
          if (AtEnd()) return Bad("unterminated subscript");
          if (IsOp(":")) {
            if (++colons > 2) return Bad("bad slice");
            Next();
            continue;
          }
          if (parts[colons]) return Bad("bad subscript");
          ASSIGN_OR_RETURN(parts[colons], Ternary(d + 1));
        }
        Next();
        ExprPtr s = Make(colons == 0 ? EK::kIndex : EK::kSlice);
        s->args.push_back(std::move(e));
        if (colons == 0) {
          if (!parts[0]) return Bad("empty subscript");
          s->args.push_back(std::move(parts[0]));
        } else {
          for (auto& p : parts) s->args.push_back(p ? std::move(p) : Make(EK::kLiteral));
        }
        e = std::move(s);
      } else if (IsOp("(")) {
        ExprPtr c = Make(EK::kCall);
        c->args.push_back(std::move(e));
        RETURN_IF_ERROR(Args(d + 1, c.get()));
        e = std::move(c);
      } else if (IsOp("|")) {
        Next();
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        ExprPtr f = Make(EK::kFilter, name);
        f->args.push_back(std::move(e));
        if (IsOp("(")) RETURN_IF_ERROR(Args(d + 1, f.get()));
        e = std::move(f);
      } else if (IsName("is")) {
        Next();
        ExprPtr t = Make(EK::kTest);
        if (IsName("not")) {
          Next();
          t->negate = true;
        }
        ASSIGN_OR_RETURN(t->name, ExpectName());
        t->args.push_back(std::move(e));
        if (IsOp("(")) {
          RETURN_IF_ERROR(Args(d + 1, t.get()));
        } else if (Peek().type == T::kString || Peek().type == T::kInt) {
          ASSIGN_OR_RETURN(ExprPtr arg, Primary(d + 1));  // `is equalto 'x'` style
          t->args.push_back(std::move(arg));
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }
  absl::StatusOr<ExprPtr> Primary(int d) {
    RETURN_IF_ERROR(Deeper(d));
    Tok t = Next();
    switch (t.type) {
      case T::kInt: {
        ExprPtr e = Make(EK::kLiteral);
        int64_t v = 0;
        for (char c : t.text) {
          if (v > (INT64_MAX - (c - '0')) / 10) return Bad("integer literal too large");
          v = v * 10 + (c - '0');
        }
        e->literal = Value::Int(v);
        return e;
      }
      case T::kFloat: {
        ExprPtr e = Make(EK::kLiteral);
        e->literal = Value::Float(std::strtod(t.text.c_str(), nullptr));
        return e;
      }
      case T::kString: {
        ExprPtr e = Make(EK::kLiteral);
        std::string s = std::move(t.text);
        while (Peek().type == T::kString) s += Next().text;  // adjacent literals concatenate
        e->literal = Value::Str(std::move(s));
        return e;
      }
      case T::kName: {
        ExprPtr e = Make(EK::kLiteral);
        if (t.text == "true" || t.text == "True") {
          e->literal = Value::Bool(true);
        } else if (t.text == "false" || t.text == "False") {
          e->literal = Value::Bool(false);
        } else if (t.text == "none" || t.text == "None") {
          e->literal = Value::None();
        } else {
          e = Make(EK::kName, t.text);
        }
        return e;
      }
      case T::kOp:
        if (t.text == "(") {
          ASSIGN_OR_RETURN(ExprPtr e, Ternary(d + 1));
          if (IsOp(",")) return Bad("tuples are not supported");
          RETURN_IF_ERROR(Expect(")"));
          return e;
        }
        if (t.text == "[" || t.text == "{") {
          const bool is_list = t.text == "[";
          ExprPtr e = Make(is_list ? EK::kList : EK::kDict);
          const char* close = is_list ? "]" : "}";
          while (!IsOp(close)) {
            if (AtEnd()) return Bad(absl::StrCat("unterminated ", is_list ? "list" : "dict"));
            ASSIGN_OR_RETURN(ExprPtr item, Ternary(d + 1));
            e->args.push_back(std::move(item));
            if (!is_list) {
              RETURN_IF_ERROR(Expect(":"));
              ASSIGN_OR_RETURN(ExprPtr val, Ternary(d + 1));
              e->args.push_back(std::move(val));
            }
            if (!IsOp(close)) RETURN_IF_ERROR(Expect(","));
          }
          Next();
          return e;
        }
        break;
      case T::kEnd:
        return Bad("unexpected end of expression");
    }
    return Bad(absl::StrCat("unexpected '", t.text, "'"));
  }

  std::vector<Tok> toks_;
  size_t pos_ = 0;
};

// ---- Tags and blocks -------------------------------------------------------------------

struct Segment {
  enum class Kind : uint8_t { kText, kExpr, kStmt } kind;
  std::string body;
};

// Finds `close` from p, skipping quoted strings; npos when absent.
size_t FindClose(std::string_view src, size_t p, std::string_view close) {
  while (p < src.size()) {
    const char c = src[p];
    if (c == '\'' || c == '"') {
      const size_t q = src.find(c, p + 1);
      if (q == std::string_view::npos) return q;
      p = q + 1;
    } else if (src.compare(p, close.size(), close) == 0) {
      return p;
    } else {
      ++p;
    }
  }
  return std::string_view::npos;
}

absl::StatusOr<std::vector<Segment>> Split(std::string_view src) {
  std::vector<Segment> segs;
  bool strip_ws = false;       // the previous tag ended with '-'
  bool trim_newline = false;   // the previous tag was a block/comment (trim_blocks)
  size_t pos = 0;
  while (pos <= src.size()) {
    size_t open = pos;
    while ((open = src.find('{', open)) != std::string_view::npos) {
      if (open + 1 < src.size() && (src[open + 1] == '{' || src[open + 1] == '%' ||
                                    src[open + 1] == '#')) {
        break;
      }
      ++open;
    }
    std::string text(src.substr(pos, open == std::string_view::npos ? src.npos : open - pos));
    bool line_start = pos == 0 || src[pos - 1] == '\n';
    if (strip_ws) {
      text.erase(0, text.find_first_not_of(" \t\r\n"));
      if (text.find_first_not_of(" \t\r\n") == std::string::npos) text.clear();
    } else if (trim_newline && !text.empty()) {
      if (text[0] == '\n') {
        text.erase(0, 1);
        line_start = true;
      } else if (text.compare(0, 2, "\r\n") == 0) {
        text.erase(0, 2);
        line_start = true;
      }
    }
    strip_ws = trim_newline = false;
    if (open == std::string_view::npos) {
      if (!text.empty()) segs.push_back({Segment::Kind::kText, std::move(text)});
      break;
    }
    const char type = src[open + 1];
    size_t body = open + 2;
    const char mod = body < src.size() ? src[body] : '\0';
    if (mod == '-' || mod == '+') ++body;
    if (mod == '-') {
      const size_t keep = text.find_last_not_of(" \t\r\n");
      text.resize(keep == std::string::npos ? 0 : keep + 1);
    } else if (type != '{' && mod != '+') {
      // lstrip_blocks: spaces and tabs from the line start up to a block tag go.
      const size_t nl = text.find_last_of('\n');
      const size_t line = nl == std::string::npos ? 0 : nl + 1;
      if (text.find_first_not_of(" \t", line) == std::string::npos &&
          (nl != std::string::npos || line_start)) {
        text.resize(line);
      }
    }
    if (!text.empty()) segs.push_back({Segment::Kind::kText, std::move(text)});
    const std::string_view close = type == '{' ? "}}" : type == '%' ? "%}" : "#}";
    const size_t end = type == '#' ? src.find(close, body) : FindClose(src, body, close);
    if (end == std::string_view::npos) {
      return Bad(absl::StrCat("unclosed tag '", std::string(src.substr(open, 2)), "'"));
    }
    size_t body_end = end;
    if (body_end > body && src[body_end - 1] == '-') {
      --body_end;
      strip_ws = true;
    } else if (type != '{') {
      trim_newline = true;
    }
    if (type != '#') {
      segs.push_back({type == '{' ? Segment::Kind::kExpr : Segment::Kind::kStmt,
                      std::string(src.substr(body, body_end - body))});
    }
    pos = end + 2;
  }
  return segs;
}

class BlockParser {
 public:
  explicit BlockParser(std::vector<Segment> segs) : segs_(std::move(segs)) {}

  absl::StatusOr<std::vector<Node>> ParseAll() {
    std::vector<Node> nodes;
    ASSIGN_OR_RETURN(std::string end, Body(0, &nodes));
    if (!end.empty()) return Bad(absl::StrCat("unexpected '{% ", end, " %}'"));
    return nodes;
  }

 private:
  static Node MakeNode(Node::Kind k) {
    Node n;
    n.kind = k;
    return n;
  }

  // Parses nodes until a block-ending tag (returned, with parser_ left after its keyword)
  // or the end of the template (returns "").
  absl::StatusOr<std::string> Body(int depth, std::vector<Node>* out) {
    if (depth > kMaxDepth) return Bad("blocks nested too deeply");
    while (idx_ < segs_.size()) {
      Segment& seg = segs_[idx_++];
      if (seg.kind == Segment::Kind::kText) {
        Node n = MakeNode(Node::Kind::kText);
        n.text = std::move(seg.body);
        out->push_back(std::move(n));
        continue;
      }
      ASSIGN_OR_RETURN(std::vector<Tok> toks, LexExpr(seg.body));
      parser_ = std::make_unique<ExprParser>(std::move(toks));
      if (seg.kind == Segment::Kind::kExpr) {
        Node n = MakeNode(Node::Kind::kOutput);
        ASSIGN_OR_RETURN(ExprPtr e, parser_->Parse());
        n.exprs.push_back(std::move(e));
        RETURN_IF_ERROR(EndOfTag());
        out->push_back(std::move(n));
        continue;
      }
      ASSIGN_OR_RETURN(std::string kw, parser_->ExpectName());
      if (kw == "if") {
        RETURN_IF_ERROR(If(depth, out));
      } else if (kw == "for") {
        RETURN_IF_ERROR(For(depth, out));
      } else if (kw == "set") {
        RETURN_IF_ERROR(Set(depth, out));
      } else if (kw == "break" || kw == "continue") {
        RETURN_IF_ERROR(EndOfTag());
        Node n = MakeNode(Node::Kind::kText);
        n.attr = kw;  // a loop-control marker
        out->push_back(std::move(n));
      } else if (kw == "generation" || kw == "endgeneration") {
        RETURN_IF_ERROR(EndOfTag());  // transformers' assistant-mask markers: no output
      } else if (kw == "elif" || kw == "else" || kw == "endif" || kw == "endfor" ||
                 kw == "endset") {
        return kw;
      } else {
        return Bad(absl::StrCat("'{% ", kw, " %}' is not supported"));
      }
    }
    return std::string();
  }

  absl::Status EndOfTag() {
    if (!parser_->AtEnd()) return Bad(absl::StrCat("unexpected '", parser_->Peek().text, "'"));
    return absl::OkStatus();
  }

  absl::Status If(int depth, std::vector<Node>* out) {
    Node n = MakeNode(Node::Kind::kIf);
    while (true) {
      ASSIGN_OR_RETURN(ExprPtr cond, parser_->Parse());
      RETURN_IF_ERROR(EndOfTag());
      n.exprs.push_back(std::move(cond));
      n.bodies.emplace_back();
      ASSIGN_OR_RETURN(std::string end, Body(depth + 1, &n.bodies.back()));
      if (end == "elif") continue;
      if (end == "else") {
        RETURN_IF_ERROR(EndOfTag());
        n.bodies.emplace_back();
        ASSIGN_OR_RETURN(end, Body(depth + 1, &n.bodies.back()));
      }
      if (end != "endif") return Bad("'{% if %}' without '{% endif %}'");
      RETURN_IF_ERROR(EndOfTag());
      out->push_back(std::move(n));
      return absl::OkStatus();
    }
  }

  absl::Status For(int depth, std::vector<Node>* out) {
    Node n = MakeNode(Node::Kind::kFor);
    while (true) {
      ASSIGN_OR_RETURN(std::string var, parser_->ExpectName());
      n.vars.push_back(var);
      if (!parser_->IsOp(",")) break;
      parser_->Next();
    }
    if (!parser_->IsName("in")) return Bad("expected 'in' in '{% for %}'");
    parser_->Next();
    ASSIGN_OR_RETURN(ExprPtr iter, parser_->ParseNoTernary());
    n.exprs.push_back(std::move(iter));
    if (parser_->IsName("if")) {
      parser_->Next();
      ASSIGN_OR_RETURN(ExprPtr cond, parser_->ParseNoTernary());
      n.exprs.push_back(std::move(cond));
    }
    if (parser_->IsName("recursive")) return Bad("'{% for ... recursive %}' is not supported");
    RETURN_IF_ERROR(EndOfTag());
    n.bodies.emplace_back();
    ASSIGN_OR_RETURN(std::string end, Body(depth + 1, &n.bodies.back()));
    if (end == "else") {
      RETURN_IF_ERROR(EndOfTag());
      n.bodies.emplace_back();
      ASSIGN_OR_RETURN(end, Body(depth + 1, &n.bodies.back()));
    }
    if (end != "endfor") return Bad("'{% for %}' without '{% endfor %}'");
    RETURN_IF_ERROR(EndOfTag());
    out->push_back(std::move(n));
    return absl::OkStatus();
  }

  absl::Status Set(int depth, std::vector<Node>* out) {
    ASSIGN_OR_RETURN(std::string var, parser_->ExpectName());
    if (parser_->IsOp(",")) return Bad("'{% set a, b = ... %}' is not supported");
    if (parser_->AtEnd()) {  // {% set x %}...{% endset %}
      Node n = MakeNode(Node::Kind::kBlockSet);
      n.text = var;
      n.bodies.emplace_back();
      ASSIGN_OR_RETURN(std::string end, Body(depth + 1, &n.bodies.back()));
      if (end != "endset") return Bad("'{% set %}' without '{% endset %}'");
      RETURN_IF_ERROR(EndOfTag());
      out->push_back(std::move(n));
      return absl::OkStatus();
    }
    Node n = MakeNode(Node::Kind::kSet);
    n.text = var;
    if (parser_->IsOp(".")) {
      parser_->Next();
      ASSIGN_OR_RETURN(n.attr, parser_->ExpectName());
    }
    RETURN_IF_ERROR(parser_->Expect("="));
    ASSIGN_OR_RETURN(ExprPtr value, parser_->Parse());
    RETURN_IF_ERROR(EndOfTag());
    n.exprs.push_back(std::move(value));
    out->push_back(std::move(n));
    return absl::OkStatus();
  }

  std::vector<Segment> segs_;
  size_t idx_ = 0;
  std::unique_ptr<ExprParser> parser_;
};

}  // namespace

absl::StatusOr<std::vector<Node>> ParseTemplate(std::string_view src) {
  // Like Jinja (keep_trailing_newline=False), one trailing newline is not part of the output.
  if (!src.empty() && src.back() == '\n') {
    src.remove_suffix(src.size() > 1 && src[src.size() - 2] == '\r' ? 2 : 1);
  }
  ASSIGN_OR_RETURN(std::vector<Segment> segs, Split(src));
  return BlockParser(std::move(segs)).ParseAll();
}

}  // namespace compressd::chat_template_internal
