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
    QCOMPARE(c.model, (dir / "vlm").lexically_normal());
    QCOMPARE(c.train_set, (dir / "sets/train.jsonl").lexically_normal());
    QCOMPARE(c.layers, (std::vector<int64_t>{1, 2, 3}));
    const auto back = icet::rl::config_from_json(icet::rl::to_json(c), "again");
    QCOMPARE(icet::rl::to_json(back), icet::rl::to_json(c));
  }

  void badConfigsNameTheKey() {
    auto j = minimal();
    j["klcoef"] = 0.1;
    QVERIFY(errorOf(j).find("cfg.json: key 'klcoef'") != std::string::npos);
    j = minimal();
    j["layer_schedule"] = "random";
    QVERIFY(errorOf(j).find("'layer_schedule'") != std::string::npos);
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
