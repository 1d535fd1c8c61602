#include <QTest>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/base/error.h"
#include "core/jobs/job.h"

class TestJobs : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void succeedsAndReportsProgress() {
    icet::jobs::Job job("count");
    std::atomic<int> reports{0};
    job.start(
        [](icet::jobs::JobContext& ctx) {
          for (int i = 1; i <= 4; ++i) ctx.report("counting", i / 4.0);
        },
        [&](const icet::jobs::Progress&) { ++reports; });
    QVERIFY(job.wait(10.0));
    QCOMPARE(job.state(), icet::jobs::JobState::Succeeded);
    QCOMPARE(reports.load(), 4);
    QCOMPARE(job.progress().fraction, 1.0);
    QCOMPARE(QString::fromStdString(job.progress().stage), QStringLiteral("counting"));
  }

  void failureKeepsTheMessage() {
    icet::jobs::Job job("fail");
    job.start([](icet::jobs::JobContext&) { throw icet::InputError("model.safetensors: truncated"); });
    QVERIFY(job.wait(10.0));
    QCOMPARE(job.state(), icet::jobs::JobState::Failed);
    QCOMPARE(QString::fromStdString(job.error()), QStringLiteral("model.safetensors: truncated"));
  }

  void cancelStopsTheWork() {
    icet::jobs::Job job("loop");
    std::atomic<bool> started{false};
    job.start([&](icet::jobs::JobContext& ctx) {
      started = true;
      while (!ctx.cancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      throw icet::Cancelled();
    });
    while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    QCOMPARE(job.state(), icet::jobs::JobState::Running);
    QVERIFY(!job.wait(0.01));
    job.cancel();
    QVERIFY(job.wait(10.0));
    QCOMPARE(job.state(), icet::jobs::JobState::Cancelled);
  }

  void destructorCancelsAndJoins() {
    std::atomic<bool> finished{false};
    {
      icet::jobs::Job job("long");
      job.start([&](icet::jobs::JobContext& ctx) {
        while (!ctx.cancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        finished = true;
      });
    }
    QVERIFY(finished.load());
  }

  void startTwiceIsAnError() {
    icet::jobs::Job job("once");
    job.start([](icet::jobs::JobContext&) {});
    QVERIFY_THROWS_EXCEPTION(icet::Error, job.start([](icet::jobs::JobContext&) {}));
    job.wait();
  }
};

QTEST_GUILESS_MAIN(TestJobs)
#include "test_jobs.moc"
