"""Plotly figures of the study's tables (notebooks and app). Needs the ``notebooks`` or ``app`` extra."""
from __future__ import annotations

from maskx_study.report import ARROW, DIRECTIONS, PAPER


def ap_bars(rows: list[dict], table: str, title: str, set_name: str = "B"):
    """Grouped bars: mask AP on ``set_name`` per method and direction (error bars: std over seeds),
    with the paper's numbers as markers on a second axis (different data: compare orderings)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=[ARROW[d] for d in DIRECTIONS])
    k = 0 if set_name == "B" else 1
    for j, d in enumerate(DIRECTIONS):
        labels = [r["label"] for r in rows]
        ms = [r[f"{d}_{set_name}"] for r in rows]
        fig.add_trace(go.Bar(x=labels, y=[m[0] if m else None for m in ms], name=f"maskx ({ARROW[d]})",
                             error_y=dict(type="data", array=[m[1] if m else 0 for m in ms]),
                             text=[f"n={m[2]}" if m else "pending" for m in ms], marker_color="#1f77b4",
                             showlegend=j == 0), row=1, col=j + 1)
        paper = [PAPER.get(table, {}).get(lab) for lab in labels]
        fig.add_trace(go.Scatter(x=labels, y=[p[2 * j + k] if p and p[2 * j + k] is not None else None for p in paper],
                                 mode="markers", marker=dict(symbol="diamond", size=10, color="#ff7f0e"),
                                 name="paper (R-50, COCO)", showlegend=j == 0), row=1, col=j + 1)
    fig.update_layout(title=title, yaxis_title=f"mask AP on {set_name}", barmode="group", height=450)
    return fig


def results_table(rows: list[dict], table: str):
    """The table as a plotly Table: ours (mean ± std) beside the paper's, both directions."""
    import plotly.graph_objects as go

    from maskx_study.report import fmt

    header = ["method"]
    cols: list[list] = [[r["label"] for r in rows]]
    for j, d in enumerate(DIRECTIONS):
        for s, k in (("B", 0), ("A", 1)):
            header += [f"{ARROW[d]} AP on {s}", "paper"]
            cols.append([fmt(r[f"{d}_{s}"], True) for r in rows])
            cols.append([(lambda p: "" if p is None or p[2 * j + k] is None else f"{p[2 * j + k]:.1f}")(
                PAPER.get(table, {}).get(r["label"])) for r in rows])
    return go.Figure(go.Table(header=dict(values=header), cells=dict(values=cols)))


def fig3_scatter(points: list[dict]):
    """Figure 3: relative AP gain on B (transfer over class-agnostic) vs mask annotations per A class."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(
        x=[p["masks_per_A_class"] for p in points], y=[p["relative_gain_pct"] for p in points], mode="markers",
        text=[p["split"] for p in points], marker=dict(size=9, color=[p["A_size"] for p in points],
                                                        colorscale="Viridis", colorbar=dict(title="|A|"))))
    fig.add_hline(y=0, line_dash="dot")
    fig.update_layout(title="Random A/B splits (paper Figure 3)", xaxis_title="average mask annotations per class in A",
                      yaxis_title="relative change of mask AP on B (%)", height=450)
    return fig
