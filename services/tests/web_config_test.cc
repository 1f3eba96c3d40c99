#include "services/web_config.h"

#include <crypt.h>
#include <gtest/gtest.h>

#include <memory>

#include "absl/strings/escaping.h"

namespace kpistream::services {
namespace {

// A bcrypt hash as htpasswd -B makes one (cost 4: fast, same format).
std::string Bcrypt(const std::string& password) {
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  EXPECT_NE(crypt_gensalt_rn("$2b$", 4, nullptr, 0, salt, sizeof(salt)), nullptr);
  auto data = std::make_unique<crypt_data>();
  return crypt_r(password.c_str(), salt, data.get());
}

std::string Basic(const std::string& user, const std::string& password) {
  return "Basic " + absl::Base64Escape(user + ":" + password);
}

TEST(WebConfigTest, ReadsBasicAuthUsers) {
  const std::string hash = Bcrypt("s3cret");
  auto c = ParseWebConfig("basic_auth_users:\n  prometheus: " + hash + "\n  grafana: " + hash + "\n", "web.yml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->basic_auth_users.size(), 2u);
  EXPECT_EQ(c->basic_auth_users.at("prometheus"), hash);
  EXPECT_TRUE(ParseWebConfig("", "w.yml").ok());  // empty: open
}

TEST(WebConfigTest, ReadsTlsServerConfigRelativeToItsFile) {
  auto c = ParseWebConfig(
      "tls_server_config:\n  cert_file: s.crt\n  key_file: /abs/s.key\n"
      "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n",
      "/etc/kpid/web.yml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cert_file, "/etc/kpid/s.crt");
  EXPECT_EQ(c->key_file, "/abs/s.key");
  EXPECT_EQ(c->client_ca_file, "/etc/kpid/ca.crt");
  EXPECT_TRUE(c->verify_client_cert);
  EXPECT_TRUE(c->require_client_cert);
  EXPECT_TRUE(c->min_tls13);
  // What cannot be served is said, with its line.
  auto bad = ParseWebConfig(
      "tls_server_config:\n  cert_file: s.crt\n  client_auth_type: VerifyClientCertIfGiven\n  min_version: TLS10\n",
      "web.yml");
  ASSERT_FALSE(bad.ok());
  const std::string msg(bad.status().message());
  EXPECT_NE(msg.find("needs cert_file and key_file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("needs client_ca_file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("web.yml:4:"), std::string::npos) << msg;  // TLS10
}

TEST(WebConfigTest, EveryMistakeHasItsLine) {
  auto c = ParseWebConfig(
      "basic_auth_users:\n"
      "  alice: plaintext-password\n"
      "http_server_config: {http2: false}\n",
      "web.yml");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_NE(msg.find("web.yml:2:"), std::string::npos) << msg;  // not a bcrypt hash
  EXPECT_NE(msg.find("htpasswd"), std::string::npos) << msg;
  EXPECT_NE(msg.find("http_server_config"), std::string::npos) << msg;
}

TEST(BasicAuthTest, ChecksBcryptHashesAndRefusesEverythingElse) {
  BasicAuth auth({{"prometheus", Bcrypt("s3cret")}, {"grafana", Bcrypt("other")}});
  EXPECT_TRUE(auth.Check(Basic("prometheus", "s3cret").c_str()));
  EXPECT_TRUE(auth.Check(Basic("prometheus", "s3cret").c_str()));  // remembered
  EXPECT_TRUE(auth.Check(Basic("grafana", "other").c_str()));
  EXPECT_FALSE(auth.Check(Basic("prometheus", "other").c_str()));  // another user's password
  EXPECT_FALSE(auth.Check(Basic("prometheus", "s3cret ").c_str()));
  EXPECT_FALSE(auth.Check(Basic("nobody", "s3cret").c_str()));
  EXPECT_FALSE(auth.Check(Basic("", "").c_str()));
  EXPECT_FALSE(auth.Check(nullptr));
  EXPECT_FALSE(auth.Check("Bearer s3cret"));
  EXPECT_FALSE(auth.Check("Basic not-base64!"));
  EXPECT_FALSE(auth.Check(("Basic " + absl::Base64Escape("no-colon")).c_str()));
  EXPECT_TRUE(auth.Check(("basic " + absl::Base64Escape("prometheus:s3cret")).c_str()));  // scheme: any case
}

}  // namespace
}  // namespace kpistream::services
