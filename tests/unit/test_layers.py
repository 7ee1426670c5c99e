"""The data flow's direction holds in the imports: api -> services -> jobs -> model / post -> media, with
no back-references, no dialect importing another, and docs/settings.md equal to the settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from glm_image_server.settings import settings_markdown

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


@pytest.mark.parametrize("layer", ["jobs", "model", "media"])
def test_lower_layers_never_import_the_api(layer: str) -> None:
    for path in _modules(layer):
        bad = {name for name in _imports(path) if name.startswith("glm_image_server.api")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_engine_knows_nothing_of_jobs_storage_or_http() -> None:
    for path in _modules("model"):
        bad = {
            name
            for name in _imports(path)
            if name.startswith(
                ("glm_image_server.jobs", "glm_image_server.media", "glm_image_server.services")
            )
            or name.split(".")[0] in ("fastapi", "httpx", "starlette")
        }
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_no_dialect_imports_another(dialect: str) -> None:
    others = tuple(f"glm_image_server.api.{name}" for name in DIALECTS if name != dialect)
    for path in _modules(f"api/{dialect}"):
        bad = {name for name in _imports(path) if name.startswith(others)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_api_process_modules_do_not_import_torch_at_module_level() -> None:
    api_side = [
        *_modules("api"),
        *_modules("jobs"),
        *_modules("media"),
        PACKAGE / "services.py",
        PACKAGE / "post.py",
    ]
    for path in api_side:
        tree = ast.parse(path.read_text())
        top = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        assert not {n for n in names if n.split(".")[0] in ("torch", "diffusers", "transformers")}, path
        assert not {n for n in names if n.endswith(("model", "model.engine", "model.loader"))}, path


def test_docs_settings_page_matches_the_settings() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == settings_markdown(), "regenerate: python -c 'from glm_image_server.settings import ...'"
