#!/usr/bin/env python3
"""Checks that every PromQL expression in the Grafana dashboard and the PrometheusRule uses only
metrics the broker exports, with the suffix its type implies, and labels those metrics carry.

Run from anywhere: python3 tests/python/check_dashboard_metrics.py (tests/deploy.rs does). Exit 1
on any problem.

Sources of truth: the names registered in crates/sediment-broker/src/*.rs (string literals
"sediment_..."), and the Metrics table of docs/operations.md (exposed name, type, labels).
"""
import json
import pathlib
import re
import sys

import yaml  # PyYAML

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/kustomize/components/monitoring/sediment-dashboard.json"
RULES = ROOT / "deploy/kustomize/components/monitoring/prometheusrule.yaml"
CODE = sorted((ROOT / "crates/sediment-broker/src").rglob("*.rs"))
DOCS = ROOT / "docs/operations.md"

# Metrics Prometheus makes itself, and labels added to every target by the Prometheus Operator.
BUILTIN_METRICS = {"up"}
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}


def registered_names():
    names = set()
    for f in CODE:
        names |= set(re.findall(r'"(sediment_[a-z0-9_]+)"', f.read_text()))
    return names


def documented():
    """Exposed name -> (type, labels) from the docs table."""
    text = DOCS.read_text()
    section = text.split("### Metrics", 1)[1].split("\n#", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        labels = set(re.findall(r"`([a-z_]+)`", cells[2]))
        for name in re.findall(r"`(sediment_[a-z0-9_]+)`", cells[0]):
            out[name] = (cells[1], labels)
    return out


def exprs():
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            yield f'dashboard panel "{panel["title"]}"', t["expr"]
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            yield f'dashboard variable "{var["name"]}"', q["query"]
    for doc in yaml.safe_load_all(RULES.read_text()):
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                yield f'alert {rule["alert"]}', rule["expr"]


def parse(expr):
    """(metric names with their selector labels, labels in by/on/... clauses)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r"\[[^\]]*\]", "", e)                      # ranges and subqueries
    grouping = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        grouping |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    # label_values(metric, LABEL) (a Grafana variable query): LABEL is a label of the metric
    lv = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", e)
    if lv:
        e = lv.group(1)
        grouping.add(lv.group(2))
    metrics = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", e):
        name, sel, call = m.group(1), m.group(2), m.group(3)
        if call and not sel:
            continue                                        # function call
        if name.lower() in KEYWORDS:
            continue
        if re.fullmatch(r"[0-9.eE+-]+", name):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", sel or ""))
        metrics.append((name, labels))
    return metrics, grouping


def main():
    code = registered_names()
    docs = documented()
    problems = []
    seen = {}
    for where, expr in exprs():
        metrics, grouping = parse(expr)
        if not metrics:
            problems.append(f"{where}: no metric found in {expr!r}")
        available = set(TARGET_LABELS)
        for name, sel_labels in metrics:
            if name in BUILTIN_METRICS:
                seen.setdefault(name, "built-in (Prometheus)")
                available |= sel_labels
                continue
            base, suffix = name, ""
            for s in ("_total", "_bucket", "_sum", "_count"):
                if name.endswith(s):
                    base, suffix = name[: -len(s)], s
                    break
            if base not in code:
                problems.append(f"{where}: {name}: {base!r} is not registered in crates/sediment-broker/src")
                continue
            doc_name = base + "_total" if suffix == "_total" else base
            kind, labels = docs.get(doc_name, (None, set()))
            if kind is None:
                problems.append(f"{where}: {name}: {doc_name!r} not in the docs/operations.md Metrics table")
                continue
            ok = {"counter": suffix == "_total",
                  "histogram": suffix in ("_bucket", "_sum", "_count"),
                  "gauge": suffix == ""}.get(kind, False)
            if not ok:
                problems.append(f"{where}: {name}: a {kind} is not exposed with suffix {suffix!r}")
            metric_labels = labels | ({"le"} if suffix == "_bucket" else set())
            bad = sel_labels - metric_labels - TARGET_LABELS
            if bad:
                problems.append(f"{where}: {name} has no label(s) {sorted(bad)}")
            available |= metric_labels
            seen.setdefault(name, f"{kind}, in code as {base!r}")
        bad = grouping - available
        if bad:
            problems.append(f"{where}: grouping label(s) {sorted(bad)} on none of its metrics")
    for name in sorted(seen):
        print(f"ok  {name:52} {seen[name]}")
    for p in problems:
        print(f"BAD {p}")
    print(f"{len(seen)} metric names checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
