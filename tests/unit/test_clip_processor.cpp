#include <QTemporaryDir>
#include <QTest>

#include <ATen/Functions.h>
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "support/errors.h"
#include "core/base/error.h"
#include "core/io/safetensors.h"
#include "core/vision/anyres_processor.h"
#include "core/vision/clip_processor.h"
#include "core/vision/mllama_processor.h"
#include "core/vision/image.h"
#include "core/vision/resample.h"

namespace {

namespace fs = std::filesystem;
using icet::vision::ClipProcessorConfig;
using icet::vision::Image;
using icet::vision::Resample;
using nlohmann::json;

const fs::path kRefs = fs::path(ICET_FIXTURES) / "hf-reference";

// HF stores pixel values in float32 and rounds like we do; the README's bound is 1e-6.
constexpr double kPixelTolerance = 1e-6;

at::Tensor reference(const std::string& model, const std::string& name) {
  return icet::io::SafetensorsFile::open(kRefs / model / "refs.safetensors")->tensor(name);
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return a.sub(b).abs().max().item<double>();
}

using icet::test::input_error_of;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

class TestClipProcessor : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  // --- parity with Hugging Face's processors ---------------------------------------------------

  void llavaPixelValuesMatchHf() {
    // CLIPImageProcessor: 64x48 -> shortest edge 30 (40x30, bicubic) -> 30x30 centre crop at
    // left 5 -> rescale -> normalise.
    const Image img = icet::vision::load_image(kRefs / "llava" / "image.png");
    QCOMPARE(img.width, 64);
    QCOMPARE(img.height, 48);
    const ClipProcessorConfig cfg =
        icet::vision::load_clip_processor_config(kRefs / "llava" / "preprocessor_config.json");
    const at::Tensor ours = icet::vision::clip_preprocess(img, cfg);
    const at::Tensor ref = reference("llava", "inputs.pixel_values");
    QCOMPARE(ref.sizes().vec(), (std::vector<int64_t>{1, 3, 30, 30}));
    QCOMPARE(ours.sizes().vec(), (std::vector<int64_t>{3, 30, 30}));
    QCOMPARE(ours.scalar_type(), at::kFloat);
    QVERIFY(ours.is_contiguous());
    const double diff = max_abs_diff(ours, ref[0]);
    qInfo("llava pixel_values: max abs diff %.3g", diff);
    QVERIFY2(diff <= kPixelTolerance, std::to_string(diff).c_str());
  }

  void llavaNextTilesMatchHf() {
    // LlavaNextImageProcessor (README "LLaVA-NeXT anyres"), core/vision/anyres_processor:
    //   base tile: the whole image squashed to 30x30 (bicubic)
    //   grid 2x2 at (60, 60): resize to 60x45, pad 7 rows above and below (59 rows), cut 30x30
    //   patches row-major (the bottom two are 29 rows high), each patch then goes through
    //   CLIPImageProcessor (shortest edge 30: 30x29 -> 31x30, crop 30x30).
    const Image img = icet::vision::load_image(kRefs / "llava_next" / "image.png");
    const auto cfg = icet::vision::load_anyres_processor_config(kRefs / "llava_next" / "preprocessor_config.json");
    const at::Tensor ref = reference("llava_next", "inputs.pixel_values");
    QCOMPARE(ref.sizes().vec(), (std::vector<int64_t>{1, 5, 3, 30, 30}));
    const auto a = icet::vision::anyres_preprocess(img, cfg);
    QCOMPARE(a.best.height, int64_t{60});
    QCOMPARE(a.best.width, int64_t{60});
    QCOMPARE(a.pixel_values.sizes().vec(), (std::vector<int64_t>{5, 3, 30, 30}));
    for (int tile = 0; tile < 5; ++tile) {
      const double diff = max_abs_diff(a.pixel_values[tile], ref[0][tile]);
      qInfo("llava_next tile %d: max abs diff %.3g", tile, diff);
      QVERIFY2(diff <= kPixelTolerance, std::to_string(diff).c_str());
    }
  }

  void mllamaTilesMatchHf() {
    // MllamaImageProcessor (README "Mllama tiles"), core/vision/mllama_processor: 64x48 ->
    // 56x42 bilinear, zero-padded at the bottom/right to the 56x56 canvas before
    // normalisation, cut into 2x2 tiles of 28x28.
    const Image img = icet::vision::load_image(kRefs / "mllama" / "image.png");
    const auto cfg = icet::vision::load_mllama_processor_config(kRefs / "mllama" / "preprocessor_config.json");
    QCOMPARE(cfg.clip.resample, Resample::Bilinear);
    const at::Tensor ref = reference("mllama", "inputs.pixel_values");
    QCOMPARE(ref.sizes().vec(), (std::vector<int64_t>{1, 1, 4, 3, 28, 28}));
    QCOMPARE(icet::vision::optimal_tiled_canvas(48, 64, 4, 28), (std::pair<int64_t, int64_t>{56, 56}));
    QCOMPARE(icet::vision::fit_to_canvas(48, 64, 56, 56, 28), (std::pair<int64_t, int64_t>{42, 56}));
    const auto m = icet::vision::mllama_preprocess(img, cfg);
    const double worst = max_abs_diff(m.pixel_values, ref[0][0]);
    qInfo("mllama tiles: max abs diff %.3g", worst);
    QVERIFY2(worst <= kPixelTolerance, std::to_string(worst).c_str());
  }

  // --- resize target and tensor conversion -----------------------------------------------------

  void shortestEdgeFollowsHf() {
    using icet::vision::shortest_edge_size;
    const auto check = [](int w, int h, int edge, int ew, int eh) {
      const auto t = shortest_edge_size(w, h, edge);
      QCOMPARE(t.width, ew);
      QCOMPARE(t.height, eh);
    };
    check(64, 48, 30, 40, 30);
    check(48, 64, 30, 30, 40);
    check(30, 29, 30, 31, 30);     // int(30 * 30 / 29) = int(31.03)
    check(100, 33, 30, 90, 30);    // int(90.9): truncated, not rounded
    check(50, 50, 224, 224, 224);  // square: width <= height counts as portrait
    check(640, 480, 336, 448, 336);
    QVERIFY(contains(input_error_of([] { shortest_edge_size(20000, 1, 336); }),
                     "aspect ratio is too extreme"));
  }

  void normalizedTensorIsPlanarAndExact() {
    Image img;
    img.width = 2;
    img.height = 1;
    img.rgb = {0, 128, 255, 10, 20, 30};
    const at::Tensor raw = icet::vision::to_normalized_tensor(img, {0, 0, 0}, {1, 1, 1}, 1.0);
    QCOMPARE(raw.sizes().vec(), (std::vector<int64_t>{3, 1, 2}));
    const auto* p = raw.data_ptr<float>();
    QCOMPARE(std::vector<float>(p, p + 6), (std::vector<float>{0, 10, 128, 20, 255, 30}));

    const auto mean = icet::vision::kOpenAiClipMean;
    const auto std = icet::vision::kOpenAiClipStd;
    const at::Tensor t = icet::vision::to_normalized_tensor(img, mean, std, 1.0 / 255.0);
    // Same float32 arithmetic as HF: float32(x / 255 in float64), then (x - mean) / std.
    const auto expect = [&](int v, int c) {
      return (static_cast<float>(v * (1.0 / 255.0)) - mean[static_cast<size_t>(c)]) /
             std[static_cast<size_t>(c)];
    };
    QCOMPARE(t[0][0][0].item<float>(), expect(0, 0));
    QCOMPARE(t[1][0][0].item<float>(), expect(128, 1));
    QCOMPARE(t[2][0][1].item<float>(), expect(30, 2));
  }

  void preprocessStepsCanBeSwitchedOff() {
    const Image img = icet::vision::load_image(kRefs / "llava" / "image.png");
    ClipProcessorConfig cfg = icet::vision::load_clip_processor_config(
        kRefs / "llava" / "preprocessor_config.json");
    cfg.do_center_crop = false;
    QCOMPARE(icet::vision::clip_preprocess(img, cfg).sizes().vec(),
             (std::vector<int64_t>{3, 30, 40}));
    cfg.do_resize = false;
    cfg.do_rescale = false;
    cfg.do_normalize = false;
    const at::Tensor raw = icet::vision::clip_preprocess(img, cfg);
    QCOMPARE(raw.sizes().vec(), (std::vector<int64_t>{3, 48, 64}));
    QCOMPARE(raw[0][5][7].item<float>(), static_cast<float>(img.at(7, 5, 0)));
    cfg.size = icet::vision::SizeDict::exact(20, 50);  // {"height": 20, "width": 50}
    cfg.do_resize = true;
    QCOMPARE(icet::vision::clip_preprocess(img, cfg).sizes().vec(),
             (std::vector<int64_t>{3, 20, 50}));
  }

  // --- preprocessor_config.json ----------------------------------------------------------------

  void missingKeysTakeHfDefaults() {
    const ClipProcessorConfig c = ClipProcessorConfig::from_json(json::object(), "p.json");
    QVERIFY(c.do_resize && c.do_center_crop && c.do_rescale && c.do_normalize && c.do_convert_rgb);
    QCOMPARE(c.size.shortest_edge.value_or(0), 224);
    QVERIFY(!c.size.height);
    QCOMPARE(c.crop_size.height.value_or(0), 224);
    QCOMPARE(c.crop_size.width.value_or(0), 224);
    QCOMPARE(c.resample, Resample::Bicubic);
    QCOMPARE(c.rescale_factor, 1.0 / 255.0);
    QCOMPARE(c.image_mean[0], 0.48145466F);
    QCOMPARE(c.image_std[2], 0.27577711F);
  }

  void legacySizeFormsAreAccepted() {
    ClipProcessorConfig c = ClipProcessorConfig::from_json(
        json::parse(R"({"size": 336, "crop_size": 336, "image_mean": 0.5, "resample": 2})"),
        "p.json");
    QCOMPARE(c.size.shortest_edge.value_or(0), 336);
    QCOMPARE(c.crop_size.height.value_or(0), 336);
    QCOMPARE(c.crop_size.width.value_or(0), 336);
    QCOMPARE(c.image_mean[1], 0.5F);
    QCOMPARE(c.resample, Resample::Bilinear);

    c = ClipProcessorConfig::from_json(
        json::parse(R"({"size": {"height": 20, "width": 30}, "crop_size": [10, 12]})"), "p.json");
    QCOMPARE(c.size.height.value_or(0), 20);
    QCOMPARE(c.size.width.value_or(0), 30);
    QVERIFY(!c.size.shortest_edge);
    QCOMPARE(c.crop_size.height.value_or(0), 10);
    QCOMPARE(c.crop_size.width.value_or(0), 12);

    c = ClipProcessorConfig::from_json(
        json::parse(R"({"size": {"shortest_edge": 224}, "use_square_size": true})"), "p.json");
    QCOMPARE(c.size.height.value_or(0), 224);
    QCOMPARE(c.size.width.value_or(0), 224);
  }

  void mistypedKeysNameFileAndKey_data() {
    QTest::addColumn<QString>("text");
    QTest::addColumn<QString>("expected");
    QTest::newRow("size string") << R"({"size": "big"})"
                                 << R"(p.json: key "size": expected an integer)";
    QTest::newRow("size dict keys") << R"({"size": {"shortest": 3}})"
                                    << R"(p.json: key "size": expected)";
    QTest::newRow("size zero") << R"({"size": {"shortest_edge": 0}})"
                               << R"(p.json: key "size.shortest_edge": expected a positive integer)";
    QTest::newRow("crop edge") << R"({"crop_size": {"shortest_edge": 3}})"
                               << R"(p.json: key "crop_size": expected)";
    QTest::newRow("bool") << R"({"do_resize": "yes"})"
                          << R"(p.json: key "do_resize": expected true or false, found "yes")";
    QTest::newRow("mean length") << R"({"image_mean": [0.5, 0.5]})"
                                 << R"(p.json: key "image_mean": expected a number or a list of 3)";
    QTest::newRow("std zero") << R"({"image_std": [0.5, 0, 0.5]})"
                              << R"(p.json: key "image_std": expected non-zero)";
    QTest::newRow("nearest") << R"({"resample": 0})"
                             << R"(p.json: key "resample": expected a PIL filter code 1..5, found 0 (NEAREST))";
    QTest::newRow("resample range") << R"({"resample": 9})"
                                    << R"(p.json: key "resample": expected a PIL filter code 1..5, found 9)";
    QTest::newRow("rescale") << R"({"rescale_factor": "1/255"})"
                             << R"(p.json: key "rescale_factor": expected a number)";
    QTest::newRow("not object") << R"([1, 2])" << R"(p.json: expected a JSON object)";
  }

  void mistypedKeysNameFileAndKey() {
    QFETCH(QString, text);
    QFETCH(QString, expected);
    const std::string msg = input_error_of(
        [&] { ClipProcessorConfig::from_json(json::parse(text.toStdString()), "p.json"); });
    QVERIFY2(contains(msg, expected.toStdString()), msg.c_str());
  }

  void malformedOrMissingFileIsAnInputError() {
    QTemporaryDir dir;
    const fs::path file = fs::path(dir.path().toStdString()) / "preprocessor_config.json";
    std::ofstream(file) << R"({"size": {"shortest_edge": 30}, )";
    std::string msg = input_error_of([&] { icet::vision::load_clip_processor_config(file); });
    QVERIFY2(contains(msg, file.string() + ": expected valid JSON"), msg.c_str());

    std::ofstream(file) << R"({"crop_size": {"height": 30, "width": "30"}})";
    msg = input_error_of([&] { icet::vision::load_clip_processor_config(file); });
    QVERIFY2(contains(msg, file.string() + R"(: key "crop_size.width")"), msg.c_str());

    msg = input_error_of(
        [&] { icet::vision::load_clip_processor_config(file.parent_path() / "none.json"); });
    QVERIFY2(contains(msg, "none.json: cannot open"), msg.c_str());
  }
};

QTEST_GUILESS_MAIN(TestClipProcessor)
#include "test_clip_processor.moc"
