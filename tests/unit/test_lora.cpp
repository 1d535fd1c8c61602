#include <ATen/Functions.h>
#include <ATen/core/grad_mode.h>
#include <QTemporaryDir>
#include <QTest>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/engine/session.h"
#include "core/generate/sampling.h"
#include "core/io/safetensors.h"
#include "core/models/llava.h"
#include "core/models/lora.h"
#include "core/vision/image.h"
#include "support/errors.h"
#include "support/rl_world.h"

namespace fs = std::filesystem;
using namespace icet::models;

// LoRA adapters: PEFT layout and key names, the identity at init, merge == unmerged, and the
// engine's Session::load_adapter / clear_adapter.
class TestLora : public QObject {
  Q_OBJECT

 private:
  std::unique_ptr<LlavaModel> m_model;

  // A saved adapter with non-zero B (a fresh one is the identity).
  LoraSet randomAdapter(uint64_t seed, std::vector<std::string> targets) {
    LoraConfig c;
    c.r = 4;
    c.alpha = 8;
    c.targets = std::move(targets);
    auto gen = icet::generate::make_generator(seed);
    LoraSet set = LoraSet::create(m_model->language_model(), c, gen);
    at::NoGradGuard no_grad;
    for (auto& p : set.parameters()) p.normal_(0.0, 0.3, gen);
    return set;
  }

  at::Tensor lmOut() {
    at::NoGradGuard no_grad;
    const auto& lm = m_model->language_model();
    const at::Tensor ids = at::arange(1, 9, at::kLong).view({1, 8});
    const at::Tensor pos = at::arange(0, 8, at::kLong).view({1, 8});
    return lm.logits(lm.forward(lm.embed(ids), pos));  // [1,8,V]
  }

 private Q_SLOTS:
  void initTestCase() { m_model = load_llava(icet::test::fixture("llava"), LoadOptions{}); }

  void peftKeyNamesAndConfig() {
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "adapter";
    const LoraSet set = randomAdapter(1, {"q_proj", "v_proj", "down_proj"});
    save_peft_adapter(set, dir, "language_model.");
    auto file = icet::io::SafetensorsFile::open(dir / "adapter_model.safetensors");
    const auto names = file->names();
    // 2 layers x 3 modules x (A, B)
    QCOMPARE(names.size(), size_t{12});
    const std::string q = "base_model.model.language_model.model.layers.0.self_attn.q_proj.";
    QVERIFY(file->contains(q + "lora_A.weight"));
    QVERIFY(file->contains(q + "lora_B.weight"));
    QVERIFY(file->contains("base_model.model.language_model.model.layers.1.mlp.down_proj.lora_B.weight"));
    // A: [r, in], B: [out, r]
    QCOMPARE(file->info(q + "lora_A.weight").shape, (std::vector<int64_t>{4, 64}));
    QCOMPARE(file->info(q + "lora_B.weight").shape, (std::vector<int64_t>{64, 4}));
    QCOMPARE(file->info("base_model.model.language_model.model.layers.1.mlp.down_proj.lora_A.weight").shape,
             (std::vector<int64_t>{4, 96}));
    const auto cfg = icet::json_util::read_file(dir / "adapter_config.json");
    QCOMPARE(cfg.at("peft_type").get<std::string>(), std::string("LORA"));
    QCOMPARE(cfg.at("r").get<int>(), 4);
    QCOMPARE(cfg.at("lora_alpha").get<double>(), 8.0);
    QCOMPARE(cfg.at("bias").get<std::string>(), std::string("none"));
    QCOMPARE(cfg.at("target_modules").get<std::string>(), std::string(".*language_model.*\\.(q_proj|v_proj|down_proj)"));
  }

  void freshAdapterIsIdentityAndRoundTrips() {
    const at::Tensor base = lmOut();
    LoraConfig c;
    c.r = 4;
    c.alpha = 8;
    c.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    auto gen = icet::generate::make_generator(3);
    LoraSet fresh = LoraSet::create(m_model->language_model(), c, gen);
    m_model->language_model().set_adapters(&fresh);
    QVERIFY(at::equal(lmOut(), base));  // B = 0
    m_model->language_model().set_adapters(nullptr);

    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "adapter";
    LoraSet set = randomAdapter(2, c.targets);
    m_model->language_model().set_adapters(&set);
    const at::Tensor adapted = lmOut();
    QVERIFY((adapted - base).abs().max().item<double>() > 1e-3);
    set.enabled = false;  // the reference policy
    QVERIFY(at::equal(lmOut(), base));
    set.enabled = true;
    save_peft_adapter(set, dir, "language_model.");
    LoraSet loaded = load_peft_adapter(dir, m_model->language_model(), "language_model.");
    m_model->language_model().set_adapters(&loaded);
    QVERIFY(at::equal(lmOut(), adapted));  // float32 written and read back bitwise
    m_model->language_model().set_adapters(nullptr);

    // Merge for inference: equal to the unmerged adapter (tolerance: float32 rounding of W + BA).
    m_model->language_model().merge_adapters(loaded, 1.0);
    QVERIFY(at::allclose(lmOut(), adapted, 1e-4, 1e-4));
    m_model->language_model().merge_adapters(loaded, -1.0);
    QVERIFY(at::allclose(lmOut(), base, 1e-4, 1e-4));
  }

  void badAdaptersAreInputErrors() {
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    QVERIFY(icet::test::input_error_of([&] { load_peft_adapter(root / "none", m_model->language_model(), "language_model."); })
                .find("adapter_config.json") != std::string::npos);
    // Wrong rank in the config vs tensor shapes.
    const LoraSet set = randomAdapter(4, {"q_proj"});
    save_peft_adapter(set, root / "a", "language_model.");
    auto cfg = icet::json_util::read_file(root / "a" / "adapter_config.json");
    cfg["r"] = 8;
    std::ofstream(root / "a" / "adapter_config.json") << cfg.dump();
    const std::string e = icet::test::input_error_of([&] { load_peft_adapter(root / "a", m_model->language_model(), "language_model."); });
    QVERIFY2(e.find("lora_A.weight") != std::string::npos && e.find("[8, 64]") != std::string::npos, e.c_str());
  }

  void sessionLoadsAndClearsAnAdapter() {
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "adapter";
    {
      LoraSet set = randomAdapter(5, {"q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
      at::NoGradGuard no_grad;
      for (auto& p : set.parameters()) p.mul_(3.0);  // a strong adapter: greedy tokens must change
      save_peft_adapter(set, dir, "language_model.");
    }
    auto session = icet::engine::Session::open(icet::test::fixture("llava"), {"cpu", "float32"});
    session->set_image(icet::vision::load_image(icet::test::fixture("llava") / "image.png"));
    icet::generate::SamplingParams greedy;
    greedy.max_new_tokens = 8;
    greedy.stop_at_eos = false;
    greedy.seed = 0;
    const auto base = session->sweep("What is in the picture?", {1, 5}, greedy);
    session->load_adapter(dir);
    QCOMPARE(session->adapter(), dir);
    const auto adapted = session->sweep("What is in the picture?", {1, 5}, greedy);
    QVERIFY(adapted[0].token_ids != base[0].token_ids || adapted[1].token_ids != base[1].token_ids);
    session->load_adapter(dir, true);  // merged: the same tokens
    const auto merged = session->sweep("What is in the picture?", {1, 5}, greedy);
    QCOMPARE(merged[0].token_ids, adapted[0].token_ids);
    QCOMPARE(merged[1].token_ids, adapted[1].token_ids);
    session->clear_adapter();
    QVERIFY(session->adapter().empty());
    const auto again = session->sweep("What is in the picture?", {1, 5}, greedy);
    QCOMPARE(again[0].token_ids, base[0].token_ids);
    QCOMPARE(again[1].token_ids, base[1].token_ids);
  }
};

QTEST_GUILESS_MAIN(TestLora)
#include "test_lora.moc"
