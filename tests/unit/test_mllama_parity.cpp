#include <ATen/Functions.h>
#include <QTest>
#include <c10/core/InferenceMode.h>

#include <filesystem>

#include "core/engine/session.h"
#include "core/io/safetensors.h"
#include "core/models/mllama.h"
#include "core/runtime/threads.h"
#include "core/vision/image.h"
#include "core/vision/mllama_processor.h"
#include "support/compare.h"

// Parity with Hugging Face transformers 4.47.1 on the mllama fixture
// (../shared/fixtures/hf-reference/README.md "Mllama tiles", "Mllama text"): tiles, aspect-ratio
// id and mask, input ids, cross-attention mask, and for every exit layer (the fixtures' policy:
// local encoder truncated after layer l, taps clamped to min(i, l)) the cross-attention states,
// the last-position logits and the greedy continuation.
class TestMllamaParity : public QObject {
  Q_OBJECT

 private:
  std::filesystem::path m_dir = std::filesystem::path(ICET_FIXTURES) / "hf-reference" / "mllama";
  std::unique_ptr<icet::models::MllamaModel> m_model;
  std::shared_ptr<icet::io::SafetensorsFile> m_refs;
  std::unique_ptr<icet::engine::Session> m_session;
  const std::string m_prompt = "What is in the picture?";

  at::Tensor ref(const std::string& name) const { return m_refs->tensor(name); }
  int64_t layerOf(const QString& c) const {
    return c == QLatin1String("default") ? m_model->resolve_layer(std::nullopt) : c.toLongLong();
  }

 private Q_SLOTS:
  void initTestCase() {
    icet::runtime::apply_threads(2);
    m_model = icet::models::load_mllama(m_dir, {});
    m_refs = icet::io::SafetensorsFile::open(m_dir / "refs.safetensors");
    m_session = icet::engine::Session::open(m_dir, {"cpu", "float32"});
    m_session->set_image(icet::vision::load_image(m_dir / "image.png"));
  }

  void configDefaultsAndSummary() {
    const auto& c = m_model->config();
    QCOMPARE(c.vision.hidden_act, std::string("gelu"));  // absent: MllamaVisionConfig default
    QCOMPARE(c.vision.max_num_tiles, int64_t{4});
    QCOMPARE(c.vision.supported_aspect_ratios.size(), size_t{8});
    QCOMPARE(c.vision.num_patches(), int64_t{17});
    QCOMPARE(c.vision.padded_patches(), int64_t{24});
    QCOMPARE(c.text.llama.rope_theta, 500000.0);
    QCOMPARE(c.text.llama.rms_norm_eps, 1e-5);
    QCOMPARE(c.text.cross_attention_layers, (std::vector<int64_t>{1}));
    QCOMPARE(m_model->vision_model().taps(1), (std::vector<int64_t>{1, 1, 1}));
    QCOMPARE(m_model->vision_model().taps(4), (std::vector<int64_t>{1, 3, 4}));
    const auto& s = m_session->summary();
    QCOMPARE(s.family, std::string("mllama"));
    QCOMPARE(s.default_layer, int64_t{6});
    QCOMPARE(s.prompt_format, std::string("llama3"));
    QVERIFY(s.exit_policy.find("assumption") != std::string::npos);
  }

  void tilesAndAspectRatio() {
    const auto cfg = icet::vision::load_mllama_processor_config(m_dir / "preprocessor_config.json");
    const auto m = icet::vision::mllama_preprocess(icet::vision::load_image(m_dir / "image.png"), cfg);
    QCOMPARE(m.rows, int64_t{2});
    QCOMPARE(m.cols, int64_t{2});
    QCOMPARE(m.aspect_ratio_id, int64_t{6});
    QCOMPARE(m.aspect_ratio_id, icet::test::to_ids(ref("inputs.aspect_ratio_ids")).front());
    QCOMPARE(m.aspect_ratio_mask, icet::test::to_ids(ref("inputs.aspect_ratio_mask")));
    const at::Tensor px = m.pixel_values.view({1, 1, 4, 3, 28, 28});
    ICET_EXPECT_CLOSE(px, ref("inputs.pixel_values"), 1e-6, 0.0, "pixel_values");
    qInfo("pixel_values [1,1,4,3,28,28] max |diff| %.2e", icet::test::max_abs_diff(px, ref("inputs.pixel_values")));
  }

  void inputIdsAndCrossAttentionMask() {
    const auto ids = m_session->prompt_ids(m_prompt);
    QCOMPARE(ids, icet::test::to_ids(ref("inputs.input_ids")));
    // HF's dense mask [1, T, 1, 4]: 1 from <|image|> on, over the real tiles.
    const auto cross = m_model->cross_inputs(ref("inputs.input_ids")[0], at::Tensor(), 4);
    const int64_t T = static_cast<int64_t>(ids.size());
    const at::Tensor tiles = cross.tile_mask.view({4, 17}).select(1, 0);  // one entry per tile
    const at::Tensor rows = at::arange(T, at::kLong).ge(cross.image_position).to(at::kFloat);
    const at::Tensor dense = rows.view({T, 1}) * tiles.view({1, 4});
    QCOMPARE(icet::test::to_ids(dense), icet::test::to_ids(ref("inputs.cross_attention_mask")));
  }

  void perLayer_data() {
    QTest::addColumn<QString>("choice");
    for (const char* c : {"default", "1", "2", "3", "4", "5", "6"}) QTest::newRow(c) << QString::fromLatin1(c);
  }

  void perLayer() {
    QFETCH(QString, choice);
    const std::string c = choice.toStdString();
    const int64_t layer = layerOf(choice);
    c10::InferenceMode guard;
    const auto& vm = m_model->vision_model();
    const at::Tensor px = ref("inputs.pixel_values")[0];  // [1,4,3,28,28]
    const at::Tensor aspect_ids = ref("inputs.aspect_ratio_ids").view({1});
    const at::Tensor aspect_mask = ref("inputs.aspect_ratio_mask").view({1, 4});
    const auto states = vm.encode_local(px, aspect_ids, aspect_mask, layer);
    QCOMPARE(static_cast<int64_t>(states.size()), layer + 1);  // only `layer` local layers run
    const at::Tensor out = vm.finish(states, layer, aspect_ids, aspect_mask);  // [1,4,17,128]
    if (c == "default") {
      ICET_EXPECT_CLOSE(out.unsqueeze(0), ref("vision_selected.default"), 1e-4, 1e-4, "vision_selected.default");
      qInfo("default: vision output max |diff| %.2e", icet::test::max_abs_diff(out.unsqueeze(0), ref("vision_selected.default")));
    }
    const at::Tensor states_x = m_model->project(out);  // [1,68,64]
    ICET_EXPECT_CLOSE(states_x[0], ref("image_features." + c), 1e-4, 1e-4, "image_features." + c);

    const at::Tensor ids = ref("inputs.input_ids");  // [1,35]
    const auto cross = m_model->cross_inputs(ids[0], states_x, 4);
    const auto& lm = m_model->language_model();
    const at::Tensor positions = at::arange(ids.size(1), at::kLong).unsqueeze(0);
    const at::Tensor logits = lm.logits(lm.forward(lm.embed(ids), positions, cross))[0];  // [35,390], no cache
    ICET_EXPECT_CLOSE(logits[-1], ref("logits_last." + c), 1e-4, 1e-4, "logits_last." + c);
    qInfo("layer %s: max |diff| cross states %.2e, logits %.2e", c.c_str(),
          icet::test::max_abs_diff(states_x[0], ref("image_features." + c)),
          icet::test::max_abs_diff(logits[-1], ref("logits_last." + c)));
    if (c == "default") {
      ICET_EXPECT_CLOSE(logits.narrow(0, logits.size(0) - 8, 8), ref("logits_tail.default"), 1e-4, 1e-4,
                        "logits_tail.default");
      // The KV-cache path: prefill then one token at a time, as generate() does.
      auto cache = lm.make_cache(1, 64);
      at::Tensor step = lm.logits(lm.forward(lm.embed(ids), positions, cross, &cache)).select(1, -1);  // [1,390]
      const auto gen = icet::test::to_ids(ref("generated_ids.default"));
      const at::Tensor ref_steps = ref("generated_step_logits.default");  // [8,390]
      double worst = 0.0;
      for (size_t s = 0; s < gen.size(); ++s) {
        worst = std::max(worst, icet::test::max_abs_diff(step[0], ref_steps[static_cast<int64_t>(s)]));
        ICET_EXPECT_CLOSE(step[0], ref_steps[static_cast<int64_t>(s)], 1e-4, 1e-4, "generated_step_logits");
        const at::Tensor next = at::tensor(std::vector<int64_t>{gen[s]}, at::kLong).view({1, 1});
        const at::Tensor pos = at::full({1, 1}, cache.length, at::kLong);
        step = lm.logits(lm.forward(lm.embed(next), pos, cross, &cache)).select(1, 0);
      }
      qInfo("default: KV-cache step logits max |diff| %.2e", worst);
    }

    // End to end through the session: our tiling, tokenizer, cached cross K/V and greedy loop.
    icet::generate::SamplingParams greedy;
    greedy.max_new_tokens = 8;
    greedy.stop_at_eos = false;
    const auto record = m_session->generate(m_prompt, layer, greedy);
    QCOMPARE(record.token_ids, icet::test::to_ids(ref("generated_ids." + c)));
  }
};

QTEST_GUILESS_MAIN(TestMllamaParity)
#include "test_mllama_parity.moc"
