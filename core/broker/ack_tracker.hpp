#pragma once
// AckTracker: the acknowledgement bookkeeping of one AMQP consumer on its channel. No I/O: it
// records deliveries, checks and records ack/reject requests, and says which frames to send.
//
// Delivery tags. The tag handed to a handler is opaque: the generation of the channel that
// delivered it in the high 16 bits, the AMQP delivery tag in the low 48. ChannelLost() starts a
// new generation (the server has requeued every unacked delivery of the dead channel), so an
// ack or reject of a delivery from the old channel is refused (NotFound, not retryable) instead
// of acking an unrelated message that has the same AMQP tag on the new channel.
//
// Requests. Ack() and Reject() of a delivery recorded on the current channel and not yet acked
// or rejected succeed; any other tag (unknown, already settled, older generation) is refused
// with NotFound, not retryable. A request is recorded at once and sent later: TakeFrames().
//
// Frames. TakeFrames() turns the requests made since the last call into frames, in the order
// they must be sent:
//  1. every reject (basic.reject, requeue or not), so that none of them is covered by 3;
//  2. acks of deliveries that wait behind an older delivery still unsettled (an ETA task held
//     unacked): one basic.ack each;
//  3. one basic.ack(multiple) for the acks of the settled prefix: every delivery from the
//     oldest outstanding one up to the newest acked one is acked or rejected, so contiguous
//     acks coalesce into a single frame.
// Requests made before ChannelLost() are never turned into frames: their deliveries went back
// to the queue with the channel.
//
// Threading: none of its own; its owner serialises every call (AmqpConsumer holds it under its
// mutex, because Ack/Reject come from any thread and frames are taken on the I/O thread).

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "core/base/result.hpp"

namespace celeriac::broker {

class AckTracker {
 public:
  static constexpr int kTagBits = 48;
  static constexpr uint64_t kMaxAmqpTag = (uint64_t{1} << kTagBits) - 1;

  // One frame to send on the consumer's channel.
  struct Frame {
    enum Kind : uint8_t { kAck, kAckMultiple, kReject };
    uint64_t tag;  // AMQP delivery tag
    Kind kind;
    bool requeue;  // kReject only (false otherwise)

    friend bool operator==(const Frame&, const Frame&) = default;
  };

  // `queue` names the consumer's queue in error messages.
  explicit AckTracker(std::string queue);

  // Records a delivery with AMQP tag `amqp_tag` on the current channel; tags must increase (as
  // the server numbers a channel's deliveries). Returns the opaque tag to hand to the handler,
  // or 0 if `amqp_tag` does not fit in kTagBits (the channel cannot be used any more).
  uint64_t Record(uint64_t amqp_tag);

  Status Ack(uint64_t tag) { return Request(tag, /*ack=*/true, /*requeue=*/false); }
  Status Reject(uint64_t tag, bool requeue) { return Request(tag, /*ack=*/false, requeue); }

  // Appends the frames for the requests made since the last call to `out` (see above), and
  // forgets what they settle.
  void TakeFrames(std::vector<Frame>* out);

  // The channel died: every outstanding delivery is back in its queue. Forgets them and their
  // requests, and starts a new generation, so their tags are refused from now on.
  void ChannelLost();

  // Nothing outstanding: every recorded delivery was acked or rejected and its frame taken (a
  // cancelled consumer's channel may close then).
  bool empty() const { return outstanding_.empty(); }
  uint16_t generation() const { return generation_; }

 private:
  enum class Settle : uint8_t { kPending, kAckRequested, kSent };
  struct Outstanding {
    uint64_t tag;  // AMQP delivery tag
    Settle state;
  };
  struct Op {
    uint64_t tag;  // AMQP delivery tag
    bool ack;
    bool requeue;
  };

  Status Request(uint64_t tag, bool ack, bool requeue);
  Outstanding* Find(uint64_t amqp_tag);

  std::string queue_;
  uint16_t generation_ = 1;  // never 0, so no opaque tag is 0
  std::deque<Outstanding> outstanding_;  // in delivery order, i.e. by tag
  size_t sent_entries_ = 0;              // entries of outstanding_ in state kSent
  std::vector<Op> ops_;                  // requests not yet taken, in request order
};

}  // namespace celeriac::broker
