#pragma once

// Crash-safe file writes for run folders (a reader never sees a half-written file) and bounded
// reads of files that come from other people.

#include <cstdint>
#include <filesystem>
#include <string>

namespace icet {

// Writes `text` to a temp file of its own beside `file` (<file>.tmp.XXXXXX), fsyncs it, renames
// it over `file` and fsyncs the folder; concurrent writers of one file each land whole. On any
// failure the temp file is removed and an EnvironmentError names the file.
void write_file_atomic(const std::filesystem::path& file, const std::string& text);
// Puts the complete folder `staged` at `target` in one step, so a reader (or a restart after a
// kill) finds the old folder or the new one, never neither: an existing `target` is swapped with
// renameat2(RENAME_EXCHANGE) and the old one removed afterwards. File systems without the
// exchange (some network ones) fall back to rename-aside then rename, keeping the old folder at
// "<target>.old" until the new one is in. Throws EnvironmentError naming both paths.
void replace_folder(const std::filesystem::path& staged, const std::filesystem::path& target);
// fsync of a file or folder (best effort for folders on file systems that refuse it).
void fsync_path(const std::filesystem::path& path);

// Reads a whole regular file of at most `max_bytes`. A folder, device (/dev/zero), FIFO or socket,
// or a larger file is an InputError naming `file` and the limit, raised before any byte is read.
// `what` says what the file is for ("a session file"); an unreadable file is an InputError too.
std::string read_file_limited(const std::filesystem::path& file, std::uint64_t max_bytes,
                              const std::string& what);

}  // namespace icet
