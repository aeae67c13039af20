#!/usr/bin/env python3
"""Checks pulih's deployment files without Docker or a Kubernetes cluster.

No Docker engine or cluster runs where pulih is tested, so this script
checks what can be checked offline, with the tools a deployment uses:

compose/ (docker-compose.yml):
  1. `docker-compose config` accepts it with the secrets of
     deploy/make-secrets.sh, and refuses it without them;
  2. every file it mounts exists, and the shared ones are the very files
     the tests check (ClickHouse accounts, alerting rules, Alertmanager
     routing, Grafana provisioning and dashboards);
  3. each pulih service's environment is a configuration `pulih
     check-config` accepts for its command, its published ports and
     Prometheus' targets are where it listens, and the simulator's tokens
     are the ones whose digests the gateway holds;
  4. its prometheus.yml passes `promtool check config` with the rules and
     scrapes the jobs of deploy/prometheus/prometheus.yml, which the rules
     name.

k8s/ (kustomize):
  1. `kubectl kustomize` builds the example overlay (with a secrets.env
     from deploy/make-secrets.sh, in a copy) and every object passes
     kubernetes-validate --strict for the oldest and newest Kubernetes
     pulih supports;
  2. each pulih container's configuration (the ConfigMap's pulih.toml,
     its environment with the Secret's values and each StatefulSet
     ordinal) is one `pulih check-config` accepts for its command;
  3. probes and Prometheus annotations point at the ports the container
     listens on, `/readyz` where the service has one;
  4. the aggregator's replicas equal its `instances`, at most the topic's
     partitions; every HPA and PodDisruptionBudget finds its pods; every
     secret key a pod reads exists.

Needs docker-compose (Debian's package), kubectl, promtool, PyYAML and
kubernetes-validate (PyPI). Usage: check_deploy.py --pulih PATH/TO/pulih
"""
import argparse
import base64
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tempfile
import tomllib

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
ROOT = DEPLOY.parent
# Kubernetes versions the manifests must validate against: the oldest with
# every feature they use (StatefulSet pod-index labels, preStop sleep),
# and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", None)
# The files the compose stack must share with the tests.
SHARED = {
    "deploy/clickhouse/users.d/pulih-roles.xml",
    "deploy/prometheus/rules",
    "deploy/alertmanager/alertmanager.yml",
    "deploy/grafana/provisioning",
    "deploy/grafana/dashboards",
}
SERVICES = {"migrate", "ingest", "aggregate", "rollup", "alerts", "ui"}


class Problem(Exception):
    pass


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return out.returncode, out.stdout + out.stderr


def secrets(dest):
    code, out = run([str(DEPLOY / "make-secrets.sh")])
    if code != 0:
        raise Problem(f"deploy/make-secrets.sh failed:\n{out}")
    dest.write_text(out)
    return dict(
        line.split("=", 1) for line in out.splitlines() if line and not line.startswith("#")
    )


def check_config(pulih, service, env, config=None):
    """What `pulih check-config SERVICE` prints with exactly `env`, by key
    (`listen`, `metrics`, ...)."""
    env = {"PATH": "/usr/bin:/bin", **env}
    cmd = [pulih, "check-config", service]
    if config:
        env["PULIH_CONFIG"] = str(config)
    code, out = run(cmd, env=env)
    if code != 0:
        raise Problem(f"pulih check-config {service} refuses it: {out.strip()}")
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def port_of(url):
    """The port of "http://HOST:PORT" as check-config prints it."""
    return int(url.rsplit(":", 1)[1])


def listened_ports(lines):
    return {port_of(lines[k]) for k in ("listen", "metrics") if lines.get(k, "off") != "off"}


# ---------------------------------------------------------------- compose


def compose(pulih, tmp):
    folder = DEPLOY / "compose"
    base = ["docker-compose", "-f", str(folder / "docker-compose.yml"), "--profile", "all"]
    empty = tmp / "empty.env"
    empty.write_text("")
    code, out = run(base + ["--env-file", str(empty), "config"], cwd=tmp)
    if code == 0 or "make-secrets.sh" not in out:
        raise Problem(f"compose: without secrets, `config` must fail and name deploy/make-secrets.sh:\n{out}")
    env_file = tmp / "compose.env"
    values = secrets(env_file)
    code, out = run(base + ["--env-file", str(env_file), "config"], cwd=tmp)
    if code != 0:
        raise Problem(f"compose: docker-compose config failed:\n{out}")
    stack = yaml.safe_load(out)
    services = stack["services"]

    mounted = set()
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            # docker-compose 1.x prints SOURCE:TARGET[:MODE], 2.x a mapping.
            if isinstance(v, str):
                v = {"type": "bind" if v.startswith("/") else "volume", "source": v.split(":")[0]}
            if v.get("type") != "bind":
                continue
            source = pathlib.Path(v["source"])
            if not source.exists():
                raise Problem(f"compose: {name} mounts {source}, which does not exist")
            try:
                mounted.add(str(source.relative_to(ROOT)))
            except ValueError:
                raise Problem(f"compose: {name} mounts {source}, outside the repository")
    if not SHARED <= mounted:
        raise Problem(f"compose: does not mount the shared files {sorted(SHARED - mounted)}")

    listens = {}
    digests = {}
    for name, svc in services.items():
        if svc.get("image") != "pulih:local":
            continue
        command = svc["command"][0]
        env = {k: str(v) for k, v in svc.get("environment", {}).items()}
        if command == "simulate":
            continue
        if command not in SERVICES:
            raise Problem(f"compose: {name} runs `pulih {command}`, which check_deploy.py does not know")
        try:
            lines = check_config(pulih, command, env)
        except Problem as e:
            raise Problem(f"compose: service {name}: {e}")
        listens[name] = listened_ports(lines)
        if command == "ingest":
            digests = {
                k.split("__")[2].lower(): v for k, v in env.items() if k.startswith("PULIH_INGEST__PRODUCERS__")
            }
        for p in svc.get("ports", []):
            target = int(p["target"]) if isinstance(p, dict) else int(str(p).rsplit(":", 1)[1].split("/")[0])
            if target not in listens[name]:
                raise Problem(f"compose: {name} publishes {target}, but listens on {sorted(listens[name])}")

    sim = services["simulator"]
    tokens = {
        k.split("__")[2].lower(): v
        for k, v in sim["environment"].items()
        if k.startswith("PULIH_SIMULATE__TOKENS__")
    }
    if not tokens or set(tokens) != set(digests):
        raise Problem(f"compose: the simulator's producers {sorted(tokens)} are not the gateway's {sorted(digests)}")
    for p, token in tokens.items():
        if hashlib.sha256(token.encode()).hexdigest() != digests[p]:
            raise Problem(f"compose: the gateway's digest for {p} is not the SHA-256 of the simulator's token")
    if not values.get("PULIH_TOKEN_BANK"):
        raise Problem("compose: deploy/make-secrets.sh made no token for the scenario's producer bank")

    # Prometheus: the stack's targets, the shared rules.
    prom = tmp / "prometheus"
    prom.mkdir()
    shutil.copy(folder / "prometheus.yml", prom / "prometheus.yml")
    shutil.copytree(DEPLOY / "prometheus" / "rules", prom / "rules")
    code, out = run(["promtool", "check", "config", str(prom / "prometheus.yml")])
    if code != 0:
        raise Problem(f"compose: promtool check config deploy/compose/prometheus.yml:\n{out}")
    jobs = lambda c: {j["job_name"]: j for j in c["scrape_configs"]}
    ours = jobs(yaml.safe_load((folder / "prometheus.yml").read_text()))
    local = jobs(yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text()))
    if set(ours) != set(local):
        raise Problem(f"compose: prometheus.yml scrapes {sorted(ours)}, deploy/prometheus/ {sorted(local)}")
    for job, c in ours.items():
        for target in c["static_configs"][0]["targets"]:
            host, port = target.split(":")
            if int(port) not in listens.get(host, set()):
                raise Problem(f"compose: Prometheus job {job} scrapes {target}, where nothing of the stack listens")
    return f"compose: {len(services)} services; {len(listens)} pulih services' configurations accepted"


# ---------------------------------------------------------------- k8s


def container_env(container, secret, ordinal):
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        source = e["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if ref["name"] != secret["name"] or ref["key"] not in secret["data"]:
                raise Problem(f"reads secret {ref['name']} key {ref['key']}, which the overlay does not make")
            env[e["name"]] = secret["data"][ref["key"]]
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.labels['apps.kubernetes.io/pod-index']":
            env[e["name"]] = str(ordinal)
        else:
            raise Problem(f"env {e['name']}: check_deploy.py does not know {source}")
    return env


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def k8s(pulih, tmp):
    copy = tmp / "k8s"
    shutil.copytree(DEPLOY / "k8s", copy)
    overlay = copy / "overlays" / "example"
    (overlay / "secrets.env").unlink(missing_ok=True)
    secrets(overlay / "secrets.env")
    code, out = run(["kubectl", "kustomize", str(overlay)])
    if code != 0:
        raise Problem(f"k8s: kubectl kustomize failed:\n{out}")
    objects = [o for o in yaml.safe_load_all(out) if o]
    built = tmp / "k8s.yaml"
    built.write_text(out)
    for version in K8S_VERSIONS:
        cmd = ["kubernetes-validate", "--strict", "--quiet"]
        if version:
            cmd += ["-k", version]
        code, report = run(cmd + [str(built)])
        if code != 0 or "ERROR" in report:
            raise Problem(f"k8s: kubernetes-validate {version or '(newest)'}:\n{report}")

    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    (config_map,) = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"].startswith("pulih-config")]
    config = tmp / "pulih.toml"
    config.write_text(config_map["data"]["pulih.toml"])
    settings = tomllib.loads(config_map["data"]["pulih.toml"])
    (secret,) = [s for s in by_kind["Secret"] if s["metadata"]["name"].startswith("pulih-secrets")]
    secret = {
        "name": secret["metadata"]["name"],
        "data": {k: base64.b64decode(v).decode() for k, v in secret["data"].items()},
    }

    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []) + by_kind.get("Job", [])
    seen = set()
    for w in workloads:
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        command = container["args"][0]
        if command not in SERVICES:
            raise Problem(f"k8s: {name} runs `pulih {command}`, which check_deploy.py does not know")
        seen.add(command)
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        env_config = {e["name"]: e.get("value") for e in container["env"]}.get("PULIH_CONFIG", "")
        if str(pathlib.PurePath(env_config).parent) not in mounts:
            raise Problem(f"k8s: {name}: PULIH_CONFIG={env_config} is not on a mounted volume")
        replicas = w["spec"].get("replicas", 1) if w["kind"] == "StatefulSet" else 1
        for ordinal in range(replicas):
            try:
                env = container_env(container, secret, ordinal)
                env.pop("PULIH_CONFIG")
                lines = check_config(pulih, command, env, config)
            except Problem as e:
                raise Problem(f"k8s: {name} (pod {ordinal}): {e}")
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        listening = listened_ports(lines)
        if set(ports.values()) != listening:
            raise Problem(f"k8s: {name} declares ports {sorted(ports.values())}, but listens on {sorted(listening)}")
        if w["kind"] != "Job":
            live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
            if live["path"] != "/healthz" or ports.get(live["port"]) not in listening:
                raise Problem(f"k8s: {name}: liveness probe {live} is not /healthz on a port it listens on")
            want = "/healthz" if command == "ui" else "/readyz"
            if ready["path"] != want or ports.get(ready["port"]) not in listening:
                raise Problem(f"k8s: {name}: readiness probe {ready} is not {want} on a port it listens on")
        notes = pod["metadata"].get("annotations", {})
        if notes.get("prometheus.io/scrape") == "true":
            if int(notes["prometheus.io/port"]) not in listening or notes.get("prometheus.io/path") != "/metrics":
                raise Problem(f"k8s: {name}: Prometheus annotations {notes} miss its /metrics")
        elif command not in ("migrate", "ui"):
            raise Problem(f"k8s: {name} is not scraped (prometheus.io/scrape)")
        if w["kind"] == "StatefulSet":
            instances = int(container_env(container, secret, 0)["PULIH_AGGREGATE__INSTANCES"])
            partitions = settings["kafka"]["partitions"]
            if replicas != instances or instances > partitions:
                raise Problem(
                    f"k8s: {name}: {replicas} replicas, aggregate.instances {instances}, kafka.partitions "
                    f"{partitions}: replicas must equal instances, at most the partitions"
                )
    if seen != SERVICES:
        raise Problem(f"k8s: no workload runs {sorted(SERVICES - seen)}")

    labels = lambda w: w["spec"]["template"]["metadata"]["labels"]
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if not any(w["kind"] == ref["kind"] and w["metadata"]["name"] == ref["name"] for w in workloads):
            raise Problem(f"k8s: HPA {hpa['metadata']['name']} scales {ref}, which does not exist")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not any(matches(pdb["spec"]["selector"], labels(w)) for w in workloads):
            raise Problem(f"k8s: PodDisruptionBudget {pdb['metadata']['name']} selects no pods")
    for svc in by_kind.get("Service", []):
        if not any(matches({"matchLabels": svc["spec"]["selector"]}, labels(w)) for w in workloads):
            raise Problem(f"k8s: Service {svc['metadata']['name']} selects no pods")
    return f"k8s: {len(objects)} objects valid for Kubernetes {', '.join(v or 'newest' for v in K8S_VERSIONS)}; {len(workloads)} workloads' configurations accepted"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pulih", required=True, help="the pulih binary to run check-config with")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pulih-deploy-") as tmp:
        try:
            for check in (compose, k8s):
                print(check(args.pulih, pathlib.Path(tmp)))
        except Problem as e:
            sys.exit(f"check_deploy: {e}")


if __name__ == "__main__":
    main()
