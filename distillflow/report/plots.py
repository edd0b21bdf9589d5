"""Report figures drawn with matplotlib (Agg, no pyplot state) and returned as PNG data URIs.

    uri = loss_curve(log_history)        # "data:image/png;base64,..." or None without data
"""

from __future__ import annotations

import base64
import io
import math

__all__ = ["score_histograms", "usage_chart", "loss_curve", "retention_chart"]

PALETTE = ["#2563eb", "#f97316", "#16a34a", "#db2777", "#7c3aed", "#0891b2", "#ca8a04", "#64748b"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)


def score_histograms(scores: dict[str, dict[str, list[float]]], scales: dict[str, tuple[float, float]]) -> str | None:
    """``scores[judge_id][teacher]`` -> one panel per judge, one bar series per teacher."""
    judges = [j for j, per in scores.items() if any(per.values())]
    if not judges:
        return None
    fig = _figure(min(4.2 * len(judges), 12), 2.8)
    axes = fig.subplots(1, len(judges), squeeze=False)[0]
    for ax, jid in zip(axes, judges):
        per = {t: v for t, v in scores[jid].items() if v}
        values = [x for v in per.values() for x in v]
        lo, hi = scales.get(jid) or (min(values), max(values))
        integral = all(float(x).is_integer() for x in values) and hi - lo <= 20
        if integral:
            edges = [lo - 0.5 + i for i in range(int(hi - lo) + 2)]
        else:
            edges = [lo + (hi - lo) * i / 10 for i in range(11)] if hi > lo else [lo - 0.5, lo + 0.5]
        ax.hist(list(per.values()), bins=edges, label=list(per), color=PALETTE[: len(per)], rwidth=0.85)
        ax.set_title(f"{jid} scores", fontsize=10)
        ax.set_xlabel("score")
        ax.set_ylabel("answers")
        if integral:
            ax.set_xticks(range(int(lo), int(hi) + 1))
        ax.legend(fontsize=8, frameon=False)
        _style(ax)
    return _png(fig)


def usage_chart(teachers: dict[str, dict]) -> str | None:
    """Tokens (input + output, stacked) and estimated cost per teacher."""
    names = [n for n, t in teachers.items() if (t.get("input_tokens") or 0) + (t.get("output_tokens") or 0) > 0]
    if not names:
        return None
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig = _figure(9, 0.6 + 0.45 * max(3, len(names)))
    ax_tok, ax_cost = fig.subplots(1, 2)
    inp = [teachers[n].get("input_tokens") or 0 for n in names]
    outp = [teachers[n].get("output_tokens") or 0 for n in names]
    ax_tok.barh(names, inp, color=PALETTE[0], label="input")
    ax_tok.barh(names, outp, left=inp, color=PALETTE[1], label="output")
    ax_tok.set_title("tokens", fontsize=10)
    ax_tok.legend(fontsize=8, frameon=False)
    ax_tok.invert_yaxis()
    cost = [teachers[n].get("cost_usd") or 0 for n in names]
    ax_cost.barh(names, cost, color=PALETTE[2])
    ax_cost.set_title("estimated cost (USD)", fontsize=10)
    ax_cost.xaxis.set_major_locator(MaxNLocator(4))
    ax_cost.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"${x:.4g}"))
    if not any(cost):  # local teachers, or no prices given: say so instead of a $-0.03..$0.03 axis
        ax_cost.set_xlim(0, 1)
        ax_cost.set_xticks([])
        ax_cost.text(0.5, 0.5, "$0: local teachers or no prices set", ha="center", va="center", fontsize=9,
                     color="#64748b", transform=ax_cost.transAxes)

    ax_tok.xaxis.set_major_locator(MaxNLocator(5))
    ax_cost.invert_yaxis()
    ax_cost.set_yticklabels([])
    for ax in (ax_tok, ax_cost):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def loss_curve(log_history: list[dict]) -> str | None:
    """Training loss (and eval loss where logged) against the optimizer step."""
    train = [(e.get("step"), e["loss"]) for e in log_history if _num(e.get("loss")) and e.get("step") is not None]
    evals = [(e.get("step"), e["eval_loss"]) for e in log_history if _num(e.get("eval_loss")) and e.get("step") is not None]
    if not train and not evals:
        return None
    fig = _figure(7, 3)
    ax = fig.subplots()
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], color=PALETTE[0], label="train loss",
                marker="o" if len(train) < 30 else None, markersize=3)
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], color=PALETTE[1], label="eval loss", marker="s", markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    return _png(fig)


def retention_chart(metrics: list[dict]) -> str | None:
    """Base and trained student as a share of the teacher, per metric (100% = the teacher)."""
    rows = [m for m in metrics if m.get("retention") is not None or m.get("base_retention") is not None]
    if not rows:
        return None
    fig = _figure(7, 0.8 + 0.5 * len(rows))
    ax = fig.subplots()
    labels = [m["label"] if len(m["label"]) <= 40 else m["label"][:39] + "…" for m in rows]
    y = list(range(len(rows)))
    base = [100 * (m.get("base_retention") or 0) for m in rows]
    student = [100 * (m.get("retention") or 0) for m in rows]
    ax.barh([i - 0.2 for i in y], base, height=0.38, color="#94a3b8", label="base student")
    ax.barh([i + 0.2 for i in y], student, height=0.38, color=PALETTE[0], label="trained student")
    ax.axvline(100, color="#0f172a", linewidth=1, linestyle="--")
    ax.text(100, -0.75, " teacher", fontsize=8, va="bottom")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("% of the teacher")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlim(0, max(110, *base, *student) * 1.05)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
