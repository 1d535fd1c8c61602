#pragma once

// Helpers for the app's widget tests: test-mode settings, fixture and demo paths, screenshots.

#include <QApplication>
#include <QDir>
#include <QFileInfo>
#include <QImage>
#include <QSettings>
#include <QStandardPaths>
#include <QString>
#include <QTest>
#include <QWidget>

#include <filesystem>

#include "core/runtime/threads.h"
#include "ui/message_bar.h"

// Q_INIT_RESOURCE declares its function in the enclosing namespace: keep it global.
inline void icet_test_init_resources() {
  Q_INIT_RESOURCE(icet);
}

namespace icet::test {

// Call from initTestCase(): resources, isolated settings, no first-start dialog.
inline void init_ui_test(const char* app) {
  icet_test_init_resources();
  QStandardPaths::setTestModeEnabled(true);
  QApplication::setOrganizationName(QStringLiteral("icet"));
  QApplication::setApplicationName(QString::fromLatin1(app));
  QSettings().clear();
  QSettings().setValue(QStringLiteral("ui/contentWarningAcknowledged"), true);
  icet::runtime::apply_threads(2);
}

inline QString hf_fixture(const char* name) {
  return QStringLiteral(ICET_FIXTURES) + QStringLiteral("/hf-reference/") + QString::fromLatin1(name);
}

// The committed demo world (models/demo), or empty when this checkout has none yet.
inline QString demo_dir() {
  const QString dir = QStringLiteral(ICET_SOURCE_DIR) + QStringLiteral("/models/demo");
  return QFileInfo(dir + QStringLiteral("/vlm/config.json")).isFile() ? dir : QString();
}

// Writes a screenshot of `w` to ICET_TEST_ARTIFACTS/<name>.png; true when it is not blank.
inline bool screenshot(QWidget* w, const QString& name) {
  const QString dir = QStringLiteral(ICET_TEST_ARTIFACTS);
  QDir().mkpath(dir);
  // Settle first: chart legends and other graphics-scene layouts update on posted events, so a
  // grab right after new data would show them half laid out.
  QCoreApplication::sendPostedEvents();
  QCoreApplication::processEvents();
  const QImage shot = w->grab().toImage();
  if (!shot.save(dir + QLatin1Char('/') + name + QStringLiteral(".png"))) {
    return false;
  }
  // Not one flat colour.
  const QRgb first = shot.pixel(0, 0);
  for (int y = 0; y < shot.height(); y += 7) {
    for (int x = 0; x < shot.width(); x += 7) {
      if (shot.pixel(x, y) != first) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace icet::test
