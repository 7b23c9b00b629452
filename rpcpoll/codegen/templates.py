"""Where the Jinja templates are: inside the installed package, or in the source checkout.

pyproject.toml force-includes the top-level `templates/` folder into the wheel as
`rpcpoll/_templates`. An editable install also copies it there, but `import rpcpoll` then
resolves to the checkout, where that copy does not exist; the checkout's own `templates/` is
the live one. The packaged copy is looked for first, so an installed rpcpoll never picks up an
unrelated `templates/` folder next to site-packages.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["template_dir"]

_PACKAGE = Path(__file__).resolve().parent.parent  # .../rpcpoll


def template_dir() -> Path:
    """The directory holding module.py.j2 and its siblings."""
    packaged = _PACKAGE / "_templates"
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent / "templates"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"rpcpoll's templates are missing (looked in {packaged}, {checkout})")
