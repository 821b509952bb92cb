#include "state/commit_plan.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "core/json/untrusted_json.hpp"

namespace celeriac::state {
namespace {

using Json = nlohmann::json;
using State = RequestResult::State;

std::string_view StateName(State s) {
  switch (s) {
    case State::kDone: return "done";
    case State::kRetry: return "pending";
    case State::kFailed: return "failed";
    case State::kSkipped: return "skipped";
  }
  return "failed";
}

bool Closes(State s) { return s != State::kRetry; }

}  // namespace

Json FrontierRow(int64_t job_id, const RequestSpec& s, const std::string& fp) {
  return Json{{"j", job_id},        {"f", fp},
              {"u", s.url},         {"m", s.method},
              {"b", s.body.empty() ? Json(nullptr) : Json(s.body)},
              {"t", s.page_type},   {"d", s.depth},
              {"p", s.pagination_index}, {"g", s.is_pagination}};
}

void AddCount(Json& counts, const std::string& key, int64_t n) {
  if (n == 0 || key.empty()) return;
  counts[key] = counts.value(key, int64_t{0}) + n;
}

CommitPlan::CommitPlan(std::vector<CommitJob> jobs, const std::vector<RequestResult>& results,
                       const std::map<int64_t, JobLimits>& limits, size_t lease_new)
    : jobs_(std::move(jobs)), limits_(limits), lease_left_(lease_new) {
  for (auto& j : jobs_) by_id_[j.id] = &j;
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    if (r.request_id != 0) {
      round_.push_back(&r);
    } else if (r.speculated) {
      follow_.push_back(r);
      follow_index_.push_back(i);
    }
  }
}

std::vector<int64_t> CommitPlan::RoundIds() const {
  std::vector<int64_t> ids;
  ids.reserve(round_.size());
  for (const RequestResult* r : round_) ids.push_back(r->request_id);
  return ids;
}

const JobLimits* CommitPlan::LimitsOf(int64_t job_id) const {
  const auto it = limits_.find(job_id);
  return it == limits_.end() ? nullptr : &it->second;
}

bool CommitPlan::Counts(const RequestResult& r) const {
  return owned_.contains(r.request_id) && by_id_.contains(r.job_id) &&
         !over_limit_.contains(r.request_id);
}

Json CommitPlan::CloseMarks() {
  // max_pages counts responses handed to parsing; pages parsed beyond it (in flight when the
  // limit was reached) are recorded as skipped.
  for (const auto& j : jobs_) {
    const JobLimits* lim = LimitsOf(j.id);
    if (lim == nullptr || !lim->max_pages) continue;
    int64_t room = *lim->max_pages - j.pages - j.d_pages;
    for (const RequestResult* r : round_)
      if (r->job_id == j.id && r->parsed && room-- <= 0) over_limit_.insert(r->request_id);
  }
  Json marks = Json::array();
  for (const RequestResult* rp : round_) {
    const RequestResult& r = *rp;
    const bool over = over_limit_.contains(r.request_id);
    marks.push_back(Json{{"id", r.request_id},
                         {"s", over ? "skipped" : StateName(r.state)},
                         {"c", r.status_code == 0 ? Json(nullptr) : Json(r.status_code)},
                         {"e", r.error_class.empty() || over ? Json(nullptr) : Json(r.error_class)},
                         {"m", over                      ? Json("max_pages reached")
                               : r.error_message.empty() ? Json(nullptr)
                                                         : Json(r.error_message)},
                         {"d", r.retry_delay.count()}});
  }
  return marks;
}

void CommitPlan::Owned(const std::vector<int64_t>& ids) { owned_.insert(ids.begin(), ids.end()); }

std::vector<ItemBatch> CommitPlan::ItemBatches() const {
  std::map<int64_t, ItemBatch> by_config;
  for (const RequestResult* r : round_) {
    if (!Counts(*r) || r->items.empty()) continue;
    const int64_t config = by_id_.at(r->job_id)->crawl_config_id;
    ItemBatch& batch = by_config[config];
    batch.crawl_config_id = config;
    const int64_t run = by_id_.at(r->job_id)->run_id;
    for (const auto& item : r->items) {
      batch.latest[item.key] = {&item, r};
      batch.per_run[{item.key, run}] = {&item, r};
    }
  }
  std::vector<ItemBatch> out;
  for (auto& [config, batch] : by_config) {
    std::string rows = "[";
    for (const auto& [key, entry] : batch.latest) {
      if (rows.size() > 1) rows += ',';
      rows += DumpStorableJson(Json{{"k", key},
                                    {"h", entry.first->content_hash},
                                    {"u", entry.second->url},
                                    {"r", by_id_.at(entry.second->job_id)->run_id}});
      rows.pop_back();  // the data goes in as it is dumped, not re-parsed into a Json
      rows += ",\"d\":";
      rows += DumpStorableJson(entry.first->data);
      rows += '}';
    }
    rows += ']';
    batch.rows = std::move(rows);
    Json run_rows = Json::array();
    for (const auto& [key_run, occurrence] : batch.per_run)
      run_rows.push_back({{"k", key_run.first}, {"r", key_run.second}});
    batch.run_rows = DumpStorableJson(run_rows);
    out.push_back(std::move(batch));
  }
  return out;
}

void CommitPlan::ItemStored(const ItemBatch& batch, const std::string& key,
                            const std::set<std::pair<std::string, int64_t>>& new_in_run,
                            bool inserted, bool changed) {
  const auto written = batch.latest.find(key);
  if (written == batch.latest.end()) return;
  for (auto it = batch.per_run.lower_bound({key, std::numeric_limits<int64_t>::min()});
       it != batch.per_run.end() && it->first.first == key; ++it) {
    // Each item counts once per run: seen again in the same run (a listing repeated on two
    // pages, a redelivered page), it is neither new, updated nor unchanged again.
    if (!new_in_run.contains(it->first)) continue;
    const auto [item, r] = it->second;
    page_has_new_in_run_[r] = true;
    CommitJob& j = *by_id_.at(r->job_id);
    if (item != written->second.first) {
      // Another run's occurrence was written: to this run the item is as it is stored now.
      ++(item->content_hash == written->second.first->content_hash ? j.d_unchanged : j.d_updated);
    } else if (inserted) {
      ++j.d_new;
    } else if (changed) {
      ++j.d_updated;
    } else {
      ++j.d_unchanged;
    }
  }
}

bool CommitPlan::Accepts(const CommitJob& j, const RequestSpec& s) const {
  if (j.status != "running") return false;
  const JobLimits* lim = LimitsOf(j.id);
  return lim == nullptr || !lim->max_depth || s.depth <= *lim->max_depth;
}

RequestBatch CommitPlan::NewRequests(int pass) const {
  RequestBatch batch;
  size_t pagination_room = 0;
  for (const RequestResult* r : round_)
    for (const auto& spec : r->requests) pagination_room += spec.is_pagination ? 1 : 0;
  batch.lease_now =
      pass == 0 ? lease_left_ - std::min(lease_left_, pagination_room) : lease_left_;

  std::set<std::pair<int64_t, std::string>> keys;
  for (const RequestResult* rp : round_) {
    const RequestResult& r = *rp;
    if (!Counts(r) || r.state != State::kDone) continue;
    const CommitJob& j = *by_id_.at(r.job_id);
    for (const auto& s : r.requests) {
      if (s.is_pagination != (pass == 1) || !Accepts(j, s)) continue;
      if (pass == 1 && s.stop_when_no_new_items && !page_has_new_in_run_.contains(&r) &&
          !new_links_.contains(&r))
        continue;
      auto fp = Fingerprint(s);
      batch.origin.emplace_back(&r, j.id, fp);
      if (keys.emplace(j.id, fp).second) batch.rows.push_back(FrontierRow(j.id, s, fp));
    }
  }
  return batch;
}

void CommitPlan::Inserted(const RequestBatch& batch, InsertOutcome made) {
  for (const auto& [key, id] : made.ids) {
    by_id_.at(key.first)->requests_open += 1;
    by_id_.at(key.first)->requests_total += 1;
  }
  lease_left_ -= std::min(lease_left_, made.leased.size());
  report_.left_pending += made.ids.size() - made.leased.size();
  for (auto& fresh : made.leased) {
    fresh_ids_[fresh.request.job_id].push_back(fresh.request.id);
    fresh_by_key_.emplace(std::pair(fresh.request.job_id, fresh.fingerprint), fresh.request.id);
    fresh_.push_back(std::move(fresh));
  }
  std::set<std::pair<int64_t, std::string>> credited;
  for (const auto& [r, job_id, fp] : batch.origin)
    if (made.ids.contains({job_id, fp}) && credited.emplace(job_id, fp).second) ++new_links_[r];
}

void CommitPlan::CountRound() {
  for (const RequestResult* rp : round_) {
    const RequestResult& r = *rp;
    if (!by_id_.contains(r.job_id)) continue;
    if (!owned_.contains(r.request_id)) {
      ++report_.dropped;
      continue;
    }
    ++report_.recorded;
    CommitJob& j = *by_id_.at(r.job_id);
    j.progressed = true;
    if (r.state != State::kSkipped) ++j.requests_sent;
    if (Closes(r.state)) j.requests_open = std::max<int64_t>(0, j.requests_open - 1);
    j.d_bytes += static_cast<int64_t>(r.bytes);
    if (over_limit_.contains(r.request_id)) continue;
    if (r.parsed) ++j.d_pages;
    if (r.state == State::kFailed) {
      ++j.requests_failed;
      ++j.d_errors;
      AddCount(j.d_error_counts, r.error_class, 1);
    }
    if (r.item_errors > 0) {
      j.item_errors += static_cast<int64_t>(r.item_errors);
      j.d_errors += static_cast<int64_t>(r.item_errors);
      AddCount(j.d_error_counts, "Parse", static_cast<int64_t>(r.item_errors));
    }
  }
}

std::vector<std::pair<const RequestResult*, const CommitJob*>> CommitPlan::FailedForGood() const {
  std::vector<std::pair<const RequestResult*, const CommitJob*>> out;
  for (const RequestResult* r : round_)
    if (r->state == State::kFailed && Counts(*r)) out.emplace_back(r, by_id_.at(r->job_id));
  return out;
}

void CommitPlan::NextRound() {
  std::vector<const RequestResult*> next;
  for (size_t i = 0; i < follow_.size(); ++i) {
    RequestResult& f = follow_[i];
    if (f.request_id != 0 || f.job_id == 0) continue;
    const auto it = fresh_by_key_.find({f.job_id, Fingerprint(*f.speculated)});
    if (it == fresh_by_key_.end()) continue;
    f.request_id = it->second;
    recorded_here_.insert(it->second);  // done in this transaction, not handed out
    fresh_by_key_.erase(it);
    report_.follow_ons_recorded.push_back(follow_index_[i]);
    next.push_back(&f);
  }
  round_ = std::move(next);
}

JobEnd CommitPlan::EndJob(CommitJob& j) const {
  j.pages += j.d_pages;
  j.items_new += j.d_new;
  j.items_updated += j.d_updated;
  j.items_unchanged += j.d_unchanged;
  j.errors += j.d_errors;
  j.bytes += j.d_bytes;
  JobEnd end;
  const JobLimits* lim = LimitsOf(j.id);
  if (j.status != "running" || lim == nullptr) return end;
  const int64_t finished = j.requests_total - j.requests_open;
  if (lim->abort_after_errors > 0 && j.errors >= lim->abort_after_errors) {
    end.kind = JobEnd::Kind::kAborted;
    j.reason = fmt::format("{} errors reached the abort threshold ({})", j.errors,
                           lim->abort_after_errors);
  } else if (lim->abort_error_rate && finished >= 20 &&
             static_cast<double>(j.requests_failed) / static_cast<double>(finished) >
                 *lim->abort_error_rate) {
    end.kind = JobEnd::Kind::kAborted;
    j.reason = fmt::format("{} of {} finished requests failed, over the abort error rate ({})",
                           j.requests_failed, finished, *lim->abort_error_rate);
  } else if (lim->max_pages && j.pages >= *lim->max_pages) {
    end = {JobEnd::Kind::kStopsAdding, "max_pages reached",
           fmt::format("max_pages ({}) reached", *lim->max_pages)};
  } else if (lim->max_requests && j.requests_sent >= *lim->max_requests) {
    end = {JobEnd::Kind::kStopsAdding, "max_requests reached",
           fmt::format("max_requests ({}) reached", *lim->max_requests)};
  }
  if (end.kind == JobEnd::Kind::kAborted) {
    end.why = "job aborted";
    j.status = "aborted";
    j.finished_now = true;
  }
  return end;
}

void CommitPlan::Skipped(CommitJob& j, const JobEnd& end, const std::vector<int64_t>& ids) {
  unleased_.insert(ids.begin(), ids.end());
  j.requests_open = std::max<int64_t>(0, j.requests_open - static_cast<int64_t>(ids.size()));
  if (end.kind == JobEnd::Kind::kStopsAdding && !ids.empty()) j.reason = end.reason;
}

std::vector<int64_t> CommitPlan::FreshIds(int64_t job_id) const {
  const auto it = fresh_ids_.find(job_id);
  return it == fresh_ids_.end() ? std::vector<int64_t>{} : it->second;
}

CommitReport CommitPlan::TakeReport() {
  for (const auto& fresh : fresh_) {
    const int64_t id = fresh.request.id;
    if (!unleased_.contains(id) && !recorded_here_.contains(id))
      report_.leased.push_back(fresh.request);
  }
  std::sort(report_.leased.begin(), report_.leased.end(),
            [](const LeasedRequest& a, const LeasedRequest& b) {
              return a.spec.is_pagination > b.spec.is_pagination ||
                     (a.spec.is_pagination == b.spec.is_pagination && a.id < b.id);
            });
  return std::move(report_);
}

}  // namespace celeriac::state
