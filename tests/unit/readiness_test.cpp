// core/admin/readiness: bounded, single-flight dependency checks (no network; the longest
// wait is one 50 ms deadline per Check of a blocked dependency).
#include <atomic>
#include <condition_variable>
#include <mutex>

#include <gtest/gtest.h>

#include "core/admin/readiness.hpp"

namespace celeriac::admin {
namespace {

using std::chrono::milliseconds;

// A check that blocks until released, counting its runs.
class Gate {
 public:
  Status Run() {
    ++runs;
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return open_; });
    return result_;
  }
  void Open(Status result) {
    std::lock_guard lock(mu_);
    open_ = true;
    result_ = std::move(result);
    cv_.notify_all();
  }
  std::atomic<int> runs{0};

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  Status result_ = Ok();
};

TEST(Readiness, GenericReasonPerDependencyInOrder) {
  Readiness r(ReadinessOptions{milliseconds(5000), milliseconds(0)});
  r.Add("postgres", [] { return Ok(); });
  r.Add("broker", [] {
    return Status(Error(ErrorCode::kUnavailable, "cannot connect to 10.0.0.7:5672: refused"));
  });
  r.Start();
  const auto deps = r.Check();
  ASSERT_EQ(deps.size(), 2u);
  EXPECT_EQ(deps[0].name, "postgres");
  EXPECT_TRUE(deps[0].ok);
  EXPECT_EQ(deps[0].reason, "ok");
  EXPECT_EQ(deps[1].name, "broker");
  EXPECT_FALSE(deps[1].ok);
  EXPECT_EQ(deps[1].reason, "unreachable");  // never the driver's text
}

TEST(Readiness, ABlockedCheckCostsOneDeadlineAndRunsOnceHoweverOftenAsked) {
  Gate gate;
  Readiness r(ReadinessOptions{milliseconds(50), milliseconds(0)});
  r.Add("postgres", [&] { return gate.Run(); });
  r.Add("broker", [] { return Ok(); });
  r.Start();
  for (int i = 0; i < 3; ++i) {
    const auto deps = r.Check();
    EXPECT_EQ(deps[0].reason, "unreachable");
    EXPECT_EQ(deps[1].reason, "ok") << "a blocked dependency must not hold up the others";
  }
  EXPECT_EQ(gate.runs.load(), 1) << "a check still running is never started twice";
  gate.Open(Ok());
  // The run in flight finishes; the next probe asks for a new one, which passes the open gate.
  bool ok = false;
  for (int i = 0; i < 100 && !ok; ++i) ok = r.Check()[0].ok;
  EXPECT_TRUE(ok);
}

TEST(Readiness, AFreshResultIsReusedWithoutRunningTheCheckAgain) {
  std::atomic<int> runs{0};
  Readiness r(ReadinessOptions{milliseconds(5000), milliseconds(60'000)});
  r.Add("postgres", [&] {
    ++runs;
    return Ok();
  });
  r.Start();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(r.Check()[0].ok);
  EXPECT_EQ(runs.load(), 1);
}

TEST(Readiness, AThrowingCheckIsUnreachableNotACrash) {
  Readiness r(ReadinessOptions{milliseconds(5000), milliseconds(0)});
  r.Add("postgres", []() -> Status { throw std::runtime_error("boom"); });
  r.Start();
  EXPECT_EQ(r.Check()[0].reason, "unreachable");
}

}  // namespace
}  // namespace celeriac::admin
