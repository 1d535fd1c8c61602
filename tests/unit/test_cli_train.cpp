#include <QCoreApplication>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
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

    const auto resumed = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--resume"), QString::fromStdString((root / "killed").string()), QStringLiteral("--json")},
                                             tmp.path());
    QVERIFY2(resumed.code == 0, resumed.err.constData());
    const auto summary = nlohmann::json::parse(resumed.out.toStdString());
    QCOMPARE(summary.at("step").get<int64_t>(), int64_t{3});

    const auto whole = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--config"), QString::fromStdString((root / "cfg.json").string()), QStringLiteral("--out"),
                                            QString::fromStdString((root / "whole").string()), QStringLiteral("--json")},
                                           tmp.path());
    QVERIFY2(whole.code == 0, whole.err.constData());
    const auto a = metrics_of(root / "whole"), b = metrics_of(root / "killed");
    QCOMPARE(b.size(), size_t{3});  // step 2's first attempt was cut from the log
    QCOMPARE(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) QVERIFY2(a[i] == b[i], (a[i].dump() + "\n" + b[i].dump()).c_str());
  }

  // Killed between swapping step 2's adapter in and clearing step 1's: adapter/ holds a whole
  // adapter (step 2's), never nothing; the leftover is cleared and the run resumes. (Removing
  // adapter/ and then renaming the new one in left no adapter/ when killed in between.)
  void sigkillDuringAdapterSwapLeavesAWholeAdapter() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    config.max_steps = 3;
    config.keep_last = 3;
    config.eval_every = 0;
    std::ofstream(root / "cfg.json") << icet::rl::to_json(config).dump(2);
    const fs::path run = root / "run";

    QProcess p;
    auto env = QProcessEnvironment::systemEnvironment();
    env.insert(QStringLiteral("XDG_DATA_HOME"), tmp.path());
    env.insert(QStringLiteral("ICET_TEST_KILL_IN_FOLDER_SWAP"), QStringLiteral("adapter"));
    p.setProcessEnvironment(env);
    p.start(QStringLiteral(ICET_CLI_PATH), {QStringLiteral("train"), QStringLiteral("--config"),
                                             QString::fromStdString((root / "cfg.json").string()), QStringLiteral("--out"),
                                             QString::fromStdString(run.string()), QStringLiteral("--json")});
    QVERIFY(p.waitForFinished(120000));
    QCOMPARE(p.exitStatus(), QProcess::CrashExit);  // at step 2: step 1 had no adapter/ to swap with
    QCOMPARE(icet::rl::latest_checkpoint(run).filename().string(), std::string("step-00000002"));
    auto bytes = [](const fs::path& f) {
      std::ifstream in(f, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    const std::string adapter = bytes(run / "adapter" / "adapter_model.safetensors");
    QVERIFY(!adapter.empty());
    QVERIFY(adapter == bytes(run / "checkpoints" / "step-00000002" / "adapter_model.safetensors"));
    QVERIFY(fs::exists(run / "adapter" / "adapter_config.json"));

    const auto resumed = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--resume"), QString::fromStdString(run.string()), QStringLiteral("--json")},
                                             tmp.path());
    QVERIFY2(resumed.code == 0, resumed.err.constData());
    QVERIFY(bytes(run / "adapter" / "adapter_model.safetensors") ==
            bytes(run / "checkpoints" / "step-00000003" / "adapter_model.safetensors"));
    QVERIFY(!fs::exists(run / ".adapter.tmp"));
  }

  // One trainer per run folder: from create/resume until its run() returns (here: created, not
  // started), resuming its folder from another process or in this one is refused with the
  // holder's pid, and works once it is gone. A killed holder leaves no stale lock (the kernel
  // drops it: sigkillDuringAdapterSwapLeavesAWholeAdapter resumes after a kill).
  void aRunFolderTakesOneTrainerAtATime() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    const fs::path run = root / "run";
    auto first = icet::rl::TrainingRun::create(config, run);
    const QString pid = QString::number(QCoreApplication::applicationPid());

    const auto other = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--resume"), QString::fromStdString(run.string()), QStringLiteral("--json")},
                                           tmp.path());
    QVERIFY(other.code != 0);
    QVERIFY2(other.err.contains("in use by another job (process " + pid.toUtf8() + ")"), other.err.constData());
    try {
      icet::rl::TrainingRun::resume(run);
      QFAIL("a second trainer on a live run's folder was not refused");
    } catch (const icet::InputError& e) {
      QVERIFY2(QString::fromUtf8(e.what()).contains(QStringLiteral("in use by another job")), e.what());
    }
    try {
      icet::rl::TrainingRun::create(config, root / "run");
      QFAIL("a new run in a live run's folder was not refused");
    } catch (const icet::InputError&) {
    }
    first.reset();
    QVERIFY(icet::rl::TrainingRun::resume(run) != nullptr);
  }

  // `icet train --layers 1,3 --schedule fixed`: the paper's reading, one run (its own adapter)
  // per exit layer; a layer the model does not have, or layers with "random", name the key.
  void layersOptionRunsOneRunPerFixedLayer() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    config.max_steps = 1;
    config.checkpoint_every = 0;
    std::ofstream(root / "cfg.json") << icet::rl::to_json(config).dump(2);
    const QString cfg = QString::fromStdString((root / "cfg.json").string());
    const QString out = QString::fromStdString((root / "per-layer").string());
    const auto r = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--config"), cfg, QStringLiteral("--out"), out,
                                        QStringLiteral("--layers"), QStringLiteral("1,3"), QStringLiteral("--schedule"),
                                        QStringLiteral("fixed"), QStringLiteral("--json")},
                                       tmp.path());
    QVERIFY2(r.code == 0, r.err.constData());
    const auto summary = nlohmann::json::parse(r.out.toStdString());
    QCOMPARE(summary.at("runs").size(), size_t{2});
    for (const char* name : {"layer-01", "layer-03"}) {
      QVERIFY2(fs::is_regular_file(root / "per-layer" / name / "adapter" / "adapter_model.safetensors"), name);
      const auto c = icet::rl::load_config(root / "per-layer" / name / "config.json");
      QCOMPARE(c.layers.size(), size_t{1});
      QCOMPARE(c.layer_schedule, std::string("fixed"));
    }
    QCOMPARE(icet::rl::load_config(root / "per-layer" / "layer-03" / "config.json").layers.front(), int64_t{3});
    std::ifstream samples(root / "per-layer" / "layer-03" / "samples.jsonl");
    std::string line;
    while (std::getline(samples, line)) QCOMPARE(nlohmann::json::parse(line).at("layer").get<int64_t>(), int64_t{3});

    const auto too_deep = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--config"), cfg, QStringLiteral("--out"),
                                               QString::fromStdString((root / "deep").string()), QStringLiteral("--layers"),
                                               QStringLiteral("1,99")},
                                              tmp.path());
    QCOMPARE(too_deep.code, 1);
    QVERIFY2(too_deep.err.contains("99"), too_deep.err.constData());
    QVERIFY(!fs::exists(root / "deep"));
    const auto random = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--config"), cfg, QStringLiteral("--layers"),
                                             QStringLiteral("1,3"), QStringLiteral("--schedule"), QStringLiteral("random")},
                                            tmp.path());
    QCOMPARE(random.code, 1);
    QVERIFY2(random.err.contains("random"), random.err.constData());
    // A schedule layer past the model's layers, written in the file, names the key.
    config.layers = {2, 40};
    std::ofstream(root / "deep.json") << icet::rl::to_json(config).dump(2);
    const auto deep_file = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--config"),
                                                QString::fromStdString((root / "deep.json").string()), QStringLiteral("--out"),
                                                QString::fromStdString((root / "deep2").string())},
                                               tmp.path());
    QCOMPARE(deep_file.code, 1);
    QVERIFY2(deep_file.err.contains("key 'layers'") && deep_file.err.contains("40"), deep_file.err.constData());
    QVERIFY(!fs::exists(root / "deep2"));  // checked before the run folder is made
  }

  void badConfigIsReportedByKey() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    std::ofstream(root / "bad.json") << R"({"model": "x", "train_set": "t.jsonl", "reward_model": "r", "ppo_epochs": 0})";
    const auto r = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--config"), QString::fromStdString((root / "bad.json").string())}, tmp.path());
    QCOMPARE(r.code, 1);
    QVERIFY2(r.err.contains("bad.json: key 'ppo_epochs'"), r.err.constData());
    const auto none = icet::test::run_cli({QStringLiteral("train"), QStringLiteral("--resume"), QString::fromStdString((root / "nothing").string())}, tmp.path());
    QCOMPARE(none.code, 1);
    QVERIFY2(none.err.contains("config.json"), none.err.constData());
  }
};

QTEST_GUILESS_MAIN(TestCliTrain)
#include "test_cli_train.moc"
