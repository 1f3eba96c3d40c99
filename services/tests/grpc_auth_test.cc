// Bearer tokens: the file's errors, each refusal and its code, expiry,
// scopes, and a reload that keeps the running tokens when the new file is
// bad. TLS refusals need a real handshake: tests/api_it.cc.
#include "services/grpc_auth.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace kpistream::services {
namespace {

constexpr int64_t kNow = 1800000000;  // 2027-01-15T08:00:00Z

constexpr const char* kTokens = R"(tokens:
  - name: grafana
    token: read-token-0123456789
    scopes: [read]
  - name: oncall
    token: alerts-token-0123456789
    scopes: [read, alerts]
    expires: 2027-06-01T00:00:00Z
  - name: ops
    token: admin-token-0123456789
    scopes: [admin]
  - name: old
    token: expired-token-0123456789
    scopes: [admin]
    expires: 2027-01-01T00:00:00+01:00
)";

class TokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() /
             ("kpid-tokens-test-" + std::to_string(::getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".yaml"))
                .string();
    Write(kTokens);
    auto auth = TokenAuthenticator::Load(path_);
    ASSERT_TRUE(auth.ok()) << auth.status();
    auth_ = std::move(*auth);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  void Write(const std::string& text) { std::ofstream(path_, std::ios::trunc) << text; }

  std::string path_;
  std::unique_ptr<TokenAuthenticator> auth_;
};

TEST_F(TokenTest, EachRefusalHasItsCode) {
  EXPECT_EQ(auth_->size(), 4u);
  EXPECT_TRUE(auth_->Check("Bearer read-token-0123456789", Scope::kRead, kNow).ok());
  EXPECT_TRUE(auth_->Check("bearer read-token-0123456789", Scope::kRead, kNow).ok());  // the scheme is case-insensitive

  const auto missing = auth_->Check("", Scope::kRead, kNow);
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(missing.message().find("authorization: Bearer <token>"), std::string::npos);

  EXPECT_EQ(auth_->Check("read-token-0123456789", Scope::kRead, kNow).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth_->Check("Basic cmVhZDp0b2tlbg==", Scope::kRead, kNow).code(), absl::StatusCode::kUnauthenticated);
  const auto wrong = auth_->Check("Bearer read-token-0123456789x", Scope::kRead, kNow);
  EXPECT_EQ(wrong.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(wrong.message(), "unknown bearer token");  // the secret is never echoed

  const auto scope = auth_->Check("Bearer read-token-0123456789", Scope::kAlerts, kNow);
  EXPECT_EQ(scope.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(scope.message().find("'grafana' has scopes [read]; this call needs 'alerts'"), std::string::npos)
      << scope.message();
}

TEST_F(TokenTest, AdminHasEveryScope) {
  for (Scope s : {Scope::kRead, Scope::kAlerts, Scope::kAdmin}) {
    EXPECT_TRUE(auth_->Check("Bearer admin-token-0123456789", s, kNow).ok()) << ScopeName(s);
  }
  EXPECT_TRUE(auth_->Check("Bearer alerts-token-0123456789", Scope::kAlerts, kNow).ok());
  EXPECT_EQ(auth_->Check("Bearer alerts-token-0123456789", Scope::kAdmin, kNow).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(TokenTest, ExpiryIsAnInstantWithItsOffset) {
  // 2027-01-01T00:00:00+01:00 is 2026-12-31T23:00:00Z.
  const int64_t expiry = 1798758000;
  EXPECT_TRUE(auth_->Check("Bearer expired-token-0123456789", Scope::kRead, expiry - 1).ok());
  const auto st = auth_->Check("Bearer expired-token-0123456789", Scope::kRead, expiry);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(st.message().find("'old' expired at 2026-12-31T23:00:00+00:00"), std::string::npos) << st.message();
  EXPECT_TRUE(auth_->Check("Bearer alerts-token-0123456789", Scope::kRead, kNow).ok());
}

TEST_F(TokenTest, ABadFileKeepsTheRunningTokens) {
  Write("tokens:\n  - name: x\n    token: short\n    scopes: [reed]\n");
  const auto st = auth_->Reload();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("at least 16 characters"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("unknown scope 'reed'"), std::string::npos) << st.message();
  EXPECT_TRUE(auth_->Check("Bearer read-token-0123456789", Scope::kRead, kNow).ok());

  Write("tokens:\n  - {name: new, token: brand-new-token-0123, scopes: [read]}\n");
  ASSERT_TRUE(auth_->Reload().ok());
  EXPECT_EQ(auth_->Check("Bearer read-token-0123456789", Scope::kRead, kNow).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth_->Check("Bearer brand-new-token-0123", Scope::kRead, kNow).ok());
}

TEST_F(TokenTest, AChangedFileIsPickedUpWithoutAReload) {
  // A rotated Kubernetes Secret: the file changes under the running kpid.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  Write("tokens:\n  - {name: rotated, token: rotated-token-0123456, scopes: [read]}\n");
  EXPECT_TRUE(auth_->Check("Bearer rotated-token-0123456", Scope::kRead, kNow).ok());
  EXPECT_EQ(auth_->Check("Bearer read-token-0123456789", Scope::kRead, kNow).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(TokenFileTest, EveryErrorWithItsPlace) {
  const auto st = ParseTokens(
      "tokens:\n"
      "  - {name: a, token: aaaaaaaaaaaaaaaa, scopes: [read]}\n"
      "  - {name: a, token: aaaaaaaaaaaaaaaa, scopes: [read], expires: tomorrow}\n"
      "  - {token: has space in it!!, scopes: []}\n"
      "  - {name: c, token: cccccccccccccccc, scope: [read]}\n",
      "tokens.yaml");
  ASSERT_FALSE(st.ok());
  const std::string msg(st.status().message());
  for (const char* want : {"tokens.yaml:3:", "listed twice", "RFC 3339", "must not contain white space",
                           "at least one scope", "unknown key 'scope'"}) {
    EXPECT_NE(msg.find(want), std::string::npos) << want << "\n" << msg;
  }
  EXPECT_FALSE(ParseTokens("- a\n", "t.yaml").ok());
  EXPECT_FALSE(ParseTokens("tokens: {}\n", "t.yaml").ok());
}

TEST(TlsCredentialsTest, FilesAreCheckedBeforeBinding) {
  EXPECT_TRUE(MakeServerCredentials({}).ok());  // plaintext
  EXPECT_EQ(MakeServerCredentials({.cert_file = "/nonexistent.crt", .key_file = "/nonexistent.key"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeServerCredentials({.cert_file = "a.crt"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeServerCredentials({.client_ca_file = "ca.crt"}).status().code(), absl::StatusCode::kInvalidArgument);
  const auto not_pem = std::filesystem::temp_directory_path() / ("not-pem-" + std::to_string(::getpid()));
  std::ofstream(not_pem) << "hello\n";
  const auto st = MakeServerCredentials({.cert_file = not_pem.string(), .key_file = not_pem.string()});
  EXPECT_NE(st.status().message().find("is not PEM"), std::string::npos) << st.status();
  std::filesystem::remove(not_pem);
}

}  // namespace
}  // namespace kpistream::services
