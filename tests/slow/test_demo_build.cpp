#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/base/error.h"
#include "core/demo/commands.h"
#include "core/demo/vlm_builder.h"
#include "core/io/safetensors.h"
#include "support/errors.h"

namespace fs = std::filesystem;

// `icet demo build` at a tiny scale (seconds, not the committed recipe's minutes): the build is
// deterministic, reusing a tower reproduces the whole model, a wrong tower is refused by name,
// and the standardisation the LM stages train with folds exactly into the saved projector.
class TestDemoBuild : public QObject {
  Q_OBJECT

 private:
  QTemporaryDir m_tmp;

  static std::string bytes(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  nlohmann::json build(const std::string& name, const fs::path& vision_from = {}) {
    icet::demo::DemoBuildOptions o;
    o.out = fs::path(m_tmp.path().toStdString()) / name;
    o.scale = 0.01;  // 25 vision steps, 50 instruct, 3 align, 128 scenes
    o.train_items = 8;
    o.heldout_items = 8;
    o.only = {"sets", "vlm"};
    o.vision_from = vision_from;
    return icet::demo::run_demo_build(o);
  }

  fs::path dir(const std::string& name) const { return fs::path(m_tmp.path().toStdString()) / name; }

 private Q_SLOTS:
  void initTestCase() { QVERIFY(m_tmp.isValid()); }

  void buildIsDeterministicAndRecordsItsProbe() {
    const auto a = build("a");
    build("b");
    QVERIFY(bytes(dir("a") / "vlm" / "model.safetensors") == bytes(dir("b") / "vlm" / "model.safetensors"));
    const auto& vlm = a.at("vlm");
    QVERIFY(vlm.at("recipe").at("standardise").get<bool>());
    for (const char* attr : {"patch", "presence", "kind", "colour", "quadrant"}) {
      const double v = vlm.at("vision").at("heldout_accuracy").at(attr).get<double>();
      QVERIFY2(v >= 0.0 && v <= 1.0, attr);
    }
    for (const char* stage : {"instruct", "align"}) {
      const auto& probe = vlm.at(stage).at("probe");
      for (const char* task : {"benign", "describe", "colour", "count", "position", "is_there"}) {
        QVERIFY2(probe.contains(task) && probe.at(task).get<double>() >= 0.0 && probe.at(task).get<double>() <= 1.0, task);
      }
    }
    // The snapshot loads in the engine: the held-out check ran on it at every layer.
    QCOMPARE(a.at("heldout").at("asr_by_layer").size(), size_t{24});
  }

  void reusedTowerReproducesTheWholeModel() {
    // The LM stages depend on the tower only through its features, so a build that reuses the
    // tower of "a" writes the same model, byte for byte.
    const auto c = build("c", dir("a") / "vlm");
    QCOMPARE(c.at("vlm").at("vision").at("reused_from").get<std::string>(), (dir("a") / "vlm").string());
    QVERIFY(!c.at("vlm").at("vision").contains("heldout_accuracy"));
    QVERIFY(bytes(dir("a") / "vlm" / "model.safetensors") == bytes(dir("c") / "vlm" / "model.safetensors"));
  }

  void wrongTowerIsRefusedByName() {
    // A tower whose patch embedding has another width.
    const auto store = icet::io::TensorStore::open_file(dir("a") / "vlm" / "model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    const std::string bad = "vision_tower.vision_model.embeddings.patch_embedding.weight";
    for (const auto& name : store.names()) tensors.emplace_back(name, name == bad ? at::zeros({32, 3, 16, 16}) : store.get(name));
    fs::create_directories(dir("bad"));
    icet::io::save_safetensors(dir("bad") / "model.safetensors", tensors, {{"format", "pt"}});
    try {
      build("d", dir("bad"));
      QFAIL("a tower of another width was accepted");
    } catch (const icet::InputError& e) {
      const std::string m = e.what();
      QVERIFY2(m.find((dir("bad") / "model.safetensors").string() + ": " + bad) != std::string::npos, m.c_str());
      QVERIFY2(m.find("expected shape [64, 3, 16, 16]") != std::string::npos && m.find("found [32, 3, 16, 16]") != std::string::npos,
               m.c_str());
    }
  }

  void standardisationFoldsIntoTheProjector() {
    at::manual_seed(3);
    const at::Tensor w = at::randn({128, 64}), b = at::randn({128}), x = at::randn({5, 64}) * 7 + 3;
    const at::Tensor mean = x.mean(0), std = x.std(0);
    at::Tensor w2 = w.clone(), b2 = b.clone();
    icet::demo::fold_standardisation(w2, b2, mean, std);
    const at::Tensor want = at::linear((x - mean) / std, w, b), got = at::linear(x, w2, b2);
    QVERIFY2(at::allclose(got, want, 1e-4, 1e-4), std::to_string((got - want).abs().max().item<double>()).c_str());
  }
};

QTEST_GUILESS_MAIN(TestDemoBuild)
#include "test_demo_build.moc"
