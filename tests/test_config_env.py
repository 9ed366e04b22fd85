"""Settings: typos are rejected with a suggestion; RXBOT_* variables set the defaults."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rxbot import config
from rxbot.config_env import VARIABLES, from_environment

REPO = Path(__file__).resolve().parents[1]


def test_a_typo_is_rejected_with_a_suggestion():
    with pytest.raises(AttributeError, match="no setting 'exeption_policy'; did you mean 'exception_policy'"):
        config.exeption_policy = "ignore"
    with pytest.raises(AttributeError, match="did you mean 'replay_mode'"):
        config.replay_mod  # noqa: B018 - reading a typo fails the same way
    with pytest.raises(AttributeError, match="no setting 'zzz'$"):
        config.zzz = 1
    assert config.policy() == "raise"


def test_databot_constants_still_assign():
    config.exception_policy = config.Exception_ignore
    assert config.policy() == "ignore"
    config.exception_policy = "pipein"
    assert config.policy() == "pipein"


def settings_in_fresh_interpreter(**variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RXBOT_")}
    env.update(variables, PYTHONPATH=str(REPO))
    code = ("from rxbot import config; print(config.policy(), config.progress, "
            "config.shutdown_grace, config.replay_mode, config.default_concurrency, config.log_level, "
            "config.debug, config.metrics)")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_environment_variables_set_the_defaults():
    proc = settings_in_fresh_interpreter(
        RXBOT_POLICY="Ignore", RXBOT_PROGRESS="yes", RXBOT_SHUTDOWN_GRACE="2.5", RXBOT_REPLAY="1",
        RXBOT_CONCURRENCY="8", RXBOT_LOG_LEVEL="info", RXBOT_DEBUG="0", RXBOT_METRICS="off")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ignore", "True", "2.5", "True", "8", "INFO", "False", "False"]
    plain = settings_in_fresh_interpreter()
    assert plain.stdout.split() == ["raise", "False", "10.0", "False", "32", "None", "False", "None"]


@pytest.mark.parametrize("variable, value, message", [
    ("RXBOT_POLICY", "ignroe", "RXBOT_POLICY must be one of raise, ignore, retry, pipein; got 'ignroe'"),
    ("RXBOT_PROGRESS", "maybe", "RXBOT_PROGRESS must be a boolean: 1, true, yes, on or 0, false, no, off"),
    ("RXBOT_CONCURRENCY", "0", "RXBOT_CONCURRENCY must be an integer >= 1; got '0'"),
    ("RXBOT_SHUTDOWN_GRACE", "soon", "RXBOT_SHUTDOWN_GRACE must be a number of seconds"),
    ("RXBOT_LOG_LEVEL", "loud", "RXBOT_LOG_LEVEL must be one of DEBUG"),
])
def test_a_bad_variable_is_named(variable, value, message):
    kinds = {name: type(getattr(config, name)).__name__ for name in VARIABLES.values()}
    kinds.update(metrics="bool | None", log_level="str | None", replay_dir="str | None",
                 dask_address="str | None")
    with pytest.raises(ValueError) as info:
        from_environment({variable: value}, kinds)
    assert message in str(info.value)


def test_every_variable_names_a_real_setting():
    for variable, setting in VARIABLES.items():
        assert variable.startswith("RXBOT_") and hasattr(config, setting), variable
