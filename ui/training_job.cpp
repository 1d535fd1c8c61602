#include "ui/training_job.h"

#include <QDir>
#include <QFileInfo>

#include <mutex>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "core/jobs/job.h"
#include "ui/comparison_lab.h"  // demoRoot()

#if __has_include("core/rl/trainer.h")
#include "core/rl/trainer.h"
#define ICET_UI_HAS_RL 1
#endif

namespace icet::ui {

struct TrainingJob::Impl {
  std::unique_ptr<jobs::Job> job;
  std::atomic<bool> stopRequested{false};
  mutable std::mutex mutex;  // guards the progress fields below
  QString stage;
  qint64 step = 0;
  qint64 maxSteps = 0;
  double eta = -1;
#ifdef ICET_UI_HAS_RL
  std::shared_ptr<rl::TrainingRun> run;
#endif
};

bool TrainingJob::available() {
#ifdef ICET_UI_HAS_RL
  return true;
#else
  return false;
#endif
}

QString TrainingJob::defaultConfigJson() {
#ifdef ICET_UI_HAS_RL
  const QString root = demoRoot();
  const QString file = root + QStringLiteral("/lppo.json");
  if (root.isEmpty() || !QFileInfo(file).isFile()) {
    return QString::fromStdString(rl::to_json(rl::LppoConfig{}).dump(2));
  }
  try {
    return QString::fromStdString(rl::to_json(rl::load_config(file.toStdString())).dump(2));
  } catch (const std::exception&) {
    return QString::fromStdString(rl::to_json(rl::LppoConfig{}).dump(2));
  }
#else
  return QString();
#endif
}

QString TrainingJob::validateConfig(const QString& json, const QString& source, QString* error) {
#ifdef ICET_UI_HAS_RL
  try {
    const auto cfg = rl::config_from_json(nlohmann::json::parse(json.toStdString()), source.toStdString());
    rl::validate(cfg, source.toStdString());
    return QString::fromStdString(rl::to_json(cfg).dump(2));
  } catch (const std::exception& e) {
    if (error != nullptr) {
      *error = QString::fromUtf8(e.what());
    }
    return QString();
  }
#else
  Q_UNUSED(json);
  Q_UNUSED(source);
  if (error != nullptr) {
    *error = tr("this build has no L-PPO trainer");
  }
  return QString();
#endif
}

bool TrainingJob::exportMetricsCsv(const QString& runDir, const QString& csvPath, QString* error) {
#ifdef ICET_UI_HAS_RL
  try {
    rl::export_metrics_csv(QDir(runDir).filePath(QStringLiteral("metrics.jsonl")).toStdString(),
                           csvPath.toStdString());
    return true;
  } catch (const std::exception& e) {
    if (error != nullptr) {
      *error = QString::fromUtf8(e.what());
    }
    return false;
  }
#else
  Q_UNUSED(runDir);
  Q_UNUSED(csvPath);
  if (error != nullptr) {
    *error = tr("this build has no L-PPO trainer");
  }
  return false;
#endif
}

TrainingJob::TrainingJob(QObject* parent) : QObject(parent), d(std::make_unique<Impl>()) {}

TrainingJob::~TrainingJob() {
  if (d->job) {
    d->job->cancel();
    d->job->wait();
  }
}

bool TrainingJob::start(const QString& configJson, const QString& runDir, QString* error, qint64 maxSteps) {
  m_runDir = runDir;
  return launch(false, configJson, error, maxSteps);
}

bool TrainingJob::resume(const QString& runDir, QString* error, qint64 maxSteps) {
  m_runDir = runDir;
  return launch(true, QString(), error, maxSteps);
}

bool TrainingJob::launch(bool resume, const QString& configJson, QString* error, qint64 maxSteps) {
#ifdef ICET_UI_HAS_RL
  if (d->job) {
    d->job->cancel();
    d->job->wait();
    d->job.reset();
  }
  d->stopRequested = false;
  std::shared_ptr<rl::TrainingRun> run;
  try {
    // Both only read/write small JSON files: safe on the GUI thread; models load in run().
    if (resume) {
      run = rl::TrainingRun::resume(m_runDir.toStdString());
    } else {
      const auto cfg =
          rl::config_from_json(nlohmann::json::parse(configJson.toStdString()), "training form");
      run = rl::TrainingRun::create(cfg, m_runDir.toStdString());
    }
    if (maxSteps > 0) {
      run->set_max_steps(maxSteps);
    }
  } catch (const std::exception& e) {
    if (error != nullptr) {
      *error = QString::fromUtf8(e.what());
    }
    return false;
  }
  {
    std::lock_guard lock(d->mutex);
    d->run = run;
    d->stage = tr("starting");
    d->step = run->step();
    d->maxSteps = run->max_steps();
    d->eta = -1;
  }
  d->job = std::make_unique<jobs::Job>("train");
  Impl* impl = d.get();
  d->job->start([impl, run](jobs::JobContext& ctx) {
#if defined(__linux__)
    // Background work yields to the GUI thread when cores are scarce (nice +5 for this thread).
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 5);
#endif
    run->run(ctx.cancel_flag(), [impl](const rl::TrainProgress& p) {
      std::lock_guard lock(impl->mutex);
      impl->stage = QString::fromStdString(p.stage);
      impl->step = p.step;
      impl->maxSteps = p.max_steps;
      impl->eta = p.eta_seconds;
    });
  });
  return true;
#else
  Q_UNUSED(resume);
  Q_UNUSED(configJson);
  Q_UNUSED(maxSteps);
  if (error != nullptr) {
    *error = tr("this build has no L-PPO trainer");
  }
  return false;
#endif
}

void TrainingJob::stop() {
  if (d->job) {
    d->stopRequested = true;
    d->job->cancel();  // atomic flag; the run checkpoints its last finished step and returns
  }
}

TrainingJob::State TrainingJob::state() const {
  if (!d->job) {
    return State::Pending;
  }
  switch (d->job->state()) {
    case jobs::JobState::Pending: return State::Pending;
    case jobs::JobState::Running: return State::Running;
    case jobs::JobState::Failed: return State::Failed;
    case jobs::JobState::Cancelled: return State::Cancelled;
    case jobs::JobState::Succeeded: return d->stopRequested ? State::Cancelled : State::Succeeded;
  }
  return State::Pending;
}

bool TrainingJob::stopRequested() const {
  return d->stopRequested.load();
}

QString TrainingJob::stateName() const {
  return stateName(state(), stopRequested());
}

QString TrainingJob::stateName(State state, bool stopping) {
  switch (state) {
    case State::Pending: return tr("pending");
    case State::Running: return stopping ? tr("stopping") : tr("running");
    case State::Succeeded: return tr("finished");
    case State::Failed: return tr("failed");
    case State::Cancelled: return tr("stopped");
  }
  return QString();
}

QString TrainingJob::error() const {
  return d->job ? QString::fromStdString(d->job->error()) : QString();
}

QString TrainingJob::stage() const {
  std::lock_guard lock(d->mutex);
  return d->stage;
}

qint64 TrainingJob::step() const {
#ifdef ICET_UI_HAS_RL
  std::lock_guard lock(d->mutex);
  return d->run ? d->run->step() : d->step;
#else
  return 0;
#endif
}

qint64 TrainingJob::maxSteps() const {
  std::lock_guard lock(d->mutex);
  return d->maxSteps;
}

double TrainingJob::etaSeconds() const {
  std::lock_guard lock(d->mutex);
  return d->eta;
}

QString TrainingJob::adapterDir() const {
  const QString dir = QDir(m_runDir).filePath(QStringLiteral("adapter"));
  return QFileInfo(dir + QStringLiteral("/adapter_config.json")).isFile() ? dir : QString();
}

QString TrainingJob::metricsFile() const {
  return QDir(m_runDir).filePath(QStringLiteral("metrics.jsonl"));
}

QVector<TrainingMetric> TrainingJob::drainMetrics() {
  QVector<TrainingMetric> out;
#ifdef ICET_UI_HAS_RL
  std::shared_ptr<rl::TrainingRun> run;
  {
    std::lock_guard lock(d->mutex);
    run = d->run;
  }
  if (!run) {
    return out;
  }
  for (const auto& row : run->drain_metrics()) {
    TrainingMetric m;
    m.step = row.step;
    m.seconds = row.seconds;
    for (const auto& [k, v] : row.values) {
      m.values.insert(QString::fromStdString(k), v);
    }
    out.push_back(std::move(m));
  }
#endif
  return out;
}

QVector<TrainingSample> TrainingJob::drainSamples() {
  QVector<TrainingSample> out;
#ifdef ICET_UI_HAS_RL
  std::shared_ptr<rl::TrainingRun> run;
  {
    std::lock_guard lock(d->mutex);
    run = d->run;
  }
  if (!run) {
    return out;
  }
  for (const auto& s : run->drain_samples()) {
    out.push_back({s.step, static_cast<int>(s.layer), QString::fromStdString(s.image),
                   QString::fromStdString(s.prompt), QString::fromStdString(s.answer), s.reward});
  }
#endif
  return out;
}

QVector<TrainingEval> TrainingJob::drainEvals() {
  QVector<TrainingEval> out;
#ifdef ICET_UI_HAS_RL
  std::shared_ptr<rl::TrainingRun> run;
  {
    std::lock_guard lock(d->mutex);
    run = d->run;
  }
  if (!run) {
    return out;
  }
  for (const auto& e : run->drain_evals()) {
    TrainingEval t;
    t.step = e.step;
    for (const auto& [l, v] : e.asr_by_layer) {
      t.asrByLayer.insert(static_cast<int>(l), v);
    }
    t.benignAccuracy = e.benign_accuracy;
    out.push_back(std::move(t));
  }
#endif
  return out;
}

}  // namespace icet::ui
