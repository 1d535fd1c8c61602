// The model worker under shutdown: closing the app while a model loads (minutes for a 7B
// checkpoint on a CPU) returns within one tensor instead of waiting for the whole load.
#include <QElapsedTimer>
#include <QSignalSpy>
#include <QTest>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/base/error.h"
#include "support/ui.h"
#include "ui/model_service.h"

using icet::ui::ModelService;

class TestModelService : public QObject {
  Q_OBJECT

  // A load of 1000 "tensors" of 10 ms each (10 s in all) that stops when asked.
  static ModelService::ModelOpener slowOpener(std::shared_ptr<std::atomic<int>> steps) {
    return [steps](const std::string&, const icet::engine::ProgressCallback& progress)
               -> std::unique_ptr<icet::engine::Session> {
      for (size_t i = 0; i < 1000; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        ++*steps;
        if (progress && !progress(i + 1, 1000)) {
          throw icet::Cancelled();
        }
      }
      throw icet::InputError("the slow test opener never yields a model");
    };
  }

 private Q_SLOTS:
  void initTestCase() { icet::test::init_ui_test("icet-studio-test-model-service"); }

  void closingDuringALoadReturnsWithinATensor() {
    auto steps = std::make_shared<std::atomic<int>>(0);
    auto service = std::make_unique<ModelService>(nullptr, slowOpener(steps));
    service->openModel(QStringLiteral("/snapshots/slow"));
    QTRY_VERIFY(steps->load() >= 3);  // the load is under way on the worker
    QElapsedTimer timer;
    timer.start();
    service.reset();
    const qint64 ms = timer.elapsed();
    QVERIFY2(ms < 1000, qPrintable(QStringLiteral("closing waited %1 ms for the load").arg(ms)));
    QVERIFY(steps->load() < 200);
  }

  // Stop (cancelAll) during a load reports the load as failed and leaves the service usable.
  void stopCancelsALoadAndTheServiceStaysUsable() {
    auto steps = std::make_shared<std::atomic<int>>(0);
    ModelService service(nullptr, slowOpener(steps));
    QSignalSpy failed(&service, &ModelService::failed);
    service.openModel(QStringLiteral("/snapshots/slow"));
    QTRY_VERIFY(steps->load() >= 3);
    service.cancelAll();
    QTRY_COMPARE(failed.count(), 1);
    QCOMPARE(failed.at(0).at(0).toString(), QStringLiteral("model"));
    QVERIFY(failed.at(0).at(1).toString().contains(QStringLiteral("cancelled")));
    QVERIFY(steps->load() < 200);
    QVERIFY(!service.hasModel());
    QTRY_COMPARE(service.pending(), 0);

    const int before = steps->load();
    service.openModel(QStringLiteral("/snapshots/slow"));  // a new request is not pre-cancelled
    QTRY_VERIFY(steps->load() >= before + 3);
  }
};

QTEST_MAIN(TestModelService)
#include "test_model_service.moc"
