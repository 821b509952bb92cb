#include "core/broker/ack_tracker.hpp"

#include <algorithm>
#include <utility>

namespace celeriac::broker {

AckTracker::AckTracker(std::string queue) : queue_(std::move(queue)) {}

uint64_t AckTracker::Record(uint64_t amqp_tag) {
  if (amqp_tag > kMaxAmqpTag) return 0;
  outstanding_.push_back(Outstanding{amqp_tag, Settle::kPending});
  return (uint64_t{generation_} << kTagBits) | amqp_tag;
}

AckTracker::Outstanding* AckTracker::Find(uint64_t amqp_tag) {
  auto& q = outstanding_;
  if (q.empty() || amqp_tag < q.front().tag) return nullptr;
  // Without gaps (the usual case) the tag is its own index.
  const uint64_t idx = amqp_tag - q.front().tag;
  if (idx < q.size() && q[idx].tag == amqp_tag) return &q[idx];
  auto it = std::lower_bound(q.begin(), q.end(), amqp_tag,
                             [](const Outstanding& o, uint64_t t) { return o.tag < t; });
  return it != q.end() && it->tag == amqp_tag ? &*it : nullptr;
}

Status AckTracker::Request(uint64_t tag, bool ack, bool requeue) {
  const uint64_t amqp_tag = tag & kMaxAmqpTag;
  if ((tag >> kTagBits) != generation_) {
    return Error(ErrorCode::kNotFound,
                 "delivery " + std::to_string(amqp_tag) + " of queue " + queue_ +
                     " came from a connection or channel that has since closed; RabbitMQ has "
                     "requeued it",
                 false);
  }
  Outstanding* entry = Find(amqp_tag);
  if (entry == nullptr || entry->state != Settle::kPending) {
    return Error(ErrorCode::kNotFound,
                 "delivery " + std::to_string(amqp_tag) + " of queue " + queue_ +
                     " is unknown or already acked/rejected",
                 false);
  }
  if (ack) {
    entry->state = Settle::kAckRequested;
  } else {
    entry->state = Settle::kSent;  // a reject is never coalesced: its frame is as good as sent
    ++sent_entries_;
  }
  ops_.push_back(Op{amqp_tag, ack, requeue});
  return Ok();
}

void AckTracker::TakeFrames(std::vector<Frame>* out) {
  auto& q = outstanding_;
  for (const Op& op : ops_) {
    if (!op.ack) out->push_back(Frame{op.tag, Frame::kReject, op.requeue});
  }
  // Settled prefix: one basic.ack(multiple) covers every ack requested in it.
  uint64_t multiple = 0;
  while (!q.empty() && q.front().state != Settle::kPending) {
    if (q.front().state == Settle::kAckRequested) {
      multiple = q.front().tag;
    } else {
      --sent_entries_;
    }
    q.pop_front();
  }
  // Acks behind a pending delivery (e.g. an ETA task held unacked) go one by one.
  for (const Op& op : ops_) {
    if (!op.ack || q.empty() || op.tag < q.front().tag) continue;
    Outstanding* e = Find(op.tag);
    if (e == nullptr || e->state != Settle::kAckRequested) continue;
    out->push_back(Frame{op.tag, Frame::kAck, false});
    e->state = Settle::kSent;
    ++sent_entries_;
  }
  if (multiple != 0) out->push_back(Frame{multiple, Frame::kAckMultiple, false});
  ops_.clear();
  // Entries already sent only wait for the prefix to reach them; drop them once they are most
  // of the queue, so that a delivery held unacked for long does not make it grow without bound.
  if (sent_entries_ > 64 && sent_entries_ * 2 > q.size()) {
    q.erase(std::remove_if(q.begin(), q.end(),
                           [](const Outstanding& o) { return o.state == Settle::kSent; }),
            q.end());
    sent_entries_ = 0;
  }
}

void AckTracker::ChannelLost() {
  const uint16_t next = static_cast<uint16_t>(generation_ + 1);
  generation_ = next == 0 ? 1 : next;
  outstanding_.clear();
  sent_entries_ = 0;
  ops_.clear();
}

}  // namespace celeriac::broker
