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
    predicted = [r for r in run["rows"] if r["status"] == "predicted"]
    if predicted:
        p = predicted[0]["predicted"]
        lines += ["", f"Predicted for {p['device']} (profile `{p['profile']}`), not measured: the device builds and "
                  "runs these engines. Quality is measured here on the weights the engine computes with (see each "
                  "build's method). Decode: the bytes read per token (weights, KV cache at the average context) "
                  f"over {p['memory_bytes_per_s'] / 1e9:.1f} GB/s (the profile's bandwidth times its memory "
                  "efficiency); time to first token: the larger of the prompt's multiply-adds over "
                  f"{p['compute_ops_per_s'] / 1e12:.1f} TOPS (FP16 peak times the compute efficiency) and one read of "
                  f"the weights; plus {p['kernels_per_layer']} kernel launches per layer. The efficiency factors are "
                  f"{p['efficiency_basis']}. `MB`: the engine's weights."]
    failed = [r for r in run["rows"] if r["status"] not in ("ok", "predicted")]
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
    if row["status"] not in ("ok", "predicted"):
        return head + [DASH] * (len(HEADER) - 4) + [row["status"]]
    m = row["metrics"]
    budget = DASH if row["within_budget"] is None else ("within budget" if row["within_budget"] else "over budget")
    if row["status"] == "predicted":
        p = row["predicted"]
        speed = [*(f"{p['ttft_ms'][k]:.1f} (predicted)" if k in p["ttft_ms"] else DASH for k in ("128", "512")),
                 f"{p['decode_tokens_per_s']:.1f} (predicted)", DASH]
        budget = f"predicted, {budget}"
    else:
        ttft, decode = row["latency"]["ttft_ms"], row["latency"]["decode_tokens_per_s"]
        speed = [*(f"{ttft[k]['median']:.1f}" if k in ttft else DASH for k in ("128", "512")),
                 f"{decode['median']:.1f} ({decode['ci95'][0]:.1f}–{decode['ci95'][1]:.1f})",
                 f"{row['latency']['fraction_of_floor']:.0%}" if "fraction_of_floor" in row["latency"] else DASH]
    return head + [
        mb(row["size_bytes"]), DASH if row.get("peak_memory_bytes") is None else mb(row["peak_memory_bytes"]),
        f"{m['perplexity']:.3f} ({m['perplexity_ci95'][0]:.3f}–{m['perplexity_ci95'][1]:.3f})",
        DASH if row["role"] == "reference" else
        f"{m['ppl_increase']:+.2%} ({m['ppl_increase_ci95'][0]:+.2%}–{m['ppl_increase_ci95'][1]:+.2%})",
        f"{m['top1_agreement']:.1%}", f"{m['kl']:.4f}", f"{m['same_answers']:.0%}", *speed,
        "reference" if row["role"] == "reference" else budget]
