"""Render ``deploy/kubernetes`` as ``kubectl kustomize`` does, for the parts it uses.

The tests need the manifests rendered (base plus components) where no ``kubectl`` may be
installed, so this module applies the few kustomize features the manifests use:
``resources`` (files), ``namespace``, ``images`` (``newName``/``newTag``), ``components``
whose ``patches`` are strategic-merge patches.  Strategic merge is done for what the patches
touch: maps merge, and lists of maps merge by their Kubernetes merge key (``name`` for
containers, volumes and env, ``mountPath`` for volume mounts); other lists are replaced.

Its output is checked against ``kubectl kustomize``'s, kept in ``tests/golden/kubernetes/``
(``scripts/render-manifests.sh`` rewrites those files with the real tool): a test that fails
there means the manifests changed without the golden files, or this module went wrong.

This module does not import capctl: it is the harness, not the code under test.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "kubernetes"
COMPONENTS = BASE / "components"
#: Kubernetes' patchMergeKey for the lists the patches touch.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath"}
#: Kinds kustomize leaves without a namespace.
CLUSTER_SCOPED = {"Namespace"}
#: kustomize's output order (its legacy ordering: namespaces first).
ORDER = ["Namespace", "ConfigMap", "DaemonSet"]


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def merge(target: Any, patch: Any, key: str = "") -> Any:
    """Strategic merge of ``patch`` into ``target`` (new objects; neither is changed)."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = copy.deepcopy(target)
        for k, v in patch.items():
            out[k] = merge(out[k], v, k) if k in out else copy.deepcopy(v)
        return out
    mkey = MERGE_KEYS.get(key)
    if isinstance(target, list) and isinstance(patch, list) and mkey is not None:
        out_list = copy.deepcopy(target)
        index = {item[mkey]: i for i, item in enumerate(out_list)}
        added = []
        for item in patch:
            if item[mkey] in index:
                i = index[item[mkey]]
                out_list[i] = merge(out_list[i], item)
            else:
                added.append(copy.deepcopy(item))
        return added + out_list  # kustomize puts a patch's new items first
    return copy.deepcopy(patch)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["kind"] == b["kind"] and a["metadata"]["name"] == b["metadata"]["name"])


def render(components: Sequence[str] = (), base: Path = BASE) -> list[dict[str, Any]]:
    """The base kustomization with ``components`` (names under ``components/``) applied."""
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        docs += _load_all(base / res)
    for name in components:
        comp_dir = base / "components" / name
        comp = yaml.safe_load((comp_dir / "kustomization.yaml").read_text())
        assert comp["kind"] == "Component", comp_dir
        for p in comp.get("patches", []):
            for patch in _load_all(comp_dir / p["path"]):
                hits = [i for i, d in enumerate(docs) if _same(d, patch)]
                assert len(hits) == 1, f"{comp_dir / p['path']}: no single target for {patch}"
                docs[hits[0]] = merge(docs[hits[0]], patch)
    for d in docs:
        if kust.get("namespace") and d["kind"] not in CLUSTER_SCOPED:
            d["metadata"]["namespace"] = kust["namespace"]
        if d["kind"] == "Namespace" and kust.get("namespace"):
            d["metadata"]["name"] = kust["namespace"]
        for image in kust.get("images", []):
            _set_image(d, image)
    return sorted(docs, key=lambda d: ORDER.index(d["kind"]))


def _set_image(doc: dict[str, Any], image: dict[str, str]) -> None:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        if c["image"].split(":")[0] == image["name"]:
            c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"


def find(docs: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc
