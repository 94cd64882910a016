"""validation.md, validation.json and the figures (EOS curves, relative errors)."""

import json
import math
import os

import numpy as np

from ..io import atomic_write_text
from ..plots import pyplot, save_figure


def table_lines(results: dict) -> list[str]:
    """The Markdown table of every property (also what the terminal shows)."""
    lines = [
        "| system | property | model | reference | error | relative error | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for system, content in results.items():
        for name, entry in content["properties"].items():
            unit = f" {entry['unit']}" if entry["unit"] else ""
            reference = entry["reference"]
            lines.append(
                f"| {system} | {name} | {_fmt(entry['model'])}{unit} | "
                f"{_fmt(reference)}{unit if reference is not None else ''} | "
                f"{_fmt(entry['error'], signed=True)} | "
                f"{_percent(entry['relative_error'])} | {_verdict(entry)} |"
            )
    return lines


def md_lines(results: dict) -> list[str]:
    lines = [
        "| system | stable | steps | mean T (K) | shortest distance (Å) | "
        "max energy drift (eV/atom) | max pressure (GPa) | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system, content in results.items():
        md = content.get("md")
        if md:
            lines.append(
                f"| {system} | {'yes' if md['stable'] else 'NO'} | {md['steps']} | "
                f"{md['temperature']:.0f} | {md['min_distance']:.2f} | "
                f"{md['max_energy_drift']:.3f} | {md['max_pressure']:.1f} | "
                f"{'; '.join(md['reasons']) or '-'} |"
            )
    return lines if len(lines) > 2 else []


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    text = f"{value:+.4g}" if signed else f"{value:.4g}"
    return text


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:+.2f} %"


def _verdict(entry: dict) -> str:
    target = entry.get("target")
    if not target:
        return ""
    limit = (
        f"{100 * target['limit']:g} %"
        if target["kind"] == "relative"
        else f"{target['limit']:g} {entry['unit']}"
    )
    return f"{'ok' if entry['within_target'] else 'MISSED'} (±{limit})"


def write_report(results: dict, header: dict, folder: str) -> dict[str, str]:
    """All outputs into ``folder``; returns their paths by kind."""
    os.makedirs(folder, exist_ok=True)
    paths = {
        "json": os.path.join(folder, "validation.json"),
        "markdown": os.path.join(folder, "validation.md"),
        "eos": os.path.join(folder, "eos.png"),
        "errors": os.path.join(folder, "relative_errors.png"),
    }
    document = {**header, "systems": results}
    atomic_write_text(paths["json"], json.dumps(document, indent=2) + "\n")
    text = [
        f"# Validation of {header['model']}",
        "",
        f"Reference: {header['reference']}",
        "",
        *table_lines(results),
        "",
    ]
    md = md_lines(results)
    if md:
        text += ["## MD stability (model)", "", *md, ""]
    text += [
        f"![equations of state]({os.path.basename(paths['eos'])})",
        "",
        f"![relative errors]({os.path.basename(paths['errors'])})",
        "",
    ]
    atomic_write_text(paths["markdown"], "\n".join(text))
    eos_figure(results, paths["eos"])
    errors_figure(results, paths["errors"])
    return paths


def eos_figure(results: dict, path: str) -> None:
    """E(V) per atom, relative to each curve's minimum: points and the fitted
    curve's minimum, model and reference, one panel per system."""
    plt = pyplot()
    count = max(1, len(results))
    columns = min(count, 4)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.8 * columns, 3.4 * rows), squeeze=False
    )
    for axis, (system, content) in zip(axes.flat, results.items()):
        for label, style in (("model", "o-"), ("reference", "s--")):
            curve = content["eos"].get(label)
            if not curve:
                continue
            volumes = np.asarray(curve["volume_per_atom"])
            energies = np.asarray(curve["energy_per_atom"]) * 1000
            axis.plot(
                volumes,
                energies - energies.min(),
                style,
                markersize=4,
                label=f"{label}: B = {curve['fit_bulk_modulus']:.0f} GPa",
            )
        axis.set_title(system)
        axis.set_xlabel("volume (Å³/atom)")
        axis.set_ylabel("E - E_min (meV/atom)")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(results) :]:
        axis.axis("off")
    figure.tight_layout()
    save_figure(figure, path)


def errors_figure(results: dict, path: str) -> None:
    """Relative error of every property with a reference (horizontal bars, %)."""
    plt = pyplot()
    labels, values, colours = [], [], []
    for system, content in results.items():
        for name, entry in content["properties"].items():
            if entry["relative_error"] is None:
                continue
            labels.append(f"{system} {name}")
            values.append(100 * entry["relative_error"])
            missed = entry["within_target"] is False
            colours.append("tab:red" if missed else "tab:blue")
    figure, axis = plt.subplots(figsize=(7.0, 0.8 + 0.24 * max(1, len(labels))))
    positions = np.arange(len(labels))
    axis.barh(positions, values, color=colours)
    axis.set_yticks(positions)
    axis.set_yticklabels(labels, fontsize=7)
    axis.invert_yaxis()
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel("relative error, model against reference (%)")
    axis.set_title("red: outside its target; blue: within it, or no target", fontsize=9)
    axis.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)
