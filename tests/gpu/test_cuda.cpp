#include <QTest>

#include <ATen/Functions.h>
#include <torch/cuda.h>

#include "core/runtime/diagnostics.h"

// GPU checks: skipped cleanly where LibTorch sees no CUDA device (CPU-only builds, CI).
class TestCuda : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  // Skipping here skips the whole class, which ctest reports as "Skipped" (tests/CMakeLists.txt).
  void initTestCase() {
    if (!torch::cuda::is_available()) {
      QSKIP("no CUDA device visible to LibTorch");
    }
  }

  void diagnosticsNameTheDevice() {
    const auto info = icet::runtime::collect_runtime_info("test");
    QVERIFY(info.cuda_available);
    QVERIFY(!info.cuda_devices.empty());
    QVERIFY(!info.cuda_devices.front().name.empty());
    QVERIFY(icet::runtime::device_summary(info).rfind("CUDA", 0) == 0);
  }

  void matmulMatchesCpu() {
    const auto a = at::randn({256, 256});
    const auto b = at::randn({256, 256});
    const auto cpu = at::mm(a, b);
    const auto gpu = at::mm(a.to(at::kCUDA), b.to(at::kCUDA)).to(at::kCPU);
    // TF32 may be on for CUDA matmuls; 1e-2 relative covers it.
    QVERIFY(at::allclose(cpu, gpu, 1e-2, 1e-2));
  }
};

QTEST_GUILESS_MAIN(TestCuda)
#include "test_cuda.moc"
