#pragma once

#include <QMainWindow>

#include "core/runtime/diagnostics.h"  // Qt-free and torch-free value structs

class QLabel;
class QActionGroup;

namespace icet::ui {

// The application window. For now: menus, an empty workspace, and a status bar that says
// which device and BLAS torch runs on (and warns when that is slow).
class MainWindow : public QMainWindow {
  Q_OBJECT

 public:
  explicit MainWindow(runtime::RuntimeInfo runtime, QWidget* parent = nullptr);
  ~MainWindow() override;

  // What the status bar's device label shows.
  QString deviceText() const;

 protected:
  void closeEvent(QCloseEvent* event) override;

 private:
  void buildMenus();
  void buildStatusBar();
  void restoreWindowState();
  void showRuntimeInfo();
  void showAbout();

  runtime::RuntimeInfo m_runtime;
  QLabel* m_deviceLabel = nullptr;
  QActionGroup* m_themeGroup = nullptr;
};

}  // namespace icet::ui
