"""The package layout keeps its promise: imports run one way, top to bottom.

minirm/__init__.py lists the order. A module may import from its own layer or a lower one, and
scoring and training, the two halves at the top, never import each other. Lazy imports inside
functions count as much as those at the top of a file: both are how a lower module would come to
depend on a higher one. The public names that scripts use stay where the README puts them.
"""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# minirm's first-level names, lowest layer first; a package's modules share its layer
LAYERS = [
    ("errors", "console", "devices"),
    ("kernels",),
    ("attention", "config", "models"),
    ("hub",),
    ("text",),
    ("checkpoint", "cpu", "batching"),
    ("scoring", "training"),
    ("__init__", "train", "reward_fn"),  # the public face: minirm, minirm.train, minirm.reward_fn
]
LAYER = {name: rank for rank, names in enumerate(LAYERS) for name in names}
SIBLINGS = {"scoring": "training", "training": "scoring"}


def module_name(path: Path) -> str:
    """minirm/scoring/serve.py -> minirm.scoring.serve; kernels/aot.py -> minirm.kernels.aot."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts = ["minirm", *parts]
    if parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, source: str) -> set[str]:
    """Every minirm module `source` (the text of `path`) imports, at the top or inside functions,
    as absolute names: `from ..scoring import scorer` in minirm/text/records.py is minirm.scoring."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("minirm"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("minirm"):
                continue
            # `from minirm import serve` names a module of the top package, which has no layer itself
            found.update(f"{module}.{alias.name}" for alias in node.names) if module == "minirm" else found.add(module)
    return found


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "__init__"
    assert first in LAYER, f"{module}: {first} is in no layer of tests/test_layout.py's LAYERS; place it there"
    return first, LAYER[first]


# minirm/kernels is a link to kernels/: each kernel module is read once, from kernels/
SOURCES = sorted([*(p for p in ROOT.joinpath("minirm").rglob("*.py") if p.relative_to(ROOT).parts[1] != "kernels"),
                  *ROOT.joinpath("kernels").glob("*.py")])


def upward_imports(sources: dict[Path, str]) -> list[str]:
    wrong = []
    for path, source in sources.items():
        top, rank = layer_of(module_name(path))
        for target in sorted(imported_modules(path, source)):
            target_top, target_rank = layer_of(target)
            if target_rank > rank or SIBLINGS.get(top) == target_top:
                wrong.append(f"{path.relative_to(ROOT)} imports {target} ({target_top} is not below {top})")
    return wrong


def test_every_import_runs_down_the_layers():
    wrong = upward_imports({path: path.read_text() for path in SOURCES})
    assert not wrong, "imports that run up the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path, line", [
    ("minirm/text/records.py", "    from ..scoring import scorer"),   # lazy, relative, up
    ("minirm/training/loop.py", "from minirm.scoring.serve import Server"),  # across the halves
    ("kernels/bench.py", "    from minirm.models.deberta import relative_rows"),  # the kernels under the models
    ("minirm/hub.py", "    from minirm import checkpoint"),
])
def test_the_check_sees_an_upward_import(path, line):
    path = ROOT / path
    source = path.read_text() + f"\n\ndef _late():\n{line if line.startswith(' ') else '    ' + line}\n"
    assert len(upward_imports({path: source})) == 1


def test_each_package_says_what_it_holds_and_may_import():
    for package in ("text", "scoring", "training", "models"):
        doc = importlib.import_module(f"minirm.{package}").__doc__ or ""
        assert doc.strip(), f"minirm/{package}/__init__.py has no docstring"
    for package in ("text", "scoring", "training"):
        assert "May import" in importlib.import_module(f"minirm.{package}").__doc__


def test_the_public_names_scripts_use():
    from minirm import MinirmError, ModelConfig, Scorer, build_model, load_model, save_model  # noqa: F401
    from minirm.reward_fn import RewardFunction, verl_compute_score, verl_compute_score_batch  # noqa: F401
    from minirm.train import DataSource, TrainConfig, train

    from minirm.training.config import TrainConfig as moved
    assert TrainConfig is moved and callable(train) and DataSource.__module__ == "minirm.training.data"
    assert RewardFunction.__module__ == "minirm.scoring.reward_fn"
    assert Scorer.__module__ == "minirm.scoring.scorer"
