#include <QTemporaryDir>
#include <QTest>

#include <fstream>
#include <sstream>

#include "core/base/log.h"

class TestLog : public QObject {
  Q_OBJECT

 private:
  static std::string readFile(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private Q_SLOTS:
  void areaLoggersWriteToTheFileSink() {
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    const auto file = std::filesystem::path(dir.path().toStdString()) / "logs" / "test.log";
    icet::log::init({spdlog::level::info, false, spdlog::level::info, file});
    QVERIFY(icet::log::current_file().has_value());

    for (std::string_view area : icet::log::kAreas) {
      auto logger = icet::log::get(area);
      QVERIFY(logger != nullptr);
      QCOMPARE(logger->name(), std::string(area));
    }
    icet::log::get("io")->info("hello from io {}", 42);
    icet::log::get("models")->debug("debug is below the level");
    icet::log::get("io")->flush();
    const std::string text = readFile(file);
    QVERIFY2(text.find("[io]") != std::string::npos, text.c_str());
    QVERIFY(text.find("hello from io 42") != std::string::npos);
    QVERIFY(text.find("debug is below the level") == std::string::npos);
  }

  void setLevelRaisesVerbosity() {
    QTemporaryDir dir;
    const auto file = std::filesystem::path(dir.path().toStdString()) / "v.log";
    icet::log::init({spdlog::level::info, false, spdlog::level::info, file});
    icet::log::set_level(spdlog::level::debug);
    icet::log::get("rl")->debug("now visible");
    icet::log::get("rl")->flush();
    QVERIFY(readFile(file).find("now visible") != std::string::npos);
  }

  void unknownAreaGetsALoggerOnTheSameSinks() {
    QTemporaryDir dir;
    const auto file = std::filesystem::path(dir.path().toStdString()) / "u.log";
    icet::log::init({spdlog::level::info, false, spdlog::level::info, file});
    auto logger = icet::log::get("not-an-area");
    logger->info("still logged");
    logger->flush();
    QVERIFY(readFile(file).find("still logged") != std::string::npos);
  }

  void unwritableFileDoesNotStopStartUp() {
    // A path below a regular file cannot be created; init must carry on without the file.
    QTemporaryDir dir;
    const auto blocker = std::filesystem::path(dir.path().toStdString()) / "blocker";
    std::ofstream(blocker) << "x";
    icet::log::init({spdlog::level::info, false, spdlog::level::info, blocker / "sub" / "x.log"});
    QVERIFY(!icet::log::current_file().has_value());
    icet::log::get("app")->info("console-less logging still works");
  }

  void defaultFileIsInTheUserDataFolder() {
    const auto p = icet::log::default_file("icet");
    QCOMPARE(QString::fromStdString(p.filename().string()), QStringLiteral("icet.log"));
    QVERIFY(p.string().find("icet/icet-studio/logs") != std::string::npos);
  }
};

QTEST_GUILESS_MAIN(TestLog)
#include "test_log.moc"
