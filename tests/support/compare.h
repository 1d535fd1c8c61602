#pragma once

// Tensor comparison for Qt tests: reports the largest deviation, so a failure says by how much.

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <QTest>

#include <sstream>
#include <string>

namespace icet::test {

// |a - b| <= atol + rtol * |b| elementwise (torch.allclose semantics, b = reference).
inline std::string close_report(const at::Tensor& actual, const at::Tensor& expected, double atol, double rtol) {
  std::ostringstream out;
  if (actual.sizes() != expected.sizes()) {
    out << "shape " << actual.sizes() << " vs reference " << expected.sizes();
    return out.str();
  }
  const at::Tensor a = actual.to(at::kCPU).to(at::kDouble);
  const at::Tensor b = expected.to(at::kCPU).to(at::kDouble);
  const at::Tensor diff = (a - b).abs();
  const at::Tensor bad = diff > (atol + rtol * b.abs());
  if (bad.any().item<bool>()) {
    out << bad.sum().item<int64_t>() << " of " << bad.numel() << " elements off; max |diff| "
        << diff.max().item<double>() << " (atol " << atol << ", rtol " << rtol << ")";
  }
  return out.str();
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU).to(at::kDouble) - b.to(at::kCPU).to(at::kDouble)).abs().max().item<double>();
}

inline std::vector<int64_t> to_ids(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU).to(at::kLong).contiguous().view({-1});
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace icet::test

#define ICET_EXPECT_CLOSE(actual, expected, atol, rtol, what)                              \
  do {                                                                                      \
    const std::string icet_report_ = icet::test::close_report((actual), (expected), (atol), (rtol)); \
    QVERIFY2(icet_report_.empty(), (std::string(what) + ": " + icet_report_).c_str());      \
  } while (false)
