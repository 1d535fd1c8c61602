#include "ui/main_window.h"

#include <QAction>
#include <QActionGroup>
#include <QApplication>
#include <QCloseEvent>
#include <QDialog>
#include <QDialogButtonBox>
#include <QFontDatabase>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QSettings>
#include <QStatusBar>
#include <QVBoxLayout>

#include "icet/version.h"
#include "ui/theme.h"

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

  auto* welcome = new QLabel(this);
  welcome->setObjectName(QStringLiteral("WelcomeLabel"));
  welcome->setAlignment(Qt::AlignCenter);
  welcome->setWordWrap(true);
  welcome->setTextFormat(Qt::RichText);
  welcome->setText(
      tr("<h2>ICET Studio</h2>"
         "<p>Image-encoder early exit lab for vision-language-model safety.</p>"
         "<p style='color:gray'>Runtime: %1</p>")
          .arg(deviceText().toHtmlEscaped()));
  welcome->setAccessibleName(tr("Welcome"));
  setCentralWidget(welcome);

  buildMenus();
  buildStatusBar();
  restoreWindowState();
}

MainWindow::~MainWindow() = default;

QString MainWindow::deviceText() const {
  return toQString(runtime::device_summary(m_runtime));
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu(tr("&File"));
  QAction* quit = file->addAction(tr("&Quit"), this, &QWidget::close);
  quit->setShortcut(QKeySequence::Quit);
  quit->setObjectName(QStringLiteral("actionQuit"));

  QMenu* view = menuBar()->addMenu(tr("&View"));
  QMenu* themeMenu = view->addMenu(tr("&Theme"));
  m_themeGroup = new QActionGroup(this);
  const Theme current =
      themeFromKey(QSettings().value(QStringLiteral("ui/theme")).toString());
  for (Theme theme : {Theme::Light, Theme::Dark}) {
    QAction* action =
        themeMenu->addAction(theme == Theme::Light ? tr("&Light") : tr("&Dark"));
    action->setCheckable(true);
    action->setChecked(theme == current);
    action->setObjectName(QStringLiteral("actionTheme_") + themeKey(theme));
    m_themeGroup->addAction(action);
    connect(action, &QAction::triggered, this, [theme] {
      QSettings().setValue(QStringLiteral("ui/theme"), themeKey(theme));
      if (auto* app = qobject_cast<QApplication*>(QCoreApplication::instance())) {
        applyTheme(*app, theme);
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
  statusBar()->addPermanentWidget(m_deviceLabel);

  const auto warnings = runtime::runtime_warnings(m_runtime);
  if (!warnings.empty()) {
    // Shown until the user moves on; the full text stays in the device label's tooltip.
    statusBar()->showMessage(tr("Warning: %1").arg(toQString(warnings.front())));
  } else {
    statusBar()->showMessage(tr("Ready"), 5000);
  }
}

void MainWindow::restoreWindowState() {
  QSettings settings;
  if (!restoreGeometry(settings.value(QStringLiteral("window/geometry")).toByteArray())) {
    resize(1200, 780);
  }
  restoreState(settings.value(QStringLiteral("window/state")).toByteArray());
}

void MainWindow::closeEvent(QCloseEvent* event) {
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
