"""Every model session uses the machine's cores: physical cores by default, FOUNDRY_THREADS to
override, and the service says which (issue 13: onnxruntime alone picked 1 thread on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from runtime.engines.threads import (
    genai_overlay,
    others_cpu_share,
    physical_cores,
    session_threads,
)
from runtime.errors import InvalidRequest

# Two packages, two cores each, two hardware threads per core: 8 logical CPUs, 4 cores.
SMT_CPUINFO = "\n\n".join(
    f"processor\t: {cpu}\nphysical id\t: {cpu // 4}\ncore id\t\t: {(cpu // 2) % 2}\n"
    for cpu in range(8)
)


def test_hardware_threads_of_one_core_count_once(tmp_path: Path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(SMT_CPUINFO)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    assert physical_cores(cpuinfo) == 4
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1})  # taskset to one core
    assert physical_cores(cpuinfo) == 1


def test_foundry_threads_overrides_the_core_count(monkeypatch):
    monkeypatch.delenv("FOUNDRY_THREADS", raising=False)
    assert session_threads().source == "physical cores"
    monkeypatch.setenv("FOUNDRY_THREADS", "3")
    assert (session_threads().intra_op, session_threads().source) == (3, "FOUNDRY_THREADS")
    assert '"intra_op_num_threads": 3' in genai_overlay(session_threads(), ("encoder", "decoder"))


def test_a_non_numeric_foundry_threads_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("FOUNDRY_THREADS", "all")
    with pytest.raises(InvalidRequest, match="FOUNDRY_THREADS='all' is not a number"):
        session_threads()


def test_status_reports_the_threads_each_loaded_model_uses(service, service_model):
    with httpx.Client(base_url=service.base_url, timeout=120) as http:
        assert http.get(f"/openai/load/{service_model}").status_code == 200
        threads = http.get("/openai/status").json()["threads"]
    assert threads["intraOp"] == physical_cores()
    assert threads["source"] == "physical cores"
    assert threads["loadedModels"][service_model] == physical_cores()
    assert isinstance(threads["spinning"][service_model], bool)
    shown = service.cli("service", "status")
    assert f"threads    {physical_cores()} per model (physical cores)" in shown.stdout


def test_foundry_spin_forces_spinning_on_or_off(monkeypatch):
    monkeypatch.setenv("FOUNDRY_SPIN", "off")
    assert session_threads().spinning is False
    # onnxruntime-genai's sessions cannot be told: what they report is og's default
    assert session_threads(spin_control=False).spinning is True
    monkeypatch.setenv("FOUNDRY_SPIN", "on")
    assert session_threads().spinning is True
    monkeypatch.setenv("FOUNDRY_SPIN", "sometimes")
    with pytest.raises(InvalidRequest, match="FOUNDRY_SPIN='sometimes' is not on or off"):
        session_threads()


def test_a_model_loaded_while_other_processes_fill_the_cores_does_not_spin(monkeypatch):
    """Other processes' CPU, not this one's own (the load average counted both, a minute late)."""
    monkeypatch.delenv("FOUNDRY_SPIN", raising=False)
    burn = [sys.executable, "-c", "while True: pass"]
    burners = [subprocess.Popen(burn) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)
        assert others_cpu_share() > 0.5
        assert session_threads().spinning is False
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_this_process_own_work_does_not_stop_spinning():
    """A busy loop in this process during the sample is not "others" (the service's own build)."""
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            pass

    before = others_cpu_share(0.5)
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        share_with_own_work = others_cpu_share(0.5)
    finally:
        done.set()
        worker.join()
    # Whatever else runs on a shared machine, our own busy thread (one core) is not counted.
    after = others_cpu_share(0.5)
    assert share_with_own_work <= max(before, after) + 0.5 / (os.cpu_count() or 1)


def test_onnxruntime_genai_accepts_the_overlay_whether_or_not_we_spin(genai_artifact, monkeypatch):
    """og 0.18 refuses session_options it does not know (config_entries was one): Whisper and the
    og.Generator fallback failed to load on a busy machine."""
    import onnxruntime_genai as og

    for spin in ("on", "off"):
        monkeypatch.setenv("FOUNDRY_SPIN", spin)
        og.Config(str(genai_artifact("qwen2.5-0.5b"))).overlay(genai_overlay(session_threads()))
