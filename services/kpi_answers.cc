#include "services/kpi_answers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>

#include "services/utf8.h"

namespace kpistream::services {

using google::protobuf::util::TimeUtil;

std::string ConsistencyToken(const std::vector<query::PartitionPosition>& positions) {
  // Entries sorted, so that equal states give equal tokens.
  std::vector<std::string> entries;
  entries.reserve(positions.size());
  for (const auto& p : positions) {
    if (p.partition.empty()) {
      // state::SourceId: the topic's stable id in the high 32 bits.
      entries.push_back(fmt::format("{}/{}={}", p.source >> 32, p.source & 0xffffffffu, p.next_offset));
    } else if (p.owner.empty()) {
      entries.push_back(fmt::format("{}={}", p.partition, p.next_offset));
    } else {
      entries.push_back(fmt::format("{}@{}={}", p.partition, p.owner, p.next_offset));
    }
  }
  std::sort(entries.begin(), entries.end());
  return fmt::format("{}", fmt::join(entries, ","));
}

void FillGetKpiResponse(const api::GetKpiPlan& plan, const v1::GetKpiRequest& req, query::KpiAnswer answer,
                        int64_t now_ms, v1::GetKpiResponse* resp) {
  const auto& q = plan.query;
  const auto* kpi = plan.kpi;
  std::string next_page;
  api::OrderAndPage(plan, req, &answer.values, &next_page);
  resp->set_kpi(req.kpi());
  resp->set_window(plan.window);
  resp->set_unit(kpi->unit);
  *resp->mutable_start_time() = TimeUtil::SecondsToTimestamp(answer.covered.start);
  *resp->mutable_end_time() = TimeUtil::SecondsToTimestamp(answer.covered.end);
  *resp->mutable_requested_start_time() = TimeUtil::SecondsToTimestamp(q.start);
  *resp->mutable_requested_end_time() = TimeUtil::SecondsToTimestamp(q.end);
  resp->set_rounded(answer.rounded);
  for (const auto& gv : answer.values) {
    auto* v = resp->add_values();
    // Dimension values are bytes from the events; protobuf strings are UTF-8.
    for (const auto& [k, val] : gv.group) (*v->mutable_group())[k] = ValidUtf8(val);
    if (gv.value) v->set_value(*gv.value);
    if (kpi->target) v->set_status(std::string(kpi::BandName(kpi->target->Classify(gv.value))));
  }
  if (answer.watermark_ms > 0) {
    *resp->mutable_watermark() = TimeUtil::MillisecondsToTimestamp(answer.watermark_ms);
    resp->set_freshness_seconds(std::max(0.0, static_cast<double>(now_ms - answer.watermark_ms) / 1000.0));
  }
  resp->set_consistency_token(ConsistencyToken(answer.positions));
  for (const auto& m : answer.missing_partitions) resp->add_missing_partitions(m);
  resp->set_next_page_token(next_page);
}

absl::Status AnswerGetKpi(const ServingView& view, const state::Clock& clock, const v1::GetKpiRequest& req,
                          v1::GetKpiResponse* resp) {
  auto plan = api::PlanGetKpi(req, *view.catalog, (clock.NowMs() + 999) / 1000);
  if (!plan.ok()) return plan.status();
  auto answer = view.queries->Get(plan->query);
  if (!answer.ok()) return answer.status();
  FillGetKpiResponse(*plan, req, std::move(*answer), clock.NowMs(), resp);
  return absl::OkStatus();
}

absl::Status AnswerBatch(const ServingView& view, const state::Clock& clock, const v1::BatchGetKpisRequest& req,
                         size_t max_batch, v1::BatchGetKpisResponse* resp) {
  if (static_cast<size_t>(req.queries_size()) > max_batch) {
    return absl::ResourceExhaustedError(
        fmt::format("{} queries in one batch; at most {} (kpid.yaml grpc.max_batch): split the batch",
                    req.queries_size(), max_batch));
  }
  const int64_t now_s = (clock.NowMs() + 999) / 1000;
  std::vector<absl::StatusOr<api::GetKpiPlan>> plans;
  std::vector<query::KpiQuery> queries;
  for (const auto& q : req.queries()) {
    plans.push_back(api::PlanGetKpi(q, *view.catalog, now_s));
    if (plans.back().ok()) queries.push_back(plans.back()->query);
  }
  auto answers = view.queries->GetBatch(queries);
  if (!answers.ok()) return answers.status();
  size_t next = 0;
  std::vector<query::PartitionPosition> positions;
  std::vector<std::string> missing;
  for (int i = 0; i < req.queries_size(); ++i) {
    auto* r = resp->add_results();
    absl::Status st = plans[static_cast<size_t>(i)].status();
    if (st.ok()) {
      auto& a = (*answers)[next++];
      if (a.ok()) {
        positions = a->positions;
        missing = a->missing_partitions;
        FillGetKpiResponse(*plans[static_cast<size_t>(i)], req.queries(i), std::move(*a), clock.NowMs(),
                           r->mutable_answer());
      } else {
        st = a.status();
      }
    }
    if (!st.ok()) {
      r->set_error_code(static_cast<int>(st.code()));
      r->set_error_message(std::string(st.message()));
    }
  }
  resp->set_consistency_token(ConsistencyToken(positions));
  for (const auto& m : missing) resp->add_missing_partitions(m);
  return absl::OkStatus();
}

}  // namespace kpistream::services
