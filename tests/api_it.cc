// The query API as another service uses it, on a real broker: batches from
// one view, ordered and paged groups, rolling ranges, live watch streams,
// the alert rules, and each refusal.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <thread>

#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "kpistream/v1/alerts.grpc.pb.h"
#include "tests/harness.h"

namespace kpistream::testing {
namespace {

using namespace std::chrono_literals;
using google::protobuf::util::TimeUtil;

class ApiIT : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("api");
    broker_ = new KafkaBroker(dir_->path());
    ASSERT_TRUE(broker_->ok()) << broker_->error();
    Produce(50000, 21);
    kpid_ = new Kpid(KpidOptions{.brokers = broker_->bootstrap(),
                                 .topic_prefix = "ap.",
                                 .group_id = "kpid-api",
                                 .state_dir = dir_->path() + "/state",
                                 .work_dir = dir_->path()});
    ASSERT_TRUE(kpid_->WaitStarted()) << kpid_->process().LogTail();
    ASSERT_TRUE(kpid_->WaitServing()) << kpid_->process().LogTail();
    ASSERT_TRUE(WaitCaughtUp(*kpid_, 120s)) << kpid_->process().LogTail();
    channel_ = grpc::CreateChannel(kpid_->grpc_address(), grpc::InsecureChannelCredentials());
  }
  static void TearDownTestSuite() {
    delete kpid_;
    delete broker_;
    delete dir_;
  }
  static void Produce(int count, int seed) {
    ASSERT_EQ(RunToEnd({KpigenBin(), "--brokers", broker_->bootstrap(), "--topic-prefix", "ap.", "--partitions", "4",
                        "--count", std::to_string(count), "--seed", std::to_string(seed), "--span", "2h"},
                       dir_->path() + "/kpigen.log"),
              0);
  }
  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + 20s);
    return ctx;
  }
  static v1::GetKpiRequest Req(const std::string& kpi, const std::string& window, const std::string& group_by = "") {
    v1::GetKpiRequest r;
    r.set_kpi(kpi);
    r.set_window(window);
    r.set_group_by(group_by);
    return r;
  }

  static TempDir* dir_;
  static KafkaBroker* broker_;
  static Kpid* kpid_;
  static std::shared_ptr<grpc::Channel> channel_;
};

TempDir* ApiIT::dir_ = nullptr;
KafkaBroker* ApiIT::broker_ = nullptr;
Kpid* ApiIT::kpid_ = nullptr;
std::shared_ptr<grpc::Channel> ApiIT::channel_;

TEST_F(ApiIT, BatchAnswersFromOneViewWithEachQuerysOwnError) {
  auto stub = v1::KpiService::NewStub(channel_);
  v1::BatchGetKpisRequest req;
  *req.add_queries() = Req("ctr", "24h");
  *req.add_queries() = Req("no_such_kpi", "24h");
  *req.add_queries() = Req("conversions", "24h", "channel");
  v1::BatchGetKpisResponse resp;
  auto st = stub->BatchGetKpis(Ctx().get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.results_size(), 3);
  EXPECT_EQ(resp.results(0).error_code(), 0);
  EXPECT_TRUE(resp.results(0).answer().values(0).has_value()) << resp.results(0).DebugString();
  EXPECT_EQ(resp.results(1).error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_NE(resp.results(1).error_message().find("unknown KPI"), std::string::npos);
  EXPECT_GT(resp.results(2).answer().values_size(), 1);
  EXPECT_FALSE(resp.consistency_token().empty());
  EXPECT_EQ(resp.results(0).answer().consistency_token(), resp.consistency_token());
  EXPECT_EQ(resp.results(2).answer().consistency_token(), resp.consistency_token());
  // Too many queries: a refusal that says what to do.
  v1::BatchGetKpisRequest big;
  for (int i = 0; i < 101; ++i) *big.add_queries() = Req("ctr", "24h");
  st = stub->BatchGetKpis(Ctx().get(), big, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("split the batch"), std::string::npos);
}

TEST_F(ApiIT, GroupsByTwoDimensionsOrderedAndPaged) {
  auto stub = v1::KpiService::NewStub(channel_);
  auto all_req = Req("impressions", "24h", "channel, region");
  all_req.set_order_by("value");
  v1::GetKpiResponse all;
  ASSERT_TRUE(stub->GetKpi(Ctx().get(), all_req, &all).ok());
  ASSERT_GT(all.values_size(), 4);
  for (int i = 1; i < all.values_size(); ++i) EXPECT_GE(all.values(i - 1).value(), all.values(i).value());
  EXPECT_EQ(all.values(0).group().size(), 2u);
  // The same groups, three per page.
  auto req = all_req;
  req.set_limit(3);
  std::vector<double> paged;
  for (int page = 0; page < 100; ++page) {
    v1::GetKpiResponse r;
    auto st = stub->GetKpi(Ctx().get(), req, &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_LE(r.values_size(), 3);
    for (const auto& v : r.values()) paged.push_back(v.value());
    if (r.next_page_token().empty()) break;
    req.set_page_token(r.next_page_token());
  }
  ASSERT_EQ(paged.size(), static_cast<size_t>(all.values_size()));
  for (size_t i = 0; i < paged.size(); ++i) EXPECT_EQ(paged[i], all.values(static_cast<int>(i)).value());
  // Lowest first.
  req = all_req;
  req.set_order_by("-value");
  req.set_limit(1);
  v1::GetKpiResponse low;
  ASSERT_TRUE(stub->GetKpi(Ctx().get(), req, &low).ok());
  EXPECT_EQ(low.values(0).value(), all.values(all.values_size() - 1).value());
  // A token from another request, a bad order: refused, saying why.
  auto other = Req("clicks", "24h", "channel");
  other.set_page_token(all.next_page_token().empty() ? "3.0000000000000000" : all.next_page_token());
  v1::GetKpiResponse r;
  auto st = stub->GetKpi(Ctx().get(), other, &r);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("page_token"), std::string::npos);
  other = Req("clicks", "24h", "channel");
  other.set_order_by("size");
  st = stub->GetKpi(Ctx().get(), other, &r);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ApiIT, RollingRangePointsEqualTheWindowEndingThere) {
  auto stub = v1::KpiService::NewStub(channel_);
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const int64_t end = now / 3600 * 3600;
  v1::QueryRangeRequest req;
  req.set_kpi("clicks");
  *req.mutable_start_time() = TimeUtil::SecondsToTimestamp(end - 3 * 3600);
  *req.mutable_end_time() = TimeUtil::SecondsToTimestamp(end + 1);
  req.set_step("1h");
  req.set_window("2h");
  v1::QueryRangeResponse resp;
  auto st = stub->QueryRange(Ctx().get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.series_size(), 1);
  ASSERT_EQ(resp.series(0).points_size(), 4);
  EXPECT_FALSE(resp.consistency_token().empty());
  for (const auto& p : resp.series(0).points()) {
    auto g = Req("clicks", "2h");
    *g.mutable_end_time() = p.time();
    v1::GetKpiResponse one;
    ASSERT_TRUE(stub->GetKpi(Ctx().get(), g, &one).ok());
    EXPECT_EQ(p.value(), one.values(0).value()) << TimeUtil::ToString(p.time());
  }
  req.set_window("90s");  // not a multiple of the 1m bucket
  st = stub->QueryRange(Ctx().get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
}

TEST_F(ApiIT, WatchSendsTheCurrentAnswersThenChanges) {
  auto stub = v1::KpiService::NewStub(channel_);
  v1::WatchKpisRequest req;
  *req.add_queries() = Req("impressions", "all");
  *req.add_queries() = Req("conversions", "all", "channel");
  grpc::ClientContext ctx;
  auto reader = stub->WatchKpis(&ctx, req);
  // A second stream on the same first query shares its subscription.
  grpc::ClientContext ctx2;
  v1::WatchKpisRequest req2;
  *req2.add_queries() = Req("impressions", "all");
  auto reader2 = stub->WatchKpis(&ctx2, req2);
  std::map<int, v1::GetKpiResponse> first;
  v1::WatchKpisResponse msg;
  while (first.size() < 2 && reader->Read(&msg)) first[msg.query()] = msg.answer();
  ASSERT_EQ(first.size(), 2u);
  ASSERT_TRUE(reader2->Read(&msg));
  const double before = first[0].values(0).value();
  EXPECT_EQ(msg.answer().values(0).value(), before);
  EXPECT_EQ(MetricSum(kpid_->Scrape(), "kpistream_watch_subscriptions"), 2);
  EXPECT_EQ(MetricSum(kpid_->Scrape(), "kpistream_watch_streams"), 2);
  // More events: an answer with the new count arrives by itself.
  Produce(5000, 22);
  const auto t0 = std::chrono::steady_clock::now();
  double after = before;
  while (after == before && reader->Read(&msg)) {
    if (msg.query() == 0) after = msg.answer().values(0).value();
  }
  EXPECT_GT(after, before);
  std::printf("[ measure  ] watch: an update %.1f s after kpigen finished producing\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  ctx.TryCancel();
  ctx2.TryCancel();
  reader->Finish();
  reader2->Finish();
}

TEST_F(ApiIT, WatchRefusalsSayWhy) {
  auto stub = v1::KpiService::NewStub(channel_);
  auto refused = [&](const v1::WatchKpisRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    auto reader = stub->WatchKpis(&ctx, req);
    v1::WatchKpisResponse msg;
    while (reader->Read(&msg)) {
    }
    return reader->Finish();
  };
  v1::WatchKpisRequest bad;
  *bad.add_queries() = Req("ctr", "24h");
  *bad.add_queries() = Req("ctr", "fortnight");
  auto st = refused(bad);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("query 1"), std::string::npos) << st.error_message();
  v1::WatchKpisRequest dated;
  *dated.add_queries() = Req("ctr", "24h");
  *dated.mutable_queries(0)->mutable_end_time() = TimeUtil::SecondsToTimestamp(1700000000);
  EXPECT_EQ(refused(dated).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::WatchKpisRequest many;
  for (int i = 0; i < 101; ++i) *many.add_queries() = Req("ctr", "24h");
  st = refused(many);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("several streams"), std::string::npos);
}

TEST_F(ApiIT, RulesAndFilteredAlerts) {
  auto stub = v1::AlertService::NewStub(channel_);
  v1::ListRulesResponse rules;
  ASSERT_TRUE(stub->ListRules(Ctx().get(), v1::ListRulesRequest(), &rules).ok());
  ASSERT_EQ(rules.rules_size(), 11);
  bool churn = false;
  for (const auto& r : rules.rules()) {
    if (r.name() != "ChurnRateSpike") continue;
    churn = true;
    EXPECT_EQ(r.kind(), "threshold");
    EXPECT_EQ(r.kpi(), "logo_churn_rate");
    EXPECT_EQ(r.condition(), "> 4");
    EXPECT_EQ(r.for_seconds(), 2 * 86400);
    EXPECT_EQ(r.severity(), "critical");
  }
  EXPECT_TRUE(churn);
  v1::ListAlertsRequest req;
  req.set_severity("no-such-severity");
  v1::ListAlertsResponse alerts;
  ASSERT_TRUE(stub->ListAlerts(Ctx().get(), req, &alerts).ok());
  EXPECT_EQ(alerts.alerts_size(), 0);
}

// Bytes that are not the method's request message: a field tag with wire
// type 7, which does not exist.
grpc::Status CallWithBytes(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                           const std::string& bytes) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 20s);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::Status status;
  auto call = stub.PrepareCall(&ctx, method, &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  call->WriteLast(request, grpc::WriteOptions(), reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  call->Read(&response, reinterpret_cast<void*>(3));  // fails: no message comes
  cq.Next(&tag, &ok);
  call->Finish(&status, reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  return status;
}

TEST_F(ApiIT, RequestBytesThatDoNotParseAreInvalidArgumentNamingTheType) {
  const std::string garbage("\x0f\xff\xff", 3);
  const std::vector<std::pair<std::string, std::string>> methods = {
      {"/kpistream.v1.KpiService/ListKpis", "kpistream.v1.ListKpisRequest"},
      {"/kpistream.v1.KpiService/GetKpi", "kpistream.v1.GetKpiRequest"},
      {"/kpistream.v1.KpiService/QueryRange", "kpistream.v1.QueryRangeRequest"},
      {"/kpistream.v1.KpiService/BatchGetKpis", "kpistream.v1.BatchGetKpisRequest"},
      {"/kpistream.v1.KpiService/WatchKpis", "kpistream.v1.WatchKpisRequest"},
      {"/kpistream.v1.AlertService/ListAlerts", "kpistream.v1.ListAlertsRequest"},
      {"/kpistream.v1.AlertService/ListRules", "kpistream.v1.ListRulesRequest"},
      {"/kpistream.v1.AlertService/WatchAlerts", "kpistream.v1.WatchAlertsRequest"},
      // gRPC's own health service parses its requests itself, and says
      // "could not parse request".
      {"/grpc.health.v1.Health/Check", ""},
  };
  for (const auto& [method, type] : methods) {
    SCOPED_TRACE(method);
    const auto st = CallWithBytes(channel_, method, garbage);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    if (!type.empty()) {
      EXPECT_NE(st.error_message().find(type), std::string::npos) << st.error_message();
    }
  }
  // The same path with good bytes is served: the refusal is the bytes'.
  v1::GetKpiRequest good = Req("ctr", "24h");
  EXPECT_TRUE(CallWithBytes(channel_, "/kpistream.v1.KpiService/GetKpi", good.SerializeAsString()).ok());
}

TEST_F(ApiIT, ReflectionV1ListsAndDescribesEveryService) {
  namespace rv1 = grpc::reflection::v1;
  auto stub = rv1::ServerReflection::NewStub(channel_);
  auto ctx = Ctx();
  auto stream = stub->ServerReflectionInfo(ctx.get());
  rv1::ServerReflectionRequest req;
  rv1::ServerReflectionResponse resp;
  req.set_list_services("*");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  std::vector<std::string> names;
  for (const auto& s : resp.list_services_response().service()) names.push_back(s.name());
  EXPECT_EQ(names, (std::vector<std::string>{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                                             "grpc.reflection.v1alpha.ServerReflection", "kpistream.v1.AlertService",
                                             "kpistream.v1.KpiService"}));
  for (const auto& name : names) {  // every service is described, with its imports
    SCOPED_TRACE(name);
    req.set_file_containing_symbol(name);
    ASSERT_TRUE(stream->Write(req));
    ASSERT_TRUE(stream->Read(&resp));
    ASSERT_TRUE(resp.has_file_descriptor_response()) << resp.DebugString();
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(resp.file_descriptor_response().file_descriptor_proto(0)));
    bool found = false;
    for (const auto& s : file.service()) found |= file.package() + "." + s.name() == name;
    EXPECT_TRUE(found) << file.name();
  }
  req.set_file_containing_symbol("kpistream.v1.NoSuchThing");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(resp.original_request().file_containing_symbol(), "kpistream.v1.NoSuchThing");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace kpistream::testing
