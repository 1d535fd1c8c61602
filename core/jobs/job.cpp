#include "core/jobs/job.h"

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <chrono>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/runtime/threads.h"

namespace icet::jobs {

void lower_thread_priority() {
#if defined(__linux__)
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 5);
#endif
}

std::string job_state_name(JobState s) {
  switch (s) {
    case JobState::Pending: return "pending";
    case JobState::Running: return "running";
    case JobState::Succeeded: return "succeeded";
    case JobState::Failed: return "failed";
    case JobState::Cancelled: return "cancelled";
  }
  return "unknown";
}

void JobContext::report(const std::string& stage, double fraction) {
  if (sink_) sink_({stage, fraction});
}

Job::Job(std::string name) : name_(std::move(name)) {}

Job::~Job() {
  cancel();
  if (thread_.joinable()) thread_.join();
}

void Job::start(Work work, ProgressListener listener) {
  {
    std::lock_guard lock(mutex_);
    if (state_ != JobState::Pending) {
      throw Error("job '" + name_ + "' was already started");
    }
    state_ = JobState::Running;
  }
  thread_ = std::thread([this, work = std::move(work), listener = std::move(listener)] {
    runtime::init_worker_thread();
    JobContext ctx;
    ctx.cancel_ = cancel_;
    ctx.sink_ = [this, &listener](const Progress& p) {
      {
        std::lock_guard lock(mutex_);
        progress_ = p;
      }
      if (listener) listener(p);
    };
    JobState end = JobState::Succeeded;
    std::string error;
    try {
      work(ctx);
      if (ctx.cancelled()) end = JobState::Cancelled;
    } catch (const Cancelled&) {
      end = JobState::Cancelled;
    } catch (const std::exception& e) {
      end = JobState::Failed;
      error = e.what();
      log::get("jobs")->warn("job '{}' failed: {}", name_, error);
    } catch (...) {
      end = JobState::Failed;
      error = "unknown error";
    }
    {
      std::lock_guard lock(mutex_);
      state_ = end;
      error_ = std::move(error);
    }
    done_.notify_all();
  });
}

void Job::cancel() { cancel_->store(true, std::memory_order_relaxed); }

bool Job::wait(std::optional<double> timeout_seconds) {
  std::unique_lock lock(mutex_);
  auto ended = [this] { return state_ != JobState::Running && state_ != JobState::Pending; };
  if (state_ == JobState::Pending) return true;
  if (timeout_seconds) {
    return done_.wait_for(lock, std::chrono::duration<double>(*timeout_seconds), ended);
  }
  done_.wait(lock, ended);
  return true;
}

JobState Job::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

Progress Job::progress() const {
  std::lock_guard lock(mutex_);
  return progress_;
}

std::string Job::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

}  // namespace icet::jobs
