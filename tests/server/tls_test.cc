// TLS and mTLS with certificates made by the openssl command for this test; skipped when
// openssl is absent.
#include <unistd.h>

#include <cstdlib>

#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace compressd::server::testing {
namespace {

constexpr char kModel[] = "models/stories260K";

// CA, server (SAN localhost/127.0.0.1) and client certificates under `dir`.
bool MakeCerts(const std::string& dir) {
  const std::string d = dir + "/";
  const std::string ssl = "openssl ";
  const std::string cmds[] = {
      ssl + "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout " + d +
          "ca.key -out " + d + "ca.pem",
      ssl + "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout " + d + "srv.key -out " +
          d + "srv.csr",
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > " + d + "san.ext",
      ssl + "x509 -req -in " + d + "srv.csr -CA " + d + "ca.pem -CAkey " + d +
          "ca.key -CAcreateserial -days 1 -extfile " + d + "san.ext -out " + d + "srv.pem",
      ssl + "req -newkey rsa:2048 -nodes -subj /CN=client -keyout " + d + "cli.key -out " + d +
          "cli.csr",
      ssl + "x509 -req -in " + d + "cli.csr -CA " + d + "ca.pem -CAkey " + d +
          "ca.key -CAcreateserial -days 1 -out " + d + "cli.pem",
  };
  for (const std::string& c : cmds) {
    if (std::system((c + " >/dev/null 2>&1").c_str()) != 0) return false;
  }
  return true;
}

TEST(TlsTest, MutualTlsRequiresAClientCertificate) {
  REQUIRE_SHARED(model, kModel);
  if (std::system("openssl version >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl";
  std::string tmpl = ::testing::TempDir() + "compressd_tls_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const std::string dir = tmpl;
  ASSERT_TRUE(MakeCerts(dir));

  ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.metrics_port = 0;
  o.engine.model = model;
  o.engine.threads = 1;
  o.tls.cert_file = dir + "/srv.pem";
  o.tls.key_file = dir + "/srv.key";
  o.tls.client_ca_file = dir + "/ca.pem";
  auto server = Server::Create(o);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = "localhost:" + std::to_string((*server)->port());

  grpc::SslCredentialsOptions with_cert;
  with_cert.pem_root_certs = compressd::testing::ReadFileOrDie(dir + "/ca.pem");
  with_cert.pem_cert_chain = compressd::testing::ReadFileOrDie(dir + "/cli.pem");
  with_cert.pem_private_key = compressd::testing::ReadFileOrDie(dir + "/cli.key");
  auto stub = v1::Generation::NewStub(
      grpc::CreateChannel(target, grpc::SslCredentials(with_cert)));
  const StreamResult ok = RunGenerate(stub.get(), Greedy("Once upon a time", 4));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.token_ids.size(), 4u);

  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = with_cert.pem_root_certs;
  auto anon = v1::Generation::NewStub(grpc::CreateChannel(target, grpc::SslCredentials(no_cert)));
  const StreamResult refused =
      RunGenerate(anon.get(), Greedy("Once upon a time", 4), std::chrono::seconds(5));
  EXPECT_FALSE(refused.status.ok());

  auto plain = v1::Generation::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  EXPECT_FALSE(
      RunGenerate(plain.get(), Greedy("Once upon a time", 4), std::chrono::seconds(5)).status.ok());
}

TEST(TlsTest, MissingCertificateFileIsAStartupError) {
  REQUIRE_SHARED(model, kModel);
  ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.metrics_port = 0;
  o.engine.model = model;
  o.tls.cert_file = "/nonexistent/cert.pem";
  o.tls.key_file = "/nonexistent/key.pem";
  auto server = Server::Create(o);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("--tls-"), std::string::npos) << server.status();
}

}  // namespace
}  // namespace compressd::server::testing
