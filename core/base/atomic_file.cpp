#include "core/base/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
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

}  // namespace icet
