// icet-studio: the desktop app. Argument parsing and start-up only; the UI lives in icet_ui.
#include <QApplication>
#include <QCommandLineParser>
#include <QSettings>
#include <QStandardPaths>

#include <filesystem>

#include "core/runtime/blas_kernels.h"
#include "core/runtime/startup.h"
#include "icet/version.h"
#include "ui/main_window.h"
#include "ui/theme.h"

int main(int argc, char** argv) {
  icet::runtime::restart_with_better_blas_kernels(argv);  // before anything else: it may exec
  QApplication app(argc, argv);
  Q_INIT_RESOURCE(icet);  // resources/icet.qrc lives in the static icet_ui library
  QApplication::setOrganizationName(QStringLiteral("icet"));
  QApplication::setApplicationName(QStringLiteral("icet-studio"));
  QApplication::setApplicationDisplayName(QStringLiteral("ICET Studio"));
  QApplication::setApplicationVersion(QString::fromLatin1(icet::kVersion));

  QCommandLineParser parser;
  parser.setApplicationDescription(QStringLiteral("ICET Studio: image-encoder early exit lab"));
  parser.addHelpOption();
  parser.addVersionOption();
  const QCommandLineOption verbose({QStringLiteral("V"), QStringLiteral("verbose")},
                                   QStringLiteral("Debug-level logging."));
  const QCommandLineOption threads(QStringLiteral("threads"),
                                   QStringLiteral("Intra-op CPU threads (default: setting, "
                                                  "ICET_THREADS, or all hardware threads)."),
                                   QStringLiteral("N"));
  parser.addOption(verbose);
  parser.addOption(threads);
  parser.process(app);

  QSettings settings;
  icet::runtime::StartupOptions startup;
  startup.executable = "icet-studio";
  startup.verbosity = parser.isSet(verbose) ? 1 : 0;
  if (bool ok = false; parser.isSet(threads)) {
    const int n = parser.value(threads).toInt(&ok);
    if (ok && n > 0) {
      startup.threads_option = n;
    }
  }
  if (bool ok = false; settings.contains(QStringLiteral("runtime/threads"))) {
    const int n = settings.value(QStringLiteral("runtime/threads")).toInt(&ok);
    if (ok && n > 0) {
      startup.threads_setting = n;
    }
  }
  const QString dataDir = QStandardPaths::writableLocation(QStandardPaths::AppLocalDataLocation);
  startup.log_file = std::filesystem::path(dataDir.toStdString()) / "logs" / "icet-studio.log";
  auto runtimeInfo = icet::runtime::start(startup);

  icet::ui::applyTheme(app, icet::ui::storedTheme());
  icet::ui::MainWindow window(std::move(runtimeInfo));
  window.show();
  window.openDefaults();  // last model or the demo model, demo judge/reward, demo gallery
  window.maybeShowContentWarning();
  return QApplication::exec();
}
