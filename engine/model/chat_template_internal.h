// Internal to engine/model/chat_template*.cc: the value model and AST of the Jinja2 subset
// that chat templates use. ParseTemplate (chat_template_parse.cc) turns template text into
// nodes; chat_template.cc walks them. Limits keep arbitrary input bounded.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"

namespace compressd::chat_template_internal {

inline constexpr size_t kMaxOutput = 4 << 20;    // bytes of rendered text or of any string
inline constexpr int64_t kMaxSteps = 500'000;   // statements + loop iterations + expr nodes
inline constexpr int kMaxDepth = 128;            // nesting of expressions and of blocks
inline constexpr int64_t kMaxRange = 100'000;    // elements range() may produce

inline absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("chat template: ", absl::string_view(what.data(), what.size())));
}

// ---- Values ----------------------------------------------------------------------------

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion-ordered

struct Value {
  enum class Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict };
  Kind kind = Kind::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // shared so that `set ns.x = ...` mutates the namespace

  static Value None() { Value v; v.kind = Kind::kNone; return v; }
  static Value Bool(bool x) { Value v; v.kind = Kind::kBool; v.b = x; return v; }
  static Value Int(int64_t x) { Value v; v.kind = Kind::kInt; v.i = x; return v; }
  static Value Float(double x) { Value v; v.kind = Kind::kFloat; v.f = x; return v; }
  static Value Str(std::string x) { Value v; v.kind = Kind::kString; v.s = std::move(x); return v; }
  static Value MakeList(List x = {}) {
    Value v; v.kind = Kind::kList; v.list = std::make_shared<List>(std::move(x)); return v;
  }
  static Value MakeDict(Dict x = {}) {
    Value v; v.kind = Kind::kDict; v.dict = std::make_shared<Dict>(std::move(x)); return v;
  }
  bool is(Kind k) const { return kind == k; }
  bool numeric() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  double num() const { return kind == Kind::kFloat ? f : kind == Kind::kInt ? i : b; }
};
using K = Value::Kind;

const Value* DictGet(const Dict& d, std::string_view key);
void DictSet(Dict* d, const std::string& key, Value v);
// True when v is d or holds d (through lists and dicts, at any depth).
bool Reaches(const Value& v, const Dict* d);
bool Truthy(const Value& v);
// Python-style text; repr quotes strings (inside containers), json writes JSON.
void AppendText(const Value& v, bool repr, bool json, std::string* out);
std::string Text(const Value& v);
bool Equal(const Value& a, const Value& b);

// ---- AST -------------------------------------------------------------------------------

struct Expr {
  enum class Kind : uint8_t {
    kLiteral, kName, kList, kDict, kAttr, kIndex, kSlice, kCall, kFilter, kTest, kUnary,
    kBinary, kCond,
  } kind;
  Value literal;
  std::string name;  // variable, attribute, filter, test, operator or keyword-arg names
  std::vector<std::unique_ptr<Expr>> args;  // operands / call arguments
  std::vector<std::string> kwargs;          // names of trailing keyword arguments (call)
  bool negate = false;                      // `is not`
};
using ExprPtr = std::unique_ptr<Expr>;
using EK = Expr::Kind;

struct Node {
  enum class Kind : uint8_t { kText, kOutput, kIf, kFor, kSet, kBlockSet } kind;
  std::string text;                    // kText; kSet/kBlockSet: variable
  std::string attr;                    // kSet on `ns.attr`
  std::vector<std::string> vars;       // kFor targets
  std::vector<ExprPtr> exprs;          // kOutput/kSet: value; kIf: conditions; kFor: iter, filter
  std::vector<std::vector<Node>> bodies;  // kIf: per condition (+ else); kFor: body, else
};

// ---- Built-ins (chat_template_builtins.cc) -----------------------------------------------

struct Args {
  std::vector<Value> pos;
  Dict kw;
  // The i-th positional argument, else the keyword argument `name`; nullptr when absent.
  const Value* Get(size_t i, std::string_view name) const {
    if (i < pos.size()) return &pos[i];
    return DictGet(kw, name);
  }
};

// INVALID_ARGUMENT when s is larger than kMaxOutput.
absl::StatusOr<Value> CheckedString(std::string s);
absl::StatusOr<Value> CallFilter(const std::string& name, const Value& v, const Args& a);
absl::StatusOr<bool> CallTest(const std::string& name, const Value& v, const Value* arg);
absl::StatusOr<Value> CallMethod(const Value& obj, const std::string& name, const Args& a);
// raise_exception, namespace, range.
absl::StatusOr<Value> CallFunction(const std::string& name, const Args& a);

// Parses a whole template (trim_blocks and lstrip_blocks semantics, as transformers uses).
absl::StatusOr<std::vector<Node>> ParseTemplate(std::string_view src);

}  // namespace compressd::chat_template_internal
