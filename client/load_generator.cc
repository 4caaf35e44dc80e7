#include "client/load_generator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "client/connection.h"
#include "nlohmann/json.hpp"
#include "switchyard/v1/switchyard.grpc.pb.h"

ABSL_FLAG(std::string, mode, "closed", "bench: closed (fixed concurrency) or poisson (open loop)");
ABSL_FLAG(int, concurrency, 16, "bench closed: streams kept open");
ABSL_FLAG(double, rate, 4.0, "bench poisson: mean requests per second");
ABSL_FLAG(double, duration_s, 30, "bench: seconds to send requests for");
ABSL_FLAG(int64_t, requests, 0, "bench: stop after this many requests (0: duration only)");
ABSL_FLAG(std::vector<std::string>, adapters, {},
          "bench: adapters to spread requests over, most popular first (\"base\": no adapter)");
ABSL_FLAG(double, zipf, 1.0, "bench: Zipf exponent of adapter popularity (0: uniform)");
ABSL_FLAG(std::string, prompt_tokens, "32:128", "bench: prompt length range MIN:MAX");
ABSL_FLAG(std::string, output_tokens, "16:128", "bench: output length range MIN:MAX");
ABSL_FLAG(int, max_in_flight, 20000, "bench poisson: most streams open at once");
ABSL_FLAG(uint64_t, bench_seed, 1, "bench: seed of the request mix");
ABSL_DECLARE_FLAG(bool, json);

namespace switchyard::client {
namespace {

namespace v1 = ::switchyard::v1;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::pair<int, int> Range(const std::string& spec) {
  std::pair<std::string, std::string> parts = absl::StrSplit(spec, absl::MaxSplits(':', 1));
  int lo = 1, hi = 1;
  if (!absl::SimpleAtoi(parts.first, &lo)) lo = 1;
  if (parts.second.empty() || !absl::SimpleAtoi(parts.second, &hi)) hi = lo;
  return {std::max(1, std::min(lo, hi)), std::max(1, std::max(lo, hi))};
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

class Generator;

// One streaming request.
class Call final : public grpc::ClientReadReactor<v1::GenerateStreamResponse> {
 public:
  Call(Generator* g, v1::GenerateRequest req) : g_(g), req_(std::move(req)) {}
  void Start(v1::Switchyard::Stub* stub);
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& s) override;
  void Cancel() { ctx_.TryCancel(); }

 private:
  Generator* const g_;
  v1::GenerateRequest req_;
  grpc::ClientContext ctx_;
  v1::GenerateStreamResponse msg_;
  Clock::time_point start_, last_;
  bool first_ = true;
  int64_t tokens_ = 0;
  std::vector<double> itl_, overhead_;
  double ttft_ = 0;
};

class Generator {
 public:
  explicit Generator(std::shared_ptr<grpc::Channel> channel)
      : stub_(v1::Switchyard::NewStub(std::move(channel))),
        rng_(absl::GetFlag(FLAGS_bench_seed)),
        prompt_range_(Range(absl::GetFlag(FLAGS_prompt_tokens))),
        output_range_(Range(absl::GetFlag(FLAGS_output_tokens))) {
    adapters_ = absl::GetFlag(FLAGS_adapters);
    if (adapters_.empty()) adapters_.push_back("base");
    double total = 0;
    for (size_t i = 0; i < adapters_.size(); ++i) {
      const double w = 1.0 / std::pow(static_cast<double>(i + 1), absl::GetFlag(FLAGS_zipf));
      weights_.push_back(w);
      total += w;
    }
    for (double& w : weights_) w /= total;
  }

  bool Prepare() {
    grpc::ClientContext ctx;
    ConfigureContext(&ctx, false);
    v1::GetServerInfoResponse info;
    const grpc::Status s = stub_->GetServerInfo(&ctx, {}, &info);
    if (!s.ok()) {
      std::fprintf(stderr, "bench: GetServerInfo: %s\n", s.error_message().c_str());
      return false;
    }
    vocab_ = std::max(2, info.vocab_size());
    server_ = info.model() + " (" + info.engine() + ")";
    return true;
  }

  // Starts one request if the run has not ended; false when it has.
  bool StartOne() {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t limit = absl::GetFlag(FLAGS_requests);
    if (Clock::now() >= end_ || (limit > 0 && sent_ >= limit)) return false;
    ++sent_;
    ++in_flight_;
    max_in_flight_ = std::max(max_in_flight_, in_flight_);
    v1::GenerateRequest req;
    std::uniform_int_distribution<int> plen(prompt_range_.first, prompt_range_.second);
    std::uniform_int_distribution<int> olen(output_range_.first, output_range_.second);
    std::uniform_int_distribution<int> tok(0, vocab_ - 1);
    for (int n = plen(rng_); n > 0; --n) req.mutable_token_ids()->add_ids(tok(rng_));
    req.set_max_tokens(olen(rng_));
    req.set_ignore_eos(true);
    req.mutable_sampling()->set_temperature(0.8f);
    req.mutable_sampling()->set_seed(rng_());
    std::discrete_distribution<size_t> pick(weights_.begin(), weights_.end());
    const std::string& adapter = adapters_[pick(rng_)];
    if (adapter != "base") req.set_adapter(adapter);
    auto* call = new Call(this, std::move(req));
    calls_.insert(call);
    lock.unlock();
    call->Start(stub_.get());
    return true;
  }

  void Completed(Call* call, const grpc::Status& s, int64_t tokens, double ttft, double e2e,
                 std::vector<double>& itl, std::vector<double>& overhead) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      calls_.erase(call);
      --in_flight_;
      if (s.ok()) {
        ++ok_;
        tokens_ += tokens;
        ttft_.push_back(ttft);
        e2e_.push_back(e2e);
        itl_.insert(itl_.end(), itl.begin(), itl.end());
        overhead_.insert(overhead_.end(), overhead.begin(), overhead.end());
      } else {
        ++errors_[StatusCodeName(s.error_code())];
        if (first_error_.empty()) first_error_ = s.error_message();
      }
    }
    cv_.notify_all();
    if (closed_loop_) StartOne();
  }

  int Run() {
    if (!Prepare()) return 1;
    closed_loop_ = absl::GetFlag(FLAGS_mode) == "closed";
    if (!closed_loop_ && absl::GetFlag(FLAGS_mode) != "poisson") {
      std::fprintf(stderr, "bench: --mode is closed or poisson\n");
      return 2;
    }
    start_ = Clock::now();
    end_ = start_ +
           std::chrono::microseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_duration_s) * 1e6));
    if (closed_loop_) {
      for (int i = 0; i < absl::GetFlag(FLAGS_concurrency); ++i) {
        if (!StartOne()) break;
      }
    } else {
      std::exponential_distribution<double> gap(absl::GetFlag(FLAGS_rate));
      auto next = start_;
      for (;;) {
        std::this_thread::sleep_until(next);
        {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [&] { return in_flight_ < absl::GetFlag(FLAGS_max_in_flight); });
        }
        if (!StartOne()) break;
        next += std::chrono::microseconds(static_cast<int64_t>(gap(rng_) * 1e6));
      }
    }
    // Requests still open finish on their own; give them time, then cancel.
    std::unique_lock<std::mutex> lock(mu_);
    const auto give_up = Clock::now() + std::chrono::seconds(600);
    if (!cv_.wait_until(lock, give_up, [&] { return in_flight_ == 0; })) {
      for (Call* c : calls_) c->Cancel();
      cv_.wait(lock, [&] { return in_flight_ == 0; });
    }
    const double elapsed = Seconds(Clock::now() - start_);
    return Report(elapsed);
  }

 private:
  int Report(double elapsed) {
    nlohmann::json out;
    out["server"] = server_;
    out["mode"] = closed_loop_ ? "closed" : "poisson";
    if (closed_loop_) {
      out["concurrency"] = absl::GetFlag(FLAGS_concurrency);
    } else {
      out["rate_per_s"] = absl::GetFlag(FLAGS_rate);
    }
    out["adapters"] = adapters_;
    out["elapsed_s"] = elapsed;
    out["requests_ok"] = ok_;
    int64_t errors = 0;
    for (const auto& [code, n] : errors_) errors += n;
    out["errors"] = errors_;
    if (!first_error_.empty()) out["first_error"] = first_error_;
    out["max_streams_open"] = max_in_flight_;
    out["throughput_tok_s"] = static_cast<double>(tokens_) / elapsed;
    out["requests_per_s"] = static_cast<double>(ok_) / elapsed;
    const auto pcts = [](std::vector<double>& v) {
      return nlohmann::json{
          {"p50", Percentile(v, 0.5)}, {"p90", Percentile(v, 0.9)}, {"p99", Percentile(v, 0.99)}};
    };
    out["ttft_s"] = pcts(ttft_);
    out["itl_s"] = pcts(itl_);
    out["e2e_s"] = pcts(e2e_);
    out["transport_overhead_s"] = pcts(overhead_);
    if (absl::GetFlag(FLAGS_json)) {
      std::printf("%s\n", out.dump(2).c_str());
      return errors > 0 ? 1 : 0;
    }
    std::printf("server: %s\n", server_.c_str());
    std::printf("%s loop, %.1f s: %lld requests ok, %lld failed, %lld streams open at most\n",
                closed_loop_ ? "closed" : "open (Poisson)", elapsed, static_cast<long long>(ok_),
                static_cast<long long>(errors), static_cast<long long>(max_in_flight_));
    for (const auto& [code, n] : errors_) {
      std::printf("  %s: %lld\n", code.c_str(), static_cast<long long>(n));
    }
    if (!first_error_.empty()) std::printf("  first error: %s\n", first_error_.c_str());
    std::printf("throughput %.1f tokens/s, %.2f requests/s\n\n",
                out["throughput_tok_s"].get<double>(), out["requests_per_s"].get<double>());
    std::printf("  %-26s %10s %10s %10s\n", "", "p50", "p90", "p99");
    const auto row = [&](const char* name, const char* key, double scale, const char* unit) {
      const nlohmann::json& j = out[key];
      std::printf("  %-26s %8.1f%s %8.1f%s %8.1f%s\n", name, j["p50"].get<double>() * scale, unit,
                  j["p90"].get<double>() * scale, unit, j["p99"].get<double>() * scale, unit);
    };
    row("time to first token", "ttft_s", 1e3, "ms");
    row("inter-token latency", "itl_s", 1e3, "ms");
    row("end to end", "e2e_s", 1, " s");
    row("transport overhead/message", "transport_overhead_s", 1e3, "ms");
    return errors > 0 ? 1 : 0;
  }

  std::unique_ptr<v1::Switchyard::Stub> stub_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::mt19937_64 rng_;
  std::pair<int, int> prompt_range_, output_range_;
  std::vector<std::string> adapters_;
  std::vector<double> weights_;
  int vocab_ = 2;
  std::string server_;
  bool closed_loop_ = true;
  Clock::time_point start_, end_;
  int64_t sent_ = 0, in_flight_ = 0, max_in_flight_ = 0, ok_ = 0, tokens_ = 0;
  std::map<std::string, int64_t> errors_;
  std::string first_error_;
  std::vector<double> ttft_, itl_, e2e_, overhead_;
  std::set<Call*> calls_;
};

void Call::Start(v1::Switchyard::Stub* stub) {
  ConfigureContext(&ctx_, false);
  start_ = last_ = Clock::now();
  stub->async()->GenerateStream(&ctx_, &req_, this);
  StartRead(&msg_);
  StartCall();
}

void Call::OnReadDone(bool ok) {
  if (!ok) return;  // OnDone follows
  const auto now = Clock::now();
  const int k = msg_.token_ids_size();
  if (k > 0) {
    if (first_) {
      ttft_ = Seconds(now - start_);
      first_ = false;
    } else {
      const double gap = Seconds(now - last_) / k;
      for (int i = 0; i < k; ++i) itl_.push_back(gap);
    }
    last_ = now;
    tokens_ += k;
    overhead_.push_back(Seconds(now - start_) - msg_.server_time_s());
  }
  StartRead(&msg_);
}

void Call::OnDone(const grpc::Status& s) {
  g_->Completed(this, s, tokens_, ttft_, Seconds(Clock::now() - start_), itl_, overhead_);
  delete this;
}

}  // namespace

int RunLoadGenerator(std::shared_ptr<grpc::Channel> channel) {
  Generator g(std::move(channel));
  return g.Run();
}

}  // namespace switchyard::client
