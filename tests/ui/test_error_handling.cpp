// Bad input never stops the app: a corrupt image, a folder that is not a model and an
// unreadable prompt set each show an error in the message bar, and the app keeps working (a
// valid model, image and prompt still give an answer afterwards).
#include <QFile>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include "core/runtime/diagnostics.h"
#include "support/ui.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"
#include "ui/message_bar.h"
#include "ui/training_dashboard.h"

using icet::ui::MessageBar;

class TestErrorHandling : public QObject {
  Q_OBJECT

 private:
  std::unique_ptr<icet::ui::MainWindow> m_window;
  QTemporaryDir m_tmp;

  MessageBar* bar() const { return m_window->messageBar(); }

 private Q_SLOTS:
  void initTestCase() {
    icet::test::init_ui_test("icet-studio-test-errors");
    QVERIFY(m_tmp.isValid());
    m_window = std::make_unique<icet::ui::MainWindow>(icet::runtime::collect_runtime_info("test"));
    m_window->resize(1200, 800);
    m_window->show();
    QVERIFY(QTest::qWaitForWindowExposed(m_window.get()));
  }

  void cleanupTestCase() { m_window.reset(); }

  void folderThatIsNotAModelShowsAnError() {
    const QString dir = m_tmp.filePath(QStringLiteral("not-a-model"));
    QDir().mkpath(dir);
    QFile f(dir + QStringLiteral("/notes.txt"));
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write("hello");
    f.close();
    const int before = bar()->count();
    m_window->lab()->openModel(dir);
    QTRY_VERIFY_WITH_TIMEOUT(bar()->count() > before && bar()->kind() == MessageBar::Error, 30000);
    QVERIFY(bar()->isVisible());
    QVERIFY2(bar()->text().contains(QStringLiteral("not-a-model")), qPrintable(bar()->text()));
    QVERIFY(!m_window->lab()->service()->hasModel());
  }

  void corruptImageShowsAnError() {
    auto* lab = m_window->lab();
    lab->openModel(icet::test::hf_fixture("llava"));
    QTRY_VERIFY_WITH_TIMEOUT(lab->service()->hasModel() && lab->service()->pending() == 0, 60000);
    const QString path = m_tmp.filePath(QStringLiteral("broken.png"));
    QFile f(path);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write("\x89PNG\r\n\x1a\n this is not really a png");
    f.close();
    const int before = bar()->count();
    lab->openImageFile(path);
    QTRY_VERIFY_WITH_TIMEOUT(bar()->count() > before && bar()->kind() == MessageBar::Error &&
                                 bar()->text().contains(QStringLiteral("broken.png")),
                             30000);
    QVERIFY(lab->service()->imageHash().isEmpty());
  }

  void unreadablePromptSetShowsAnError() {
    auto* dash = m_window->dashboard();
    dash->setModelPath(icet::test::hf_fixture("llava"));
    dash->setPromptSet(m_tmp.filePath(QStringLiteral("missing.jsonl")));
    int before = bar()->count();
    QVERIFY(!dash->startJob());
    QCOMPARE(bar()->count(), before + 1);
    QCOMPARE(bar()->kind(), MessageBar::Error);
    QVERIFY(bar()->text().contains(QStringLiteral("missing.jsonl")));
    QCOMPARE(dash->jobCount(), 0);

    // The gallery reads prompt sets too: a malformed line names the file and line.
    const QString bad = m_tmp.filePath(QStringLiteral("bad.jsonl"));
    QFile f(bad);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write("{\"id\": \"a\", \"image\": \"x.png\", \"prompt\": \"hi\"}\n{not json\n");
    f.close();
    before = bar()->count();
    QVERIFY(!m_window->lab()->loadGallery(bad));
    QCOMPARE(bar()->count(), before + 1);
    QVERIFY2(bar()->text().contains(QStringLiteral("bad.jsonl")), qPrintable(bar()->text()));
  }

  void appKeepsWorkingAfterTheErrors() {
    auto* lab = m_window->lab();
    QVERIFY(lab->openImageFile(icet::test::hf_fixture("llava") + QStringLiteral("/image.png")));
    lab->setPrompt(QStringLiteral("What do you see?"));
    lab->runAll();
    QTRY_VERIFY_WITH_TIMEOUT(!lab->isBusy(), 60000);
    for (auto* p : lab->panes()) {
      QVERIFY(p->answer().has_value());
      QVERIFY(!p->text().isEmpty());
    }
  }
};

QTEST_MAIN(TestErrorHandling)
#include "test_error_handling.moc"
