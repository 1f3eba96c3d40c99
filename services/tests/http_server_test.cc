#include "services/http_server.h"

#include <curl/curl.h>
#include <gtest/gtest.h>

#include <atomic>

namespace kpistream::services {
namespace {

struct Answer {
  long status = 0;
  std::string body, headers;
};

Answer Call(const std::string& method, const std::string& url) {
  Answer a;
  CURL* c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "HEAD") curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  auto append = +[](char* p, size_t s, size_t n, void* out) {
    static_cast<std::string*>(out)->append(p, s * n);
    return s * n;
  };
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, append);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &a.headers);
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
  curl_easy_cleanup(c);
  return a;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpHandlers h;
    h.collect = [](MetricFamilies* out) {
      prometheus::MetricFamily f;
      f.name = "kpistream_test_total";
      f.help = "A test counter.";
      f.type = prometheus::MetricType::Counter;
      prometheus::ClientMetric m;
      m.counter.value = 3;
      f.metric.push_back(m);
      out->push_back(f);
    };
    h.healthy = [] { return absl::OkStatus(); };
    h.ready = [this] { return ready_ ? absl::OkStatus() : absl::UnavailableError("kafka: all brokers down"); };
    h.reload = [this] {
      ++reloads_;
      return bad_reload_ ? absl::InvalidArgumentError("kpis.yaml:3:1: unknown key") : absl::OkStatus();
    };
    auto s = HttpServer::Create({.listen = "127.0.0.1:0"}, std::move(h));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    base_ = "http://" + server_->address();
  }
  std::unique_ptr<HttpServer> server_;
  std::string base_;
  std::atomic<bool> ready_{true}, bad_reload_{false};
  std::atomic<int> reloads_{0};
};

TEST_F(HttpServerTest, ServesPrometheusEndpoints) {
  const auto m = Call("GET", base_ + "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("kpistream_test_total 3"), std::string::npos) << m.body;
  EXPECT_NE(m.headers.find("text/plain; version=0.0.4"), std::string::npos) << m.headers;
  EXPECT_EQ(Call("HEAD", base_ + "/metrics").status, 200);
  EXPECT_EQ(Call("GET", base_ + "/-/healthy").status, 200);
  EXPECT_EQ(Call("GET", base_ + "/-/ready").status, 200);
  ready_ = false;
  const auto r = Call("GET", base_ + "/-/ready");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "kafka: all brokers down\n");
}

TEST_F(HttpServerTest, ReloadAnswersWithWhatIsWrong) {
  EXPECT_EQ(Call("POST", base_ + "/-/reload").status, 200);
  EXPECT_EQ(Call("PUT", base_ + "/-/reload").status, 200);
  bad_reload_ = true;
  const auto r = Call("POST", base_ + "/-/reload");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "kpis.yaml:3:1: unknown key\n");
  EXPECT_EQ(reloads_, 3);
}

TEST_F(HttpServerTest, UnknownPathsAndMethodsAreRefused) {
  EXPECT_EQ(Call("GET", base_ + "/nope").status, 404);
  const auto r = Call("GET", base_ + "/-/reload");
  EXPECT_EQ(r.status, 405);
  EXPECT_NE(r.headers.find("Allow: POST, PUT"), std::string::npos) << r.headers;
  EXPECT_EQ(Call("DELETE", base_ + "/metrics").status, 405);
  EXPECT_EQ(reloads_, 0);
}

TEST_F(HttpServerTest, APortInUseIsAClearError) {
  auto second = HttpServer::Create({.listen = server_->address()}, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  const std::string msg(second.status().message());
  EXPECT_NE(msg.find(server_->address()), std::string::npos) << msg;
  EXPECT_NE(msg.find("in use"), std::string::npos) << msg;
  // The first still serves; after Stop the port is free again.
  EXPECT_EQ(Call("GET", base_ + "/-/healthy").status, 200);
  const auto address = server_->address();
  server_->Stop();
  auto again = HttpServer::Create({.listen = address}, {});
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST_F(HttpServerTest, UnusableCertificatesNameTheirFile) {
  WebConfig web;
  web.cert_file = "/nonexistent/server.crt";
  web.key_file = "/nonexistent/server.key";
  auto s = HttpServer::Create({.listen = "127.0.0.1:0", .web = web}, {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/nonexistent/server.crt"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace kpistream::services
