"""Which source files each pipeline stage's code is made of: the one place that knows it.

A stage's code is the transitive closure of the ``embalance`` modules its entry module imports: ``import`` and
``from … import`` statements anywhere in a file (stages import lazily, inside functions), relative imports resolved,
the ``__init__`` of every package on the way (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``), and
``from pkg import name`` counted as the submodule ``pkg/name`` when there is one, and the few modules a stage uses
as files rather than importing them (``AS_FILES``). Imports under
``if TYPE_CHECKING:`` are left out (they never run); so are third-party modules (their versions are pinned in
``constraints.txt``, not tracked per stage).

Three things read it, so that they cannot drift apart:

- ``dvc.yaml``: each stage's ``${paths.src}/...`` deps are this closure (``python -m embalance.codedeps --write
  dvc.yaml`` rewrites them; ``tests/test_codedeps.py`` fails when they are out of date), so ``dvc repro`` re-runs a
  stage when any file its code is made of changes, and only then;
- :func:`embalance.cluster.code_digest`: the hash of the sweep's closure, which Dask workers must match;
- :func:`embalance.stages.sweep.resume_key`: the checkpoint of an interrupted sweep is valid only for that code.

The command line. ``cli.py`` dispatches to every stage (and to the server), so counting it, and with it every
module it imports at its top, would make each stage depend on all the others' code. A stage's code path through it is
``cli.main`` → ``params.load_params`` (the typed schema, whose defaults and checks shape what the stage receives) →
``cli._<stage>`` → the stage's module. So a stage's entry modules are the ``embalance`` modules that ``cli._<stage>``
imports (read from cli.py itself, so a new stage needs no entry here) plus ``embalance.params``; cli.py is not a dep.
A change in cli.py that changes what a stage computes must therefore move into the stage's module or the schema,
which is where the stage's behaviour belongs anyway (cli.py only parses options and forwards them).

Folders or files. A dep is listed as a folder when every ``.py`` file under it is in the closure (the experiment
core, the serving runtime, the report package): ``dvc.yaml`` stays readable, and a file added there later is in the
stage's code as soon as something imports it. Otherwise, each file is listed. DVC ignores ``__pycache__`` (see
``.dvcignore``), so a folder dep changes only with its sources.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "embalance"
SRC = Path(__file__).resolve().parent.parent  # the folder that holds the package (src/)
CLI = f"{PACKAGE}.cli"
SCHEMA = f"{PACKAGE}.params"  # cli.main loads every stage's params through it
DEP_PREFIX = "${paths.src}/"
# Modules that a module uses as files rather than importing them, which no import statement shows: counted as its
# imports. The export stage logs serving/mlflow_model.py as the model's code (MLflow runs it; importing it would
# register a model as a side effect).
AS_FILES = {f"{PACKAGE}.stages.export": (f"{PACKAGE}.serving.mlflow_model",)}


def module_file(module: str, src: Path = SRC) -> Path | None:
    """The file of ``module`` under ``src`` (``a/b.py`` or ``a/b/__init__.py``), or None when it is not one of ours."""
    if module != PACKAGE and not module.startswith(f"{PACKAGE}."):
        return None
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at any depth, but not in an ``if TYPE_CHECKING:`` body."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__`` first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(module: str, src: Path = SRC) -> set[str]:
    """The ``embalance`` modules that ``module``'s own file imports (one step, not transitive)."""
    path = module_file(module, src)
    if path is None:
        return set()
    is_package = path.name == "__init__.py"
    found: set[str] = set(AS_FILES.get(module, ()))
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[: len(package) - (node.level - 1)]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        found.add(base)
        found.update(f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}", src))
    return {m for m in found if module_file(m, src)}


def closure_modules(entries: Iterable[str], src: Path = SRC) -> set[str]:
    """Every ``embalance`` module that importing ``entries`` runs (parent packages included)."""
    seen: set[str] = set()
    todo = [p for e in entries for p in _with_parents(e)]
    while todo:
        module = todo.pop()
        if module in seen or module_file(module, src) is None:
            continue
        seen.add(module)
        todo.extend(p for m in imported_modules(module, src) for p in _with_parents(m))
    return seen


def closure(entries: Iterable[str], src: Path = SRC) -> list[Path]:
    """The files of :func:`closure_modules`, sorted."""
    return sorted(p for m in closure_modules(entries, src) if (p := module_file(m, src)))


def stage_entries(stage: str, src: Path = SRC) -> list[str]:
    """A stage's entry modules: the ``embalance`` modules ``cli._<stage>`` imports, and the params schema."""
    cli = module_file(CLI, src)
    assert cli is not None
    tree = ast.parse(cli.read_text(encoding="utf-8"))
    func = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == f"_{stage}"), None)
    if func is None:
        raise ValueError(f"cli.py has no function `_{stage}`, so stage {stage!r} has no entry; stages with one: {sorted(cli_stages(src))}.")
    entries = set()
    for node in _import_nodes(func):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            entries.update(m for alias in node.names if module_file(m := f"{node.module}.{alias.name}", src))
            entries.add(node.module)
        elif isinstance(node, ast.Import):
            entries.update(alias.name for alias in node.names)
    entries = {m for m in entries if module_file(m, src)}
    return sorted(entries | {SCHEMA})


def cli_stages(src: Path = SRC) -> set[str]:
    """The sub-commands of cli.py (its ``STAGES``)."""
    cli = module_file(CLI, src)
    assert cli is not None
    for node in ast.parse(cli.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "STAGES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise ValueError("cli.py has no STAGES.")


def stage_files(stage: str, src: Path = SRC) -> list[Path]:
    """The source files of ``stage``'s code (see the module's docstring)."""
    return closure(stage_entries(stage, src), src)


@cache
def sweep_files() -> tuple[Path, ...]:
    """The files of the code that computes a sweep's cell (the sweep stage's closure), for the code digest.

    Cached per process: the import structure does not change while a sweep runs (the files' bytes are read afresh)."""
    return tuple(stage_files("sweep"))


def compact(files: Iterable[Path], src: Path = SRC) -> list[str]:
    """``files`` as deps relative to ``src``: a folder wherever every ``.py`` file under it is among them."""
    files = set(files)
    package = src / PACKAGE

    def whole(folder: Path) -> bool:
        return all(p in files for p in folder.rglob("*.py") if "__pycache__" not in p.parts)

    deps: set[str] = set()
    for path in files:
        top = path
        for folder in path.parents:
            if folder == package or package not in folder.parents:
                break
            if whole(folder):
                top = folder
        deps.add(top.relative_to(src).as_posix())
    return sorted(deps)


def stage_deps(stage: str, src: Path = SRC) -> list[str]:
    """The ``${paths.src}/...`` deps of ``stage`` in dvc.yaml: its own module (or package) first, then sorted."""
    deps = compact(stage_files(stage, src), src)
    own = [d for d in deps if d.removesuffix(".py").endswith(f"/{stage}")]
    return [DEP_PREFIX + d for d in own + [d for d in deps if d not in own]]


# --------------------------------------------------------------------------------------------- dvc.yaml's deps
_STAGE = re.compile(r"^  (\w+):\s*(#.*)?$")
_ITEM = re.compile(r"^(\s*)- (\S+)(\s*#.*)?$")


def rewrite_dvc_yaml(text: str, src: Path = SRC) -> str:
    """``text`` (a dvc.yaml) with each stage's source deps replaced by :func:`stage_deps`.

    A textual edit, so the file's comments stay: other deps keep their place, a source dep that stays keeps its
    comment, and the new list takes the place of the first old source dep."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _STAGE.match(line):
            stage = m.group(1)
        if stage is not None and line.strip() == "deps:":
            out.append(line)
            i += 1
            items: list[tuple[str, str, str]] = []  # (indent, dep, comment)
            while i < len(lines) and (m := _ITEM.match(lines[i].rstrip("\n"))):
                items.append((m.group(1), m.group(2), m.group(3) or ""))
                i += 1
            indent = items[0][0] if items else " " * (len(line) - len(line.lstrip()) + 2)
            comments = {dep: comment for _, dep, comment in items if dep.startswith(DEP_PREFIX)}
            new = [f"{indent}- {dep}{comments.get(dep, '')}\n" for dep in stage_deps(stage, src)]
            placed = False
            for ind, dep, comment in items:
                if dep.startswith(DEP_PREFIX):
                    if not placed:
                        out.extend(new)
                        placed = True
                else:
                    out.append(f"{ind}- {dep}{comment}\n")
            if not placed:
                out.extend(new)
            stage = None
            continue
        out.append(line)
        i += 1
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m embalance.codedeps", description="Each pipeline stage's source files; rewrite dvc.yaml's source deps from them.")
    ap.add_argument("--write", type=Path, metavar="DVC_YAML", help="rewrite this dvc.yaml's source deps in place")
    ap.add_argument("--check", type=Path, metavar="DVC_YAML", help="exit with status 1 when this dvc.yaml's source deps are out of date")
    ap.add_argument("stages", nargs="*", help="stages to print the deps of (default: all the CLI's)")
    args = ap.parse_args(argv)
    for path in filter(None, (args.write, args.check)):
        old = path.read_text(encoding="utf-8")
        new = rewrite_dvc_yaml(old)
        if args.check:
            if new != old:
                print(f"{path}: source deps out of date; run `python -m embalance.codedeps --write {path}`.", file=sys.stderr)
                return 1
        elif new != old:
            path.write_text(new, encoding="utf-8")
            print(f"{path}: source deps rewritten.")
        return 0
    for stage in args.stages or sorted(cli_stages()):
        print(f"{stage}:", *stage_deps(stage), sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
