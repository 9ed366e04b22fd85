"""Sphinx configuration for the rxbot user documentation.

Build (warnings are errors, as in tests/test_docs.py)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The pages are MyST markdown. ``api.md`` is generated from the docstrings with autodoc,
so the build imports rxbot (from this checkout: the folder above is put first on
``sys.path``).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

try:
    from rxbot import __version__ as release
except Exception:  # the docs still build from a bare checkout
    release = "0.1"

project = "rxbot"
author = "rxbot contributors"
copyright = "rxbot contributors"
version = ".".join(release.split(".")[:2])

extensions = ["myst_parser", "sphinx.ext.autodoc"]

# API reference (api.md): members in source order, type hints in the description
# rather than in the signature line, so signatures fit the page
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# types only for what a docstring documents: a dataclass's fields (RunReport's
# bookkeeping) are not parameters a user passes
autodoc_typehints_description_target = "documented"
# (no "show-inheritance" key at all: any value of it, False too, prints "Bases: ...",
# rxbot's internal base classes such as Displayable)
autodoc_default_options = {"members": True}
autodoc_preserve_defaults = True
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "images/*.dot", "make_images.py", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"rxbot {release}"
html_theme_options = {
    "description": "databot-style data-flow pipelines on reactivex and asyncio",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
pygments_style = "sphinx"
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # long output lines wrap instead of leaving the page
