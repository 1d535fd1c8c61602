#include "ui/theme.h"

#include <QApplication>
#include <QPalette>
#include <QSettings>
#include <QStyle>
#include <QStyleFactory>

namespace icet::ui {

void applyTheme(QApplication& app, Theme theme) {
  app.setStyle(QStyleFactory::create(QStringLiteral("Fusion")));
  // Selected text is white on this blue in both themes (Fusion's own #308cc6 gives a contrast
  // of 3.6, under the 4.5 that body text needs).
  const QColor selection(42, 110, 190);
  if (theme == Theme::Light) {
    QPalette p = app.style()->standardPalette();
    p.setColor(QPalette::Active, QPalette::Highlight, selection);
    p.setColor(QPalette::Inactive, QPalette::Highlight, selection);
    app.setPalette(p);
    return;
  }
  QPalette p;
  const QColor window(37, 38, 43);
  const QColor base(27, 28, 32);
  const QColor text(226, 228, 233);
  const QColor disabled(120, 122, 128);
  const QColor accent(82, 148, 226);  // links: light enough on the dark base
  p.setColor(QPalette::Window, window);
  p.setColor(QPalette::WindowText, text);
  p.setColor(QPalette::Base, base);
  p.setColor(QPalette::AlternateBase, window);
  p.setColor(QPalette::ToolTipBase, base);
  p.setColor(QPalette::ToolTipText, text);
  p.setColor(QPalette::PlaceholderText, disabled);
  p.setColor(QPalette::Text, text);
  p.setColor(QPalette::Button, window);
  p.setColor(QPalette::ButtonText, text);
  p.setColor(QPalette::BrightText, QColor(255, 92, 92));
  p.setColor(QPalette::Link, accent);
  p.setColor(QPalette::Highlight, selection);
  p.setColor(QPalette::HighlightedText, Qt::white);
  p.setColor(QPalette::Disabled, QPalette::Text, disabled);
  p.setColor(QPalette::Disabled, QPalette::ButtonText, disabled);
  p.setColor(QPalette::Disabled, QPalette::WindowText, disabled);
  app.setPalette(p);
}

QString themeKey(Theme theme) {
  return theme == Theme::Dark ? QStringLiteral("dark") : QStringLiteral("light");
}

Theme themeFromKey(const QString& key) {
  return key == QLatin1String("dark") ? Theme::Dark : Theme::Light;
}

Theme storedTheme() {
  return themeFromKey(QSettings().value(QStringLiteral("ui/theme")).toString());
}

void setTheme(QApplication& app, Theme theme) {
  QSettings().setValue(QStringLiteral("ui/theme"), themeKey(theme));
  applyTheme(app, theme);
}

}  // namespace icet::ui
