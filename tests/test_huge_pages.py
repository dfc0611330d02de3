"""The service's malloc asks for transparent huge pages (a decode step streams every weight, and
4 KiB pages cost it ~12 % here), the user can say no, and `foundry service status` shows what
the process got."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from runtime.engines.huge_pages import THP_MODE, huge_pages, with_huge_pages

# A child that fills 64 MiB through malloc (numpy) and says how much sits in huge pages.
FILL_AND_REPORT = (
    "import json, numpy\n"
    "from runtime.engines.huge_pages import huge_pages\n"
    "block = numpy.ones(64 * 2**20, dtype=numpy.uint8)\n"
    "print(json.dumps({'requested': huge_pages().requested, 'mib': huge_pages().resident_mib}))\n"
)


def system_allows_huge_pages() -> bool:
    return huge_pages().system in ("always", "madvise")


def child_report(environ: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", FILL_AND_REPORT], env=environ, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_process_started_with_the_environment_gets_huge_pages(monkeypatch):
    monkeypatch.delenv("FOUNDRY_HUGE_PAGES", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    asked = child_report(with_huge_pages(os.environ))
    plain = child_report(dict(os.environ))
    assert asked["requested"] is True and plain["requested"] is False
    if system_allows_huge_pages():
        assert asked["mib"] >= 32  # most of the 64 MiB block
    if huge_pages().system == "madvise":
        assert plain["mib"] < asked["mib"]


def test_foundry_huge_pages_0_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv("FOUNDRY_HUGE_PAGES", "0")
    assert "GLIBC_TUNABLES" not in with_huge_pages({"PATH": "/bin"})


def test_the_users_own_glibc_tunables_are_kept(monkeypatch):
    monkeypatch.delenv("FOUNDRY_HUGE_PAGES", raising=False)
    merged = with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert merged["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    refused = with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert refused["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


def test_status_shows_the_services_huge_pages(service, service_model):
    with httpx.Client(base_url=service.base_url, timeout=120) as http:
        assert http.get(f"/openai/load/{service_model}").status_code == 200
        pages = http.get("/openai/status").json()["hugePages"]
    assert pages["requested"] is True  # `foundry service start` asked for them
    assert pages["system"] == (THP_MODE.read_text().partition("[")[2].partition("]")[0])
    if system_allows_huge_pages():
        assert pages["residentMib"] > 0  # the loaded model's buffers
    shown = service.cli("service", "status").stdout
    assert f"MiB in huge pages (asked for; system THP {pages['system']})" in shown
