#include <ATen/Functions.h>
#include <ATen/core/Tensor.h>

#include <QTemporaryDir>
#include <QTest>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/base/error.h"
#include "core/io/safetensors.h"

namespace fs = std::filesystem;
using icet::io::DType;
using icet::io::SafetensorsFile;
using icet::io::TensorStore;

class TestSafetensors : public QObject {
  Q_OBJECT

 private:
  static fs::path fixture(const std::string& rel) { return fs::path(ICET_FIXTURES) / rel; }

 private Q_SLOTS:
  void readsTheLlavaFixture() {
    const auto file = SafetensorsFile::open(fixture("hf-reference/llava/model.safetensors"));
    QCOMPARE(file->names().size(), std::size_t{128});
    QCOMPARE(file->metadata().at("format"), std::string("pt"));
    const std::string name = "language_model.model.layers.0.input_layernorm.weight";
    const auto& info = file->info(name);
    QCOMPARE(info.dtype, DType::F32);
    QCOMPARE(info.shape, std::vector<int64_t>{64});
    QCOMPARE(info.begin, uint64_t{204800});
    const at::Tensor t = file->tensor(name);
    QCOMPARE(t.sizes().vec(), std::vector<int64_t>{64});
    QCOMPARE(t.scalar_type(), at::kFloat);
    // Value read independently with Python's struct module from the same file.
    QCOMPARE(t[0].item<float>(), 0.9988641142845154f);
  }

  void tensorsOutliveTheFile() {
    at::Tensor t;
    {
      const auto file = SafetensorsFile::open(fixture("hf-reference/llava/refs.safetensors"));
      t = file->tensor("inputs.input_ids");
    }
    QCOMPARE(t.sizes().vec(), (std::vector<int64_t>{1, 46}));
    QCOMPARE(t[0][1].item<int64_t>(), int64_t{293});
  }
};

QTEST_GUILESS_MAIN(TestSafetensors)
#include "test_safetensors.moc"
