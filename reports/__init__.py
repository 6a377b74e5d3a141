"""Rendering of one call for people: the per-channel summary (:mod:`reports.summary`) and the
HTML page of a call (:mod:`reports.html`).

Why a package of its own: the same page is written by ``ser-produce --report`` (after a call)
and served by ``ser-dashboard`` (live, then final), and the two must not import each other
(readers of results never import producer internals; the producer never imports the dashboard).
``models`` is the ML contract and ``workers.contract`` the job/result contract, so neither is the
place for HTML. ``reports`` is pure (records in, strings out): it imports no process package and
no Redis client; an import-linter contract in pyproject.toml keeps it so.
"""
