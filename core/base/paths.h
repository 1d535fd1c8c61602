#pragma once

#include <filesystem>

namespace icet {

// The user's data folder, where logs, runs and recent state live:
// $XDG_DATA_HOME/icet/icet-studio (default ~/.local/share/icet/icet-studio). It equals
// QStandardPaths::AppLocalDataLocation for organisation "icet" and application
// "icet-studio", so the CLI and the GUI share one folder. Not created here.
std::filesystem::path user_data_dir();

}  // namespace icet
