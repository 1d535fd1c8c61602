#pragma once

// Long work (load, generate, sweep, train, eval) as a job: runs on its own thread, reports
// progress, honours an atomic cancel flag, and ends with a value or a typed error. Qt-free:
// the UI wraps a Job in a thin QObject adapter and polls or forwards its progress.

#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace icet::jobs {

// Background work yields to the GUI thread when cores are scarce: nice +5 for the calling
// thread (Linux; nothing elsewhere). Called first thing in a job's work function.
void lower_thread_priority();

enum class JobState { Pending, Running, Succeeded, Failed, Cancelled };
std::string job_state_name(JobState s);

struct Progress {
  std::string stage;   // "loading weights", "generating", ...
  double fraction = 0.0;  // 0..1, or < 0 when unknown
};

// Handed to the work function.
class JobContext {
 public:
  // True once cancel() was called; long loops check it (or pass cancel_flag() down).
  bool cancelled() const { return cancel_->load(std::memory_order_relaxed); }
  const std::atomic<bool>* cancel_flag() const { return cancel_.get(); }
  void report(const std::string& stage, double fraction);

 private:
  friend class Job;
  std::shared_ptr<std::atomic<bool>> cancel_;
  std::function<void(const Progress&)> sink_;
};

// One job. The destructor cancels and joins, so a job never outlives what it works on.
class Job {
 public:
  using Work = std::function<void(JobContext&)>;
  using ProgressListener = std::function<void(const Progress&)>;  // called on the job's thread

  explicit Job(std::string name);
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // Starts `work` on a new thread (once). The thread is set up for torch work (intra-op
  // thread count). An icet::Cancelled thrown by the work ends in Cancelled, any other
  // exception in Failed with its message kept.
  void start(Work work, ProgressListener listener = {});
  void cancel();
  // Blocks until the job ends (or the timeout passes); true when it has ended.
  bool wait(std::optional<double> timeout_seconds = std::nullopt);

  const std::string& name() const { return name_; }
  JobState state() const;
  Progress progress() const;
  std::string error() const;  // the failure message, when Failed

 private:
  std::string name_;
  std::shared_ptr<std::atomic<bool>> cancel_ = std::make_shared<std::atomic<bool>>(false);
  mutable std::mutex mutex_;
  std::condition_variable done_;
  JobState state_ = JobState::Pending;
  Progress progress_;
  std::string error_;
  std::thread thread_;
};

}  // namespace icet::jobs
