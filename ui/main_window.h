#pragma once

#include <QMainWindow>

#include "core/runtime/diagnostics.h"  // Qt-free and torch-free value structs

class QLabel;
class QActionGroup;
class QProgressBar;
class QTabWidget;
class QTimer;

namespace icet::ui {

class ComparisonLab;
class EvaluationTab;
class MessageBar;
class TrainingDashboard;

// The application window: a message bar over three tabs (comparison lab, training dashboard,
// evaluation), menus with the standard shortcuts, and a status bar with the device torch runs
// on, the memory in use and the progress of background work. Errors never block: they go to the
// message bar and the app keeps working.
class MainWindow : public QMainWindow {
  Q_OBJECT

 public:
  explicit MainWindow(runtime::RuntimeInfo runtime, QWidget* parent = nullptr);
  ~MainWindow() override;

  // What the status bar's device label shows.
  QString deviceText() const;

  ComparisonLab* lab() const { return m_lab; }
  TrainingDashboard* dashboard() const { return m_dashboard; }
  EvaluationTab* evaluation() const { return m_evaluation; }
  MessageBar* messageBar() const { return m_messages; }
  QTabWidget* tabs() const { return m_tabs; }
  // Opens the last model (or the demo model), its demo judge/reward and the demo gallery.
  void openDefaults();
  // Shows the first-start content warning unless it was acknowledged (QSettings
  // "ui/contentWarningAcknowledged").
  void maybeShowContentWarning();

 protected:
  void closeEvent(QCloseEvent* event) override;
  void dragEnterEvent(QDragEnterEvent* event) override;
  void dragMoveEvent(QDragMoveEvent* event) override;
  void dropEvent(QDropEvent* event) override;

 private:
  void buildMenus();
  void buildStatusBar();
  void restoreWindowState();
  void showRuntimeInfo();
  void showAbout();
  void updateMemory();
  void exportSession();
  void openSession();
  void exportMetrics();

  runtime::RuntimeInfo m_runtime;
  QLabel* m_deviceLabel = nullptr;
  QActionGroup* m_themeGroup = nullptr;
  QLabel* m_memoryLabel = nullptr;
  QLabel* m_activityLabel = nullptr;
  QProgressBar* m_jobProgress = nullptr;
  QTimer* m_memoryTimer = nullptr;
  MessageBar* m_messages = nullptr;
  QTabWidget* m_tabs = nullptr;
  ComparisonLab* m_lab = nullptr;
  TrainingDashboard* m_dashboard = nullptr;
  EvaluationTab* m_evaluation = nullptr;
};

}  // namespace icet::ui
