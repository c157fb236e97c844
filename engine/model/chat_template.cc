// Chat template rendering: a small Jinja2 interpreter (lexer -> AST -> tree walk) covering
// what Hugging Face chat templates use, rendered as transformers does (trim_blocks and
// lstrip_blocks on). Arbitrary template text is safe: parse depth, loop steps, string and
// output sizes are bounded, and every failure is a Status.
#include "engine/model/chat_template.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "engine/model/chat_template_internal.h"

namespace compressd {
namespace chat_template_internal {

const Value* DictGet(const Dict& d, std::string_view key) {
  for (const auto& [k, v] : d) {
    if (k == key) return &v;
  }
  return nullptr;
}

void DictSet(Dict* d, const std::string& key, Value v) {
  for (auto& kv : *d) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  d->emplace_back(key, std::move(v));
}

bool Reaches(const Value& v, const Dict* d) {
  // Containers are shared, so a value is a DAG: visit each container once.
  absl::flat_hash_set<const void*> seen;
  std::vector<const Value*> todo = {&v};
  while (!todo.empty()) {
    const Value* x = todo.back();
    todo.pop_back();
    const void* c = x->is(K::kDict) ? static_cast<const void*>(x->dict.get())
                    : x->is(K::kList) ? static_cast<const void*>(x->list.get())
                                      : nullptr;
    if (c == nullptr) continue;
    if (c == d) return true;
    if (!seen.insert(c).second) continue;
    if (x->is(K::kDict)) {
      for (const auto& kv : *x->dict) todo.push_back(&kv.second);
    } else {
      for (const Value& e : *x->list) todo.push_back(&e);
    }
  }
  return false;
}

bool Truthy(const Value& v) {
  switch (v.kind) {
    case K::kUndefined: case K::kNone: return false;
    case K::kBool: return v.b;
    case K::kInt: return v.i != 0;
    case K::kFloat: return v.f != 0;
    case K::kString: return !v.s.empty();
    case K::kList: return !v.list->empty();
    case K::kDict: return !v.dict->empty();
  }
  return false;
}

std::string FloatText(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == std::floor(d) && std::fabs(d) < 1e16) return absl::StrCat(static_cast<int64_t>(d), ".0");
  return absl::StrCat(d);
}

void AppendJsonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (char c : s) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      default:
        if (static_cast<uint8_t>(c) < 0x20) {
          static const char kHex[] = "0123456789abcdef";
          out->append("\\u00");
          out->push_back(kHex[(c >> 4) & 0xF]);
          out->push_back(kHex[c & 0xF]);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

// Python-style text: repr for items inside containers (json for tojson).
void AppendText(const Value& v, bool repr, bool json, std::string* out) {
  switch (v.kind) {
    case K::kUndefined: if (json) out->append("null"); return;
    case K::kNone: out->append(json ? "null" : "None"); return;
    case K::kBool: out->append(json ? (v.b ? "true" : "false") : (v.b ? "True" : "False")); return;
    case K::kInt: out->append(absl::StrCat(v.i)); return;
    case K::kFloat: out->append(FloatText(v.f)); return;
    case K::kString:
      if (json) {
        AppendJsonString(v.s, out);
      } else if (repr) {
        absl::StrAppend(out, "'", v.s, "'");
      } else {
        out->append(v.s);
      }
      return;
    case K::kList:
      out->push_back('[');
      for (size_t k = 0; k < v.list->size() && out->size() < kMaxOutput; ++k) {
        if (k > 0) out->append(", ");
        AppendText((*v.list)[k], true, json, out);
      }
      out->push_back(']');
      return;
    case K::kDict:
      out->push_back('{');
      for (size_t k = 0; k < v.dict->size() && out->size() < kMaxOutput; ++k) {
        if (k > 0) out->append(", ");
        AppendText(Value::Str((*v.dict)[k].first), true, json, out);
        out->append(": ");
        AppendText((*v.dict)[k].second, true, json, out);
      }
      out->push_back('}');
      return;
  }
}

std::string Text(const Value& v) {
  std::string s;
  AppendText(v, false, false, &s);
  return s;
}

bool Equal(const Value& a, const Value& b) {
  if (a.numeric() && b.numeric()) return a.num() == b.num();
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case K::kString: return a.s == b.s;
    case K::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!Equal((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    case K::kDict: return a.dict == b.dict;
    default: return true;  // undefined, none
  }
}


}  // namespace chat_template_internal
namespace {
using namespace chat_template_internal;  // NOLINT: the interpreter's own vocabulary

// Python's sequence indexing: negative counts from the end; false when out of range.
bool NormIndex(int64_t idx, size_t n, size_t* out) {
  if (idx < 0) idx += static_cast<int64_t>(n);
  if (idx < 0 || idx >= static_cast<int64_t>(n)) return false;
  *out = static_cast<size_t>(idx);
  return true;
}

class Renderer {
 public:
  absl::StatusOr<std::string> Run(const std::vector<Node>& nodes, Dict globals) {
    scopes_.push_back(std::move(globals));
    std::string out;
    out_ = &out;
    Flow flow = Flow::kNormal;
    RETURN_IF_ERROR(Exec(nodes, &flow));
    return out;
  }

 private:
  enum class Flow : uint8_t { kNormal, kBreak, kContinue };

  absl::Status Step() {
    return ++steps_ > kMaxSteps ? Bad("template takes too many steps") : absl::OkStatus();
  }
  absl::Status Emit(const std::string& s) {
    if (out_->size() + s.size() > kMaxOutput) return Bad("output too large");
    out_->append(s);
    return absl::OkStatus();
  }
  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      if (const Value* v = DictGet(*it, name)) return *v;
    }
    return Value();
  }

  absl::Status Exec(const std::vector<Node>& nodes, Flow* flow) {
    for (const Node& n : nodes) {
      RETURN_IF_ERROR(Step());
      switch (n.kind) {
        case Node::Kind::kText:
          if (n.attr == "break" || n.attr == "continue") {
            *flow = n.attr == "break" ? Flow::kBreak : Flow::kContinue;
            return absl::OkStatus();
          }
          RETURN_IF_ERROR(Emit(n.text));
          break;
        case Node::Kind::kOutput: {
          ASSIGN_OR_RETURN(Value v, Eval(*n.exprs[0]));
          RETURN_IF_ERROR(Emit(Text(v)));
          break;
        }
        case Node::Kind::kIf: {
          size_t k = 0;
          for (; k < n.exprs.size(); ++k) {
            ASSIGN_OR_RETURN(Value c, Eval(*n.exprs[k]));
            if (Truthy(c)) break;
          }
          if (k < n.bodies.size()) RETURN_IF_ERROR(Exec(n.bodies[k], flow));
          if (*flow != Flow::kNormal) return absl::OkStatus();
          break;
        }
        case Node::Kind::kFor:
          RETURN_IF_ERROR(For(n));
          break;
        case Node::Kind::kSet: {
          ASSIGN_OR_RETURN(Value v, Eval(*n.exprs[0]));
          if (n.attr.empty()) {
            DictSet(&scopes_.back(), n.text, std::move(v));
          } else {
            Value target = Lookup(n.text);
            if (!target.is(K::kDict)) return Bad(absl::StrCat("'", n.text, "' is not a namespace"));
            // Namespaces are shared (reference counted): storing one inside itself would make
            // a cycle that is never freed (found by chat_template_fuzz).
            if (Reaches(v, target.dict.get())) {
              return Bad(absl::StrCat("'", n.text, ".", n.attr, "' cannot hold the namespace '",
                                      n.text, "' itself"));
            }
            DictSet(target.dict.get(), n.attr, std::move(v));
          }
          break;
        }
        case Node::Kind::kBlockSet: {
          std::string captured;
          std::string* saved = out_;
          out_ = &captured;
          Flow inner = Flow::kNormal;
          absl::Status st = Exec(n.bodies[0], &inner);
          out_ = saved;
          RETURN_IF_ERROR(st);
          DictSet(&scopes_.back(), n.text, Value::Str(std::move(captured)));
          break;
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status Bind(const Node& n, const Value& item, Dict* scope) {
    if (n.vars.size() == 1) {
      DictSet(scope, n.vars[0], item);
      return absl::OkStatus();
    }
    if (!item.is(K::kList) || item.list->size() != n.vars.size()) {
      return Bad("cannot unpack loop item into loop variables");
    }
    for (size_t k = 0; k < n.vars.size(); ++k) DictSet(scope, n.vars[k], (*item.list)[k]);
    return absl::OkStatus();
  }

  absl::Status For(const Node& n) {
    ASSIGN_OR_RETURN(Value seq, Eval(*n.exprs[0]));
    List items;
    if (seq.is(K::kList)) {
      items = *seq.list;
    } else if (seq.is(K::kDict)) {
      for (const auto& kv : *seq.dict) items.push_back(Value::Str(kv.first));
    } else if (seq.is(K::kString)) {
      for (char c : seq.s) items.push_back(Value::Str(std::string(1, c)));
    } else if (!seq.is(K::kUndefined) && !seq.is(K::kNone)) {
      return Bad("'{% for %}' over a value that is not a sequence");
    }
    if (n.exprs.size() > 1) {  // `for x in xs if cond`: filter before numbering
      List kept;
      for (const Value& item : items) {
        RETURN_IF_ERROR(Step());
        scopes_.emplace_back();
        absl::Status st = Bind(n, item, &scopes_.back());
        absl::StatusOr<Value> c = st.ok() ? Eval(*n.exprs[1]) : absl::StatusOr<Value>(st);
        scopes_.pop_back();
        if (!c.ok()) return c.status();
        if (Truthy(*c)) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (n.bodies.size() > 1) {
        Flow flow = Flow::kNormal;
        return Exec(n.bodies[1], &flow);
      }
      return absl::OkStatus();
    }
    if (scopes_.size() > static_cast<size_t>(kMaxDepth)) return Bad("loops nested too deeply");
    const auto len = static_cast<int64_t>(items.size());
    // One `loop` object updated in place: cheaper than a fresh dict per iteration.
    Value loop = Value::MakeDict({{"index", Value()}, {"index0", Value()}, {"revindex", Value()},
                                  {"revindex0", Value()}, {"first", Value()}, {"last", Value()},
                                  {"length", Value::Int(len)}, {"previtem", Value()},
                                  {"nextitem", Value()}});
    for (int64_t k = 0; k < len; ++k) {
      RETURN_IF_ERROR(Step());
      Dict& fields = *loop.dict;
      fields[0].second = Value::Int(k + 1);
      fields[1].second = Value::Int(k);
      fields[2].second = Value::Int(len - k);
      fields[3].second = Value::Int(len - k - 1);
      fields[4].second = Value::Bool(k == 0);
      fields[5].second = Value::Bool(k == len - 1);
      fields[7].second = k > 0 ? items[k - 1] : Value();
      fields[8].second = k + 1 < len ? items[k + 1] : Value();
      scopes_.emplace_back();
      Dict& scope = scopes_.back();
      scope.reserve(n.vars.size() + 2);
      scope.emplace_back("loop", loop);
      RETURN_IF_ERROR(Bind(n, items[k], &scope));
      Flow flow = Flow::kNormal;
      absl::Status st = Exec(n.bodies[0], &flow);
      scopes_.pop_back();
      RETURN_IF_ERROR(st);
      if (flow == Flow::kBreak) break;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Args> EvalArgs(const Expr& e) {
    Args a;
    const size_t nk = e.kwargs.size();
    for (size_t k = 1; k < e.args.size(); ++k) {
      ASSIGN_OR_RETURN(Value v, Eval(*e.args[k]));
      if (k + nk >= e.args.size()) {
        a.kw.emplace_back(e.kwargs[k + nk - e.args.size()], std::move(v));
      } else {
        a.pos.push_back(std::move(v));
      }
    }
    return a;
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    RETURN_IF_ERROR(Step());
    switch (e.kind) {
      case EK::kLiteral: return e.literal;
      case EK::kName: return Lookup(e.name);
      case EK::kList: {
        List l;
        for (const auto& a : e.args) {
          ASSIGN_OR_RETURN(Value v, Eval(*a));
          l.push_back(std::move(v));
        }
        return Value::MakeList(std::move(l));
      }
      case EK::kDict: {
        Dict d;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          ASSIGN_OR_RETURN(Value key, Eval(*e.args[k]));
          ASSIGN_OR_RETURN(Value v, Eval(*e.args[k + 1]));
          DictSet(&d, Text(key), std::move(v));
        }
        return Value::MakeDict(std::move(d));
      }
      case EK::kAttr: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        return Member(obj, Value::Str(e.name));
      }
      case EK::kIndex: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(Value key, Eval(*e.args[1]));
        return Member(obj, key);
      }
      case EK::kSlice: return Slice(e);
      case EK::kCall: return Call(e);
      case EK::kFilter: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(Args a, EvalArgs(e));
        return Filter(e.name, v, a);
      }
      case EK::kTest: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(Args a, EvalArgs(e));
        ASSIGN_OR_RETURN(bool r, Test(e.name, v, a.pos.empty() ? nullptr : &a.pos[0]));
        return Value::Bool(r != e.negate);
      }
      case EK::kUnary: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        if (e.name == "not") return Value::Bool(!Truthy(v));
        if (v.is(K::kFloat)) return Value::Float(e.name == "-" ? -v.f : v.f);
        if (!v.numeric()) return Bad(absl::StrCat("unary '", e.name, "' on a non-number"));
        const int64_t x = v.is(K::kInt) ? v.i : v.b;
        if (e.name == "-" && x == INT64_MIN) return Bad("integer overflow");
        return Value::Int(e.name == "-" ? -x : x);
      }
      case EK::kBinary: return Binary(e);
      case EK::kCond: {
        ASSIGN_OR_RETURN(Value c, Eval(*e.args[0]));
        return Eval(*e.args[Truthy(c) ? 1 : 2]);
      }
    }
    return Bad("unknown expression");
  }

  static Value Member(const Value& obj, const Value& key) {
    if (obj.is(K::kDict)) {
      const Value* v = DictGet(*obj.dict, Text(key));
      return v != nullptr ? *v : Value();
    }
    if (key.is(K::kInt) && (obj.is(K::kList) || obj.is(K::kString))) {
      size_t i;
      const size_t n = obj.is(K::kList) ? obj.list->size() : obj.s.size();
      if (!NormIndex(key.i, n, &i)) return Value();
      return obj.is(K::kList) ? (*obj.list)[i] : Value::Str(std::string(1, obj.s[i]));
    }
    return Value();
  }

  absl::StatusOr<Value> Slice(const Expr& e) {
    ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
    int64_t bounds[3];
    bool given[3];
    for (int k = 0; k < 3; ++k) {
      ASSIGN_OR_RETURN(Value v, Eval(*e.args[k + 1]));
      given[k] = !v.is(K::kUndefined) && !v.is(K::kNone);
      if (given[k] && !v.is(K::kInt)) return Bad("slice bounds must be integers");
      bounds[k] = v.i;
    }
    const int64_t step = given[2] ? bounds[2] : 1;
    if (step == 0) return Bad("slice step cannot be zero");
    if (!obj.is(K::kList) && !obj.is(K::kString)) return Value();
    const auto n = static_cast<int64_t>(obj.is(K::kList) ? obj.list->size() : obj.s.size());
    auto clamp = [&](int64_t v, int64_t lo, int64_t hi) {
      if (v < 0) v += n;
      return std::max(lo, std::min(v, hi));
    };
    int64_t start = given[0] ? clamp(bounds[0], step > 0 ? 0 : -1, step > 0 ? n : n - 1)
                             : (step > 0 ? 0 : n - 1);
    const int64_t stop = given[1] ? clamp(bounds[1], step > 0 ? 0 : -1, step > 0 ? n : n - 1)
                                  : (step > 0 ? n : -1);
    List l;
    std::string s;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (obj.is(K::kList)) {
        l.push_back((*obj.list)[i]);
      } else {
        s.push_back(obj.s[i]);
      }
    }
    return obj.is(K::kList) ? Value::MakeList(std::move(l)) : Value::Str(std::move(s));
  }

  absl::StatusOr<Value> Binary(const Expr& e) {
    const std::string& op = e.name;
    ASSIGN_OR_RETURN(Value a, Eval(*e.args[0]));
    if (op == "and") return Truthy(a) ? Eval(*e.args[1]) : a;
    if (op == "or") return Truthy(a) ? a : Eval(*e.args[1]);
    ASSIGN_OR_RETURN(Value b, Eval(*e.args[1]));
    if (op == "==") return Value::Bool(Equal(a, b));
    if (op == "!=") return Value::Bool(!Equal(a, b));
    if (op == "in" || op == "not in") {
      bool found = false;
      if (b.is(K::kString) && a.is(K::kString)) {
        found = b.s.find(a.s) != std::string::npos;
      } else if (b.is(K::kList)) {
        for (const Value& x : *b.list) found = found || Equal(a, x);
      } else if (b.is(K::kDict)) {
        found = DictGet(*b.dict, Text(a)) != nullptr;
      } else if (!b.is(K::kUndefined) && !b.is(K::kNone)) {
        return Bad("'in' needs a string, list or dict on the right");
      }
      return Value::Bool(found != (op == "not in"));
    }
    if (op == "~") return CheckedString(Text(a) + Text(b));
    if (op == "<" || op == "<=" || op == ">" || op == ">=") {
      int c;
      if (a.numeric() && b.numeric()) {
        c = a.num() < b.num() ? -1 : a.num() > b.num() ? 1 : 0;
      } else if (a.is(K::kString) && b.is(K::kString)) {
        c = a.s.compare(b.s);
      } else {
        return Bad(absl::StrCat("cannot compare with '", op, "'"));
      }
      return Value::Bool(op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0);
    }
    if (op == "+" && a.is(K::kString) && b.is(K::kString)) return CheckedString(a.s + b.s);
    if (op == "+" && a.is(K::kList) && b.is(K::kList)) {
      if (a.list->size() + b.list->size() > kMaxOutput) return Bad("list too large");
      List l = *a.list;
      l.insert(l.end(), b.list->begin(), b.list->end());
      return Value::MakeList(std::move(l));
    }
    if (op == "*" && (a.is(K::kString) || b.is(K::kString))) {
      const Value& str = a.is(K::kString) ? a : b;
      const Value& cnt = a.is(K::kString) ? b : a;
      if (!cnt.is(K::kInt)) return Bad("string repeated by a non-integer");
      if (cnt.i > 0 && !str.s.empty() &&
          static_cast<uint64_t>(cnt.i) > kMaxOutput / str.s.size()) {
        return Bad("string value too large");
      }
      std::string r;
      if (str.s.empty()) return Value::Str(r);
      for (int64_t k = 0; k < cnt.i; ++k) r += str.s;
      return Value::Str(std::move(r));
    }
    if (!a.numeric() || !b.numeric()) {
      return Bad(absl::StrCat("operator '", op, "' needs numbers (or strings for '+')"));
    }
    if (a.is(K::kFloat) || b.is(K::kFloat) || op == "/") {
      const double x = a.num(), y = b.num();
      if ((op == "/" || op == "//" || op == "%") && y == 0) return Bad("division by zero");
      if (op == "+") return Value::Float(x + y);
      if (op == "-") return Value::Float(x - y);
      if (op == "*") return Value::Float(x * y);
      if (op == "/") return Value::Float(x / y);
      if (op == "//") return Value::Float(std::floor(x / y));
      return Value::Float(x - y * std::floor(x / y));
    }
    const int64_t x = a.is(K::kInt) ? a.i : a.b, y = b.is(K::kInt) ? b.i : b.b;
    int64_t r = 0;
    bool overflow = false;
    if (op == "+") {
      overflow = __builtin_add_overflow(x, y, &r);
    } else if (op == "-") {
      overflow = __builtin_sub_overflow(x, y, &r);
    } else if (op == "*") {
      overflow = __builtin_mul_overflow(x, y, &r);
    } else {
      if (y == 0) return Bad("division by zero");
      if (x == INT64_MIN && y == -1) return Bad("integer overflow");
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors
        --q;
        m += y;
      }
      r = op == "//" ? q : m;
    }
    if (overflow) return Bad("integer overflow");
    return Value::Int(r);
  }

  absl::StatusOr<Value> Call(const Expr& e) {
    const Expr& callee = *e.args[0];
    ASSIGN_OR_RETURN(Args a, EvalArgs(e));
    if (callee.kind == EK::kAttr) {
      ASSIGN_OR_RETURN(Value obj, Eval(*callee.args[0]));
      return CallMethod(obj, callee.name, a);
    }
    if (callee.kind == EK::kName) return CallFunction(callee.name, a);
    return Bad("only functions and methods can be called");
  }
  absl::StatusOr<Value> Filter(const std::string& name, const Value& v, const Args& a) {
    return CallFilter(name, v, a);
  }
  absl::StatusOr<bool> Test(const std::string& name, const Value& v, const Value* arg) {
    return CallTest(name, v, arg);
  }

  std::vector<Dict> scopes_;
  std::string* out_ = nullptr;
  int64_t steps_ = 0;
};

}  // namespace

absl::StatusOr<std::string> RenderChatTemplate(const std::string& tmpl,
                                               const std::vector<ChatMessage>& messages,
                                               const ChatTemplateOptions& options) {
  ASSIGN_OR_RETURN(std::vector<Node> nodes, ParseTemplate(tmpl));
  List msgs;
  for (const ChatMessage& m : messages) {
    msgs.push_back(Value::MakeDict({{"role", Value::Str(m.role)},
                                    {"content", Value::Str(m.content)}}));
  }
  Dict globals = {{"messages", Value::MakeList(std::move(msgs))},
                  {"add_generation_prompt", Value::Bool(options.add_generation_prompt)},
                  {"bos_token", Value::Str(options.bos_token)},
                  {"eos_token", Value::Str(options.eos_token)}};
  return Renderer().Run(nodes, std::move(globals));
}

const std::string& DefaultChatTemplate() {
  static const std::string* const kChatMl = new std::string(
      "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}");
  return *kChatMl;
}

}  // namespace compressd
