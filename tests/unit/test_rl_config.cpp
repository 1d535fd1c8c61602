#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/rl/trainer.h"
#include "support/errors.h"

namespace fs = std::filesystem;
using icet::test::input_error_of;

// L-PPO configs: defaults from PAPER.md, round trip, relative paths, and errors naming the key.
class TestRlConfig : public QObject {
  Q_OBJECT

 private:
  static nlohmann::json minimal() {
    return {{"model", "vlm"}, {"reward_model", "reward"}, {"train_set", "sets/train.jsonl"}};
  }
  static std::string errorOf(const nlohmann::json& j) {
    return input_error_of([&] { icet::rl::config_from_json(j, "cfg.json"); });
  }

 private Q_SLOTS:
  void defaultsFollowThePaper() {
    const auto c = icet::rl::config_from_json(minimal(), "cfg.json");
    QCOMPARE(c.lora_r, int64_t{64});
    QCOMPARE(c.lora_alpha, 128.0);
    QCOMPARE(c.learning_rate, 1e-5);
    QCOMPARE(c.ppo_epochs, int64_t{4});
    QCOMPARE(c.cliprange, 0.2);
    QCOMPARE(c.cliprange_value, 0.2);
    QCOMPARE(c.vf_coef, 0.1);
    QCOMPARE(c.gamma, 1.0);
    QCOMPARE(c.lam, 0.95);
    QCOMPARE(c.kl_coef, 0.2);
    QCOMPARE(c.kl_target, 6.0);
    QCOMPARE(c.temperature, 0.7);
    QCOMPARE(c.max_new_tokens, int64_t{128});
    QCOMPARE(c.batch_size, int64_t{64});
  }

  void roundTripAndRelativePaths() {
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString();
    auto j = minimal();
    j["layers"] = {1, 2, 3};
    j["kl_estimator"] = "k1";
    j["seed"] = 42;
    std::ofstream(dir / "c.json") << j.dump();
    const auto c = icet::rl::load_config(dir / "c.json");
    QVERIFY(c.model == (dir / "vlm").lexically_normal());
    QVERIFY(c.train_set == (dir / "sets/train.jsonl").lexically_normal());
    QVERIFY(c.layers == (std::vector<int64_t>{1, 2, 3}));
    const auto back = icet::rl::config_from_json(icet::rl::to_json(c), "again");
    QVERIFY(icet::rl::to_json(back) == icet::rl::to_json(c));
  }

  // The named schedules: fixed / set / cycle / random / curriculum (and the old name "uniform").
  void schedulesOpenTheirLayers() {
    using icet::rl::open_layers;
    auto j = minimal();
    j["layer_schedule"] = "uniform";
    j["layers"] = {3, 5};
    auto c = icet::rl::config_from_json(j, "cfg.json");
    QCOMPARE(c.layer_schedule, std::string("set"));
    QVERIFY(open_layers(c, 1, 24, 23) == (std::vector<int64_t>{3, 5}));
    j = minimal();
    j["layer_schedule"] = "random";
    c = icet::rl::config_from_json(j, "cfg.json");
    QCOMPARE(open_layers(c, 7, 24, 23).size(), size_t{24});
    QCOMPARE(open_layers(c, 7, 24, 23).front(), int64_t{1});
    QCOMPARE(open_layers(icet::rl::config_from_json(minimal(), "cfg.json"), 1, 24, 23), std::vector<int64_t>{23});
    // Curriculum: 2 of 5 open at step 1, all 5 at step 7 (one more every 2 steps).
    j = minimal();
    j["layer_schedule"] = "curriculum";
    j["layers"] = {23, 20, 18, 10, 1};
    j["curriculum_start"] = 2;
    j["curriculum_steps"] = 7;
    c = icet::rl::config_from_json(j, "cfg.json");
    QVERIFY(open_layers(c, 1, 24, 23) == (std::vector<int64_t>{23, 20}));
    QVERIFY(open_layers(c, 2, 24, 23) == (std::vector<int64_t>{23, 20}));
    QVERIFY(open_layers(c, 3, 24, 23) == (std::vector<int64_t>{23, 20, 18}));
    QVERIFY(open_layers(c, 5, 24, 23) == (std::vector<int64_t>{23, 20, 18, 10}));
    QVERIFY(open_layers(c, 7, 24, 23) == (std::vector<int64_t>{23, 20, 18, 10, 1}));
    QVERIFY(open_layers(c, 100, 24, 23) == (std::vector<int64_t>{23, 20, 18, 10, 1}));
  }

  // A config whose files are not there names the key and the path (before a run folder is made).
  void missingFilesNameTheKey() {
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString();
    fs::create_directories(dir / "vlm");
    auto j = minimal();
    std::ofstream(dir / "c.json") << j.dump();
    const auto c = icet::rl::load_config(dir / "c.json");
    const std::string e = input_error_of([&] { icet::rl::check_paths(c, "c.json"); });
    QVERIFY2(e.find("c.json: key 'reward_model'") != std::string::npos, e.c_str());
    QVERIFY2(e.find((dir / "reward").string()) != std::string::npos, e.c_str());
    QVERIFY(!input_error_of([&] { icet::rl::TrainingRun::create(c, dir / "run"); }).empty());
    QVERIFY(!fs::exists(dir / "run"));
  }

  void badConfigsNameTheKey() {
    auto j = minimal();
    j["klcoef"] = 0.1;
    QVERIFY(errorOf(j).find("cfg.json: key 'klcoef'") != std::string::npos);
    j = minimal();
    j["layer_schedule"] = "sideways";
    QVERIFY(errorOf(j).find("'layer_schedule'") != std::string::npos);
    j = minimal();
    j["layer_schedule"] = "random";  // every layer of the model: a list is a mistake
    j["layers"] = {1, 2};
    QVERIFY(errorOf(j).find("'layers'") != std::string::npos);
    j = minimal();
    j["layer_schedule"] = "curriculum";  // needs the order
    QVERIFY(errorOf(j).find("'layers'") != std::string::npos);
    j = minimal();
    j["curriculum_start"] = 0;
    QVERIFY(errorOf(j).find("'curriculum_start'") != std::string::npos);
    j = minimal();
    j["batch_size"] = "64";
    QVERIFY(errorOf(j).find("'batch_size'") != std::string::npos);
    j = minimal();
    j["num_minibatches"] = 128;
    QVERIFY(errorOf(j).find("'num_minibatches'") != std::string::npos);
    j = minimal();
    j.erase("model");
    QVERIFY(errorOf(j).find("'model'") != std::string::npos);
    j = minimal();
    j["layer_schedule"] = "fixed";
    j["layers"] = {1, 2};
    QVERIFY(errorOf(j).find("'layers'") != std::string::npos);
    j = minimal();
    j["lora_targets"] = {"qkv"};
    QVERIFY(errorOf(j).find("'lora_targets'") != std::string::npos);
    j = minimal();
    j["eval_every"] = 5;  // no judge / eval_set
    QVERIFY(errorOf(j).find("'eval_every'") != std::string::npos);
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString();
    std::ofstream(dir / "broken.json") << "{ \"model\": ";
    QVERIFY(input_error_of([&] { icet::rl::load_config(dir / "broken.json"); }).find("broken.json") != std::string::npos);
  }
};

QTEST_GUILESS_MAIN(TestRlConfig)
#include "test_rl_config.moc"
