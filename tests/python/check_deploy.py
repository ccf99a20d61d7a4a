"""Static checks of the deployment assets (run by tests/deploy.rs).

    check_deploy.py containerfile
    check_deploy.py overlay NAME --kubectl K --sediment BIN   # render, validate, check-config
    check_deploy.py terraform                                  # parse every .tf with python-hcl2
    check_deploy.py checkov --checkov C --kubectl K            # terraform/ and rendered overlays

Each prints what it checked and exits non-zero with the reasons on the first failing step.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kustomize"
OVERLAYS = ["kubernetes", "openshift", "minio-dev"]
# Kubernetes version whose schemas the manifests are validated against (OpenShift 4.20).
K8S_VERSION = "1.33"
# Custom resources: kubernetes-validate has no schema for them; their shape is checked here.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector", "spec.endpoints"],
    ("monitoring.coreos.com/v1", "PodMonitor"): ["spec.selector", "spec.podMetricsEndpoints"],
    ("monitoring.coreos.com/v1", "PrometheusRule"): ["spec.groups"],
    ("route.openshift.io/v1", "Route"): ["spec.to.name", "spec.port.targetPort", "spec.tls.termination"],
}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    if p.returncode != 0:
        fail(f"{' '.join(map(str, cmd))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p.stdout


# --- Containerfile -----------------------------------------------------------------------------


def containerfile(_args):
    path = ROOT / "deploy" / "container" / "Containerfile"
    text = path.read_text()
    # Join continuation lines, drop comments.
    lines = []
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        s = raw.strip()
        if s and not s.startswith("#"):
            lines.append(s)
    stages, users, copies = [], [], 0
    for s in lines:
        word, _, rest = s.partition(" ")
        word = word.upper()
        if word == "FROM":
            image = rest.split()[0]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                fail(f"base image {image} has no fixed tag")
            stages.append(image)
        elif word in ("COPY", "ADD"):
            parts = rest.split()
            if any(p.startswith("--from=") for p in parts):
                continue
            srcs = [p for p in parts if not p.startswith("--")][:-1]
            for src in srcs:
                if not (ROOT / src).exists():
                    fail(f"{word} {src}: no such path in the repository")
                copies += 1
        elif word == "USER":
            users.append(rest.strip())
    if len(stages) < 2:
        fail("expected a multi-stage build")
    if not users or not users[-1].split(":")[0].isdigit() or users[-1].split(":")[0] == "0":
        fail(f"the runtime stage must run as a numeric non-root UID, got USER {users}")
    entry = [s for s in lines if s.upper().startswith("ENTRYPOINT")]
    if not entry:
        fail("no ENTRYPOINT")
    argv = json.loads(entry[-1].split(" ", 1)[1])
    if argv[:2] != ["/usr/local/bin/sediment", "serve"]:
        fail(f"ENTRYPOINT should be sediment serve, got {argv}")
    if "-p sediment-cli" not in text or "/out/sediment" not in text:
        fail("the build stage must build sediment-cli and install target/release/sediment")
    manifest = (ROOT / "crates" / "sediment-cli" / "Cargo.toml").read_text()
    if not re.search(r'name\s*=\s*"sediment"', manifest):
        fail("crates/sediment-cli no longer builds a binary named sediment")
    # Every workspace member's manifest must be copied, or cargo cannot load the workspace.
    members = re.findall(r'"([^"]+)"', re.search(r"members\s*=\s*\[(.*?)\]", (ROOT / "Cargo.toml").read_text(), re.S).group(1))
    copied = {p for s in lines if s.upper().startswith("COPY") and "--from" not in s for p in s.split()[1:-1]}
    for m in members:
        if not any(m == c or m.startswith(c.rstrip("/") + "/") for c in copied):
            fail(f"workspace member {m} is not copied into the build stage")
    # The config the image starts with must be valid.
    writable = re.search(r"mkdir -p (\S+)", text)
    if not writable or "VOLUME" not in text or writable.group(1) not in text.split("VOLUME", 1)[1]:
        fail("the data directory must be created and declared as the VOLUME")
    ignore = (ROOT / ".containerignore").read_text()
    if "target/" not in ignore:
        fail(".containerignore must exclude target/")
    print(f"Containerfile: {len(stages)} stages ({', '.join(stages)}), {copies} COPY sources exist, "
          f"USER {users[-1]}, ENTRYPOINT {argv}")


# --- Kustomize overlays ------------------------------------------------------------------------


def render(kubectl, overlay):
    import yaml

    out = run([kubectl, "kustomize", str(KUSTOMIZE / "overlays" / overlay)])
    return [d for d in yaml.safe_load_all(out) if d]


def dig(doc, dotted):
    cur = doc
    for k in dotted.split("."):
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def pod_specs(doc):
    kind = doc["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [doc["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [doc["spec"]]
    return []


def check_restricted(name, spec, fixed_uid_allowed):
    """The Pod Security Standard `restricted` (and OpenShift's restricted-v2 SCC)."""
    psc = spec.get("securityContext", {})
    problems = []
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problems.append("host namespaces")
    if dig(psc, "seccompProfile.type") not in ("RuntimeDefault", "Localhost"):
        problems.append("pod seccompProfile must be RuntimeDefault")
    if not fixed_uid_allowed:
        for k in ("runAsUser", "fsGroup", "runAsGroup", "supplementalGroups"):
            if k in psc:
                problems.append(f"pod securityContext.{k} is fixed (OpenShift assigns it)")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if dig(sc, "capabilities.drop") != ["ALL"] or dig(sc, "capabilities.add"):
            problems.append(f"{c['name']}: capabilities must drop ALL and add none")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot")
        if sc.get("runAsUser") == 0 or psc.get("runAsUser") == 0:
            problems.append(f"{c['name']}: runs as root")
        if not fixed_uid_allowed and "runAsUser" in sc:
            problems.append(f"{c['name']}: fixed runAsUser")
        for r in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in c.get("resources", {}).get(r, {}):
                    problems.append(f"{c['name']}: resources.{r}.{res} missing")
        if not c.get("image") or ":" not in c["image"].rsplit("/", 1)[-1] or c["image"].endswith(":latest"):
            problems.append(f"{c['name']}: image {c.get('image')} has no fixed tag")
    for vol in spec.get("volumes", []):
        if "hostPath" in vol:
            problems.append(f"volume {vol['name']}: hostPath")
    if problems:
        fail(f"{name}: " + "; ".join(problems))


def check_config(docs, sediment):
    """The settings the broker pods start with are accepted by `sediment serve --check-config`."""
    cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    sts = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "sediment"]
    if len(sts) != 1:
        fail("expected one StatefulSet named sediment")
    pod = sts[0]["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "sediment")
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1]
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = cms.get(volume["configMap"]["name"])
    if cm is None:
        fail(f"the config volume refers to a ConfigMap that is not rendered: {volume}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEDIMENT_", "AWS_"))}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            ref = cms.get(src["configMapRef"]["name"])
            if ref is None:
                fail(f"envFrom refers to a ConfigMap that is not rendered: {src}")
            env.update(ref.get("data", {}))
    # What the downward API would give the first pod.
    downward = {"metadata.name": "sediment-0", "metadata.namespace": "sediment",
                "metadata.labels['apps.kubernetes.io/pod-index']": "0"}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), e["value"])
        elif "configMapKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["configMapKeyRef"]
            if ref["name"] not in cms or ref["key"] not in cms[ref["name"]].get("data", {}):
                fail(f"env {e['name']} refers to {ref}, which is not rendered")
            env[e["name"]] = cms[ref["name"]]["data"][ref["key"]]
        else:
            env[e["name"]] = downward[e["valueFrom"]["fieldRef"]["fieldPath"]]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sediment.toml"
        cfg.write_text(cm["data"][Path(config_path).name])
        cmd = [sediment, "serve"] + [a if a != config_path else str(cfg) for a in args] + ["--check-config"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    if p.returncode != 0:
        fail(f"sediment serve --check-config rejected the ConfigMap: {p.stderr}")
    settings = json.loads(p.stdout)
    want = {
        "node_id": 0,
        "archive.url": env.get("SEDIMENT_ARCHIVE_URL"),
        "kafka.advertised_listener": "sediment-0.sediment-headless.sediment.svc:9092",
        "process_roles": "broker,controller",
    }
    for key, value in want.items():
        got = settings
        for k in key.split("."):
            got = got[k]
        if got != value:
            fail(f"effective setting {key} = {got!r}, expected {value!r}")
    # The metadata voters are the first pods (up to three) by their stable names.
    replicas = sts[0]["spec"].get("replicas", 1)
    voters = ",".join(f"{i}@sediment-{i}.sediment-headless.sediment.svc:9093" for i in range(min(replicas, 3)))
    if settings["controller"]["quorum_voters"] != voters:
        fail(f"controller.quorum_voters = {settings['controller']['quorum_voters']!r} for {replicas} "
             f"replicas, expected {voters!r}")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for name, key in (("kafka", "listen"), ("admin", "listen"), ("controller", "listen")):
        listen = settings[name][key]
        if not listen.endswith(f":{ports[name]}"):
            fail(f"{name}.{key} = {listen} but the container port {name} is {ports[name]}")
    if settings["kafka"].get("tls_listen"):
        check_tls_listener(docs, sts[0], container, settings, env)
    return settings


def check_tls_listener(docs, sts, container, settings, env):
    """The TLS listener of the first pod: its port is a named container port, its certificate
    and key come from a mounted Secret, and (with Routes) what it advertises is the host
    OpenShift gives that pod's passthrough Route, which reaches the pod's TLS port."""
    kafka = settings["kafka"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if not kafka["tls_listen"].endswith(f":{ports.get('kafka-tls')}"):
        fail(f"kafka.tls_listen = {kafka['tls_listen']} but the container port kafka-tls is {ports.get('kafka-tls')}")
    pod = sts["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    for key in ("tls_cert_file", "tls_key_file"):
        mount = next((m for m in container["volumeMounts"] if kafka[key].startswith(m["mountPath"] + "/")), None)
        if mount is None or mount["name"] not in secrets:
            fail(f"kafka.{key} = {kafka[key]} is not in a mounted Secret")
    routes = [d for d in docs if d["kind"] == "Route"]
    if not routes:
        return
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    namespace = "sediment"
    domain = env.get("ROUTE_DOMAIN")
    want = f"sediment-0-{namespace}.{domain}:443"
    if kafka["tls_advertised_listener"] != want:
        fail(f"kafka.tls_advertised_listener = {kafka['tls_advertised_listener']!r}; the Route sediment-0 "
             f"gets the host {want!r}")
    by_name = {r["metadata"]["name"]: r for r in routes}
    replicas = sts["spec"].get("replicas", 1)
    for name in ["sediment-bootstrap"] + [f"sediment-{i}" for i in range(replicas)]:
        r = by_name.get(name)
        if r is None:
            fail(f"no Route {name}: a Kafka client outside the cluster could not reach it")
        if r["spec"]["tls"]["termination"] != "passthrough" or "host" in r["spec"]:
            fail(f"Route {name} must be passthrough and leave the host to OpenShift")
        svc = services.get(r["spec"]["to"]["name"])
        if svc is None:
            fail(f"Route {name} points at Service {r['spec']['to']['name']}, which is not rendered")
        if not any(p.get("name") == r["spec"]["port"]["targetPort"] and p.get("targetPort") == "kafka-tls"
                   for p in svc["spec"]["ports"]):
            fail(f"Route {name}: Service {svc['metadata']['name']} has no port "
                 f"{r['spec']['port']['targetPort']} to the pods' kafka-tls port")
        if name != "sediment-bootstrap" and svc["spec"].get("selector") != {"statefulset.kubernetes.io/pod-name": name}:
            fail(f"Route {name}: Service {svc['metadata']['name']} must select the pod {name} only")


def overlay(args):
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    docs = render(args.kubectl, args.name)
    kinds = sorted({d["kind"] for d in docs})
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        key = (d["apiVersion"], d["kind"])
        if key in CUSTOM_KINDS:
            for path in CUSTOM_KINDS[key]:
                if dig(d, path) in (None, [], {}):
                    fail(f"{name}: {path} is missing")
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except SchemaNotFoundError:
            fail(f"{name}: no Kubernetes {K8S_VERSION} schema for {key}")
        except kubernetes_validate.ValidationError as e:
            fail(f"{name}: {e.message} at {'/'.join(map(str, e.path))}")
        for spec in pod_specs(d):
            check_restricted(name, spec, fixed_uid_allowed=args.name != "openshift")
    # Every Secret and ConfigMap a pod refers to exists, except the bucket credentials Secret
    # that operators create (marked optional).
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for d in docs:
        for spec in pod_specs(d):
            for c in spec["containers"]:
                for src in c.get("envFrom", []):
                    for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        if ref in src and (kind, src[ref]["name"]) not in names and not src[ref].get("optional"):
                            fail(f"{d['metadata']['name']}: {kind} {src[ref]['name']} is not rendered")
    settings = check_config(docs, args.sediment)
    tls = ""
    if settings["kafka"].get("tls_listen"):
        routes = sum(1 for d in docs if d["kind"] == "Route")
        tls = (f"; TLS listener {settings['kafka']['tls_listen']} advertised as "
               f"{settings['kafka']['tls_advertised_listener']} with {routes} passthrough Routes")
    print(f"overlay {args.name}: {len(docs)} objects ({', '.join(kinds)}) valid for Kubernetes "
          f"{K8S_VERSION}; restricted pod security holds; --check-config accepted "
          f"(archive.url={settings['archive']['url']}){tls}")


# --- Terraform ---------------------------------------------------------------------------------


def terraform(_args):
    import hcl2

    files = sorted((ROOT / "terraform").rglob("*.tf"))
    if not files:
        fail("no .tf files under terraform/")
    modules = set()
    for f in files:
        try:
            with open(f) as fh:
                parsed = hcl2.load(fh)
        except Exception as e:  # noqa: BLE001 - any parse error fails the check
            fail(f"{f.relative_to(ROOT)}: {e}")
        if not parsed:
            fail(f"{f.relative_to(ROOT)} is empty")
        modules.add(f.parent.relative_to(ROOT))
    for m in modules:
        if not (ROOT / m / "README.md").exists():
            fail(f"{m} has no README.md")
    print(f"terraform: {len(files)} files in {len(modules)} modules parsed: "
          + ", ".join(str(m) for m in sorted(modules)))


def checkov(args):
    def scan(cmd):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        try:
            reports = json.loads(p.stdout)
        except json.JSONDecodeError:
            fail(f"checkov printed no JSON report (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        if isinstance(reports, dict):
            reports = [reports]
        failed, passed, skipped = [], 0, 0
        for r in reports:
            res = r.get("results", {})
            passed += r.get("summary", {}).get("passed", 0)
            skipped += r.get("summary", {}).get("skipped", 0)
            if r.get("summary", {}).get("parsing_errors"):
                fail(f"checkov could not parse some files: {r['summary']}")
            for c in res.get("failed_checks", []):
                failed.append(f"{c['check_id']} {c['check_name']} in {c.get('file_path')} {c.get('resource')}")
        if not failed and passed == 0:
            fail(f"checkov ran no checks (exit {p.returncode}):\n{p.stderr[-3000:]}")
        return failed, passed, skipped

    base = [args.checkov, "--quiet", "--compact", "--output", "json", "--skip-download"]
    failed, passed, skipped = scan(base + ["-d", str(ROOT / "terraform"), "--framework", "terraform"])
    if failed:
        fail("checkov findings in terraform/:\n  " + "\n  ".join(failed))
    print(f"checkov terraform/: {passed} passed, {skipped} skipped (justified in comments), 0 failed")
    with tempfile.TemporaryDirectory() as tmp:
        for name in OVERLAYS:
            out = run([args.kubectl, "kustomize", str(KUSTOMIZE / "overlays" / name)])
            (Path(tmp) / f"{name}.yaml").write_text(out)
        failed, passed, skipped = scan(base + ["-d", tmp, "--framework", "kubernetes"])
    if failed:
        fail("checkov findings in the rendered overlays:\n  " + "\n  ".join(failed))
    print(f"checkov rendered overlays: {passed} passed, {skipped} skipped (justified in annotations), 0 failed")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("containerfile")
    o = sub.add_parser("overlay")
    o.add_argument("name", choices=OVERLAYS)
    o.add_argument("--kubectl", required=True)
    o.add_argument("--sediment", required=True)
    sub.add_parser("terraform")
    c = sub.add_parser("checkov")
    c.add_argument("--checkov", required=True)
    c.add_argument("--kubectl", required=True)
    args = ap.parse_args()
    {"containerfile": containerfile, "overlay": overlay, "terraform": terraform, "checkov": checkov}[args.cmd](args)


if __name__ == "__main__":
    main()
