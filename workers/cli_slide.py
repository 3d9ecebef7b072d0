"""Slide commands: ``info``, ``tissue``, ``tiles``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from PIL import Image

from workers.cli_common import handle_errors, progress_bar


def register(app: typer.Typer) -> None:
    """Add the slide commands to ``app``."""
    app.command("info")(info)
    app.command("tissue")(tissue)
    app.command("tiles")(tiles)


def _slide_facts(path: Path, mpp: float | None) -> dict[str, object]:
    from wsi import open_slide

    with open_slide(path, mpp) as slide:
        return {
            "path": str(path),
            "vendor": slide.vendor,
            "width": slide.dimensions[0],
            "height": slide.dimensions[1],
            "mpp_x": slide.mpp_x,
            "mpp_y": slide.mpp_y,
            "mpp_source": slide.mpp_source,
            "objective_power": slide.objective_power,
            "level_count": slide.level_count,
            "levels": [
                {"level": i, "width": w, "height": h, "downsample": ds, "mpp": slide.level_mpp(i)}
                for i, ((w, h), ds) in enumerate(
                    zip(slide.level_dimensions, slide.level_downsamples, strict=True)
                )
            ],
            "associated_images": slide.associated_image_names(),
            "fingerprint": slide.fingerprint,
        }


def info(
    slide: Path = typer.Argument(..., help="Slide file (SVS, TIFF, NDPI, MRXS, DICOM …)."),
    mpp: float | None = typer.Option(None, "--mpp", help="Override the pixel size, µm/px."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print dimensions, levels, pixel size, vendor and objective power."""
    with handle_errors():
        facts = _slide_facts(slide, mpp)
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    typer.echo(f"{facts['path']}")
    typer.echo(f"  vendor           {facts['vendor']}")
    typer.echo(f"  size (level 0)   {facts['width']} × {facts['height']} px")
    typer.echo(
        f"  mpp              {facts['mpp_x']:.4g} × {facts['mpp_y']:.4g} µm/px "
        f"({facts['mpp_source']})"
    )
    typer.echo(f"  objective power  {facts['objective_power'] or 'not stated'}")
    typer.echo(f"  fingerprint      {facts['fingerprint']}")
    levels = facts["levels"]
    assert isinstance(levels, list)
    for lvl in levels:
        typer.echo(
            f"  level {lvl['level']:<2}  {lvl['width']:>7} × {lvl['height']:<7} "
            f"downsample {lvl['downsample']:<8.4g} {lvl['mpp']:.4g} µm/px"
        )


def tissue(
    slide: Path = typer.Argument(..., help="Slide file."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    mpp: float | None = typer.Option(None, "--mpp", help="Override the pixel size, µm/px."),
    config: Path | None = typer.Option(None, "--config", help="YAML configuration."),
) -> None:
    """Write the tissue mask and an overlay PNG; print the tissue area in mm²."""
    from skimage.segmentation import find_boundaries

    from workers.settings import load_settings
    from wsi import compute_tissue_mask, open_slide
    from wsi.io import atomic_write

    with handle_errors():
        settings = load_settings(config)
        with open_slide(slide, mpp, settings=settings.slide) as s:
            mask = compute_tissue_mask(s, settings.tissue)
            thumb = s.get_thumbnail(max(mask.mask.shape))
        overlay = np.asarray(Image.fromarray(thumb).resize(mask.mask.shape[::-1]), dtype=np.uint8)
        overlay = overlay.copy()
        edge = find_boundaries(mask.mask, mode="inner")
        overlay[mask.mask] = (0.7 * overlay[mask.mask] + 0.3 * np.array([0, 160, 0])).astype(
            np.uint8
        )
        overlay[edge] = (0, 120, 0)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "tissue_mask.png") as fh:
            Image.fromarray((mask.mask * 255).astype(np.uint8)).save(fh, format="PNG")
        with atomic_write(out / "tissue_overlay.png") as fh:
            Image.fromarray(overlay).save(fh, format="PNG")
    typer.echo(
        f"tissue area: {mask.area_mm2:.3f} mm² (mask {mask.mask.shape[1]}×{mask.mask.shape[0]} "
        f"px at {mask.mpp:.2f} µm/px)"
    )
    typer.echo(f"wrote {out / 'tissue_mask.png'} and {out / 'tissue_overlay.png'}")


def tiles(
    slide: Path = typer.Argument(..., help="Slide file."),
    target_mpp: float = typer.Option(1.0, "--target-mpp", help="Tile pixel size, µm/px."),
    tile_px: int = typer.Option(224, "--tile-px", help="Tile edge in target pixels."),
    overlap_px: int = typer.Option(0, "--overlap-px", help="Overlap in target pixels."),
    min_tissue: float = typer.Option(0.25, "--min-tissue", help="Tissue fraction a tile needs."),
    mpp: float | None = typer.Option(None, "--mpp", help="Override the pixel size, µm/px."),
    read: bool = typer.Option(False, "--read", help="Read every tile (checks readability)."),
    out: Path | None = typer.Option(None, "--out", help="Write the grid as tiles.csv here."),
) -> None:
    """Build the tile grid over tissue and print its geometry."""
    from wsi import TileGrid, TileReader, compute_tissue_mask, open_slide
    from wsi.io import atomic_write_text

    with handle_errors():
        with open_slide(slide, mpp) as s:
            mask = compute_tissue_mask(s)
            grid = TileGrid.for_slide(
                s,
                target_mpp=target_mpp,
                tile_px=tile_px,
                overlap_px=overlap_px,
                mask=mask,
                min_tissue=min_tissue,
            )
        unreadable = 0
        if read:
            reader = TileReader(slide, grid, mpp)
            with progress_bar("reading tiles", len(grid)) as update:
                for i in range(len(grid)):
                    unreadable += 0 if reader.read(i)["ok"] else 1
                    update(i + 1, len(grid))
            reader.close()
        if out is not None:
            rows = ["index,l0_x,l0_y,row,col,tissue_fraction"]
            rows += [
                f"{i},{x},{y},{r},{c},{f:.4f}"
                for i, ((x, y), (r, c), f) in enumerate(
                    zip(grid.l0_xy, grid.grid_ij, grid.tissue_fraction, strict=True)
                )
            ]
            atomic_write_text(out / "tiles.csv", "\n".join(rows) + "\n")
    typer.echo(
        f"{len(grid)} tiles of {tile_px} px at {target_mpp} µm/px over tissue "
        f"(lattice {grid.grid_shape[0]}×{grid.grid_shape[1]}, level {grid.level}, "
        f"residual scale {grid.residual_scale:.3f}, {grid.l0_tile:.1f} level-0 px per tile)"
    )
    if read:
        typer.echo(f"unreadable tiles: {unreadable}")
