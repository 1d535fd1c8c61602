#pragma once

// Runs the real `icet` executable as a user would, with logs kept out of $HOME.

#include <QByteArray>
#include <QProcess>
#include <QStringList>

#include <functional>

namespace icet::test {

struct CliRun {
  int code = -1;  // -1: did not finish in time
  QByteArray out;
  QByteArray err;
};

// env: changes to the inherited environment (e.g. removing a variable).
inline CliRun run_cli(const QStringList& args, const QString& data_home, int timeout_ms = 120000,
                      const std::function<void(QProcessEnvironment&)>& env_change = {}) {
  QProcess p;
  auto env = QProcessEnvironment::systemEnvironment();
  env.insert(QStringLiteral("XDG_DATA_HOME"), data_home);
  if (env_change) env_change(env);
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
