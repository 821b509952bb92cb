// The Postgres pool against a real server: transactions retried when a retry can help, and
// only then.

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/pg_test.hpp"

namespace celeriac {
namespace {

// Two threads meet here once. (libstdc++ 12's std::barrier can hang; this cannot.)
class Rendezvous {
 public:
  void ArriveAndWait() {
    std::unique_lock lock(mutex_);
    if (++arrived_ == 2) {
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return arrived_ >= 2; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
};

class PoolTest : public testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    Exec("CREATE TABLE t (v int NOT NULL)");
  }

  int64_t Count() {
    auto n = pool().Transact<int64_t>([](pqxx::transaction_base& tx) -> Result<int64_t> {
      return tx.exec1("SELECT count(*) FROM t")[0].as<int64_t>();
    });
    EXPECT_TRUE(n.ok());
    return n.ok() ? *n : -1;
  }
};

TEST_F(PoolTest, CommitsAndReturnsTheValue) {
  auto r = pool().Transact<int>([](pqxx::transaction_base& tx) -> Result<int> {
    tx.exec("INSERT INTO t VALUES (7)");
    return 7;
  });
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(*r, 7);
  EXPECT_EQ(Count(), 1);
  EXPECT_TRUE(pool().Ping().ok());
}

TEST_F(PoolTest, ErrorFromTheBodyRollsBackWithoutRetry) {
  int attempts = 0;
  auto st = pool().Execute([&](pqxx::transaction_base& tx) -> Status {
    ++attempts;
    tx.exec("INSERT INTO t VALUES (1)");
    return Error(ErrorCode::kUnavailable, "downstream said no");
  });
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message(), "downstream said no");
  EXPECT_EQ(attempts, 1) << "the body's own errors are the caller's to retry";
  EXPECT_EQ(Count(), 0);
}

TEST_F(PoolTest, SqlErrorIsNotRetried) {
  int attempts = 0;
  auto st = pool().Execute([&](pqxx::transaction_base& tx) -> Status {
    ++attempts;
    tx.exec("INSERT INTO t VALUES (NULL)");
    return Ok();
  });
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument) << st.error().ToString();
  EXPECT_FALSE(st.error().retryable());
  EXPECT_NE(st.error().message().find("23502"), std::string::npos) << st.error().message();
  EXPECT_EQ(attempts, 1);
}

TEST_F(PoolTest, LostConnectionBeforeCommitIsRetriedOnAFreshOne) {
  int attempts = 0;
  auto st = pool().Execute([&](pqxx::transaction_base& tx) -> Status {
    ++attempts;
    tx.exec("INSERT INTO t VALUES (1)");
    if (attempts == 1) tx.exec("SELECT pg_terminate_backend(pg_backend_pid())");
    return Ok();
  });
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(Count(), 1) << "the first attempt's insert died with its connection";
}

TEST_F(PoolTest, SerializationFailureIsRetried) {
  // Two serializable transactions that both read then both write: write skew, so Postgres
  // aborts one with 40001; the pool runs it again and both end committed.
  Rendezvous both_read;
  std::atomic<int> attempts{0};
  auto body = [&](pqxx::transaction_base& tx) -> Status {
    const int attempt = ++attempts;
    const auto sum = tx.exec1("SELECT coalesce(sum(v), 0) FROM t")[0].as<int64_t>();
    if (attempt <= 2) both_read.ArriveAndWait();
    tx.exec("INSERT INTO t VALUES (" + std::to_string(sum + 1) + ")");
    return Ok();
  };
  Status a, b;
  std::thread ta([&] { a = pool().Execute(body, pg::Isolation::kSerializable); });
  std::thread tb([&] { b = pool().Execute(body, pg::Isolation::kSerializable); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.ok()) << a.error().ToString();
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_GE(attempts.load(), 3) << "one of the two must have been retried";
  EXPECT_EQ(Count(), 2);
}

TEST_F(PoolTest, UnreachableServerIsRetryableUnavailable) {
  auto options = MakeOptions();
  options.url = "postgresql://celeriac@127.0.0.1:1/celeriac";
  options.max_attempts = 2;
  options.connect_timeout_s = 1;
  pg::Pool dead(options);
  auto st = dead.Ping();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kUnavailable) << st.error().ToString();
  EXPECT_TRUE(st.error().retryable());
}

TEST_F(PoolTest, AcquireTimesOutWhenEveryConnectionIsLeased) {
  auto options = MakeOptions();
  options.size = 1;
  options.acquire_timeout = std::chrono::milliseconds(100);
  pg::Pool small(options);
  auto held = small.Acquire();
  ASSERT_TRUE(held.ok()) << held.error().message();
  auto second = small.Acquire();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code(), ErrorCode::kTimeout);
}

TEST_F(PoolTest, ConnectionsAreReusedAfterRelease) {
  auto options = MakeOptions();
  options.size = 1;
  pg::Pool small(options);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(small.Ping().ok());
}

}  // namespace
}  // namespace celeriac
