#include "core/base/atomic_file.h"

#include <fcntl.h>
#include <linux/fs.h>  // RENAME_EXCHANGE
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>

#include "core/base/error.h"

namespace icet {

void fsync_path(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const std::filesystem::path& file, const std::string& text) {
  // A temp name of its own (mkstemp) for every call: with one fixed "<file>.tmp", two writers of
  // the same file truncated each other's data and one rename found nothing to move.
  std::string name = file.string() + ".tmp.XXXXXX";
  const int fd = ::mkstemp(name.data());
  if (fd < 0) {
    throw EnvironmentError(describe(file.string() + ".tmp.*", "a writable file", "error: " + errno_message(errno)));
  }
  const std::filesystem::path tmp = name;
  // Whatever fails from here on, the temp file goes: a failed write leaves nothing behind.
  struct Cleanup {
    const std::filesystem::path& path;
    int fd;
    bool keep = false;
    ~Cleanup() {
      if (fd >= 0) ::close(fd);
      std::error_code ec;
      if (!keep) std::filesystem::remove(path, ec);
    }
  } cleanup{tmp, fd};
  ::fchmod(fd, 0644);  // mkstemp creates 0600; run files are shared like any other output
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw EnvironmentError(describe(tmp.string(), "the write to succeed", "error: " + errno_message(errno)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    throw EnvironmentError(describe(tmp.string(), "fsync to succeed", "error: " + errno_message(errno)));
  }
  ::close(fd);
  cleanup.fd = -1;
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) {
    throw EnvironmentError(describe(file.string(), "the rename of its temp file to succeed", ec.message()));
  }
  cleanup.keep = true;
  fsync_path(file.parent_path().empty() ? std::filesystem::path(".") : file.parent_path());
}

void replace_folder(const std::filesystem::path& staged, const std::filesystem::path& target) {
  auto fail = [&](const std::string& step, int err) {
    throw EnvironmentError(describe(target.string(), step + " (from " + staged.string() + ") to succeed",
                                    "error: " + errno_message(err)));
  };
  std::error_code ec;
  const auto parent = target.parent_path().empty() ? std::filesystem::path(".") : target.parent_path();
  if (!std::filesystem::exists(target, ec)) {
    if (::rename(staged.c_str(), target.c_str()) != 0) fail("the rename", errno);
    fsync_path(parent);
    return;
  }
  // The syscall, not glibc's wrapper (2.28+): LibTorch 2.x builds also run on older systems.
  if (::syscall(SYS_renameat2, AT_FDCWD, staged.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    fsync_path(parent);
    // Test hook (tests/unit/test_cli_train.cpp): a kill here leaves the new folder in place
    // and the old one at `staged`, which the next write clears.
    if (const char* k = std::getenv("ICET_TEST_KILL_IN_FOLDER_SWAP"); k != nullptr && target.filename() == k) {
      std::raise(SIGKILL);
    }
    std::filesystem::remove_all(staged, ec);
    return;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) fail("the exchange", errno);
  const std::filesystem::path old = target.string() + ".old";
  std::filesystem::remove_all(old, ec);
  if (::rename(target.c_str(), old.c_str()) != 0) fail("moving the old folder aside", errno);
  if (::rename(staged.c_str(), target.c_str()) != 0) {
    const int err = errno;
    ::rename(old.c_str(), target.c_str());  // put the old one back
    fail("the rename", err);
  }
  fsync_path(parent);
  std::filesystem::remove_all(old, ec);
}

std::string read_file_limited(const std::filesystem::path& file, std::uint64_t max_bytes,
                              const std::string& what) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; the checks below refuse it anyway.
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    throw InputError(describe(file.string(), "a readable file (" + what + ")", "error: " + errno_message(err)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const char* kind = S_ISDIR(st.st_mode)   ? "a folder"
                       : S_ISCHR(st.st_mode) ? "a character device"
                       : S_ISBLK(st.st_mode) ? "a block device"
                       : S_ISFIFO(st.st_mode) ? "a pipe"
                                              : "not a regular file";
    throw InputError(describe(file.string(), "a regular file (" + what + ")", kind));
  }
  auto too_big = [&](std::uint64_t found) {
    return InputError(describe(file.string(), what + " of at most " + std::to_string(max_bytes) + " bytes",
                               std::to_string(found) + " bytes"));
  };
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) throw too_big(static_cast<std::uint64_t>(st.st_size));
  std::string out;
  out.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  // Reads to the end rather than trusting st_size: a file that grows while read stays bounded.
  for (;;) {
    if (done == out.size()) {
      if (out.size() >= max_bytes + 1) throw too_big(out.size());
      out.resize(std::min<std::uint64_t>(max_bytes + 1, std::max<std::uint64_t>(out.size() * 2, 4096)));
    }
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      throw InputError(describe(file.string(), "a readable file (" + what + ")", "error: " + errno_message(err)));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > max_bytes) throw too_big(done);
  out.resize(done);
  return out;
}

}  // namespace icet
