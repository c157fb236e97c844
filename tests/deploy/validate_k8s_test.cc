// Runs scripts/validate-k8s.sh: every Kustomize overlay renders and validates against the
// offline Kubernetes 1.29/1.31 and prometheus-operator schemas, yamllint passes, and the
// deliberately broken fixture is rejected.
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace {

bool Have(const char* tool) {
  return std::system(absl::StrCat("command -v ", tool, " >/dev/null 2>&1").c_str()) == 0;
}

TEST(ValidateK8sTest, OverlaysRenderAndValidate) {
  REQUIRE_SHARED(schemas, "k8s-schemas");
  for (const char* tool : {"kubectl", "yamllint", "/usr/bin/python3"}) {
    if (!Have(tool)) GTEST_SKIP() << tool << " is not installed";
  }
  const std::string cmd =
      absl::StrCat("K8S_SCHEMAS='", schemas, "' '", compressd::testing::SourceDir(),
                   "/scripts/validate-k8s.sh' 2>&1");
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("broken manifest rejected"), std::string::npos) << out;
}

}  // namespace
