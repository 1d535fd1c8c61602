#include "ui/training_dashboard.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFutureWatcher>
#include <QtConcurrent/QtConcurrentRun>
#include <QDateTime>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QSlider>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTableWidget>
#include <QTimer>
#include <QToolButton>
#include <QVBoxLayout>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <utility>

#include "core/base/json_util.h"
#include "ui/charts/line_chart.h"
#include "ui/comparison_lab.h"  // demoRoot()

namespace icet::ui {
namespace {

const QString kScores = QStringLiteral("objective/scores");
const QString kRlhf = QStringLiteral("objective/rlhf_reward");
const QString kKl = QStringLiteral("objective/kl");
const QStringList kExtraDefaults = {QStringLiteral("objective/entropy"), QStringLiteral("policy/clipfrac_avg"),
                                    QStringLiteral("loss/value_avg"), QStringLiteral("policy/approxkl_avg")};

QVector<QPointF> ema(const QVector<QPointF>& raw, double alpha) {
  if (alpha <= 0.0 || raw.isEmpty()) {
    return raw;
  }
  QVector<QPointF> out;
  out.reserve(raw.size());
  double acc = raw.front().y();
  for (const QPointF& p : raw) {
    acc = alpha * acc + (1.0 - alpha) * p.y();
    out.push_back({p.x(), acc});
  }
  return out;
}

QString formatEta(double seconds) {
  if (seconds < 0) {
    return QStringLiteral("–");
  }
  const auto s = static_cast<qint64>(seconds);
  if (s >= 3600) {
    return QStringLiteral("%1 h %2 min").arg(s / 3600).arg((s % 3600) / 60);
  }
  if (s >= 60) {
    return QStringLiteral("%1 min %2 s").arg(s / 60).arg(s % 60);
  }
  return QStringLiteral("%1 s").arg(s);
}

}  // namespace

TrainingDashboard::TrainingDashboard(QWidget* parent) : QWidget(parent) {
  setObjectName(QStringLiteral("TrainingDashboard"));
  m_baseConfig = TrainingJob::defaultConfigJson();

  m_rewardChart = new LineChart(this);
  m_rewardChart->setObjectName(QStringLiteral("RewardChart"));
  m_rewardChart->setTitle(tr("Reward"));
  m_rewardChart->setAxisTitles(tr("step"), tr("reward"));
  m_klChart = new LineChart(this);
  m_klChart->setObjectName(QStringLiteral("KlChart"));
  m_klChart->setTitle(tr("KL to the reference"));
  m_klChart->setAxisTitles(tr("step"), tr("KL (nats)"));
  m_extraChart = new LineChart(this);
  m_extraChart->setObjectName(QStringLiteral("ExtraChart"));
  m_extraChart->setTitle(tr("More metrics"));
  m_extraChart->setAxisTitles(tr("step"), tr("value"));
  m_asrChart = new LineChart(this);
  m_asrChart->setObjectName(QStringLiteral("AsrChart"));
  m_asrChart->setTitle(tr("Attack success rate per exit layer (held-out set)"));
  m_asrChart->setAxisTitles(tr("exit layer"), tr("ASR (%)"));
  m_asrChart->setXTicks(1, 1);

  m_metricList = new QListWidget(this);
  m_metricList->setObjectName(QStringLiteral("MetricList"));
  m_metricList->setAccessibleName(tr("Metrics to chart"));
  m_metricList->setToolTip(tr("Tick metrics to show them in the lower chart"));
  m_metricList->setMaximumWidth(220);
  for (const QString& name : kExtraDefaults) {
    auto* item = new QListWidgetItem(name, m_metricList);
    item->setFlags(item->flags() | Qt::ItemIsUserCheckable);
    item->setCheckState(name == kExtraDefaults.front() ? Qt::Checked : Qt::Unchecked);
  }
  connect(m_metricList, &QListWidget::itemChanged, this, [this] { redrawMetrics(); });

  m_smoothing = new QSlider(Qt::Horizontal, this);
  m_smoothing->setObjectName(QStringLiteral("SmoothingSlider"));
  m_smoothing->setRange(0, 99);
  m_smoothing->setValue(0);
  m_smoothing->setAccessibleName(tr("Smoothing"));
  m_smoothing->setToolTip(tr("Exponential moving average of the charted metrics (0 = raw)"));
  connect(m_smoothing, &QSlider::valueChanged, this, [this](int v) {
    m_alpha = v / 100.0;
    redrawMetrics();
  });
  m_log = new QCheckBox(tr("Log axis"), this);
  m_log->setObjectName(QStringLiteral("LogAxis"));
  m_log->setAccessibleName(tr("Logarithmic y axis"));
  connect(m_log, &QCheckBox::toggled, this, &TrainingDashboard::setLogAxis);

  auto* chartControls = new QHBoxLayout;
  chartControls->addWidget(new QLabel(tr("Smoothing"), this));
  chartControls->addWidget(m_smoothing, 1);
  chartControls->addWidget(m_log);

  auto* charts = new QWidget(this);
  auto* grid = new QGridLayout(charts);
  grid->setContentsMargins(0, 0, 0, 0);
  grid->addLayout(chartControls, 0, 0, 1, 2);
  grid->addWidget(m_rewardChart, 1, 0);
  grid->addWidget(m_klChart, 1, 1);
  auto* extraRow = new QHBoxLayout;
  extraRow->addWidget(m_metricList);
  extraRow->addWidget(m_extraChart, 1);
  grid->addLayout(extraRow, 2, 0);
  grid->addWidget(m_asrChart, 2, 1);

  m_samples = new QTableWidget(0, 5, this);
  m_samples->setObjectName(QStringLiteral("SamplesTable"));
  m_samples->setAccessibleName(tr("Sample rollouts"));
  m_samples->setHorizontalHeaderLabels({tr("step"), tr("layer"), tr("prompt"), tr("answer"), tr("reward")});
  m_samples->horizontalHeader()->setSectionResizeMode(2, QHeaderView::Stretch);
  m_samples->horizontalHeader()->setSectionResizeMode(3, QHeaderView::Stretch);
  m_samples->setEditTriggers(QAbstractItemView::NoEditTriggers);
  m_samples->setSelectionBehavior(QAbstractItemView::SelectRows);
  m_samples->setToolTip(tr("Double-click a rollout to open it in the comparison lab"));
  connect(m_samples, &QTableWidget::cellDoubleClicked, this, [this](int row, int) {
    auto text = [this, row](int c) { return m_samples->item(row, c)->text(); };
    Q_EMIT openSample(text(2), text(3), text(1).toInt(), text(4).toDouble(),
                      m_samples->item(row, 0)->data(Qt::UserRole).toString());
  });

  m_jobTable = new QTableWidget(0, 5, this);
  m_jobTable->setObjectName(QStringLiteral("JobTable"));
  m_jobTable->setAccessibleName(tr("Training jobs"));
  m_jobTable->setHorizontalHeaderLabels({tr("run"), tr("status"), tr("progress"), tr("ETA"), tr("device · memory")});
  m_jobTable->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
  m_jobTable->setEditTriggers(QAbstractItemView::NoEditTriggers);
  m_jobTable->setSelectionBehavior(QAbstractItemView::SelectRows);
  m_jobTable->setMaximumHeight(130);

  auto* bottom = new QTabWidget(this);
  bottom->addTab(m_samples, tr("Sample rollouts"));
  bottom->addTab(m_jobTable, tr("Jobs"));

  auto* vsplit = new QSplitter(Qt::Vertical, this);
  vsplit->addWidget(charts);
  vsplit->addWidget(bottom);
  vsplit->setStretchFactor(0, 3);
  vsplit->setStretchFactor(1, 1);

  auto* scroll = new QScrollArea(this);
  scroll->setWidget(buildForm());
  scroll->setWidgetResizable(true);
  scroll->setMinimumWidth(300);
  scroll->setMaximumWidth(380);

  auto* layout = new QHBoxLayout(this);
  layout->setContentsMargins(4, 4, 4, 4);
  layout->addWidget(scroll);
  layout->addWidget(vsplit, 1);

  m_timer = new QTimer(this);
  m_timer->setInterval(40);  // drain the trainer's buffers; one bulk update per series
  connect(m_timer, &QTimer::timeout, this, &TrainingDashboard::poll);
  resetCharts();
}

TrainingDashboard::~TrainingDashboard() {
  for (TrainingJob* job : m_jobs) {
    job->stop();
  }
  // Each TrainingJob's destructor joins its thread (children are deleted by QObject).
}

QWidget* TrainingDashboard::buildForm() {
  auto* w = new QWidget;
  auto* layout = new QVBoxLayout(w);
  auto* box = new QGroupBox(tr("New training job"), w);
  auto* form = new QFormLayout(box);
  nlohmann::json base;
  try {
    base = json_util::parse(m_baseConfig.isEmpty() ? std::string("{}") : m_baseConfig.toStdString(), "training config");
  } catch (const std::exception&) {
    base = nlohmann::json::object();
  }
  auto str = [&base](const char* key, const std::string& def) {
    return QString::fromStdString(base.contains(key) && base[key].is_string() ? base[key].get<std::string>() : def);
  };
  auto num = [&base](const char* key, double def) {
    return base.contains(key) && base[key].is_number() ? base[key].get<double>() : def;
  };
  auto pathRow = [this, box](QLineEdit* edit, const QString& tip, bool folder) {
    edit->setToolTip(tip);
    auto* browse = new QToolButton(box);
    browse->setText(QStringLiteral("…"));
    browse->setAccessibleName(tr("Browse"));
    connect(browse, &QToolButton::clicked, this, [this, edit, folder] {
      const QString p = folder ? QFileDialog::getExistingDirectory(this, tr("Choose folder"))
                               : QFileDialog::getOpenFileName(this, tr("Choose prompt set"), QString(),
                                                              tr("Prompt sets (*.jsonl *.csv)"));
      if (!p.isEmpty()) {
        edit->setText(p);
      }
    });
    auto* row = new QHBoxLayout;
    row->addWidget(edit, 1);
    row->addWidget(browse);
    return row;
  };

  m_model = new QLineEdit(str("model", ""), box);
  m_model->setObjectName(QStringLiteral("TrainModel"));
  m_model->setAccessibleName(tr("Policy model folder"));
  form->addRow(tr("Model"), pathRow(m_model, tr("LLaVA snapshot folder trained with LoRA adapters"), true));
  m_promptSet = new QLineEdit(str("train_set", ""), box);
  m_promptSet->setObjectName(QStringLiteral("TrainPromptSet"));
  m_promptSet->setAccessibleName(tr("Training prompt set"));
  form->addRow(tr("Prompt set"), pathRow(m_promptSet, tr("JSONL/CSV: id, image, prompt, harmful, ..."), false));

  m_method = new QComboBox(box);
  m_method->setAccessibleName(tr("Method"));
  m_method->addItem(tr("L-PPO (layer-wise PPO)"), QStringLiteral("lppo"));
  m_method->addItem(tr("SFT baseline (refusals)"), QStringLiteral("sft"));
  m_method->setCurrentIndex(std::max(0, m_method->findData(str("method", "lppo"))));
  m_method->setToolTip(tr("L-PPO: PPO with rollouts at early exit layers; SFT: supervised refusals"));
  form->addRow(tr("Method"), m_method);

  m_schedule = new QComboBox(box);
  m_schedule->setAccessibleName(tr("Layer schedule"));
  // The trainer's schedule names (core/rl/trainer.h); it reads the old "uniform" as "set".
  m_schedule->addItem(tr("fixed (first layer, as in the paper)"), QStringLiteral("fixed"));
  m_schedule->addItem(tr("set (a listed layer per rollout)"), QStringLiteral("set"));
  m_schedule->addItem(tr("cycle (layers in turn)"), QStringLiteral("cycle"));
  m_schedule->addItem(tr("random (any exit layer; no layers listed)"), QStringLiteral("random"));
  m_schedule->addItem(tr("curriculum (listed layers opened in turn)"), QStringLiteral("curriculum"));
  QString schedule = str("layer_schedule", "set");
  if (schedule == QStringLiteral("uniform")) {
    schedule = QStringLiteral("set");
  }
  m_schedule->setCurrentIndex(std::max(0, m_schedule->findData(schedule)));
  m_schedule->setToolTip(tr("Which exit layer each rollout uses"));
  form->addRow(tr("Layer schedule"), m_schedule);
  QString layers;
  if (base.contains("layers") && base["layers"].is_array()) {
    QStringList parts;
    for (const auto& l : base["layers"]) {
      parts << QString::number(l.get<int64_t>());
    }
    layers = parts.join(QLatin1Char(','));
  }
  m_layers = new QLineEdit(layers, box);
  m_layers->setAccessibleName(tr("Exit layers"));
  m_layers->setPlaceholderText(tr("default layer"));
  m_layers->setToolTip(tr("Exit layers for rollouts, e.g. 1-8 or 3,7,9 (empty: the model's default)"));
  form->addRow(tr("Layers"), m_layers);

  m_lr = new QDoubleSpinBox(box);
  m_lr->setDecimals(7);
  m_lr->setRange(1e-7, 1.0);
  m_lr->setSingleStep(1e-5);
  m_lr->setValue(num("learning_rate", 1e-5));
  m_lr->setAccessibleName(tr("Learning rate"));
  m_lr->setToolTip(tr("AdamW learning rate of the LoRA adapters (default %1)").arg(num("learning_rate", 1e-5)));
  form->addRow(tr("Learning rate"), m_lr);
  m_klCoef = new QDoubleSpinBox(box);
  m_klCoef->setDecimals(3);
  m_klCoef->setRange(0.0, 10.0);
  m_klCoef->setSingleStep(0.05);
  m_klCoef->setValue(num("kl_coef", 0.2));
  m_klCoef->setAccessibleName(tr("KL coefficient"));
  m_klCoef->setToolTip(tr("Initial weight of the per-token KL penalty against the reference model"));
  form->addRow(tr("KL coefficient"), m_klCoef);
  auto intSpin = [box](int lo, int hi, double v, const QString& name, const QString& tip) {
    auto* s = new QSpinBox(box);
    s->setRange(lo, hi);
    s->setValue(static_cast<int>(v));
    s->setAccessibleName(name);
    s->setToolTip(tip);
    return s;
  };
  m_batch = intSpin(1, 4096, num("batch_size", 64), tr("Batch size"), tr("Rollouts per PPO step"));
  form->addRow(tr("Batch size"), m_batch);
  m_epochs = intSpin(1, 64, num("ppo_epochs", 4), tr("PPO epochs"), tr("Optimisation passes over each batch"));
  form->addRow(tr("PPO epochs"), m_epochs);
  m_steps = intSpin(1, 1000000, num("max_steps", 100), tr("Steps"), tr("Training steps (PPO updates)"));
  m_steps->setObjectName(QStringLiteral("TrainSteps"));
  form->addRow(tr("Steps"), m_steps);
  m_loraR = intSpin(1, 1024, num("lora_r", 64), tr("LoRA rank"), tr("Rank of the LoRA adapters"));
  form->addRow(tr("LoRA rank"), m_loraR);
  m_seed = intSpin(0, std::numeric_limits<int>::max(), num("seed", 0), tr("Seed"),
                   tr("Seed of data order, sampling and initialisation"));
  form->addRow(tr("Seed"), m_seed);
  m_threads = intSpin(0, 256, num("threads", 0), tr("CPU threads"),
                      tr("Intra-op CPU threads of the job (0: as the app)"));
  form->addRow(tr("CPU threads"), m_threads);
  // Where the job trains: the frozen model in this precision; adapters and optimizer in float32.
  m_device = new QComboBox(box);
  m_device->setObjectName(QStringLiteral("TrainDevice"));
  m_device->setAccessibleName(tr("Training device"));
  m_device->addItem(tr("CPU"), QStringLiteral("cpu"));
  m_device->addItem(tr("GPU (CUDA)"), QStringLiteral("cuda"));
  m_device->addItem(tr("Auto (GPU when available)"), QStringLiteral("auto"));
  m_device->setCurrentIndex(std::max(0, m_device->findData(QString::fromStdString(base.value("device", "cpu")))));
  form->addRow(tr("Device"), m_device);
  m_dtype = new QComboBox(box);
  m_dtype->setObjectName(QStringLiteral("TrainDtype"));
  m_dtype->setAccessibleName(tr("Precision of the frozen model"));
  m_dtype->setToolTip(tr("Precision of the frozen base model (LoRA, value head and optimizer stay float32)"));
  m_dtype->addItem(QStringLiteral("float32"), QStringLiteral("float32"));
  m_dtype->addItem(QStringLiteral("bfloat16"), QStringLiteral("bfloat16"));
  m_dtype->addItem(tr("float16 (GPU)"), QStringLiteral("float16"));
  m_dtype->setCurrentIndex(std::max(0, m_dtype->findData(QString::fromStdString(base.value("dtype", "float32")))));
  form->addRow(tr("Precision"), m_dtype);
  m_checkpointing = new QCheckBox(tr("Gradient checkpointing"), box);
  m_checkpointing->setObjectName(QStringLiteral("TrainCheckpointing"));
  m_checkpointing->setToolTip(tr("Recompute each layer in the backward pass: less memory, about a third more time"));
  m_checkpointing->setChecked(base.value("gradient_checkpointing", false));
  form->addRow(QString(), m_checkpointing);
  m_memoryEstimate = new QLabel(box);
  m_memoryEstimate->setObjectName(QStringLiteral("TrainMemoryEstimate"));
  m_memoryEstimate->setWordWrap(true);
  m_memoryEstimate->setAccessibleName(tr("Memory estimate"));
  form->addRow(tr("Memory"), m_memoryEstimate);
  m_estimateTimer = new QTimer(this);
  m_estimateTimer->setSingleShot(true);
  m_estimateTimer->setInterval(300);
  connect(m_estimateTimer, &QTimer::timeout, this, &TrainingDashboard::updateMemoryEstimate);
  m_estimateWatcher = new QFutureWatcher<QStringList>(this);
  connect(m_estimateWatcher, &QFutureWatcher<QStringList>::finished, this, [this] {
    const QStringList r = m_estimateWatcher->result();
    const bool fits = r.value(1) == QStringLiteral("fits");
    m_memoryEstimate->setText(r.value(1) == QStringLiteral("error") ? QString() : tr("Needs ") + r.value(0).mid(6));
    m_memoryEstimate->setToolTip(r.value(1) == QStringLiteral("error") ? r.value(0) : QString());
    m_memoryEstimate->setStyleSheet(fits || r.value(1) == QStringLiteral("error") ? QString()
                                                                                   : QStringLiteral("color: #b3261e;"));
  });
  for (QComboBox* c : {m_device, m_dtype}) {
    connect(c, &QComboBox::currentIndexChanged, this, &TrainingDashboard::scheduleMemoryEstimate);
  }
  connect(m_checkpointing, &QCheckBox::toggled, this, &TrainingDashboard::scheduleMemoryEstimate);
  connect(m_batch, &QSpinBox::valueChanged, this, &TrainingDashboard::scheduleMemoryEstimate);
  connect(m_loraR, &QSpinBox::valueChanged, this, &TrainingDashboard::scheduleMemoryEstimate);
  connect(m_model, &QLineEdit::textChanged, this, &TrainingDashboard::scheduleMemoryEstimate);
  scheduleMemoryEstimate();
  const QString runs =
      QStandardPaths::writableLocation(QStandardPaths::AppLocalDataLocation) + QStringLiteral("/runs");
  m_runDir = new QLineEdit(box);
  m_runDir->setObjectName(QStringLiteral("TrainRunDir"));
  m_runDir->setAccessibleName(tr("Run folder"));
  m_runDir->setPlaceholderText(runs + QStringLiteral("/<time>"));
  form->addRow(tr("Run folder"), pathRow(m_runDir, tr("Where checkpoints, metrics and the adapter go"), true));
  layout->addWidget(box);

  m_start = new QPushButton(QIcon(QStringLiteral(":/icons/run.svg")), tr("Start"), w);
  m_start->setObjectName(QStringLiteral("TrainStart"));
  m_stop = new QPushButton(QIcon(QStringLiteral(":/icons/stop.svg")), tr("Stop"), w);
  m_stop->setObjectName(QStringLiteral("TrainStop"));
  m_resume = new QPushButton(QIcon(QStringLiteral(":/icons/regenerate.svg")), tr("Resume"), w);
  m_resume->setObjectName(QStringLiteral("TrainResume"));
  m_resume->setToolTip(tr("Continue the stopped job from its last checkpoint (or pick a run folder)"));
  m_loadAdapter = new QPushButton(tr("Compare with adapter in the lab"), w);
  m_loadAdapter->setObjectName(QStringLiteral("LoadAdapter"));
  m_loadAdapter->setToolTip(tr("Before and after: a new lab pane answers with the run's latest LoRA adapter, "
                               "next to the base model at the same layer"));
  m_story = new QPushButton(QIcon(QStringLiteral(":/icons/run.svg")), tr("Run the demo story"), w);
  m_story->setObjectName(QStringLiteral("RunStory"));
  m_story->setToolTip(tr("In one go: train the default L-PPO adapter on the demo world, then show a harmful "
                         "example answered by the base model and by the adapter side by side at an early "
                         "layer, and the sweep of both"));
  connect(m_story, &QPushButton::clicked, this, [this] {
    if (storyRunning()) {
      m_storyJob->stop();
    } else {
      runStory();
    }
  });
  for (QPushButton* b : {m_start, m_stop, m_resume, m_loadAdapter, m_story}) {
    b->setAccessibleName(b->text());
  }
  m_stop->setEnabled(false);
  connect(m_start, &QPushButton::clicked, this, [this] { startJob(); });
  connect(m_stop, &QPushButton::clicked, this, &TrainingDashboard::stopJob);
  connect(m_resume, &QPushButton::clicked, this, [this] {
    if (m_current == nullptr || m_current->state() == TrainingJob::State::Running) {
      const QString dir = QFileDialog::getExistingDirectory(this, tr("Resume run folder"));
      if (!dir.isEmpty()) {
        resumeJob(dir);
      }
    } else {
      resumeJob();
    }
  });
  connect(m_loadAdapter, &QPushButton::clicked, this, [this] {
    const QString dir = m_current != nullptr ? m_current->adapterDir() : QString();
    if (dir.isEmpty()) {
      error(tr("No adapter yet: it is written at the job's first checkpoint"));
      return;
    }
    Q_EMIT loadAdapterRequested(dir, m_current->modelPath());
  });
  auto* loadConfig = new QPushButton(tr("Load config file…"), w);
  loadConfig->setAccessibleName(tr("Load training config file"));
  loadConfig->setToolTip(tr("Start the form from a config JSON (e.g. models/demo/lppo.json)"));
  connect(loadConfig, &QPushButton::clicked, this, [this] {
    const QString f = QFileDialog::getOpenFileName(this, tr("Training config"), QString(), tr("JSON (*.json)"));
    if (!f.isEmpty()) {
      loadConfigFile(f);
    }
  });
  layout->addWidget(m_story);
  layout->addWidget(loadConfig);
  auto* buttons = new QHBoxLayout;
  buttons->addWidget(m_start);
  buttons->addWidget(m_stop);
  buttons->addWidget(m_resume);
  layout->addLayout(buttons);
  layout->addWidget(m_loadAdapter);
  layout->addStretch(1);
  return w;
}

void TrainingDashboard::setModelPath(const QString& dir) {
  m_model->setText(dir);
}
void TrainingDashboard::setPromptSet(const QString& file) {
  m_promptSet->setText(file);
}
void TrainingDashboard::setMaxSteps(int steps) {
  m_steps->setValue(steps);
}
void TrainingDashboard::setRunDir(const QString& dir) {
  m_runDir->setText(dir);
}
void TrainingDashboard::setThreads(int threads) {
  m_threads->setValue(threads);
}

void TrainingDashboard::setStoryConfig(const QString& path) {
  m_storyConfig = path;
}

bool TrainingDashboard::runStory() {
  if (storyRunning()) {
    return false;
  }
  const QString config =
      !m_storyConfig.isEmpty() ? m_storyConfig
      : demoRoot().isEmpty()   ? QString()
                               : demoRoot() + QStringLiteral("/lppo.json");
  if (config.isEmpty() || !QFileInfo(config).isFile()) {
    error(tr("The story needs the demo world (models/demo/lppo.json): run `icet demo build` first"));
    return false;
  }
  if (!loadConfigFile(config)) {
    return false;
  }
  if (QFileInfo::exists(m_runDir->text().trimmed())) {
    m_runDir->clear();  // never resume or refuse an old run: a fresh, timestamped one
  }
  if (!startJob()) {
    return false;
  }
  m_storyJob = m_current;
  m_story->setText(tr("Stop the story"));
  Q_EMIT message(MessageBar::Information,
                 tr("The story: training the adapter (%1 steps), then the lab shows before and after")
                     .arg(m_current->maxSteps()));
  return true;
}

void TrainingDashboard::endStory(TrainingJob::State state) {
  TrainingJob* job = std::exchange(m_storyJob, nullptr);
  m_story->setText(tr("Run the demo story"));
  if (state != TrainingJob::State::Succeeded || job->adapterDir().isEmpty()) {
    Q_EMIT message(MessageBar::Information, tr("The story stopped with the training job"));
    return;
  }
  // The judge and reward model the story's own run used (its config.json, paths absolute), not
  // whatever the form shows now.
  nlohmann::json j = nlohmann::json::object();
  try {
    j = json_util::read_file(std::filesystem::path(job->runDir().toStdString()) / "config.json");
  } catch (const std::exception&) {
    j = nlohmann::json::object();
  }
  auto path = [&j](const char* key) {
    return QString::fromStdString(j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string());
  };
  Q_EMIT storyReady(job->adapterDir(), job->modelPath(), path("judge"), path("reward_model"));
}

bool TrainingDashboard::setBaseConfig(const QString& json) {
  QString problem;
  const QString normalized = TrainingJob::validateConfig(json, tr("training config"), &problem);
  if (normalized.isEmpty()) {
    error(tr("Invalid training config: %1").arg(problem));
    return false;
  }
  m_baseConfig = normalized;
  fillForm();
  return true;
}

bool TrainingDashboard::loadConfigFile(const QString& path) {
  // Relative paths in the file (model, sets, judges) are relative to its folder.
  QString problem;
  const QString json = TrainingJob::loadConfigFile(path, &problem);
  if (json.isEmpty()) {
    error(tr("Cannot read the training config %1: %2").arg(path, problem));
    return false;
  }
  return setBaseConfig(json);
}

void TrainingDashboard::fillForm() {
  nlohmann::json base;
  try {
    base = json_util::parse(m_baseConfig.toStdString(), "training config");
  } catch (const std::exception&) {
    return;
  }
  auto str = [&base](const char* key) {
    return QString::fromStdString(base.contains(key) && base[key].is_string() ? base[key].get<std::string>()
                                                                              : std::string());
  };
  auto num = [&base](const char* key, double def) {
    return base.contains(key) && base[key].is_number() ? base[key].get<double>() : def;
  };
  m_model->setText(str("model"));
  m_promptSet->setText(str("train_set"));
  m_method->setCurrentIndex(std::max(0, m_method->findData(str("method"))));
  m_schedule->setCurrentIndex(std::max(0, m_schedule->findData(str("layer_schedule"))));
  QStringList parts;
  if (base.contains("layers") && base["layers"].is_array()) {
    for (const auto& l : base["layers"]) {
      parts << QString::number(l.get<int64_t>());
    }
  }
  m_layers->setText(parts.join(QLatin1Char(',')));
  m_lr->setValue(num("learning_rate", m_lr->value()));
  m_klCoef->setValue(num("kl_coef", m_klCoef->value()));
  m_batch->setValue(static_cast<int>(num("batch_size", m_batch->value())));
  m_epochs->setValue(static_cast<int>(num("ppo_epochs", m_epochs->value())));
  m_steps->setValue(static_cast<int>(num("max_steps", m_steps->value())));
  m_loraR->setValue(static_cast<int>(num("lora_r", m_loraR->value())));
  m_seed->setValue(static_cast<int>(num("seed", m_seed->value())));
  m_threads->setValue(static_cast<int>(num("threads", m_threads->value())));
  auto pick = [&base](QComboBox* combo, const char* key) {
    if (base.contains(key) && base[key].is_string()) {
      combo->setCurrentIndex(std::max(0, combo->findData(QString::fromStdString(base[key].get<std::string>()))));
    }
  };
  pick(m_device, "device");
  pick(m_dtype, "dtype");
  if (base.contains("gradient_checkpointing") && base["gradient_checkpointing"].is_boolean()) {
    m_checkpointing->setChecked(base["gradient_checkpointing"].get<bool>());
  }
  scheduleMemoryEstimate();
}

void TrainingDashboard::scheduleMemoryEstimate() {
  if (m_estimateTimer != nullptr) {
    m_estimateTimer->start();
  }
}

void TrainingDashboard::updateMemoryEstimate() {
  if (m_estimateWatcher->isRunning()) {
    m_estimateTimer->start();  // the newest form wins; try again when this one is done
    return;
  }
  // Reads config.json and the safetensors headers: off the GUI thread (a sharded 7B model).
  const QString json = configJson();
  m_estimateWatcher->setFuture(QtConcurrent::run([json] {
    bool fits = true;
    QString problem;
    const QString text = TrainingJob::estimateMemory(json, &fits, &problem);
    return QStringList{text.isEmpty() ? problem : text, text.isEmpty() ? QStringLiteral("error")
                                                     : fits          ? QStringLiteral("fits")
                                                                     : QStringLiteral("too big")};
  }));
}

QString TrainingDashboard::configJson() const {
  nlohmann::json j;
  try {
    j = json_util::parse(m_baseConfig.isEmpty() ? std::string("{}") : m_baseConfig.toStdString(), "training config");
  } catch (const std::exception&) {
    j = nlohmann::json::object();
  }
  j["model"] = m_model->text().trimmed().toStdString();
  j["train_set"] = m_promptSet->text().trimmed().toStdString();
  j["method"] = m_method->currentData().toString().toStdString();
  j["layer_schedule"] = m_schedule->currentData().toString().toStdString();
  nlohmann::json layers = nlohmann::json::array();
  for (const QString& part : m_layers->text().split(QLatin1Char(','), Qt::SkipEmptyParts)) {
    const QStringList range = part.trimmed().split(QLatin1Char('-'));
    const int a = range.value(0).toInt();
    const int b = range.size() > 1 ? range.value(1).toInt() : a;
    for (int l = a; l <= b && a > 0; ++l) {
      layers.push_back(l);
    }
  }
  j["layers"] = layers;
  j["learning_rate"] = m_lr->value();
  j["kl_coef"] = m_klCoef->value();
  j["batch_size"] = m_batch->value();
  j["ppo_epochs"] = m_epochs->value();
  j["max_steps"] = m_steps->value();
  j["lora_r"] = m_loraR->value();
  j["seed"] = m_seed->value();
  j["threads"] = m_threads->value();
  j["device"] = m_device->currentData().toString().toStdString();
  j["dtype"] = m_dtype->currentData().toString().toStdString();
  j["gradient_checkpointing"] = m_checkpointing->isChecked();
  return QString::fromStdString(j.dump(2));
}

void TrainingDashboard::error(const QString& text) {
  Q_EMIT message(MessageBar::Error, text);
}

void TrainingDashboard::resetCharts() {
  m_raw.clear();
  m_evals.clear();
  m_rewardChart->clear();
  m_klChart->clear();
  m_extraChart->clear();
  m_asrChart->clear();
  m_samples->setRowCount(0);
  redrawMetrics();  // creates the (empty) series now, so live updates only replace points
}

bool TrainingDashboard::startJob() {
  // Checks a user can act on at once; the trainer checks the rest when it loads.
  const QString set = m_promptSet->text().trimmed();
  const QFileInfo setInfo(set);
  if (set.isEmpty() || !setInfo.isFile() || !setInfo.isReadable()) {
    error(tr("Cannot read the prompt set %1").arg(set.isEmpty() ? tr("(none chosen)") : set));
    return false;
  }
  if (!QFileInfo(m_model->text().trimmed() + QStringLiteral("/config.json")).isFile()) {
    error(tr("%1 is not a model folder (no config.json)").arg(m_model->text()));
    return false;
  }
  QString problem;
  const QString json = TrainingJob::validateConfig(configJson(), tr("training form"), &problem);
  if (json.isEmpty()) {
    error(tr("Invalid training settings: %1").arg(problem));
    return false;
  }
  QString dir = m_runDir->text().trimmed();
  if (dir.isEmpty()) {
    dir = QStandardPaths::writableLocation(QStandardPaths::AppLocalDataLocation) + QStringLiteral("/runs/") +
          QDateTime::currentDateTime().toString(QStringLiteral("yyyyMMdd-HHmmss"));
  }
  QDir().mkpath(QFileInfo(dir).absolutePath());
  auto* job = new TrainingJob(this);
  if (!job->start(json, dir, &problem)) {
    delete job;
    error(tr("Cannot start training: %1").arg(problem));
    return false;
  }
  m_jobs.push_back(job);
  m_current = job;
  resetCharts();
  m_jobTable->insertRow(m_jobTable->rowCount());
  updateJobRow(m_jobTable->rowCount() - 1, job, job->state());
  m_stop->setEnabled(true);
  m_timer->start();
  Q_EMIT message(MessageBar::Information, tr("Training started in %1").arg(dir));
  return true;
}

void TrainingDashboard::stopJob() {
  if (m_current != nullptr) {
    m_current->stop();
    Q_EMIT message(MessageBar::Information, tr("Stopping after the current step…"));
  }
}

bool TrainingDashboard::resumeJob(const QString& dir) {
  QString problem;
  TrainingJob* job = nullptr;
  if (dir.isEmpty() && m_current != nullptr) {
    if (m_current->state() == TrainingJob::State::Running) {
      error(tr("The job is still running"));
      return false;
    }
    job = m_current;
    if (!job->resume(job->runDir(), &problem)) {
      error(tr("Cannot resume: %1").arg(problem));
      return false;
    }
  } else {
    job = new TrainingJob(this);
    if (!job->resume(dir, &problem)) {
      delete job;
      error(tr("Cannot resume %1: %2").arg(dir, problem));
      return false;
    }
    m_jobs.push_back(job);
    m_jobTable->insertRow(m_jobTable->rowCount());
    resetCharts();
  }
  m_current = job;
  m_stop->setEnabled(true);
  m_timer->start();
  Q_EMIT message(MessageBar::Information, tr("Training resumed from %1").arg(job->runDir()));
  return true;
}

void TrainingDashboard::poll() {
  // States first, then the buffers: a job seen as ended has already pushed all its rows.
  bool running = false;
  for (size_t i = 0; i < m_jobs.size(); ++i) {
    TrainingJob* job = m_jobs[i];
    const TrainingJob::State before =
        static_cast<TrainingJob::State>(m_jobTable->item(static_cast<int>(i), 1) != nullptr
                                            ? m_jobTable->item(static_cast<int>(i), 1)->data(Qt::UserRole).toInt()
                                            : 0);
    const TrainingJob::State now = job->state();
    updateJobRow(static_cast<int>(i), job, now);
    if (now == TrainingJob::State::Running || now == TrainingJob::State::Pending) {
      running = true;  // a job still loading keeps the timer going too
    } else if (before == TrainingJob::State::Running || before == TrainingJob::State::Pending) {
      if (now == TrainingJob::State::Failed) {
        error(tr("Training failed: %1").arg(job->error()));
      } else if (now == TrainingJob::State::Cancelled) {
        Q_EMIT message(MessageBar::Information, tr("Training stopped at step %1").arg(job->step()));
      } else if (now == TrainingJob::State::Succeeded) {
        Q_EMIT message(MessageBar::Information, tr("Training finished (%1 steps)").arg(job->step()));
      }
      if (job == m_storyJob) {
        endStory(now);
      }
    }
  }
  if (m_current != nullptr) {
    for (const TrainingMetric& m : m_current->drainMetrics()) {
      for (auto it = m.values.cbegin(); it != m.values.cend(); ++it) {
        auto& series = m_raw[it.key()];
        // A resumed run replays nothing: drop points at or after the resume step, if any.
        while (!series.isEmpty() && series.back().x() >= static_cast<double>(m.step)) {
          series.pop_back();
        }
        series.push_back({static_cast<double>(m.step), it.value()});
        if (m_metricList->findItems(it.key(), Qt::MatchExactly).isEmpty() && it.key() != kScores &&
            it.key() != kRlhf && it.key() != kKl) {
          const QSignalBlocker block(m_metricList);  // a new name changes no chart
          auto* item = new QListWidgetItem(it.key(), m_metricList);
          item->setFlags(item->flags() | Qt::ItemIsUserCheckable);
          item->setCheckState(Qt::Unchecked);
        }
      }
      m_dirty = true;
    }
    const auto samples = m_current->drainSamples();
    if (!samples.isEmpty()) {
      m_samples->setUpdatesEnabled(false);
      for (const TrainingSample& s : samples) {
        const int row = m_samples->rowCount();
        m_samples->insertRow(row);
        auto* stepItem = new QTableWidgetItem(QString::number(s.step));
        stepItem->setData(Qt::UserRole, s.image);
        m_samples->setItem(row, 0, stepItem);
        m_samples->setItem(row, 1, new QTableWidgetItem(QString::number(s.layer)));
        m_samples->setItem(row, 2, new QTableWidgetItem(s.prompt));
        m_samples->setItem(row, 3, new QTableWidgetItem(s.answer));
        m_samples->setItem(row, 4, new QTableWidgetItem(QString::number(s.reward, 'f', 3)));
      }
      while (m_samples->rowCount() > 500) {  // keep the table light
        m_samples->removeRow(0);
      }
      m_samples->setUpdatesEnabled(true);
    }
    const auto evals = m_current->drainEvals();
    if (!evals.isEmpty()) {
      m_evals += evals;
      redrawAsr();
    }
    if (m_dirty) {
      redrawMetrics();
    }
  }
  if (m_current != nullptr && m_current->state() == TrainingJob::State::Running) {
    const qint64 max = std::max<qint64>(1, m_current->maxSteps());
    Q_EMIT progressChanged(static_cast<int>(100 * m_current->step() / max),
                           tr("Training %1/%2 · %3").arg(m_current->step()).arg(max).arg(m_current->stage()));
  } else {
    Q_EMIT progressChanged(-1, QString());
  }
  m_stop->setEnabled(running);
  if (!running) {
    m_timer->stop();
  }
}

void TrainingDashboard::updateJobRow(int row, TrainingJob* job, TrainingJob::State state) {
  if (row < 0 || row >= m_jobTable->rowCount()) {
    return;
  }
  auto set = [this, row](int col, const QString& text) {
    QTableWidgetItem* item = m_jobTable->item(row, col);
    if (item == nullptr) {
      item = new QTableWidgetItem;
      m_jobTable->setItem(row, col, item);
    }
    if (item->text() != text) {
      item->setText(text);
    }
    return item;
  };
  set(0, QFileInfo(job->runDir()).fileName())->setToolTip(job->runDir());
  QTableWidgetItem* status = set(1, TrainingJob::stateName(state, job->stopRequested()));
  status->setData(Qt::UserRole, static_cast<int>(state));
  status->setToolTip(job->error());
  auto* bar = qobject_cast<QProgressBar*>(m_jobTable->cellWidget(row, 2));
  if (bar == nullptr) {
    bar = new QProgressBar(m_jobTable);
    bar->setAccessibleName(tr("Job progress"));
    m_jobTable->setCellWidget(row, 2, bar);
  }
  bar->setRange(0, static_cast<int>(std::max<qint64>(1, job->maxSteps())));
  bar->setValue(static_cast<int>(job->step()));
  bar->setFormat(QStringLiteral("%v/%m"));
  set(3, state == TrainingJob::State::Running ? formatEta(job->etaSeconds()) : QStringLiteral("–"));
  set(4, job->memoryText());
}

void TrainingDashboard::redrawMetrics() {
  m_dirty = false;
  m_rewardChart->setSeries(kScores, ema(m_raw.value(kScores), m_alpha), QColor(40, 110, 200));
  m_rewardChart->setSeries(kRlhf, ema(m_raw.value(kRlhf), m_alpha), QColor(60, 160, 90));
  m_klChart->setSeries(kKl, ema(m_raw.value(kKl), m_alpha), QColor(200, 80, 40));
  for (int i = 0; i < m_metricList->count(); ++i) {
    QListWidgetItem* item = m_metricList->item(i);
    if (item->checkState() == Qt::Checked) {
      m_extraChart->setSeries(item->text(), ema(m_raw.value(item->text()), m_alpha));
    } else {
      m_extraChart->removeSeries(item->text());
    }
  }
}

void TrainingDashboard::redrawAsr() {
  if (m_evals.isEmpty()) {
    return;
  }
  auto points = [](const TrainingEval& e) {
    QVector<QPointF> pts;
    for (auto it = e.asrByLayer.cbegin(); it != e.asrByLayer.cend(); ++it) {
      pts.push_back({static_cast<double>(it.key()), 100.0 * it.value()});  // core reports fractions
    }
    return pts;
  };
  m_asrChart->setSeries(tr("before (step %1)").arg(m_evals.front().step), points(m_evals.front()),
                        QColor(150, 150, 150), true, true);
  if (m_evals.size() > 1) {
    // One "now" series, renamed as it moves: drop the old name first.
    for (const QString& name : m_asrChart->seriesNames()) {
      if (name.startsWith(tr("now"))) {
        m_asrChart->removeSeries(name);
      }
    }
    m_asrChart->setSeries(tr("now (step %1)").arg(m_evals.back().step), points(m_evals.back()),
                          QColor(200, 40, 40), true);
  }
}

void TrainingDashboard::setSmoothing(double alpha) {
  m_smoothing->setValue(static_cast<int>(std::lround(std::clamp(alpha, 0.0, 0.99) * 100)));
}

void TrainingDashboard::setLogAxis(bool on) {
  if (m_log->isChecked() != on) {
    m_log->setChecked(on);  // re-enters through toggled
    return;
  }
  m_rewardChart->setLogY(on);
  m_klChart->setLogY(on);
  m_extraChart->setLogY(on);
}

bool TrainingDashboard::exportMetricsCsv(const QString& path) {
  if (m_current == nullptr) {
    error(tr("No training job to export"));
    return false;
  }
  QString problem;
  if (!TrainingJob::exportMetricsCsv(m_current->runDir(), path, &problem)) {
    error(tr("Cannot export metrics: %1").arg(problem));
    return false;
  }
  Q_EMIT message(MessageBar::Information, tr("Metrics saved to %1").arg(path));
  return true;
}

}  // namespace icet::ui
