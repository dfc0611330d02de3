"""`foundry service start|status|stop|restart`: the lifecycle a user (and Foundry Local's SDK) sees.

Each test runs the installed `foundry` in a subprocess with its own FOUNDRY_HOME, so the
services here never touch the session service other files share. No model is needed:
lifecycle is about the process, the state file and the endpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import run_foundry

# What Foundry Local's Python and JS SDKs (0.5.x) search `foundry service status` for,
# and what its C# SDK matches.
SDK_URL_PATTERN = re.compile(r"http://(?:[a-zA-Z0-9.-]+|\d{1,3}(\.\d{1,3}){3}):\d+")
CSHARP_PATTERN = re.compile(r"is running on (http://.*)\s+")


@pytest.fixture
def home(tmp_path: Path):
    """A private FOUNDRY_HOME whose service (if a test started one) is stopped afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    yield home
    run_foundry("service", "stop", home=home)


def state_of(home: Path) -> dict:
    return json.loads((home / "service.json").read_text())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def pid_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def a_dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_status_of_a_stopped_service_says_so_and_prints_no_url(home: Path):
    result = run_foundry("service", "status", home=home)
    assert result.returncode == 0
    assert "not running" in result.stdout
    assert SDK_URL_PATTERN.search(result.stdout) is None
    assert (
        json.loads(run_foundry("service", "status", "--json", home=home).stdout)["running"] is False
    )


def test_start_prints_the_endpoint_that_status_then_reports(home: Path):
    started = run_foundry("service", "start", home=home)
    assert started.returncode == 0, started.stderr
    state = state_of(home)
    endpoint = f"http://127.0.0.1:{state['port']}"
    assert f"{endpoint}/v1" in started.stdout
    assert get_json(f"{endpoint}/health")["status"] == "ok"

    status = run_foundry("service", "status", home=home)
    assert status.returncode == 0
    assert SDK_URL_PATTERN.search(status.stdout).group(0) == endpoint
    assert CSHARP_PATTERN.search(status.stdout).group(1).startswith(endpoint)
    assert str(state["pid"]) in status.stdout
    assert "cpu" in status.stdout  # execution providers, as the service reports them

    details = json.loads(run_foundry("service", "status", "--json", home=home).stdout)
    assert details["running"] is True
    assert details["endpoint"] == endpoint
    assert details["pid"] == state["pid"]
    assert details["loaded"] == []
    assert details["cache"] == str(home / "cache")
    assert set(state) == {"pid", "host", "port", "started", "version", "api_key_set"}
    assert state["host"] == "127.0.0.1"


def test_starting_twice_reports_the_running_service(home: Path):
    assert run_foundry("service", "start", home=home).returncode == 0
    first = state_of(home)
    again = run_foundry("service", "start", home=home)
    assert again.returncode == 0
    assert "already running" in again.stdout
    assert f"http://127.0.0.1:{first['port']}" in again.stdout
    assert state_of(home)["pid"] == first["pid"]


def test_stop_ends_the_process_and_removes_the_state_file(home: Path):
    assert run_foundry("service", "start", home=home).returncode == 0
    pid = state_of(home)["pid"]
    stopped = run_foundry("service", "stop", home=home)
    assert stopped.returncode == 0
    assert f"pid {pid}" in stopped.stdout
    assert not pid_is_running(pid)
    assert not (home / "service.json").exists()
    assert "not running" in run_foundry("service", "status", home=home).stdout
    assert "not running" in run_foundry("service", "stop", home=home).stdout


def test_restart_serves_from_a_new_process(home: Path):
    assert run_foundry("service", "start", home=home).returncode == 0
    before = state_of(home)
    restarted = run_foundry("service", "restart", home=home)
    assert restarted.returncode == 0, restarted.stderr
    after = state_of(home)
    assert after["pid"] != before["pid"]
    assert not pid_is_running(before["pid"])
    assert get_json(f"http://127.0.0.1:{after['port']}/health")["status"] == "ok"


def test_a_state_file_left_by_a_dead_process_is_detected_and_replaced(home: Path):
    stale = {
        "pid": a_dead_pid(),
        "host": "127.0.0.1",
        "port": 9,
        "started": 0.0,
        "version": "0.0.0",
        "api_key_set": False,
    }
    (home / "service.json").write_text(json.dumps(stale))
    status = run_foundry("service", "status", home=home)
    assert "not running" in status.stdout
    assert SDK_URL_PATTERN.search(status.stdout) is None
    assert not (home / "service.json").exists()

    (home / "service.json").write_text(json.dumps(stale))
    started = run_foundry("service", "start", home=home)
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    assert state_of(home)["pid"] != stale["pid"]


def test_a_state_file_naming_a_live_unrelated_process_is_stale(home: Path):
    """The pid was reused by another program (here: this test runner): not our service."""
    reused = {
        "pid": os.getpid(),
        "host": "127.0.0.1",
        "port": 9,
        "started": 0.0,
        "version": "0.0.0",
        "api_key_set": False,
    }
    (home / "service.json").write_text(json.dumps(reused))
    assert "not running" in run_foundry("service", "status", home=home).stdout
    assert not (home / "service.json").exists()


def test_two_concurrent_starts_start_one_service(home: Path):
    from conftest import foundry_cli_path

    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_API_KEY"} | {
        "FOUNDRY_HOME": str(home)
    }
    starts = [
        subprocess.Popen(
            [foundry_cli_path(), "service", "start"],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [start.communicate(timeout=120) for start in starts]
    assert [start.returncode for start in starts] == [0, 0], outputs
    pid = state_of(home)["pid"]
    assert all(f"(pid {pid})" in out for out, _ in outputs)
    assert sorted("already running" in out for out, _ in outputs) == [False, True]


def test_a_killed_service_is_reported_as_not_running(home: Path):
    assert run_foundry("service", "start", home=home).returncode == 0
    pid = state_of(home)["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    status = run_foundry("service", "status", home=home)
    assert "not running" in status.stdout
    assert not (home / "service.json").exists()


def test_start_on_a_taken_port_fails_in_one_line_pointing_at_the_log(home: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_foundry("service", "start", "--port", str(port), home=home)
    assert result.returncode == 5
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert "in use" in lines[0]
    assert str(home / "logs" / "service.log") in result.stderr
    assert not (home / "service.json").exists()


def test_binding_all_interfaces_without_an_api_key_is_refused(home: Path):
    result = run_foundry("service", "start", "--host", "0.0.0.0", home=home)
    assert result.returncode == 2
    assert result.stderr.startswith("error: binding 0.0.0.0 exposes the service")
    assert "--api-key" in result.stderr and "Traceback" not in result.stderr
    assert not (home / "service.json").exists()


def test_binding_all_interfaces_with_an_api_key_is_allowed(home: Path):
    result = run_foundry("service", "start", "--host", "0.0.0.0", "--api-key", "k-123", home=home)
    assert result.returncode == 0, result.stderr
    state = state_of(home)
    assert state["host"] == "0.0.0.0" and state["api_key_set"] is True
    assert "k-123" not in (home / "service.json").read_text()
    status = run_foundry("service", "status", home=home)
    assert SDK_URL_PATTERN.search(status.stdout).group(0) == f"http://127.0.0.1:{state['port']}"


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_api_key_is_not_on_the_command_line_of_the_waiting_cli_or_the_service(home: Path):
    """`ps` shows every user /proc/PID/cmdline: read it while `service start` waits."""
    from conftest import foundry_cli_path

    key = "k-secret-in-ps"
    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_API_KEY"}
    starting = subprocess.Popen(
        [foundry_cli_path(), "service", "start", "--api-key", key],
        env={**env, "FOUNDRY_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    children = Path(f"/proc/{starting.pid}/task/{starting.pid}/children")
    deadline = time.monotonic() + 60
    while not children.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.005)  # the CLI has not started the service yet
    service_pid = int(children.read_text().split()[0])
    waiting, serving = _cmdline(starting.pid), _cmdline(service_pid)
    while serving == waiting and time.monotonic() < deadline:
        time.sleep(0.005)  # forked, not yet exec'd: the child still shows the CLI's cmdline
        serving = _cmdline(service_pid)
    assert starting.wait(60) == 0, starting.stderr.read()
    assert "service start" in waiting and key not in waiting
    assert "runtime.service.launcher" in serving and key not in serving


@pytest.mark.parametrize("way", ["--api-key", "--api-key-file", "FOUNDRY_API_KEY"])
def test_each_way_of_giving_the_key_protects_the_service(home: Path, tmp_path: Path, way: str):
    key = "k-given-" + way.strip("-").lower()
    args, env = ["service", "start"], {}
    if way == "--api-key":
        args += ["--api-key", key]
    elif way == "--api-key-file":
        (tmp_path / "key").write_text(key + "\n")
        args += ["--api-key-file", str(tmp_path / "key")]
    else:
        env["FOUNDRY_API_KEY"] = key
    result = run_foundry(*args, home=home, env=env)
    assert result.returncode == 0, result.stderr
    url = f"http://127.0.0.1:{state_of(home)['port']}/openai/status"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    keyed = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(keyed, timeout=10) as response:
        assert response.status == 200


def test_foreground_serves_until_interrupted_and_cleans_up(home: Path):
    from conftest import foundry_cli_path

    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_API_KEY"} | {
        "FOUNDRY_HOME": str(home)
    }
    server = subprocess.Popen(
        [foundry_cli_path(), "service", "start", "--foreground"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (home / "service.json").exists() and time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.05)
        state = state_of(home)
        assert state["pid"] == server.pid  # the CLI became the server
        status = run_foundry("service", "status", home=home)
        assert f"http://127.0.0.1:{state['port']}" in status.stdout
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
    assert not (home / "service.json").exists()


@pytest.mark.parametrize("variable", ["FOUNDRY_PORT", "FOUNDRY_TTL", "FOUNDRY_MAX_LOADED"])
def test_a_non_numeric_setting_is_one_line_naming_the_variable(variable, tmp_path):
    done = run_foundry("service", "start", home=tmp_path, env={variable: "abc"})
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == f"error: {variable}='abc' is not a number"
    assert "Traceback" not in done.stderr and not (tmp_path / "service.json").exists()


def test_the_service_rotates_its_log_while_it_runs(tmp_path: Path):
    """Rotation used to happen only at `service start`, so a long-running service's log grew
    without bound. The launcher's own handler now rotates at `log_max_bytes`, keeps one previous
    file, and keeps writing (access lines and stderr) to the current one; both stay 0600."""
    import sys

    home = tmp_path / "home"
    home.mkdir()
    log = home / "logs" / "service.log"
    log.parent.mkdir(mode=0o700)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from runtime.service.settings import launch_environment, settings_from

    argv = [sys.executable, "-m", "runtime.service.launcher"]
    settings = settings_from(port=port, log_file=str(log), log_max_bytes=4000, log_level="info")
    env = {k: v for k, v in launch_environment(settings).items() if k != "FOUNDRY_API_KEY"}
    process = subprocess.Popen(argv, env={**env, "FOUNDRY_HOME": str(home)}, cwd=home)
    try:
        deadline = time.monotonic() + 60
        while not (home / "service.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        for _ in range(120):
            get_json(f"http://127.0.0.1:{port}/health")
        previous = log.with_name("service.log.1")
        assert previous.exists() and log.exists()
        assert log.stat().st_size <= 4000 and previous.stat().st_size <= 4000
        assert "GET /health" in previous.read_text() + log.read_text()
        get_json(f"http://127.0.0.1:{port}/health?after=rotation")
        deadline = time.monotonic() + 10  # the access line is written after the response
        while "after=rotation" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert {p.stat().st_mode & 0o777 for p in (log, previous)} == {0o600}
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)
