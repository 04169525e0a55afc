"""Packaging: the GPU extra pins exactly what the installed verl's own `vllm` extra pins."""

import ast
import importlib.metadata
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _our_extras() -> dict[str, list[str]]:
    """``extras_require`` of setup.py, read statically (f-strings resolved with VERL_VERSION)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    version = next(
        node.value.value for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "VERL_VERSION"
    )
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    call = next(node for node in calls if getattr(node.func, "id", "") == "setup")
    extras = next(k.value for k in call.keywords if k.arg == "extras_require")
    out = {}
    for key, value in zip(extras.keys, extras.values, strict=True):
        items = []
        for elt in value.elts:
            if isinstance(elt, ast.JoinedStr):
                items.append("".join(v.value if isinstance(v, ast.Constant) else version for v in elt.values))
            else:
                items.append(elt.value)
        out[key.value] = items
    return out


def _pins(requirements) -> dict[str, str]:
    pins = {}
    for req in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)", req)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(3)
    return pins


def test_gpu_extra_pins_equal_verls_vllm_extra():
    verl_extra = [r.split(";")[0] for r in importlib.metadata.requires("verl") or [] if 'extra == "vllm"' in r]
    theirs = _pins(verl_extra)
    assert theirs.get("vllm"), f"verl's metadata has no pinned vllm extra: {verl_extra}"
    ours = _pins(_our_extras()["vllm"])
    assert ours.pop("verl") == importlib.metadata.version("verl")
    assert ours == theirs, f"setup.py's vllm extra {ours} != verl's own vllm extra {theirs}"
