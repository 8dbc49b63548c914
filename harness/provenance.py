"""Provenance: digests of the code and the versions that decide what trained weights and
stored measurements are.

* :func:`store_fingerprint` is the key the store files a family's trained seeds under. It
  changes with everything that changes the trained bits: what the family means
  (:func:`harness.config.fingerprint`), the harness's training code (:func:`harness_digest`),
  torch, CUDA and cuDNN (:func:`torch_digest`), and the user or library code a spec names
  by import path (:func:`code_digest`). A changed key retrains; it never reads as a
  regression, because baselines are keyed by the fingerprint alone.
* :func:`metric_digest` covers the code that turns trained models into stored
  measurements; a baseline that records it goes STALE when that code changes, instead of
  reporting the change as a regression of the model.
* :func:`runtime_versions` names the versions, for logs and headers.

Python files of the harness and of user code count by their syntax tree without
docstrings, so comments, formatting and docstring edits change no digest. ``ast.dump`` can
differ between Python minor versions, so a new Python retrains once. Installed libraries
count by their distribution's version and the bytes of their package's files.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import inspect
import os
import site
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

from harness.config import FamilyConfig, fingerprint, import_path

__all__ = ["code_digest", "file_digest", "harness_digest", "metric_digest", "runtime_versions",
           "store_fingerprint", "torch_digest", "HARNESS_TRAINING_FILES", "HARNESS_METRIC_FILES"]

_HARNESS_DIR = Path(__file__).resolve().parent

# The harness files whose code decides what training produces. store.py is out: it only
# persists bytes under checksums and verifies them, so it cannot change a trained weight;
# provenance.py and fingerprint.py are out: they compute the key, not the weights (the
# fingerprint reads a resolved spec, it resolves nothing that training then uses).
HARNESS_TRAINING_FILES = (
    "model.py",  # the architecture and its initialisation
    "train.py",  # the loop, the optimizer, the RNG and determinism settings
    "data.py",  # the synthetic language and file sources
    "family.py",  # seed and device plumbing
    "units.py",  # what one unit of training (a seed, or a packed chunk) runs
    "packed.py",  # seeds trained together as one batched model
    "config.py",  # the spec names training code imports (a rebinding there changes what trains)
    "spec.py",  # the spec dataclasses: derived sizes, seed pairs, vocabulary
    "spec_load.py",  # defaults and extends merge into the spec that trains
    "spec_validate.py",  # defaults and validation resolve what trains
    "spec_optimizer.py",  # which optimizer a name means
    "import_paths.py",  # which user module an import path means
    "adapters/*.py",  # library models (transformers, TransformerLens) behind the model protocol
)

# The harness files whose code turns trained models into stored measurements. The analysis
# cache is out: it keeps measurements under this digest, it does not compute them.
HARNESS_METRIC_FILES = ("metrics/*.py", "analysis/*.py", "capture.py", "results.py")


# ------------------------------------------------------------------------ harness code


def harness_digest(*, root: Path | None = None) -> str:
    """8 hex digits over the harness's training code (:data:`HARNESS_TRAINING_FILES`).

    ``root`` is the folder holding the harness's files (default: this package). Any change
    to the code of those files changes the digest; comments, formatting and docstrings do
    not. Raises FileNotFoundError naming the file when one is missing.
    """
    return _files_digest(root or _HARNESS_DIR, HARNESS_TRAINING_FILES)


def metric_digest(*, root: Path | None = None) -> str:
    """8 hex digits over the code that produces stored measurements
    (:data:`HARNESS_METRIC_FILES`), by the same rule as :func:`harness_digest`."""
    return _files_digest(root or _HARNESS_DIR, HARNESS_METRIC_FILES)


def _files_digest(root: Path, patterns: tuple[str, ...]) -> str:
    """8 hex digits over the files ``root/pattern`` (each pattern must match), labelled by
    their path relative to ``root`` so that moving a checkout keeps the digest."""
    h = hashlib.sha256()
    for pattern in patterns:
        paths = sorted(p for p in root.glob(pattern) if p.is_file())
        if not paths:
            raise FileNotFoundError(f"{root / pattern}: no such harness file; the digest needs it")
        for path in paths:
            h.update(f"{path.relative_to(root).as_posix()}\0{_source_digest(path)}\0".encode())
    return h.hexdigest()[:8]


def _source_digest(path: Path) -> str:
    """A ``.py`` file by its syntax tree without docstrings (comments, formatting and
    docstrings ignored); anything else, or a file that does not parse, by its bytes."""
    if path.suffix == ".py":
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            return file_digest(path)
        return "ast:" + hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()
    return file_digest(path)


def _strip_docstrings(tree: ast.Module) -> ast.Module:
    """``tree`` with the docstring of the module and of every class and function removed
    (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:]
    return tree


def file_digest(path: Path) -> str:
    """``sha256:<64 hex>`` of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------- versions


def runtime_versions() -> dict[str, str | None]:
    """The versions of what runs the harness: ``torch``, ``cuda`` (the CUDA torch was built
    with, None on a CPU build), ``cudnn`` (None where cuDNN is unavailable), ``numpy``,
    ``scipy``, ``python`` (major.minor) and ``seedstab``; None for one not installed."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "cudnn": None if cudnn is None else str(cudnn),
        "numpy": _dist_version("numpy"),
        "scipy": _dist_version("scipy"),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "seedstab": _dist_version("seedstab"),
    }


def torch_digest() -> str:
    """8 hex digits over the torch, CUDA and cuDNN versions: the runtime that computes the
    trained bits (numpy and scipy only read files and measure, so they are out)."""
    v = runtime_versions()
    blob = "\0".join(f"{k}={v[k]}" for k in ("torch", "cuda", "cudnn"))
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------ store key


def store_fingerprint(cfg: FamilyConfig) -> str:
    """The key the store files a family's trained seeds under:
    ``{fingerprint16}-h{harness8}-t{torch8}`` or ``{fingerprint16}-h{harness8}-t{torch8}-code{code8}``
    (at most 49 characters of ``[0-9a-z-]``, a valid store key).

    The fingerprint says what the family means (resolved config values); the digests say
    which code and runtime trained it, so a harness edit, a new torch/CUDA/cuDNN or edited
    user or library code retrains instead of serving stale weights from the cache, while
    baselines (keyed by the fingerprint) stay valid.
    """
    key = f"{fingerprint(cfg)}-h{harness_digest()}-t{torch_digest()}"
    code = code_digest(cfg)
    return key if code is None else f"{key}-code{code}"


# ------------------------------------------------------------------------------ user code


def code_digest(cfg: FamilyConfig) -> str | None:
    """8 hex digits over the code a family trains with by import path (``train.optimizer``,
    ``model.custom`` or ``model.transformers.model`` of the form ``module:attr``) and the
    versions of the libraries a library model runs on (transformers, TransformerLens), or
    None when it names none.

    For each of the named module and the module defining the object:

    * user code (outside the Python installation): its file, the object's source file and,
      when it is part of a package, every ``.py`` file of that top-level package's folder
      (so ``pkg:Cls`` re-exported from ``pkg/impl.py`` follows ``impl.py`` and its helpers
      in ``pkg``), each by syntax tree without docstrings;
    * an installed library: the name and version of every distribution that provides its
      top-level package, and the bytes of every ``.py`` file of that package (an edit inside
      site-packages retrains even without a version bump);
    * the standard library: the module's own file.

    Plain modules the object imports from are not followed. Kept out of
    :func:`harness.config.fingerprint` on purpose: editing ``my_optim.py`` is exactly the
    change a baseline should be *tested* against, so it retrains but keeps the baseline.
    """
    parts: dict[str, str] = {}  # label -> digest; labels, not absolute paths, so a moved checkout keeps it
    for spec, key in ((cfg.train.optimizer, "train.optimizer"), (cfg.model.custom, "model.custom")):
        if spec and ":" in spec:
            parts.update(_code_parts(spec, cfg.source, key))
    lib_model = cfg.model.transformers or {}
    if isinstance(lib_model.get("model"), str) and ":" in lib_model["model"]:
        parts.update(_code_parts(lib_model["model"], cfg.source, "model.transformers.model"))
    if cfg.model.transformers is not None or cfg.model.transformer_lens is not None:
        from harness.adapters import library_versions

        parts.update({f"library:{k}": str(v) for k, v in library_versions(cfg.model).items()})
    if not parts:
        return None
    h = hashlib.sha256()
    for label, digest in sorted(parts.items()):
        h.update(f"{label}\0{digest}\0".encode())
    return h.hexdigest()[:8]


def _code_parts(spec: str, source: str, key: str) -> dict[str, str]:
    """``{label: digest}`` of everything whose code decides what import path ``spec`` does."""
    obj = import_path(spec, source=source, key=key)
    named = sys.modules[spec.partition(":")[0]]
    defining = inspect.getmodule(obj) or named
    parts: dict[str, str] = {}
    try:
        own = inspect.getsourcefile(obj)
    except TypeError:  # a builtin or an instance: no source file of its own
        own = None
    for module in (named, defining):
        parts.update(_module_parts(module))
    if own is not None and not _installed(Path(own)):
        parts[Path(own).name] = _source_digest(Path(own))
    return parts


def _module_parts(module: ModuleType) -> dict[str, str]:
    """``{label: digest}`` of one module, by the rules of :func:`code_digest`."""
    top_name = module.__name__.split(".")[0]
    top = sys.modules.get(top_name, module)
    file = getattr(module, "__file__", None)
    pkg_dirs = [Path(d).resolve() for d in getattr(top, "__path__", None) or ()]  # empty: a plain module
    where = Path(file).resolve() if file else (pkg_dirs[0] if pkg_dirs else None)
    if where is None:  # a builtin module: the interpreter's own code
        return {}
    parts: dict[str, str] = {}
    if _installed(where):
        dists = _distributions().get(top_name, [])
        for dist in dists:
            parts[f"dist:{dist}"] = _dist_version(dist) or "unknown"
        if not dists:  # the standard library, or a library without metadata: the module's file
            return {where.name: file_digest(where)} if where.is_file() else {}
        for pkg_dir in pkg_dirs:
            parts[f"{top_name}/"] = _package_digest(pkg_dir)
        if not pkg_dirs and where.is_file():
            parts[where.name] = file_digest(where)
        return parts
    if file:
        parts[where.name] = _source_digest(where)
    for pkg_dir in pkg_dirs:
        for path in _py_files(pkg_dir):
            parts[f"{top_name}/{path.relative_to(pkg_dir).as_posix()}"] = _source_digest(path)
    return parts


def _installed(path: Path) -> bool:
    """Whether ``path`` lies in the Python installation (stdlib or site-packages): library
    code, which a distribution version names, rather than user code being edited."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(root) for root in _install_roots())


def _install_roots() -> tuple[Path, ...]:
    """The folders of the Python installation: stdlib, site-packages, the user site."""
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(getattr(site, "getsitepackages", lambda: [])())  # absent in some virtualenvs
    roots.add(site.getusersitepackages())  # pip install --user
    return tuple(Path(r).resolve() for r in sorted(r for r in roots if r))


def _py_files(pkg_dir: Path) -> list[Path]:
    """Every ``.py`` file under ``pkg_dir`` (``__pycache__`` aside), sorted."""
    return sorted(p for p in pkg_dir.rglob("*.py") if "__pycache__" not in p.parts)


def _package_digest(pkg_dir: Path) -> str:
    """sha256 over the bytes of every ``.py`` file of an installed package's folder.

    Bytes, not syntax trees: a library changes by reinstalling, and parsing a package the
    size of torch takes seconds where reading it takes a fraction of one. Cached per
    folder and per (name, mtime, size) of its files, so a big package is read once per
    process and an edit is still seen.
    """
    stamp = tuple((p.relative_to(pkg_dir).as_posix(), st.st_mtime_ns, st.st_size)
                  for p in _py_files(pkg_dir) for st in (p.stat(),))
    return _package_digest_cached(pkg_dir, stamp)


@functools.lru_cache(maxsize=64)
def _package_digest_cached(pkg_dir: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for rel, _, _ in stamp:
        h.update(f"{rel}\0{file_digest(pkg_dir / rel)}\0".encode())
    return "pkg:" + h.hexdigest()


def _distributions() -> dict[str, list[str]]:
    """``{top-level package: [distribution name, ...]}`` of what is importable now.

    Cached on ``sys.path`` and the modification times of its folders: installing or
    removing a distribution changes its folder's mtime.
    """
    stamp = tuple((p, _mtime(p)) for p in sys.path)
    return _distributions_cached(stamp)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return None


@functools.lru_cache(maxsize=8)
def _distributions_cached(stamp: tuple[tuple[str, int | None], ...]) -> dict[str, list[str]]:
    return {top: sorted(set(names)) for top, names in importlib.metadata.packages_distributions().items()}
