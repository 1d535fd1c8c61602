#include "ui/main_window.h"

#include "core/runtime/memory.h"

#include <QAction>
#include <QActionGroup>
#include <QApplication>
#include <QCloseEvent>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFontDatabase>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QScreen>
#include <QStyle>
#include <QSettings>
#include <QStatusBar>
#include <QVBoxLayout>
#include <QCheckBox>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QProgressBar>
#include <QTabWidget>
#include <QTimer>

#include "icet/version.h"
#include "ui/comparison_lab.h"
#include "ui/evaluation_tab.h"
#include "ui/message_bar.h"
#include "ui/theme.h"
#include "ui/training_dashboard.h"

namespace icet::ui {
namespace {

QString toQString(const std::string& s) {
  return QString::fromStdString(s);
}

}  // namespace

MainWindow::MainWindow(runtime::RuntimeInfo runtime, QWidget* parent)
    : QMainWindow(parent), m_runtime(std::move(runtime)) {
  setObjectName(QStringLiteral("MainWindow"));
  setWindowTitle(QStringLiteral("ICET Studio"));
  setWindowIcon(QIcon(QStringLiteral(":/icons/icet-studio.svg")));
  setMinimumSize(800, 520);

  auto* central = new QWidget(this);
  m_messages = new MessageBar(central);
  m_tabs = new QTabWidget(central);
  m_tabs->setObjectName(QStringLiteral("MainTabs"));
  m_tabs->setDocumentMode(true);
  m_lab = new ComparisonLab(m_tabs);
  m_dashboard = new TrainingDashboard(m_tabs);
  m_tabs->addTab(m_lab, QIcon(QStringLiteral(":/icons/compare.svg")), tr("Comparison lab"));
  m_tabs->addTab(m_dashboard, QIcon(QStringLiteral(":/icons/train.svg")), tr("Training"));
  m_evaluation = new EvaluationTab(m_tabs);  // its messages show in its own bar, above its results
  m_tabs->addTab(m_evaluation, QIcon(QStringLiteral(":/icons/sweep.svg")), tr("Evaluation"));
  auto* layout = new QVBoxLayout(central);
  layout->setContentsMargins(0, 0, 0, 0);
  layout->setSpacing(2);
  layout->addWidget(m_messages);
  layout->addWidget(m_tabs, 1);
  setCentralWidget(central);

  connect(m_lab, &ComparisonLab::message, m_messages, &MessageBar::showMessage);
  connect(m_dashboard, &TrainingDashboard::message, m_messages, &MessageBar::showMessage);
  connect(m_dashboard, &TrainingDashboard::openSample, this,
          [this](const QString& prompt, const QString& answer, int layer, double reward, const QString& image) {
            m_lab->showExternalAnswer(prompt, answer, layer, reward, image);
            m_tabs->setCurrentWidget(m_lab);
          });
  // An adapter only fits the model it was trained on: open that one first if needed (requests
  // run in order on the lab's worker).
  auto openTrainedModel = [this](const QString& model) {
    if (!model.isEmpty() && (QDir::cleanPath(model) != m_lab->modelPath() || !m_lab->service()->hasModel())) {
      m_lab->openModel(model);
    }
  };
  connect(m_dashboard, &TrainingDashboard::loadAdapterRequested, this,
          [this, openTrainedModel](const QString& dir, const QString& model) {
            openTrainedModel(model);
            m_lab->compareWithAdapter(dir);  // a new pane next to the base one, not every pane
            m_tabs->setCurrentWidget(m_lab);
          });
  connect(m_dashboard, &TrainingDashboard::storyReady, this,
          [this, openTrainedModel](const QString& dir, const QString& model, const QString& judge,
                                   const QString& reward) {
            openTrainedModel(model);
            if (m_lab->judgePath().isEmpty() && !judge.isEmpty()) {
              m_lab->openJudge(judge);  // the verdicts are the story
            }
            if (m_lab->rewardPath().isEmpty() && !reward.isEmpty()) {
              m_lab->openReward(reward);
            }
            m_lab->showBeforeAfter(dir);
            m_tabs->setCurrentWidget(m_lab);
          });
  connect(m_lab, &ComparisonLab::modelChanged, this, [this](const ModelInfo& info) {
    m_dashboard->setModelPath(info.path);
  });

  buildMenus();
  buildStatusBar();
  restoreWindowState();
  setAcceptDrops(true);  // images dropped anywhere (message bar, tabs, status bar) go to the lab
}

MainWindow::~MainWindow() = default;

QString MainWindow::deviceText() const {
  return toQString(runtime::device_summary(m_runtime));
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu(tr("&File"));
  QAction* openImage = file->addAction(QIcon(QStringLiteral(":/icons/open.svg")), tr("&Open Image…"), this, [this] {
    const QString path = QFileDialog::getOpenFileName(
        this, tr("Open Image"), QString(), tr("Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"));
    if (!path.isEmpty()) {
      m_lab->openImageFile(path);
    }
  });
  openImage->setShortcut(QKeySequence::Open);
  openImage->setObjectName(QStringLiteral("actionOpenImage"));
  QAction* paste = file->addAction(QIcon(QStringLiteral(":/icons/paste.svg")), tr("&Paste Image"), this,
                                   [this] { m_lab->pasteFromClipboard(); });
  paste->setShortcut(QKeySequence::Paste);
  paste->setShortcutContext(Qt::WindowShortcut);
  paste->setObjectName(QStringLiteral("actionPaste"));
  file->addAction(tr("Open &Model Folder…"), this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open Hugging Face snapshot folder"));
    if (!dir.isEmpty()) {
      m_lab->openModel(dir);
    }
  });
  QAction* compare = file->addAction(tr("Compare with &Adapter…"), this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("LoRA adapter folder (PEFT)"));
    if (!dir.isEmpty()) {
      m_tabs->setCurrentWidget(m_lab);
      m_lab->compareWithAdapter(dir);
    }
  });
  compare->setObjectName(QStringLiteral("actionCompareAdapter"));
  compare->setToolTip(tr("A new pane answers with a LoRA adapter next to the base pane at the same layer"));
  file->addSeparator();
  QAction* openSession = file->addAction(tr("Open &Session…"), this, &MainWindow::openSession);
  openSession->setObjectName(QStringLiteral("actionOpenSession"));
  QAction* exportSession = file->addAction(QIcon(QStringLiteral(":/icons/export.svg")), tr("&Export Session…"),
                                           this, &MainWindow::exportSession);
  exportSession->setShortcut(QKeySequence::Save);
  exportSession->setObjectName(QStringLiteral("actionExportSession"));
  file->addAction(tr("Export Training &Metrics (CSV)…"), this, &MainWindow::exportMetrics);
  file->addSeparator();
  QAction* quit = file->addAction(tr("&Quit"), this, &QWidget::close);
  quit->setShortcut(QKeySequence::Quit);
  quit->setObjectName(QStringLiteral("actionQuit"));

  QMenu* run = menuBar()->addMenu(tr("&Run"));
  QAction* runAll = run->addAction(QIcon(QStringLiteral(":/icons/run.svg")), tr("&Run All Panes"), this,
                                   [this] { m_lab->runAll(); });
  runAll->setShortcuts({QKeySequence(Qt::CTRL | Qt::Key_Return), QKeySequence(Qt::CTRL | Qt::Key_Enter)});
  runAll->setObjectName(QStringLiteral("actionRun"));
  QAction* stop = run->addAction(QIcon(QStringLiteral(":/icons/stop.svg")), tr("&Stop"), this,
                                 [this] { m_lab->stopAll(); });
  stop->setShortcut(QKeySequence(Qt::Key_Escape));
  stop->setObjectName(QStringLiteral("actionStop"));
  run->addAction(QIcon(QStringLiteral(":/icons/sweep.svg")), tr("S&weep All Layers"), this,
                 [this] { m_lab->runSweep(); });
  run->addSeparator();
  QAction* demo = run->addAction(tr("Start the &Demo"), this, [this] {
    const QString root = demoRoot();
    if (root.isEmpty()) {
      m_messages->showMessage(MessageBar::Error, tr("No demo world found: build one with `icet demo build --out "
                                                    "models/demo` or set ICET_DEMO_DIR"));
      return;
    }
    const QString vlm = QDir::cleanPath(root + QStringLiteral("/vlm"));
    if (m_lab->modelPath() != vlm) {
      m_lab->openModel(vlm);
    }
    if (m_lab->judgePath().isEmpty() && QFileInfo(root + QStringLiteral("/guard/config.json")).isFile()) {
      m_lab->openJudge(root + QStringLiteral("/guard"));  // the verdicts are the point
    }
    m_tabs->setCurrentWidget(m_lab);
    if (m_lab->loadGallery(root + QStringLiteral("/sets/heldout.jsonl"))) {  // errors go to the message bar
      m_lab->startDemo(root);
    }
  });
  demo->setObjectName(QStringLiteral("actionStartDemo"));
  demo->setToolTip(tr("A demo example answered at the default and an early layer, with Show the fix"));

  QMenu* view = menuBar()->addMenu(tr("&View"));
  QAction* presentation = view->addAction(tr("&Presentation Mode"));
  presentation->setCheckable(true);
  presentation->setShortcut(QKeySequence(Qt::Key_F11));
  connect(presentation, &QAction::toggled, this, [this](bool on) {
    if (auto* box = m_lab->findChild<QCheckBox*>(QStringLiteral("PresentationMode"))) {
      box->setChecked(on);
    }
  });
  QMenu* themeMenu = view->addMenu(tr("&Theme"));
  m_themeGroup = new QActionGroup(this);
  const Theme current = storedTheme();
  for (Theme theme : {Theme::Light, Theme::Dark}) {
    QAction* action =
        themeMenu->addAction(theme == Theme::Light ? tr("&Light") : tr("&Dark"));
    action->setCheckable(true);
    action->setChecked(theme == current);
    action->setObjectName(QStringLiteral("actionTheme_") + themeKey(theme));
    m_themeGroup->addAction(action);
    connect(action, &QAction::triggered, this, [theme] {
      if (auto* app = qobject_cast<QApplication*>(QCoreApplication::instance())) {
        setTheme(*app, theme);
      }
    });
  }

  QMenu* help = menuBar()->addMenu(tr("&Help"));
  QAction* info = help->addAction(tr("&Runtime Information…"), this, &MainWindow::showRuntimeInfo);
  info->setObjectName(QStringLiteral("actionRuntimeInfo"));
  QAction* about = help->addAction(tr("&About ICET Studio"), this, &MainWindow::showAbout);
  about->setObjectName(QStringLiteral("actionAbout"));
}

void MainWindow::buildStatusBar() {
  m_deviceLabel = new QLabel(deviceText(), this);
  m_deviceLabel->setObjectName(QStringLiteral("DeviceLabel"));
  m_deviceLabel->setAccessibleName(tr("Compute device"));
  m_deviceLabel->setToolTip(toQString(runtime::to_text(m_runtime)));
  m_activityLabel = new QLabel(this);
  m_activityLabel->setObjectName(QStringLiteral("ActivityLabel"));
  m_activityLabel->setAccessibleName(tr("Model activity"));
  m_jobProgress = new QProgressBar(this);
  m_jobProgress->setObjectName(QStringLiteral("JobProgress"));
  m_jobProgress->setAccessibleName(tr("Training progress"));
  m_jobProgress->setMaximumWidth(180);
  m_jobProgress->setRange(0, 100);
  m_jobProgress->hide();
  m_memoryLabel = new QLabel(this);
  m_memoryLabel->setObjectName(QStringLiteral("MemoryLabel"));
  m_memoryLabel->setAccessibleName(tr("Memory in use"));
  statusBar()->addPermanentWidget(m_activityLabel);
  statusBar()->addPermanentWidget(m_jobProgress);
  statusBar()->addPermanentWidget(m_memoryLabel);
  statusBar()->addPermanentWidget(m_deviceLabel);
  connect(m_lab, &ComparisonLab::busyChanged, this, [this](bool busy, const QString& activity) {
    m_activityLabel->setText(busy ? activity : QString());
  });
  connect(m_dashboard, &TrainingDashboard::progressChanged, this, [this](int percent, const QString& text) {
    m_jobProgress->setVisible(percent >= 0);
    if (percent >= 0) {
      m_jobProgress->setValue(percent);
      m_jobProgress->setToolTip(text);
    }
  });
  m_memoryTimer = new QTimer(this);
  m_memoryTimer->setInterval(2000);
  connect(m_memoryTimer, &QTimer::timeout, this, &MainWindow::updateMemory);
  m_memoryTimer->start();
  updateMemory();

  const auto warnings = runtime::runtime_warnings(m_runtime);
  if (!warnings.empty()) {
    // Shown until the user moves on; the full text stays in the device label's tooltip.
    statusBar()->showMessage(tr("Warning: %1").arg(toQString(warnings.front())));
  } else {
    statusBar()->showMessage(tr("Ready"), 5000);
  }
}

void MainWindow::updateMemory() {
  // This process's resident memory and, with a CUDA device, the GPU's (NVML, device-wide:
  // the training job, the lab and anything else on the card).
  constexpr double kMiB = 1024.0 * 1024.0, kGiB = kMiB * 1024.0;
  QString text = tr("RAM %1 MiB").arg(static_cast<double>(runtime::process_rss_bytes()) / kMiB, 0, 'f', 0);
  if (m_runtime.cuda_available) {
    const runtime::DeviceMemory gpu = runtime::device_memory("cuda:0");
    if (gpu.total_bytes > 0) {
      text += tr(" · GPU %1/%2 GiB").arg(static_cast<double>(gpu.used_bytes()) / kGiB, 0, 'f', 1)
                  .arg(static_cast<double>(gpu.total_bytes) / kGiB, 0, 'f', 1);
    }
  }
  m_memoryLabel->setText(text);
}

void MainWindow::openDefaults() {
  QSettings settings;
  const QString demo = demoRoot();
  // First start: no model was ever opened (the lab records each one in "model/last").
  const bool firstStart = !settings.contains(QStringLiteral("model/last"));
  QString model = settings.value(QStringLiteral("model/last")).toString();
  if (model.isEmpty() || !QFileInfo(model + QStringLiteral("/config.json")).isFile()) {
    model = demo.isEmpty() ? QString() : demo + QStringLiteral("/vlm");
  }
  if (!model.isEmpty() && QFileInfo(model + QStringLiteral("/config.json")).isFile()) {
    m_lab->openModel(model);
  } else {
    m_messages->showMessage(MessageBar::Information,
                            tr("Open a model folder (File ▸ Open Model Folder) to start."));
  }
  if (!demo.isEmpty()) {
    if (QFileInfo(demo + QStringLiteral("/guard/config.json")).isFile()) {
      m_lab->openJudge(demo + QStringLiteral("/guard"));
    }
    if (QFileInfo(demo + QStringLiteral("/reward/config.json")).isFile()) {
      m_lab->openReward(demo + QStringLiteral("/reward"));
    }
    const QString heldout = demo + QStringLiteral("/sets/heldout.jsonl");
    if (QFileInfo(heldout).isFile() && m_lab->loadGallery(heldout) && firstStart &&
        QDir::cleanPath(model) == QDir::cleanPath(demo + QStringLiteral("/vlm"))) {
      m_lab->startDemo(demo);  // the app opens as a demo: an example answered at two layers
    }
    const QString train = demo + QStringLiteral("/sets/train.jsonl");
    if (QFileInfo(train).isFile()) {
      m_dashboard->setPromptSet(train);
    }
  }
}

void MainWindow::maybeShowContentWarning() {
  QSettings settings;
  if (settings.value(QStringLiteral("ui/contentWarningAcknowledged"), false).toBool()) {
    return;
  }
  auto* box = new QMessageBox(QMessageBox::Warning, tr("Content warning"),
                              tr("ICET Studio shows how vision-language models answer harmful requests "
                                 "when their image features come from early encoder layers. Answers can "
                                 "be disturbing. The built-in demo world only uses marked placeholders "
                                 "such as [unsafe step]; real checkpoints may produce real harmful text."),
                              QMessageBox::Ok, this);
  box->setObjectName(QStringLiteral("ContentWarning"));
  auto* dontShow = new QCheckBox(tr("Do not show again"), box);
  dontShow->setChecked(true);
  box->setCheckBox(dontShow);
  box->setAttribute(Qt::WA_DeleteOnClose);
  connect(box, &QMessageBox::finished, this, [dontShow] {
    if (dontShow->isChecked()) {
      QSettings().setValue(QStringLiteral("ui/contentWarningAcknowledged"), true);
    }
  });
  box->open();  // window-modal sheet; the app keeps running behind it
}

void MainWindow::exportSession() {
  const QString dir = QFileDialog::getExistingDirectory(this, tr("Export session to folder"));
  if (!dir.isEmpty()) {
    m_lab->exportBundle(dir);
  }
}

void MainWindow::openSession() {
  const QString file = QFileDialog::getOpenFileName(this, tr("Open session"), QString(),
                                                    tr("ICET sessions (session.json)"));
  if (!file.isEmpty()) {
    m_tabs->setCurrentWidget(m_lab);
    m_lab->openBundle(QFileInfo(file).absolutePath());
  }
}

void MainWindow::exportMetrics() {
  const QString file = QFileDialog::getSaveFileName(this, tr("Export metrics"), QStringLiteral("metrics.csv"),
                                                    tr("CSV (*.csv)"));
  if (!file.isEmpty()) {
    m_dashboard->exportMetricsCsv(file);
  }
}

void MainWindow::restoreWindowState() {
  QSettings settings;
  const bool restored = restoreGeometry(settings.value(QStringLiteral("window/geometry")).toByteArray());
  restoreState(settings.value(QStringLiteral("window/state")).toByteArray());
  if (restored) {
    return;  // Qt moves a restored window back onto a screen that has changed
  }
  // The first size: 1200 x 780, no larger than the screen's free area less room for the frame
  // (title bar, borders) the window manager adds, centred on it.
  const QScreen* s = screen() != nullptr ? screen() : QGuiApplication::primaryScreen();
  if (s == nullptr) {
    resize(1200, 780);
    return;
  }
  const QRect free = s->availableGeometry();
  const QSize room(free.width() * 95 / 100, free.height() * 90 / 100);
  setMinimumSize(minimumSize().boundedTo(room));
  const QSize size = QSize(1200, 780).boundedTo(room);
  setGeometry(QStyle::alignedRect(Qt::LeftToRight, Qt::AlignCenter, size, free));
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event) {
  if (ComparisonLab::canDropImage(event->mimeData())) {
    event->acceptProposedAction();
  }
}

void MainWindow::dragMoveEvent(QDragMoveEvent* event) {
  if (ComparisonLab::canDropImage(event->mimeData())) {
    event->acceptProposedAction();
  }
}

void MainWindow::dropEvent(QDropEvent* event) {
  event->acceptProposedAction();
  m_tabs->setCurrentWidget(m_lab);
  m_lab->dropImage(event->mimeData());
}

void MainWindow::closeEvent(QCloseEvent* event) {
  m_lab->stopAll();
  QSettings settings;
  settings.setValue(QStringLiteral("window/geometry"), saveGeometry());
  settings.setValue(QStringLiteral("window/state"), saveState());
  event->accept();
}

void MainWindow::showRuntimeInfo() {
  auto* dialog = new QDialog(this);
  dialog->setAttribute(Qt::WA_DeleteOnClose);
  dialog->setWindowTitle(tr("Runtime Information"));
  auto* text = new QPlainTextEdit(toQString(runtime::to_text(m_runtime)), dialog);
  text->setReadOnly(true);
  text->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  text->setAccessibleName(tr("Runtime information"));
  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close, dialog);
  connect(buttons, &QDialogButtonBox::rejected, dialog, &QDialog::close);
  auto* layout = new QVBoxLayout(dialog);
  layout->addWidget(text);
  layout->addWidget(buttons);
  dialog->resize(720, 360);
  dialog->show();  // non-modal: the app keeps working
}

void MainWindow::showAbout() {
  QMessageBox::about(
      this, tr("About ICET Studio"),
      tr("<h3>ICET Studio %1</h3>"
         "<p>A lab for image-encoder early exit (ICET) in vision-language models: compare "
         "answers across encoder layers, judge their safety and train layer-wise alignment "
         "(L-PPO).</p><p>LibTorch %2</p>")
          .arg(QString::fromLatin1(kVersion), toQString(m_runtime.torch_version)));
}

}  // namespace icet::ui
