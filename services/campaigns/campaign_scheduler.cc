#include "services/campaigns/campaign_scheduler.h"

#include "libs/log/log.h"
#include "spdlog/spdlog.h"

namespace mkt::campaigns {

CampaignScheduler::CampaignScheduler(CampaignService& service, absl::Duration interval)
    : service_(service), interval_(interval) {
  thread_ = std::thread([this] { Run(); });
}

CampaignScheduler::~CampaignScheduler() { Stop(); }

void CampaignScheduler::Poke() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    poked_ = true;
  }
  cv_.notify_all();
}

void CampaignScheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CampaignScheduler::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    poked_ = false;
    lock.unlock();
    absl::StatusOr<int> changed = service_.AdvanceDue();
    if (!changed.ok()) {
      spdlog::warn("campaign scheduler: {} (retried next round)", changed.status());
    } else if (*changed > 0) {
      spdlog::info("campaign scheduler: {} campaigns started or ended", *changed);
    }
    lock.lock();
    cv_.wait_for(lock, absl::ToChronoNanoseconds(interval_), [this] { return stop_ || poked_; });
  }
}

}  // namespace mkt::campaigns
