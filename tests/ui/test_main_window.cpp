#include <QApplication>
#include <QDir>
#include <QLabel>
#include <QMenuBar>
#include <QSettings>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTest>

#include "core/runtime/diagnostics.h"
#include "core/runtime/threads.h"
#include "ui/main_window.h"

class TestMainWindow : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void initTestCase() {
    Q_INIT_RESOURCE(icet);
    QStandardPaths::setTestModeEnabled(true);
    QApplication::setOrganizationName(QStringLiteral("icet"));
    QApplication::setApplicationName(QStringLiteral("icet-studio-test"));
    QSettings().clear();
    icet::runtime::apply_threads(2);
  }

  void opensWithMenusAndDeviceStatus() {
    const auto info = icet::runtime::collect_runtime_info("test");
    icet::ui::MainWindow window(info);
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));

    QStringList menus;
    for (QAction* a : window.menuBar()->actions()) {
      menus << a->text().remove(QLatin1Char('&'));
    }
    QCOMPARE(menus, (QStringList{QStringLiteral("File"), QStringLiteral("Run"),
                                 QStringLiteral("View"),
                                 QStringLiteral("Help")}));

    auto* device = window.findChild<QLabel*>(QStringLiteral("DeviceLabel"));
    QVERIFY(device != nullptr);
    QVERIFY(device->isVisible());
    QCOMPARE(device->text(), QString::fromStdString(icet::runtime::device_summary(info)));
    QVERIFY(device->text().startsWith(QStringLiteral("CPU")) ||
            device->text().startsWith(QStringLiteral("CUDA")));
    QVERIFY(!device->accessibleName().isEmpty());
    QVERIFY2(!window.windowIcon().isNull(), "the SVG icon from resources/icet.qrc must load");

    const QString dir = QStringLiteral(ICET_TEST_ARTIFACTS);
    QDir().mkpath(dir);
    const QString path = dir + QStringLiteral("/main_window.png");
    const QImage shot = window.grab().toImage();
    QVERIFY(shot.save(path));
    QVERIFY(QFileInfo(path).size() > 1000);
    // The screenshot shows something: not one flat colour.
    QVERIFY(shot.pixel(5, 5) != shot.pixel(shot.width() / 2, shot.height() - 10) ||
            shot.pixel(5, 5) != shot.pixel(shot.width() / 2, shot.height() / 2));
  }

  void warnsAboutReferenceBlasInTheStatusBar() {
    icet::runtime::RuntimeInfo info;
    info.blas.name = "reference BLAS (netlib)";
    info.blas.library = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3";
    info.blas.reference = true;
    info.intra_op_threads = 2;
    icet::ui::MainWindow window(info);
    window.show();
    QVERIFY(window.statusBar()->currentMessage().contains(QStringLiteral("libopenblas0-openmp")));
    QVERIFY(window.deviceText().contains(QStringLiteral("slow")));
  }

  void keepsGeometryAcrossRestarts() {
    const auto info = icet::runtime::collect_runtime_info("test");
    {
      icet::ui::MainWindow window(info);
      window.show();
      window.resize(1000, 640);
      QVERIFY(QTest::qWaitForWindowExposed(&window));
      window.close();
    }
    icet::ui::MainWindow again(info);
    QCOMPARE(again.size(), QSize(1000, 640));
  }
};

QTEST_MAIN(TestMainWindow)
#include "test_main_window.moc"
