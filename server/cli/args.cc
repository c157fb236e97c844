#include "server/cli/args.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/byte_size.h"

namespace compressd::cli {

int64_t ParseBytes(const std::string& s) {
  // One size syntax for every subcommand, `serve` and recipes (engine/core/byte_size.h).
  const absl::StatusOr<int64_t> b = ParseByteSize(s);
  return b.ok() ? *b : -1;
}

Args::Args(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void Args::Add(const std::string& n, std::string* t, const std::string& h) {
  opts_.push_back({n, Kind::kString, t, h, *t});
}
void Args::Add(const std::string& n, int32_t* t, const std::string& h) {
  opts_.push_back({n, Kind::kInt32, t, h, std::to_string(*t)});
}
void Args::Add(const std::string& n, int64_t* t, const std::string& h) {
  opts_.push_back({n, Kind::kInt64, t, h, std::to_string(*t)});
}
void Args::Add(const std::string& n, double* t, const std::string& h) {
  opts_.push_back({n, Kind::kDouble, t, h, absl::StrFormat("%g", *t)});
}
void Args::Add(const std::string& n, float* t, const std::string& h) {
  opts_.push_back({n, Kind::kFloat, t, h, absl::StrFormat("%g", *t)});
}
void Args::Add(const std::string& n, bool* t, const std::string& h) {
  opts_.push_back({n, Kind::kBool, t, h, *t ? "true" : "false"});
}
void Args::AddBytes(const std::string& n, int64_t* t, const std::string& h) {
  opts_.push_back({n, Kind::kBytes, t, h, *t == 0 ? "auto" : std::to_string(*t)});
}
void Args::AddList(const std::string& n, std::vector<std::string>* t, const std::string& h) {
  opts_.push_back({n, Kind::kList, t, h, ""});
}
void Args::AddNote(const std::string& text) { notes_.push_back(text); }

std::string Args::Set(Opt& o, const std::string& v) {
  o.given = true;
  bool ok = true;
  switch (o.kind) {
    case Kind::kString: *static_cast<std::string*>(o.target) = v; break;
    case Kind::kInt32: ok = absl::SimpleAtoi(v, static_cast<int32_t*>(o.target)); break;
    case Kind::kInt64: ok = absl::SimpleAtoi(v, static_cast<int64_t*>(o.target)); break;
    case Kind::kDouble: ok = absl::SimpleAtod(v, static_cast<double*>(o.target)); break;
    case Kind::kFloat: ok = absl::SimpleAtof(v, static_cast<float*>(o.target)); break;
    case Kind::kBool: ok = absl::SimpleAtob(v, static_cast<bool*>(o.target)); break;
    case Kind::kBytes: {
      const int64_t b = ParseBytes(v);
      ok = b >= 0;
      if (ok) *static_cast<int64_t*>(o.target) = b;
      break;
    }
    case Kind::kList: static_cast<std::vector<std::string>*>(o.target)->push_back(v); break;
  }
  if (!ok) return absl::StrCat("invalid value '", v, "' for --", o.name);
  return "";
}

int Args::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h" || a == "help") {
      std::fputs(Help().c_str(), stdout);
      return 0;
    }
    if (a.rfind("--", 0) != 0) {
      std::fprintf(stderr, "compressd %s: unexpected argument '%s' (see --help)\n",
                   command_.c_str(), a.c_str());
      return 2;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    Opt* opt = nullptr;
    for (auto& o : opts_) {
      if (o.name == name) opt = &o;
    }
    bool negated = false;
    if (opt == nullptr && name.rfind("no-", 0) == 0) {
      for (auto& o : opts_) {
        if (o.kind == Kind::kBool && o.name == name.substr(3)) {
          opt = &o;
          negated = true;
        }
      }
    }
    if (opt == nullptr) {
      std::fprintf(stderr, "compressd %s: unknown option --%s (see --help)\n", command_.c_str(),
                   name.c_str());
      return 2;
    }
    if (opt->kind == Kind::kBool && !has_value) {
      value = negated ? "false" : "true";
    } else if (!has_value) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "compressd %s: --%s needs a value\n", command_.c_str(), name.c_str());
        return 2;
      }
      value = argv[++i];
    }
    const std::string err = Set(*opt, value);
    if (!err.empty()) {
      std::fprintf(stderr, "compressd %s: %s\n", command_.c_str(), err.c_str());
      return 2;
    }
  }
  return -1;
}

bool Args::Given(const std::string& name) const {
  for (const auto& o : opts_) {
    if (o.name == name) return o.given;
  }
  return false;
}

std::string Args::Help() const {
  std::string s = absl::StrCat("Usage: compressd ", command_, " [options]\n\n", summary_, "\n\nOptions:\n");
  for (const auto& o : opts_) {
    std::string left = absl::StrCat("  --", o.name);
    if (o.kind != Kind::kBool) absl::StrAppend(&left, " VALUE");
    absl::StrAppend(&s, absl::StrFormat("%-28s %s", left, o.help));
    if (!o.def.empty() && o.kind != Kind::kList) absl::StrAppend(&s, " (default: ", o.def, ")");
    absl::StrAppend(&s, "\n");
  }
  absl::StrAppend(&s, "  --help                       show this help\n");
  for (const auto& n : notes_) absl::StrAppend(&s, "\n", n, "\n");
  return s;
}

}  // namespace compressd::cli
