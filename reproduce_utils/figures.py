"""Figures: PNG curves from curve rows (curves_<budget>.csv), the mean over seeds with its 95% t-interval shaded
and every seed as a thin line, one panel per task.
"""

import math
import textwrap

import numpy as np

from .collect import steps_label
from .stats import t_interval


def series_band(series):
    """Per step over the seeds' series [{step: value}]: (steps, mean, 95% t-interval low, high); the
    interval is nan where fewer than two seeds have a value."""
    steps = sorted({step for one in series for step in one})
    stats = [t_interval([one.get(step) for one in series]) for step in steps]
    return steps, *(np.array([st[i] for st in stats]) for i in range(3))


def plot_panels(path, title, ylabel, panels, cols=3, marks=None):
    """panels: {panel title: {label: [{step: value} of each seed]}}; one panel per title (`cols` to a row),
    per label a line of the mean over its seeds with a shaded 95% t-interval, and each seed as a thin line; the
    y axis spans the seeds' values (the band may leave it); marks: {panel title: steps to draw a dotted line at}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(panels)
    cols = min(cols, len(names))
    rows = math.ceil(len(names) / cols)
    labels = list(dict.fromkeys(label for name in names for label in panels[name]))
    ncol = max(1, min(len(labels), 2 * cols))
    legend_height = 0.25 * math.ceil(len(labels) / ncol) + 0.2
    height = 3.4 * rows + 0.7 + legend_height
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, height), squeeze=False)
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    styles = {label: "-" if i < 10 else "--" for i, label in enumerate(labels)}
    for ax, name in zip(axes.flat, names):
        seeds = {label: [one for one in runs if one] for label, runs in panels[name].items()}
        if not any(seeds.values()):
            ax.set_title(f"{name} (no data)")
            continue
        values = [v for series in seeds.values() for one in series for v in one.values() if np.isfinite(v)]
        for label, series in seeds.items():
            if not series:
                continue
            for one in series:
                ax.plot(list(one), list(one.values()), styles[label], color=colours[label], linewidth=0.6, alpha=0.45)
            steps, mean, low, high = series_band(series)
            ax.plot(steps, mean, styles[label], color=colours[label], linewidth=1.8)
            ax.fill_between(steps, low, high, alpha=0.2, color=colours[label], linewidth=0)
        if values and max(values) > min(values):  # the seeds set the scale: a 2-seed interval can be 10x wider
            margin = 0.08 * (max(values) - min(values))
            ax.set_ylim(min(values) - margin, max(values) + margin)
        for step in (marks or {}).get(name, ()):
            ax.axvline(step, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(name)
        ax.set_xlabel("environment steps")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(steps_label))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles = [matplotlib.lines.Line2D([], [], color=colours[lb], linestyle=styles[lb]) for lb in labels]
    counts = {lb: sorted({len([o for o in panels[n].get(lb, []) if o]) for n in names} - {0}) for lb in labels}
    legend = [f"{lb} (n={'/'.join(map(str, counts[lb]))})" for lb in labels]
    drawn = fig.legend(handles, legend, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 13)), fontsize=10)  # narrow figures: wrapped
    legend_drawn = drawn.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi + 0.05  # inches, measured
    fig.tight_layout(rect=(0, legend_drawn / height, 1, 1))  # tight_layout makes room for the suptitle itself
    fig.savefig(path, dpi=100)
    plt.close(fig)


BAND = "mean over seeds with its 95% t-interval; thin lines: each seed"


def tag_panels(curves, tag, by_tag=False):
    """{panel: {variant: [{step: value} per seed]}} of one tag from curve rows (curves_<budget>.csv): a
    panel per task, or per task and tag (by_tag)."""
    panels = {}
    for r in curves:
        if r.get(tag) is None:
            continue
        panel = f"{r['env']}: {tag.split('/')[-1]}" if by_tag else r["env"]
        seeds = panels.setdefault(panel, {}).setdefault(r["variant"], {})
        seeds.setdefault(r["seed"], {})[r["step"]] = r[tag]
    return {p: {v: list(s.values()) for v, s in methods.items()} for p, methods in panels.items()}


def figures(out_dir, stem, title, curves, tags, marks=None):
    """One PNG per tag from curve rows (curves_<budget>.csv), every seed drawn; returns their paths."""
    written = []
    for tag in tags:
        panels = tag_panels(curves, tag)
        if not panels:
            continue
        name = "curves" if tag == "charts/episodic_return" else tag.split("/")[-1]
        file = out_dir / f"{name}_{stem}.png"
        plot_panels(file, f"{title}: {tag.split('/')[-1]}, {BAND}", "episodic return" if name == "curves" else name,
                    panels, marks=marks)
        written.append(file)
    return written


def metrics_grid(path, title, curves, tags):
    """One PNG of the plasticity curves: a panel per task and metric (a task's metrics in rows of
    three), a line per method, from curve rows."""
    panels = {}
    for tag in tags:
        panels.update(tag_panels(curves, tag, by_tag=True))
    order = [f"{env}: {t.split('/')[-1]}" for env in dict.fromkeys(r["env"] for r in curves) for t in tags]
    plot_panels(path, title, "", {p: panels[p] for p in order if p in panels})
    return path
