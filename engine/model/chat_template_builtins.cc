// The filters, tests, methods and global functions chat templates call.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "engine/model/chat_template_internal.h"

namespace compressd::chat_template_internal {
namespace {

std::string Strip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::string set =
      chars != nullptr && chars->is(K::kString) ? chars->s : std::string(" \t\n\r\f\v");
  size_t a = 0, b = s.size();
  if (left) {
    while (a < b && set.find(s[a]) != std::string::npos) ++a;
  }
  if (right) {
    while (b > a && set.find(s[b - 1]) != std::string::npos) --b;
  }
  return s.substr(a, b - a);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string Capitalize(const std::string& s) {
  std::string r = Lower(s);
  if (!r.empty()) r[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(r[0])));
  return r;
}

std::string Title(const std::string& s) {
  std::string r = s;
  bool start = true;
  for (char& c : r) {
    const auto u = static_cast<unsigned char>(c);
    c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
    start = !std::isalnum(u);
  }
  return r;
}

// str.split(sep): on whitespace runs without sep; else sep must be a non-empty string (as in
// Python, where an empty one is an error: here it would never advance).
absl::StatusOr<List> Split(const std::string& s, const Value* sep) {
  List out;
  if (sep == nullptr || sep->is(K::kNone) || sep->is(K::kUndefined)) {
    size_t p = 0;
    while (p < s.size()) {
      while (p < s.size() && std::isspace(static_cast<unsigned char>(s[p]))) ++p;
      size_t q = p;
      while (q < s.size() && !std::isspace(static_cast<unsigned char>(s[q]))) ++q;
      if (q > p) out.push_back(Value::Str(s.substr(p, q - p)));
      p = q;
    }
    return out;
  }
  if (!sep->is(K::kString) || sep->s.empty()) {
    return Bad("split() separator must be a non-empty string");
  }
  const std::string& d = sep->s;
  size_t p = 0;
  while (true) {
    const size_t q = s.find(d, p);
    if (q == std::string::npos) break;
    out.push_back(Value::Str(s.substr(p, q - p)));
    p = q + d.size();
  }
  out.push_back(Value::Str(s.substr(p)));
  return out;
}

absl::StatusOr<Value> Replace(const std::string& s, const Value* from, const Value* to) {
  if (from == nullptr || to == nullptr || !from->is(K::kString) || !to->is(K::kString)) {
    return Bad("replace() needs two strings");
  }
  if (from->s.empty()) return Value::Str(s);
  std::string r;
  size_t p = 0;
  while (true) {
    const size_t q = s.find(from->s, p);
    if (q == std::string::npos) break;
    r.append(s, p, q - p).append(to->s);
    if (r.size() > kMaxOutput) return Bad("string value too large");
    p = q + from->s.size();
  }
  r.append(s, p, std::string::npos);
  return CheckedString(std::move(r));
}

void Json(const Value& v, int indent, int level, std::string* out) {
  if (indent <= 0 || !(v.is(K::kList) || v.is(K::kDict)) ||
      (v.is(K::kList) ? v.list->empty() : v.is(K::kDict) && v.dict->empty())) {
    AppendText(v, true, true, out);
    return;
  }
  const std::string pad(static_cast<size_t>(indent) * (level + 1), ' ');
  const bool is_list = v.is(K::kList);
  out->push_back(is_list ? '[' : '{');
  const size_t n = is_list ? v.list->size() : v.dict->size();
  for (size_t k = 0; k < n && out->size() < kMaxOutput; ++k) {
    out->append(k == 0 ? "\n" : ",\n").append(pad);
    if (is_list) {
      Json((*v.list)[k], indent, level + 1, out);
    } else {
      AppendText(Value::Str((*v.dict)[k].first), true, true, out);
      out->append(": ");
      Json((*v.dict)[k].second, indent, level + 1, out);
    }
  }
  out->append("\n").append(std::string(static_cast<size_t>(indent) * level, ' '));
  out->push_back(is_list ? ']' : '}');
}

size_t Length(const Value& v) {
  return v.is(K::kString) ? v.s.size() : v.is(K::kList) ? v.list->size()
                                       : v.is(K::kDict) ? v.dict->size() : 0;
}

}  // namespace

absl::StatusOr<Value> CheckedString(std::string s) {
  if (s.size() > kMaxOutput) return Bad("string value too large");
  return Value::Str(std::move(s));
}

absl::StatusOr<bool> CallTest(const std::string& name, const Value& v, const Value* arg) {
  if (name == "defined") return !v.is(K::kUndefined);
  if (name == "undefined") return v.is(K::kUndefined);
  if (name == "none") return v.is(K::kNone);
  if (name == "string") return v.is(K::kString);
  if (name == "number") return v.is(K::kInt) || v.is(K::kFloat);
  if (name == "integer") return v.is(K::kInt);
  if (name == "float") return v.is(K::kFloat);
  if (name == "boolean") return v.is(K::kBool);
  if (name == "true") return v.is(K::kBool) && v.b;
  if (name == "false") return v.is(K::kBool) && !v.b;
  if (name == "mapping") return v.is(K::kDict);
  if (name == "sequence" || name == "iterable") {
    return v.is(K::kList) || v.is(K::kString) || v.is(K::kDict);
  }
  if (name == "odd" || name == "even") {
    if (!v.is(K::kInt)) return Bad(absl::StrCat("test '", name, "' needs an integer"));
    return (v.i % 2 != 0) == (name == "odd");
  }
  if (name == "equalto" || name == "eq" || name == "==" || name == "ne" || name == "!=") {
    if (arg == nullptr) return Bad(absl::StrCat("test '", name, "' needs an argument"));
    return Equal(v, *arg) == (name != "ne" && name != "!=");
  }
  if (name == "in") {
    if (arg == nullptr) return Bad("test 'in' needs an argument");
    if (arg->is(K::kString) && v.is(K::kString)) return arg->s.find(v.s) != std::string::npos;
    if (arg->is(K::kList)) {
      for (const Value& x : *arg->list) {
        if (Equal(v, x)) return true;
      }
    }
    if (arg->is(K::kDict)) return DictGet(*arg->dict, Text(v)) != nullptr;
    return false;
  }
  return Bad(absl::StrCat("test '", name, "' is not supported"));
}

absl::StatusOr<Value> CallFilter(const std::string& name, const Value& v, const Args& a) {
  if (name == "trim") return Value::Str(Strip(Text(v), a.Get(0, "chars"), true, true));
  if (name == "length" || name == "count") return Value::Int(static_cast<int64_t>(Length(v)));
  if (name == "upper") return Value::Str(Upper(Text(v)));
  if (name == "lower") return Value::Str(Lower(Text(v)));
  if (name == "capitalize") return Value::Str(Capitalize(Text(v)));
  if (name == "title") return Value::Str(Title(Text(v)));
  if (name == "string") return CheckedString(Text(v));
  if (name == "safe" || name == "e" || name == "escape") return v;  // no autoescape here
  if (name == "tojson") {
    const Value* indent = a.Get(0, "indent");
    std::string out;
    Json(v, indent != nullptr && indent->is(K::kInt) ? static_cast<int>(std::min<int64_t>(
                                                           std::max<int64_t>(indent->i, 0), 16))
                                                     : 0,
         0, &out);
    return CheckedString(std::move(out));
  }
  if (name == "first" || name == "last") {
    const size_t n = Length(v);
    if (n == 0) return Value();
    const size_t i = name == "first" ? 0 : n - 1;
    if (v.is(K::kList)) return (*v.list)[i];
    if (v.is(K::kString)) return Value::Str(std::string(1, v.s[i]));
    return Value::Str((*v.dict)[i].first);
  }
  if (name == "default" || name == "d") {
    const Value* dflt = a.Get(0, "default_value");
    const Value* boolean = a.Get(1, "boolean");
    const bool use = v.is(K::kUndefined) || (boolean != nullptr && Truthy(*boolean) && !Truthy(v));
    return use ? (dflt != nullptr ? *dflt : Value::Str("")) : v;
  }
  if (name == "join") {
    const Value* sep = a.Get(0, "d");
    std::string r;
    if (!v.is(K::kList)) return Bad("filter 'join' needs a list");
    for (size_t k = 0; k < v.list->size(); ++k) {
      if (k > 0 && sep != nullptr) r += Text(*sep);
      r += Text((*v.list)[k]);
      if (r.size() > kMaxOutput) return Bad("string value too large");
    }
    return Value::Str(std::move(r));
  }
  if (name == "list") {
    if (v.is(K::kList)) return v;
    List l;
    if (v.is(K::kString)) {
      for (char c : v.s) l.push_back(Value::Str(std::string(1, c)));
    } else if (v.is(K::kDict)) {
      for (const auto& kv : *v.dict) l.push_back(Value::Str(kv.first));
    }
    return Value::MakeList(std::move(l));
  }
  if (name == "reverse") {
    if (v.is(K::kString)) return Value::Str(std::string(v.s.rbegin(), v.s.rend()));
    if (!v.is(K::kList)) return Bad("filter 'reverse' needs a list or string");
    return Value::MakeList(List(v.list->rbegin(), v.list->rend()));
  }
  if (name == "int") {
    if (v.is(K::kString)) return Value::Int(std::strtoll(v.s.c_str(), nullptr, 10));
    if (v.is(K::kFloat)) {
      return std::isfinite(v.f) && std::fabs(v.f) < 9e18 ? Value::Int(static_cast<int64_t>(v.f))
                                                         : Value::Int(0);
    }
    return Value::Int(v.numeric() ? static_cast<int64_t>(v.is(K::kInt) ? v.i : v.b) : 0);
  }
  if (name == "float") {
    if (v.is(K::kString)) return Value::Float(std::strtod(v.s.c_str(), nullptr));
    return Value::Float(v.numeric() ? v.num() : 0.0);
  }
  if (name == "items") return CallMethod(v, "items", Args());
  if (name == "replace") return Replace(Text(v), a.Get(0, "old"), a.Get(1, "new"));
  if (name == "selectattr" || name == "rejectattr") {
    if (!v.is(K::kList)) return Bad(absl::StrCat("filter '", name, "' needs a list"));
    const Value* attr = a.Get(0, "attribute");
    if (attr == nullptr) return Bad(absl::StrCat("filter '", name, "' needs an attribute"));
    const Value* test = a.Get(1, "test");
    const Value* arg = a.Get(2, "value");
    List kept;
    for (const Value& item : *v.list) {
      const Value* field = item.is(K::kDict) ? DictGet(*item.dict, Text(*attr)) : nullptr;
      const Value fv = field != nullptr ? *field : Value();
      bool ok;
      if (test == nullptr) {
        ok = Truthy(fv);
      } else {
        ASSIGN_OR_RETURN(ok, CallTest(Text(*test), fv, arg));
      }
      if (ok == (name == "selectattr")) kept.push_back(item);
    }
    return Value::MakeList(std::move(kept));
  }
  if (name == "map") {
    const Value* attr = a.Get(99, "attribute");
    if (!v.is(K::kList) || attr == nullptr) return Bad("filter 'map' needs a list and attribute=");
    List out;
    for (const Value& item : *v.list) {
      const Value* field = item.is(K::kDict) ? DictGet(*item.dict, Text(*attr)) : nullptr;
      out.push_back(field != nullptr ? *field : Value());
    }
    return Value::MakeList(std::move(out));
  }
  return Bad(absl::StrCat("filter '", name, "' is not supported"));
}

absl::StatusOr<Value> CallMethod(const Value& obj, const std::string& name, const Args& a) {
  if (obj.is(K::kString)) {
    const std::string& s = obj.s;
    if (name == "strip") return Value::Str(Strip(s, a.Get(0, "chars"), true, true));
    if (name == "lstrip") return Value::Str(Strip(s, a.Get(0, "chars"), true, false));
    if (name == "rstrip") return Value::Str(Strip(s, a.Get(0, "chars"), false, true));
    if (name == "upper") return Value::Str(Upper(s));
    if (name == "lower") return Value::Str(Lower(s));
    if (name == "title") return Value::Str(Title(s));
    if (name == "capitalize") return Value::Str(Capitalize(s));
    if (name == "split") {
      ASSIGN_OR_RETURN(List parts, Split(s, a.Get(0, "sep")));
      return Value::MakeList(std::move(parts));
    }
    if (name == "replace") return Replace(s, a.Get(0, "old"), a.Get(1, "new"));
    if (name == "startswith" || name == "endswith") {
      const Value* p = a.Get(0, "prefix");
      if (p == nullptr || !p->is(K::kString)) return Bad(absl::StrCat(name, "() needs a string"));
      const std::string& x = p->s;
      if (x.size() > s.size()) return Value::Bool(false);
      return Value::Bool(name == "startswith" ? s.compare(0, x.size(), x) == 0
                                              : s.compare(s.size() - x.size(), x.size(), x) == 0);
    }
    if (name == "join") return CallFilter("join", a.pos.empty() ? Value() : a.pos[0], {{obj}, {}});
  }
  if (obj.is(K::kDict)) {
    if (name == "items" || name == "keys" || name == "values") {
      List l;
      for (const auto& [k, val] : *obj.dict) {
        if (name == "items") {
          l.push_back(Value::MakeList({Value::Str(k), val}));
        } else {
          l.push_back(name == "keys" ? Value::Str(k) : val);
        }
      }
      return Value::MakeList(std::move(l));
    }
    if (name == "get") {
      const Value* key = a.Get(0, "key");
      if (key == nullptr) return Bad("get() needs a key");
      const Value* found = DictGet(*obj.dict, Text(*key));
      if (found != nullptr) return *found;
      const Value* dflt = a.Get(1, "default");
      return dflt != nullptr ? *dflt : Value::None();
    }
  }
  return Bad(absl::StrCat("method '", name, "' is not supported on this value"));
}

absl::StatusOr<Value> CallFunction(const std::string& name, const Args& a) {
  if (name == "raise_exception") {
    const Value* msg = a.Get(0, "message");
    return absl::InvalidArgumentError(
        absl::StrCat("chat template raised an exception: ", msg != nullptr ? Text(*msg) : ""));
  }
  if (name == "namespace") {
    Dict d = a.kw;
    return Value::MakeDict(std::move(d));
  }
  if (name == "range") {
    int64_t r[3] = {0, 0, 1};
    if (a.pos.empty() || a.pos.size() > 3) return Bad("range() takes 1 to 3 arguments");
    for (const Value& v : a.pos) {
      if (!v.is(K::kInt)) return Bad("range() needs integers");
    }
    if (a.pos.size() == 1) {
      r[1] = a.pos[0].i;
    } else {
      r[0] = a.pos[0].i;
      r[1] = a.pos[1].i;
      if (a.pos.size() == 3) r[2] = a.pos[2].i;
    }
    if (r[2] == 0) return Bad("range() step cannot be zero");
    List l;
    for (int64_t i = r[0]; r[2] > 0 ? i < r[1] : i > r[1]; i += r[2]) {
      if (static_cast<int64_t>(l.size()) >= kMaxRange) return Bad("range() too large");
      l.push_back(Value::Int(i));
      if ((r[2] > 0 && i > INT64_MAX - r[2]) || (r[2] < 0 && i < INT64_MIN - r[2])) break;
    }
    return Value::MakeList(std::move(l));
  }
  return Bad(absl::StrCat("function '", name, "' is not supported"));
}

}  // namespace compressd::chat_template_internal
