#include <ATen/Functions.h>
#include <QTest>
#include <c10/core/InferenceMode.h>

#include <filesystem>

#include "core/engine/session.h"
#include "core/io/safetensors.h"
#include "core/models/llava_next.h"
#include "core/runtime/threads.h"
#include "core/vision/anyres_processor.h"
#include "core/vision/image.h"
#include "support/compare.h"

// Parity with Hugging Face transformers 4.47.1 on the llava_next fixture
// (../shared/fixtures/hf-reference/README.md "LLaVA-NeXT anyres"): anyres pixel values, input
// ids with the exact image-token count, and for every exit layer the packed image features
// (after unpadding and image_newline), the last-position logits and the greedy continuation.
class TestLlavaNextParity : public QObject {
  Q_OBJECT

 private:
  std::filesystem::path m_dir = std::filesystem::path(ICET_FIXTURES) / "hf-reference" / "llava_next";
  std::unique_ptr<icet::models::LlavaNextModel> m_model;
  std::shared_ptr<icet::io::SafetensorsFile> m_refs;
  std::unique_ptr<icet::engine::Session> m_session;
  const std::string m_prompt = "What is in the picture?";

  at::Tensor ref(const std::string& name) const { return m_refs->tensor(name); }

  int64_t layerOf(const QString& c) const {
    return c == QLatin1String("default") ? m_model->config().base.default_exit_layer() : c.toLongLong();
  }

 private Q_SLOTS:
  void initTestCase() {
    icet::runtime::apply_threads(2);
    m_model = icet::models::load_llava_next(m_dir, {});
    m_refs = icet::io::SafetensorsFile::open(m_dir / "refs.safetensors");
    m_session = icet::engine::Session::open(m_dir, {"cpu", "float32"});
    m_session->set_image(icet::vision::load_image(m_dir / "image.png"));
  }

  void summaryAndPromptFormat() {
    const auto& s = m_session->summary();
    QCOMPARE(s.family, std::string("llava_next"));
    QCOMPARE(s.default_layer, int64_t{5});  // vision_feature_layer -2 of 6
    QCOMPARE(s.vision_layers, int64_t{6});
    QCOMPARE(s.image_tokens, int64_t{113});  // 25 base + 8 rows x (10 + 1)
    QCOMPARE(s.prompt_format, std::string("vicuna"));  // detected from chat_template.json
  }

  void anyresLayout() {
    const auto cfg = icet::vision::load_anyres_processor_config(m_dir / "preprocessor_config.json");
    const icet::vision::Pinpoint best = icet::vision::select_best_resolution(48, 64, cfg.grid_pinpoints);
    QCOMPARE(best, (icet::vision::Pinpoint{60, 60}));
    QCOMPARE(m_model->grid_shape(48, 64), (std::pair<int64_t, int64_t>{2, 2}));
    QCOMPARE(m_model->packed_tokens(48, 64), int64_t{113});
    QCOMPARE(icet::vision::anyres_image_token_count(48, 64, cfg.grid_pinpoints, 30, 5, true), int64_t{113});
    QCOMPARE(icet::test::to_ids(ref("inputs.image_sizes")), (std::vector<int64_t>{48, 64}));
  }

  void pixelValues() {
    const auto cfg = icet::vision::load_anyres_processor_config(m_dir / "preprocessor_config.json");
    const auto a = icet::vision::anyres_preprocess(icet::vision::load_image(m_dir / "image.png"), cfg);
    QCOMPARE(a.rows, int64_t{2});
    QCOMPARE(a.cols, int64_t{2});
    ICET_EXPECT_CLOSE(a.pixel_values.unsqueeze(0), ref("inputs.pixel_values"), 1e-6, 0.0, "pixel_values");
    qInfo("pixel_values [1,5,3,30,30] max |diff| %.2e",
          icet::test::max_abs_diff(a.pixel_values.unsqueeze(0), ref("inputs.pixel_values")));
  }

  void inputIds() {
    const auto ids = m_session->prompt_ids(m_prompt);
    QCOMPARE(ids, icet::test::to_ids(ref("inputs.input_ids")));
    QCOMPARE(std::count(ids.begin(), ids.end(), int64_t{384}), std::ptrdiff_t{113});
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

    // The model half alone, from the reference pixel values and ids.
    const auto states = m_model->encode(ref("inputs.pixel_values")[0], layer);  // 5 tiles
    const at::Tensor selected = m_model->select(states.back());                 // [5,25,32]
    const at::Tensor tiles = m_model->project(selected);                        // [5,25,64]
    if (c == "default") {
      ICET_EXPECT_CLOSE(selected, ref("vision_selected.default"), 1e-4, 1e-4, "vision_selected.default");
      ICET_EXPECT_CLOSE(tiles, ref("image_features_tiles.default"), 1e-4, 1e-4, "image_features_tiles.default");
      qInfo("default: max |diff| vision_selected %.2e, tiles %.2e",
            icet::test::max_abs_diff(selected, ref("vision_selected.default")),
            icet::test::max_abs_diff(tiles, ref("image_features_tiles.default")));
    }
    const at::Tensor features = m_model->pack(tiles, 48, 64);  // [113,64]
    ICET_EXPECT_CLOSE(features, ref("image_features." + c), 1e-4, 1e-4, "image_features." + c);

    const at::Tensor ids = ref("inputs.input_ids")[0];
    const at::Tensor embeds = m_model->merge(ids, features.unsqueeze(0));  // [1,241,64]
    const auto& lm = m_model->language_model();
    const at::Tensor positions = at::arange(ids.size(0), at::kLong).unsqueeze(0);
    const at::Tensor logits = lm.logits(lm.forward(embeds, positions))[0];  // [241,400], no cache
    ICET_EXPECT_CLOSE(logits[-1], ref("logits_last." + c), 1e-4, 1e-4, "logits_last." + c);
    qInfo("layer %s: max |diff| features %.2e, logits %.2e", c.c_str(),
          icet::test::max_abs_diff(features, ref("image_features." + c)),
          icet::test::max_abs_diff(logits[-1], ref("logits_last." + c)));
    if (c == "default") {
      ICET_EXPECT_CLOSE(logits.narrow(0, logits.size(0) - 8, 8), ref("logits_tail.default"), 1e-4, 1e-4,
                        "logits_tail.default");
    }

    // End to end through the session: our anyres preprocessing, tokenizer, KV cache and greedy loop.
    icet::generate::SamplingParams greedy;
    greedy.max_new_tokens = 8;
    greedy.stop_at_eos = false;  // the references ignore EOS
    const auto record = m_session->generate(m_prompt, layer, greedy);
    QCOMPARE(record.token_ids, icet::test::to_ids(ref("generated_ids." + c)));
    QCOMPARE(record.layer, layer);
  }
};

QTEST_GUILESS_MAIN(TestLlavaNextParity)
#include "test_llava_next_parity.moc"
