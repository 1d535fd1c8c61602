#include <ATen/Functions.h>
#include <QTest>
#include <c10/core/InferenceMode.h>

#include <filesystem>

#include "core/engine/session.h"
#include "core/io/safetensors.h"
#include "core/models/llava.h"
#include "core/runtime/threads.h"
#include "core/vision/clip_processor.h"
#include "core/vision/image.h"
#include "support/compare.h"

// Parity with Hugging Face transformers 4.47.1 on the llava fixture (tests/fixtures/README.md):
// pixel values, input ids, and for every exit layer the selected vision features, the
// projected image features, the last-position logits and the greedy continuation.
class TestLlavaParity : public QObject {
  Q_OBJECT

 private:
  std::filesystem::path m_dir = std::filesystem::path(ICET_FIXTURES) / "hf-reference" / "llava";
  std::unique_ptr<icet::models::LlavaModel> m_model;
  std::shared_ptr<icet::io::SafetensorsFile> m_refs;
  std::unique_ptr<icet::engine::Session> m_session;
  const std::string m_prompt = "What is in the picture?";

  at::Tensor ref(const std::string& name) const { return m_refs->tensor(name); }

  int64_t layerOf(const QString& c) const {
    return c == QLatin1String("default") ? m_model->config().default_exit_layer() : c.toLongLong();
  }

 private Q_SLOTS:
  void initTestCase() {
    icet::runtime::apply_threads(2);
    m_model = icet::models::load_llava(m_dir, {});
    m_refs = icet::io::SafetensorsFile::open(m_dir / "refs.safetensors");
    m_session = icet::engine::Session::open(m_dir, {"cpu", "float32"});
    m_session->set_image(icet::vision::load_image(m_dir / "image.png"));
  }

  void defaultLayerIsHiddenState5() {
    // vision_feature_layer = -2 of 6 layers -> hidden_states[5].
    QCOMPARE(m_model->config().default_exit_layer(), int64_t{5});
    QCOMPARE(m_session->summary().default_layer, int64_t{5});
    QCOMPARE(m_session->summary().vision_layers, int64_t{6});
  }

  void pixelValues() {
    const auto cfg = icet::vision::load_clip_processor_config(m_dir / "preprocessor_config.json");
    const at::Tensor px = icet::vision::clip_preprocess(icet::vision::load_image(m_dir / "image.png"), cfg);
    ICET_EXPECT_CLOSE(px.unsqueeze(0), ref("inputs.pixel_values"), 1e-6, 0.0, "pixel_values");
    qInfo("pixel_values max |diff| %.2e", icet::test::max_abs_diff(px.unsqueeze(0), ref("inputs.pixel_values")));
  }

  void inputIds() {
    QCOMPARE(m_session->prompt_ids(m_prompt), icet::test::to_ids(ref("inputs.input_ids")));
  }

  void perLayer_data() {
    QTest::addColumn<QString>("choice");
    for (const char* c : {"default", "1", "2", "3", "4", "5", "6"}) {
      QTest::newRow(c) << QString::fromLatin1(c);
    }
  }

  void perLayer() {
    QFETCH(QString, choice);
    const std::string c = choice.toStdString();
    const int64_t layer = layerOf(choice);
    c10::InferenceMode guard;

    // The model half alone, from the reference pixel values and ids.
    const auto states = m_model->encode(ref("inputs.pixel_values"), layer);
    QCOMPARE(static_cast<int64_t>(states.size()), layer + 1);
    const at::Tensor selected = m_model->select(states.back());  // [1,25,32]
    ICET_EXPECT_CLOSE(selected, ref("vision_selected." + c), 1e-4, 1e-4, "vision_selected." + c);
    const at::Tensor features = m_model->project(selected);  // [1,25,64]
    ICET_EXPECT_CLOSE(features[0], ref("image_features." + c), 1e-4, 1e-4, "image_features." + c);

    const at::Tensor ids = ref("inputs.input_ids")[0];
    const at::Tensor embeds = m_model->merge(ids, features);  // [1,46,64]
    const auto& lm = m_model->language_model();
    const at::Tensor positions = at::arange(ids.size(0), at::kLong).unsqueeze(0);
    const at::Tensor logits = lm.logits(lm.forward(embeds, positions))[0];  // [46,400], no cache
    ICET_EXPECT_CLOSE(logits[-1], ref("logits_last." + c), 1e-4, 1e-4, "logits_last." + c);
    qInfo("layer %s: max |diff| selected %.2e, features %.2e, logits %.2e", c.c_str(),
          icet::test::max_abs_diff(selected, ref("vision_selected." + c)),
          icet::test::max_abs_diff(features[0], ref("image_features." + c)),
          icet::test::max_abs_diff(logits[-1], ref("logits_last." + c)));
    if (c == "default") {
      ICET_EXPECT_CLOSE(logits.narrow(0, logits.size(0) - 8, 8), ref("logits_tail.default"), 1e-4, 1e-4,
                        "logits_tail.default");
    }

    // End to end through the session: our preprocessing, tokenizer, KV cache and greedy loop.
    icet::generate::SamplingParams greedy;
    greedy.max_new_tokens = 8;
    greedy.stop_at_eos = false;  // the references ignore EOS
    const auto record = m_session->generate(m_prompt, layer, greedy);
    QCOMPARE(record.token_ids, icet::test::to_ids(ref("generated_ids." + c)));
    QCOMPARE(record.layer, layer);
  }
};

QTEST_GUILESS_MAIN(TestLlavaParity)
#include "test_llava_parity.moc"
