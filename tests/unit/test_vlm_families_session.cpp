#include <ATen/Functions.h>
#include <QTemporaryDir>
#include <QTest>
#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/engine/session.h"
#include "core/io/safetensors.h"
#include "core/models/mllama.h"
#include "core/runtime/threads.h"
#include "core/vision/anyres_processor.h"
#include "core/vision/image.h"
#include "support/compare.h"
#include "support/errors.h"

namespace fs = std::filesystem;

// The session API on the llava_next and mllama fixtures: family dispatch, batched sweeps equal
// to per-layer runs, prompt-format detection and override, and bad inputs (extreme aspect
// ratios, grid pinpoints that do not fit, cross-attention layers out of range, missing tile
// tables) that must give a clear error or correct handling.
class TestVlmFamiliesSession : public QObject {
  Q_OBJECT

 private:
  const fs::path m_refs = fs::path(ICET_FIXTURES) / "hf-reference";
  const std::string m_prompt = "What is in the picture?";

  static icet::generate::SamplingParams greedy(int64_t n) {
    icet::generate::SamplingParams p;
    p.max_new_tokens = n;
    p.stop_at_eos = false;
    return p;
  }

  static fs::path copyFixture(const QTemporaryDir& tmp, const fs::path& from) {
    const fs::path to = fs::path(tmp.path().toStdString()) / "model";
    fs::copy(from, to, fs::copy_options::recursive);
    return to;
  }

  static void editJson(const fs::path& file, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j;
    {
      std::ifstream in(file);
      in >> j;
    }
    edit(j);
    std::ofstream(file) << j.dump(2);
  }

  static void dropTensors(const fs::path& dir, const std::vector<std::string>& names) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    {
      auto file = icet::io::SafetensorsFile::open(dir / "model.safetensors");
      for (const auto& name : file->names()) {
        if (std::find(names.begin(), names.end(), name) == names.end()) {
          tensors.emplace_back(name, file->tensor(name).clone());
        }
      }
    }
    icet::io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  }

  static icet::vision::Image flat(int width, int height) {
    icet::vision::Image img;
    img.width = width;
    img.height = height;
    img.rgb.assign(static_cast<size_t>(width) * static_cast<size_t>(height) * 3, 0);
    for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = static_cast<uint8_t>((i * 37) % 251);
    return img;
  }

  static void expectInputError(const std::function<void()>& f, std::initializer_list<const char*> needles) {
    const std::string msg = icet::test::input_error_of(f);
    QVERIFY2(!msg.empty(), "no icet::InputError thrown");
    for (const char* n : needles) {
      QVERIFY2(msg.find(n) != std::string::npos, (std::string("missing '") + n + "' in: " + msg).c_str());
    }
  }

 private Q_SLOTS:
  void initTestCase() { icet::runtime::apply_threads(2); }

  void sweepEqualsPerLayerRuns_data() {
    QTest::addColumn<QString>("family");
    QTest::newRow("llava_next") << QStringLiteral("llava_next");
    QTest::newRow("mllama") << QStringLiteral("mllama");
  }

  // One batch (for llava_next: every tile of every layer through the projector at once; for
  // mllama: the global encoder, taps and projector batched over layers) gives row for row what
  // one run per layer gives, and both give Hugging Face's tokens.
  void sweepEqualsPerLayerRuns() {
    QFETCH(QString, family);
    const fs::path dir = m_refs / family.toStdString();
    auto session = icet::engine::Session::open(dir, {"cpu", "float32"});
    session->set_image(icet::vision::load_image(dir / "image.png"));
    auto refs = icet::io::SafetensorsFile::open(dir / "refs.safetensors");
    const std::vector<int64_t> layers{1, 2, 3, 4, 5, 6};
    const auto rows = session->sweep(m_prompt, layers, greedy(8));
    QCOMPARE(rows.size(), layers.size());
    for (size_t i = 0; i < layers.size(); ++i) {
      const auto single = session->generate(m_prompt, layers[i], greedy(8));
      QCOMPARE(rows[i].layer, layers[i]);
      QCOMPARE(rows[i].token_ids, single.token_ids);
      QCOMPARE(rows[i].text, single.text);
      QCOMPARE(rows[i].token_ids, icet::test::to_ids(refs->tensor("generated_ids." + std::to_string(layers[i]))));
    }
  }

  void promptFormatDetection() {
    using icet::engine::detect_prompt_format;
    const auto read = [](const fs::path& f) {
      nlohmann::json j;
      std::ifstream(f) >> j;
      return j.at("chat_template").get<std::string>();
    };
    QCOMPARE(detect_prompt_format(read(m_refs / "llava_next" / "chat_template.json"), "llava_next"), std::string("vicuna"));
    QCOMPARE(detect_prompt_format(read(m_refs / "llava" / "chat_template.json"), "llava"), std::string("llava"));
    QCOMPARE(detect_prompt_format(read(m_refs / "mllama" / "chat_template.json"), "mllama"), std::string("llama3"));
    QCOMPARE(detect_prompt_format("{{ '[INST] ' + content + ' [/INST]' }}", "llava_next"), std::string("mistral"));
    QCOMPARE(detect_prompt_format("{{ '<|im_start|>' }}", "llava_next"), std::string());
  }

  void promptFormatOverride() {
    const fs::path dir = m_refs / "llava_next";
    auto mistral = icet::engine::Session::open(dir, {"cpu", "float32", "mistral"});
    QCOMPARE(mistral->summary().prompt_format, std::string("mistral"));
    mistral->set_image(icet::vision::load_image(dir / "image.png"));
    const auto ids = mistral->prompt_ids(m_prompt);
    QCOMPARE(ids.front(), int64_t{1});  // BOS
    QCOMPARE(std::count(ids.begin(), ids.end(), int64_t{384}), std::ptrdiff_t{113});
    auto vicuna = icet::engine::Session::open(dir, {"cpu", "float32"});
    vicuna->set_image(icet::vision::load_image(dir / "image.png"));
    QVERIFY(ids.size() < vicuna->prompt_ids(m_prompt).size());  // no system line
    const auto r = mistral->generate(m_prompt, 3, greedy(3));
    QCOMPARE(r.token_ids.size(), size_t{3});

    expectInputError([&] { icet::engine::Session::open(dir, {"cpu", "float32", "chatml"}); },
                     {"prompt format", "chatml"});
    expectInputError([&] { icet::engine::Session::open(dir, {"cpu", "float32", "llama3"}); },
                     {"prompt format \"llama3\"", "llava_next"});
    expectInputError([&] { icet::engine::Session::open(m_refs / "mllama", {"cpu", "float32", "vicuna"}); },
                     {"prompt format \"vicuna\"", "mllama"});
  }

  // --- bad input -------------------------------------------------------------------------------

  void extremeAspectRatio_data() {
    QTest::addColumn<QString>("family");
    QTest::addColumn<int>("width");
    QTest::addColumn<int>("height");
    QTest::addColumn<int>("tokens");
    // llava_next: first pinpoint [30, 60] (1x2 tiles, a 5x10 feature grid). Portrait: unpadding
    // keeps 0 columns, so 25 base + 5 newline rows; landscape: 1 row of 10 + newline.
    QTest::newRow("llava_next 1x4000") << QStringLiteral("llava_next") << 1 << 4000 << 30;
    QTest::newRow("llava_next 4000x1") << QStringLiteral("llava_next") << 4000 << 1 << 36;
    QTest::newRow("mllama 1x4000") << QStringLiteral("mllama") << 1 << 4000 << 1;  // 4x1 tiles
    QTest::newRow("mllama 4000x1") << QStringLiteral("mllama") << 4000 << 1 << 1;  // 1x4 tiles
  }

  // HF handles a 1x4000 strip without error (LLaVA-NeXT: the first pinpoint, a grid whose
  // unpadded part is empty so only newline rows remain; Mllama: a 4x1 or 1x4 canvas): so do we.
  void extremeAspectRatio() {
    QFETCH(QString, family);
    QFETCH(int, width);
    QFETCH(int, height);
    QFETCH(int, tokens);
    const fs::path dir = m_refs / family.toStdString();
    auto session = icet::engine::Session::open(dir, {"cpu", "float32"});
    session->set_image(flat(width, height));
    const auto ids = session->prompt_ids(m_prompt);
    const int64_t image_token = family == QLatin1String("mllama") ? 390 : 384;
    QCOMPARE(std::count(ids.begin(), ids.end(), image_token), static_cast<std::ptrdiff_t>(session->summary().image_tokens));
    QCOMPARE(session->summary().image_tokens, static_cast<int64_t>(tokens));
    const auto rows = session->sweep(m_prompt, {1, 6}, greedy(2));
    QCOMPARE(rows.size(), size_t{2});
    QCOMPARE(rows[1].token_ids, session->generate(m_prompt, 6, greedy(2)).token_ids);
  }

  void gridPinpointsThatDoNotFit() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_refs / "llava_next");
    // Not a multiple of the 30 px tile: the grid cannot be cut into whole tiles.
    editJson(dir / "config.json", [](nlohmann::json& j) { j["image_grid_pinpoints"] = {{45, 60}}; });
    expectInputError([&] { icet::engine::Session::open(dir); }, {"config.json", "image_grid_pinpoints", "[45, 60]"});
    editJson(dir / "config.json", [](nlohmann::json& j) { j["image_grid_pinpoints"] = nlohmann::json::array(); });
    expectInputError([&] { icet::engine::Session::open(dir); }, {"image_grid_pinpoints", "non-empty list"});
    editJson(dir / "config.json", [](nlohmann::json& j) { j["image_grid_pinpoints"] = {{60, 60}}; });
    editJson(dir / "preprocessor_config.json", [](nlohmann::json& j) { j["image_grid_pinpoints"] = {{31, 60}}; });
    expectInputError([&] { icet::engine::Session::open(dir); },
                     {"preprocessor_config.json", "image_grid_pinpoints", "[31, 60]"});
    // Processor and model disagree on the grid: the image-token count cannot match.
    editJson(dir / "preprocessor_config.json", [](nlohmann::json& j) { j["image_grid_pinpoints"] = {{30, 90}}; });
    auto session = icet::engine::Session::open(dir, {"cpu", "float32"});
    expectInputError([&] { session->set_image(icet::vision::load_image(dir / "image.png")); },
                     {"image-token count", "65 vs 113", "image_grid_pinpoints"});
  }

  void crossAttentionLayersOutOfRange() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_refs / "mllama");
    editJson(dir / "config.json", [](nlohmann::json& j) { j["text_config"]["cross_attention_layers"] = {5}; });
    expectInputError([&] { icet::engine::Session::open(dir); },
                     {"config.json", "text_config.cross_attention_layers", "0..2", "[5]"});
    editJson(dir / "config.json", [](nlohmann::json& j) { j["text_config"]["cross_attention_layers"] = {1, 1}; });
    expectInputError([&] { icet::engine::Session::open(dir); }, {"cross_attention_layers", "[1, 1]"});
    editJson(dir / "config.json", [](nlohmann::json& j) { j["text_config"]["cross_attention_layers"] = {-1}; });
    expectInputError([&] { icet::engine::Session::open(dir); }, {"cross_attention_layers", "[-1]"});
    // A layer that is a cross layer in the config but self-attention in the weights.
    editJson(dir / "config.json", [](nlohmann::json& j) { j["text_config"]["cross_attention_layers"] = {2}; });
    expectInputError([&] { icet::engine::Session::open(dir); },
                     {"missing tensor 'language_model.model.layers.2.cross_attn.q_proj.weight'"});
  }

  void missingTileTables() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_refs / "mllama");
    dropTensors(dir, {"vision_model.gated_positional_embedding.tile_embedding.weight",
                      "vision_model.pre_tile_positional_embedding.embedding.weight"});
    expectInputError([&] { icet::engine::Session::open(dir); },
                     {"missing tensor 'vision_model.gated_positional_embedding.tile_embedding.weight' [9, 2176]",
                      "missing tensor 'vision_model.pre_tile_positional_embedding.embedding.weight' [9, 128]"});
  }

  void tileLayoutMismatch() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_refs / "mllama");
    // More tiles in the processor than the tile tables have rows for.
    editJson(dir / "preprocessor_config.json", [](nlohmann::json& j) { j["max_image_tiles"] = 6; });
    expectInputError([&] { icet::engine::Session::open(dir); }, {"max_image_tiles", "at most 4"});
    editJson(dir / "preprocessor_config.json", [](nlohmann::json& j) { j["max_image_tiles"] = 4; });
    editJson(dir / "config.json",
             [](nlohmann::json& j) { j["vision_config"]["supported_aspect_ratios"] = {{1, 1}, {2, 2}}; });
    // The tables now have 3 rows, not 9: the weights say so.
    expectInputError([&] { icet::engine::Session::open(dir); }, {"tile_embedding.weight", "expected shape [3, 2176]"});

    // An aspect-ratio id past the tables, given to the model directly.
    auto model = icet::models::load_mllama(m_refs / "mllama", {});
    c10::InferenceMode guard;
    const at::Tensor px = at::zeros({1, 4, 3, 28, 28});
    expectInputError(
        [&] { model->vision_model().encode_local(px, at::full({1}, 20, at::kLong), at::ones({1, 4}, at::kLong), 1); },
        {"aspect_ratio_id", "0..8", "20"});
    expectInputError([&] { model->vision_model().encode_local(at::zeros({1, 2, 3, 28, 28}), at::ones({1}, at::kLong),
                                                              at::ones({1, 2}, at::kLong), 1); },
                     {"pixel values [B, 4, 3, 28, 28]"});
  }

  void exitLayerOutOfRange() {
    for (const char* f : {"llava_next", "mllama"}) {
      const fs::path dir = m_refs / f;
      auto session = icet::engine::Session::open(dir, {"cpu", "float32"});
      session->set_image(icet::vision::load_image(dir / "image.png"));
      expectInputError([&] { session->generate(m_prompt, 7, greedy(1)); }, {"exit layer", "1..6", "7"});
      expectInputError([&] { session->sweep(m_prompt, {0, 2}, greedy(1)); }, {"exit layer", "0"});
    }
  }
};

QTEST_GUILESS_MAIN(TestVlmFamiliesSession)
#include "test_vlm_families_session.moc"
