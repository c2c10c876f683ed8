// The loop that takes campaigns online at their window's start and offline at its end. What is
// due is decided by the service's clock (mkt::Clock, so tests move time); the loop itself only
// says how often to look.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/time/time.h"
#include "services/campaigns/campaign_service.h"

namespace mkt::campaigns {

class CampaignScheduler {
 public:
  // Starts a thread that calls service.AdvanceDue() every `interval` until Stop().
  CampaignScheduler(CampaignService& service, absl::Duration interval);
  ~CampaignScheduler();
  CampaignScheduler(const CampaignScheduler&) = delete;
  CampaignScheduler& operator=(const CampaignScheduler&) = delete;

  // Wakes the loop now (e.g. after a test moved the clock).
  void Poke();
  void Stop();

 private:
  void Run();

  CampaignService& service_;
  const absl::Duration interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool poked_ = false;
  std::thread thread_;
};

}  // namespace mkt::campaigns
