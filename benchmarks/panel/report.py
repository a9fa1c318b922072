"""panel.json (everything measured) and panel.md (the tables) from the panel's results."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.panel.peers import RECIPES
from edgeml.measure import cpu_features
from edgeml.measure.machine import machine_info
from edgeml.measure.paired_timing import CLEARLY_FASTER, FASTER

PACKAGES = ("edgeml", "onnxruntime", "openvino", "nncf", "onnx", "torch", "transformers", "numpy")
FASTER_ABOVE = 1.02          # speed-ups within 2 % of each other count as a tie (edgeml's own selection margin)
INT8_WORTH = 1.2             # an INT8 build this much faster than FP32 is worth shipping when within budget


def header(args, command: str) -> dict:
    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None
    return {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(args.threads), "cpu": cpu_features.describe(), "threads": args.threads,
            "packages": {p: installed(p) for p in PACKAGES}, "budget": args.max_accuracy_drop,
            "tuning_budget": args.tuning_budget, "measure_seconds": args.measure_seconds,
            "samples": {"calibration": args.calibration, "evaluation": args.evaluation}}


def write(out: Path, header: dict, results: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        result["verdict"] = verdict(result)
        result["int8_pick"] = int8_pick(result)
    (out / "panel.json").write_text(json.dumps({"header": header, "models": results}, indent=1, default=str) + "\n")
    (out / "panel.md").write_text(markdown(header, results))


def best_peer(result: dict) -> tuple[str, float] | None:
    """The INT8 peer with the largest speed-up over ONNX Runtime FP32 among those within the budget."""
    peers = result.get("peers") or {}
    base = (peers.get("onnxruntime-fp32") or {}).get("p50_ms")
    within = [(name, base / p["p50_ms"]) for name, p in peers.items()
              if name != "onnxruntime-fp32" and p.get("status") == "ok" and base
              and p["quality_drop"] <= result["budget"]]
    return max(within, key=lambda x: x[1]) if within else None


def verdict(result: dict) -> dict:
    """edgeml's selection against the fastest peer within the budget. When the head-to-head timing ran
    (benchmarks.panel.head_to_head), that peer is the fastest side by side and "as fast" is judged there; else on
    the rows' speed-ups, each against its own run of the input model."""
    edgeml = result.get("edgeml") or {}
    if edgeml.get("status") != "ok":
        return {"selected": None, "within_budget": None, "speedup": None, "peer": None, "as_fast": None,
                "head_to_head": None}
    chosen = next((c for c in edgeml["candidates"] if c["name"] == edgeml["selected"]), {})
    peer = best_peer(result)
    speedup = (edgeml.get("paired_speedup") or {}).get("ratio") or chosen.get("speedup")
    as_fast = None if peer is None or speedup is None else speedup * FASTER_ABOVE >= peer[1]
    head = result.get("head_to_head") or {}
    if head.get("status") == "ok":
        name = min(head["peer_over_edgeml"], key=lambda n: head["p50_ms"][n])
        head = {"peer": name, **head["peer_over_edgeml"][name]}
        as_fast = not peer_faster(head)
    return {"selected": edgeml["selected"], "within_budget": edgeml.get("within_budget"), "speedup": speedup,
            "peer": None if peer is None else {"name": peer[0], "speedup": peer[1]}, "as_fast": as_fast,
            "head_to_head": head or None}


def int8_pick(result: dict) -> dict | None:
    """The run with `--precision int8` (INT8 candidates only; bf16 excluded): the row it selected, its quality
    drop, whether it is within budget and its speed-up over the original (from edgeml's alternating rounds when
    there, else the row's), and the search that made it (a -mixed or -calibrated row); and the fastest INT8 build
    of that run over FP32 whatever its drop (none with bf16 in its name, should the run list one), with whether it
    is at least INT8_WORTH faster and whether INT8 shipped: the selected row is an INT8 (or mixed) build within
    the budget and faster than the original (the 95% CI of the alternating rounds above 1, else its p50). None when
    not run."""
    run = result.get("edgeml_int8")
    if not run:
        return None
    if run.get("status") != "ok":
        return {"status": run.get("status"), "reason": run.get("reason")}
    chosen = next((c for c in run["candidates"] if c["name"] == run["selected"]), {})
    built = [c for c in run["candidates"] if c["precision"] == "int8" and "bf16" not in c["name"]
             and c["status"] == "ok" and c["speedup"]]
    best = max(built, key=lambda c: c["speedup"], default=None)
    paired = run.get("paired_speedup")
    faster = paired["ci95"][0] > 1.0 if paired else (chosen.get("speedup") or 0) > 1.0
    shipped = (str(chosen.get("precision")).startswith("int8") and chosen.get("role") != "reference"
               and bool(run.get("within_budget")) and faster)
    searches = run.get("searches") or {}
    found = next((f"{name}: {s['best']} ({s['trials']} trials, {s['stopped']})" for name, s in searches.items()
                  if s.get("row") and s["row"] == run["selected"]), None)
    return {"status": "ok", "selected": run["selected"], "quality_drop": chosen.get("quality_drop"),
            "within_budget": run.get("within_budget"), "found_by": found, "paired": paired is not None,
            "speedup": (paired or {}).get("ratio") or chosen.get("speedup"),
            "best_int8": None if best is None else {
                "name": best["name"], "speedup": best["speedup"], "quality_drop": best["quality_drop"],
                "within_budget": best["within_budget"], "worth_it": best["speedup"] >= INT8_WORTH,
                "shipped": shipped}}


def peer_faster(head: dict) -> bool:
    """Whether the peer is faster than edgeml side by side, by the rule edgeml's own selection applies between two
    candidates (edgeml.pipeline.selection): its speed-up's 95% CI is above FASTER, or its median speed-up is above
    CLEARLY_FASTER. `head`: the peer's p50 / edgeml's p50 over the rounds (ratio and CI), inverted here."""
    return 1 / head["ci95"][1] > FASTER or 1 / head["ratio"] > CLEARLY_FASTER


def _f(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _int8_cells(pick: dict | None) -> str:
    """The two INT8 cells of the per-model table: the INT8 pick, and the best INT8 build of that run."""
    if pick is None:
        return "- | -"
    if pick.get("status") != "ok":
        return _cell(f"edgeml {pick.get('status')}: {pick.get('reason')}") + " | -"
    budget = {True: "within budget", False: "over budget", None: "budget -"}[pick["within_budget"]]
    chosen = (f"{pick['selected']}, drop {_f(pick['quality_drop'], '.4f')}, {budget}, "
              f"{_f(pick['speedup'], '.2f')}" + ("x" if pick["speedup"] is not None else ""))
    best = pick["best_int8"]
    if best is None:
        return f"{chosen} | no INT8 build"
    verdict = ("INT8 shipped" if best["shipped"] else "INT8 not shipped") + (
        f", {INT8_WORTH}x or more" if best["worth_it"] else "")
    found = f"; found by {pick['found_by']}" if pick.get("found_by") else ""
    return (f"{chosen}{found} | {best['name']} {best['speedup']:.2f}x, drop {_f(best['quality_drop'], '.4f')} "
            f"({verdict})")


def _outcome(status: str | None, reason: str | None) -> str:
    if status == "ok":
        return "built"
    return _cell(f"{status}: {reason}" if reason else str(status))


def markdown(header: dict, results: list[dict]) -> str:
    machine, cpu = header["machine"], header["cpu"]
    packages = ", ".join(f"{k} {v}" for k, v in header["packages"].items() if v)
    lines = [
        "# edgeml on a panel of real models",
        "",
        "Written by `python -m benchmarks.panel` (`make panel`); see benchmarks/README.md. Quality drop is the "
        "budget's metric below the input model in ONNX Runtime FP32 on the evaluation data (negative: better); p50 "
        "is batch-1 latency; speed-up is against the input model (edgeml's rows: its `original` row; peers: the "
        "ONNX Runtime FP32 peer run); edgeml's selected row in the per-model table: from edgeml's own alternating "
        "rounds when the original was timed there with it. \"Side by side\" times edgeml's bundle and every peer "
        "model within the budget in one process, in alternating rounds (benchmarks/panel/head_to_head.py): above 1, "
        "edgeml is faster; \"as fast "
        "as it\" is judged there by the rule edgeml's selection applies between its own candidates (the peer is faster "
        "when its speed-up's 95% CI is above 1.02, or its median speed-up above 1.05), else on the speed-ups (a 2 % "
        "margin counts as a tie). Models marked *random* have "
        "random weights: they count for build robustness and speed, not accuracy.",
        "",
        f"- command: `{header['command']}`",
        f"- date: {header['date']}; total {header.get('seconds', '-')} s",
        f"- machine: {machine.get('cpu')}, {machine.get('logical_cores')} logical cores, {machine.get('os')}; "
        f"CPU features ({cpu.get('features_from')}): {', '.join(cpu.get('features') or []) or 'unknown'}; "
        f"INT8 scheme: {cpu.get('int8_scheme', {}).get('name')}",
        f"- threads: {header['threads']}; budget: {header['budget']} (max accuracy drop); tuning budget "
        f"{header['tuning_budget']}; {header['measure_seconds']} s timed per row; samples: "
        f"{header['samples']['calibration']} calibration, {header['samples']['evaluation']} evaluation per model",
        f"- packages: {packages}",
        "",
        "## Models",
        "",
        "| model | stands for | ONNX from | weights | source | sha256 | data |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        p = r.get("provenance") or {}
        source = f"{p.get('package', '-')}" + (f"=={p['version']}" if p.get("version") else "")
        if p.get("member"):
            source += f" `{p['member'].split('/')[-1]}`"
        lines.append(f"| {r['key']} | {_cell(r['covers'])} | {_cell(r['origin'])} | "
                     f"{'pretrained' if r['pretrained'] else 'random'} | {_cell(source)} | "
                     f"{p.get('sha256', '-')[:12]} | {_cell(r['data'])} |")
    lines += ["", "## Per model", "",
              "\"INT8 pick (BF16 excluded)\": a second edgeml run with `--precision int8` (INT8 candidates only, none "
              "that computes in bf16): the row it selected, its quality drop, within budget or not, its speed-up "
              "over the original. \"Best INT8 build\": that run's fastest INT8 build over FP32 (the original) "
              f"whatever its drop, marked \"{INT8_WORTH}x or more\" when it is, and \"INT8 shipped\" when the "
              "selected row is an INT8 (or mixed) build within the budget and faster than the original (95% CI of "
              "edgeml's alternating rounds above 1, else its p50); \"found by\": the accuracy-budget trial that made "
              "the selected row, the search's trials and why it stopped.",
              "",
              "| model | metric | edgeml selected | within budget | speed-up | fastest peer within budget | "
              "side by side: peer p50 / edgeml p50 (95% CI) | as fast as it | INT8 pick (BF16 excluded) | "
              "best INT8 build (any drop) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        v, edgeml = r.get("verdict", {}), r.get("edgeml") or {}
        if r.get("prepared"):
            selected = _cell(f"not run: {r['prepared']}")
        elif not edgeml:
            selected = "not run (--int8-only)"
        elif edgeml.get("status") != "ok":
            selected = _cell(f"edgeml {edgeml.get('status')}: {edgeml.get('reason')}")
        else:
            selected = v["selected"]
        peer, head = v.get("peer"), v.get("head_to_head")
        side = "-" if not head else f"{head['peer']} {head['ratio']:.2f}x ({head['ci95'][0]:.2f}-{head['ci95'][1]:.2f})"
        lines.append(f"| {r['key']} | {r.get('metric', '-')} | {selected} | {_f(v.get('within_budget'), '')} | "
                     f"{_f(v.get('speedup'), '.2f')}x | "
                     f"{'-' if not peer else peer['name'] + ' ' + format(peer['speedup'], '.2f') + 'x'} | "
                     f"{side} | {_f(v.get('as_fast'), '')} | {_int8_cells(r.get('int8_pick'))} |")
    picks = {r["key"]: r["int8_pick"] for r in results if (r.get("int8_pick") or {}).get("status") == "ok"}
    if picks:
        worth = {k: p for k, p in picks.items() if p["best_int8"] and p["best_int8"]["worth_it"]}
        lines += ["", f"INT8 pick: run on {len(picks)} model(s); its selection within budget on "
                  f"{sum(bool(p['within_budget']) for p in picks.values())}; an INT8 build at least {INT8_WORTH}x "
                  f"faster than FP32 existed on {len(worth)} ({', '.join(worth) or '-'}); of those, an INT8 or mixed "
                  f"build within the budget and faster than FP32 shipped on "
                  f"{sum(p['best_int8']['shipped'] for p in worth.values())} "
                  f"({', '.join(k for k, p in worth.items() if p['best_int8']['shipped']) or '-'})."]
    lines += ["", "## Every candidate", "",
              "Tool \"edgeml int8\": the run with `--precision int8`.", "",
              "| model | tool | candidate | result | quality drop | p50 ms | speed-up | build s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for tool, key in (("edgeml", "edgeml"), ("edgeml int8", "edgeml_int8")):
            for c in (r.get(key) or {}).get("candidates", []):
                name = c["name"] + (" **(selected)**" if c["selected"] else "")
                outcome = "reference" if c["role"] == "reference" else _outcome(c["status"], c["reason"])
                lines.append(f"| {r['key']} | {tool} | {name} | {outcome} | "
                             f"{_f(c['quality_drop'], '.4f')} | {_f(c['p50_ms'], '.2f')} | "
                             f"{_f(c['speedup'], '.2f')} | {_f(c['build_seconds'], '.1f')} |")
        base = ((r.get("peers") or {}).get("onnxruntime-fp32") or {}).get("p50_ms")
        for name, p in (r.get("peers") or {}).items():
            speedup = base / p["p50_ms"] if base and p.get("p50_ms") else None
            lines.append(f"| {r['key']} | peer | {name} | {_outcome(p['status'], p.get('reason'))} | "
                         f"{_f(p.get('quality_drop'), '.4f')} | {_f(p.get('p50_ms'), '.2f')} | {_f(speedup, '.2f')} | "
                         f"{_f(p.get('build_seconds'), '.1f')} |")
    lines += ["", "## Failures to fix", "",
              "Every failed edgeml candidate, failed edgeml run and failed peer, with its error line.", ""]
    for r in results:
        if r.get("prepared"):
            lines.append(f"- {r['key']}: panel could not prepare it: {r['prepared']}")
        for tool, key in (("edgeml", "edgeml"), ("edgeml --precision int8", "edgeml_int8")):
            edgeml = r.get(key) or {}
            if edgeml.get("status") == "failed":
                lines.append(f"- {r['key']}: {tool} run failed: {edgeml['reason']}")
            for c in edgeml.get("candidates", []):
                if c["status"] == "failed":
                    lines.append(f"- {r['key']}: {tool} {c['name']}: {c['reason']}")
            if edgeml.get("left_in_cwd"):
                lines.append(f"- {r['key']}: {tool} left files in its working folder: "
                             f"{', '.join(edgeml['left_in_cwd'])}")
        for name, p in (r.get("peers") or {}).items():
            if p.get("status") == "failed":
                lines.append(f"- {r['key']}: peer {name}: {p['reason']}")
    lines += ["", "## Peer recipes", ""] + [f"- {name}: {text}" for name, text in RECIPES.items()]
    return "\n".join(lines) + "\n"
