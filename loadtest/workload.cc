#include "loadtest/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace compressd::loadtest {
namespace {

// Common English words: prompts made of them tokenize to roughly one token per word with
// most BPE vocabularies, so --input-len is close to the real prompt length.
constexpr const char* kWords[] = {
    "the",    "of",      "and",      "to",     "in",     "is",       "that",  "for",    "it",
    "as",     "was",     "with",     "be",     "by",     "on",       "not",   "he",     "this",
    "are",    "or",      "his",      "from",   "at",     "which",    "but",   "have",   "an",
    "had",    "they",    "you",      "were",   "their",  "one",      "all",   "we",     "can",
    "her",    "has",     "there",    "been",   "if",     "more",     "when",  "will",   "would",
    "who",    "so",      "no",       "time",   "people", "year",     "way",   "day",    "man",
    "thing",  "woman",   "life",     "child",  "world",  "school",   "state", "family", "student",
    "group",  "country", "problem",  "hand",   "part",   "place",    "case",  "week",   "company",
    "system", "program", "question", "work",   "number", "night",    "point", "home",   "water",
    "room",   "mother",  "area",     "money",  "story",  "fact",     "month", "lot",    "right",
    "study",  "book",    "eye",      "job",    "word",   "business", "issue", "side",   "kind",
    "head",   "house",   "service",  "friend", "father", "power",    "hour",  "game",   "line",
};
constexpr int kNumWords = sizeof(kWords) / sizeof(kWords[0]);

absl::StatusOr<std::vector<double>> ParseNumbers(absl::string_view s, size_t want,
                                                 absl::string_view spec) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(s, ',')) {
    double v = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(part), &v) || !std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat("bad number '", part, "' in '", spec, "'"));
    }
    out.push_back(v);
  }
  if (out.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", spec, "' needs ", want, " number(s), got ", out.size()));
  }
  return out;
}

}  // namespace

int LengthDist::Sample(std::mt19937_64& rng) const {
  double v = a;
  switch (kind) {
    case Kind::kFixed:
      break;
    case Kind::kUniform: {
      std::uniform_int_distribution<int64_t> d(static_cast<int64_t>(a), static_cast<int64_t>(b));
      v = static_cast<double>(d(rng));
      break;
    }
    case Kind::kNormal: {
      std::normal_distribution<double> d(a, b);
      v = std::clamp(std::round(d(rng)), 1.0, std::max(1.0, 2 * a));
      break;
    }
  }
  return std::max(1, static_cast<int>(v));
}

std::string LengthDist::ToString() const {
  switch (kind) {
    case Kind::kFixed:
      return absl::StrCat("fixed:", a);
    case Kind::kUniform:
      return absl::StrCat("uniform:", a, ",", b);
    case Kind::kNormal:
      return absl::StrCat("normal:", a, ",", b);
  }
  return "?";
}

absl::StatusOr<LengthDist> ParseLengthDist(absl::string_view spec) {
  LengthDist d;
  std::pair<absl::string_view, absl::string_view> kv =
      absl::StrSplit(spec, absl::MaxSplits(':', 1));
  absl::string_view kind = kv.first;
  absl::string_view args = kv.second;
  if (args.empty() && spec.find(':') == absl::string_view::npos) {
    kind = "fixed";
    args = spec;
  }
  if (kind == "fixed") {
    auto v = ParseNumbers(args, 1, spec);
    if (!v.ok()) return v.status();
    d.kind = LengthDist::Kind::kFixed;
    d.a = (*v)[0];
  } else if (kind == "uniform") {
    auto v = ParseNumbers(args, 2, spec);
    if (!v.ok()) return v.status();
    d.kind = LengthDist::Kind::kUniform;
    d.a = (*v)[0];
    d.b = (*v)[1];
    if (d.b < d.a) {
      return absl::InvalidArgumentError(absl::StrCat("'", spec, "': high < low"));
    }
  } else if (kind == "normal") {
    auto v = ParseNumbers(args, 2, spec);
    if (!v.ok()) return v.status();
    d.kind = LengthDist::Kind::kNormal;
    d.a = (*v)[0];
    d.b = (*v)[1];
    if (d.b < 0) return absl::InvalidArgumentError(absl::StrCat("'", spec, "': stddev < 0"));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown length distribution '", spec, "' (want fixed:N, uniform:LO,HI or normal:M,SD)"));
  }
  if (d.a < 1)
    return absl::InvalidArgumentError(absl::StrCat("'", spec, "': lengths must be >= 1"));
  return d;
}

absl::StatusOr<std::vector<WorkItem>> ParseDataset(absl::string_view jsonl,
                                                   uint32_t default_max_tokens) {
  std::vector<WorkItem> items;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": not a JSON object"));
    }
    auto p = j.find("prompt");
    if (p == j.end() || !p->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": missing string 'prompt'"));
    }
    WorkItem w;
    w.prompt = p->get<std::string>();
    w.max_tokens = default_max_tokens;
    auto m = j.find("max_tokens");
    if (m != j.end()) {
      if (!m->is_number_integer() || m->get<int64_t>() < 0 || m->get<int64_t>() > UINT32_MAX) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line_no, ": 'max_tokens' must be a non-negative integer"));
      }
      w.max_tokens = static_cast<uint32_t>(m->get<int64_t>());
    }
    items.push_back(std::move(w));
  }
  if (items.empty()) return absl::InvalidArgumentError("dataset has no requests");
  return items;
}

absl::StatusOr<std::vector<WorkItem>> LoadDataset(const std::string& path,
                                                  uint32_t default_max_tokens) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open dataset ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto items = ParseDataset(ss.str(), default_max_tokens);
  if (!items.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", items.status().message()));
  }
  return items;
}

std::string BuildPrompt(int words, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pick(0, kNumWords - 1);
  std::string out;
  out.reserve(static_cast<size_t>(words) * 6);
  for (int i = 0; i < words; ++i) {
    if (i > 0) out.push_back(' ');
    out.append(kWords[pick(rng)]);
  }
  return out;
}

std::vector<WorkItem> SyntheticWorkload(int n, const LengthDist& input_len,
                                        const LengthDist& output_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<WorkItem> items;
  items.reserve(n);
  for (int i = 0; i < n; ++i) {
    WorkItem w;
    w.prompt_words = input_len.Sample(rng);
    w.max_tokens = static_cast<uint32_t>(output_len.Sample(rng));
    w.prompt = BuildPrompt(w.prompt_words, rng);
    items.push_back(std::move(w));
  }
  return items;
}

std::vector<WorkItem> CycleTo(const std::vector<WorkItem>& items, int count) {
  std::vector<WorkItem> out;
  if (items.empty()) return out;
  out.reserve(count);
  for (int i = 0; i < count; ++i) out.push_back(items[i % items.size()]);
  return out;
}

}  // namespace compressd::loadtest
