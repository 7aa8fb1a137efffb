"""Project-wide pytest configuration: the conformance summary (pass counts per vector kind)."""

from __future__ import annotations

from collections import Counter, defaultdict

pytest_plugins = ["pytester"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for outcome in ("passed", "failed", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome in ("passed", "failed"):
                continue
            kind = dict(getattr(report, "user_properties", [])).get("vector_kind")
            if kind is not None:
                counts[kind][outcome] += 1
    if not counts:
        return
    terminalreporter.section("edgeHub conformance vectors")
    for kind in sorted(counts):
        c = counts[kind]
        total = sum(c.values())
        line = f"{kind:34} {c['passed']:4} / {total:<4} passed"
        if c["xfailed"]:
            line += f"   {c['xfailed']} expected failures (not built yet)"
        if c["failed"] or c["xpassed"]:
            line += f"   {c['failed']} FAILED, {c['xpassed']} unexpectedly passed"
        terminalreporter.write_line(line)
