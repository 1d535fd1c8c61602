// A LoRA adapter in the comparison lab, on the tiny HF LLaVA fixture with an adapter written by
// the test (PEFT layout, non-zero B): after loading it into every pane, the panes answer again
// with the adapted model (the core engine's tokens with that adapter) and say so; clearing it
// gives the base answers back; a folder that is not an adapter shows an error and changes
// nothing; a session bundle brings the adapter along; the dashboard's "Compare with adapter"
// request opens the trained model and puts the adapter in a new pane next to the base one.
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <QLabel>
#include <QSignalSpy>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTest>

#include "core/engine/session.h"
#include "core/generate/sampling.h"
#include "core/models/llava.h"
#include "core/models/lora.h"
#include "core/runtime/diagnostics.h"
#include "core/vision/image.h"
#include "support/adapter.h"
#include "support/ui.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"
#include "ui/message_bar.h"
#include "ui/training_dashboard.h"

namespace fs = std::filesystem;
using icet::ui::ComparisonLab;
using icet::ui::ComparisonPane;
using icet::ui::MessageBar;

class TestAdapter : public QObject {
  Q_OBJECT

 private:
  std::unique_ptr<icet::ui::MainWindow> m_window;
  ComparisonLab* m_lab = nullptr;
  QTemporaryDir m_tmp;
  QString m_adapter;
  QVector<std::vector<int64_t>> m_base;  // per pane, without adapter

  static QString model() { return icet::test::hf_fixture("llava"); }
  static QString image() { return model() + QStringLiteral("/image.png"); }
  static QString prompt() { return QStringLiteral("What is in the picture?"); }
  MessageBar* bar() const { return m_window->messageBar(); }

  // A strong random adapter on every module (as in test_lora): greedy tokens change.
  static void writeAdapter(const fs::path& dir) { icet::test::write_random_adapter(model().toStdString(), dir); }

  QVector<std::vector<int64_t>> tokens() const {
    QVector<std::vector<int64_t>> out;
    for (ComparisonPane* p : m_lab->panes()) {
      out.push_back(p->answer() ? p->answer()->record.token_ids : std::vector<int64_t>{});
    }
    return out;
  }

  // Every pane finished with an answer made with `adapter` (empty: the base model).
  bool settledWith(const QString& adapter) {
    return QTest::qWaitFor(
        [&] {
          if (m_lab->isBusy() || m_lab->service()->pending() != 0) {
            return false;
          }
          for (ComparisonPane* p : m_lab->panes()) {
            if (!p->answer() || p->answer()->adapter != adapter) {
              return false;
            }
          }
          return true;
        },
        60000);
  }

  bool tagsShow(const QString& adapter) const {
    for (ComparisonPane* p : m_lab->panes()) {
      auto* tag = p->findChild<QLabel*>(QStringLiteral("PaneAdapter"));
      if (tag == nullptr || tag->isVisible() != !adapter.isEmpty() ||
          (!adapter.isEmpty() && !tag->text().contains(icet::ui::adapterName(adapter)))) {
        return false;
      }
    }
    return true;
  }

  QString summary() const { return m_lab->findChild<QLabel*>(QStringLiteral("ModelSummary"))->text(); }

 private Q_SLOTS:
  void initTestCase() {
    icet::test::init_ui_test("icet-studio-test-adapter");
    QVERIFY(m_tmp.isValid());
    m_adapter = m_tmp.filePath(QStringLiteral("lora-run/adapter"));
    writeAdapter(m_adapter.toStdString());
    m_window = std::make_unique<icet::ui::MainWindow>(icet::runtime::collect_runtime_info("test"));
    m_window->resize(1200, 800);
    m_window->show();
    QVERIFY(QTest::qWaitForWindowExposed(m_window.get()));
    m_lab = m_window->lab();
    m_lab->openModel(model());
    QTRY_VERIFY_WITH_TIMEOUT(m_lab->service()->hasModel() && m_lab->service()->pending() == 0, 60000);
    QVERIFY(m_lab->openImageFile(image()));
    m_lab->setPrompt(prompt());
    auto params = m_lab->samplingParams();
    params.max_new_tokens = 8;
    m_lab->setSamplingParams(params);
    m_lab->runAll();
    QVERIFY(settledWith(QString()));
    m_base = tokens();
    QVERIFY(!m_base[0].empty());
  }

  void cleanupTestCase() { m_window.reset(); }

  void panesAnswerWithTheAdapterUntilItIsCleared() {
    QSignalSpy changed(m_lab, &ComparisonLab::adapterChanged);
    m_lab->loadAdapter(m_adapter);
    QVERIFY(changed.wait(30000));
    QCOMPARE(m_lab->adapterPath(), m_adapter);
    QCOMPARE(m_lab->service()->model()->adapter, m_adapter);
    // The panes that showed base answers ran again, with the adapter.
    QVERIFY(settledWith(m_adapter));
    const auto adapted = tokens();
    QVERIFY2(adapted != m_base, "a non-zero adapter must change the greedy answer of some pane");
    // The same tokens as the core engine with this adapter.
    auto session = icet::engine::Session::open(model().toStdString());
    session->set_image(icet::vision::load_image(image().toStdString()));
    session->load_adapter(m_adapter.toStdString());
    for (ComparisonPane* p : m_lab->panes()) {
      const auto ref = session->generate(prompt().toStdString(), p->layer(), m_lab->samplingParams());
      QCOMPARE(p->answer()->record.token_ids, ref.token_ids);
    }
    // Shown: in the model summary, on every answer and in the message bar.
    QVERIFY2(summary().contains(QStringLiteral("LoRA adapter lora-run")), qPrintable(summary()));
    QVERIFY(tagsShow(m_adapter));
    QCOMPARE(bar()->kind(), MessageBar::Information);
    QVERIFY(bar()->text().contains(m_adapter));
    QVERIFY(icet::test::screenshot(m_window.get(), QStringLiteral("comparison_with_adapter")));

    m_lab->loadAdapter(QString());
    QVERIFY(changed.wait(30000));
    QVERIFY(m_lab->adapterPath().isEmpty());
    QVERIFY(settledWith(QString()));
    QCOMPARE(tokens(), m_base);
    QVERIFY(!summary().contains(QStringLiteral("LoRA")));
    QVERIFY(tagsShow(QString()));
  }

  void folderThatIsNotAnAdapterShowsAnError() {
    QSignalSpy changed(m_lab, &ComparisonLab::adapterChanged);
    m_lab->loadAdapter(m_adapter);
    QVERIFY(changed.wait(30000));
    QVERIFY(settledWith(m_adapter));
    const auto adapted = tokens();

    const QString notAdapter = m_tmp.filePath(QStringLiteral("not-an-adapter"));
    QDir().mkpath(notAdapter);
    QFile f(notAdapter + QStringLiteral("/notes.txt"));
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write("hello");
    f.close();
    const int before = bar()->count();
    m_lab->loadAdapter(notAdapter);
    QTRY_VERIFY_WITH_TIMEOUT(bar()->count() > before && bar()->kind() == MessageBar::Error, 30000);
    QVERIFY2(bar()->text().contains(QStringLiteral("not-an-adapter")), qPrintable(bar()->text()));
    QVERIFY(bar()->isVisible());
    // Nothing changed: the old adapter, its answers (not re-run), its labels.
    QTRY_VERIFY_WITH_TIMEOUT(m_lab->service()->pending() == 0, 30000);
    QCOMPARE(changed.count(), 1);
    QCOMPARE(m_lab->adapterPath(), m_adapter);
    QVERIFY(!m_lab->isBusy());
    QCOMPARE(tokens(), adapted);
    QVERIFY(tagsShow(m_adapter));
    // And the app keeps working.
    m_lab->runAll();
    QVERIFY(settledWith(m_adapter));
    QCOMPARE(tokens(), adapted);
  }

  void sessionBundleReplaysWithItsAdapter() {
    QCOMPARE(m_lab->adapterPath(), m_adapter);  // from the test before
    const auto adapted = tokens();
    const QString bundle = m_tmp.filePath(QStringLiteral("bundle"));
    QVERIFY(m_lab->exportBundle(bundle));
    QSignalSpy changed(m_lab, &ComparisonLab::adapterChanged);
    m_lab->loadAdapter(QString());
    QVERIFY(changed.wait(30000));
    QVERIFY(settledWith(QString()));
    QCOMPARE(tokens(), m_base);

    QVERIFY(m_lab->openBundle(bundle));
    QVERIFY(changed.wait(30000));
    QCOMPARE(m_lab->adapterPath(), m_adapter);
    QVERIFY(settledWith(m_adapter));
    QCOMPARE(tokens(), adapted);
  }

  void dashboardRequestOpensTheTrainedModelAndTheAdapter() {
    // "Compare with adapter" from the training tab sends the job's adapter and model: a new
    // pane answers with it next to the base pane at the same layer; the other panes stay base.
    auto* dash = m_window->dashboard();
    m_window->tabs()->setCurrentWidget(dash);
    QSignalSpy opened(m_lab->service(), &icet::ui::ModelService::modelOpened);
    QSignalSpy changed(m_lab, &ComparisonLab::adapterChanged);
    m_lab->loadAdapter(QString());
    QVERIFY(changed.wait(30000));
    QVERIFY(settledWith(QString()));
    const int panes = static_cast<int>(m_lab->panes().size());
    const int layer = m_lab->panes()[1]->layer();
    Q_EMIT dash->loadAdapterRequested(m_adapter, model());
    QCOMPARE(m_window->tabs()->currentWidget(), m_lab);
    QVERIFY(changed.wait(30000));
    QCOMPARE(opened.count(), 0);  // the lab had that model open already
    QCOMPARE(m_lab->adapterPath(), m_adapter);
    QCOMPARE(static_cast<int>(m_lab->panes().size()), panes + 1);
    ComparisonPane* aligned = m_lab->panes()[2];
    QCOMPARE(aligned->adapter(), m_adapter);
    QCOMPARE(aligned->layer(), layer);
    QTRY_VERIFY_WITH_TIMEOUT(!m_lab->isBusy() && aligned->answer() && aligned->answer()->adapter == m_adapter, 60000);
    QCOMPARE(m_lab->panes()[1]->answer()->adapter, QString());
    QCOMPARE(m_lab->panes()[1]->answer()->record.token_ids, m_base[1]);
    QVERIFY(aligned->answer()->record.token_ids != m_base[1]);

    // A job trained on another model: the lab opens that one first (its copy here).
    const QString copy = m_tmp.filePath(QStringLiteral("llava-copy"));
    QDir().mkpath(copy);
    for (const QString& name : QDir(model()).entryList(QDir::Files)) {
      QVERIFY(QFile::copy(model() + QLatin1Char('/') + name, copy + QLatin1Char('/') + name));
    }
    Q_EMIT dash->loadAdapterRequested(m_adapter, copy);
    QVERIFY(opened.wait(30000));
    QCOMPARE(m_lab->service()->model()->path, copy);
    QTRY_VERIFY_WITH_TIMEOUT(m_lab->adapterPath() == m_adapter && m_lab->service()->pending() == 0, 30000);
    QVERIFY(summary().contains(QStringLiteral("LoRA adapter lora-run")));
    QCOMPARE(m_lab->panes()[2]->adapter(), m_adapter);  // the same comparison, kept
  }
};

QTEST_MAIN(TestAdapter)
#include "test_adapter.moc"
