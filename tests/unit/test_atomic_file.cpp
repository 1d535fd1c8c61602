#include <QTemporaryDir>
#include <QTest>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/base/atomic_file.h"
#include "core/base/error.h"

namespace fs = std::filesystem;

// write_file_atomic: a failed write leaves no temp file behind, and concurrent writers of one
// file (two trainers, a resume beside a running job) each land whole instead of truncating each
// other's data or failing to rename (both happened with one fixed "<file>.tmp").
class TestAtomicFile : public QObject {
  Q_OBJECT

 private:
  static std::string read(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  static std::vector<std::string> entries(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    return names;
  }

 private Q_SLOTS:
  void writesAndReplaces() {
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), file = dir / "state.json";
    icet::write_file_atomic(file, "one");
    icet::write_file_atomic(file, "two");
    QCOMPARE(read(file), std::string("two"));
    QCOMPARE(entries(dir), std::vector<std::string>{"state.json"});
    QCOMPARE(fs::status(file).permissions() & fs::perms::others_read, fs::perms::others_read);
  }

  void failedRenameLeavesNoTempFile() {
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), target = dir / "taken";
    fs::create_directories(target / "inside");  // a non-empty folder: the rename over it fails
    bool threw = false;
    try {
      icet::write_file_atomic(target, "data");
    } catch (const icet::EnvironmentError& e) {
      threw = true;
      QVERIFY2(std::string(e.what()).find(target.string()) != std::string::npos, e.what());
    }
    QVERIFY(threw);
    QCOMPARE(entries(dir), std::vector<std::string>{"taken"});
  }

  void concurrentWritersEachLandWhole() {
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), file = dir / "metrics.csv";
    const std::string a(1 << 16, 'a'), b(1 << 16, 'b');
    std::atomic<int> errors{0};
    const auto writer = [&](const std::string& text) {
      for (int i = 0; i < 200; ++i) {
        try {
          icet::write_file_atomic(file, text);
        } catch (const std::exception&) {
          ++errors;
        }
        const std::string now = read(file);
        if (now != a && now != b) ++errors;  // torn: parts of both, or cut short
      }
    };
    std::thread t1(writer, a), t2(writer, b);
    t1.join();
    t2.join();
    QCOMPARE(errors.load(), 0);
    QCOMPARE(entries(dir), std::vector<std::string>{"metrics.csv"});
  }
};

QTEST_GUILESS_MAIN(TestAtomicFile)
#include "test_atomic_file.moc"
