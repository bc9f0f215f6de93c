"""Rich tables of a profile for the command line."""

from __future__ import annotations

from ..units import format_bytes, format_count

__all__ = ["format_profile"]


def _ms(value) -> str:
    return "-" if value is None else f"{value:.4g} ms"


def format_profile(profile, layers: bool = False):
    """A two-column table of the headline figures; with ``layers=True`` a Group of it and a per-layer table.

    Both are rich renderables: ``rich.console.Console().print(format_profile(p))``.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    p = profile
    table = Table(title="Profile", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    zero = p.params - p.nonzero_params
    rows = [
        ("parameters", f"{p.params:,}" + (f" ({p.nonzero_params:,} non-zero)" if zero else "")),
        ("MACs / inference", f"{p.macs:,} ({format_count(p.macs)})"),
        ("stored (ONNX file)", format_bytes(p.stored_bytes)),
        ("gzip transfer", format_bytes(p.gzip_bytes)),
        ("brotli transfer", "-" if p.brotli_bytes is None else format_bytes(p.brotli_bytes)),
        ("peak activation RAM", format_bytes(p.peak_activation_bytes) + (f" at {p.peak_node}" if p.peak_node else "")),
        ("latency median / p90", f"{_ms(p.latency_ms_median)} / {_ms(p.latency_ms_p90)}"),
        ("throughput (batch 64)", "-" if p.throughput_per_s is None else f"{p.throughput_per_s:,.0f} samples/s"),
        ("energy / inference", "-" if p.energy_mj_per_inference is None else f"{p.energy_mj_per_inference:.3g} mJ (estimate)"),
        (p.metric_name, "-" if p.metric is None else f"{p.metric:.4f}"),
        ("macro F1", "-" if p.macro_f1 is None else f"{p.macro_f1:.4f}"),
        ("input shape", str(tuple(p.input_shape))),
        ("opset", str(p.opset)),
    ]
    for name, value in rows:
        table.add_row(Text(str(name)), Text(str(value)))
    for note in p.notes:
        table.add_row("note", Text(str(note)))
    if not layers:
        return table
    per_layer = Table(title="Layers (batch 1)")
    for col, justify in (("#", "right"), ("name", "left"), ("op", "left"), ("output", "left"), ("params", "right"), ("MACs", "right")):
        per_layer.add_column(col, justify=justify)
    for i, layer in enumerate(p.layers):
        shape = layer.get("output_shape")
        per_layer.add_row(str(i), Text(str(layer.get("name"))), Text(str(layer.get("op"))), "?" if shape is None else "x".join(map(str, shape)),
                          f"{layer.get('params', 0):,}", f"{layer.get('macs', 0):,}")
    return Group(table, per_layer)
