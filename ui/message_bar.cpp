#include "ui/message_bar.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QStyle>
#include <QToolButton>

namespace icet::ui {

MessageBar::MessageBar(QWidget* parent) : QFrame(parent) {
  setObjectName(QStringLiteral("MessageBar"));
  setFrameShape(QFrame::StyledPanel);
  setAccessibleName(tr("Messages"));
  m_icon = new QLabel(this);
  m_text = new QLabel(this);
  m_text->setObjectName(QStringLiteral("MessageText"));
  m_text->setWordWrap(true);
  m_text->setTextInteractionFlags(Qt::TextSelectableByMouse);
  m_close = new QToolButton(this);
  m_close->setIcon(QIcon(QStringLiteral(":/icons/close.svg")));
  m_close->setAutoRaise(true);
  m_close->setToolTip(tr("Close message"));
  m_close->setAccessibleName(tr("Close message"));
  connect(m_close, &QToolButton::clicked, this, &QWidget::hide);
  auto* layout = new QHBoxLayout(this);
  layout->setContentsMargins(8, 4, 4, 4);
  layout->addWidget(m_icon);
  layout->addWidget(m_text, 1);
  layout->addWidget(m_close);
  hide();
}

void MessageBar::showMessage(Kind kind, const QString& text) {
  m_kind = kind;
  ++m_count;
  const QStyle::StandardPixmap icon = kind == Error     ? QStyle::SP_MessageBoxCritical
                                      : kind == Warning ? QStyle::SP_MessageBoxWarning
                                                        : QStyle::SP_MessageBoxInformation;
  m_icon->setPixmap(style()->standardIcon(icon).pixmap(20, 20));
  const QString prefix = kind == Error ? tr("Error: ") : kind == Warning ? tr("Warning: ") : QString();
  m_text->setText(prefix + text);
  const QString bg = kind == Error     ? QStringLiteral("rgba(220,50,50,0.18)")
                     : kind == Warning ? QStringLiteral("rgba(230,160,0,0.18)")
                                       : QStringLiteral("rgba(60,130,220,0.15)");
  setStyleSheet(QStringLiteral("#MessageBar{background:%1;border-radius:4px;}").arg(bg));
  show();
}

QString MessageBar::text() const {
  return m_text->text();
}

}  // namespace icet::ui
