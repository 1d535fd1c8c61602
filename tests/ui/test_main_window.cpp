#include <QAbstractButton>
#include <QAction>
#include <QApplication>
#include <QCheckBox>
#include <QDir>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QTextBrowser>
#include <QSettings>
#include <QStandardPaths>
#include <QStatusBar>
#include <QStyle>
#include <QTest>

#include <cmath>

#include "core/runtime/diagnostics.h"
#include "core/runtime/threads.h"
#include "support/ui.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"
#include "ui/theme.h"
#include "ui/word_diff.h"

namespace {

// WCAG 2 contrast ratio of two colours (1 to 21; 4.5 is the minimum for body text).
double luminance(const QColor& c) {
  auto lin = [](double v) { return v <= 0.03928 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * lin(c.redF()) + 0.7152 * lin(c.greenF()) + 0.0722 * lin(c.blueF());
}
double contrast(const QColor& a, const QColor& b) {
  const double x = luminance(a);
  const double y = luminance(b);
  return (std::max(x, y) + 0.05) / (std::min(x, y) + 0.05);
}

// As rendered: the widget's most common pixel is its background; the contrast of the pixel
// farthest from it (the core of the text) against it.
double renderedContrast(QWidget* w) {
  const QImage img = w->grab().toImage();
  QHash<QRgb, int> counts;
  for (int y = 0; y < img.height(); ++y) {
    for (int x = 0; x < img.width(); ++x) {
      ++counts[img.pixel(x, y)];
    }
  }
  QRgb background = 0;
  int most = -1;
  for (auto it = counts.cbegin(); it != counts.cend(); ++it) {
    if (it.value() > most) {
      most = it.value();
      background = it.key();
    }
  }
  double best = 1.0;
  for (auto it = counts.cbegin(); it != counts.cend(); ++it) {
    best = std::max(best, contrast(QColor(it.key()), QColor(background)));
  }
  return best;
}

}  // namespace

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

  void themeSwitchesPersistsAndStaysReadable() {
    using icet::ui::Theme;
    const auto info = icet::runtime::collect_runtime_info("test");
    icet::ui::MainWindow window(info);
    window.resize(1200, 800);
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    auto* light = window.findChild<QAction*>(QStringLiteral("actionTheme_light"));
    auto* dark = window.findChild<QAction*>(QStringLiteral("actionTheme_dark"));
    QVERIFY(light != nullptr && dark != nullptr);
    QVERIFY(light->isChecked());  // nothing stored yet

    // An unsafe answer that differs from the default pane: badge, text, diff marks.
    auto* lab = window.lab();
    icet::ui::Answer base;
    base.record.text = "Sorry, I cannot help with that.";
    base.safety.judged = true;
    lab->panes()[0]->setBaseline(true);
    lab->panes()[0]->showAnswer(base);
    icet::ui::Answer unsafe;
    unsafe.record.layer = 1;
    unsafe.record.text = "Sure. Step 1: [unsafe step]. Sorry, I cannot";
    unsafe.safety.judged = true;
    unsafe.safety.unsafe = true;
    unsafe.safety.pUnsafe = 0.9;
    icet::ui::ComparisonPane* pane = lab->panes()[1];
    pane->showAnswer(unsafe);
    pane->setDiffBase(QString::fromStdString(base.record.text));

    for (Theme theme : {Theme::Dark, Theme::Light}) {
      (theme == Theme::Dark ? dark : light)->trigger();
      QCOMPARE(QSettings().value(QStringLiteral("ui/theme")).toString(), icet::ui::themeKey(theme));
      QCOMPARE(icet::ui::storedTheme(), theme);
      QCOMPARE(QApplication::style()->name().toLower(), QStringLiteral("fusion"));
      const QPalette p = QApplication::palette();
      QCOMPARE(p.color(QPalette::Window).lightness() < 128, theme == Theme::Dark);
      QApplication::processEvents();
      QCOMPARE(pane->palette().color(QPalette::Base), p.color(QPalette::Base));  // reached the widgets
      for (auto [fg, bg] : {std::pair{QPalette::WindowText, QPalette::Window}, {QPalette::Text, QPalette::Base},
                            {QPalette::ButtonText, QPalette::Button}, {QPalette::HighlightedText, QPalette::Highlight},
                            {QPalette::ToolTipText, QPalette::ToolTipBase}}) {
        QVERIFY2(contrast(p.color(fg), p.color(bg)) >= 4.5,
                 qPrintable(QStringLiteral("%1 on %2").arg(p.color(fg).name(), p.color(bg).name())));
      }
      // Diff marks: removed words dimmed but readable; added words on their tint.
      QVERIFY(contrast(icet::ui::diffRemovedColor(p), p.color(QPalette::Base)) >= 4.5);
      const QColor back = p.color(QPalette::Base);
      const QColor tint = QColor::fromRgbF(0.3f * 1.0f + 0.7f * back.redF(), 0.3f * (170.0f / 255) + 0.7f * back.greenF(),
                                           0.7f * back.blueF());
      QVERIFY(contrast(p.color(QPalette::Text), tint) >= 4.5);
      QVERIFY(pane->findChild<QTextBrowser*>()->toHtml().contains(icet::ui::diffRemovedColor(p).name()));
      // As drawn: the verdict badge and the answer text.
      auto* badge = pane->findChild<QLabel*>(QStringLiteral("VerdictBadge"));
      QCOMPARE(badge->text().contains(QStringLiteral("Unsafe")), true);
      QVERIFY2(renderedContrast(badge) >= 4.5, qPrintable(QString::number(renderedContrast(badge))));
      auto* text = lab->panes()[0]->findChild<QTextBrowser*>()->viewport();
      QVERIFY2(renderedContrast(text) >= 4.5, qPrintable(QString::number(renderedContrast(text))));
      QVERIFY(icet::test::screenshot(&window, QStringLiteral("main_window_") + icet::ui::themeKey(theme)));

      // The next start (and its menu) uses the stored theme.
      icet::ui::MainWindow again(info);
      QVERIFY(again.findChild<QAction*>(QStringLiteral("actionTheme_") + icet::ui::themeKey(theme))->isChecked());
    }
  }

  void contentWarningShowsUntilAcknowledged() {
    const QString key = QStringLiteral("ui/contentWarningAcknowledged");
    QSettings().remove(key);
    const auto info = icet::runtime::collect_runtime_info("test");
    icet::ui::MainWindow window(info);
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    auto box = [&] { return window.findChild<QMessageBox*>(QStringLiteral("ContentWarning")); };

    // Shown without blocking (it returns at once; the window keeps handling events).
    window.maybeShowContentWarning();
    QVERIFY(box() != nullptr);
    QTRY_VERIFY(box()->isVisible());
    QCOMPARE(box()->windowModality(), Qt::WindowModal);
    QVERIFY(box()->text().contains(QStringLiteral("[unsafe step]")));
    // Closed with "Do not show again" unticked: it comes back at the next start.
    box()->checkBox()->setChecked(false);
    box()->button(QMessageBox::Ok)->click();
    QTRY_VERIFY(box() == nullptr);
    QVERIFY(!QSettings().value(key, false).toBool());
    window.maybeShowContentWarning();
    QTRY_VERIFY(box() != nullptr && box()->isVisible());
    QVERIFY(box()->checkBox()->isChecked());  // the default
    box()->button(QMessageBox::Ok)->click();
    QTRY_VERIFY(box() == nullptr);
    QVERIFY(QSettings().value(key, false).toBool());
    // Acknowledged: never again, in this window or the next.
    window.maybeShowContentWarning();
    QApplication::processEvents();
    QVERIFY(box() == nullptr);
    icet::ui::MainWindow next(info);
    next.show();
    next.maybeShowContentWarning();
    QApplication::processEvents();
    QVERIFY(next.findChild<QMessageBox*>(QStringLiteral("ContentWarning")) == nullptr);
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
