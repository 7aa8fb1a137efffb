"""`python -m bench`: run every benchmark and print a report with each figure beside its target."""

from __future__ import annotations

import sys

from . import (
    amqp_bench,
    backlog_bench,
    brokers_bench,
    fixture_bench,
    machine_bench,
    mqtt_bench,
    reload_bench,
    routing_bench,
    trace_bench,
)


def main() -> int:
    print("edgehub-emu benchmarks on this machine (what each figure measures: bench/*.py docstrings)\n")
    steadiness = machine_bench.run()  # first: the context for the latency figures that follow
    table, results = brokers_bench.run()
    results = steadiness + results
    print("\n".join(table) + "\n")
    amqp_table, amqp_results = amqp_bench.run()
    print("\n".join(amqp_table) + "\n")
    results += amqp_results
    results += routing_bench.run()
    results += reload_bench.run()
    results += backlog_bench.run()
    results += mqtt_bench.run()
    results += fixture_bench.run()
    results += trace_bench.run()
    width = max(len(r.name) for r in results)
    missed = 0
    for r in results:
        verdict = "ok" if r.met else "MISSED"
        missed += not r.met
        print(f"  {r.name:{width}}  {r.figure:>14}  target {r.target:<16} {verdict}")
    print(f"\n{len(results) - missed} of {len(results)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
