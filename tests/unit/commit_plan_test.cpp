// CommitPlan (state/commit_plan.hpp): what a batch of crawl results does to the frontier, items
// and job counters, decided without Postgres. Each test plays the store: it asks the plan what
// to write and answers as Postgres would.

#include "state/commit_plan.hpp"

#include "state/crawl_store.hpp"

#include <gtest/gtest.h>

namespace celeriac::state {
namespace {

using State = RequestResult::State;

CommitJob Job(int64_t id, int64_t open = 1) {
  CommitJob j;
  j.id = id;
  j.run_id = 100 + id;
  j.crawl_config_id = 7;
  j.status = "running";
  j.requests_open = open;
  j.requests_total = open;
  return j;
}

RequestResult Page(int64_t request_id, int64_t job_id, State state = State::kDone) {
  RequestResult r;
  r.request_id = request_id;
  r.job_id = job_id;
  r.state = state;
  r.status_code = 200;
  r.bytes = 10;
  r.parsed = state == State::kDone;
  r.url = "http://site.test/p" + std::to_string(request_id);
  return r;
}

RequestSpec Link(const std::string& path, int depth = 1, bool pagination = false) {
  RequestSpec s;
  s.url = "http://site.test/" + path;
  s.page_type = "page";
  s.depth = depth;
  s.is_pagination = pagination;
  return s;
}

Item MakeItem(const std::string& key, const std::string& hash = "h") {
  Item i;
  i.key = key;
  i.data = {{"k", key}};
  i.content_hash = hash;
  return i;
}

// Postgres's answer to an insert of `batch`: every row new, the first lease_now leased to us.
InsertOutcome AllNew(const RequestBatch& batch, int64_t& next_id) {
  InsertOutcome made;
  for (size_t i = 0; i < batch.rows.size(); ++i) {
    const auto& row = batch.rows[i];
    const int64_t id = next_id++;
    const auto key = std::pair(row["j"].get<int64_t>(), row["f"].get<std::string>());
    made.ids.emplace(key, id);
    if (i < batch.lease_now) {
      FreshLease fresh;
      fresh.request.id = id;
      fresh.request.job_id = key.first;
      fresh.request.spec.url = row["u"].get<std::string>();
      fresh.request.spec.is_pagination = row["g"].get<bool>();
      fresh.fingerprint = key.second;
      made.leased.push_back(fresh);
    }
  }
  return made;
}

// crawl_run_items' answer when no run has seen any of the batch's items before.
std::set<std::pair<std::string, int64_t>> AllNewToTheirRuns(const ItemBatch& batch) {
  std::set<std::pair<std::string, int64_t>> out;
  for (const auto& [key_run, occurrence] : batch.per_run) out.insert(key_run);
  return out;
}

// Runs a whole commit against an imaginary database where every lease is still ours, every
// item is new to the run and every request is new.
CommitReport CommitAll(CommitPlan& plan, int64_t first_new_id = 1000) {
  int64_t next_id = first_new_id;
  while (!plan.round().empty()) {
    plan.CloseMarks();
    plan.Owned(plan.RoundIds());
    for (const auto& batch : plan.ItemBatches())
      for (const auto& [key, entry] : batch.latest)
        plan.ItemStored(batch, key, AllNewToTheirRuns(batch), true, false);
    for (int pass = 0; pass < 2; ++pass) {
      auto batch = plan.NewRequests(pass);
      auto made = AllNew(batch, next_id);
      plan.Inserted(batch, std::move(made));
    }
    plan.CountRound();
    plan.NextRound();
  }
  for (auto& j : plan.jobs()) plan.Skipped(j, plan.EndJob(j), {});
  return plan.TakeReport();
}

TEST(CommitPlanTest, ResultsWhoseLeaseWasLostAreDroppedWhole) {
  std::vector<RequestResult> results{Page(1, 1), Page(2, 1)};
  results[0].items = {MakeItem("a")};
  results[1].items = {MakeItem("b")};
  results[1].requests = {Link("x")};
  const std::map<int64_t, JobLimits> limits;
  CommitPlan plan({Job(1, 2)}, results, limits, 0);
  plan.CloseMarks();
  plan.Owned({1});  // request 2's lease expired and went to someone else
  const auto batches = plan.ItemBatches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].latest.size(), 1u);
  EXPECT_TRUE(batches[0].latest.contains("a"));
  EXPECT_TRUE(plan.NewRequests(0).rows.empty()) << "a dropped page's links are not followed";
  plan.CountRound();
  EXPECT_EQ(plan.report().recorded, 1u);
  EXPECT_EQ(plan.report().dropped, 1u);
  EXPECT_EQ(plan.jobs()[0].d_pages, 1);
  EXPECT_EQ(plan.jobs()[0].requests_open, 1);
}

TEST(CommitPlanTest, PagesParsedPastMaxPagesAreSkippedWithTheirItemsAndLinks) {
  std::vector<RequestResult> results{Page(1, 1), Page(2, 1), Page(3, 1)};
  for (auto& r : results) {
    r.items = {MakeItem("i" + std::to_string(r.request_id))};
    r.requests = {Link("l" + std::to_string(r.request_id))};
  }
  std::map<int64_t, JobLimits> limits;
  limits[1].max_pages = 5;
  CommitJob job = Job(1, 3);
  job.pages = 3;  // room for two more
  CommitPlan plan({job}, results, limits, 0);
  const auto marks = plan.CloseMarks();
  ASSERT_EQ(marks.size(), 3u);
  EXPECT_EQ(marks[0]["s"], "done");
  EXPECT_EQ(marks[1]["s"], "done");
  EXPECT_EQ(marks[2]["s"], "skipped");
  EXPECT_EQ(marks[2]["m"], "max_pages reached");
  plan.Owned(plan.RoundIds());
  EXPECT_EQ(plan.ItemBatches()[0].latest.size(), 2u);
  EXPECT_EQ(plan.NewRequests(0).rows.size(), 2u);
  plan.CountRound();
  EXPECT_EQ(plan.jobs()[0].d_pages, 2);
  EXPECT_EQ(plan.jobs()[0].d_bytes, 30) << "bytes of skipped pages still count";
}

TEST(CommitPlanTest, AnItemCountsOncePerRunAndTheLastOccurrenceWins) {
  std::vector<RequestResult> results{Page(1, 1), Page(2, 1)};
  results[0].items = {MakeItem("same", "old"), MakeItem("seen")};
  results[1].items = {MakeItem("same", "new"), MakeItem("changed")};
  const std::map<int64_t, JobLimits> limits;
  CommitPlan plan({Job(1, 2)}, results, limits, 0);
  plan.CloseMarks();
  plan.Owned(plan.RoundIds());
  const auto batches = plan.ItemBatches();
  ASSERT_EQ(batches.size(), 1u);
  const auto& latest = batches[0].latest;
  ASSERT_EQ(latest.size(), 3u);
  EXPECT_EQ(latest.at("same").first->content_hash, "new");
  EXPECT_EQ(latest.at("same").second->request_id, 2);
  const auto rows = nlohmann::json::parse(batches[0].rows);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["k"], "changed") << "keys in order, so writers lock in one order";
  EXPECT_EQ(rows[0]["r"], 101);
  const std::set<std::pair<std::string, int64_t>> new_to_run{{"same", 101}, {"changed", 101}};
  plan.ItemStored(batches[0], "same", new_to_run, true, false);     // new
  plan.ItemStored(batches[0], "changed", new_to_run, false, true);  // updated
  plan.ItemStored(batches[0], "seen", new_to_run, false, false);    // the run saw it before
  EXPECT_EQ(plan.jobs()[0].d_new, 1);
  EXPECT_EQ(plan.jobs()[0].d_updated, 1);
  EXPECT_EQ(plan.jobs()[0].d_unchanged, 0);
}

TEST(CommitPlanTest, TwoRunsOfOneConfigInOneBatchEachCountTheItem) {
  // Jobs 1 and 2 are of two runs (101, 102) of config 7; both pages hold item "x", the later
  // one with other data. The row is written once (the last occurrence), both runs count it.
  std::vector<RequestResult> results{Page(1, 1), Page(2, 2)};
  results[0].items = {MakeItem("x", "old")};
  results[1].items = {MakeItem("x", "new")};
  const std::map<int64_t, JobLimits> limits;
  CommitPlan plan({Job(1), Job(2)}, results, limits, 0);
  plan.CloseMarks();
  plan.Owned(plan.RoundIds());
  const auto batches = plan.ItemBatches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(batches[0].rows).size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(batches[0].run_rows).size(), 2u);
  plan.ItemStored(batches[0], "x", AllNewToTheirRuns(batches[0]), true, false);
  EXPECT_EQ(plan.jobs()[1].d_new, 1) << "run 102's occurrence was written: new";
  EXPECT_EQ(plan.jobs()[0].d_updated, 1) << "run 101 saw other data than what is stored now";
  EXPECT_EQ(plan.jobs()[0].d_new + plan.jobs()[0].d_unchanged, 0);
}

TEST(CommitPlanTest, NewRequestsAreDedupedAndBoundedByDepthAndJobState) {
  std::vector<RequestResult> results{Page(1, 1), Page(2, 1), Page(3, 2)};
  results[0].requests = {Link("a", 1), Link("b", 3)};
  results[1].requests = {Link("a", 1), Link("c", 2)};
  results[2].requests = {Link("d", 1)};
  std::map<int64_t, JobLimits> limits;
  limits[1].max_depth = 2;
  CommitJob stopped = Job(2);
  stopped.status = "aborted";
  CommitPlan plan({Job(1, 2), stopped}, results, limits, 0);
  plan.CloseMarks();
  plan.Owned(plan.RoundIds());
  const auto batch = plan.NewRequests(0);
  ASSERT_EQ(batch.rows.size(), 2u) << batch.rows.dump();
  EXPECT_EQ(batch.rows[0]["u"], "http://site.test/a");
  EXPECT_EQ(batch.rows[1]["u"], "http://site.test/c");
  EXPECT_EQ(batch.origin.size(), 3u) << "both pages that found 'a' are its origin";
}

TEST(CommitPlanTest, PaginationStopsOnAPageThatBroughtNothingNew) {
  std::vector<RequestResult> results{Page(1, 1), Page(2, 1), Page(3, 1)};
  for (auto& r : results) {
    RequestSpec next = Link("next" + std::to_string(r.request_id), 0, true);
    next.stop_when_no_new_items = true;
    r.requests = {next};
  }
  results[0].items = {MakeItem("fresh")};
  results[1].requests.push_back(Link("newlink"));
  const std::map<int64_t, JobLimits> limits;
  CommitPlan plan({Job(1, 3)}, results, limits, 0);
  plan.CloseMarks();
  plan.Owned(plan.RoundIds());
  for (const auto& b : plan.ItemBatches())
    plan.ItemStored(b, "fresh", AllNewToTheirRuns(b), true, false);
  int64_t next_id = 50;
  auto links = plan.NewRequests(0);
  plan.Inserted(links, AllNew(links, next_id));
  const auto pagination = plan.NewRequests(1);
  ASSERT_EQ(pagination.rows.size(), 2u) << pagination.rows.dump();
  EXPECT_EQ(pagination.rows[0]["u"], "http://site.test/next1") << "a new item";
  EXPECT_EQ(pagination.rows[1]["u"], "http://site.test/next2") << "a new link";
}

TEST(CommitPlanTest, LeasesGoToPaginationFirstAndTheRestStaysPending) {
  std::vector<RequestResult> results{Page(1, 1)};
  results[0].requests = {Link("a"), Link("b"), Link("c"), Link("next", 0, true)};
  const std::map<int64_t, JobLimits> limits;
  CommitPlan plan({Job(1)}, results, limits, 2);
  plan.CloseMarks();
  plan.Owned(plan.RoundIds());
  int64_t next_id = 10;
  auto links = plan.NewRequests(0);
  EXPECT_EQ(links.lease_now, 1u) << "one lease kept for the pagination request";
  plan.Inserted(links, AllNew(links, next_id));
  auto pagination = plan.NewRequests(1);
  EXPECT_EQ(pagination.lease_now, 1u);
  plan.Inserted(pagination, AllNew(pagination, next_id));
  plan.CountRound();
  plan.NextRound();
  for (auto& j : plan.jobs()) plan.Skipped(j, plan.EndJob(j), {});
  const CommitReport report = plan.TakeReport();
  ASSERT_EQ(report.leased.size(), 2u);
  EXPECT_TRUE(report.leased[0].spec.is_pagination) << "pagination first";
  EXPECT_EQ(report.left_pending, 2u);
  EXPECT_EQ(plan.jobs().size(), 1u);
}

TEST(CommitPlanTest, JobCountersAndItsOpenRequests) {
  std::vector<RequestResult> results{Page(1, 1), Page(2, 1, State::kRetry),
                                     Page(3, 1, State::kFailed)};
  results[2].error_class = "HttpStatus";
  results[0].item_errors = 2;
  results[0].requests = {Link("a"), Link("b")};
  const std::map<int64_t, JobLimits> limits;
  CommitPlan plan({Job(1, 3)}, results, limits, 0);
  const CommitReport report = CommitAll(plan);
  const CommitJob& j = plan.jobs()[0];
  EXPECT_EQ(report.recorded, 3u);
  EXPECT_EQ(j.requests_open, 3) << "3 open - 2 closed + 2 new (the retry stays open)";
  EXPECT_EQ(j.requests_total, 5);
  EXPECT_EQ(j.requests_sent, 3);
  EXPECT_EQ(j.pages, 1);
  EXPECT_EQ(j.requests_failed, 1);
  EXPECT_EQ(j.errors, 3) << "one failed request, two item errors";
  EXPECT_EQ(j.d_error_counts, (nlohmann::json{{"HttpStatus", 1}, {"Parse", 2}}));
  EXPECT_EQ(report.left_pending, 2u);
}

TEST(CommitPlanTest, OnlyOwnedFailuresBecomeDeadLetters) {
  std::vector<RequestResult> results{Page(1, 1, State::kFailed), Page(2, 1, State::kFailed),
                                     Page(3, 1, State::kRetry)};
  const std::map<int64_t, JobLimits> limits;
  CommitPlan plan({Job(1, 3)}, results, limits, 0);
  plan.CloseMarks();
  plan.Owned({1, 3});
  const auto failed = plan.FailedForGood();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].first->request_id, 1);
  EXPECT_EQ(failed[0].second->run_id, 101);
}

TEST(CommitPlanTest, AFollowOnIsRecordedWhenThisCommitLeasedItsRequest) {
  std::vector<RequestResult> results{Page(1, 1)};
  results[0].requests = {Link("ahead"), Link("other")};
  RequestResult ahead = Page(0, 1);
  ahead.speculated = Link("ahead");
  ahead.items = {MakeItem("from-ahead")};
  RequestResult missed = Page(0, 1);
  missed.speculated = Link("never-linked");
  results.push_back(ahead);
  results.push_back(missed);
  const std::map<int64_t, JobLimits> limits;
  CommitPlan plan({Job(1)}, results, limits, 10);
  const CommitReport report = CommitAll(plan);
  ASSERT_EQ(report.follow_ons_recorded, std::vector<size_t>{1});
  EXPECT_EQ(report.recorded, 2u);
  ASSERT_EQ(report.leased.size(), 1u) << "the follow-on's request is done, not handed out";
  EXPECT_EQ(report.leased[0].spec.url, "http://site.test/other");
  EXPECT_EQ(plan.jobs()[0].d_new, 1);
  EXPECT_EQ(plan.jobs()[0].pages, 2);
}

TEST(CommitPlanTest, AJobAbortsAtItsErrorThreshold) {
  std::vector<RequestResult> results{Page(1, 1, State::kFailed)};
  std::map<int64_t, JobLimits> limits;
  limits[1].abort_after_errors = 3;
  CommitJob job = Job(1, 5);
  job.errors = 2;
  CommitPlan plan({job}, results, limits, 0);
  CommitAll(plan);
  const CommitJob& j = plan.jobs()[0];
  EXPECT_EQ(j.status, "aborted");
  EXPECT_TRUE(j.finished_now);
  EXPECT_EQ(j.reason, "3 errors reached the abort threshold (3)");
}

TEST(CommitPlanTest, AJobAbortsOverItsErrorRateOnlyAfterTwentyFinished) {
  std::map<int64_t, JobLimits> limits;
  limits[1].abort_error_rate = 0.5;
  limits[1].abort_after_errors = 0;
  CommitJob young = Job(1, 10);
  young.requests_total = 29;  // 19 finished
  young.requests_failed = 15;
  CommitPlan first({young}, {}, limits, 0);
  EXPECT_EQ(first.EndJob(first.jobs()[0]).kind, JobEnd::Kind::kGoesOn);

  CommitJob old = Job(1, 10);
  old.requests_total = 30;  // 20 finished
  old.requests_failed = 11;
  CommitPlan second({old}, {}, limits, 0);
  const JobEnd end = second.EndJob(second.jobs()[0]);
  EXPECT_EQ(end.kind, JobEnd::Kind::kAborted);
  EXPECT_EQ(end.why, "job aborted");
  EXPECT_EQ(second.jobs()[0].reason,
            "11 of 20 finished requests failed, over the abort error rate (0.5)");
}

TEST(CommitPlanTest, AtMaxRequestsTheRestIsSkippedAndNotHandedOut) {
  std::vector<RequestResult> results{Page(1, 1)};
  results[0].requests = {Link("a"), Link("b")};
  std::map<int64_t, JobLimits> limits;
  limits[1].max_requests = 1;
  CommitPlan plan({Job(1, 3)}, results, limits, 5);
  int64_t next_id = 20;
  plan.CloseMarks();
  plan.Owned(plan.RoundIds());
  for (int pass = 0; pass < 2; ++pass) {
    auto batch = plan.NewRequests(pass);
    plan.Inserted(batch, AllNew(batch, next_id));
  }
  plan.CountRound();
  plan.NextRound();
  CommitJob& j = plan.jobs()[0];
  const JobEnd end = plan.EndJob(j);
  ASSERT_EQ(end.kind, JobEnd::Kind::kStopsAdding);
  EXPECT_EQ(end.why, "max_requests reached");
  EXPECT_EQ(plan.FreshIds(1), (std::vector<int64_t>{20, 21}));
  // The store skipped the two pending requests and the two fresh leases.
  plan.Skipped(j, end, {5, 6, 20, 21});
  EXPECT_EQ(j.requests_open, 0);
  EXPECT_EQ(j.reason, "max_requests (1) reached");
  EXPECT_TRUE(plan.TakeReport().leased.empty());
}

TEST(CommitPlanTest, AtMaxPagesWithNothingLeftToSkipTheReasonStaysEmpty) {
  std::map<int64_t, JobLimits> limits;
  limits[1].max_pages = 2;
  CommitJob job = Job(1, 1);
  job.pages = 2;
  CommitPlan plan({job}, {}, limits, 0);
  CommitJob& j = plan.jobs()[0];
  const JobEnd end = plan.EndJob(j);
  EXPECT_EQ(end.kind, JobEnd::Kind::kStopsAdding);
  plan.Skipped(j, end, {});
  EXPECT_EQ(j.reason, "");
  EXPECT_EQ(j.status, "running");
}

TEST(Fingerprint, StableForTheUrlsTheCrawlStores) {
  // sha256("GET https://books.example.com/catalogue/page-2.html\n"), the first 128 bits: what
  // the hand-written CanonicalUrl gave, and url::Canonicalize keeps, for a link in normal form.
  RequestSpec page;
  page.url = "https://books.example.com/catalogue/page-2.html";
  EXPECT_EQ(Fingerprint(page), "a3d5519ec0a4993e7048598f80130241");
  RequestSpec sorted;
  sorted.url = "HTTP://Example.COM:80/a?b=2&a=1#top";  // canonical: http://example.com/a?a=1&b=2
  EXPECT_EQ(Fingerprint(sorted), "9c6c3ceac9a69ef07957cff2546bbec5");
  RequestSpec post;
  post.method = "POST";
  post.url = "http://127.0.0.1:8080/search?q=x&page=2";
  post.body = "q=1";
  EXPECT_EQ(Fingerprint(post), "49a3ffe71ba84278e53b609039f0f90d");
  // Spellings of one URL share a fingerprint; the method and body tell requests apart.
  RequestSpec spelled = page;
  spelled.url = "https://books.example.com/catalogue/./%70age-2.html";
  EXPECT_EQ(Fingerprint(spelled), Fingerprint(page));
  RequestSpec head = page;
  head.method = "HEAD";
  EXPECT_NE(Fingerprint(head), Fingerprint(page));
}

}  // namespace
}  // namespace celeriac::state
