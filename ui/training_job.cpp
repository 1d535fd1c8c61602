#include "ui/training_job.h"

#include <QDir>
#include <QFileInfo>

#include <chrono>
#include <mutex>
#include <thread>
#include <utility>


#include "core/base/json_util.h"
#include "core/jobs/job.h"
#include "ui/comparison_lab.h"  // demoRoot()

#include "core/rl/memory.h"
#include "core/rl/trainer.h"

namespace icet::ui {

struct TrainingJob::Impl {
  std::unique_ptr<jobs::Job> job;
  std::atomic<bool> stopRequested{false};
  mutable std::mutex mutex;  // guards the progress fields below
  QString stage;
  qint64 step = 0;
  qint64 maxSteps = 0;
  double eta = -1;
  // Rows collected from the trainer by the collector thread, taken by the GUI.
  QVector<TrainingMetric> metrics;
  QVector<TrainingSample> samples;
  QVector<TrainingEval> evals;
  std::thread collector;
  std::atomic<bool> collecting{false};
  std::atomic<bool> collected{true};  // the collector has taken the ended job's last rows
  std::shared_ptr<rl::TrainingRun> run;
  // The trainer's drains may wait while it writes its logs: a collector thread takes that wait,
  // so the GUI only ever locks `mutex` for a copy.
  void collect(rl::TrainingRun& r) {
    auto m = r.drain_metrics();
    auto s = r.drain_samples();
    auto e = r.drain_evals();
    if (m.empty() && s.empty() && e.empty()) {
      return;
    }
    std::lock_guard lock(mutex);
    for (const auto& row : m) {
      TrainingMetric t;
      t.step = row.step;
      t.seconds = row.seconds;
      for (const auto& [k, v] : row.values) {
        t.values.insert(QString::fromStdString(k), v);
      }
      metrics.push_back(std::move(t));
    }
    for (const auto& x : s) {
      samples.push_back({x.step, static_cast<int>(x.layer), QString::fromStdString(x.image),
                         QString::fromStdString(x.prompt), QString::fromStdString(x.answer), x.reward});
    }
    for (const auto& x : e) {
      TrainingEval t;
      t.step = x.step;
      for (const auto& [l, v] : x.asr_by_layer) {
        t.asrByLayer.insert(static_cast<int>(l), v);
      }
      t.benignAccuracy = x.benign_accuracy;
      evals.push_back(std::move(t));
    }
  }
  void stopCollector() {
    collecting = false;
    if (collector.joinable()) {
      collector.join();
    }
  }
};

QString TrainingJob::defaultConfigJson() {
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
}

QString TrainingJob::validateConfig(const QString& json, const QString& source, QString* error) {
  try {
    const auto cfg = rl::config_from_json(json_util::parse(json.toStdString(), source.toStdString()), source.toStdString());
    rl::validate(cfg, source.toStdString());
    return QString::fromStdString(rl::to_json(cfg).dump(2));
  } catch (const std::exception& e) {
    if (error != nullptr) {
      *error = QString::fromUtf8(e.what());
    }
    return QString();
  }
}

QString TrainingJob::estimateMemory(const QString& configJson, bool* fits, QString* error) {
  try {
    const auto cfg =
        rl::config_from_json(json_util::parse(configJson.toStdString(), "training form"), "training form");
    const rl::MemoryEstimate e = rl::estimate_training_memory(cfg);
    if (fits != nullptr) {
      *fits = e.fits();
    }
    return QString::fromStdString(rl::memory_summary(e));
  } catch (const std::exception& e) {
    if (error != nullptr) {
      *error = QString::fromUtf8(e.what());
    }
    return QString();
  }
}

QString TrainingJob::loadConfigFile(const QString& path, QString* error) {
  try {
    const auto cfg = rl::load_config(path.toStdString());
    rl::validate(cfg, path.toStdString());
    return QString::fromStdString(rl::to_json(cfg).dump(2));
  } catch (const std::exception& e) {
    if (error != nullptr) {
      *error = QString::fromUtf8(e.what());
    }
    return QString();
  }
}

bool TrainingJob::exportMetricsCsv(const QString& runDir, const QString& csvPath, QString* error) {
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
}

TrainingJob::TrainingJob(QObject* parent) : QObject(parent), d(std::make_unique<Impl>()) {}

TrainingJob::~TrainingJob() {
  if (d->job) {
    d->job->cancel();
    d->job->wait();
  }
  d->stopCollector();
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
  if (d->job) {
    d->job->cancel();
    d->job->wait();
    d->job.reset();
  }
  d->stopCollector();
  d->stopRequested = false;
  std::shared_ptr<rl::TrainingRun> run;
  try {
    // Both only read/write small JSON files: safe on the GUI thread; models load in run().
    if (resume) {
      run = rl::TrainingRun::resume(m_runDir.toStdString());
    } else {
      const auto cfg =
          rl::config_from_json(json_util::parse(configJson.toStdString(), "training form"), "training form");
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
    jobs::lower_thread_priority();
    run->run(ctx.cancel_flag(), [impl](const rl::TrainProgress& p) {
      std::lock_guard lock(impl->mutex);
      impl->stage = QString::fromStdString(p.stage);
      impl->step = p.step;
      impl->maxSteps = p.max_steps;
      impl->eta = p.eta_seconds;
    });
  });
  d->collecting = true;
  d->collected = false;
  jobs::Job* job = d->job.get();
  d->collector = std::thread([impl, run, job] {
    for (;;) {
      const auto state = job->state();
      const bool ended = state != jobs::JobState::Pending && state != jobs::JobState::Running;
      impl->collect(*run);  // after reading the state: an ended job has pushed everything
      if (ended || !impl->collecting) {
        impl->collected = true;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(40));
    }
  });
  return true;
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
  const jobs::JobState js = d->job->state();
  if (js != jobs::JobState::Pending && js != jobs::JobState::Running && !d->collected) {
    return State::Running;  // ended, but its last rows are still on their way to the GUI
  }
  switch (js) {
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
  std::lock_guard lock(d->mutex);
  return d->run ? d->run->step() : d->step;
}

QString TrainingJob::memoryText() const {
  std::shared_ptr<rl::TrainingRun> run;
  {
    std::lock_guard lock(d->mutex);
    run = d->run;
  }
  if (!run) {
    return QString();
  }
  // The estimate the run made before loading (device and dtype resolved); the GPU's live figure
  // is in the status bar.
  if (const auto e = run->memory_estimate()) {
    return tr("%1 · %2 · est. %3 GiB")
        .arg(QString::fromStdString(e->device), QString::fromStdString(e->dtype))
        .arg(e->total_gib, 0, 'f', 1);
  }
  return QStringLiteral("%1 · %2").arg(QString::fromStdString(run->config().device),
                                       QString::fromStdString(run->config().dtype));
}

QString TrainingJob::modelPath() const {
  std::lock_guard lock(d->mutex);
  return d->run ? QString::fromStdString(d->run->config().model.string()) : QString();
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
  std::lock_guard lock(d->mutex);
  return std::exchange(d->metrics, {});
}

QVector<TrainingSample> TrainingJob::drainSamples() {
  std::lock_guard lock(d->mutex);
  return std::exchange(d->samples, {});
}

QVector<TrainingEval> TrainingJob::drainEvals() {
  std::lock_guard lock(d->mutex);
  return std::exchange(d->evals, {});
}

}  // namespace icet::ui
