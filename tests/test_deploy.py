"""The container recipe and the Kubernetes manifest (deploy/) hold what a stateless replica needs.

No docker or cluster is needed: the Dockerfile's instructions and the manifest's objects are
parsed, and every `foundry` command they run is parsed by the real CLI (tests/test_ci_definitions.py).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml
from test_ci_definitions import _parse_with_the_real_cli

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_installs_only_the_runtime_runs_as_a_user_and_keeps_state_on_a_volume():
    steps = _instructions()
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    assert "pip install" in runs and "[compiler]" not in runs
    (user,) = [arg for op, arg in steps if op == "USER"]
    assert user not in ("root", "0")
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "FOUNDRY_HOME=/data" in env
    assert [json.loads(arg) for op, arg in steps if op == "VOLUME"] == [["/data"]]
    (entry,) = [json.loads(arg) for op, arg in steps if op == "ENTRYPOINT"]
    (cmd,) = [json.loads(arg) for op, arg in steps if op == "CMD"]
    argv = entry + cmd
    assert _parse_with_the_real_cli(argv).name == "start"
    assert "--foreground" in argv and argv[argv.index("--host") + 1] == "0.0.0.0"
    (health,) = [arg for op, arg in steps if op == "HEALTHCHECK"]
    assert "/health" in health


def test_the_deployment_pulls_models_before_serving_and_probes_health():
    from runtime.oci.reference import Reference

    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text())}
    spec = docs["Deployment"]["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]
    annotations = pod["metadata"]["annotations"]
    assert (
        annotations["prometheus.io/scrape"] == "true"
        and annotations["prometheus.io/path"] == "/metrics"
    )
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    (init,) = pod["spec"]["initContainers"]
    assert _parse_with_the_real_cli(init["command"]).name == "pull"
    Reference.parse(init["command"][-1])  # a valid oci:// reference

    (server,) = pod["spec"]["containers"]
    assert _parse_with_the_real_cli(server["command"]).name == "start"
    port = server["ports"][0]["containerPort"]
    assert server["command"][server["command"].index("--port") + 1] == str(port)
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": port}
    assert server["resources"]["requests"]["memory"] and server["resources"]["limits"]["memory"]

    def env(container):
        return {e["name"]: e for e in container["env"]}

    home = env(server)["FOUNDRY_HOME"]["value"]
    assert env(init)["FOUNDRY_HOME"]["value"] == home  # the init container fills the server's cache
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    assert {m["name"]: m["mountPath"] for m in init["volumeMounts"]} == mounts
    assert home in mounts.values()
    assert "secretKeyRef" in env(server)["FOUNDRY_API_KEY"]["valueFrom"]  # 0.0.0.0 needs a key
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == port
    assert shlex.join(server["command"]).startswith("foundry service start")
