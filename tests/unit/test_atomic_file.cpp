#include <QTemporaryDir>
#include <sys/stat.h>
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
  // Bounded reads of files from other people: devices, pipes and folders are refused before a
  // byte is read (a FIFO without blocking), a file over the limit is refused, one at it is read.
  void boundedReadsRefuseDevicesPipesAndLargeFiles() {
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString();
    auto refused = [](const fs::path& file, std::uint64_t limit, const std::string& what) {
      try {
        icet::read_file_limited(file, limit, "a test file");
      } catch (const icet::InputError& e) {
        const std::string m = e.what();
        return m.find(file.string()) != std::string::npos && m.find(what) != std::string::npos;
      }
      return false;
    };
    QVERIFY(refused("/dev/zero", 1 << 20, "a character device"));
    const fs::path fifo = dir / "fifo";
    QVERIFY(::mkfifo(fifo.c_str(), 0600) == 0);
    QVERIFY(refused(fifo, 1 << 20, "a pipe"));  // returns: no writer is waited for
    QVERIFY(refused(dir, 1 << 20, "a folder"));
    QVERIFY(refused(dir / "missing", 1 << 20, "No such file"));
    std::ofstream(dir / "ten") << "0123456789";
    QVERIFY(refused(dir / "ten", 9, "at most 9 bytes"));
    QCOMPARE(icet::read_file_limited(dir / "ten", 10, "a test file"), std::string("0123456789"));
    std::ofstream(dir / "empty");
    QCOMPARE(icet::read_file_limited(dir / "empty", 10, "a test file"), std::string());
  }

  // replace_folder swaps a whole folder in: the target always exists with the old or the new
  // content, the staged folder is gone afterwards, and a first write is a plain rename.
  void replaceFolderSwapsWholeFolders() {
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString();
    auto stage = [&](const std::string& content) {
      fs::create_directories(dir / "staged");
      std::ofstream(dir / "staged" / "file") << content;
    };
    stage("first");
    icet::replace_folder(dir / "staged", dir / "target");
    QCOMPARE(read(dir / "target" / "file"), std::string("first"));
    QVERIFY(!fs::exists(dir / "staged"));
    stage("second");
    std::ofstream(dir / "target" / "stale") << "only in the old folder";
    icet::replace_folder(dir / "staged", dir / "target");
    QCOMPARE(read(dir / "target" / "file"), std::string("second"));
    QVERIFY(!fs::exists(dir / "target" / "stale"));
    QVERIFY(!fs::exists(dir / "staged"));
    QCOMPARE(entries(dir), std::vector<std::string>{"target"});
  }

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
