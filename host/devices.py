"""The published devices and device models as the user sees them: the table, the summary,
and the jobs of `xbar devices` (list, show, fit, plot), shared with `xbar demo`. The
models themselves, and the data, are `xbar.training.devices`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xbar.training.devices.device_model import DeviceModel, fit
from xbar.training.devices.ivdata import IVCurves, read_iv
from xbar.training.devices.published import find_published, load_published
from xbar.training.devices.usability import analyse


def device_rows() -> list[dict[str, Any]]:
    rows = []
    for device in load_published():
        result = analyse(device.curves)
        rows.append(
            {
                "id": device.short_id,
                "name": device.name,
                "material": device.material,
                "sigma": result.sigma,
                "monotonicity": result.monotonicity,
                "usability": result.usability,
            }
        )
    return rows


def print_device_table(rows: list[dict[str, Any]]) -> None:
    """The table within 100 columns: the long device names fold onto a second line."""
    from xbar.host.console import print_table

    print_table(
        ["id", "material", "sigma", "monot.", "usability", "device (fabrication conditions)"],
        [
            [
                r["id"],
                r["material"],
                f"{r['sigma']:.4f}",
                f"{r['monotonicity']:.2f}",
                f"{r['usability']:.4f}",
                r["name"],
            ]
            for r in rows
        ],
        numeric=(2, 3, 4),
    )


def preset_origin(name: str, model: DeviceModel) -> str | None:
    """Which published device a preset or an id stands for: "pvk-30, 1.8um_length_..."."""
    stem = model.source.split(":", 1)[-1] if model.source else ""
    if not stem or name == stem:
        return None
    try:
        device = find_published(stem)
    except KeyError:
        return None
    return f"{device.short_id}, {device.name}"


def model_summary(model: DeviceModel) -> str:
    d2d = "n/a (no replicates)" if model.d2d_sigma is None else f"{model.d2d_sigma:.3f}"
    lines = [
        _wrapped("device", model.name),
        f"material      {model.material or 'unknown'}",
        f"usability     {model.usability:.4f}  (monotonicity {model.monotonicity:.2f})",
        f"sigma c2c     {model.sigma_c2c:.4f}  (log-normal)",
        f"sigma d2d     {d2d}",
        f"window        {model.g_min:.3e} .. {model.g_max:.3e} S  "
        f"(ratio {model.g_max / model.g_min:.2f})",
        f"levels        {len(model.level_conductances)} "
        f"({model.level_voltages[0]:.2f} .. {model.level_voltages[-1]:.2f} V)",
        f"read / set / reset  {model.read_voltage:.2f} / {model.v_set:.2f} / {model.v_reset:.2f} V",
        f"compliance    {model.compliance_current:.3g} A",
    ]
    if model.conditions:
        given = ", ".join(f"{k}={v}" for k, v in model.conditions.items() if v)
        lines.append(_wrapped("conditions", given))
    return "\n".join(lines)


def _wrapped(label: str, text: str) -> str:
    """`label` and `text` within 100 columns, continuation lines under the text."""
    import textwrap

    return textwrap.fill(
        text,
        width=100,
        initial_indent=f"{label:<14}",
        subsequent_indent=" " * 14,
        break_on_hyphens=False,
    )


def list_devices(sort: str = "id", as_json: bool = False) -> None:
    rows = device_rows()
    rows.sort(key=lambda r: r[sort], reverse=sort == "usability")
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_device_table(rows)


def show_device(name: str, as_json: bool = False) -> None:
    model = DeviceModel.preset(name)
    if as_json:
        print(model.to_json())
        return
    print(model_summary(model))
    origin = preset_origin(name, model)
    if origin:
        print(_wrapped("published as", origin).replace(", ", ",\n" + " " * 14, 1))


def fit_device(
    iv_file: str, out: str | None = None, plot: str | None = None, as_json: bool = False
) -> None:
    curves = read_iv(iv_file)
    model, result = fit(curves)
    # Check every output path before writing any of them.
    for path in (p for p in (out, plot) if p):
        if not Path(path).parent.exists():
            raise FileNotFoundError(f"{path}: folder {Path(path).parent} does not exist")
    if as_json:
        print(model.to_json())
        if out:
            model.save(out)
        if plot:
            from xbar.training.devices.plots import plot_device

            plot_device(curves, result, model, plot)
        return
    print(model_summary(model))
    if out:
        model.save(out)
        print(f"wrote {out}")
    if plot:
        from xbar.training.devices.plots import plot_device

        plot_device(curves, result, model, plot)
        print(f"wrote {plot}")


def _curves_and_model(name: str) -> tuple[IVCurves, DeviceModel]:
    path = Path(name)
    if path.suffix.lower() in (".xlsx", ".xlsm", ".csv") or path.is_file():
        curves = read_iv(path)
        return curves, fit(curves)[0]
    model = DeviceModel.preset(name)
    stem = model.source.split(":", 1)[-1] if model.source else name
    return find_published(stem).curves, model


def plot_device_file(name: str, out: str | None = None) -> None:
    from xbar.training.devices.plots import plot_device

    curves, model = _curves_and_model(name)
    path = Path(out or f"{model.name}.png")
    plot_device(curves, analyse(curves), model, path)
    print(f"wrote {path}")
