#include "ui/theme.h"

#include <QApplication>
#include <QPalette>
#include <QStyle>
#include <QStyleFactory>

namespace icet::ui {

void applyTheme(QApplication& app, Theme theme) {
  app.setStyle(QStyleFactory::create(QStringLiteral("Fusion")));
  if (theme == Theme::Light) {
    app.setPalette(app.style()->standardPalette());
    return;
  }
  QPalette p;
  const QColor window(37, 38, 43);
  const QColor base(27, 28, 32);
  const QColor text(226, 228, 233);
  const QColor disabled(120, 122, 128);
  const QColor accent(82, 148, 226);
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
  p.setColor(QPalette::Highlight, accent);
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

}  // namespace icet::ui
