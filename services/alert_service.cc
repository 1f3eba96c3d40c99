#include "services/alert_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <mutex>

#include <google/protobuf/util/time_util.h>

#include "kpistream/v1/alerts.grpc.pb.h"
#include "services/utf8.h"

namespace kpistream::services {

using alerting::Alerter;
using google::protobuf::util::TimeUtil;

v1::Alert ToApi(const alerting::Alert& a) {
  v1::Alert out;
  out.set_rule(a.rule);
  for (const auto& [k, v] : a.labels) (*out.mutable_labels())[ValidUtf8(k)] = ValidUtf8(v);
  for (const auto& [k, v] : a.annotations) (*out.mutable_annotations())[ValidUtf8(k)] = ValidUtf8(v);
  out.set_state(static_cast<v1::AlertState>(static_cast<int>(a.state)));
  if (a.value) out.set_value(*a.value);
  *out.mutable_active_since() = TimeUtil::MillisecondsToTimestamp(a.active_since_ms);
  if (a.firing_since_ms) *out.mutable_firing_since() = TimeUtil::MillisecondsToTimestamp(a.firing_since_ms);
  if (a.resolved_at_ms) *out.mutable_resolved_at() = TimeUtil::MillisecondsToTimestamp(a.resolved_at_ms);
  *out.mutable_last_true() = TimeUtil::MillisecondsToTimestamp(a.last_true_ms);
  *out.mutable_last_evaluated() = TimeUtil::MillisecondsToTimestamp(a.last_evaluated_ms);
  out.set_fingerprint(a.fingerprint);
  return out;
}

namespace {

v1::AlertTransition TransitionToApi(const alerting::AlertTransition& t) {
  v1::AlertTransition out;
  out.set_sequence(t.sequence);
  out.set_from(static_cast<v1::AlertState>(static_cast<int>(t.from)));
  *out.mutable_alert() = ToApi(t.alert);
  return out;
}

// One WatchAlerts call. Writes one transition at a time: the next is taken
// from the alerter's log when the previous write completes, or when the
// alerter announces new transitions. Finish is called exactly once; the
// reactor deletes itself in OnDone, after unsubscribing.
class Watcher final : public grpc::ServerWriteReactor<v1::AlertTransition> {
 public:
  Watcher(ServingView view, uint64_t after) : view_(std::move(view)), alerter_(view_.alerter), after_(after) {
    sub_ = alerter_->Subscribe([this] { Pump(); });
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      writing_ = false;
      if (deferred_finish_) {
        Finish(pending_finish_);
        return;
      }
      if (!ok) {
        FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream broke"));
        return;
      }
    }
    Pump();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> l(mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    alerter_->Unsubscribe(sub_);  // after this, Pump is not running
    delete this;
  }

 private:
  void Pump() {
    std::lock_guard<std::mutex> l(mu_);
    if (writing_ || finished_) return;
    if (queue_.empty() && alerter_->stopped()) {
      // A reload replaced the alerter: this stream ends, the client watches
      // again from where it was (the log survives in the state store).
      FinishLocked(
          grpc::Status(grpc::StatusCode::UNAVAILABLE,
                       fmt::format("kpid reloaded its configuration; watch again with after_sequence {}", after_)));
      return;
    }
    if (queue_.empty()) {
      std::vector<alerting::AlertTransition> next;
      if (!alerter_->TransitionsAfter(after_, 64, &next)) {
        FinishLocked(grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                                  fmt::format("transitions after sequence {} are no longer kept; call ListAlerts "
                                              "for the current alerts and watch from its sequence",
                                              after_)));
        return;
      }
      for (const auto& t : next) queue_.push_back(TransitionToApi(t));
    }
    if (queue_.empty()) return;  // woken by the alerter later
    current_ = std::move(queue_.front());
    queue_.pop_front();
    after_ = current_.sequence();
    writing_ = true;
    StartWrite(&current_);
  }
  void FinishLocked(const grpc::Status& s) {
    if (finished_) return;
    finished_ = true;
    if (!writing_) {
      Finish(s);
    } else {  // Finish once the write in flight completes
      pending_finish_ = s;
      deferred_finish_ = true;
    }
  }

  ServingView view_;  // keeps the alerter alive
  Alerter* alerter_;
  int sub_ = -1;
  std::mutex mu_;
  uint64_t after_;
  std::deque<v1::AlertTransition> queue_;
  v1::AlertTransition current_;
  bool writing_ = false;
  bool finished_ = false;
  bool deferred_finish_ = false;
  grpc::Status pending_finish_;
};

// ListAlerts' filters: every one given must hold.
bool Matches(const alerting::Alert& a, const v1::ListAlertsRequest& req) {
  if (!req.states().empty()) {
    const auto state = static_cast<v1::AlertState>(static_cast<int>(a.state));
    if (std::find(req.states().begin(), req.states().end(), state) == req.states().end()) return false;
  }
  if (!req.severity().empty()) {
    const auto it = a.labels.find("severity");
    if (it == a.labels.end() || it->second != req.severity()) return false;
  }
  for (const auto& [k, v] : req.labels()) {
    const auto it = a.labels.find(k);
    if (it == a.labels.end() || ValidUtf8(it->second) != v) return false;
  }
  return true;
}

std::string Seconds(int64_t s) {
  if (s % 86400 == 0 && s > 0) return fmt::format("{}d", s / 86400);
  if (s % 3600 == 0 && s > 0) return fmt::format("{}h", s / 3600);
  if (s % 60 == 0 && s > 0) return fmt::format("{}m", s / 60);
  return fmt::format("{}s", s);
}

// A rule as configured, its condition written out.
void DescribeRule(const kpi::Catalog& cat, const kpi::AlertRule& r, v1::Rule* out) {
  using K = kpi::AlertKind;
  out->set_name(r.name);
  out->set_kind(std::string(kpi::AlertKindName(r.kind)));
  if (r.kpi >= 0) out->set_kpi(cat.kpis[static_cast<size_t>(r.kpi)].name);
  out->set_window(r.window);
  out->set_group_by(r.group_by);
  for (const auto& [k, v] : r.filter) (*out->mutable_filter())[k] = v;
  const std::string op(kpi::CompareOpName(r.op));
  switch (r.kind) {
    case K::kThreshold:
      out->set_condition(r.target_band ? fmt::format("target: {}", kpi::BandName(*r.target_band))
                                       : fmt::format("{} {:g}", op, r.threshold));
      break;
    case K::kChange:
      out->set_condition(fmt::format("change over {} {} {:g}%", Seconds(r.compare_to_s), op, r.threshold * 100));
      break;
    case K::kAnomaly:
      out->set_condition(fmt::format("anomaly: {:g} sigma over {} x {}{}", r.k, r.periods, Seconds(r.period_s),
                                     r.direction > 0   ? ", up"
                                     : r.direction < 0 ? ", down"
                                                       : ""));
      break;
    case K::kAbsence:
      out->set_condition(fmt::format(
          "no {}events for {}", r.family ? std::string(kpi::FamilyName(*r.family)) + " " : "", Seconds(r.max_age_s)));
      break;
    case K::kFreshness:
      out->set_condition(fmt::format("older than {}", Seconds(r.max_age_s)));
      break;
  }
  out->set_for_seconds(static_cast<double>(r.for_s));
  out->set_keep_firing_for_seconds(static_cast<double>(r.keep_firing_for_s));
  out->set_severity(r.severity);
  for (const auto& [k, v] : r.labels) (*out->mutable_labels())[k] = v;
  for (const auto& [k, v] : r.annotations) (*out->mutable_annotations())[k] = v;
}

class AlertServiceImpl final : public v1::AlertService::CallbackService {
 public:
  AlertServiceImpl(ServingViewFn view, TokenAuthenticator* auth) : view_(std::move(view)), auth_(auth) {}

  grpc::ServerUnaryReactor* ListAlerts(grpc::CallbackServerContext* ctx, const v1::ListAlertsRequest* req,
                                       v1::ListAlertsResponse* resp) override {
    // The sequence first: a transition between the two reads is then both
    // in the list and replayed by a watch from this sequence, never lost.
    auto* r = ctx->DefaultReactor();
    if (auto st = Authorize(auth_, *ctx, Scope::kAlerts); !st.ok()) {
      r->Finish(st);
      return r;
    }
    const ServingView view = view_();
    if (!view.alerter) {
      r->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "alerts are not evaluated yet"));
      return r;
    }
    resp->set_sequence(view.alerter->sequence());
    for (const auto& a : view.alerter->Alerts()) {
      if (!Matches(a, *req)) continue;
      *resp->add_alerts() = ToApi(a);
    }
    r->Finish(grpc::Status::OK);
    return r;
  }

  grpc::ServerUnaryReactor* ListRules(grpc::CallbackServerContext* ctx, const v1::ListRulesRequest*,
                                      v1::ListRulesResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    if (auto st = Authorize(auth_, *ctx, Scope::kAlerts); !st.ok()) {
      r->Finish(st);
      return r;
    }
    const ServingView view = view_();
    std::map<std::string, std::array<int, 3>> states;  // pending, firing, resolved
    std::map<std::string, int64_t> last;
    if (view.alerter) {
      for (const auto& a : view.alerter->Alerts()) {
        auto& n = states[a.rule];
        if (a.state == alerting::AlertState::kPending) ++n[0];
        if (a.state == alerting::AlertState::kFiring) ++n[1];
        if (a.state == alerting::AlertState::kResolved) ++n[2];
      }
      last = view.alerter->LastEvaluations();
    }
    for (const auto& rule : view.catalog->alerts) {
      auto* out = resp->add_rules();
      DescribeRule(*view.catalog, rule, out);
      const auto n = states[rule.name];
      out->set_pending(n[0]);
      out->set_firing(n[1]);
      out->set_resolved(n[2]);
      if (auto it = last.find(rule.name); it != last.end()) {
        *out->mutable_last_evaluated() = TimeUtil::MillisecondsToTimestamp(it->second);
      }
    }
    r->Finish(grpc::Status::OK);
    return r;
  }

  grpc::ServerWriteReactor<v1::AlertTransition>* WatchAlerts(grpc::CallbackServerContext* ctx,
                                                             const v1::WatchAlertsRequest* req) override {
    if (auto st = Authorize(auth_, *ctx, Scope::kAlerts); !st.ok()) {
      return FinishedStream<v1::AlertTransition>(st);
    }
    ServingView view = view_();
    const uint64_t current = view.alerter ? view.alerter->sequence() : 0;
    if (!view.alerter || req->after_sequence() > current) {
      // A sequence from the future (another kpid's, or a typo) would wait
      // for transitions that may never come: refuse it.
      return FinishedStream<v1::AlertTransition>(
          !view.alerter
              ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "alerts are not evaluated yet")
              : grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                             fmt::format("after_sequence {} is beyond the current sequence {}: call ListAlerts for the "
                                         "current alerts and watch from its sequence",
                                         req->after_sequence(), current)));
    }
    return new Watcher(std::move(view), req->after_sequence());
  }

 private:
  ServingViewFn view_;
  TokenAuthenticator* const auth_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeAlertService(ServingViewFn view, TokenAuthenticator* auth) {
  return std::make_unique<AlertServiceImpl>(std::move(view), auth);
}

}  // namespace kpistream::services
