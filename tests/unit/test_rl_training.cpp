#include <QTemporaryDir>
#include <QTest>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/io/safetensors.h"
#include "core/eval/run.h"
#include "core/rl/commands.h"
#include "core/rl/trainer.h"
#include "support/rl_world.h"

namespace fs = std::filesystem;
using icet::rl::TrainingRun;

// L-PPO and SFT runs on the tiny fixture world: exact resume, cancellation, NaN handling,
// periodic evaluation and the saved adapter in the engine's evaluation.
class TestRlTraining : public QObject {
  Q_OBJECT

 private:
  // metrics.jsonl rows without wall-clock values (time/, perf/, seconds).
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
  void resumeEqualsUninterruptedRun() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    const auto config = icet::test::tiny_config(root);

    auto whole = TrainingRun::create(config, root / "whole");
    whole->run(nullptr, {});
    QCOMPARE(whole->step(), int64_t{4});

    auto first = TrainingRun::create(config, root / "split");
    first->set_max_steps(2);
    first->run(nullptr, {});
    QCOMPARE(first->step(), int64_t{2});
    first.reset();
    auto second = TrainingRun::resume(root / "split");
    QCOMPARE(second->step(), int64_t{2});
    second->run(nullptr, {});
    QCOMPARE(second->step(), int64_t{4});

    const auto a = metrics_of(root / "whole"), b = metrics_of(root / "split");
    QCOMPARE(a.size(), size_t{4});
    QCOMPARE(b.size(), size_t{4});
    for (size_t i = 0; i < a.size(); ++i) {
      // Exact: same seed, same thread count, counter-based RNG streams, bitwise checkpoints.
      QVERIFY2(a[i] == b[i], ("step " + std::to_string(i + 1) + ":\n" + a[i].dump() + "\n" + b[i].dump()).c_str());
    }
    for (const char* key : {"objective/kl", "objective/scores", "loss/policy_avg", "loss/value_avg", "val/ratio",
                            "policy/approxkl_avg", "policy/clipfrac_avg", "objective/entropy", "lr", "episode"}) {
      QVERIFY2(a.back().contains(key), key);
    }
    // keep_last = 2
    int ckpts = 0;
    for (const auto& e : fs::directory_iterator(root / "whole" / "checkpoints")) ckpts += e.path().filename().string().rfind("step-", 0) == 0;
    QCOMPARE(ckpts, 2);
    QVERIFY(fs::exists(root / "whole" / "adapter" / "adapter_model.safetensors"));

    // CSV export
    icet::rl::export_metrics_csv(root / "whole" / "metrics.jsonl", root / "m.csv");
    std::ifstream csv(root / "m.csv");
    std::string header;
    std::getline(csv, header);
    QVERIFY(header.rfind("step,seconds,", 0) == 0);
    QVERIFY(header.find("objective/kl") != std::string::npos);
  }

  void cancelStopsWithinAMinibatchAndResumes() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    config.checkpoint_every = 0;
    auto run = TrainingRun::create(config, root / "run");
    std::atomic<bool> cancel{false};
    // Cancel when step 2's update starts: step 2 is dropped, step 1 is kept and checkpointed.
    run->run(&cancel, [&](const icet::rl::TrainProgress& p) {
      if (p.stage == "update" && p.step == 1) cancel = true;
    });
    QCOMPARE(run->step(), int64_t{1});
    QVERIFY(!icet::rl::latest_checkpoint(root / "run").empty());
    QCOMPARE(run->drain_metrics().size(), size_t{1});
    QVERIFY(run->drain_metrics().empty());  // drained
    auto again = TrainingRun::resume(root / "run");
    again->run(nullptr, {});
    QCOMPARE(again->step(), int64_t{4});
  }

  void nanRewardStopsAndKeepsTheLastGoodCheckpoint() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    auto run = TrainingRun::create(config, root / "run");
    run->set_max_steps(1);
    run->run(nullptr, {});
    run.reset();
    // A reward model whose score head is NaN.
    const fs::path bad = root / "nan_rm";
    fs::copy(icet::test::fixture("gpt2_rm"), bad, fs::copy_options::recursive);
    {
      std::vector<std::pair<std::string, at::Tensor>> tensors;
      {
        auto file = icet::io::SafetensorsFile::open(bad / "model.safetensors");
        for (const auto& name : file->names()) {
          at::Tensor t = file->tensor(name).clone();
          if (name.find("score") != std::string::npos) t.fill_(std::nan(""));
          tensors.emplace_back(name, t);
        }
      }
      icet::io::save_safetensors(bad / "model.safetensors", tensors, {{"format", "pt"}});
    }
    nlohmann::json cfg = icet::rl::to_json(config);
    cfg["reward_model"] = bad.string();
    std::ofstream(root / "run" / "config.json") << cfg.dump(2);
    auto resumed = TrainingRun::resume(root / "run");
    std::string message;
    try {
      resumed->run(nullptr, {});
    } catch (const icet::Error& e) {
      message = e.what();
    }
    QVERIFY2(message.find("not finite") != std::string::npos && message.find("step 2") != std::string::npos,
             message.c_str());
    QCOMPARE(icet::rl::latest_checkpoint(root / "run").filename().string(), std::string("step-00000001"));
  }

  void sftBaselineAndPeriodicEvaluation() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    config.method = "sft";
    config.max_steps = 2;
    config.eval_every = 2;
    auto run = TrainingRun::create(config, root / "sft");
    run->run(nullptr, {});
    const auto rows = run->drain_metrics();
    QCOMPARE(rows.size(), size_t{2});
    QVERIFY(std::isfinite(rows.back().values.at("loss/sft")));
    const auto evals = run->drain_evals();
    QCOMPARE(evals.size(), size_t{2});  // step 0 and step 2
    QCOMPARE(evals.front().step, int64_t{0});
    QCOMPARE(evals.front().asr_by_layer.size(), size_t{3});  // layers 1, 3, 5 (5 is also the default)
  }

  void adapterLoadsInTheEngineEvaluation() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    config.max_steps = 1;
    auto run = TrainingRun::create(config, root / "run");
    run->run(nullptr, {});
    // A training run's adapter/ is answered beside the base model by the evaluation path.
    icet::eval::EvalPlan plan;
    plan.model = icet::test::fixture("llava");
    plan.adapters = {root / "run" / "adapter"};
    plan.set = root / "data" / "eval.jsonl";
    plan.judge = icet::test::fixture("llama_guard");
    plan.layers = "1-3";
    plan.max_new_tokens = 4;
    const auto outcome = icet::eval::run_evaluation(plan);
    const auto j = icet::eval::eval_summary_json(outcome);
    for (const char* key : {"default_layer", "asr_by_layer", "refusal_by_layer"}) QVERIFY2(j.contains(key), key);
    QCOMPARE(j.at("items").at("harmful").get<int>(), 2);
    QVERIFY(j.at("asr_by_layer").contains("2"));
    QCOMPARE(outcome.metrics.runs.size(), size_t{2});  // base, adapter
    QCOMPARE(outcome.metrics.deltas.size(), size_t{1});
    QVERIFY(outcome.meta.at("adapters").size() == 1);
  }
};

QTEST_GUILESS_MAIN(TestRlTraining)
#include "test_rl_training.moc"
