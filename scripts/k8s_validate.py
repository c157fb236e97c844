#!/usr/bin/python3
"""Validates rendered Kubernetes manifests offline against JSON Schemas.

Schema layout (kubeconform's, see ../shared/k8s-schemas/README.md):
  built-in kinds: v{VERSION}-standalone-strict/{kind}[-{group's first label}]-{version}.json
  CRDs:           {group}/{kind}_{version}.json
Every object must have a schema: an unknown kind fails rather than passing unchecked.

Beyond the schemas (which check shape and types only) it checks what the API server or the
controllers would otherwise reveal only on a live cluster:
  - a Deployment's selector matches its pod template labels;
  - Service / PodDisruptionBudget / HPA targets select or name a Deployment of the render;
  - probe ports name or number a container port;
  - terminationGracePeriodSeconds covers the preStop sleep plus compressd's --drain-timeout.

Usage: k8s_validate.py --schemas DIR --kubernetes-version 1.29.0 [--kubernetes-version ...]
                       FILE.yaml...
Exit status: 0 when every object passes, 1 otherwise.
"""

import argparse
import json
import os
import re
import sys

import jsonschema
import yaml

CRD_GROUPS = ("monitoring.coreos.com",)


def schema_path(schemas, version, doc):
    group, _, api_version = doc["apiVersion"].rpartition("/")
    kind = doc["kind"].lower()
    if group in CRD_GROUPS:
        return os.path.join(schemas, group, f"{kind}_{api_version}.json")
    suffix = f"-{group.split('.')[0]}" if group else ""
    return os.path.join(schemas, f"v{version}-standalone-strict", f"{kind}{suffix}-{api_version}.json")


def describe(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name')}"


def parse_duration_s(text):
    """Parses Go-style durations like 30s, 1m30s, 500ms; None when it cannot."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * units[u] for n, u in parts)


def selector_matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def semantic_checks(docs):
    errors = []
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    for d in deployments:
        spec = d.get("spec") or {}
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        match = (spec.get("selector") or {}).get("matchLabels")
        if not selector_matches(match, labels):
            errors.append(f"{describe(d)}: selector {match} does not match template labels {labels}")
        pod = template.get("spec") or {}
        grace = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod.get("containers") or []:
            ports = c.get("ports") or []
            names = {p.get("name") for p in ports}
            numbers = {p.get("containerPort") for p in ports}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe) or {}
                for handler in ("grpc", "httpGet", "tcpSocket"):
                    port = (p.get(handler) or {}).get("port")
                    if port is not None and port not in names and port not in numbers:
                        errors.append(f"{describe(d)}: {c.get('name')}.{probe} port {port} is not a container port")
            args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
            drain = 0.0
            for i, a in enumerate(args):
                value = None
                if a == "--drain-timeout" and i + 1 < len(args):
                    value = args[i + 1]
                elif a.startswith("--drain-timeout="):
                    value = a.split("=", 1)[1]
                if value is not None:
                    parsed = parse_duration_s(value)
                    if parsed is None:
                        errors.append(f"{describe(d)}: cannot parse --drain-timeout {value!r}")
                    else:
                        drain = parsed
            pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {})
            sleep_s = (pre_stop.get("sleep") or {}).get("seconds", 0)
            cmd = (pre_stop.get("exec") or {}).get("command") or []
            if len(cmd) == 2 and cmd[0].endswith("sleep"):
                sleep_s = float(cmd[1])
            if drain and grace < drain + sleep_s:
                errors.append(f"{describe(d)}: terminationGracePeriodSeconds {grace} < preStop "
                              f"{sleep_s}s + --drain-timeout {drain}s")
    pod_labels = [((d.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
                  for d in deployments]
    names = {(d.get("metadata") or {}).get("name") for d in deployments}
    for d in docs:
        kind = d.get("kind")
        spec = d.get("spec") or {}
        if kind == "Service":
            sel = spec.get("selector")
            if sel and not any(selector_matches(sel, l) for l in pod_labels):
                errors.append(f"{describe(d)}: selector {sel} matches no Deployment's pods")
        elif kind == "PodDisruptionBudget":
            sel = (spec.get("selector") or {}).get("matchLabels")
            if not any(selector_matches(sel, l) for l in pod_labels):
                errors.append(f"{describe(d)}: selector {sel} matches no Deployment's pods")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec.get("scaleTargetRef") or {}
            if ref.get("kind") == "Deployment" and ref.get("name") not in names:
                errors.append(f"{describe(d)}: scaleTargetRef {ref.get('name')} is not in the render")
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schemas", required=True)
    ap.add_argument("--kubernetes-version", action="append", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    failures = 0
    for path in args.files:
        with open(path) as f:
            try:
                docs = [d for d in yaml.safe_load_all(f) if d]
            except yaml.YAMLError as e:
                print(f"FAIL {path}: not YAML: {e}")
                failures += 1
                continue
        for doc in docs:
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                print(f"FAIL {path}: object without apiVersion/kind")
                failures += 1
                continue
            for version in args.kubernetes_version:
                sp = schema_path(args.schemas, version, doc)
                if not os.path.exists(sp):
                    print(f"FAIL {path}: {describe(doc)}: no schema {sp}")
                    failures += 1
                    continue
                with open(sp) as sf:
                    schema = json.load(sf)
                validator = jsonschema.Draft7Validator(schema)
                errs = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
                for e in errs:
                    where = ".".join(str(p) for p in e.absolute_path) or "(root)"
                    print(f"FAIL {path}: {describe(doc)} [{version}] {where}: {e.message}")
                failures += len(errs)
                # CRD schemas do not depend on the Kubernetes version: check them once.
                if doc["apiVersion"].rpartition("/")[0] in CRD_GROUPS:
                    break
        sem = semantic_checks(docs)
        for e in sem:
            print(f"FAIL {path}: {e}")
        failures += len(sem)
        if not failures:
            kinds = ", ".join(describe(d) for d in docs)
            print(f"ok   {path}: {len(docs)} objects ({kinds})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
