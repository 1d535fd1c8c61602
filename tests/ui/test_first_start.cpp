// Issue 18, item 4, on the committed demo world: the first start opens as a demo. The lab shows
// the held-out set's first harmful example (its image and prompt) with that prompt and a benign
// one offered in the demo banner, and the default pane (ICET-23) and an early pane (ICET-7)
// answer it: refused at the default layer, complied with at the early one. "Show the fix" puts
// the shipped L-PPO adapter (models/demo/adapter) in a new pane beside the early pane, at its
// layer: a different answer, judged safe (the sweep chart overlays both models). The window fits
// the screen, no pane title or model name is cut, and without adapter/ the button is disabled
// and says why; Run ▸ Start the Demo stages the example again after the banner was closed.
#include <QAction>
#include <QComboBox>
#include <QLabel>
#include <QPushButton>
#include <QScreen>
#include <QStyleOptionComboBox>
#include <QTemporaryDir>
#include <QTemporaryFile>
#include <QTest>
#include <QToolButton>

#include <nlohmann/json.hpp>

#include <fstream>

#include "core/runtime/diagnostics.h"
#include "support/ui.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"

using icet::ui::ComparisonLab;
using icet::ui::ComparisonPane;

namespace {

struct Example {
  QString image;
  QString prompt;
};

// The first harmful item of the demo's held-out set, and its first benign "describe" prompt.
bool readDemoSet(const QString& demo, Example& harmful, QString& benign) {
  const QString file = demo + QStringLiteral("/sets/heldout.jsonl");
  std::ifstream in(file.toStdString());
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) {
      continue;
    }
    const auto j = nlohmann::json::parse(line);
    const QString prompt = QString::fromStdString(j.at("prompt").get<std::string>());
    if (j.value("harmful", false) && harmful.prompt.isEmpty()) {
      harmful.image = QFileInfo(file).absolutePath() + QLatin1Char('/') +
                      QString::fromStdString(j.at("image").get<std::string>());
      harmful.prompt = prompt;
    } else if (!j.value("harmful", false) && j.value("task", std::string()) == "describe" &&
               benign.isEmpty()) {
      benign = prompt;
    }
  }
  return !harmful.prompt.isEmpty() && !benign.isEmpty();
}

// Every pane answered, with its own model, and nothing left on the worker.
bool settled(ComparisonLab* lab) {
  if (lab->isBusy() || lab->service()->pending() != 0) {
    return false;
  }
  for (ComparisonPane* p : lab->panes()) {
    if (!p->answer() || p->answer()->adapter != p->adapter()) {
      return false;
    }
  }
  return true;
}

enum class Verdict { Missing, Safe, Unsafe };

// The judge's verdict on the sweep's answer at `layer` with `adapter` (empty: the base model).
Verdict sweepVerdict(const ComparisonLab* lab, int layer, const QString& adapter) {
  for (const icet::ui::Answer& a : lab->sweepAnswers()) {
    if (a.record.layer == layer && a.adapter == adapter && a.safety.judged) {
      return a.safety.unsafe ? Verdict::Unsafe : Verdict::Safe;
    }
  }
  return Verdict::Missing;
}

// Every pane answered `prompt` with its own model (the sweep may still run: it is cancelled with
// the window).
bool answered(ComparisonLab* lab, const QString& prompt) {
  for (ComparisonPane* p : lab->panes()) {
    if (p->isRunning() || !p->answer() || p->answer()->adapter != p->adapter() ||
        p->answer()->record.prompt != prompt.toStdString()) {
      return false;
    }
  }
  return true;
}

// Whether `label` shows its text on one line, uncut.
bool fits(const QLabel* label) {
  return label->contentsRect().width() >= label->fontMetrics().horizontalAdvance(label->text());
}

// Whether `combo` shows its current item's text uncut (the edit field next to the arrow).
bool fits(const QComboBox* combo) {
  QStyleOptionComboBox opt;
  opt.initFrom(combo);
  opt.editable = combo->isEditable();
  opt.currentText = combo->currentText();
  opt.currentIcon = combo->itemIcon(combo->currentIndex());
  opt.iconSize = combo->iconSize();
  const QRect field = combo->style()->subControlRect(QStyle::CC_ComboBox, &opt,
                                                     QStyle::SC_ComboBoxEditField, combo);
  int needed = combo->fontMetrics().horizontalAdvance(combo->currentText());
  if (!opt.currentIcon.isNull()) {
    needed += opt.iconSize.width() + 4;
  }
  return field.width() >= needed;
}

}  // namespace

class TestFirstStart : public QObject {
  Q_OBJECT

 private:
  QString m_demo;
  Example m_harmful;
  QString m_benign;

  // No pane's title, adapter tag or model picker is cut.
  static void checkTitles(ComparisonLab* lab) {
    for (ComparisonPane* p : lab->panes()) {
      const auto* title = p->findChild<QLabel*>(QStringLiteral("PaneTitle"));
      const auto* tag = p->findChild<QLabel*>(QStringLiteral("PaneAdapter"));
      const auto* picker = p->findChild<QComboBox*>(QStringLiteral("PaneAdapterPicker"));
      QVERIFY(title != nullptr && tag != nullptr && picker != nullptr);
      QVERIFY2(
          fits(title),
          qPrintable(QStringLiteral("title '%1' in %2 px").arg(title->text()).arg(title->width())));
      if (tag->isVisible()) {
        QVERIFY2(
            fits(tag),
            qPrintable(QStringLiteral("tag '%1' in %2 px").arg(tag->text()).arg(tag->width())));
      }
      QVERIFY2(fits(picker), qPrintable(QStringLiteral("model '%1' in %2 px")
                                            .arg(picker->currentText())
                                            .arg(picker->width())));
    }
  }

  static void checkFitsScreen(const QWidget& window) {
    const QRect free = window.screen()->availableGeometry();
    QVERIFY2(free.contains(window.frameGeometry()),
             qPrintable(QStringLiteral("window %1,%2 %3x%4 on a free area of %5x%6")
                            .arg(window.frameGeometry().x())
                            .arg(window.frameGeometry().y())
                            .arg(window.frameGeometry().width())
                            .arg(window.frameGeometry().height())
                            .arg(free.width())
                            .arg(free.height())));
  }

 private Q_SLOTS:
  void initTestCase() {
    icet::test::init_ui_test("icet-studio-test-first-start");
    m_demo = icet::test::demo_dir();
    if (m_demo.isEmpty() || !QFileInfo(m_demo + QStringLiteral("/guard/config.json")).isFile() ||
        ComparisonLab::demoAdapter(m_demo).isEmpty()) {
      QSKIP("no demo world with guard/ and adapter/ (models/demo) in this checkout");
    }
    QVERIFY(readDemoSet(m_demo, m_harmful, m_benign));
  }

  void init() {
    QSettings().clear();  // a first start: no model opened before
    QSettings().setValue(QStringLiteral("ui/contentWarningAcknowledged"), true);
  }

  void cleanup() { qunsetenv("ICET_DEMO_DIR"); }

  void opensAsADemoAndShowsTheFix() {
    qputenv("ICET_DEMO_DIR", m_demo.toLocal8Bit());
    // As icet-studio starts: no size given, the window picks its own.
    icet::ui::MainWindow window(icet::runtime::collect_runtime_info("test"));
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    window.openDefaults();
    checkFitsScreen(window);
    ComparisonLab* lab = window.lab();

    // The demo gallery's harmful example, its prompt, and a benign one to pick.
    QCOMPARE(QFileInfo(lab->imageName()).canonicalFilePath(),
             QFileInfo(m_harmful.image).canonicalFilePath());
    QCOMPARE(lab->prompt(), m_harmful.prompt);
    auto* preview = lab->findChild<QLabel*>(QStringLiteral("ImagePreview"));
    QTRY_VERIFY_WITH_TIMEOUT(!preview->pixmap().isNull(), 10000);
    auto* banner = lab->findChild<QWidget*>(QStringLiteral("DemoBanner"));
    auto* harmful = lab->findChild<QPushButton*>(QStringLiteral("DemoHarmfulPrompt"));
    auto* benign = lab->findChild<QPushButton*>(QStringLiteral("DemoBenignPrompt"));
    auto* fix = lab->findChild<QPushButton*>(QStringLiteral("ShowFixButton"));
    QVERIFY(banner != nullptr && harmful != nullptr && benign != nullptr && fix != nullptr);
    QVERIFY(banner->isVisible());
    QVERIFY(harmful->isVisible() && harmful->isEnabled() && harmful->isChecked());
    QVERIFY(benign->isVisible() && benign->isEnabled());
    QVERIFY(harmful->toolTip().contains(m_harmful.prompt));
    QVERIFY(benign->toolTip().contains(m_benign));
    QVERIFY(fix->isVisible() && fix->isEnabled());

    // Both panes answer once the model is in: refused at the default layer, complied with early.
    QTRY_VERIFY_WITH_TIMEOUT(lab->service()->hasModel() && lab->panes().size() == 2 && settled(lab),
                             120000);
    const int defaultLayer = lab->service()->model()->defaultLayer;
    ComparisonPane* base = lab->panes()[0];
    ComparisonPane* early = lab->panes()[1];
    QCOMPARE(base->layer(), defaultLayer);
    QCOMPARE(early->layer(), lab->layerSlider()->value());
    QVERIFY(early->layer() < defaultLayer / 2);
    QCOMPARE(base->answer()->record.prompt, m_harmful.prompt.toStdString());
    QCOMPARE(base->verdictText(), QStringLiteral("Safe"));
    QCOMPARE(early->verdictText(), QStringLiteral("Unsafe"));
    QVERIFY(early->adapter().isEmpty());
    // The chart: every layer's verdict, the early pane's among them.
    const int layers = lab->service()->model()->layers;
    QCOMPARE(lab->sweepAnswers().size(), layers);
    QVERIFY(sweepVerdict(lab, early->layer(), QString()) == Verdict::Unsafe);
    QVERIFY(sweepVerdict(lab, defaultLayer, QString()) == Verdict::Safe);
    checkTitles(lab);
    QVERIFY(icet::test::screenshot(&window, QStringLiteral("first_start")));

    // One click: the adapter beside the early pane, same layer, same prompt, a safe answer.
    QTest::mouseClick(fix, Qt::LeftButton);
    QTRY_VERIFY_WITH_TIMEOUT(lab->panes().size() == 3 && settled(lab), 120000);
    const QString adapter = ComparisonLab::demoAdapter(m_demo);
    QCOMPARE(lab->panes()[1], early);
    ComparisonPane* aligned = lab->panes()[2];
    QCOMPARE(aligned->adapter(), adapter);
    QCOMPARE(aligned->answer()->adapter, adapter);
    QCOMPARE(aligned->layer(), early->layer());
    QCOMPARE(aligned->answer()->record.layer, early->answer()->record.layer);
    QCOMPARE(aligned->answer()->record.prompt, m_harmful.prompt.toStdString());
    QCOMPARE(early->verdictText(), QStringLiteral("Unsafe"));
    QCOMPARE(aligned->verdictText(), QStringLiteral("Safe"));
    QVERIFY(aligned->text() != early->text());
    QVERIFY(aligned->findChild<QLabel*>(QStringLiteral("PaneAdapter"))->isVisible());
    // The chart overlays the adapter's sweep on the base one.
    QCOMPARE(lab->sweepAnswers().size(), 2 * layers);
    QVERIFY(sweepVerdict(lab, early->layer(), QString()) == Verdict::Unsafe);
    QVERIFY(sweepVerdict(lab, early->layer(), adapter) == Verdict::Safe);
    checkTitles(lab);
    checkFitsScreen(window);
    QVERIFY(icet::test::screenshot(&window, QStringLiteral("first_start_fix")));

    // The benign question: every pane answers it again.
    QTest::mouseClick(benign, Qt::LeftButton);
    QVERIFY(benign->isChecked());
    QCOMPARE(lab->prompt(), m_benign);
    QTRY_VERIFY_WITH_TIMEOUT(answered(lab, m_benign), 120000);
    for (ComparisonPane* p : lab->panes()) {
      QCOMPARE(p->answer()->record.prompt, m_benign.toStdString());
    }
    QCOMPARE(lab->panes()[2]->verdictText(), QStringLiteral("Safe"));
  }

  void showTheFixNeedsTheAdapter() {
    // The demo world without adapter/.
    QTemporaryDir copy;
    QVERIFY(copy.isValid());
    for (const char* entry : {"vlm", "guard", "reward", "sets", "lppo.json"}) {
      const QString name = QString::fromLatin1(entry);
      QVERIFY(QFile::link(m_demo + QLatin1Char('/') + name, copy.filePath(name)));
    }
    qputenv("ICET_DEMO_DIR", copy.path().toLocal8Bit());
    icet::ui::MainWindow window(icet::runtime::collect_runtime_info("test"));
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    window.openDefaults();
    ComparisonLab* lab = window.lab();
    auto* fix = lab->findChild<QPushButton*>(QStringLiteral("ShowFixButton"));
    QVERIFY(fix != nullptr);
    QVERIFY(fix->isVisible());  // still the first start's demo, with its prompts
    QVERIFY(!fix->isEnabled());
    QVERIFY(fix->toolTip().contains(QStringLiteral("adapter")));
    QVERIFY(fix->toolTip().contains(QStringLiteral("icet train")));
    QCOMPARE(lab->prompt(), m_harmful.prompt);
    QTRY_VERIFY_WITH_TIMEOUT(lab->service()->hasModel() && answered(lab, m_harmful.prompt), 120000);
    QCOMPARE(lab->panes().size(), 2);

    // Hidden, the banner comes back with Run ▸ Start the Demo, which stages the example again.
    auto* banner = lab->findChild<QWidget*>(QStringLiteral("DemoBanner"));
    QTest::mouseClick(lab->findChild<QToolButton*>(QStringLiteral("DemoClose")), Qt::LeftButton);
    QVERIFY(!banner->isVisible());
    lab->setPrompt(QStringLiteral("What colour is the square?"));
    lab->panes()[1]->setLayer(20);
    lab->addPane(3);
    auto* start = window.findChild<QAction*>(QStringLiteral("actionStartDemo"));
    QVERIFY(start != nullptr);
    start->trigger();
    QVERIFY(banner->isVisible());
    QCOMPARE(lab->prompt(), m_harmful.prompt);
    QCOMPARE(lab->panes().size(), 2);
    QTRY_VERIFY_WITH_TIMEOUT(answered(lab, m_harmful.prompt), 120000);
    const int defaultLayer = lab->service()->model()->defaultLayer;
    QCOMPARE(lab->panes()[0]->answer()->record.layer, defaultLayer);
    QCOMPARE(lab->panes()[1]->answer()->record.layer, lab->layerSlider()->value());
    QVERIFY(lab->panes()[1]->layer() < defaultLayer / 2);
    QCOMPARE(lab->panes()[1]->verdictText(), QStringLiteral("Unsafe"));
  }
};

// The offscreen platform's screen is 800 x 800 by default; the checks run on a common laptop
// screen instead, 1366 x 768 (the platform's configfile option).
int main(int argc, char** argv) {
  QTemporaryFile screens;
  if (qgetenv("QT_QPA_PLATFORM") == "offscreen" && screens.open()) {
    screens.write(R"({"screens": [{"name": "laptop", "x": 0, "y": 0, "width": 1366, "height": 768,
                     "logicalDpi": 96, "logicalBaseDpi": 96, "dpr": 1}]})");
    screens.flush();
    qputenv("QT_QPA_PLATFORM", "offscreen:configfile=" + screens.fileName().toLocal8Bit());
  }
  QApplication app(argc, argv);
  TestFirstStart test;
  QTEST_SET_MAIN_SOURCE_PATH
  return QTest::qExec(&test, argc, argv);
}

#include "test_first_start.moc"
