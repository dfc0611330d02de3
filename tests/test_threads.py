"""Every model session uses the machine's cores: physical cores by default, FOUNDRY_THREADS to
override, and the service says which (issue 13: onnxruntime alone picked 1 thread on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from runtime.engines.threads import genai_overlay, physical_cores, session_threads
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
    shown = service.cli("service", "status")
    assert f"threads    {physical_cores()} per model (physical cores)" in shown.stdout
