#pragma once

// One writer per folder: a training run holds its run folder's lock for as long as it lives,
// so a second trainer (Resume on a running job's folder, or a second `icet train --resume`)
// is refused instead of interleaving checkpoints and logs with the first.

#include <filesystem>
#include <string>

namespace icet {

class FolderLock {
 public:
  // Locks <dir>/.lock (flock, exclusive, non-blocking) and writes this process's id into it.
  // The kernel drops the lock when the process ends, however it ends, so a killed job leaves no
  // stale lock. Throws InputError naming `dir`, `what` it is and the holder's pid when another
  // job holds it; EnvironmentError when the lock file cannot be created.
  static FolderLock acquire(const std::filesystem::path& dir, const std::string& what);

  FolderLock(FolderLock&& other) noexcept;
  FolderLock& operator=(FolderLock&& other) noexcept;
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;
  ~FolderLock();

 private:
  explicit FolderLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace icet
