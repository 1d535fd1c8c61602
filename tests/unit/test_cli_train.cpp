#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/rl/trainer.h"
#include "support/cli.h"
#include "support/rl_world.h"

namespace fs = std::filesystem;

// `icet train` as a user runs it: a SIGKILL in the middle of a checkpoint write leaves the
// previous checkpoint loadable and the run resumes to the same metrics; bad configs are
// reported by file and key.
class TestCliTrain : public QObject {
  Q_OBJECT

 private:
  static std::vector<nlohmann::json> metrics_of(const fs::path& run) {
    std::vector<nlohmann::json> rows;
    std::ifstream in(run / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      j.erase("seconds");
      for (auto it = j.begin(); it != j.end();) {
        if (it.key().rfind("time/", 0) == 0 || it.key().rfind("perf/", 0) == 0) it = j.erase(it);
        else ++it;
      }
      rows.push_back(j);
    }
    return rows;
  }

 private Q_SLOTS:
  void sigkillDuringCheckpointWriteThenResume() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    config.max_steps = 3;
    std::ofstream(root / "cfg.json") << icet::rl::to_json(config).dump(2);

    // Killed while step 2's checkpoint is half written.
    QProcess p;
    auto env = QProcessEnvironment::systemEnvironment();
    env.insert(QStringLiteral("XDG_DATA_HOME"), tmp.path());
    env.insert(QStringLiteral("ICET_TEST_KILL_IN_CHECKPOINT"), QStringLiteral("2"));
    p.setProcessEnvironment(env);
    p.start(QStringLiteral(ICET_CLI_PATH), {QStringLiteral("train"), QStringLiteral("--config"),
                                             QString::fromStdString((root / "cfg.json").string()), QStringLiteral("--out"),
                                             QString::fromStdString((root / "killed").string()), QStringLiteral("--json")});
    QVERIFY(p.waitForFinished(120000));
    QCOMPARE(p.exitStatus(), QProcess::CrashExit);
    QVERIFY(fs::exists(root / "killed" / "checkpoints" / ".tmp-step-00000002"));  // the torn write
    QCOMPARE(icet::rl::latest_checkpoint(root / "killed").filename().string(), std::string("step-00000001"));

    const auto resumed = icet::test::run_cli({"train", "--resume", QString::fromStdString((root / "killed").string()), "--json"},
                                             tmp.path());
    QVERIFY2(resumed.code == 0, resumed.err.constData());
    const auto summary = nlohmann::json::parse(resumed.out.toStdString());
    QCOMPARE(summary.at("step").get<int64_t>(), int64_t{3});

    const auto whole = icet::test::run_cli({"train", "--config", QString::fromStdString((root / "cfg.json").string()), "--out",
                                            QString::fromStdString((root / "whole").string()), "--json"},
                                           tmp.path());
    QVERIFY2(whole.code == 0, whole.err.constData());
    const auto a = metrics_of(root / "whole"), b = metrics_of(root / "killed");
    QCOMPARE(b.size(), size_t{3});  // step 2's first attempt was cut from the log
    QCOMPARE(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) QVERIFY2(a[i] == b[i], (a[i].dump() + "\n" + b[i].dump()).c_str());
  }

  void badConfigIsReportedByKey() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    std::ofstream(root / "bad.json") << R"({"model": "x", "train_set": "t.jsonl", "reward_model": "r", "ppo_epochs": 0})";
    const auto r = icet::test::run_cli({"train", "--config", QString::fromStdString((root / "bad.json").string())}, tmp.path());
    QCOMPARE(r.code, 1);
    QVERIFY2(r.err.contains("bad.json: key 'ppo_epochs'"), r.err.constData());
    const auto none = icet::test::run_cli({"train", "--resume", QString::fromStdString((root / "nothing").string())}, tmp.path());
    QCOMPARE(none.code, 1);
    QVERIFY2(none.err.contains("config.json"), none.err.constData());
  }
};

QTEST_GUILESS_MAIN(TestCliTrain)
#include "test_cli_train.moc"
