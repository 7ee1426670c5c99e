"""The data flow's direction holds in the imports: api -> serving -> store -> worker (engine, post) ->
delivery, over core (the shared language, which imports nothing else of the project), with no
back-references, no dialect importing another, and docs/settings.md equal to the settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from glm_image_server.cli.flags import settings_markdown

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "glm_image_server"
DIALECTS = ("fal", "runware", "openai")


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _project(names: set[str]) -> set[str]:
    return {name for name in names if name.startswith("glm_image_server.")}


def test_core_imports_nothing_else_of_the_project() -> None:
    for path in _modules("core"):
        bad = {name for name in _project(_imports(path)) if not name.startswith("glm_image_server.core")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


@pytest.mark.parametrize("layer", ["core", "store", "engine", "media", "post", "worker", "delivery"])
def test_lower_layers_never_import_the_api_or_the_job_service(layer: str) -> None:
    for path in _modules(layer):
        bad = {
            n for n in _imports(path) if n.startswith(("glm_image_server.api", "glm_image_server.serving"))
        }
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_post_knows_nothing_of_jobs_or_their_store() -> None:
    for path in _modules("post"):
        bad = {
            name
            for name in _imports(path)
            if name.startswith(
                ("glm_image_server.store", "glm_image_server.worker", "glm_image_server.core.job")
            )
        }
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_engine_knows_nothing_of_jobs_storage_or_http() -> None:
    allowed = ("glm_image_server.engine", "glm_image_server.core.request", "glm_image_server.core.results")
    allowed += ("glm_image_server.core.events", "glm_image_server.config", "glm_image_server.slices")
    for path in _modules("engine"):
        names = _imports(path)
        bad = {name for name in _project(names) if not name.startswith(allowed)}
        bad |= {name for name in names if name.split(".")[0] in ("fastapi", "httpx", "starlette")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_no_dialect_imports_another(dialect: str) -> None:
    others = tuple(f"glm_image_server.api.{name}" for name in DIALECTS if name != dialect)
    for path in _modules(f"api/{dialect}"):
        bad = {name for name in _imports(path) if name.startswith(others)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_shared_api_modules_name_no_dialect() -> None:
    """app, gate, errors, openapi, common...: the dialects are composed through api/dialect.py only."""
    packages = {path.parent.name for path in (PACKAGE / "api").glob("*/__init__.py")}
    assert set(DIALECTS) <= packages
    dialects = tuple(f"glm_image_server.api.{name}" for name in packages)
    for path in sorted((PACKAGE / "api").glob("*.py")):
        bad = {name for name in _imports(path) if name.startswith(dialects)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_api_process_modules_do_not_import_torch_at_module_level() -> None:
    api_side = [
        *_modules("api"),
        *_modules("serving"),
        *_modules("store"),
        *_modules("delivery"),
        *_modules("media"),
        *_modules("post"),
    ]
    for path in api_side:
        tree = ast.parse(path.read_text())
        top = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        assert not {n for n in names if n.split(".")[0] in ("torch", "diffusers", "transformers")}, path
        assert not {n for n in names if n.endswith(("engine", "engine.engine", "engine.loader"))}, path


def test_docs_settings_page_matches_the_settings() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == settings_markdown(), "regenerate: python -c 'from glm_image_server.cli.flags import ...'"
