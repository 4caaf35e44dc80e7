// A RequestSink that queues events for a consumer on another thread (an API handler): Deliver
// never blocks the engine thread; the consumer waits with Next, or is told by `on_ready` (called
// on the engine thread after each delivery; it must not block either).
//
// Thread-safety: Deliver from one thread, Next/TryNext from another.
#pragma once

#include <deque>
#include <functional>
#include <optional>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/scheduler/request.h"

namespace switchyard {

class EventQueue final : public RequestSink {
 public:
  explicit EventQueue(std::function<void()> on_ready = nullptr) : on_ready_(std::move(on_ready)) {}

  void Deliver(RequestEvent event) override {
    {
      absl::MutexLock lock(&mu_);
      events_.push_back(std::move(event));
    }
    if (on_ready_) on_ready_();
  }

  // The next event, waiting up to `timeout`; nullopt when none came.
  std::optional<RequestEvent> Next(absl::Duration timeout = absl::InfiniteDuration()) {
    absl::MutexLock lock(&mu_);
    const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !events_.empty(); };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) return std::nullopt;
    RequestEvent e = std::move(events_.front());
    events_.pop_front();
    return e;
  }
  std::optional<RequestEvent> TryNext() { return Next(absl::ZeroDuration()); }

 private:
  std::function<void()> on_ready_;
  absl::Mutex mu_;
  std::deque<RequestEvent> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard
