// L-PPO on a chosen device and dtype (issue 18): a bfloat16 run on the CPU, the memory check
// before a run, gradient checkpointing, and rollouts generated exactly as the lab generates.

#include <QTemporaryDir>
#include <QTest>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <filesystem>

#include "core/engine/session.h"
#include "core/generate/sampling.h"
#include "core/io/safetensors.h"
#include "core/models/llava.h"
#include "core/models/lora.h"
#include "core/rl/memory.h"
#include "core/rl/policy.h"
#include "core/rl/trainer.h"
#include "core/vision/image.h"
#include "support/errors.h"
#include "support/rl_world.h"

namespace fs = std::filesystem;
using icet::rl::TrainingRun;

class TestRlDevice : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void bfloat16RunOnTheCpu() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    config.dtype = "bfloat16";
    config.max_steps = 2;
    config.eval_every = 2;
    auto run = TrainingRun::create(config, root / "run");
    run->run(nullptr, {});
    const auto rows = run->drain_metrics();
    QCOMPARE(rows.size(), size_t{2});
    for (const auto& r : rows) {
      for (const char* key : {"objective/scores", "objective/kl", "loss/policy_avg", "loss/value_avg", "policy/grad_norm_avg"}) {
        QVERIFY2(std::isfinite(r.values.at(key)), key);
      }
    }
    QVERIFY(rows.back().values.at("policy/grad_norm_avg") > 0);
    QCOMPARE(run->drain_evals().size(), size_t{2});
    // The adapter stays float32 (trained in float32 over bfloat16 base weights).
    const auto adapter = icet::io::SafetensorsFile::open(root / "run" / "adapter" / "adapter_model.safetensors");
    for (const auto& name : adapter->names()) QVERIFY(adapter->info(name).dtype == icet::io::DType::F32);
    // The run config keeps what it ran with.
    QCOMPARE(icet::rl::to_json(config).at("dtype").get<std::string>(), std::string("bfloat16"));
  }

  void memoryCheckRefusesARunThatCannotFit() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    auto config = icet::test::tiny_config(root);
    const auto plain = icet::rl::estimate_training_memory(config);
    QVERIFY(plain.weights_gib > 0 && plain.activations_gib > 0 && plain.logits_gib > 0);
    QVERIFY(plain.available_gib > 0);  // MemAvailable on the CPU
    QVERIFY(plain.fits());
    // Weights: every tensor of the VLM, reward model and judge in float32.
    double params = 0;
    for (const auto& dir : {config.model, config.reward_model, config.judge}) {
      const auto store = icet::io::TensorStore::open_dir(dir);
      for (const auto& n : store.names()) params += static_cast<double>(store.info(n).numel());
    }
    QVERIFY(std::abs(plain.weights_gib - 4.0 * params / (1024.0 * 1024.0 * 1024.0)) < 1e-9);
    config.dtype = "bfloat16";
    QVERIFY(std::abs(icet::rl::estimate_training_memory(config).weights_gib - plain.weights_gib / 2) < 1e-9);
    config.dtype = "float32";
    config.gradient_checkpointing = true;
    QVERIFY(icet::rl::estimate_training_memory(config).activations_gib < plain.activations_gib);

    config.memory_budget_gib = plain.total_gib / 2;
    const auto tight = icet::rl::estimate_training_memory(config);
    QVERIFY(!tight.fits());
    auto run = TrainingRun::create(config, root / "run");
    ICET_EXPECT_INPUT_ERROR(run->run(nullptr, {}), {"needs about", "GiB", "gradient_checkpointing", "batch_size"});
    QVERIFY(!fs::exists(root / "run" / "adapter"));
  }

  // The LM's gradients with every layer recomputed in backward equal the plain ones, LoRA
  // dropout included (the rerun draws the same masks).
  void gradientCheckpointingGivesTheSameGradients() {
    auto llava = icet::models::load_llava(icet::test::fixture("llava"), icet::models::LoadOptions{});
    auto& lm = llava->language_model();
    icet::models::LoraConfig c;
    c.r = 4;
    c.alpha = 8;
    c.dropout = 0.3;
    c.targets = {"q_proj", "v_proj", "down_proj"};
    auto init = icet::generate::make_generator(3);
    auto set = icet::models::LoraSet::create(lm, c, init);
    {
      at::NoGradGuard no_grad;
      for (auto& p : set.parameters()) p.normal_(0.0, 0.1, init);  // B != 0, so every tensor gets a gradient
    }
    at::Generator dropout = icet::generate::make_generator(11);
    set.generator = &dropout;
    set.training = true;
    lm.set_adapters(&set);
    const int64_t H = lm.config().hidden_size;
    const at::Tensor embeds = at::randn({2, 9, H}, icet::generate::make_generator(5));
    const at::Tensor positions = at::arange(9, at::kLong).view({1, 9}).expand({2, 9});
    const at::Tensor weights = at::randn({2, 9, H}, icet::generate::make_generator(6));
    auto grads = [&](bool checkpointing) {
      lm.set_gradient_checkpointing(checkpointing);
      dropout.set_current_seed(11);
      for (auto& p : set.parameters()) p.mutable_grad() = at::Tensor();
      (lm.forward(embeds, positions) * weights).sum().backward();
      std::vector<at::Tensor> g;
      for (auto& p : set.parameters()) g.push_back(p.grad().clone());
      return g;
    };
    const auto plain = grads(false);
    const auto recomputed = grads(true);
    QCOMPARE(plain.size(), recomputed.size());
    double max_diff = 0, max_abs = 0;
    for (size_t i = 0; i < plain.size(); ++i) {
      max_diff = std::max(max_diff, (plain[i] - recomputed[i]).abs().max().item<double>());
      max_abs = std::max(max_abs, plain[i].abs().max().item<double>());
    }
    qInfo("max |grad| %.3g, max difference %.3g", max_abs, max_diff);
    QVERIFY(max_abs > 0);
    QVERIFY2(max_diff <= 1e-5 * std::max(1.0, max_abs), std::to_string(max_diff).c_str());
    lm.set_adapters(nullptr);
  }

  // A rollout row is the answer the lab gives for that prompt, layer and seed: one prompt
  // builder, one decoder and one sampler (rows of different lengths, left-padded together).
  void rolloutsAreWhatTheLabGenerates() {
    const fs::path model = icet::test::fixture("llava");
    const fs::path image = model / "image.png";
    icet::rl::Policy policy(model);
    auto session = icet::engine::Session::open(model, {"cpu", "float32"});
    session->set_image(icet::vision::load_image(image));
    const std::vector<std::string> prompts = {"What is in the picture?", "Describe the colours of everything you see here, please.",
                                              "Count them."};
    const std::vector<int64_t> layers = {1, 3, 5};
    std::vector<at::Tensor> embeds;
    std::vector<std::vector<int64_t>> ids;
    for (size_t i = 0; i < prompts.size(); ++i) {
      ids.push_back(policy.prompt_ids(prompts[i]));
      QCOMPARE(ids.back(), session->prompt_ids(prompts[i]));  // one prompt builder
      embeds.push_back(policy.prompt_embeds(ids.back(), policy.features(image, layers[i])));
    }
    QVERIFY(ids[0].size() != ids[1].size());  // a padded batch
    icet::rl::SampleSettings s;
    s.temperature = 1.3;
    s.top_k = 50;
    s.top_p = 0.95;
    s.max_new_tokens = 12;
    const std::vector<uint64_t> seeds = {101, 202, 303};
    const auto g = policy.generate(embeds, s, seeds, nullptr);
    for (size_t i = 0; i < prompts.size(); ++i) {
      icet::generate::SamplingParams p;
      p.do_sample = true;
      p.temperature = s.temperature;
      p.top_k = s.top_k;
      p.top_p = s.top_p;
      p.max_new_tokens = s.max_new_tokens;
      p.seed = seeds[i];
      const auto lab = session->generate(prompts[i], layers[i], p);
      QCOMPARE(g.tokens[i], lab.token_ids);
    }
    // Greedy rows too.
    s.greedy = true;
    const auto greedy = policy.generate(embeds, s, {0, 0, 0}, nullptr);
    icet::generate::SamplingParams gp;
    gp.max_new_tokens = s.max_new_tokens;
    gp.seed = 0;
    for (size_t i = 0; i < prompts.size(); ++i) QCOMPARE(greedy.tokens[i], session->generate(prompts[i], layers[i], gp).token_ids);
  }
};

QTEST_GUILESS_MAIN(TestRlDevice)
#include "test_rl_device.moc"
