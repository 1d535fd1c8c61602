#pragma once

// Crash-safe file writes for run folders: a reader never sees a half-written file.

#include <filesystem>
#include <string>

namespace icet {

// Writes `text` to a temp file of its own beside `file` (<file>.tmp.XXXXXX), fsyncs it, renames
// it over `file` and fsyncs the folder; concurrent writers of one file each land whole. On any
// failure the temp file is removed and an EnvironmentError names the file.
void write_file_atomic(const std::filesystem::path& file, const std::string& text);
// fsync of a file or folder (best effort for folders on file systems that refuse it).
void fsync_path(const std::filesystem::path& path);

}  // namespace icet
