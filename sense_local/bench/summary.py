"""The bench's figures per method and kind (medians over tasks), and the table it prints of them."""
from __future__ import annotations

import statistics

from .llama_server import PEER_PREFIX
from .rows import NEAR_TIE, RunRow
from .tasks import KINDS


def summarise(rows: list[RunRow]) -> dict:
    summary: dict = {}
    server = {r.task: r for r in rows if r.method == PEER_PREFIX and not r.error and r.tok_per_s > 0}
    for method in dict.fromkeys(r.method for r in rows):
        summary[method] = {}
        for kind in KINDS:
            sel = [r for r in rows if r.method == method and r.kind == kind]
            if not sel:
                continue
            ok = [r for r in sel if not r.error]
            prefills = [r.prefill_tok_per_s for r in ok if r.prefill_tok_per_s]
            summary[method][kind] = {
                "tau": round(statistics.median(r.tau for r in ok), 3) if ok else None,
                "speedup": round(statistics.median(r.speedup_vs_ar for r in ok), 3) if ok else None,
                "tok_per_s": round(statistics.median(r.tok_per_s for r in ok), 1) if ok else None,
                "identical": round(sum(r.identical_to_ar for r in sel) / len(sel), 3),
                "failures": len(sel) - len(ok),
                "lossless_violations": sum(
                    1 for r in ok if not r.identical_to_ar and r.divergence_gap is not None and r.divergence_gap >= NEAR_TIE
                ),
            }
            if prefills:
                summary[method][kind]["prefill_tok_per_s"] = round(statistics.median(prefills), 1)
            # decode speed over plain llama-server's on the same task (median over the kind's tasks)
            vs_server = [r.tok_per_s / server[r.task].tok_per_s for r in ok if r.task in server]
            if vs_server:
                summary[method][kind]["vs_llama_server"] = round(statistics.median(vs_server), 3)
            pre = [r.prefill_tok_per_s / server[r.task].prefill_tok_per_s for r in ok
                   if r.prefill_tok_per_s and r.task in server and server[r.task].prefill_tok_per_s]
            if pre:
                summary[method][kind]["prefill_vs_llama_server"] = round(statistics.median(pre), 3)
            ceilings = [r.copy_ceiling for r in ok if r.copy_ceiling is not None]
            if ceilings:
                summary[method][kind]["copy_ceiling"] = round(statistics.median(ceilings), 3)
            scored = [r for r in ok if r.mean_logprob is not None]
            if scored:
                summary[method][kind]["mean_logprob"] = round(statistics.mean(r.mean_logprob for r in scored), 4)
                summary[method][kind]["chrf_vs_ar"] = round(statistics.mean(r.chrf_vs_ar for r in scored), 2)
                answers = [r.answer_ok for r in scored if r.answer_ok is not None]
                if answers:
                    summary[method][kind]["answer_rate"] = round(sum(answers) / len(answers), 3)
    return summary


def rep_spread(rows: list[RunRow]) -> dict[str, float]:
    """The bench's own resolution: per method, the median over tasks of how far a later rep's tok/s
    strayed from the first's on the same task (|later / first - 1|, the largest where more than
    two reps ran). A per-kind bar finer than this is decided by the machine's noise, not the
    method. Methods with one rep (or none timed) are left out."""
    spread: dict[str, list[float]] = {}
    for r in rows:
        speeds = [s for s in (r.tok_per_s_reps or []) if s > 0]
        if len(speeds) >= 2:
            spread.setdefault(r.method, []).append(max(abs(s / speeds[0] - 1.0) for s in speeds[1:]))
    return {m: round(statistics.median(v), 4) for m, v in spread.items()}


def format_table(summary: dict) -> str:
    server = any("vs_llama_server" in s for kinds in summary.values() for s in kinds.values())
    lines = [f"{'method':<26} {'kind':<9} {'tau':>6} {'speedup':>8} {'tok/s':>7} {'ident.':>7} {'fail':>5} {'gap>=.25':>8}"
             + (f" {'vs server':>9}" if server else "")]
    for method, kinds in summary.items():
        for kind, s in kinds.items():
            tau = f"{s['tau']:.2f}" if s["tau"] else "-"
            sp = f"{s['speedup']:.2f}x" if s["speedup"] is not None else "-"
            tps = f"{s['tok_per_s']:.1f}" if s["tok_per_s"] is not None else "-"
            vs = f"{s['vs_llama_server']:.3f}x" if "vs_llama_server" in s else "-"
            lines.append(
                f"{method:<26} {kind:<9} {tau:>6} {sp:>8} {tps:>7} {s['identical']:>7.2f} {s['failures']:>5} "
                f"{s['lossless_violations']:>8}" + (f" {vs:>9}" if server else "")
            )
    prefill = [(kind, s) for kind, s in summary.get("ar", {}).items() if "prefill_vs_llama_server" in s]
    if prefill:
        theirs = summary.get(PEER_PREFIX, {})
        lines.append("fresh prefill, ours vs plain llama-server (prompt tok/s, median): " + ", ".join(
            f"{kind} {s['prefill_tok_per_s']:.0f} vs {theirs.get(kind, {}).get('prefill_tok_per_s', 0):.0f} "
            f"({s['prefill_vs_llama_server']:.3f}x)" for kind, s in prefill))
    ceilings = {kind: s["copy_ceiling"] for kind, s in summary.get("ar", {}).items() if "copy_ceiling" in s}
    if ceilings:
        lines.append("copy ceiling (tau of an oracle copying from prompt, output and documents after the last "
                     "token; exact acceptance, free verification): "
                     + ", ".join(f"{kind} {c:.2f}" for kind, c in ceilings.items()))
    quality = [(method, kind, s) for method, kinds in summary.items() for kind, s in kinds.items() if "mean_logprob" in s]
    if quality:
        lines.append(f"{'quality':<20} {'kind':<9} {'log-prob':>9} {'chrF/ar':>8} {'answers':>8}")
        for method, kind, s in quality:
            answers = f"{s['answer_rate']:.2f}" if "answer_rate" in s else "-"
            lines.append(f"{method:<20} {kind:<9} {s['mean_logprob']:>9.3f} {s['chrf_vs_ar']:>8.1f} {answers:>8}")
    return "\n".join(lines)
