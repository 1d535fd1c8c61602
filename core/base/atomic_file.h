#pragma once

// Crash-safe file writes for run folders: a reader never sees a half-written file.

#include <filesystem>
#include <string>

namespace icet {

// Writes `text` to <file>.tmp, fsyncs it, renames it over `file` and fsyncs the folder.
// EnvironmentError naming the file when the disk refuses.
void write_file_atomic(const std::filesystem::path& file, const std::string& text);
// fsync of a file or folder (best effort for folders on file systems that refuse it).
void fsync_path(const std::filesystem::path& path);

}  // namespace icet
