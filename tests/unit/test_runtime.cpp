#include <QTest>

#include <ATen/Parallel.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/runtime/diagnostics.h"
#include "core/runtime/threads.h"

class TestRuntime : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void threadPrecedence() {
    ::setenv("ICET_THREADS", "3", 1);
    auto c = icet::runtime::choose_threads(5, 4);
    QCOMPARE(c.intra_op, 5);
    QCOMPARE(QString::fromStdString(c.source), QStringLiteral("option"));
    c = icet::runtime::choose_threads(std::nullopt, 4);
    QCOMPARE(c.intra_op, 4);
    QCOMPARE(QString::fromStdString(c.source), QStringLiteral("setting"));
    c = icet::runtime::choose_threads(std::nullopt, 0);  // 0 = automatic
    QCOMPARE(c.intra_op, 3);
    QCOMPARE(QString::fromStdString(c.source), QStringLiteral("ICET_THREADS"));
    ::setenv("ICET_THREADS", "zero", 1);  // invalid: ignored with a warning
    c = icet::runtime::choose_threads(std::nullopt, std::nullopt);
    QCOMPARE(QString::fromStdString(c.source), QStringLiteral("default"));
    QVERIFY(c.intra_op >= 1);
    ::unsetenv("ICET_THREADS");
  }

  void applyThreadsSetsTorch() {
    icet::runtime::apply_threads(2);
    QCOMPARE(at::get_num_threads(), 2);
    QCOMPARE(icet::runtime::current_intra_op_threads(), 2);
    icet::runtime::apply_threads(1);
    QCOMPARE(at::get_num_threads(), 1);
    icet::runtime::apply_threads(0);  // clamped, never zero threads
    QCOMPARE(at::get_num_threads(), 1);
  }

  void collectsDiagnostics() {
    icet::runtime::apply_threads(2);
    const auto info = icet::runtime::collect_runtime_info("option");
    QVERIFY(!info.torch_version.empty());
    QVERIFY(!info.blas.name.empty());
    QCOMPARE(info.intra_op_threads, 2);
    QCOMPARE(QString::fromStdString(info.threads_source), QStringLiteral("option"));
    if (!info.cuda_available) {
      QVERIFY2(!info.cuda_note.empty(), "a missing GPU must be explained");
    }
    const auto j = icet::runtime::to_json(info);
    for (const char* key : {"version", "torch_version", "blas", "intra_op_threads",
                            "cuda_available", "cuda_devices", "warnings"}) {
      QVERIFY2(j.contains(key), key);
    }
    const std::string text = icet::runtime::to_text(info);
    QVERIFY(text.find("BLAS") != std::string::npos);
    QVERIFY(text.find("Intra-op threads  2") != std::string::npos);
  }

  void referenceBlasIsWarnedAboutWithTheFix() {
    icet::runtime::RuntimeInfo info;
    info.blas.name = "reference BLAS (netlib)";
    info.blas.library = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3";
    info.blas.reference = true;
    info.intra_op_threads = 2;
    info.hardware_threads = 2;
    const auto warnings = icet::runtime::runtime_warnings(info);
    QCOMPARE(warnings.size(), std::size_t{1});
    QVERIFY(warnings[0].find("libopenblas0-openmp") != std::string::npos);
    QVERIFY(warnings[0].find("20x slower") != std::string::npos);
    QVERIFY(icet::runtime::device_summary(info).find("slow") != std::string::npos);
  }

  void deviceSummaryNamesCudaDevice() {
    icet::runtime::RuntimeInfo info;
    info.cuda_available = true;
    info.cuda_devices.push_back({0, "NVIDIA H200", 141LL << 30});
    QCOMPARE(QString::fromStdString(icet::runtime::device_summary(info)),
             QStringLiteral("CUDA · NVIDIA H200"));
  }

  void errorMessagesFollowOneFormat() {
    const std::string msg = icet::describe("model.safetensors: tensor 'lm_head.weight'",
                                           "shape [400, 64]", "[64, 400]", "Re-export the file.");
    QCOMPARE(QString::fromStdString(msg),
             QStringLiteral("model.safetensors: tensor 'lm_head.weight': expected shape "
                            "[400, 64], found [64, 400]. Re-export the file."));
    try {
      throw icet::InputError(msg);
    } catch (const icet::Error& e) {
      QCOMPARE(std::string(e.what()), msg);
    }
  }
};

QTEST_GUILESS_MAIN(TestRuntime)
#include "test_runtime.moc"
