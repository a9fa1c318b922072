"""The markdown report of a language-model run record: quality against the original, speed measured here, and the
share of the bandwidth floor each build's decode reaches."""

from __future__ import annotations

from edgeml.report.format import DASH, mb
from edgeml.report.markdown import markdown_table

HEADER = ["build", "runtime", "weights", "MB", "peak MB", "perplexity (95% CI)", "increase (95% CI)", "top-1 agree",
          "KL", "same answers", "TTFT 128 ms", "TTFT 512 ms", "decode tok/s (95% CI)", "of floor", "status"]


def render_language_model(run: dict) -> str:
    source, data, selection = run["source"], run["data"], run["selection"]
    lines = [f"# edgeml: {source['architecture']} ({_params(source['parameters'])}) for target `{run['target']}`",
             "", f"Selected **{selection['candidate']}**: {selection['reason']}.", ""]
    lines += markdown_table(HEADER, [_cells(r) for r in run["rows"]])
    protocol = data["protocol"]
    machine = run["machine"]
    lines += ["", f"Perplexity: {data['evaluation']['documents']} documents of {data['evaluation']['source']}, the "
              f"first {protocol['window_tokens']} tokens of each; the 95% CIs resample documents (the increase is "
              "paired: the same documents for both). Top-1 agreement and KL (over the original's 64 most likely "
              "tokens and the rest) compare every position's next-token prediction with the original's. Same "
              f"answers: greedy answers ({protocol['answer_tokens']} tokens) to {len(protocol['prompts'])} fixed "
              "prompts identical to the original's.",
              "", f"Speed measured here: {machine['cpu']}, {machine['threads']} threads, batch 1, greedy. Time to "
              f"first token for prompts of {' and '.join(map(str, protocol['prompt_lengths']))} tokens; decode "
              f"tokens/s over {protocol['new_tokens']} new tokens; the median of {protocol['runs']} runs after a "
              "warm-up (95% CI by bootstrap).",
              "", f"The floor: decode reads every weight once per token, so it cannot beat the memory bandwidth "
              f"measured here ({data['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, a large copy by as many threads, bytes "
              "read + written) over the bytes of weights; `of floor` is the share of that limit each build reaches "
              "(above 100 %: the weights partly fit in the CPU's caches). Each timed run has a prompt of its own, so "
              "a runtime that caches a prompt's prefix is not timed on a prompt it has seen. `peak MB`: how far a "
              "fresh process's peak resident memory rises as it loads the build and generates after the longest "
              "prompt (counted from after the runtime's package is imported)."]
    failed = [r for r in run["rows"] if r["status"] != "ok"]
    if failed:
        lines += ["", "Not built or not run:", ""] + [f"- {r['name']}: {r['status']}: {r['reason']}" for r in failed]
    if run.get("warnings"):
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in run["warnings"]]
    return "\n".join(lines) + "\n"


def _params(count: int | None) -> str:
    return DASH if not count else f"{count / 1e6:.1f}M parameters"


def _cells(row: dict) -> list[str]:
    name = f"**{row['name']}** ✓" if row["selected"] else row["name"]
    head = [name, row["backend"], row["precision"]]
    if row["status"] != "ok":
        return head + [DASH] * (len(HEADER) - 4) + [row["status"]]
    m, speed = row["metrics"], row["latency"]
    ttft = speed["ttft_ms"]
    decode = speed["decode_tokens_per_s"]
    budget = DASH if row["within_budget"] is None else ("within budget" if row["within_budget"] else "over budget")
    return head + [
        mb(row["size_bytes"]), DASH if row.get("peak_memory_bytes") is None else mb(row["peak_memory_bytes"]),
        f"{m['perplexity']:.3f} ({m['perplexity_ci95'][0]:.3f}–{m['perplexity_ci95'][1]:.3f})",
        DASH if row["role"] == "reference" else
        f"{m['ppl_increase']:+.2%} ({m['ppl_increase_ci95'][0]:+.2%}–{m['ppl_increase_ci95'][1]:+.2%})",
        f"{m['top1_agreement']:.1%}", f"{m['kl']:.4f}", f"{m['same_answers']:.0%}",
        *(f"{ttft[k]['median']:.1f}" if k in ttft else DASH for k in ("128", "512")),
        f"{decode['median']:.1f} ({decode['ci95'][0]:.1f}–{decode['ci95'][1]:.1f})",
        f"{speed['fraction_of_floor']:.0%}" if "fraction_of_floor" in speed else DASH,
        "reference" if row["role"] == "reference" else budget]
