// libFuzzer target: a session bundle's session.json (ui/session_bundle.h, Qt Core only).
#include <QByteArray>
#include <QString>

#include <cstddef>
#include <cstdint>

#include "core/base/error.h"
#include "tests/fuzz/fuzz_support.h"
#include "ui/session_bundle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const QByteArray json(reinterpret_cast<const char*>(data), static_cast<qsizetype>(size));
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const auto bundle = icet::ui::parse_session_bundle(json, QStringLiteral("/fuzz/session.json"));
    (void)bundle.panes.size();
  });
  return 0;
}
