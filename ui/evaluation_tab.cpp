#include "ui/evaluation_tab.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDesktopServices>
#include <QDir>
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
#include <QRegularExpression>
#include <QScrollArea>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardPaths>
#include <QTableWidget>
#include <QTimer>
#include <QToolButton>
#include <QUrl>
#include <QVBoxLayout>

#include <algorithm>
#include <climits>
#include <cmath>
#include <iterator>

#include "core/eval/report.h"
#include "ui/charts/line_chart.h"
#include "ui/comparison_lab.h"  // demoRoot()

namespace icet::ui {
namespace {

// Column titles of the per-layer table (the unit is part of the title, not of each cell).
QString shortLabel(eval::Metric m) {
  switch (m) {
    case eval::Metric::asr: return EvaluationTab::tr("ASR %");
    case eval::Metric::refusal: return EvaluationTab::tr("Refusal %");
    case eval::Metric::over_refusal: return EvaluationTab::tr("Over-refusal %");
    case eval::Metric::accuracy: return EvaluationTab::tr("Accuracy %");
    case eval::Metric::reward: return EvaluationTab::tr("Mean reward");
  }
  return QString();
}

bool isRate(eval::Metric m) {
  return m != eval::Metric::reward;
}

// One colour per run, in run order (base first), as report.html draws them.
QColor runColor(size_t i) {
  static const QColor colors[] = {QColor(0x1f, 0x77, 0xb4), QColor(0xd6, 0x27, 0x28), QColor(0x2c, 0xa0, 0x2c),
                                  QColor(0x94, 0x67, 0xbd), QColor(0xff, 0x7f, 0x0e), QColor(0x17, 0xbe, 0xcf)};
  return colors[i % std::size(colors)];
}

QTableWidgetItem* cell(const QString& text, const QString& tip = QString()) {
  auto* item = new QTableWidgetItem(text);
  item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
  item->setToolTip(tip);
  return item;
}

QString answersTip(const eval::Estimate& e) {
  return EvaluationTab::tr("%n answer(s)", nullptr, static_cast<int>(e.n));
}

}  // namespace

QString EvaluationTab::formatEstimate(const eval::Estimate& e, eval::Metric m, bool signedValue) {
  if (!e.measured() || !std::isfinite(e.value)) {
    return QStringLiteral("—");
  }
  // As report.html: rates in percent with one decimal, rewards with three.
  const double scale = isRate(m) ? 100.0 : 1.0;
  const int decimals = isRate(m) ? 1 : 3;
  auto num = [&](double v, bool sign) {
    const QString s = QString::number(scale * v, 'f', decimals);
    return sign && scale * v >= 0 ? QStringLiteral("+") + s : s;
  };
  QString s = num(e.value, signedValue);
  if (std::isfinite(e.lo) && std::isfinite(e.hi)) {
    s += QStringLiteral(" [%1, %2]").arg(num(e.lo, false), num(e.hi, false));
  }
  return s;
}

QString EvaluationTab::formatEta(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) {
    return QStringLiteral("--:--");
  }
  const auto s = static_cast<qint64>(std::llround(seconds));
  const QString mmss = QStringLiteral("%1:%2").arg((s / 60) % 60, 2, 10, QLatin1Char('0')).arg(s % 60, 2, 10, QLatin1Char('0'));
  return s >= 3600 ? QStringLiteral("%1:%2").arg(s / 3600).arg(mmss) : mmss;
}

EvaluationTab::EvaluationTab(QWidget* parent) : QWidget(parent) {
  setObjectName(QStringLiteral("EvaluationTab"));
  m_job = new EvaluationJob(this);
  m_messages = new MessageBar(this);

  auto* scroll = new QScrollArea(this);
  scroll->setWidget(buildForm());
  scroll->setWidgetResizable(true);
  scroll->setMinimumWidth(300);
  scroll->setMaximumWidth(400);

  auto* body = new QHBoxLayout;
  body->addWidget(scroll);
  body->addWidget(buildResults(), 1);
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(4, 4, 4, 4);
  layout->addWidget(m_messages);
  layout->addLayout(body, 1);

  m_timer = new QTimer(this);
  m_timer->setInterval(100);  // progress only: the results arrive once, when the job ends
  connect(m_timer, &QTimer::timeout, this, &EvaluationTab::poll);
  updateButtons();
}

EvaluationTab::~EvaluationTab() {
  m_timer->stop();
  // The job (a child) cancels and joins in its destructor: within one answer.
  m_job->stop();
}

QWidget* EvaluationTab::buildForm() {
  auto* w = new QWidget;
  auto* layout = new QVBoxLayout(w);
  auto* box = new QGroupBox(tr("Evaluation"), w);
  auto* form = new QFormLayout(box);
  enum class Browse { Folder, SetFile };
  auto pathRow = [this, box](QLineEdit* edit, const QString& name, const QString& tip, Browse kind) {
    edit->setObjectName(name);
    edit->setToolTip(tip);
    edit->setClearButtonEnabled(true);
    auto* browse = new QToolButton(box);
    browse->setText(QStringLiteral("…"));
    browse->setObjectName(name + QStringLiteral("Browse"));
    browse->setAccessibleName(tr("Browse"));
    connect(browse, &QToolButton::clicked, this, [this, edit, kind] {
      const QString p = kind == Browse::Folder
                            ? QFileDialog::getExistingDirectory(this, tr("Choose folder"), edit->text())
                            : QFileDialog::getOpenFileName(this, tr("Choose prompt set"), edit->text(),
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

  const QString demo = demoRoot();
  auto demoPath = [&demo](const QString& rel, const QString& mustExist) {
    return !demo.isEmpty() && QFileInfo::exists(demo + rel + mustExist) ? demo + rel : QString();
  };

  m_model = new QLineEdit(demoPath(QStringLiteral("/vlm"), QStringLiteral("/config.json")), box);
  m_model->setAccessibleName(tr("Model folder"));
  form->addRow(tr("Model"), pathRow(m_model, QStringLiteral("EvalModel"), tr("VLM snapshot folder (Hugging Face layout)"),
                                    Browse::Folder));
  m_set = new QLineEdit(demoPath(QStringLiteral("/sets/heldout.jsonl"), QString()), box);
  m_set->setAccessibleName(tr("Prompt set"));
  form->addRow(tr("Prompt set"), pathRow(m_set, QStringLiteral("EvalSet"),
                                         tr("JSONL/CSV: id, image, prompt, harmful, ... (`icet import` writes them)"),
                                         Browse::SetFile));
  m_judge = new QLineEdit(box);
  m_judge->setAccessibleName(tr("Judge folder"));
  m_judge->setPlaceholderText(tr("guard/ beside the model"));
  form->addRow(tr("Judge"), pathRow(m_judge, QStringLiteral("EvalJudge"),
                                    tr("Llama Guard folder, or \"placeholder\"; empty: guard/ beside the model "
                                       "(without one, ASR is not measured)"),
                                    Browse::Folder));
  m_reward = new QLineEdit(demoPath(QStringLiteral("/reward"), QStringLiteral("/config.json")), box);
  m_reward->setAccessibleName(tr("Reward model folder"));
  m_reward->setPlaceholderText(tr("none"));
  form->addRow(tr("Reward model"), pathRow(m_reward, QStringLiteral("EvalReward"),
                                           tr("Reward-model folder for the mean reward; empty: not measured"),
                                           Browse::Folder));

  m_adapters = new QListWidget(box);
  m_adapters->setObjectName(QStringLiteral("EvalAdapters"));
  m_adapters->setAccessibleName(tr("Adapter folders"));
  m_adapters->setToolTip(tr("LoRA adapters (PEFT folders), each answered beside the base model"));
  m_adapters->setMaximumHeight(80);
  auto* addAdapter = new QToolButton(box);
  addAdapter->setIcon(QIcon(QStringLiteral(":/icons/add.svg")));
  addAdapter->setObjectName(QStringLiteral("EvalAddAdapter"));
  addAdapter->setAccessibleName(tr("Add adapter"));
  addAdapter->setToolTip(tr("Add an adapter folder"));
  connect(addAdapter, &QToolButton::clicked, this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("LoRA adapter folder (PEFT)"));
    if (!dir.isEmpty() && m_adapters->findItems(dir, Qt::MatchExactly).isEmpty()) {
      m_adapters->addItem(dir);
    }
  });
  auto* removeAdapter = new QToolButton(box);
  removeAdapter->setIcon(QIcon(QStringLiteral(":/icons/remove.svg")));
  removeAdapter->setObjectName(QStringLiteral("EvalRemoveAdapter"));
  removeAdapter->setAccessibleName(tr("Remove adapter"));
  removeAdapter->setToolTip(tr("Remove the selected adapter"));
  connect(removeAdapter, &QToolButton::clicked, this, [this] { delete m_adapters->currentItem(); });
  auto* adapterButtons = new QVBoxLayout;
  adapterButtons->addWidget(addAdapter);
  adapterButtons->addWidget(removeAdapter);
  adapterButtons->addStretch(1);
  auto* adapterRow = new QHBoxLayout;
  adapterRow->addWidget(m_adapters, 1);
  adapterRow->addLayout(adapterButtons);
  form->addRow(tr("Adapters"), adapterRow);

  m_layers = new QLineEdit(QStringLiteral("all"), box);
  m_layers->setObjectName(QStringLiteral("EvalLayers"));
  m_layers->setAccessibleName(tr("Exit layers"));
  m_layers->setToolTip(tr("\"all\", a range such as 1-12, or a list such as 3,7,9"));
  form->addRow(tr("Layers"), m_layers);
  m_maxTokens = new QSpinBox(box);
  m_maxTokens->setObjectName(QStringLiteral("EvalMaxTokens"));
  m_maxTokens->setAccessibleName(tr("Maximum new tokens"));
  m_maxTokens->setRange(1, 4096);
  m_maxTokens->setValue(48);
  m_maxTokens->setToolTip(tr("Greedy answers up to this many tokens"));
  form->addRow(tr("Max new tokens"), m_maxTokens);
  m_limit = new QSpinBox(box);
  m_limit->setObjectName(QStringLiteral("EvalLimit"));
  m_limit->setAccessibleName(tr("Item limit"));
  m_limit->setRange(0, 100000000);
  m_limit->setSpecialValueText(tr("all"));
  m_limit->setToolTip(tr("Evaluate the first N items of the set (all: every item)"));
  form->addRow(tr("Limit"), m_limit);

  m_autoOut = defaultOutputDir(m_set->text());
  m_out = new QLineEdit(m_autoOut, box);
  m_out->setAccessibleName(tr("Output folder"));
  form->addRow(tr("Output"), pathRow(m_out, QStringLiteral("EvalOut"),
                                     tr("answers.jsonl, metrics.json/csv, answers.csv and report.html; "
                                        "Start resumes the answers already there"),
                                     Browse::Folder));
  // A folder the user typed stays; the proposed one follows the prompt set.
  connect(m_set, &QLineEdit::textChanged, this, [this](const QString& set) {
    if (m_out->text() == m_autoOut) {
      m_autoOut = defaultOutputDir(set);
      m_out->setText(m_autoOut);
    }
  });
  m_restart = new QCheckBox(tr("Restart (discard previous answers)"), box);
  m_restart->setObjectName(QStringLiteral("EvalRestart"));
  m_restart->setToolTip(tr("Unticked, Start continues the answer log in the output folder"));
  form->addRow(m_restart);
  layout->addWidget(box);

  m_start = new QPushButton(QIcon(QStringLiteral(":/icons/run.svg")), tr("Start"), w);
  m_start->setObjectName(QStringLiteral("EvalStart"));
  connect(m_start, &QPushButton::clicked, this, [this] { startEvaluation(); });
  m_stop = new QPushButton(QIcon(QStringLiteral(":/icons/stop.svg")), tr("Stop"), w);
  m_stop->setObjectName(QStringLiteral("EvalStop"));
  m_stop->setToolTip(tr("Stops after the current answer; Start resumes"));
  connect(m_stop, &QPushButton::clicked, this, &EvaluationTab::stopEvaluation);
  m_open = new QPushButton(QIcon(QStringLiteral(":/icons/open.svg")), tr("Open results…"), w);
  m_open->setObjectName(QStringLiteral("EvalOpen"));
  m_open->setToolTip(tr("Recompute the tables from an output folder's answers.jsonl (no model needed)"));
  connect(m_open, &QPushButton::clicked, this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Evaluation output folder"), m_out->text());
    if (!dir.isEmpty()) {
      openResults(dir);
    }
  });
  m_export = new QPushButton(QIcon(QStringLiteral(":/icons/export.svg")), tr("Export CSV…"), w);
  m_export->setObjectName(QStringLiteral("EvalExportCsv"));
  connect(m_export, &QPushButton::clicked, this, [this] {
    const QString file = QFileDialog::getSaveFileName(this, tr("Export metrics"), QStringLiteral("metrics.csv"),
                                                      tr("CSV (*.csv)"));
    if (!file.isEmpty()) {
      exportCsv(file);
    }
  });
  m_report = new QPushButton(tr("Open HTML report"), w);
  m_report->setObjectName(QStringLiteral("EvalOpenReport"));
  connect(m_report, &QPushButton::clicked, this, &EvaluationTab::openReport);

  auto* run = new QHBoxLayout;
  run->addWidget(m_start);
  run->addWidget(m_stop);
  layout->addLayout(run);
  layout->addWidget(m_open);
  auto* exports = new QHBoxLayout;
  exports->addWidget(m_export);
  exports->addWidget(m_report);
  layout->addLayout(exports);
  m_progress = new QProgressBar(w);
  m_progress->setObjectName(QStringLiteral("EvalProgress"));
  m_progress->setAccessibleName(tr("Evaluation progress"));
  m_progress->setRange(0, 1);
  m_progress->setValue(0);
  m_progress->setFormat(tr("idle"));
  layout->addWidget(m_progress);
  layout->addStretch(1);
  return w;
}

QWidget* EvaluationTab::buildResults() {
  auto* w = new QWidget(this);
  m_metric = new QComboBox(w);
  m_metric->setObjectName(QStringLiteral("EvalMetric"));
  m_metric->setAccessibleName(tr("Metric to chart"));
  for (eval::Metric m : eval::kMetrics) {
    m_metric->addItem(QString::fromUtf8(eval::metric_label(m)), static_cast<int>(m));
  }
  connect(m_metric, &QComboBox::currentIndexChanged, this, [this] { redrawMetric(); });

  m_chart = new LineChart(w);
  m_chart->setObjectName(QStringLiteral("EvalChart"));
  m_chart->setXTicks(1, 1);
  m_chart->setMinimumHeight(220);

  m_groupTable = new QTableWidget(0, 0, w);
  m_groupTable->setObjectName(QStringLiteral("EvalGroupTable"));
  m_groupTable->setAccessibleName(tr("Metric by layer group"));
  m_layerTable = new QTableWidget(0, 0, w);
  m_layerTable->setObjectName(QStringLiteral("EvalLayerTable"));
  m_layerTable->setAccessibleName(tr("Metrics by exit layer"));
  for (QTableWidget* t : {m_groupTable, m_layerTable}) {
    t->setEditTriggers(QAbstractItemView::NoEditTriggers);
    t->setSelectionBehavior(QAbstractItemView::SelectRows);
    t->verticalHeader()->setVisible(false);
  }

  auto* metricRow = new QHBoxLayout;
  metricRow->addWidget(new QLabel(tr("Metric"), w));
  metricRow->addWidget(m_metric);
  metricRow->addStretch(1);
  auto* top = new QWidget(w);
  auto* topLayout = new QVBoxLayout(top);
  topLayout->setContentsMargins(0, 0, 0, 0);
  topLayout->addLayout(metricRow);
  topLayout->addWidget(m_chart, 1);
  auto* split = new QSplitter(Qt::Vertical, w);
  split->addWidget(top);
  split->addWidget(m_groupTable);
  split->addWidget(m_layerTable);
  split->setStretchFactor(0, 3);
  split->setStretchFactor(1, 1);
  split->setStretchFactor(2, 2);
  auto* layout = new QVBoxLayout(w);
  layout->setContentsMargins(0, 0, 0, 0);
  layout->addWidget(split);
  return w;
}

QString EvaluationTab::defaultOutputDir(const QString& set) const {
  // The app's data folder, not next to the set: the demo sets live in the (read-only) install.
  const QString stem = QFileInfo(set).completeBaseName();
  return QStandardPaths::writableLocation(QStandardPaths::AppLocalDataLocation) + QStringLiteral("/evaluations/eval-") +
         (stem.isEmpty() ? QStringLiteral("set") : stem);
}

void EvaluationTab::setRunner(EvaluationJob::Runner runner) {
  m_job->setRunner(std::move(runner));
}
void EvaluationTab::setModelPath(const QString& dir) {
  m_model->setText(dir);
}
void EvaluationTab::setPromptSet(const QString& file) {
  m_set->setText(file);
}
void EvaluationTab::setJudgePath(const QString& dir) {
  m_judge->setText(dir);
}
void EvaluationTab::setRewardPath(const QString& dir) {
  m_reward->setText(dir);
}
void EvaluationTab::setAdapters(const QStringList& dirs) {
  m_adapters->clear();
  m_adapters->addItems(dirs);
}
void EvaluationTab::setLayers(const QString& spec) {
  m_layers->setText(spec);
}
void EvaluationTab::setMaxNewTokens(int tokens) {
  m_maxTokens->setValue(tokens);
}
void EvaluationTab::setLimit(int items) {
  m_limit->setValue(items);
}
void EvaluationTab::setOutputDir(const QString& dir) {
  m_out->setText(dir);
}
void EvaluationTab::setRestart(bool on) {
  m_restart->setChecked(on);
}

EvaluationRequest EvaluationTab::request() const {
  EvaluationRequest r;
  r.model = m_model->text().trimmed();
  r.set = m_set->text().trimmed();
  r.judge = m_judge->text().trimmed();
  r.reward = m_reward->text().trimmed();
  for (int i = 0; i < m_adapters->count(); ++i) {
    r.adapters << m_adapters->item(i)->text();
  }
  r.layers = m_layers->text().trimmed();
  r.maxNewTokens = m_maxTokens->value();
  r.limit = m_limit->value();
  r.out = m_out->text().trimmed();
  r.restart = m_restart->isChecked();
  return r;
}

void EvaluationTab::message(MessageBar::Kind kind, const QString& text) {
  m_messages->showMessage(kind, text);
}

bool EvaluationTab::startEvaluation() {
  const EvaluationRequest r = request();
  auto fail = [this](const QString& text) {
    message(MessageBar::Error, text);
    return false;
  };
  // Checks a user can act on at once; the core checks the rest (layer range, set rows, weights)
  // on the worker and the failure shows here when the job ends.
  if (m_job->state() == EvaluationJob::State::Running) {
    return fail(tr("An evaluation is still running: stop it first"));
  }
  const QFileInfo set(r.set);
  if (r.set.isEmpty() || !set.isFile() || !set.isReadable()) {
    return fail(tr("Cannot read the prompt set %1: choose a .jsonl or .csv file (`icet import` writes them)")
                    .arg(r.set.isEmpty() ? tr("(none chosen)") : r.set));
  }
  if (!QFileInfo(r.model + QStringLiteral("/config.json")).isFile()) {
    return fail(tr("%1 is not a model folder (no config.json)").arg(r.model.isEmpty() ? tr("(none chosen)") : r.model));
  }
  if (!r.judge.isEmpty() && r.judge != QStringLiteral("placeholder") && !QFileInfo(r.judge).isDir()) {
    return fail(tr("The judge folder %1 does not exist (leave it empty for guard/ beside the model)").arg(r.judge));
  }
  if (!r.reward.isEmpty() && !QFileInfo(r.reward + QStringLiteral("/config.json")).isFile()) {
    return fail(tr("%1 is not a reward-model folder (no config.json)").arg(r.reward));
  }
  for (const QString& a : r.adapters) {
    if (!QFileInfo(a + QStringLiteral("/adapter_config.json")).isFile()) {
      return fail(tr("%1 is not a LoRA adapter folder (no adapter_config.json)").arg(a));
    }
  }
  static const QRegularExpression layers(QStringLiteral(R"(^(all|\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*)$)"));
  if (!layers.match(r.layers).hasMatch()) {
    return fail(tr("Layers must be \"all\", a range such as 1-12 or a list such as 3,7,9 (got \"%1\")").arg(r.layers));
  }
  if (r.out.isEmpty()) {
    return fail(tr("Choose an output folder for the answers and the report"));
  }
  if (QFileInfo(r.out).exists() && !QFileInfo(r.out).isDir()) {
    return fail(tr("The output %1 is a file, not a folder").arg(r.out));
  }
  const bool resuming = !r.restart && QFileInfo::exists(QDir(r.out).filePath(QString::fromLatin1(eval::kAnswerLogName)));
  QString problem;
  if (!m_job->start(r, &problem)) {
    return fail(tr("Cannot start the evaluation: %1").arg(problem));
  }
  // The discard was asked for once: Start after a Stop must resume this run, not wipe it again
  // (a failed start ticks it again, see poll()).
  m_restartAsked = r.restart;
  m_restart->setChecked(false);
  m_result.reset();
  m_layerTable->setRowCount(0);
  m_groupTable->setRowCount(0);
  m_chart->clear();
  m_seen = EvaluationJob::State::Running;
  message(MessageBar::Information, resuming ? tr("Evaluation resumed from the answers in %1").arg(r.out)
                                            : tr("Evaluation started; results go to %1").arg(r.out));
  m_timer->start();  // before the first poll, which stops it when the job has already ended
  poll();
  return true;
}

void EvaluationTab::stopEvaluation() {
  if (m_job->state() == EvaluationJob::State::Running) {
    m_job->stop();
    message(MessageBar::Information, tr("Stopping after the current answer…"));
    updateButtons();
  }
}

bool EvaluationTab::openResults(const QString& dir) {
  if (!QFileInfo::exists(QDir(dir).filePath(QString::fromLatin1(eval::kAnswerLogName)))) {
    message(MessageBar::Error, tr("%1 holds no %2: choose an evaluation output folder")
                                   .arg(dir, QString::fromLatin1(eval::kAnswerLogName)));
    return false;
  }
  QString problem;
  if (!m_job->open(dir, &problem)) {
    message(MessageBar::Error, tr("Cannot open results: %1").arg(problem));
    return false;
  }
  m_seen = EvaluationJob::State::Running;
  m_timer->start();
  poll();
  return true;
}

QString EvaluationTab::progressText() const {
  return m_progress->format();
}

void EvaluationTab::poll() {
  const EvaluationJob::State state = m_job->state();
  const eval::EvalProgress p = m_job->progress();
  const QString stage = QString::fromStdString(p.stage);
  if (p.total > 0) {
    const int total = static_cast<int>(std::min<size_t>(p.total, INT_MAX));
    m_progress->setRange(0, total);
    m_progress->setValue(static_cast<int>(std::min<size_t>(p.done, INT_MAX)));
    m_progress->setFormat(tr("%1: %2/%3, %4 resumed, ETA %5")
                              .arg(stage)
                              .arg(p.done)
                              .arg(p.total)
                              .arg(p.resumed)
                              .arg(formatEta(p.eta_s)));
  } else if (state == EvaluationJob::State::Running) {
    m_progress->setRange(0, 0);  // busy: loading models, nothing counted yet
    m_progress->setFormat(stage);
  }
  if (state == EvaluationJob::State::Running || m_seen != EvaluationJob::State::Running) {
    updateButtons();
    return;
  }
  // The job ended since the last tick: report it once.
  m_timer->stop();
  m_seen = state;
  const bool loading = m_job->loading();
  if (m_progress->maximum() == 0) {
    m_progress->setRange(0, 1);
  }
  if (state == EvaluationJob::State::Succeeded) {
    const auto result = m_job->result();
    if (result) {
      showResult(result);
    }
    m_progress->setValue(m_progress->maximum());
    if (!loading && p.total > 0) {
      m_progress->setFormat(tr("finished: %1/%2, %3 resumed").arg(p.total).arg(p.total).arg(p.resumed));
    } else if (loading) {
      m_progress->setFormat(tr("results loaded"));
    }
    if (loading) {
      message(MessageBar::Information, tr("Results loaded from %1").arg(m_job->out()));
    } else {
      message(MessageBar::Information, tr("Evaluation finished in %1 s (%2 answers resumed); report in %3")
                                           .arg(result ? result->seconds : 0.0, 0, 'f', 1)
                                           .arg(result ? result->resumed : 0)
                                           .arg(m_job->out()));
    }
  } else if (state == EvaluationJob::State::Cancelled) {
    const QString at = p.total > 0 ? tr(" at %1/%2 answers").arg(p.done).arg(p.total) : QString();
    m_progress->setFormat(tr("stopped%1").arg(at));
    message(MessageBar::Information, tr("Evaluation stopped%1; Start resumes from the log in %2").arg(at, m_job->out()));
  } else {
    m_progress->setFormat(tr("failed"));
    if (!loading && m_restartAsked) {
      m_restart->setChecked(true);  // e.g. a wrong judge folder: the retry still discards
    }
    message(MessageBar::Error, loading ? tr("Cannot open the results in %1: %2").arg(m_job->out(), m_job->error())
                                       : tr("Evaluation failed: %1").arg(m_job->error()));
  }
  updateButtons();
  Q_EMIT evaluationFinished(state == EvaluationJob::State::Succeeded);
}

void EvaluationTab::updateButtons() {
  const bool running = m_job->state() == EvaluationJob::State::Running;
  m_start->setEnabled(!running);
  m_open->setEnabled(!running);
  m_stop->setEnabled(running && !m_job->stopRequested() && !m_job->loading());
  m_export->setEnabled(m_result != nullptr);
  m_report->setEnabled(m_result != nullptr);
}

QString EvaluationTab::runLabel(const std::string& adapter) const {
  if (adapter.empty()) {
    return tr("Base");
  }
  // Adapters by folder name; a training run's adapter/ folder by its run's name too.
  const QFileInfo info(QString::fromStdString(adapter));
  const QString name = info.fileName().isEmpty() ? QString::fromStdString(adapter) : info.fileName();
  const QString parent = info.dir().dirName();
  return name == QStringLiteral("adapter") && !parent.isEmpty() && parent != QStringLiteral(".")
             ? parent + QLatin1Char('/') + name
             : name;
}

void EvaluationTab::showResult(std::shared_ptr<const EvaluationResult> result) {
  m_result = std::move(result);
  const eval::MetricsReport& r = m_result->metrics;
  // Per-layer table: a row per layer any run answered; a column per (run, metric).
  std::vector<int64_t> layers;
  for (const auto& run : r.runs) {
    for (const auto& row : run.layers) {
      layers.push_back(row.layer);
    }
  }
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  QStringList headers{tr("Layer")};
  for (const auto& run : r.runs) {
    for (eval::Metric m : eval::kMetrics) {
      headers << runLabel(run.adapter) + QLatin1Char('\n') + shortLabel(m);
    }
  }
  m_layerTable->setUpdatesEnabled(false);
  m_layerTable->clear();
  m_layerTable->setColumnCount(static_cast<int>(headers.size()));
  m_layerTable->setHorizontalHeaderLabels(headers);
  m_layerTable->setRowCount(static_cast<int>(layers.size()));
  for (size_t i = 0; i < layers.size(); ++i) {
    const int row = static_cast<int>(i);
    QTableWidgetItem* layer = cell(QString::number(layers[i]));
    if (layers[i] == m_result->defaultLayer) {
      // The checkpoint's own layer: the row the others are read against.
      QFont bold = layer->font();
      bold.setBold(true);
      layer->setFont(bold);
      layer->setToolTip(tr("The model's default exit layer"));
    }
    m_layerTable->setItem(row, 0, layer);
    int col = 1;
    for (const auto& run : r.runs) {
      const auto it = std::find_if(run.layers.begin(), run.layers.end(),
                                   [&](const eval::LayerRow& lr) { return lr.layer == layers[i]; });
      for (eval::Metric m : eval::kMetrics) {
        const eval::Estimate e = it == run.layers.end() ? eval::Estimate{} : it->metrics.at(m);
        m_layerTable->setItem(row, col++, cell(formatEstimate(e, m), answersTip(e)));
      }
    }
  }
  m_layerTable->resizeColumnsToContents();
  m_layerTable->setUpdatesEnabled(true);

  // Layer groups as the paper's bands on the chart.
  static const QColor bandColors[] = {QColor(230, 90, 60), QColor(230, 180, 40), QColor(60, 160, 90)};
  QVector<LineChart::Band> bands;
  for (size_t g = 0; g < r.groups.size(); ++g) {
    const auto& group = r.groups[g];
    bands.push_back({group.first - 0.5, group.last + 0.5,
                     QStringLiteral("%1 (%2-%3)").arg(QString::fromStdString(group.name)).arg(group.first).arg(group.last),
                     bandColors[g % std::size(bandColors)]});
  }
  m_chart->setBands(bands);
  const int64_t maxLayer = m_result->numLayers > 0 ? m_result->numLayers : (layers.empty() ? 1 : layers.back());
  m_chart->setXRange(0.5, static_cast<double>(maxLayer) + 0.5);
  redrawMetric();
}

void EvaluationTab::redrawMetric() {
  m_chart->clear();
  m_groupTable->clear();
  m_groupTable->setRowCount(0);
  m_groupTable->setColumnCount(0);
  if (!m_result) {
    return;
  }
  const eval::MetricsReport& r = m_result->metrics;
  const auto m = static_cast<eval::Metric>(m_metric->currentData().toInt());
  const double scale = isRate(m) ? 100.0 : 1.0;
  const QString label = QString::fromUtf8(eval::metric_label(m));
  m_chart->setTitle(tr("%1 by exit layer").arg(label));
  m_chart->setAxisTitles(tr("exit layer"), isRate(m) ? label + tr(" (%)") : label);
  if (isRate(m)) {
    m_chart->setYRange(0, 100);
  } else {
    m_chart->clearYRange();
  }
  for (size_t i = 0; i < r.runs.size(); ++i) {
    QVector<QPointF> points;
    for (const auto& row : r.runs[i].layers) {
      const eval::Estimate& e = row.metrics.at(m);
      if (e.measured() && std::isfinite(e.value)) {
        points.push_back({static_cast<double>(row.layer), scale * e.value});
      }
    }
    m_chart->setSeries(runLabel(r.runs[i].adapter), points, runColor(i), true);
  }

  // Group table (the paper's Table 2): a row per group; base, each adapter, each delta.
  QStringList headers{tr("Layers")};
  for (const auto& run : r.runs) {
    headers << runLabel(run.adapter);
  }
  for (const auto& delta : r.deltas) {
    headers << QStringLiteral("Δ %1").arg(runLabel(delta.adapter));
  }
  m_groupTable->setColumnCount(static_cast<int>(headers.size()));
  m_groupTable->setHorizontalHeaderLabels(headers);
  m_groupTable->setRowCount(static_cast<int>(r.groups.size()));
  for (size_t g = 0; g < r.groups.size(); ++g) {
    const int row = static_cast<int>(g);
    const auto& group = r.groups[g];
    auto* name = new QTableWidgetItem(
        QStringLiteral("%1 (%2-%3)").arg(QString::fromStdString(group.name)).arg(group.first).arg(group.last));
    m_groupTable->setItem(row, 0, name);
    int col = 1;
    auto put = [&](const eval::AdapterMetrics& run, bool delta) {
      const eval::Estimate e = g < run.groups.size() ? run.groups[g].metrics.at(m) : eval::Estimate{};
      m_groupTable->setItem(row, col++, cell(formatEstimate(e, m, delta), answersTip(e)));
    };
    for (const auto& run : r.runs) {
      put(run, false);
    }
    for (const auto& delta : r.deltas) {
      put(delta, true);
    }
  }
  m_groupTable->resizeColumnsToContents();
}

bool EvaluationTab::exportCsv(const QString& path) {
  if (!m_result) {
    message(MessageBar::Error, tr("No evaluation results to export: run one or open an output folder"));
    return false;
  }
  QFile file(path);
  const std::string csv = eval::metrics_csv(m_result->metrics);
  if (!file.open(QIODevice::WriteOnly | QIODevice::Truncate) ||
      file.write(csv.data(), static_cast<qint64>(csv.size())) != static_cast<qint64>(csv.size())) {
    message(MessageBar::Error, tr("Cannot write %1: %2").arg(path, file.errorString()));
    return false;
  }
  message(MessageBar::Information, tr("Metrics saved to %1").arg(path));
  return true;
}

bool EvaluationTab::openReport() {
  const QString dir = m_result && !m_result->out.isEmpty() ? m_result->out : m_job->out();
  const QString report = QDir(dir).filePath(QString::fromLatin1(eval::kReportHtmlName));
  if (dir.isEmpty() || !QFileInfo(report).isFile()) {
    message(MessageBar::Error, tr("No report.html in %1: run or open an evaluation first").arg(dir));
    return false;
  }
  if (!QDesktopServices::openUrl(QUrl::fromLocalFile(report))) {
    message(MessageBar::Warning, tr("No browser could open %1").arg(report));
    return false;
  }
  return true;
}

}  // namespace icet::ui
