"""The README's layering table against the imports of every module of the package.

A module may import only modules of strictly lower layers, never a private name (``_x``) of
another module, and a private module (``_x``) only from inside the package that holds it;
every module is listed exactly once. The imports are read from the source (``ast``),
including those inside functions.
"""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "rnn_jax")


def _modules():
    mods = {}
    for d, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".")
                mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


def _layers():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    table = text.split("<!-- layers -->")[1].split("<!-- /layers -->")[0]
    layers = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            for name in re.findall(r"`([^`]+)`", cells[2]):
                full = "rnn_jax" if name == "rnn_jax" else f"rnn_jax.{name}"
                assert full not in layers, f"{full} listed twice in the README's layering table"
                layers[full] = int(cells[0])
    return layers


def _imports(name, path, mods):
    """(imported module, imported name or None, line) for every rnn_jax import of a module."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package
                for _ in range(node.level - 1):
                    pkg = pkg.rsplit(".", 1)[0]
                base = pkg + ("." + base if base else "")
            if base != "rnn_jax" and not base.startswith("rnn_jax."):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full, None, node.lineno) if full in mods else (base, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "rnn_jax"]
    return out


def test_every_module_is_listed_once():
    mods, layers = _modules(), _layers()
    assert sorted(set(mods) - set(layers)) == [], "modules missing from the README's layering table"
    assert sorted(set(layers) - set(mods)) == [], "the README's layering table lists modules that do not exist"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_imports_go_down_and_stay_public(name):
    mods, layers = _modules(), _layers()
    problems = []
    for target, imported, line in _imports(name, mods[name], mods):
        if target == name:
            continue
        if target not in layers:
            problems.append(f"line {line}: imports {target}, which is not a module of the package")
            continue
        if layers[target] >= layers[name]:
            problems.append(f"line {line}: imports {target} (layer {layers[target]}) from layer {layers[name]}")
        if imported is not None and imported.startswith("_"):
            problems.append(f"line {line}: imports the private name {imported} of {target}")
        leaf = target.rsplit(".", 1)[-1]
        if leaf.startswith("_") and not name.startswith(target.rsplit(".", 1)[0] + ".") and name != target.rsplit(".", 1)[0]:
            problems.append(f"line {line}: imports the private module {target} from outside its package")
    assert problems == []


def test_the_checker_finds_an_upward_and_a_private_import(tmp_path):
    """The rule has teeth: an upward import and a private name are reported."""
    mods = dict(_modules())
    fake = tmp_path / "fake.py"
    fake.write_text("from rnn_jax.repro.train import Setup\nfrom rnn_jax.unroll import _Prepared\n")
    found = _imports("rnn_jax.cells", str(fake), mods)
    layers = _layers()
    assert any(t == "rnn_jax.repro.train" and layers[t] > layers["rnn_jax.cells"] for t, _, _ in found)
    assert ("rnn_jax.unroll", "_Prepared", 2) in found
