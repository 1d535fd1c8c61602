#pragma once

#include <QString>

class QApplication;

namespace icet::ui {

enum class Theme { Light, Dark };

// Fusion style with a light or dark palette (Qt 6.4 has no colour-scheme hint to follow).
void applyTheme(QApplication& app, Theme theme);

QString themeKey(Theme theme);         // "light" / "dark", as stored in QSettings
Theme themeFromKey(const QString& key);  // unknown keys give Light

// The theme kept in QSettings ("ui/theme"), Light when none was chosen.
Theme storedTheme();
// Applies `theme` and keeps it for the next start.
void setTheme(QApplication& app, Theme theme);

}  // namespace icet::ui
