#pragma once

// A non-modal message strip (like KMessageWidget): errors and notices appear above the
// workspace while the app keeps working; the user closes it or it is replaced by the next one.

#include <QFrame>

class QLabel;
class QToolButton;

namespace icet::ui {

class MessageBar : public QFrame {
  Q_OBJECT

 public:
  enum Kind { Information, Warning, Error };
  explicit MessageBar(QWidget* parent = nullptr);

  void showMessage(Kind kind, const QString& text);
  QString text() const;
  Kind kind() const { return m_kind; }
  int count() const { return m_count; }  // messages shown so far (tests, logs)

 private:
  QLabel* m_icon = nullptr;
  QLabel* m_text = nullptr;
  QToolButton* m_close = nullptr;
  Kind m_kind = Information;
  int m_count = 0;
};

}  // namespace icet::ui
