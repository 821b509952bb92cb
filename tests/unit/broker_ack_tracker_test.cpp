// AckTracker: what AmqpBroker sends for the acks and rejects a worker asks for, and which
// requests it refuses (no network: the tracker does no I/O).
#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <vector>

#include "core/broker/ack_tracker.hpp"

namespace celeriac::broker {

// For gtest's messages (found by argument-dependent lookup, so not in the anonymous namespace).
void PrintTo(const AckTracker::Frame& f, std::ostream* os) {
  using Frame = AckTracker::Frame;
  const char* kind = f.kind == Frame::kAck           ? "ack"
                     : f.kind == Frame::kAckMultiple ? "ack-multiple"
                                                     : (f.requeue ? "reject-requeue" : "reject-drop");
  *os << kind << "(" << f.tag << ")";
}

namespace {

using Frame = AckTracker::Frame;

Frame Ack(uint64_t tag) { return Frame{tag, Frame::kAck, false}; }
Frame AckUpTo(uint64_t tag) { return Frame{tag, Frame::kAckMultiple, false}; }
Frame Reject(uint64_t tag, bool requeue) { return Frame{tag, Frame::kReject, requeue}; }

std::vector<Frame> Take(AckTracker& tracker) {
  std::vector<Frame> frames;
  tracker.TakeFrames(&frames);
  return frames;
}

// Records deliveries with AMQP tags first..last and returns the tags handed to the handler.
std::vector<uint64_t> Deliver(AckTracker& tracker, uint64_t first, uint64_t last) {
  std::vector<uint64_t> tags;
  for (uint64_t t = first; t <= last; ++t) tags.push_back(tracker.Record(t));
  return tags;
}

void ExpectRefused(const Status& s) {
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(s.error().retryable()) << "acking again cannot help: " << s.error().message();
}

TEST(AckTracker, ContiguousAcksInAnyOrderCoalesceIntoOneMultipleAck) {
  AckTracker tracker("q");
  const std::vector<uint64_t> tags = Deliver(tracker, 1, 5);
  for (int i : {2, 0, 4, 1, 3}) ASSERT_TRUE(tracker.Ack(tags[i]).ok());
  EXPECT_EQ(Take(tracker), std::vector<Frame>{AckUpTo(5)});
  EXPECT_TRUE(tracker.empty());
  EXPECT_TRUE(Take(tracker).empty()) << "nothing is sent twice";
}

TEST(AckTracker, AGapSplitsTheAcksAndClosingItAcksOnlyWhatIsLeft) {
  AckTracker tracker("q");
  const std::vector<uint64_t> tags = Deliver(tracker, 1, 5);
  // Delivery 3 is held unacked (an ETA task): 1-2 go as one multiple ack, 4 and 5 one by one.
  for (int i : {0, 1, 3, 4}) ASSERT_TRUE(tracker.Ack(tags[i]).ok());
  EXPECT_EQ(Take(tracker), (std::vector<Frame>{Ack(4), Ack(5), AckUpTo(2)}));
  EXPECT_FALSE(tracker.empty());

  ASSERT_TRUE(tracker.Ack(tags[2]).ok());
  EXPECT_EQ(Take(tracker), std::vector<Frame>{AckUpTo(3)});
  EXPECT_TRUE(tracker.empty());
}

TEST(AckTracker, NothingIsSentWhileTheOldestDeliveryIsUnsettled) {
  AckTracker tracker("q");
  const std::vector<uint64_t> tags = Deliver(tracker, 1, 3);
  EXPECT_TRUE(Take(tracker).empty());
  ASSERT_TRUE(tracker.Ack(tags[2]).ok());
  EXPECT_EQ(Take(tracker), std::vector<Frame>{Ack(3)}) << "a held delivery does not delay others";
}

TEST(AckTracker, RejectsAreSentAsRejectsWithTheirRequeueFlag) {
  AckTracker tracker("q");
  const std::vector<uint64_t> tags = Deliver(tracker, 1, 2);
  ASSERT_TRUE(tracker.Reject(tags[0], /*requeue=*/true).ok());
  ASSERT_TRUE(tracker.Reject(tags[1], /*requeue=*/false).ok());
  EXPECT_EQ(Take(tracker), (std::vector<Frame>{Reject(1, true), Reject(2, false)}));
  EXPECT_TRUE(tracker.empty());
}

TEST(AckTracker, ARejectGoesOutBeforeTheMultipleAckThatSpansIt) {
  AckTracker tracker("q");
  const std::vector<uint64_t> tags = Deliver(tracker, 1, 3);
  ASSERT_TRUE(tracker.Ack(tags[0]).ok());
  ASSERT_TRUE(tracker.Reject(tags[1], /*requeue=*/false).ok());
  ASSERT_TRUE(tracker.Ack(tags[2]).ok());
  // basic.ack(3, multiple) would ack delivery 2 too if it were still unacked when it arrives.
  EXPECT_EQ(Take(tracker), (std::vector<Frame>{Reject(2, false), AckUpTo(3)}));
  EXPECT_TRUE(tracker.empty());
}

TEST(AckTracker, ASecondAckOrRejectOfTheSameDeliveryIsRefused) {
  AckTracker tracker("q");
  const std::vector<uint64_t> tags = Deliver(tracker, 1, 3);
  ASSERT_TRUE(tracker.Ack(tags[0]).ok());
  ExpectRefused(tracker.Ack(tags[0]));              // before the frame is taken
  ExpectRefused(tracker.Reject(tags[0], true));
  ASSERT_TRUE(tracker.Reject(tags[1], false).ok());
  ExpectRefused(tracker.Ack(tags[1]));
  ASSERT_TRUE(tracker.Ack(tags[2]).ok());
  EXPECT_EQ(Take(tracker), (std::vector<Frame>{Reject(2, false), AckUpTo(3)}));
  ExpectRefused(tracker.Ack(tags[0]));              // after it was sent
  ExpectRefused(tracker.Ack(tags[2]));
  EXPECT_TRUE(Take(tracker).empty()) << "a refused request sends nothing";
}

TEST(AckTracker, AnAckOfASingleAckedDeliveryBehindAGapIsRefusedToo) {
  AckTracker tracker("q");
  const std::vector<uint64_t> tags = Deliver(tracker, 1, 2);
  ASSERT_TRUE(tracker.Ack(tags[1]).ok());
  EXPECT_EQ(Take(tracker), std::vector<Frame>{Ack(2)});
  ExpectRefused(tracker.Ack(tags[1]));
  ExpectRefused(tracker.Reject(tags[1], true));
}

TEST(AckTracker, UnknownTagsAreRefused) {
  AckTracker tracker("q");
  const std::vector<uint64_t> tags = Deliver(tracker, 5, 6);
  ExpectRefused(tracker.Ack(0));
  ExpectRefused(tracker.Ack(tags[1] + 1));  // not delivered (yet)
  ExpectRefused(tracker.Ack(tags[0] - 1));  // before the first delivery
  ExpectRefused(tracker.Reject(tags[1] + 100, true));
  EXPECT_TRUE(Take(tracker).empty());
  Status s = tracker.Ack(tags[1] + 1);
  EXPECT_NE(s.error().message().find("queue q"), std::string::npos) << s.error().message();
}

TEST(AckTracker, TagsHandedOutAreOpaqueAndNeverZero) {
  AckTracker tracker("q");
  const uint64_t tag = tracker.Record(1);
  EXPECT_NE(tag, 0u);
  EXPECT_NE(tag, 1u) << "the generation is part of the tag";
  EXPECT_EQ(tag & AckTracker::kMaxAmqpTag, 1u);
  EXPECT_EQ(tracker.Record(AckTracker::kMaxAmqpTag + 1), 0u) << "a tag that does not fit";
}

TEST(AckTracker, AfterAChannelLossTagsOfTheOldChannelAreRefused) {
  AckTracker tracker("q");
  const std::vector<uint64_t> old_tags = Deliver(tracker, 1, 2);
  tracker.ChannelLost();
  EXPECT_TRUE(tracker.empty()) << "the server requeued what was outstanding";

  // The new channel numbers its deliveries from 1 again: same AMQP tags, different messages.
  const std::vector<uint64_t> new_tags = Deliver(tracker, 1, 2);
  EXPECT_NE(new_tags[0], old_tags[0]);
  Status stale = tracker.Ack(old_tags[0]);
  ExpectRefused(stale);
  EXPECT_NE(stale.error().message().find("requeued"), std::string::npos)
      << stale.error().message();
  ExpectRefused(tracker.Reject(old_tags[1], false));
  EXPECT_TRUE(Take(tracker).empty()) << "an old tag must not ack a new delivery";

  ASSERT_TRUE(tracker.Ack(new_tags[0]).ok());
  ASSERT_TRUE(tracker.Ack(new_tags[1]).ok());
  EXPECT_EQ(Take(tracker), std::vector<Frame>{AckUpTo(2)});
}

TEST(AckTracker, AcksRequestedBeforeTheChannelDiedAreNotSentAfterIt) {
  AckTracker tracker("q");
  const std::vector<uint64_t> tags = Deliver(tracker, 1, 3);
  ASSERT_TRUE(tracker.Ack(tags[0]).ok());
  ASSERT_TRUE(tracker.Reject(tags[1], true).ok());
  tracker.ChannelLost();
  EXPECT_TRUE(Take(tracker).empty()) << "their deliveries are back in the queue already";

  Deliver(tracker, 1, 1);
  EXPECT_TRUE(Take(tracker).empty()) << "nor once the new channel delivers";
}

TEST(AckTracker, ManyGenerationsNeverReuseTheCurrentOnesTags) {
  AckTracker tracker("q");
  const uint64_t first = tracker.Record(1);
  for (int i = 0; i < 70000; ++i) {
    tracker.ChannelLost();
    ASSERT_NE(tracker.generation(), 0) << "generation 0 would make tag 0 possible";
  }
  const uint64_t later = tracker.Record(1);
  EXPECT_NE(later, 0u);
  EXPECT_NE(later, first);
  EXPECT_TRUE(tracker.Ack(later).ok());
}

TEST(AckTracker, ALongHeldDeliveryDoesNotLoseTrackOfTheOthers) {
  // Delivery 1 is held while 2..300 are acked one flush at a time (an ETA task in front of a
  // busy queue): each goes alone, and once 1 is acked everything is settled.
  AckTracker tracker("q");
  std::vector<uint64_t> tags = Deliver(tracker, 1, 300);
  for (size_t i = 1; i < tags.size(); ++i) {
    ASSERT_TRUE(tracker.Ack(tags[i]).ok());
    ASSERT_EQ(Take(tracker), std::vector<Frame>{Ack(i + 1)});
    ExpectRefused(tracker.Ack(tags[i]));
  }
  // Deliveries keep coming behind the held one, some with gaps in their tags.
  const uint64_t t302 = tracker.Record(302);
  const uint64_t t305 = tracker.Record(305);
  ASSERT_TRUE(tracker.Ack(t305).ok());
  EXPECT_EQ(Take(tracker), std::vector<Frame>{Ack(305)});
  ExpectRefused(tracker.Ack(t305));
  ASSERT_TRUE(tracker.Ack(tags[0]).ok());
  EXPECT_EQ(Take(tracker), std::vector<Frame>{AckUpTo(1)});
  EXPECT_FALSE(tracker.empty());
  ASSERT_TRUE(tracker.Reject(t302, false).ok());
  EXPECT_EQ(Take(tracker), std::vector<Frame>{Reject(302, false)});
  EXPECT_TRUE(tracker.empty());
}

}  // namespace
}  // namespace celeriac::broker
