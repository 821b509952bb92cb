// The extractor's Engine on one thread, with a manual loop and clock, the in-memory frontier and
// host ledger, and a fake fetcher and module: politeness between starts, backoff on 429/503,
// robots.txt, the page-type breaker, commit batching, pages fetched ahead, and drain. Nothing
// sleeps: every wait is the manual clock moving to the engine's next timer.

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "extractor/engine/engine.hpp"
#include "tests/support/fake_crawl.hpp"
#include "tests/support/fake_frontier.hpp"
#include "tests/support/manual_clock.hpp"
#include "tests/support/manual_loop.hpp"

namespace celeriac::extractor {
namespace {

using std::chrono::milliseconds;
using testing::FakeFetcher;
using testing::FakeFrontier;
using testing::FakeModule;
using testing::FakePage;
using testing::ManualClock;
using testing::ManualLoop;
using Json = nlohmann::json;
using State = RequestResult::State;

constexpr const char* kSite = "http://site.test";

std::string Url(const std::string& path) { return std::string(kSite) + path; }

ModuleFactory FakeModules() {
  return [](const Json& config) -> Result<std::shared_ptr<const Module>> {
    if (!config.contains("start_urls"))
      return Error(ErrorCode::kInvalidArgument, "/start_urls: required", false);
    return std::shared_ptr<const Module>(
        std::make_shared<FakeModule>(config["start_urls"].get<std::vector<std::string>>()));
  };
}

// A fetcher whose answers the test gives, one by one.
class HeldFetcher final : public Fetcher {
 public:
  void Fetch(FetchRequest request, Done done) override {
    waiting.emplace_back(std::move(request), std::move(done));
  }
  size_t in_flight() const override { return waiting.size(); }
  void Answer(size_t i, std::string body) {
    auto [request, done] = std::move(waiting.at(i));
    waiting.erase(waiting.begin() + static_cast<std::ptrdiff_t>(i));
    FetchResponse r;
    r.status = 200;
    r.final_url = request.url;
    r.bytes = body.size();
    r.body = std::move(body);
    done(std::move(r), "");
  }
  std::vector<std::pair<FetchRequest, Done>> waiting;
};

class EngineUnitTest : public ::testing::Test {
 protected:
  // A config on one host, robots.txt off and no delay unless `extra` says otherwise.
  static Json Config(std::vector<std::string> paths, Json extra = Json::object()) {
    std::vector<std::string> urls;
    for (const auto& p : paths) urls.push_back(Url(p));
    Json config = {{"start_urls", urls},
                   {"politeness", {{"robots_txt", false}, {"per_host_concurrency", 8},
                                   {"min_delay_ms", 0}, {"max_retry_after_ms", 60'000}}},
                   {"retry", {{"max_retries", 2}, {"backoff_base_ms", 10},
                              {"backoff_max_ms", 20}, {"jitter", false}}}};
    config.merge_patch(extra);
    return config;
  }

  EngineOptions Options() {
    EngineOptions o;
    o.concurrency = 16;
    o.lease_batch = 64;
    o.commit_batch = 8;
    o.commit_interval = milliseconds(5);
    o.idle_poll = milliseconds(20);
    o.lease = milliseconds(60'000);
    o.drain_timeout = milliseconds(300);
    o.inline_threads = true;
    return o;
  }

  // Starts an engine on a job of `config`; its extract message is durable when this returns.
  void Start(const Json& config, EngineOptions options, Fetcher& fetcher) {
    frontier_.AddConfig(1, config);
    engine_ = std::make_unique<Engine>(loop_, fetcher, frontier_, frontier_, FakeModules(),
                                       options, clock_);
    ExtractRequest req;
    req.crawl_config_id = 1;
    req.celery_task_id = "extract-1";
    bool durable = false;
    engine_->SubmitExtract(req, [&](Status st) { durable = st.ok(); });
    ASSERT_TRUE(durable);
    engine_->Start();
  }
  void Start(const Json& config, EngineOptions options) { Start(config, options, fetcher_); }
  void Start(const Json& config) { Start(config, Options()); }

  bool RunUntilJobEnds(milliseconds limit = milliseconds(600'000)) {
    return loop_.RunUntil([&] { return !frontier_.finished.empty(); }, limit);
  }

  void Drain() {
    bool drained = false;
    engine_->Drain([&] { drained = true; });
    ASSERT_TRUE(loop_.RunUntil([&] { return drained; }));
  }

  // When each fetch of `url` started, from the start of the test.
  std::vector<milliseconds> Starts(const std::string& url) const {
    std::vector<milliseconds> out;
    for (const auto& [u, t] : fetches_)
      if (u == url) out.push_back(std::chrono::duration_cast<milliseconds>(t - t0_));
    return out;
  }
  std::vector<milliseconds> AllStarts() const {
    std::vector<milliseconds> out;
    for (const auto& [u, t] : fetches_)
      if (!u.ends_with("/robots.txt"))
        out.push_back(std::chrono::duration_cast<milliseconds>(t - t0_));
    return out;
  }

  // The results of `url`'s request the engine committed, in order.
  std::vector<RequestResult> ResultsOf(const std::string& url) const {
    std::vector<RequestResult> out;
    const auto* q = frontier_.Find(url);
    for (const auto& batch : frontier_.commits)
      for (const auto& r : batch)
        if ((q && r.request_id == q->id) || (r.speculated && r.speculated->url == url))
          out.push_back(r);
    return out;
  }

  FakeFrontier::RequestState StatusOf(const std::string& url) const {
    const auto* q = frontier_.Find(url);
    EXPECT_NE(q, nullptr) << url;
    return q ? q->status : FakeFrontier::RequestState::kPending;
  }

  ManualClock clock_{Clock::WallTime{} + std::chrono::hours(24 * 365 * 56)};
  const Clock::MonoTime t0_ = clock_.Monotonic();
  ManualLoop loop_{clock_};
  FakeFrontier frontier_{clock_};
  std::map<std::string, std::vector<FakePage>> site_;  // url -> its answers, call by call
  std::vector<std::pair<std::string, Clock::MonoTime>> fetches_;
  std::vector<size_t> commits_before_fetch_;  // how many commits were made before each fetch
  FakeFetcher fetcher_{loop_, [this](const FetchRequest& r, int call) {
                         fetches_.emplace_back(r.url, clock_.Monotonic());
                         commits_before_fetch_.push_back(frontier_.commits.size());
                         auto it = site_.find(r.url);
                         if (it == site_.end()) return FakePage{200, "", {}, {}};
                         const auto& answers = it->second;
                         return answers[std::min<size_t>(call, answers.size()) - 1];
                       }};
  HeldFetcher held_;
  std::unique_ptr<Engine> engine_;
};

FakePage Page(std::string body) { return FakePage{200, std::move(body), {}, {}}; }
FakePage Answer(int status, std::optional<std::string> retry_after = std::nullopt) {
  return FakePage{status, "", std::move(retry_after), {}};
}

// ---- politeness ---------------------------------------------------------------------------

TEST_F(EngineUnitTest, AMinDelaySpacesTheStartsOnAHostBySlotsReservedInTheLedger) {
  Start(Config({"/0", "/1", "/2", "/3", "/4"},
               {{"politeness", {{"min_delay_ms", 1000}, {"per_host_concurrency", 4}}}}));
  ASSERT_TRUE(RunUntilJobEnds());
  const auto starts = AllStarts();
  ASSERT_EQ(starts.size(), 5u);
  for (size_t i = 1; i < starts.size(); ++i)
    EXPECT_GE(starts[i] - starts[i - 1], milliseconds(1000)) << "start " << i;
  EXPECT_LT(starts.back(), milliseconds(4 * 1000 + 50));  // and no slower than the delay
  EXPECT_EQ(frontier_.hosts[kSite].reservations, 5);
}

TEST_F(EngineUnitTest, WhenTheLedgerIsAwayTheDelayIsKeptInThisProcess) {
  frontier_.reserve_error = Error(ErrorCode::kUnavailable, "database away", true);
  Start(Config({"/0", "/1", "/2"}, {{"politeness", {{"min_delay_ms", 500}}}}));
  ASSERT_TRUE(RunUntilJobEnds());
  const auto starts = AllStarts();
  ASSERT_EQ(starts.size(), 3u);
  EXPECT_GE(starts[1] - starts[0], milliseconds(500));
  EXPECT_GE(starts[2] - starts[1], milliseconds(500));
}

TEST_F(EngineUnitTest, A429HoldsTheHostForItsRetryAfterAndRetriesThePage) {
  site_[Url("/0")] = {Answer(429, "5"), Page("item a 1")};
  Start(Config({"/0", "/1"}, {{"politeness", {{"per_host_concurrency", 1}}}}));
  ASSERT_TRUE(RunUntilJobEnds());

  const auto first = Starts(Url("/0"));
  ASSERT_EQ(first.size(), 2u);
  const auto after = std::min(Starts(Url("/1")).front(), first[1]);
  EXPECT_GE(after - first[0], milliseconds(5000)) << "nothing starts on the host before 5 s";
  ASSERT_EQ(frontier_.slow_downs.size(), 1u);
  EXPECT_EQ(std::get<1>(frontier_.slow_downs[0]), milliseconds(5000));

  const auto results = ResultsOf(Url("/0"));
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].state, State::kRetry);
  EXPECT_EQ(results[0].error_class, "RateLimit");
  EXPECT_GE(results[0].retry_delay, milliseconds(5000)) << "the retry waits for Retry-After";
  EXPECT_EQ(results[1].state, State::kDone);
}

TEST_F(EngineUnitTest, A503WithoutRetryAfterHoldsTheHostASecondAndIsNotRetriedPastItsRetries) {
  site_[Url("/0")] = {Answer(503)};
  Start(Config({"/0", "/1"}, {{"politeness", {{"per_host_concurrency", 1}}},
                              {"retry", {{"max_retries", 0}}}}));
  ASSERT_TRUE(RunUntilJobEnds());
  EXPECT_GE(Starts(Url("/1")).front() - Starts(Url("/0")).front(), milliseconds(1000));
  ASSERT_EQ(frontier_.slow_downs.size(), 1u);
  EXPECT_EQ(std::get<1>(frontier_.slow_downs[0]), milliseconds(1000));
  EXPECT_EQ(StatusOf(Url("/0")), FakeFrontier::RequestState::kFailed);
  EXPECT_EQ(frontier_.Find(Url("/0"))->error_class, "HttpStatus");
}

TEST_F(EngineUnitTest, RobotsTxtIsAskedOnceAndWhatItDisallowsIsSkippedUnfetched) {
  fetcher_.serve_robots = true;
  site_[Url("/robots.txt")] = {Page("User-agent: *\nDisallow: /private\n")};
  site_[Url("/0")] = {Page("link " + Url("/private/1") + "\nlink " + Url("/1"))};
  Start(Config({"/0"}, {{"politeness", {{"robots_txt", true}}}}));
  ASSERT_TRUE(RunUntilJobEnds());
  EXPECT_EQ(fetcher_.Calls(Url("/robots.txt")), 1);
  EXPECT_EQ(fetcher_.Calls(Url("/private/1")), 0);
  EXPECT_EQ(StatusOf(Url("/private/1")), FakeFrontier::RequestState::kSkipped);
  EXPECT_EQ(StatusOf(Url("/1")), FakeFrontier::RequestState::kDone);
  ASSERT_TRUE(frontier_.hosts[kSite].robots.has_value());
  EXPECT_EQ(frontier_.finished.at(0).status, "succeeded");
}

TEST_F(EngineUnitTest, AnUnreachableRobotsTxtDisallowsTheWholeHost) {
  fetcher_.serve_robots = true;
  site_[Url("/robots.txt")] = {FakePage{0, "", {}, Error(ErrorCode::kUnavailable, "refused", true)}};
  Start(Config({"/0", "/1"}, {{"politeness", {{"robots_txt", true}}}}));
  ASSERT_TRUE(RunUntilJobEnds());
  EXPECT_EQ(fetcher_.Calls(Url("/0")) + fetcher_.Calls(Url("/1")), 0);
  EXPECT_EQ(StatusOf(Url("/0")), FakeFrontier::RequestState::kSkipped);
}

// ---- the page-type breaker ----------------------------------------------------------------

TEST_F(EngineUnitTest, APageTypePausesAfterConsecutiveFailuresThenResumes) {
  site_[Url("/0")] = {Answer(404)};
  site_[Url("/1")] = {Answer(404)};
  Start(Config({"/0", "/1", "/2", "/3"},
               {{"politeness", {{"per_host_concurrency", 1}}},
                {"errors", {{"module_pause_after", 2}, {"module_cooldown_ms", 1000}}}}));
  ASSERT_TRUE(RunUntilJobEnds());
  const auto second_failure = Starts(Url("/1")).front();
  EXPECT_GE(Starts(Url("/2")).front() - second_failure, milliseconds(1000)) << "paused";
  EXPECT_LT(Starts(Url("/2")).front() - second_failure, milliseconds(1100)) << "and resumed";
  EXPECT_EQ(StatusOf(Url("/2")), FakeFrontier::RequestState::kDone);
  EXPECT_EQ(StatusOf(Url("/3")), FakeFrontier::RequestState::kDone);
}

TEST_F(EngineUnitTest, ASuccessInBetweenResetsTheBreakersCount) {
  site_[Url("/0")] = {Answer(404)};
  site_[Url("/2")] = {Answer(404)};
  Start(Config({"/0", "/1", "/2", "/3"},
               {{"politeness", {{"per_host_concurrency", 1}}},
                {"errors", {{"module_pause_after", 2}, {"module_cooldown_ms", 1000}}}}));
  ASSERT_TRUE(RunUntilJobEnds());
  EXPECT_LT(Starts(Url("/3")).front(), milliseconds(1000)) << "never paused";
}

// ---- commit batching ----------------------------------------------------------------------

TEST_F(EngineUnitTest, ResultsAreCommittedInBatchesOfCommitBatch) {
  std::vector<std::string> paths;
  for (int i = 0; i < 24; ++i) paths.push_back("/" + std::to_string(i));
  auto options = Options();
  options.concurrency = 8;  // starving below 1 waiting or running
  options.commit_batch = 4;
  Start(Config(paths), options);
  ASSERT_TRUE(RunUntilJobEnds());
  size_t results = 0;
  for (const auto& batch : frontier_.commits) {
    EXPECT_LE(batch.size(), 4u);
    results += batch.size();
  }
  EXPECT_EQ(results, 24u);
  EXPECT_EQ(frontier_.commits.front().size(), 4u);
  EXPECT_EQ(frontier_.commit_times.front(), t0_) << "without waiting for the interval";
  // 8 fetches start at once; as their results come in, more start; the 4th result is a batch.
  ASSERT_GE(commits_before_fetch_.size(), 12u);
  EXPECT_GE(commits_before_fetch_[11], 1u) << "a full batch goes at once";
}

TEST_F(EngineUnitTest, AResultThatWaitsIsCommittedAfterCommitInterval) {
  auto options = Options();
  options.concurrency = 8;
  options.commit_batch = 100;
  options.commit_interval = milliseconds(50);
  Start(Config({"/0", "/1", "/2", "/3"}, {{"politeness", {{"min_delay_ms", 200}}}}), options);
  ASSERT_TRUE(RunUntilJobEnds());
  ASSERT_GE(frontier_.commits.size(), 3u);
  // /0 and /1 waited alone for the interval (others were still queued: no starving).
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(frontier_.commits[i].size(), 1u);
    const auto fetched = Starts(Url("/" + std::to_string(i))).front();
    EXPECT_EQ(frontier_.commit_times[i] - t0_, fetched + milliseconds(50)) << i;
  }
}

TEST_F(EngineUnitTest, APageThatLeadsToMorePagesIsCommittedAtOnce) {
  site_[Url("/0")] = {Page("next " + Url("/1"))};
  auto options = Options();
  options.speculate = false;
  options.commit_batch = 100;
  options.commit_interval = milliseconds(50);
  Start(Config({"/0"}), options);
  ASSERT_TRUE(RunUntilJobEnds());
  ASSERT_FALSE(frontier_.commits.empty());
  EXPECT_EQ(frontier_.commit_times.front(), t0_);
}

// ---- pages fetched ahead ------------------------------------------------------------------

TEST_F(EngineUnitTest, PagesFetchedAheadRideAlongWithTheCommitThatLeadsToThem) {
  site_[Url("/0")] = {Page("item a 1\nnext " + Url("/1"))};
  site_[Url("/1")] = {Page("item b 2\nnext " + Url("/2"))};
  site_[Url("/2")] = {Page("item c 3")};
  Start(Config({"/0"}));
  ASSERT_TRUE(RunUntilJobEnds());
  EXPECT_EQ(fetcher_.Calls(Url("/1")), 1);
  EXPECT_EQ(fetcher_.Calls(Url("/2")), 1);
  size_t follow_ons = 0;
  for (size_t n : frontier_.follow_ons_recorded) follow_ons += n;
  EXPECT_GE(follow_ons, 1u);
  const auto one = ResultsOf(Url("/1"));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_TRUE(one[0].speculated.has_value()) << "/1 was recorded as a follow-on";
  EXPECT_EQ(frontier_.jobs.at(1).items.size(), 3u);
  EXPECT_EQ(engine_->Stats().parsed, 3u);
}

TEST_F(EngineUnitTest, AFollowOnTheCommitDropsIsServedToItsLeaseWithoutFetchingAgain) {
  frontier_.record_follow_ons = false;
  site_[Url("/0")] = {Page("item a 1\nnext " + Url("/1"))};
  site_[Url("/1")] = {Page("item b 2")};
  Start(Config({"/0"}));
  ASSERT_TRUE(RunUntilJobEnds());
  EXPECT_EQ(fetcher_.Calls(Url("/1")), 1);
  const auto results = ResultsOf(Url("/1"));
  ASSERT_EQ(results.size(), 2u);
  EXPECT_TRUE(results[0].speculated.has_value()) << "it rode along";
  EXPECT_FALSE(results[1].speculated.has_value()) << "and came back with its lease";
  EXPECT_EQ(results[1].state, State::kDone);
  EXPECT_EQ(frontier_.jobs.at(1).items.size(), 2u);
}

TEST_F(EngineUnitTest, APageWhoseFetchAheadFailedIsFetchedForRealAndRetried) {
  site_[Url("/0")] = {Page("next " + Url("/1"))};
  site_[Url("/1")] = {Answer(500), Answer(500), Page("item b 2")};
  Start(Config({"/0"}));
  ASSERT_TRUE(RunUntilJobEnds());
  EXPECT_EQ(fetcher_.Calls(Url("/1")), 3) << "ahead (dropped), for real (retry), the retry";
  const auto results = ResultsOf(Url("/1"));
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].state, State::kRetry);
  EXPECT_EQ(results[1].state, State::kDone);
}

TEST_F(EngineUnitTest, NothingIsFetchedAheadOnAHostWithADelay) {
  site_[Url("/0")] = {Page("next " + Url("/1"))};
  site_[Url("/1")] = {Page("")};
  Start(Config({"/0"}, {{"politeness", {{"min_delay_ms", 100}}}}));
  ASSERT_TRUE(RunUntilJobEnds());
  for (const auto& batch : frontier_.commits)
    for (const auto& r : batch) EXPECT_FALSE(r.speculated.has_value());
}

// ---- drain --------------------------------------------------------------------------------

TEST_F(EngineUnitTest, DrainHandsBackWhatNeverStartedAndRecordsWhatDid) {
  Start(Config({"/0", "/1", "/2", "/3"},
               {{"politeness", {{"min_delay_ms", 1000}, {"per_host_concurrency", 1}}}}));
  loop_.RunReady();  // /0 starts and is recorded; /1.. wait for their slots
  ASSERT_EQ(AllStarts().size(), 1u);
  Drain();
  EXPECT_EQ(AllStarts().size(), 1u) << "nothing starts once draining";
  EXPECT_EQ(StatusOf(Url("/0")), FakeFrontier::RequestState::kDone);
  std::vector<int64_t> expected;
  for (const char* p : {"/1", "/2", "/3"}) {
    EXPECT_EQ(StatusOf(Url(p)), FakeFrontier::RequestState::kPending) << p;
    expected.push_back(frontier_.Find(Url(p))->id);
  }
  auto released = frontier_.released;
  std::sort(released.begin(), released.end());
  EXPECT_EQ(released, expected);
}

TEST_F(EngineUnitTest, DrainWaitsForAFetchInFlightAndRecordsIt) {
  HeldFetcher& held = held_;
  Start(Config({"/0", "/1"}, {{"politeness", {{"per_host_concurrency", 1}}}}), Options(), held);
  loop_.RunReady();
  ASSERT_EQ(held.waiting.size(), 1u);
  bool drained = false;
  engine_->Drain([&] { drained = true; });
  loop_.Advance(milliseconds(100));
  EXPECT_FALSE(drained) << "a fetch is in flight";
  held.Answer(0, "item a 1");
  ASSERT_TRUE(loop_.RunUntil([&] { return drained; }));
  EXPECT_EQ(StatusOf(Url("/0")), FakeFrontier::RequestState::kDone);
  EXPECT_EQ(frontier_.released, std::vector<int64_t>{frontier_.Find(Url("/1"))->id});
}

TEST_F(EngineUnitTest, DrainGivesUpOnAFetchThatNeverEndsAfterDrainTimeout) {
  HeldFetcher& held = held_;
  Start(Config({"/0"}), Options(), held);
  loop_.RunReady();
  ASSERT_EQ(held.waiting.size(), 1u);
  bool drained = false;
  engine_->Drain([&] { drained = true; });
  loop_.Advance(milliseconds(299));
  EXPECT_FALSE(drained);
  loop_.Advance(milliseconds(1));
  EXPECT_TRUE(drained) << "its lease is left to expire";
  EXPECT_EQ(StatusOf(Url("/0")), FakeFrontier::RequestState::kLeased);
}

}  // namespace
}  // namespace celeriac::extractor
