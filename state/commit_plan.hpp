#pragma once
// CommitPlan: the decisions of CrawlStore::Commit, in pure code. The store locks the jobs, then
// alternates: it asks the plan what to write (which requests to close and how, which items to
// upsert, which new requests to insert and how many of them to lease to itself, which dead
// letters to write, how each job ends), writes it, and tells the plan what Postgres answered
// (which leases were still ours, which items were new to the run or changed, which requests the
// insert created). Nothing here talks to Postgres, so every rule is unit-tested without it
// (tests/unit/commit_plan_test.cpp).
//
// Rules (what CrawlStore::Commit guarantees, see crawl_store.hpp):
// - A result counts only when its lease was still ours (Owned); others are dropped whole.
// - max_pages counts parsed pages: pages parsed past it are recorded as skipped, their items
//   and links dropped.
// - An item counts once per run (new, updated or unchanged), however often the run sees it.
// - New requests: links first, then pagination, which stops on a page that brought nothing new
//   when its rule says so; max_depth bounds both. Up to `lease_new` of them are leased to us at
//   insert, pagination first (the links' pass leaves room for the pagination the batch adds).
// - Results fetched ahead of their request (follow-ons, request_id 0) are recorded in a later
//   round when this commit inserted their request and leased it to us; otherwise dropped.
// - A job ends aborted past its error threshold or error rate; at max_pages or max_requests its
//   pending requests (and those leased to us in this commit) are skipped.
//
// Threading: one plan per Commit call, on the caller's thread.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "state/crawl_store.hpp"

namespace celeriac::state {

// A job as the committing transaction sees it: its row after the lock, plus what this commit adds.
struct CommitJob {
  int64_t id = 0, run_id = 0, crawl_config_id = 0;
  std::string status, celery_task_id, reply_to;
  int64_t pages = 0, items_new = 0, items_updated = 0, items_unchanged = 0, errors = 0, bytes = 0;
  int64_t requests_open = 0, requests_total = 0, requests_failed = 0, item_errors = 0;
  int64_t requests_sent = 0;
  bool progressed = false;
  nlohmann::json error_counts = nlohmann::json::object();
  // deltas applied by this commit (the run's counters get these)
  int64_t d_pages = 0, d_new = 0, d_updated = 0, d_unchanged = 0, d_errors = 0, d_bytes = 0;
  nlohmann::json d_error_counts = nlohmann::json::object();
  std::string reason;
  bool finished_now = false;
};

// Adds `n` to counts[key] (a JSON object of error class -> count); nothing for 0 or no key.
void AddCount(nlohmann::json& counts, const std::string& key, int64_t n);

// A new request as the frontier insert reads it: {j, f, u, m, b, t, d, p, g} (job, fingerprint,
// URL, method, body or null, page type, depth, pagination index, is pagination).
nlohmann::json FrontierRow(int64_t job_id, const RequestSpec& spec, const std::string& fp);

// The items of one crawl config in a round. extracted_items holds one row per key: the last
// occurrence of a key is written (keys sorted, so that concurrent writers lock them in one
// order). Each run that saw the key counts it, though: two runs of one config may both have it
// in one batch.
struct ItemBatch {
  using Occurrence = std::pair<const Item*, const RequestResult*>;
  int64_t crawl_config_id = 0;
  std::map<std::string, Occurrence> latest;
  std::map<std::pair<std::string, int64_t>, Occurrence> per_run;  // (key, run) -> its last
  std::string rows;      // JSON array of {k, h, u, r, d}: key, content hash, URL, run id, data
  std::string run_rows;  // JSON array of {k, r}: each (key, run) for crawl_run_items
};

// New requests of one pass (0: links, 1: pagination).
struct RequestBatch {
  nlohmann::json rows = nlohmann::json::array();  // {j, f, u, m, b, t, d, p, g}, one per new key
  size_t lease_now = 0;                           // how many of `rows` to lease to us at insert
  std::vector<std::tuple<const RequestResult*, int64_t, std::string>> origin;  // page, job, fp
};

// What an insert of a RequestBatch made.
struct FreshLease {
  LeasedRequest request;
  std::string fingerprint;
};
struct InsertOutcome {
  std::map<std::pair<int64_t, std::string>, int64_t> ids;  // (job, fingerprint) -> new id
  std::vector<FreshLease> leased;                          // the new rows leased to us
};

// How a job ends this commit, decided by EndJob.
struct JobEnd {
  enum class Kind { kGoesOn, kAborted, kStopsAdding };
  Kind kind = Kind::kGoesOn;
  std::string why;     // what its skipped requests say (SkipPending's message)
  std::string reason;  // the job's status reason once something was skipped (kStopsAdding)
};

class CommitPlan {
 public:
  // `jobs`: the locked rows of every job in `results`; a result whose job is missing is
  // closed but otherwise ignored.
  CommitPlan(std::vector<CommitJob> jobs, const std::vector<RequestResult>& results,
             const std::map<int64_t, JobLimits>& limits, size_t lease_new);

  // The current round of results (first the leased ones, then follow-ons); empty when done.
  const std::vector<const RequestResult*>& round() const { return round_; }
  std::vector<int64_t> RoundIds() const;

  // 1. How to close each request of the round: JSON array of {id, s, c, e, m, d} (state,
  //    status, error class, message, retry delay in ms). Decides max_pages first.
  nlohmann::json CloseMarks();
  // The ids whose lease was still ours (the close statement's answer).
  void Owned(const std::vector<int64_t>& ids);

  // 2. The round's items per crawl config, and what the upsert said of one key: which runs had
  //    not seen it yet (crawl_run_items' answer), whether it was inserted, whether its hash
  //    changed.
  std::vector<ItemBatch> ItemBatches() const;
  void ItemStored(const ItemBatch& batch, const std::string& key,
                  const std::set<std::pair<std::string, int64_t>>& new_in_run, bool inserted,
                  bool changed);

  // 3. The new requests of pass 0 (links) then pass 1 (pagination), and what their insert made.
  RequestBatch NewRequests(int pass) const;
  void Inserted(const RequestBatch& batch, InsertOutcome made);

  // 4. Counters of the round, and the results that failed for good (they become dead letters).
  void CountRound();
  std::vector<std::pair<const RequestResult*, const CommitJob*>> FailedForGood() const;

  // Moves on to the follow-ons whose requests this round inserted and leased to us.
  void NextRound();

  // 5. Totals and how each job ends; after the store skipped what `end` says, Skipped() with
  //    how many (and which) requests it skipped.
  std::vector<CommitJob>& jobs() { return jobs_; }
  JobEnd EndJob(CommitJob& j) const;
  void Skipped(CommitJob& j, const JobEnd& end, const std::vector<int64_t>& skipped_ids);
  // Requests leased to us at insert for this job (skipped with its pending ones at a limit).
  std::vector<int64_t> FreshIds(int64_t job_id) const;

  // 6. The report: counts, follow-ons recorded, and what this commit leased to us and nobody
  //    skipped or recorded, pagination first.
  CommitReport& report() { return report_; }
  CommitReport TakeReport();

 private:
  bool Counts(const RequestResult& r) const;  // owned, its job known, not over max_pages
  const JobLimits* LimitsOf(int64_t job_id) const;
  bool Accepts(const CommitJob& j, const RequestSpec& s) const;

  std::vector<CommitJob> jobs_;
  std::unordered_map<int64_t, CommitJob*> by_id_;
  const std::map<int64_t, JobLimits>& limits_;
  std::vector<const RequestResult*> round_;
  std::vector<RequestResult> follow_;  // follow-ons, copied (they get their request id here)
  std::vector<size_t> follow_index_;   // where each follow-on is in the results
  std::unordered_set<int64_t> over_limit_, owned_, unleased_, recorded_here_;
  std::unordered_map<const RequestResult*, bool> page_has_new_in_run_;
  std::unordered_map<const RequestResult*, int64_t> new_links_;
  std::unordered_map<int64_t, std::vector<int64_t>> fresh_ids_;  // per job
  std::vector<FreshLease> fresh_;
  std::map<std::pair<int64_t, std::string>, int64_t> fresh_by_key_;  // (job, fp) -> id
  size_t lease_left_;
  CommitReport report_;
};

}  // namespace celeriac::state
