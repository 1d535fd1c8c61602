#include "ui/evaluation_job.h"

#include <QDir>

#include <algorithm>
#include <mutex>
#include <utility>


#include "core/jobs/job.h"

namespace icet::ui {
namespace {

std::filesystem::path toPath(const QString& s) {
  return std::filesystem::path(s.toStdString());
}

}  // namespace

eval::EvalPlan EvaluationRequest::toPlan() const {
  eval::EvalPlan plan;
  plan.model = toPath(model);
  plan.set = toPath(set);
  if (!judge.trimmed().isEmpty()) {
    plan.judge = toPath(judge.trimmed());
  }
  if (!reward.trimmed().isEmpty()) {
    plan.reward = toPath(reward.trimmed());
  }
  for (const QString& a : adapters) {
    plan.adapters.push_back(toPath(a));
  }
  plan.layers = layers.trimmed().isEmpty() ? std::string("all") : layers.trimmed().toStdString();
  plan.max_new_tokens = maxNewTokens;
  plan.limit = static_cast<size_t>(std::max(0, limit));
  plan.out = toPath(out);
  plan.restart = restart;
  return plan;
}

struct EvaluationJob::Impl {
  Runner runner;
  std::unique_ptr<jobs::Job> job;
  mutable std::mutex mutex;  // guards the fields below (written by the worker, read by the GUI)
  eval::EvalProgress progress;
  std::shared_ptr<const EvaluationResult> result;
};

EvaluationJob::EvaluationJob(QObject* parent, Runner runner) : QObject(parent), d(std::make_unique<Impl>()) {
  setRunner(std::move(runner));
}

EvaluationJob::~EvaluationJob() {
  if (d->job) {
    d->job->cancel();  // the core checks it per answer, so this returns within one answer
    d->job->wait();
  }
}

void EvaluationJob::setRunner(Runner runner) {
  if (!runner) {
    // run_evaluation is overloaded: pick the plan-only form.
    runner = [](const eval::EvalPlan& plan, const eval::EvalProgressCallback& progress,
                const std::atomic<bool>* cancel) { return eval::run_evaluation(plan, progress, cancel); };
  }
  d->runner = std::move(runner);
}

bool EvaluationJob::start(const EvaluationRequest& request, QString* error) {
  const eval::EvalPlan plan = request.toPlan();
  Runner runner = d->runner;  // a copy: setRunner() on the GUI thread must not race the worker
  m_loading = false;
  m_out = QDir::cleanPath(request.out);
  return launch([plan, runner](const eval::EvalProgressCallback& progress, const std::atomic<bool>* cancel) {
    return runner(plan, progress, cancel);
  }, error);
}

bool EvaluationJob::open(const QString& out, QString* error) {
  const std::filesystem::path dir = toPath(out);
  m_loading = true;
  m_out = QDir::cleanPath(out);
  return launch([dir](const eval::EvalProgressCallback&, const std::atomic<bool>*) {
    return eval::load_evaluation(dir);
  }, error);
}

bool EvaluationJob::launch(
    std::function<eval::EvalOutcome(const eval::EvalProgressCallback&, const std::atomic<bool>*)> work,
    QString* error) {
  if (state() == State::Running) {
    if (error != nullptr) {
      *error = tr("An evaluation is still running; stop it first");
    }
    return false;
  }
  d->job.reset();  // ended: joins at once
  m_stopRequested = false;
  {
    std::lock_guard lock(d->mutex);
    d->progress = eval::EvalProgress{};
    d->progress.stage = m_loading ? "loading results" : "starting";
  }
  d->job = std::make_unique<jobs::Job>("eval");
  Impl* impl = d.get();
  d->job->start([impl, work = std::move(work)](jobs::JobContext& ctx) {
    jobs::lower_thread_priority();
    const eval::EvalProgressCallback progress = [impl, &ctx](const eval::EvalProgress& p) {
      std::lock_guard lock(impl->mutex);
      impl->progress = p;
      return !ctx.cancelled();
    };
    const eval::EvalOutcome outcome = work(progress, ctx.cancel_flag());
    // Set before the job reads as Succeeded, so the GUI finds it when it sees the state.
    auto result = std::make_shared<EvaluationResult>();
    result->metrics = outcome.metrics;
    result->summary = eval::eval_summary_json(outcome);
    result->layers = outcome.layers;
    result->defaultLayer = outcome.default_layer;
    result->numLayers = outcome.num_layers;
    result->resumed = outcome.resumed;
    result->seconds = outcome.seconds;
    result->out = outcome.out ? QString::fromStdString(outcome.out->string()) : QString();
    std::lock_guard lock(impl->mutex);
    impl->result = std::move(result);
  });
  return true;
}

void EvaluationJob::stop() {
  if (d->job && state() == State::Running) {
    m_stopRequested = true;
    d->job->cancel();  // atomic flag, set directly: the worker is busy answering
  }
}

EvaluationJob::State EvaluationJob::state() const {
  if (!d->job) {
    return State::Idle;
  }
  switch (d->job->state()) {
    case jobs::JobState::Pending:
    case jobs::JobState::Running: return State::Running;
    case jobs::JobState::Succeeded: return State::Succeeded;
    case jobs::JobState::Failed: return State::Failed;
    case jobs::JobState::Cancelled: return State::Cancelled;
  }
  return State::Idle;
}

QString EvaluationJob::error() const {
  return d->job ? QString::fromStdString(d->job->error()) : QString();
}

eval::EvalProgress EvaluationJob::progress() const {
  std::lock_guard lock(d->mutex);
  return d->progress;
}

std::shared_ptr<const EvaluationResult> EvaluationJob::result() const {
  std::lock_guard lock(d->mutex);
  return d->result;
}

}  // namespace icet::ui
