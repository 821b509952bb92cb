#include <atomic>
#include <csignal>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/loop/loop.hpp"

namespace celeriac {
namespace {

using std::chrono::milliseconds;

TEST(Loop, PostFromAnotherThreadRunsOnLoopThreadInOrder) {
  Loop loop;
  std::vector<int> seen;
  std::atomic<bool> all_on_loop{true};
  std::thread producer([&] {
    for (int i = 0; i < 100; ++i)
      loop.Post([&, i] {
        all_on_loop = all_on_loop && loop.InLoopThread();
        seen.push_back(i);
        if (i == 99) loop.Stop();
      });
  });
  loop.Run();
  producer.join();
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], i);
  EXPECT_TRUE(all_on_loop);
}

TEST(Loop, TimersFireInDeadlineOrderAndCancelWorks) {
  Loop loop;
  std::vector<std::string> order;
  loop.AddTimer(milliseconds(20), [&] { order.push_back("late"); loop.Stop(); });
  loop.AddTimer(milliseconds(1), [&] { order.push_back("early"); });
  const auto cancelled = loop.AddTimer(milliseconds(5), [&] { order.push_back("cancelled"); });
  loop.CancelTimer(cancelled);
  loop.CancelTimer(12345);  // unknown id: ignored
  loop.Run();
  EXPECT_EQ(order, (std::vector<std::string>{"early", "late"}));
}

TEST(Loop, RepeatingTimerRepeatsUntilCancelled) {
  Loop loop;
  int ticks = 0;
  Loop::TimerId id = 0;
  id = loop.AddTimer(milliseconds(1), [&] {
    if (++ticks == 3) {
      loop.CancelTimer(id);
      loop.AddTimer(milliseconds(5), [&] { loop.Stop(); });
    }
  }, milliseconds(1));
  loop.Run();
  EXPECT_EQ(ticks, 3);
}

TEST(Loop, ExceptionInCallbackDoesNotEscape) {
  Loop loop;
  bool after = false;
  loop.Post([] { throw std::runtime_error("boom"); });
  loop.AddTimer(milliseconds(1), [] { throw std::runtime_error("boom in timer"); });
  loop.AddTimer(milliseconds(3), [&] { after = true; loop.Stop(); });
  loop.Run();
  EXPECT_TRUE(after);
}

TEST(Loop, StopBeforeRunReturnsAtOnce) {
  Loop loop;
  loop.Stop();
  loop.Run();
  SUCCEED();
}

TEST(Loop, SigtermRunsGracefulHandlerThenSecondSignalStops) {
  Loop loop;
  std::vector<int> graceful;
  loop.HandleShutdownSignals([&](int signum) { graceful.push_back(signum); });
  // Raise from the loop thread once the handlers are live; the second delivery stops the loop.
  loop.AddTimer(milliseconds(1), [] { std::raise(SIGTERM); });
  loop.AddTimer(milliseconds(20), [] { std::raise(SIGINT); });
  loop.AddTimer(milliseconds(5000), [&] { ADD_FAILURE() << "second signal did not stop"; loop.Stop(); });
  loop.Run();
  EXPECT_EQ(graceful, std::vector<int>{SIGTERM});
}

TEST(Loop, GracefulHandlerCanStopTheLoop) {
  Loop loop;
  bool stopped_by_handler = false;
  loop.HandleShutdownSignals([&](int) {
    stopped_by_handler = true;
    loop.Stop();
  });
  loop.AddTimer(milliseconds(1), [] { std::raise(SIGINT); });
  loop.AddTimer(milliseconds(5000), [&] { loop.Stop(); });
  loop.Run();
  EXPECT_TRUE(stopped_by_handler);
}

}  // namespace
}  // namespace celeriac
