#include "services/kpi_watch.h"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "services/kpi_answers.h"

namespace kpistream::services {

namespace {

// What identifies a query's answer: requests that differ only in map order
// share one subscription.
std::string CanonicalKey(const v1::GetKpiRequest& r) {
  std::vector<std::pair<std::string, std::string>> filter(r.filter().begin(), r.filter().end());
  std::sort(filter.begin(), filter.end());
  std::string key = fmt::format("{}:{}|{}:{}|{}:{}|{}|{}", r.kpi().size(), r.kpi(), r.window().size(), r.window(),
                                r.group_by().size(), r.group_by(), r.order_by(), r.limit());
  for (const auto& [k, v] : filter) fmt::format_to(std::back_inserter(key), "|{}:{}={}:{}", k.size(), k, v.size(), v);
  return key;
}

// What a change is: the groups, values, statuses, rounding and paging, not
// the clock moving the window's edges, freshness or the consistency token.
std::string Content(const v1::GetKpiResponse& r) {
  v1::GetKpiResponse c;
  *c.mutable_values() = r.values();
  c.set_rounded(r.rounded());
  c.set_next_page_token(r.next_page_token());
  std::string out;
  google::protobuf::io::StringOutputStream os(&out);
  google::protobuf::io::CodedOutputStream cos(&os);
  cos.SetSerializationDeterministic(true);
  c.SerializeToCodedStream(&cos);
  return out;
}

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct WatchHub::Subscription {
  v1::GetKpiRequest req;
  // One evaluation at a time, held across it (before mu): an evaluation
  // that read older data can never publish after a newer one.
  std::mutex eval_mu;
  std::mutex mu;                                     // guards the four below
  std::shared_ptr<const v1::GetKpiResponse> answer;  // the newest
  int64_t committed_ms = 0;                          // the newest commit before `answer` was evaluated
  std::string content;
  absl::Status error;
  std::vector<std::pair<Stream*, int>> watchers;  // guarded by the hub's mu_
};

// One WatchKpis call; deletes itself in OnDone after leaving the hub.
class WatchHub::Stream final : public grpc::ServerWriteReactor<v1::WatchKpisResponse> {
 public:
  Stream(WatchHub* hub, size_t queries, int64_t min_interval_ms)
      : hub_(hub),
        min_interval_ms_(min_interval_ms),
        pending_(queries),
        committed_ms_(queries),
        last_sent_ms_(queries, INT64_MIN / 2) {}

  // The newest answer of query `index` replaces any not yet sent.
  void Deliver(int index, std::shared_ptr<const v1::GetKpiResponse> answer, int64_t committed_ms, uint64_t* skipped) {
    std::lock_guard<std::mutex> l(mu_);
    auto& slot = pending_[static_cast<size_t>(index)];
    if (slot) ++*skipped;
    slot = std::move(answer);
    committed_ms_[static_cast<size_t>(index)] = committed_ms;
    PumpLocked();
  }
  void Tick() {
    std::lock_guard<std::mutex> l(mu_);
    PumpLocked();
  }
  void End(const grpc::Status& s) {
    std::lock_guard<std::mutex> l(mu_);
    FinishLocked(s);
  }
  // Watch() has finished setting the stream up: from now on it may finish
  // (and delete itself), not before.
  void Ready() {
    std::lock_guard<std::mutex> l(mu_);
    ready_ = true;
    if (deferred_finish_ && !writing_) Finish(pending_finish_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> l(mu_);
    writing_ = false;
    if (deferred_finish_) {
      if (ready_) Finish(pending_finish_);
      return;
    }
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream broke"));
      return;
    }
    ++sent_;
    PumpLocked();
  }
  void OnCancel() override { End(grpc::Status::CANCELLED); }
  void OnDone() override {
    hub_->Remove(this);  // after this, nothing delivers here
    delete this;
  }
  uint64_t TakeSent() {
    std::lock_guard<std::mutex> l(mu_);
    return std::exchange(sent_, 0);
  }

 private:
  void PumpLocked() {
    if (writing_ || finished_) return;
    const int64_t now = SteadyMs();
    const size_t n = pending_.size();
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (next_ + k) % n;  // round robin: no query starves the others
      if (!pending_[i] || now - last_sent_ms_[i] < min_interval_ms_) continue;
      current_.set_query(static_cast<int>(i));
      *current_.mutable_answer() = *pending_[i];
      if (committed_ms_[i] > 0) {
        *current_.mutable_committed_at() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(committed_ms_[i]);
      } else {
        current_.clear_committed_at();
      }
      pending_[i].reset();
      last_sent_ms_[i] = now;
      next_ = i + 1;
      writing_ = true;
      StartWrite(&current_);
      return;
    }
  }
  void FinishLocked(const grpc::Status& s) {
    if (finished_) return;
    finished_ = true;
    if (!writing_ && ready_) {
      Finish(s);
    } else {  // after the write in flight, or once set up
      pending_finish_ = s;
      deferred_finish_ = true;
    }
  }

  WatchHub* hub_;
  const int64_t min_interval_ms_;
  std::mutex mu_;
  std::vector<std::shared_ptr<const v1::GetKpiResponse>> pending_;
  std::vector<int64_t> committed_ms_;  // of each pending answer
  std::vector<int64_t> last_sent_ms_;
  size_t next_ = 0;
  v1::WatchKpisResponse current_;
  bool writing_ = false, finished_ = false, deferred_finish_ = false, ready_ = false;
  grpc::Status pending_finish_;
  uint64_t sent_ = 0;
};

WatchHub::WatchHub(ServingViewFn view, const state::Clock& clock, WatchOptions options)
    : view_(std::move(view)), clock_(clock), options_(options), thread_([this] { Run(); }) {}

WatchHub::~WatchHub() { Stop(); }

void WatchHub::OnCommit() {
  {
    std::lock_guard<std::mutex> l(mu_);
    committed_ = true;
    last_commit_ms_ = clock_.NowMs();
  }
  cv_.notify_all();
}

void WatchHub::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> l(mu_);
  for (auto* s : streams_) {
    s->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "kpid is stopping or reloading; watch again"));
  }
}

void WatchHub::Run() {
  int64_t last = 0;
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    // Woken by a commit, evaluated at most once per interval; and once per
    // interval anyway, since a window ending now moves with the clock.
    cv_.wait_for(l, std::chrono::milliseconds(options_.interval_ms), [this] { return stop_ || committed_; });
    if (stop_) break;
    const int64_t wait = last + options_.interval_ms - SteadyMs();
    if (wait > 0) {
      cv_.wait_for(l, std::chrono::milliseconds(wait), [this] { return stop_; });
      if (stop_) break;
    }
    committed_ = false;
    last = SteadyMs();
    l.unlock();
    EvaluateAll();
    l.lock();
  }
}

bool WatchHub::Evaluate(Subscription* sub) {
  std::lock_guard<std::mutex> eval_lock(sub->eval_mu);
  int64_t committed_ms;
  {
    std::lock_guard<std::mutex> l(mu_);
    committed_ms = last_commit_ms_;
  }
  const ServingView view = view_();
  auto answer = std::make_shared<v1::GetKpiResponse>();
  const auto st = AnswerGetKpi(view, clock_, sub->req, answer.get());
  std::lock_guard<std::mutex> l(sub->mu);
  if (!st.ok()) {
    sub->error = st;
    return false;
  }
  sub->error = absl::OkStatus();
  auto content = Content(*answer);
  const bool changed = !sub->answer || content != sub->content;
  sub->content = std::move(content);
  sub->answer = std::move(answer);
  sub->committed_ms = committed_ms;
  return changed;
}

void WatchHub::EvaluateAll() {
  std::vector<std::shared_ptr<Subscription>> subs;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [key, s] : subs_) subs.push_back(s);
  }
  std::vector<std::shared_ptr<Subscription>> changed, failed;
  for (const auto& s : subs) {
    if (Evaluate(s.get())) changed.push_back(s);
    std::lock_guard<std::mutex> l(s->mu);
    // A KPI gone with a reload, or a query that became invalid, ends its
    // streams with the reason; a transient error keeps them waiting.
    const auto code = s->error.code();
    if (code == absl::StatusCode::kNotFound || code == absl::StatusCode::kInvalidArgument ||
        code == absl::StatusCode::kResourceExhausted) {
      failed.push_back(s);
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  evaluations_ += subs.size();
  for (const auto& s : changed) {
    std::shared_ptr<const v1::GetKpiResponse> answer;
    int64_t committed_ms;
    {
      std::lock_guard<std::mutex> sl(s->mu);
      answer = s->answer;
      committed_ms = s->committed_ms;
    }
    for (const auto& [stream, index] : s->watchers) stream->Deliver(index, answer, committed_ms, &skipped_);
  }
  for (const auto& s : failed) {
    absl::Status error;
    {
      std::lock_guard<std::mutex> sl(s->mu);
      error = s->error;
    }
    for (const auto& [stream, index] : s->watchers) {
      stream->End(grpc::Status(static_cast<grpc::StatusCode>(error.code()),
                               fmt::format("query {}: {}", index, std::string(error.message()))));
    }
  }
  for (auto* stream : streams_) {
    stream->Tick();
    sent_ += stream->TakeSent();
  }
}

void WatchHub::Remove(Stream* stream) {
  std::lock_guard<std::mutex> l(mu_);
  streams_.erase(stream);
  for (auto it = subs_.begin(); it != subs_.end();) {
    auto& w = it->second->watchers;
    std::erase_if(w, [stream](const auto& p) { return p.first == stream; });
    it = w.empty() ? subs_.erase(it) : std::next(it);
  }
}

grpc::ServerWriteReactor<v1::WatchKpisResponse>* WatchHub::Watch(grpc::CallbackServerContext*,
                                                                 const v1::WatchKpisRequest* req) {
  struct Refusal final : grpc::ServerWriteReactor<v1::WatchKpisResponse> {
    explicit Refusal(grpc::Status s) { Finish(s); }
    void OnDone() override { delete this; }
  };
  auto refuse = [](grpc::StatusCode code, std::string msg) { return new Refusal(grpc::Status(code, std::move(msg))); };
  if (req->queries().empty()) return refuse(grpc::StatusCode::INVALID_ARGUMENT, "queries: name at least one KPI query");
  if (static_cast<size_t>(req->queries_size()) > options_.max_queries) {
    return refuse(grpc::StatusCode::RESOURCE_EXHAUSTED,
                  fmt::format("{} queries in one watch; at most {} (kpid.yaml watch.max_queries): split them over "
                              "several streams",
                              req->queries_size(), options_.max_queries));
  }
  // Every query is checked now: a mistake is an error at once, not a
  // stream that never sends.
  const ServingView view = view_();
  const int64_t now_s = (clock_.NowMs() + 999) / 1000;
  for (int i = 0; i < req->queries_size(); ++i) {
    const auto& q = req->queries(i);
    if (q.has_end_time() || !q.page_token().empty()) {
      return refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    fmt::format("query {}: a watch follows windows ending now: no end_time, no page_token", i));
    }
    auto plan = api::PlanGetKpi(q, *view.catalog, now_s);
    if (!plan.ok()) {
      return refuse(static_cast<grpc::StatusCode>(plan.status().code()),
                    fmt::format("query {}: {}", i, std::string(plan.status().message())));
    }
  }
  int64_t min_interval = options_.interval_ms;
  if (req->has_min_interval()) {
    min_interval =
        std::max<int64_t>(min_interval, google::protobuf::util::TimeUtil::DurationToMilliseconds(req->min_interval()));
  }
  auto* stream = new Stream(this, static_cast<size_t>(req->queries_size()), min_interval);
  std::vector<std::pair<std::shared_ptr<Subscription>, int>> mine;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ || streams_.size() >= options_.max_streams) {
      const bool stopping = stop_;
      stream->End(stopping ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "kpid is stopping")
                           : grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                          fmt::format("kpid serves at most {} watch streams (kpid.yaml "
                                                      "watch.max_streams): watch several queries in one stream",
                                                      options_.max_streams)));
      streams_.insert(stream);  // OnDone removes it
      stream->Ready();
      return stream;
    }
    streams_.insert(stream);
    for (int i = 0; i < req->queries_size(); ++i) {
      auto& s = subs_[CanonicalKey(req->queries(i))];
      if (!s) {
        s = std::make_shared<Subscription>();
        s->req = req->queries(i);
      }
      s->watchers.emplace_back(stream, i);
      mine.emplace_back(s, i);
    }
  }
  // The current answers at once: the subscription's newest, or a first
  // evaluation of a new one.
  for (const auto& [s, i] : mine) {
    bool have;
    {
      std::lock_guard<std::mutex> sl(s->mu);
      have = s->answer != nullptr;
    }
    if (!have) Evaluate(s.get());
    // Read and delivered under the hub's lock, as EvaluateAll delivers: a
    // newer answer the hub thread published meanwhile is either read here
    // or delivered after this one, never overwritten by an older one.
    std::lock_guard<std::mutex> l(mu_);
    std::lock_guard<std::mutex> sl(s->mu);
    if (!s->answer && !s->error.ok()) {
      stream->End(grpc::Status(static_cast<grpc::StatusCode>(s->error.code()),
                               fmt::format("query {}: {}", i, std::string(s->error.message()))));
      break;
    }
    uint64_t skipped = 0;
    if (s->answer) stream->Deliver(i, s->answer, s->committed_ms, &skipped);
  }
  stream->Ready();
  return stream;
}

void WatchHub::Collect(MetricFamilies* out) const {
  std::lock_guard<std::mutex> l(mu_);
  AddGauge(out, "kpistream_watch_streams", "Open WatchKpis streams.", static_cast<double>(streams_.size()));
  AddGauge(out, "kpistream_watch_subscriptions",
           "Distinct watched queries (evaluated once each, however many "
           "streams share them).",
           static_cast<double>(subs_.size()));
  AddCounter(out, "kpistream_watch_evaluations_total", "Evaluations of watched queries.",
             static_cast<double>(evaluations_));
  AddCounter(out, "kpistream_watch_answers_sent_total", "Answers written to watch streams.",
             static_cast<double>(sent_));
  AddCounter(out, "kpistream_watch_answers_skipped_total",
             "Answers replaced by a newer one before a slow stream took them.", static_cast<double>(skipped_));
}

}  // namespace kpistream::services
