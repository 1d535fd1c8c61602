#pragma once

// Runs the real `icet` executable as a user would, with logs kept out of $HOME.

#include <QByteArray>
#include <QProcess>
#include <QStringList>

namespace icet::test {

struct CliRun {
  int code = -1;  // -1: did not finish in time
  QByteArray out;
  QByteArray err;
};

inline CliRun run_cli(const QStringList& args, const QString& data_home, int timeout_ms = 120000) {
  QProcess p;
  auto env = QProcessEnvironment::systemEnvironment();
  env.insert(QStringLiteral("XDG_DATA_HOME"), data_home);
  p.setProcessEnvironment(env);
  p.start(QStringLiteral(ICET_CLI_PATH), args);
  if (!p.waitForFinished(timeout_ms)) {
    p.kill();
    p.waitForFinished();
    return {};
  }
  return {p.exitCode(), p.readAllStandardOutput(), p.readAllStandardError()};
}

}  // namespace icet::test
